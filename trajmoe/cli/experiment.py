"""`trajmoe experiment SPEC.yaml --out DIR [--scale smoke|cpu|gpu] [--seeds N]`."""

from __future__ import annotations

from pathlib import Path


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


def run(args) -> int:
    """`trajmoe experiment`: run a spec's steps (finished ones skipped) and write DIR/report.md; exit code 0.

    Raises:
        ValueError: --seeds < 1, an unknown spec or a bad override.
    """
    from ..experiment.report import write_report  # lazy: only this verb needs it
    from .runner import run_experiment  # lazy: only this verb needs it
    from ..experiment.spec import load_spec  # lazy: only this verb needs it

    if args.seeds < 1:
        raise ValueError(f"--seeds must be >= 1, got {args.seeds}")
    from ..config import parse_overrides  # lazy: only this verb needs it

    spec = load_spec(args.spec, args.scale)
    spec.vars.update(parse_overrides(args.var))
    out = Path(args.out)
    results = run_experiment(spec, out, args.seeds, args.only, report_only=args.report_only)
    path = write_report(spec, results, out, args.seeds)
    print(f"report: {path}")
    return 0
