"""Paired per-scene EPDMS differences between drivers evaluated on the same scenes (issue 24's goals).

Usage: python scripts/planner_paired.py BASELINES.json NAME=RUN.eval.json [NAME=RUN.eval.json ...]
  BASELINES.json: `trajmoe eval planner --baselines-only --data DIR --json`; each RUN.eval.json: `trajmoe eval
  planner --run RUN --data DIR --no-baselines --json` on the same DIR (scene order is the folder's).
Prints, for each planner and for the mean of their per-scene scores (e.g. seeds), the paired difference to
PDM-Closed and keep lane (mean +- 95 % half-width over scenes) and whether the interval excludes zero.
"""

import json
import sys

import numpy as np

from trajmoe.eval.stats import mean_ci95


def main(argv: list[str]) -> int:
    base = json.load(open(argv[0]))["open_loop"]["baselines"]
    runs = {a.split("=", 1)[0]: json.load(open(a.split("=", 1)[1]))["open_loop"]["planner"] for a in argv[1:]}
    refs = {k: np.array(base[k]["EPDMS_per_scene"]) for k in ("pdm_closed", "keep_lane")}
    for name, r in {**runs, **({"mean of planners": None} if len(runs) > 1 else {})}.items():
        x = np.mean([np.array(v["EPDMS_per_scene"]) for v in runs.values()], 0) if r is None else np.array(r["EPDMS_per_scene"])
        line = [f"{name:24s} EPDMS {x.mean():.3f}"]
        for ref, y in refs.items():
            d = x - y
            h = mean_ci95(d)
            word = "above" if d.mean() - h > 0 else "below" if d.mean() + h < 0 else "inconclusive"
            line.append(f"vs {ref} {d.mean():+.3f} +- {h:.3f} ({word})")
        print("  ".join(line))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
