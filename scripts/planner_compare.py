"""Planner A against planner B on the same held-out scenes, over seeds (issue 24's MoE-vs-dense, GRPO and
ensemble verdicts).

Usage: python scripts/planner_compare.py A=GLOB B=GLOB
  e.g. python scripts/planner_compare.py "MoE=results/issue24-s8/moe-agents-drivable-s*/test_eval.json" \\
                                         "dense=results/issue24-s8/dense12-agents-drivable-s*/test_eval.json"
  (runs/planners/NAME-sS.eval.json as `scripts/planner_run.sh` writes it; results/GROUP/NAME-sS/test_eval.json once
  `scripts/collect_results.sh` has copied it)
Each GLOB matches `trajmoe eval planner ... --no-baselines --json` records on the same scene folder, one per
seed (the seed is read from the last `-s<N>` in the path). Prints both groups' EPDMS per seed and per scenario, then
the paired difference A - B: (1) over seeds, mean +- t(0.975, n - 1) sd / sqrt(n) of the per-seed EPDMS
differences (the docs' verdict rule); (2) per scene, the seed-mean of each scene's difference, mean +- 1.96
standard errors over scenes. "A better" / "B better" only when the interval excludes 0, else "inconclusive".
"""

from __future__ import annotations

import glob
import json
import re
import sys

import numpy as np
from scipy.stats import t

from trajmoe.eval.stats import mean_ci95


def load(spec: str) -> tuple[str, dict[int, dict]]:
    if "=" not in spec:
        raise SystemExit(f"{spec}: expected NAME=GLOB")
    name, pattern = spec.split("=", 1)
    runs = {}
    for path in sorted(glob.glob(pattern)):
        m = re.findall(r"-s(\d+)", path)  # the last one: folders such as issue24-s7 come first
        if not m:
            raise SystemExit(f"{path}: no -s<N> seed in the name")
        if int(m[-1]) in runs:
            raise SystemExit(f"{path}: a second record for seed {m[-1]} in {name} (narrow the glob)")
        runs[int(m[-1])] = json.load(open(path))["open_loop"]["planner"]
    if not runs:
        raise SystemExit(f"{pattern}: matches no file")
    return name, runs


def word(d: float, h: float, a: str, b: str) -> str:
    return f"{a} better" if d - h > 0 else f"{b} better" if d + h < 0 else "inconclusive"


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] in ("-h", "--help"):
        raise SystemExit("usage: python scripts/planner_compare.py A=GLOB B=GLOB (see the module docstring)")
    (na, ra), (nb, rb) = load(argv[0]), load(argv[1])
    seeds = sorted(set(ra) & set(rb))
    if not seeds:
        raise SystemExit(f"{na} and {nb} share no seed")
    for name, runs in ((na, ra), (nb, rb)):
        scen = sorted(next(iter(runs.values()))["per_scenario"])
        per = {s: np.mean([runs[k]["per_scenario"][s]["EPDMS"] for k in runs]) for s in scen}
        print(f"{name:10s} EPDMS {np.mean([r['EPDMS'] for r in runs.values()]):.3f} per seed "
              + ", ".join(f"s{k} {runs[k]['EPDMS']:.3f}" for k in sorted(runs))
              + " | " + ", ".join(f"{s} {v:.3f}" for s, v in per.items()))
    if set(ra) != set(rb):
        print(f"paired on the shared seeds only: {seeds}")
    d = np.array([ra[k]["EPDMS"] - rb[k]["EPDMS"] for k in seeds])
    h = float(t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else float("nan")
    print(f"{na} - {nb} over {len(seeds)} seeds: {d.mean():+.3f} +- {h:.3f} ({word(d.mean(), h, na, nb)})")
    if not all("EPDMS_per_scene" in r[k] for r in (ra, rb) for k in seeds):
        print("per scene: some records predate EPDMS_per_scene (skipped)")
        return 0
    per_scene = np.mean([np.array(ra[k]["EPDMS_per_scene"]) - np.array(rb[k]["EPDMS_per_scene"]) for k in seeds], 0)
    hs = mean_ci95(per_scene)
    print(f"{na} - {nb} per scene ({len(per_scene)} scenes, seed-mean): {per_scene.mean():+.3f} +- {hs:.3f} "
          f"({word(per_scene.mean(), hs, na, nb)})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
