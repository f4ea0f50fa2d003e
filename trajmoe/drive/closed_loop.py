"""Closed loop: the planner drives highway-env's ego; traffic (IDM/MOBIL) reacts to it.

Per episode: 2 s with the expert at the wheel (history), then every 0.5 s the planner re-plans from
a live scene (same fields as the dataset, built from the simulator state) and a tracking controller
follows the plan at 0.1 s: pure pursuit on the plan's position 0.5 s ahead (curvature ->
highway-env's bicycle steering) and a proportional speed controller on the plan's speed.
Reported: crash rate, off-road rate (ego not on any lane at some step), progress along the route
(m), and the same for the IDM/MOBIL expert and the rule-based baselines driving the same seeds (a
baseline re-plans every 0.5 s from the live scene and is tracked the same way).
Units: m, rad, s, m/s; plans are (40, 3) ego-frame poses at 0.1 s (x, y, heading).
"""

from __future__ import annotations

import numpy as np
import torch
from rich.progress import Progress

from trajmoe.drive import baselines
from trajmoe.eval.stats import mean_ci95, wilson_interval
from trajmoe.drive import geometry as geo
from trajmoe.drive.dataset import collate, scene_features
from trajmoe.drive.metrics import interpolate_plan
from trajmoe.drive.scenes import HIST_STEPS, MAP_RADIUS, _lanes_to_frame, current_fields
from trajmoe.envs.highway import DT, SCENARIOS, HighwaySim

REPLAN_STEPS = 5  # 0.5 s
LOOKAHEAD_STEPS = 5  # pursue the plan pose 0.5 s ahead
SPEED_GAIN = 2.0  # 1/s
MAX_ACC = 5.0


def track_action(ego_xyh: np.ndarray, speed: float, plan_world: np.ndarray, k: int, length: float) -> dict:
    """Controller: plan_world (41, 3) world poses at 0.1 s from the replanning time (row 0 = start);
    k = steps since replanning; ego_xyh (3,) world pose (m, rad), speed m/s, length m (wheelbase
    proxy). Pure pursuit (Coulter 1992) on the pose 0.5 s ahead and a P speed controller ->
    highway-env action {'acceleration': m/s^2, 'steering': rad (highway-env's left-handed sign)}."""
    tgt = plan_world[min(k + LOOKAHEAD_STEPS, len(plan_world) - 1)]
    local = geo.to_frame(tgt[:2], None, ego_xyh)
    ld2 = max(float(local @ local), 1e-3)
    curvature = 2.0 * local[1] / ld2  # pure pursuit
    sin_beta = np.clip(curvature * length / 2.0, -0.99, 0.99)
    beta = np.arcsin(sin_beta)
    steering = float(np.arctan(2.0 * np.tan(beta)))  # highway-env: beta = atan(tan(delta) / 2)
    i = min(k + 1, len(plan_world) - 1)
    v_plan = np.linalg.norm(plan_world[i, :2] - plan_world[i - 1, :2]) / DT
    acc = float(np.clip(SPEED_GAIN * (v_plan - speed), -MAX_ACC, MAX_ACC))
    # highway-env uses the left-handed frame: steering sign flips with y.
    return {"acceleration": acc, "steering": -steering}


def live_scene(sim: HighwaySim, states: list[dict], t: int, rasters: bool = False) -> tuple[dict, np.ndarray]:
    """The scene fields known at step t, built from the simulator as `scenes.simulate_episode` builds
    them (lanes sampled every 0.2 m, as `_lane_tokens` expects); with `rasters` also the drivable-area
    and route rasters (the PDM-Closed baseline scores its proposals; a learned planner's queries may read
    the drivable area, `model.vocab_drivable_features`). Returns (scene, ego origin)."""
    st = states[t]
    origin = np.array([st["xy"][0, 0], st["xy"][0, 1], st["heading"][0]])
    snap = {"origin": origin, "lanes": sim.lanes(st["xy"][0], MAP_RADIUS, step=0.2), "route": sim.route_polyline()}
    scene, _ = current_fields(states, t, snap)
    scene.update(scenario=sim.scenario, domain=SCENARIOS.index(sim.scenario))
    scene["expert"] = np.zeros((40, 3), np.float32)  # unknown in closed loop (feature slot only)
    if rasters:
        scene.update(geo.rasterise_lanes(_lanes_to_frame(snap["lanes"], origin)), route_idx=geo.rasterise_route(scene["route"]))
    return scene, origin


