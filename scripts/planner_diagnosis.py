"""Where does a trained planner's vocabulary scorer go wrong? Per sub-score head and scenario, on
training and held-out scenes.

Usage:
  python scripts/planner_diagnosis.py --run RUN --heldout DIR [--train DIR] [--limit N] [--out FILE.json]

For every scene (loaded one batch at a time) and every vocabulary entry v (V, 40, 3):
  * ranking quality of each head against the entry's true sub-score (the training target,
    `trajmoe.drive.vocab.scene_targets`; the run's cached targets.npz for its own training scenes):
    ROC-AUC of the predicted probability for "true sub-score == 1" (NC, DAC, DDC, TLC, LK: 0 / 0.5 / 1
    scores) and Spearman's rank correlation for EP, TTC, HC; computed within each scene (the selection
    ranks entries of one scene), averaged over the scenes where it is defined (both classes present /
    non-constant truth), with that number of scenes. Train vs held-out: underfit (both low) or
    overfit (held-out far below train).
  * what costs the chosen plan its EPDMS: the chosen entry and the vocabulary oracle (best true
    EPDMS, EC = 1, of the plans the planner emits: 8 poses re-interpolated, `evaluate._vocab_plans`)
    are scored like `trajmoe eval planner` scores them (EC = 1 for both: no previous frame);
    per sub-score the mean deficit oracle - chosen and the share of scenes where the chosen plan is
    worse; and the head-swap counterfactual: the EPDMS the GTRS selection rule reaches when only
    head m's predictions are replaced by the true sub-scores (gain over the planner = what head m's
    error costs), and when all are ("perfect heads": the selection rule's own ceiling).
  * `interp_loss`: EPDMS the chosen entry loses between its 40 trained poses and the 8 emitted
    poses re-interpolated (targets score the former, evaluation the latter).

Output: a text table per set and scenario, and the full numbers as JSON (--out).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr
from sklearn.metrics import roc_auc_score

from trajmoe.drive.dataset import collate, scene_features
from trajmoe.drive.evaluate import _vocab_plans
from trajmoe.drive.metrics import TARGET_METRICS, epdms, score_in_chunks
from trajmoe.drive.model import selection_scores
from trajmoe.drive.run import load_planner, read_cached_targets
from trajmoe.drive.scenes import load_scene, select_scene_paths
from trajmoe.drive.vocab import scene_targets
from trajmoe.train.checkpoint import load_run_config

AUC_HEADS = ("NC", "DAC", "DDC", "TLC", "LK")
RANK_HEADS = ("EP", "TTC", "HC")


def _epdms_of(sub_VM: np.ndarray) -> np.ndarray:
    """(V, M) sub-scores in TARGET_METRICS order -> (V,) EPDMS with EC = 1 (the targets' EPDMS)."""
    d = {m: sub_VM[:, i] for i, m in enumerate(TARGET_METRICS)}
    return epdms({**d, "EC": np.ones(len(sub_VM))})


def _ranking(pred_V: np.ndarray, true_V: np.ndarray, head: str) -> float:
    """Within-scene ranking quality of one head: ROC-AUC (AUC_HEADS, positives = true == 1) or
    Spearman's rho (RANK_HEADS); nan where undefined (one class only / constant truth)."""
    if head in AUC_HEADS:
        pos = true_V >= 1.0 - 1e-6
        if pos.all() or not pos.any():
            return float("nan")
        return float(roc_auc_score(pos, pred_V))
    if np.ptp(true_V) < 1e-9 or np.ptp(pred_V) < 1e-12:
        return float("nan")
    return float(spearmanr(pred_V, true_V).statistic)


def diagnose_set(planner, paths: list[Path], cached: dict[str, np.ndarray], batch_size: int = 16) -> list[dict]:
    """One record per scene: scenario, per-head ranking, chosen / oracle / counterfactual scores."""
    vocab = planner.vocab.numpy()
    plans = _vocab_plans(vocab)  # (V, 40, 3): what the planner emits for each entry
    w = planner.cfg.selection
    recs = []
    for i in range(0, len(paths), batch_size):
        scenes = [load_scene(p) for p in paths[i : i + batch_size]]
        pred = planner.predict(collate([scene_features(s) for s in scenes]))
        probs = pred["probs"].numpy()  # (B, V, M)
        for j, (p, sc) in enumerate(zip(paths[i : i + batch_size], scenes)):
            tgt = cached.get(p.stem)
            if tgt is None:
                tgt = scene_targets(sc, vocab)  # (V, M) true sub-scores of the 40-pose entries
            tgt = tgt.astype(np.float64)
            emitted = score_in_chunks(sc, plans, chunk=512)
            em = np.stack([emitted[m] for m in TARGET_METRICS], -1)  # (V, M) as evaluation scores them
            em_epdms = _epdms_of(em)

            def choose(pr_VM: np.ndarray) -> int:
                s = selection_scores(torch.as_tensor(pr_VM[None]), pred["imi_logp"][j : j + 1], w)
                return int(s.argmax(-1)[0])

            c, o = choose(probs[j]), int(np.argmax(em_epdms))
            swap = {}
            for k, m in enumerate(TARGET_METRICS):
                pr = probs[j].copy()
                pr[:, k] = tgt[:, k]
                swap[m] = float(em_epdms[choose(pr)])
            recs.append({
                "scene": p.stem, "scenario": sc["scenario"],
                "rank": {m: _ranking(probs[j][:, k], tgt[:, k], m) for k, m in enumerate(TARGET_METRICS)},
                "chosen": {m: float(em[c, k]) for k, m in enumerate(TARGET_METRICS)} | {"EPDMS": float(em_epdms[c])},
                "oracle": {m: float(em[o, k]) for k, m in enumerate(TARGET_METRICS)} | {"EPDMS": float(em_epdms[o])},
                "swap": swap, "perfect_heads": float(em_epdms[choose(tgt)]),
                "interp_loss": float(_epdms_of(tgt)[c] - em_epdms[c]),
            })
        del scenes
    return recs


def summarise(recs: list[dict]) -> dict:
    """Per scenario (and "all"): mean ranking per head (+ scenes where defined), chosen / oracle EPDMS,
    per-sub-score deficit and share of scenes worse, head-swap gains, perfect-heads EPDMS, interp loss."""
    out = {}
    for scen in ["all", *dict.fromkeys(r["scenario"] for r in recs)]:
        rs = [r for r in recs if scen == "all" or r["scenario"] == scen]
        chosen = np.mean([r["chosen"]["EPDMS"] for r in rs])
        row = {"n": len(rs), "chosen_EPDMS": float(chosen), "oracle_EPDMS": float(np.mean([r["oracle"]["EPDMS"] for r in rs])),
               "perfect_heads_EPDMS": float(np.mean([r["perfect_heads"] for r in rs])),
               "interp_loss": float(np.mean([r["interp_loss"] for r in rs])), "rank": {}, "rank_n": {}, "deficit": {},
               "worse_share": {}, "swap_gain": {}}
        for m in TARGET_METRICS:
            v = np.array([r["rank"][m] for r in rs])
            ok = np.isfinite(v)
            row["rank"][m] = float(v[ok].mean()) if ok.any() else float("nan")
            row["rank_n"][m] = int(ok.sum())
            d = np.array([r["oracle"][m] - r["chosen"][m] for r in rs])
            row["deficit"][m] = float(d.mean())
            row["worse_share"][m] = float((d > 1e-9).mean())
            row["swap_gain"][m] = float(np.mean([r["swap"][m] for r in rs]) - chosen)
        out[scen] = row
    return out


def print_tables(name: str, summ: dict) -> None:
    heads = [*AUC_HEADS, *RANK_HEADS]
    print(f"\n== {name}: within-scene ranking (AUC: {', '.join(AUC_HEADS)}; Spearman: {', '.join(RANK_HEADS)}); "
          "(n) = scenes where defined")
    print(f"{'scenario':13s} " + " ".join(f"{m:>10s}" for m in heads))
    for scen, r in summ.items():
        print(f"{scen:13s} " + " ".join(f"{r['rank'][m]:5.3f}({r['rank_n'][m]:3d})" if r["rank_n"][m] else f"{'-':>10s}"
                                        for m in heads))
    subs = ("NC", "DAC", "DDC", "EP", "TTC", "LK", "HC")
    print(f"== {name}: EPDMS chosen / oracle / perfect heads, interp loss; per sub-score: oracle - chosen deficit "
          "[share of scenes worse] and head-swap gain")
    for scen, r in summ.items():
        print(f"{scen:13s} n={r['n']:3d} chosen {r['chosen_EPDMS']:.3f} oracle {r['oracle_EPDMS']:.3f} perfect-heads "
              f"{r['perfect_heads_EPDMS']:.3f} interp {r['interp_loss']:+.3f}")
        print("    deficit   " + " ".join(f"{m} {r['deficit'][m]:+.3f}[{r['worse_share'][m]:.2f}]" for m in subs))
        print("    swap gain " + " ".join(f"{m} {r['swap_gain'][m]:+.3f}" for m in subs))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True, help="trained planner run folder")
    ap.add_argument("--heldout", required=True, help="held-out scene folder")
    ap.add_argument("--train", default=None, help="training scene folder (default: the run's data_dir)")
    ap.add_argument("--limit", type=int, default=0, help="scenes per set, round-robin over scenarios (0 = all)")
    ap.add_argument("--out", default=None, help="write summaries + per-scene records as JSON")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    run = Path(args.run)
    rc = load_run_config(run)
    planner = load_planner(run)
    vocab = planner.vocab.numpy()
    train_dir = args.train or rc["data_dir"]
    result = {"run": str(run), "sets": {}}
    for name, d in (("train", train_dir), ("heldout", args.heldout)):
        t = time.perf_counter()
        paths = select_scene_paths(d, args.limit or None)
        cached = {}
        if name == "train":  # the run's own targets (the exact values it trained on) when they are cached
            all_paths = select_scene_paths(d)
            tg = read_cached_targets(run, all_paths, vocab)
            if tg is None and (run.parent / "targets.npz").is_file():  # RUN/best: the run's folder holds them
                tg = read_cached_targets(run.parent, all_paths, vocab)
            if tg is not None:
                cached = {p.stem: tg[k] for k, p in enumerate(all_paths)}
        recs = diagnose_set(planner, paths, cached)
        summ = summarise(recs)
        result["sets"][name] = {"dir": str(d), "seconds": time.perf_counter() - t, "summary": summ, "scenes": recs}
        print_tables(f"{name} ({d}, {len(paths)} scenes, {time.perf_counter() - t:.0f} s)", summ)
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
