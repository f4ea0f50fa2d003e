"""Open-loop evaluation on held-out scenes: EPDMS and every sub-score, overall and per scenario.

The planner's output (8 poses at 0.5 s) is interpolated to 40 poses at 0.1 s, tracked and scored,
as NAVSIM does. EC compares it with the plan the same planner made in the frame 0.5 s earlier
(`prev_*` scene fields; EC = 1 where a scene has none). On the same scenes: the rule-based
baselines of `trajmoe.drive.baselines` (constant velocity, keep lane, PDM-Closed analogue; EC the
same way) and the expert (the human of NAVSIM; its EC is not computed, 1). Each EPDMS comes with
the half-width of a 95% normal interval over scenes (`EPDMS_ci95`).
"""

from __future__ import annotations

import time

import numpy as np
import torch

from trajmoe.drive import baselines
from trajmoe.drive.dataset import PLAN_STEPS, collate, scene_features
from trajmoe.drive.metrics import METRICS, epdms, interpolate_plan, score_in_chunks, score_trajectories, simulate_plans
from trajmoe.drive.scenes import load_scene, prev_scene
from trajmoe.envs.highway import SCENARIOS
from trajmoe.eval.stats import mean_ci95
from trajmoe.moe import expert_shares, reset_routing


def _aggregate(rows: list[dict], scenarios: list[str]) -> dict:
    """Mean sub-scores and EPDMS (+ 95 % half-width) overall and per scenario, and every scene's EPDMS in
    scene order (`EPDMS_per_scene`: paired comparisons of drivers on the same scenes)."""
    out = {"n": len(rows), **{m: float(np.mean([r[m] for r in rows])) for m in METRICS},
           "EPDMS_ci95": mean_ci95([r["EPDMS"] for r in rows]),
           "EPDMS_per_scene": [round(float(r["EPDMS"]), 6) for r in rows]}
    per = {}
    for s in scenarios:
        sub = [r for r in rows if r["scenario"] == s]
        if sub:
            per[s] = {"n": len(sub), **{m: float(np.mean([r[m] for r in sub])) for m in METRICS},
                      "EPDMS_ci95": mean_ci95([r["EPDMS"] for r in sub])}
    out["per_scenario"] = per
    return out


def _row(scene: dict, plan40: np.ndarray, prev: dict | None, prev_plan40: np.ndarray | None) -> dict:
    """Scores of one (40, 3) plan, EC against the previous frame's plan simulated in that frame."""
    prev_states = None
    if prev is not None and prev_plan40 is not None:
        prev_states = simulate_plans(prev, prev_plan40[None])[0]
    sub = score_trajectories(scene, plan40[None], prev_states=prev_states)
    return {"scenario": scene["scenario"], **{m: float(sub[m][0]) for m in METRICS}}


def evaluate_baselines(scenes: list[dict], names: tuple[str, ...] = baselines.NAMES) -> dict:
    """Open-loop scores of the rule-based baselines on `scenes` -> {name: aggregate} (EC against the
    same baseline's plan in the previous frame, as the planner's)."""
    scen = [s for s in SCENARIOS if any(sc["scenario"] == s for sc in scenes)]
    out = {}
    for name in names:
        rows = []
        for sc in scenes:
            prev = prev_scene(sc)
            rows.append(_row(sc, baselines.plan(name, sc), prev, None if prev is None else baselines.plan(name, prev)))
        out[name] = _aggregate(rows, scen)
    return out


@torch.no_grad()
def evaluate_open_loop(planner, scenes: list[dict], batch_size: int = 16, keep_plans: bool = False,
                       with_baselines: bool = True) -> dict:
    """Planner, expert and (by default) baselines on the same scenes -> aggregates (module doc).
    planner None: expert and baselines only."""
    members = [] if planner is None else getattr(planner, "models", [planner])  # an ensemble's, or the planner
    for m in members:
        reset_routing(m)
    rows, expert_rows, plans = [], [], []
    t = time.perf_counter()
    for sc in scenes if planner is None else ():
        ex = score_trajectories(sc, sc["expert"][None].astype(np.float64))
        expert_rows.append({"scenario": sc["scenario"], **{m: float(ex[m][0]) for m in METRICS}})
    for i in range(0, len(scenes) if planner is not None else 0, batch_size):
        chunk = scenes[i : i + batch_size]
        chunk_rows, out = planner_rows(planner, chunk)
        rows.extend(chunk_rows)
        plan8 = out["plan8"].numpy().astype(np.float64)
        for j, sc in enumerate(chunk):
            ex = score_trajectories(sc, sc["expert"][None].astype(np.float64))
            expert_rows.append({"scenario": sc["scenario"], **{m: float(ex[m][0]) for m in METRICS}})
            if keep_plans:
                plans.append({"index": int(out["index"][j]), "scores": out["scores"][j].numpy(), "plan8": plan8[j]})
    seconds = time.perf_counter() - t
    scen = [s for s in SCENARIOS if any(r["scenario"] == s for r in expert_rows)]
    result = {"expert": _aggregate(expert_rows, scen), "seconds": seconds,
              "scenes_with_previous_frame": sum(prev_scene(s) is not None for s in scenes)}
    if planner is not None:
        result["planner"] = _aggregate(rows, scen)
    if with_baselines:
        result["baselines"] = evaluate_baselines(scenes)
    routing = expert_shares([layer for m in members for layer in m.moe_layers()], SCENARIOS)
    if routing:
        result["routing"] = routing
        # router collapse at a glance, per MoE layer and scenario: the busiest expert's share of the
        # scenario's routed tokens (1/E = perfectly balanced, 1 = collapsed onto one expert)
        result["routing_busiest_share"] = {layer: r["busiest_share"] for layer, r in routing.items()}
    if keep_plans:
        result["_plans"] = plans
    return result


