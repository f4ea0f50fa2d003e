"""`trajmoe demo`: the main job end to end (what `make demo` runs).

Runs the experiment spec trajmoe/configs/experiments/demo.yaml (shipped in the package): a small multi-domain MetaWorld set and a
small highway-env scene set are generated, tiny dense and MoE track models, an adaptive-mask
policy and a MoE planner are trained and evaluated, and DIR/report.md is written. Rerunning
resumes: finished steps are skipped.
"""

from __future__ import annotations

import time
from pathlib import Path

from ..configs import PACKAGED

SPEC = PACKAGED / "experiments" / "demo.yaml"


def register(groups) -> None:
    """Add `trajmoe demo` (--out, --scale, --spec) to the CLI."""
    p = groups["demo"]
    p.add_argument("--out", default="runs/demo", help="output directory (default runs/demo)")
    p.add_argument("--scale", default="cpu", choices=["smoke", "cpu", "gpu"], help="cpu: ~15 min on 2 cores; smoke: ~2 min")
    p.add_argument("--spec", default=str(SPEC), help="experiment spec to run (default: the demo spec)")
    p.set_defaults(func=run)


def run(args) -> int:
    """`trajmoe demo`: run the packaged demo experiment spec and write its report; exit code 0."""
    from ..experiment.report import write_report  # lazy: only this verb needs it
    from ..experiment.runner import run_experiment  # lazy: only this verb needs it
    from .experiment import execute_step
    from ..experiment.spec import load_spec  # lazy: only this verb needs it

    t0 = time.perf_counter()
    spec = load_spec(args.spec, args.scale)
    out = Path(args.out)
    results = run_experiment(spec, out, execute_step, seeds=1)
    path = write_report(spec, results, out, seeds=1)
    print(f"demo finished in {(time.perf_counter() - t0) / 60:.1f} min; report: {path}")
    return 0
