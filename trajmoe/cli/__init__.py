"""`trajmoe <verb> <family>` entry point (`trajmoe train planner`, `trajmoe eval track`, `trajmoe data scenes`).

Each feature module in this package (`trajmoe/cli/<name>.py`) exposes
`register(groups) -> None` and adds its verbs to the groups it owns: `groups[name]` is an argparse
subparsers object for verb groups, and the group's own parser for the verb-less commands
(`experiment`, `demo`). Every command sets `func=callable(args) -> int | None`; a verb group
called without a verb prints its help.
User mistakes (`ValueError`, `FileNotFoundError`, `KeyError` raised as `UsageError`) are printed as
one line, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

GROUPS = {
    "data": "generate datasets (metaworld episodes, highway-env scenes)",
    "train": "train a model family (track, policy, planner)",
    "finetune": "fine-tune a trained model (planner: GRPO)",
    "ensemble": "combine trained runs (planner)",
    "eval": "evaluate a model family (track, policy, planner)",
    "bench": "benchmarks (moe, train, policy, drive-scorer)",
    "viz": "pictures and videos (tracks, routing)",
    "drive": "old spellings of the planner verbs (`drive train` = `train planner`, `drive data` = `data scenes`)",
    "experiment": "run an experiment spec and write a report",
    "demo": "the main job end to end (make demo)",
}
VERBLESS = ("experiment", "demo")
# Feature modules, in the order their verbs appear.
COMMAND_MODULES = ["moe", "data", "track", "policy", "drive", "experiment", "demo"]


class UsageError(Exception):  # noqa: N818 - reads better at call sites
    """A user mistake; printed as one line by `main`."""


def build_parser() -> argparse.ArgumentParser:
    """The `trajmoe` argparse parser: verb groups (train, eval, data, bench, ...) each with its family sub-
    commands.
    """
    parser = argparse.ArgumentParser(prog="trajmoe", description=__doc__.splitlines()[0])
    top = parser.add_subparsers(dest="group", metavar="GROUP")
    groups: dict[str, argparse._SubParsersAction] = {}
    group_parsers: dict[str, argparse.ArgumentParser] = {}
    for name, help_text in GROUPS.items():
        p = top.add_parser(name, help=help_text)
        group_parsers[name] = p
        groups[name] = p if name in VERBLESS else p.add_subparsers(dest="verb", metavar="VERB")
    for mod_name in COMMAND_MODULES:
        importlib.import_module(f"trajmoe.cli.{mod_name}").register(groups)
    for name, p in group_parsers.items():
        if name not in VERBLESS and p.get_default("func") is None:
            p.set_defaults(func=lambda a, p=p: (p.print_help(), 2)[1])
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run `trajmoe ARGV`; the exit code (0 ok, 2 usage or bad input, 3 training failure, 130 interrupted).

    Bad user input (a ValueError) is printed as one line, not a traceback.
    """
    os.environ.setdefault("MUJOCO_GL", "egl")
    # Before torch loads: OpenMP's default spin-waiting makes 2 threads up to ~8x slower than 1
    # when anything else runs on a 2-core machine (measured: 7.5 s vs 0.98 s per tiny step).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    try:
        rc = args.func(args)
    except (UsageError, ValueError, FileNotFoundError, FileExistsError, PermissionError) as e:
        print(f"trajmoe: error: {e}", file=sys.stderr)
        return 2
    except RuntimeError as e:
        if type(e).__name__ != "TrainingError":  # a non-finite loss stops training with its own message
            raise
        print(f"trajmoe: error: {e}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        print("trajmoe: interrupted", file=sys.stderr)
        return 130
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