@torch.no_grad()
def planner_rows(planner, scenes: list[dict]) -> tuple[list[dict], dict]:
    """Score the planner's plans in a batch of scenes: one row {"scenario", EPDMS and every sub-score}
    per scene (the 8 output poses interpolated to 40, tracked and scored; EC against the same
    planner's plan in the scene's previous frame), and the planner's `plan` output for the batch."""
    prevs = [prev_scene(s) for s in scenes]
    have = [j for j, p in enumerate(prevs) if p is not None]
    prev8 = {}
    if have:  # the previous frame first: its plan is the `consistency` term's reference (selection weights)
        pout = planner.plan(collate([scene_features(prevs[j]) for j in have]))
        prev8 = dict(zip(have, pout["plan8"].numpy().astype(np.float64)))
    ref = np.full((len(scenes), PLAN_STEPS, 3), np.nan)
    for j, p in prev8.items():
        ref[j] = p
    out = planner.plan(collate([scene_features(s) for s in scenes]), prev_plan8=torch.as_tensor(ref))
    plan8 = out["plan8"].numpy().astype(np.float64)
    rows = []
    for j, sc in enumerate(scenes):
        prev_plan = interpolate_plan(prev8[j][None])[0] if j in prev8 else None
        rows.append(_row(sc, interpolate_plan(plan8[j : j + 1])[0], prevs[j], prev_plan))
    return rows, out


def evaluate_planner_files(planner, paths: list, batch_size: int = 16) -> dict:
    """The planner's entry of `evaluate_open_loop` ({"n", EPDMS, sub-scores, "EPDMS_ci95",
    "per_scenario"}) on scene files loaded `batch_size` at a time and dropped after scoring, so memory
    does not grow with the number of scenes (held-out validation during training). No expert,
    baselines or routing statistics. ValueError: no paths (and `load_scene`'s errors naming a file)."""
    if not paths:
        raise ValueError("no held-out scene files to evaluate")
    rows = []
    for i in range(0, len(paths), batch_size):
        rows.extend(planner_rows(planner, [load_scene(p) for p in paths[i : i + batch_size]])[0])
    return _aggregate(rows, [s for s in SCENARIOS if any(r["scenario"] == s for r in rows)])


def _vocab_plans(vocab_V403: np.ndarray, stride: int = 5) -> np.ndarray:
    """The (V, 40, 3) plans a vocabulary planner actually emits: its 8 poses at 0.5 s, re-interpolated."""
    v = np.asarray(vocab_V403, np.float64)
    return interpolate_plan(v[:, stride - 1 :: stride])


def evaluate_vocab_oracle(vocab_V403: np.ndarray, scenes: list[dict]) -> dict:
    """The ceiling of any scorer over this vocabulary: per scene, the entry with the best true EPDMS.

    Args: vocab_V403 (V, 40, 3) trajectories in the ego frame (x, y m; heading rad) at 0.1 s; scenes
    held-out scene dicts. The choice uses the EPDMS of the 8 target sub-scores (EC = 1, as the planner's
    targets); the chosen plan is then scored like every other driver, except EC, which is 1 (as for
    the expert): the oracle's choice in the frame 0.5 s earlier would need that frame's agent futures,
    which scenes do not store. Apart from EC (weight 2/16), a learned planner over the same vocabulary
    cannot exceed it, so the gap planner -> oracle is the scorer's error and the gap oracle ->
    PDM-Closed analogue the vocabulary's coverage. Returns the same aggregate as `evaluate_open_loop`'s entries.
    Raises: ValueError for an empty vocabulary (from the scorer).
    """
    plans = _vocab_plans(vocab_V403)
    scen = [s for s in SCENARIOS if any(sc["scenario"] == s for sc in scenes)]
    rows = [_row(sc, plans[vocab_oracle_index(plans, sc)], None, None) for sc in scenes]
    return _aggregate(rows, scen)


def vocab_oracle_index(plans_V403: np.ndarray, scene: dict) -> int:
    """Index of the plan (V, 40, 3) with the best true EPDMS in `scene`, EC taken as 1 (the targets' EPDMS)."""
    sub = score_in_chunks(scene, plans_V403, chunk=512)
    sub["EC"] = np.ones(len(plans_V403))
    return int(np.argmax(epdms(sub)))
