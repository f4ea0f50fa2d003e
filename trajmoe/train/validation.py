"""Held-out validation during training: the best checkpoint, the learning curve and a convergence rule.

A family hands the Trainer an `eval_fn(model, step) -> {name: float}` over a fixed held-out set (the
same samples at every evaluation) and a `Selection` naming the number that ranks checkpoints. The
Trainer logs every evaluation to metrics.jsonl as `eval/<name>`, keeps the best weights in
`RUN/best/` (a loadable run folder: config.json, model.safetensors, eval.json) beside the last ones,
and at the end writes `RUN/validation.json` with the convergence verdict of `convergence`.

Convergence rule (stated once, used by every family): over the evaluations of a run, the best value
reached in the last quarter of its steps improves on the best value before that quarter by less than
`tol` (default 1 %) of the latter's magnitude (a gain <= 0 always counts as converged); at least 4
evaluations are needed to judge.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

BEST_DIR = "best"
VALIDATION = "validation.json"
MODES = ("max", "min")


@dataclass(frozen=True)
class Selection:
    """Which evaluation result ranks checkpoints: `metric` (a key of eval_fn's result) and `mode` ("max" | "min")."""

    metric: str
    mode: str = "max"

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"Selection.mode={self.mode!r}: must be one of {', '.join(MODES)}")
        if not self.metric:
            raise ValueError("Selection.metric must name a key of the evaluation's result")

    def better(self, new: float, old: float | None) -> bool:
        """Whether `new` beats `old` (None: nothing yet); a non-finite `new` never does."""
        if not math.isfinite(new):
            return False
        return old is None or (new > old if self.mode == "max" else new < old)


def read_curve(metrics_file: str | Path, key: str) -> tuple[list[int], list[float]]:
    """(steps, values) of `key` in a metrics.jsonl (torn lines skipped; a missing file gives empty lists)."""
    steps, values = [], []
    p = Path(metrics_file)
    if not p.is_file():
        return steps, values
    for line in p.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict) and key in rec and isinstance(rec[key], (int, float)):
            steps.append(int(rec["step"]))
            values.append(float(rec[key]))
    return steps, values


def convergence(steps: list[int], values: list[float], mode: str = "max", tol: float = 0.01) -> dict:
    """The convergence verdict of one held-out curve (rule in the module docstring).

    Args:
        steps, values: the evaluations in step order. mode: "max" or "min". tol: relative gain threshold.

    Returns:
        {"converged": bool | None (None: fewer than 4 evaluations), "best": value, "best_step": step,
         "gain_last_quarter": best(last quarter) - best(before), signed so > 0 is an improvement,
         "relative_gain": that gain / |best(before)| (inf when that is 0 and the gain > 0), "rule": a one-line statement, "evaluations": n}.

    Raises:
        ValueError: mode not "max" / "min", or steps and values of different lengths.
    """
    if mode not in MODES:
        raise ValueError(f"mode={mode!r}: must be one of {', '.join(MODES)}")
    if len(steps) != len(values):
        raise ValueError(f"steps ({len(steps)}) and values ({len(values)}) differ in length")
    rule = (f"converged when the best held-out value of the last quarter of the steps improves on the best "
            f"before it by < {tol:.0%} of its magnitude")
    pairs = [(s, v) for s, v in zip(steps, values) if math.isfinite(v)]
    out = {"converged": None, "best": None, "best_step": None, "gain_last_quarter": None, "relative_gain": None,
           "rule": rule, "evaluations": len(pairs)}
    if not pairs:
        return out
    sign = 1.0 if mode == "max" else -1.0
    best_step, best = max(pairs, key=lambda sv: sign * sv[1])
    out.update(best=best, best_step=best_step)
    if len(pairs) < 4:
        return out
    cut = pairs[-1][0] - 0.25 * (pairs[-1][0] - pairs[0][0])
    before = [v for s, v in pairs if s < cut] or [pairs[0][1]]
    last = [v for s, v in pairs if s >= cut]
    b0 = max(before, key=lambda v: sign * v)
    b1 = max(last, key=lambda v: sign * v)
    gain = sign * (b1 - b0)
    rel = gain / abs(b0) if b0 != 0 else (math.inf if gain > 0 else 0.0)
    out.update(converged=bool(gain <= 0 or rel < tol), gain_last_quarter=gain, relative_gain=rel)
    return out
