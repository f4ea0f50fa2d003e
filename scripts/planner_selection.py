"""Is the GTRS selection rule's weighting, not the heads, what costs a trained planner its EPDMS?

Usage:
  python scripts/planner_selection.py --run RUN/best --val DIR --test DIR [--out FILE.json]

The GTRS selection (GTRS; the TrajMoE paper, Sec. III; `trajmoe.drive.model.selection_scores`) ranks the
vocabulary by  imi * log softmax(imi) + sum_m w_m log p_m + combo * log(EP p_EP + TTC p_TTC + LK p_LK).
Our default weights give the no-collision head a weight of 0.1, so a plan the NC head gives p = 0.2 loses
only 0.16 against one it gives p = 1. This script scores every vocabulary entry of every scene once
(heads' probabilities, imitation log-probabilities and the true sub-scores of the emitted plan, EC = 1 as
in `scripts/planner_diagnosis.py`), then, for each weight setting of a grid, the true EPDMS of the entry
the rule picks. The setting is chosen on --val (scenes the run never trained on, and not the test
scenes) and reported on --test beside the run's own weights: per scenario, with the paired per-scene
difference (mean +- 1.96 sd / sqrt(n)).
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch

from trajmoe.drive.dataset import collate, scene_features
from trajmoe.drive.evaluate import _vocab_plans
from trajmoe.eval.stats import mean_ci95
from trajmoe.drive.metrics import TARGET_METRICS, epdms, score_in_chunks
from trajmoe.drive.model import selection_scores
from trajmoe.drive.run import load_planner
from trajmoe.drive.scenes import load_scene, select_scene_paths

GRID = {"imi": (0.01, 0.03, 0.1, 0.3), "NC": (0.1, 0.5, 2.0, 5.0), "DAC": (0.3, 0.9, 3.0), "TTC": (3.0, 7.0, 14.0),
        "combo": (3.0, 6.0, 12.0)}


def score_set(planner, d: str, batch_size: int = 16) -> dict:
    """Per scene: probs (V, M), imi_logp (V,), true EPDMS of each emitted entry (V,), scenario."""
    plans = _vocab_plans(planner.vocab.numpy())
    out = {"probs": [], "imi": [], "epdms": [], "scenario": []}
    paths = select_scene_paths(d)
    for i in range(0, len(paths), batch_size):
        scenes = [load_scene(p) for p in paths[i : i + batch_size]]
        with torch.no_grad():
            pred = planner.predict(collate([scene_features(s) for s in scenes]))
        for j, sc in enumerate(scenes):
            em = score_in_chunks(sc, plans, chunk=512)
            out["epdms"].append(epdms({**{m: em[m] for m in TARGET_METRICS}, "EC": np.ones(len(plans))}))
            out["probs"].append(pred["probs"][j].numpy())
            out["imi"].append(pred["imi_logp"][j].numpy())
            out["scenario"].append(sc["scenario"])
    return {k: np.stack(v) if k != "scenario" else np.array(v) for k, v in out.items()}


def chosen_epdms(s: dict, w) -> np.ndarray:
    """(S,) true EPDMS of the entry the selection rule with weights `w` picks in each scene."""
    sc = selection_scores(torch.as_tensor(s["probs"]), torch.as_tensor(s["imi"]), w).numpy()
    return s["epdms"][np.arange(len(sc)), sc.argmax(-1)]


def table(s: dict, base: np.ndarray, tuned: np.ndarray) -> dict:
    rows = {}
    for scen in ["all", *sorted(set(s["scenario"]))]:
        m = np.ones(len(base), bool) if scen == "all" else s["scenario"] == scen
        d = tuned[m] - base[m]
        rows[scen] = {"n": int(m.sum()), "default": float(base[m].mean()), "tuned": float(tuned[m].mean()),
                      "diff": float(d.mean()), "ci95": float(mean_ci95(d))}
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True)
    ap.add_argument("--val", required=True, help="scenes to choose the weights on")
    ap.add_argument("--test", required=True, help="scenes to report on")
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    planner = load_planner(Path(a.run))
    w0 = planner.cfg.selection
    sets = {name: score_set(planner, d) for name, d in (("val", a.val), ("test", a.test))}
    keys = list(GRID)
    results = []
    for combo in itertools.product(*GRID.values()):
        w = replace(w0, **dict(zip(keys, combo)))
        results.append((float(chosen_epdms(sets["val"], w).mean()), combo))
    results.sort(reverse=True)
    best = replace(w0, **dict(zip(keys, results[0][1])))
    rep = {"run": a.run, "default_weights": asdict(w0), "tuned_weights": asdict(best),
           "val_top5": [(v, dict(zip(keys, c))) for v, c in results[:5]]}
    for name, s in sets.items():
        rep[name] = table(s, chosen_epdms(s, w0), chosen_epdms(s, best))
    print(f"tuned on val: {dict(zip(keys, results[0][1]))}  (default {({k: getattr(w0, k) for k in keys})})")
    for name in sets:
        for scen, r in rep[name].items():
            print(f"{name:4s} {scen:13s} n={r['n']:3d} default {r['default']:.3f} tuned {r['tuned']:.3f} "
                  f"diff {r['diff']:+.3f} +- {r['ci95']:.3f}")
    if a.out:
        Path(a.out).write_text(json.dumps(rep, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
