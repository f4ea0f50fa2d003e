"""`trajmoe experiment SPEC.yaml --out DIR [--scale smoke|cpu|gpu] [--seeds N]`."""

from __future__ import annotations

import contextlib
from pathlib import Path

from . import USER_ERRORS, UsageError, is_training_error, parse_command, run_command


def register(groups) -> None:
    """Add `trajmoe experiment SPEC` (--out, --scale, --seeds, --set) to the CLI."""
    parser = groups["experiment"]  # a verb-less command: the spec path is its positional argument
    parser.add_argument("spec", help="experiment spec: a YAML file or a packaged spec's name (demo, tab1f, ...: trajmoe/configs/experiments)")
    parser.add_argument("--out", required=True, help="experiment directory (reused: finished steps are skipped)")
    parser.add_argument("--scale", default="cpu", choices=["smoke", "cpu", "gpu"])
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--only", nargs="+", default=None, help="run only these variants")
    parser.add_argument("--report-only", action="store_true",
                        help="write report.md from the steps finished so far, run nothing")
    parser.add_argument("--var", action="extend", nargs="+", default=[], metavar="KEY=VALUE",
                        help="override a spec variable, e.g. --var data_dir=runs/shared-data")
    parser.set_defaults(func=run)

    p = groups["viz"].add_parser("curve", help="held-out learning curves of runs trained with validation")
    p.add_argument("--run", nargs="+", required=True, help="run folders (any family)")
    p.add_argument("--key", nargs="+", default=["eval/skill_mse"],
                   help="metrics.jsonl keys, one panel each (e.g. eval/agentview/skill_ade)")
    p.add_argument("--label", nargs="+", default=None, help="one legend label per run")
    p.add_argument("--baseline", type=float, default=0.0, help="dashed reference line (0: a skill score's baseline)")
    p.add_argument("--baseline-label", default="no-motion baseline (skill 0)")
    p.add_argument("--title", default="")
    p.add_argument("--out", required=True, help="PNG")
    p.set_defaults(func=run_curve)


def execute_step(argv: list[str], label: str) -> dict | None:
    """Run one experiment step's `trajmoe` command in this process (`run_command`) and return its record.
    A training command (one that declares itself `resumable`) continues its run folder when that holds a
    checkpoint. A failure is a one-line UsageError naming the step and the command that resumes it."""
    from rich.console import Console

    from ..train.checkpoint import latest_checkpoint

    args = parse_command(argv)
    if getattr(args, "resumable", False) and not args.resume and args.out and latest_checkpoint(args.out) is not None:
        args.resume = True  # an interrupted training step continues where it stopped
    resumed = " --resume" if getattr(args, "resume", False) and "--resume" not in argv else ""
    Console(stderr=True).rule(f"[bold]{label}[/bold]: trajmoe {' '.join(argv)}{resumed}", style="cyan")
    try:
        result = run_command(args)
    except Exception as e:
        if not (isinstance(e, USER_ERRORS) or is_training_error(e)):
            raise
        raise UsageError(f"experiment step {label} failed: {e}; rerun resumes here: trajmoe {' '.join(argv)}") from None
    if result.rc:
        raise UsageError(f"experiment step {label} failed (exit {result.rc}); rerun resumes here: trajmoe {' '.join(argv)}")
    return result.record


def run_curve(args) -> int:
    """`trajmoe viz curve`: prints the written image's path; exit code 0."""
    from ..viz.curves import plot_learning_curves  # lazy: only this verb needs it

    print(plot_learning_curves(args.run, args.key, args.out, args.baseline, args.baseline_label, args.label, args.title))
    return 0


def run(args) -> int:
    """`trajmoe experiment`: run a spec's steps (finished ones skipped) and write DIR/report.md; exit code 0.
    When a step fails, the report of the steps finished so far is still written, then the error is raised.

    Raises:
        ValueError: --seeds < 1, an unknown spec, a --var key the spec does not define (a typo would
            otherwise be ignored without a word), a non-boolean value for a true/false variable, or an
            empty value for a variable whose default is a non-empty string (data_dir= would write into '.').
    """
    from ..experiment.report import write_report  # lazy: only this verb needs it
    from ..experiment.runner import run_experiment  # lazy: only this verb needs it
    from ..experiment.spec import load_spec  # lazy: only this verb needs it

    if args.seeds < 1:
        raise ValueError(f"--seeds must be >= 1, got {args.seeds}")
    from ..config import parse_overrides  # lazy: only this verb needs it

    spec = load_spec(args.spec, args.scale)
    overrides = parse_overrides(args.var)
    unknown = sorted(set(overrides) - set(spec.vars))
    if unknown:
        raise ValueError(f"--var {', '.join(unknown)}: not a variable of spec {spec.path.name}; its variables: {sorted(spec.vars)}")
    for key, value in overrides.items():  # a value must have its default's kind (policy=flase is not 'true')
        default = spec.vars[key]
        if isinstance(default, bool) and not isinstance(value, bool):
            raise ValueError(f"--var {key}={value}: spec {spec.path.name} wants true or false")
        if isinstance(default, str) and default and value in ("", None):
            raise ValueError(f"--var {key}= is empty; spec {spec.path.name}'s default is {default!r}")
    spec.vars.update(overrides)
    spec.overrides = dict(overrides)
    out = Path(args.out)
    try:
        results = run_experiment(spec, out, None if args.report_only else execute_step, args.seeds, args.only)
    except Exception:
        if not args.report_only:  # keep what finished readable: the report of the steps done so far
            with contextlib.suppress(Exception):
                write_report(spec, run_experiment(spec, out, None, args.seeds, args.only), out, args.seeds)
        raise
    path = write_report(spec, results, out, args.seeds)
    print(f"report: {path}")
    return 0
