"""`trajmoe <verb> <family>` entry point (`trajmoe train planner`, `trajmoe eval track`, `trajmoe data scenes`).

Each feature module in this package (`trajmoe/cli/<name>.py`) exposes
`register(groups) -> None` and adds its verbs to the groups it owns: `groups[name]` is an argparse
subparsers object for verb groups, and the group's own parser for the verb-less commands
(`experiment`, `demo`). Every command sets `func=callable(args) -> Result | int | None`: a `Result`
carries the command's machine-readable record (what `--json` prints: `main` prints it, handlers never
do) so in-process callers such as the experiment runner take it from `run_command` instead of reading
stdout. Training verbs also set `resumable=True` (`--out` is a run folder that `--resume` continues).
A verb group called without a verb prints its help.
User mistakes (`ValueError`, `FileNotFoundError`, `KeyError` raised as `UsageError`) are printed as
one line, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from dataclasses import dataclass
from typing import Any

from ..io import StorageError, finite_json

GROUPS = {
    "data": "generate datasets (metaworld / libero episodes, highway-env scenes)",
    "train": "train a model family (track, policy, planner)",
    "finetune": "fine-tune a trained model (planner: GRPO)",
    "ensemble": "combine trained runs (planner)",
    "eval": "evaluate a model family (track, policy, planner) or the scripted LIBERO expert",
    "bench": "benchmarks (moe, train, policy, drive-scorer)",
    "viz": "pictures and videos (tracks, routing)",
    "experiment": "run an experiment spec and write a report",
    "demo": "the main job end to end (make demo)",
}
VERBLESS = ("experiment", "demo")
# Old spellings still accepted: `trajmoe drive VERB ...` runs `trajmoe NEW ...`.
OLD_SPELLINGS = {"data": ["data", "scenes"], "train": ["train", "planner"], "finetune": ["finetune", "planner"],
                 "ensemble": ["ensemble", "planner"], "eval": ["eval", "planner"]}
# Feature modules, in the order their verbs appear.
COMMAND_MODULES = ["moe", "data", "track", "policy", "drive", "experiment", "demo"]


class UsageError(Exception):  # noqa: N818 - reads better at call sites
    """A user mistake; printed as one line by `main`."""


# Exceptions that mean bad input, printed as one line (exit code 2) instead of a traceback.
# StorageError: no space, read-only, permission (`trajmoe.io.storage_errors`).
USER_ERRORS = (UsageError, ValueError, FileNotFoundError, FileExistsError, PermissionError, StorageError)


@dataclass
class Result:
    """What a command hands back: its machine-readable record (a JSON-able dict, or None) and exit code."""
    record: dict[str, Any] | None = None
    rc: int = 0


def parse_command(argv: list[str]) -> argparse.Namespace:
    """Parse `trajmoe ARGV` into the namespace its handler takes (`args.func`).

    Raises:
        UsageError: unknown verb or option, or a verb group without a verb (argparse's message on stderr).
    """
    parser = build_parser()
    try:
        args = parser.parse_args(new_spelling(argv))
    except SystemExit:
        raise UsageError(f"bad command: trajmoe {' '.join(argv)}") from None
    if getattr(args, "func", None) is None or (args.group not in VERBLESS and getattr(args, "verb", None) is None):
        raise UsageError(f"incomplete command: trajmoe {' '.join(argv)}")
    return args


def new_spelling(argv: list[str]) -> list[str]:
    """`argv` with an old spelling (`drive train ...`, `OLD_SPELLINGS`) rewritten to the current one."""
    if len(argv) > 1 and argv[0] == "drive" and argv[1] in OLD_SPELLINGS:
        return [*OLD_SPELLINGS[argv[1]], *argv[2:]]
    return argv


def run_command(args: argparse.Namespace) -> Result:
    """Run a parsed command in this process; its Result. Exceptions propagate (the caller reports them)."""
    out = args.func(args)
    return out if isinstance(out, Result) else Result(None, int(out or 0))


def is_training_error(e: BaseException) -> bool:
    """True for a training run stopped by a non-finite loss or gradient (trajmoe.train.trainer.TrainingError)."""
    if not isinstance(e, RuntimeError):
        return False
    from ..train.trainer import TrainingError  # lazy: torch is loaded anyway once a training step has failed

    return isinstance(e, TrainingError)


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
    args = parser.parse_args(new_spelling(sys.argv[1:] if argv is None else list(argv)))
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    try:
        res = run_command(args)
    except USER_ERRORS as e:
        print(f"trajmoe: error: {e}", file=sys.stderr)
        return 2
    except RuntimeError as e:
        if not is_training_error(e):  # a non-finite loss stops training with its own message
            raise
        print(f"trajmoe: error: {e}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        print("trajmoe: interrupted", file=sys.stderr)
        return 130
    if res.record is not None and getattr(args, "json", False):
        print(json.dumps(finite_json(res.record)))
    return res.rc


if __name__ == "__main__":
    sys.exit(main())