@torch.no_grad()
def run_episode(planner, scenario: str, seed: int, seconds: float = 8.0) -> dict:
    """One closed-loop episode: 2 s of expert history, then `seconds` s driven by `planner`.

    Args:
        planner: a DrivePlanner / Ensemble (`.plan(batch)`), a baseline name from
            `baselines.NAMES`, or None for the IDM/MOBIL expert itself.
        scenario: one of SCENARIOS; seed: the episode's highway-env seed.

    Returns:
        {"scenario", "seed", "crash": bool, "offroad": bool, "progress": m along the route,
        "steps": steps driven (stops at the first crash)}.
    """
    sim = HighwaySim(scenario, seed, expert_ego=True)
    states = [sim.state()]
    for _ in range(HIST_STEPS):
        sim.step()
        states.append(sim.state())
    route0 = sim.route_polyline(behind=10.0, ahead=400.0)
    s0 = geo.project_on_polyline(states[-1]["xy"][0], route0)
    crashed = offroad = False
    plan_world = None
    last8 = None  # the learned planner's previous plan8 (its selection's `consistency` reference)
    n_steps = int(round(seconds / DT))
    for k in range(n_steps):
        t = len(states) - 1
        if k % REPLAN_STEPS == 0 and planner is not None:
            if isinstance(planner, str):  # a rule-based baseline plans 40 poses from the live scene
                scene, origin = live_scene(sim, states, t, rasters=planner == "pdm_closed")
                p40 = baselines.plan(planner, scene)
            else:
                scene, origin = live_scene(sim, states, t, rasters=True)  # drivable map: vocab_drivable_features
                out = planner.plan(collate([scene_features(scene)]), prev_plan8=last8)
                last8 = out["plan8"][:1]
                # the planner's output is 8 poses at 0.5 s (NAVSIM); track their 0.1 s interpolation, as scored
                p40 = interpolate_plan(out["plan8"][:1].numpy().astype(np.float64))[0]
            p40 = np.concatenate([np.zeros((1, 3)), p40])
            pw, ph = geo.from_frame(p40[:, :2], p40[:, 2], origin)
            plan_world = np.concatenate([pw, ph[:, None]], -1)
        if planner is not None:
            st = states[-1]
            ego_xyh = np.array([st["xy"][0, 0], st["xy"][0, 1], st["heading"][0]])
            action = track_action(ego_xyh, float(st["speed"][0]), plan_world, k % REPLAN_STEPS, sim.ego.LENGTH)
            sim.step(action)
        else:
            sim.step()
        states.append(sim.state())
        crashed |= bool(sim.ego.crashed)
        offroad |= not sim.ego_on_road()
        if crashed:
            break
    s1 = geo.project_on_polyline(states[-1]["xy"][0], route0)
    return {"scenario": scenario, "seed": seed, "crash": crashed, "offroad": offroad, "progress": float(s1 - s0),
            "steps": len(states) - 1 - HIST_STEPS}


def evaluate_closed_loop(planner, scenarios: list[str], episodes: int, seed: int = 200000, seconds: float = 8.0,
                         progress: bool = True, baseline_names: tuple[str, ...] = baselines.NAMES) -> dict:
    """Crash rate, off-road rate and route progress of the planner, the IDM/MOBIL expert and the
    rule-based baselines (`trajmoe.drive.baselines`) over the same episodes (seeds seed, seed+1, ...).
    Each figure comes with the half-width of a 95% normal interval over episodes."""
    drivers = {"planner": planner, "expert": None, **{n: n for n in baseline_names}}
    if planner is None:
        del drivers["planner"]
    rows = {name: [] for name in drivers}
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task("closed loop", total=len(drivers) * episodes * len(scenarios))
        for s in scenarios:
            for e in range(episodes):
                for name, p in drivers.items():
                    rows[name].append(run_episode(p, s, seed + e, seconds))
                    bar.advance(task)
    return {**{name: _aggregate(r, scenarios) for name, r in rows.items()}, "seconds_per_episode": seconds}


def _aggregate(rs: list[dict], scenarios: list[str]) -> dict:
    out = {"episodes": len(rs)}
    for key, name in (("crash", "crash_rate"), ("offroad", "offroad_rate"), ("progress", "progress_m")):
        vals = [float(r[key]) for r in rs]
        out[name], out[name + "_ci95"] = float(np.mean(vals)), mean_ci95(vals)
    for key, name in (("crash", "crash_rate"), ("offroad", "offroad_rate")):  # rates: Wilson 95 % (low, high)
        out[name + "_wilson95"] = list(wilson_interval(int(sum(bool(r[key]) for r in rs)), len(rs)))
    out["per_scenario"] = {
        s: {"crash_rate": float(np.mean([r["crash"] for r in rs if r["scenario"] == s])),
            "offroad_rate": float(np.mean([r["offroad"] for r in rs if r["scenario"] == s])),
            "progress_m": float(np.mean([r["progress"] for r in rs if r["scenario"] == s]))}
        for s in scenarios}
    return out
