"""Open-loop evaluation on held-out scenes: EPDMS and every sub-score, overall and per scenario.

The planner's output (8 poses at 0.5 s) is interpolated to 40 poses at 0.1 s and scored, as NAVSIM
does. The expert's own score on the same scenes is reported as a reference.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from trajmoe.drive.dataset import collate, scene_features
from trajmoe.drive.metrics import METRICS, interpolate_plan, score_trajectories
from trajmoe.envs.highway import SCENARIOS


def _aggregate(rows: list[dict], scenarios: list[str]) -> dict:
    out = {"n": len(rows), **{m: float(np.mean([r[m] for r in rows])) for m in METRICS}}
    per = {}
    for s in scenarios:
        sub = [r for r in rows if r["scenario"] == s]
        if sub:
            per[s] = {"n": len(sub), **{m: float(np.mean([r[m] for r in sub])) for m in METRICS}}
    out["per_scenario"] = per
    return out


def routing_counts(planner) -> np.ndarray | None:
    """(num_domains, E) tokens routed per scenario and expert, summed over the MoE layers."""
    models = getattr(planner, "models", [planner])
    total = None
    for m in models:
        for blk in m.decoder:
            if blk.is_moe:
                c = blk.ffn.domain_counts.detach().cpu().numpy().astype(np.float64)
                total = c if total is None else (total + c if total.shape == c.shape else total)
    return total


def reset_routing(planner) -> None:
    for m in getattr(planner, "models", [planner]):
        for blk in m.decoder:
            if blk.is_moe:
                blk.ffn.reset_stats()


@torch.no_grad()
def evaluate_open_loop(planner, scenes: list[dict], batch_size: int = 16, keep_plans: bool = False) -> dict:
    reset_routing(planner)
    rows, expert_rows, plans = [], [], []
    t = time.perf_counter()
    for i in range(0, len(scenes), batch_size):
        chunk = scenes[i : i + batch_size]
        batch = collate([scene_features(s) for s in chunk])
        out = planner.plan(batch)
        plan8 = out["plan8"].numpy().astype(np.float64)
        for j, sc in enumerate(chunk):
            plan40 = interpolate_plan(plan8[j : j + 1])
            sub = score_trajectories(sc, plan40)
            rows.append({"scenario": sc["scenario"], **{m: float(sub[m][0]) for m in METRICS}})
            ex = score_trajectories(sc, sc["expert"][None].astype(np.float64))
            expert_rows.append({"scenario": sc["scenario"], **{m: float(ex[m][0]) for m in METRICS}})
            if keep_plans:
                plans.append({"index": int(out["index"][j]), "scores": out["scores"][j].numpy(), "plan8": plan8[j]})
    seconds = time.perf_counter() - t
    scen = [s for s in SCENARIOS if any(r["scenario"] == s for r in rows)]
    result = {"planner": _aggregate(rows, scen), "expert": _aggregate(expert_rows, scen), "seconds": seconds}
    counts = routing_counts(planner)
    if counts is not None:
        result["routing_counts"] = {"scenarios": list(SCENARIOS), "counts": counts.tolist()}
    if keep_plans:
        result["_plans"] = plans
    return result
