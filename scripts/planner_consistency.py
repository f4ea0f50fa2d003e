"""Choose the selection's plan-consistency weight (`model.selection.consistency`, for NAVSIM v2's EC) on
validation scenes and report it on test scenes, paired per scene against the run's own weight.

Usage: python scripts/planner_consistency.py --run RUN/best --val DIR --test DIR [--weights 0 0.5 1 2 4] [--out F]

Open-loop EPDMS with EC (each scene's plan against the plan the same planner chose in the frame 0.5 s earlier,
`trajmoe.drive.evaluate.planner_rows`), overall and per scenario; the weight is picked by mean val EPDMS.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

import numpy as np
import torch

from trajmoe.drive.evaluate import evaluate_planner_files
from trajmoe.drive.run import load_planner
from trajmoe.drive.scenes import select_scene_paths
from trajmoe.eval.stats import mean_ci95


def with_consistency(planner, lam: float):
    planner.cfg = dataclasses.replace(planner.cfg, selection=dataclasses.replace(planner.cfg.selection, consistency=lam))
    return planner


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True)
    ap.add_argument("--val", required=True)
    ap.add_argument("--test", required=True)
    ap.add_argument("--weights", type=float, nargs="+", default=[0.0, 0.5, 1.0, 2.0, 4.0])
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    planner = load_planner(a.run)
    base = planner.cfg.selection.consistency
    val_paths, test_paths = select_scene_paths(a.val), select_scene_paths(a.test)
    val = {lam: evaluate_planner_files(with_consistency(planner, lam), val_paths) for lam in a.weights}
    for lam, r in val.items():
        print(f"val  consistency {lam:4.2f}: EPDMS {r['EPDMS']:.3f} EC {r['EC']:.3f}  " +
              " ".join(f"{s} {v['EPDMS']:.3f}" for s, v in r["per_scenario"].items()))
    best = max(val, key=lambda lam: val[lam]["EPDMS"])
    test = {lam: evaluate_planner_files(with_consistency(planner, lam), test_paths) for lam in sorted({base, best})}
    d = np.array(test[best]["EPDMS_per_scene"]) - np.array(test[base]["EPDMS_per_scene"])
    for lam, r in test.items():
        print(f"test consistency {lam:4.2f}: EPDMS {r['EPDMS']:.3f} EC {r['EC']:.3f}  " +
              " ".join(f"{s} {v['EPDMS']:.3f}" for s, v in r["per_scenario"].items()))
    print(f"test: chosen {best} vs the run's {base}: {d.mean():+.3f} +- {mean_ci95(d):.3f} (paired over {len(d)} scenes)")
    if a.out:
        strip = lambda r: {k: v for k, v in r.items() if k != "EPDMS_per_scene"}
        json.dump({"run": a.run, "chosen": best, "val": {str(k): strip(v) for k, v in val.items()},
                   "test": {str(k): strip(v) for k, v in test.items()},
                   "paired_diff": float(d.mean()), "paired_ci95": float(mean_ci95(d))}, open(a.out, "w"), indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
