"""Track models A against B over seeds, from their held-out learning curves (issue 27's Tab. 1 verdicts at
convergence): the best held-out value of each run (overall and per camera), the samples each run needed to reach
a given skill, whether it converged (the runs' own `validation.json` rule), its CPU-hours, and the busiest expert's
share per MoE layer at the last evaluation (1/E = balanced router, 1 = collapsed).

Usage: python scripts/curve_compare.py A=GLOB B=GLOB [--reach 0.6]
  e.g. python scripts/curve_compare.py "MoE=results/issue27/tramoe-nomotion-s*" "dense=results/issue27/dense-nomotion-s*"
Each GLOB matches run folders written by `trajmoe train track --val` (scripts/track_curve.sh), one per seed (the seed
is read from the last `-s<N>` in the folder name). Paired difference A - B over the seeds both have: mean +-
t(0.975, n - 1) sd / sqrt(n) (the docs' verdict rule); "A better" / "B better" only when the interval excludes 0,
else "inconclusive". --reach R: training samples at the first evaluation whose held-out skill MSE >= R
("never" when no evaluation reached it; such a run counts as its last evaluation's samples in the mean, marked >).
"""

from __future__ import annotations

import argparse
import glob
import json
import re
from pathlib import Path

import numpy as np
from scipy.stats import t

KEYS = [("skill_mse", "skill MSE"), ("skill_ade", "skill ADE"), ("agentview/skill_mse", "scene MSE"),
        ("agentview/skill_ade", "scene ADE"), ("eye_in_hand/skill_mse", "gripper MSE"),
        ("eye_in_hand/skill_ade", "gripper ADE")]


def read_run(run: Path, reach: float) -> dict:
    """One run's figures: best held-out value per key, samples to reach `reach`, convergence, CPU-h, routing."""
    metrics = run / "metrics.jsonl"
    if not metrics.is_file():
        raise SystemExit(f"{run}: no metrics.jsonl (not a track run folder)")
    recs = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    evals = [r for r in recs if "eval/skill_mse" in r]
    if not evals:
        raise SystemExit(f"{metrics}: no held-out evaluation (train with --val)")
    batch = json.loads((run / "config.json").read_text())["train"]["batch_size"]
    out = {k: max(r[f"eval/{k}"] for r in evals if f"eval/{k}" in r) for k, _ in KEYS
           if any(f"eval/{k}" in r for r in evals)}
    hit = next((r["step"] for r in evals if r["eval/skill_mse"] >= reach), None)
    out["reach"] = (hit if hit is not None else evals[-1]["step"]) * batch
    out["reached"] = hit is not None
    val = run / "validation.json"
    out["converged"] = json.loads(val.read_text())["converged"] if val.is_file() else None
    out["steps"] = evals[-1]["step"]
    cpu = [r["cpu_s"] for r in recs if "cpu_s" in r]
    out["cpu_h"] = cpu[-1] / 3600 if cpu else float("nan")
    last = evals[-1]
    out["routing"] = {k[len("eval/routing/"):]: v for k, v in last.items() if k.startswith("eval/routing/")}
    return out


def load(spec: str, reach: float) -> tuple[str, dict[int, dict]]:
    if "=" not in spec:
        raise SystemExit(f"{spec}: expected NAME=GLOB")
    name, pattern = spec.split("=", 1)
    runs = {}
    for path in sorted(glob.glob(pattern)):
        if not Path(path).is_dir():
            continue
        m = re.findall(r"-s(\d+)", path)
        if not m:
            raise SystemExit(f"{path}: no -s<N> seed in the name")
        if int(m[-1]) in runs:
            raise SystemExit(f"{path}: a second run for seed {m[-1]} in {name} (narrow the glob)")
        runs[int(m[-1])] = read_run(Path(path), reach)
    if not runs:
        raise SystemExit(f"{pattern}: matches no run folder")
    return name, runs


def paired(a: list[float], b: list[float]) -> tuple[float, float]:
    """Mean and t-interval half-width of the paired differences a - b (nan half-width for one pair)."""
    d = np.asarray(a) - np.asarray(b)
    h = t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d)) if len(d) > 1 else float("nan")
    return float(d.mean()), float(h)


def word(d: float, h: float, a: str, b: str) -> str:
    return f"{a} better" if d - h > 0 else f"{b} better" if d + h < 0 else "inconclusive"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("a")
    p.add_argument("b")
    p.add_argument("--reach", type=float, default=0.6, help="held-out skill MSE for the samples-to-reach column")
    args = p.parse_args()
    (na, ra), (nb, rb) = load(args.a, args.reach), load(args.b, args.reach)
    cols = [(k, label) for k, label in KEYS if all(k in r for r in [*ra.values(), *rb.values()])]
    print("| group | seed | " + " | ".join(label for _, label in cols)
          + f" | samples to skill MSE {args.reach} | converged | CPU-h | busiest expert share per layer (last eval) |")
    print("|---" * (len(cols) + 6) + "|")
    for name, runs in ((na, ra), (nb, rb)):
        for s, r in sorted(runs.items()):
            rt = ", ".join(f"{k} {v:.2f}" for k, v in sorted(r["routing"].items())) or "-"
            reach = f"{r['reach'] / 1000:.0f}k" if r["reached"] else f"never (> {r['reach'] / 1000:.0f}k)"
            cpu = "n/a" if np.isnan(r["cpu_h"]) else f"{r['cpu_h']:.2f}"  # runs older than the cpu_s log
            conv = {True: "yes", False: "no", None: f"running ({r['steps']} steps)"}[r["converged"]]
            print(f"| {name} | {s} | " + " | ".join(f"{r[k]:+.3f}" for k, _ in cols)
                  + f" | {reach} | {conv} | {cpu} | {rt} |")
    seeds = sorted(set(ra) & set(rb))
    if not seeds:
        raise SystemExit(f"{na} and {nb} share no seed")
    print(f"\n{na} - {nb}, paired over seeds {seeds} (mean +- 95 % t-interval):")
    for k, label in [*cols, ("reach", f"samples to {args.reach}")]:
        d, h = paired([ra[s][k] for s in seeds], [rb[s][k] for s in seeds])
        better = word(-d, h, na, nb) if k == "reach" else word(d, h, na, nb)  # fewer samples is better
        print(f"  {label:22s} {d:+.4g} +- {h:.3g}: {better}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
