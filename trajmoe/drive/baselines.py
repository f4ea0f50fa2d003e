"""Rule-based driving baselines, planned from one scene (ego frame, 40 poses at 0.1 s).

- `constant_velocity`: the ego keeps its current velocity vector (NAVSIM's constant-velocity agent).
- `keep_lane`: follows the route centreline (its current lane and that lane's successors on the
  route) at its current speed.
- `pdm_closed`: an analogue of PDM-Closed (Dauner et al., "Parting with Misconceptions about
  Learning-based Vehicle Motion Planning", CoRL 2023), NAVSIM's privileged rule-based reference:
  proposals along the route centreline at lateral offsets {-1, 0, 1} m and five IDM speed targets
  (20 .. 100% of max(1.2 x current speed, 10 m/s)); agents forecast at constant velocity; every
  proposal scored by our NAVSIM scorer on that forecast (no future knowledge, EP normalised over the
  proposals); the best EPDMS is chosen. IDM (Treiber et al. 2000) with PDM-Closed's parameters:
  maximum acceleration 1.5 m/s^2, comfortable deceleration 3 m/s^2, headway 1.5 s, minimum gap 1 m;
  the leader is the nearest forecast agent ahead on the path (within 2 m of it laterally).
Plans: (40, 3) ego-frame box-centre poses (x m, y m, heading rad) at t = 0.1 .. 4.0 s. Legend: A agents.
"""

from __future__ import annotations

import numpy as np

from trajmoe.drive import geometry as geo
from trajmoe.drive.metrics import score_trajectories

T_STEPS, DT = 40, 0.1
IDM_A, IDM_B, IDM_HEADWAY, IDM_GAP, IDM_DELTA = 1.5, 3.0, 1.5, 1.0, 4.0
IDM_MAX_BRAKE = 6.0  # m/s^2 (PDM-Closed adds an emergency brake on top of IDM; here IDM may brake this hard)
OFFSETS = (-1.0, 0.0, 1.0)
SPEED_FRACTIONS = (0.2, 0.4, 0.6, 0.8, 1.0)
LEADER_LATERAL = 2.0
NAMES = ("constant_velocity", "keep_lane", "pdm_closed")


def constant_velocity(scene: dict) -> np.ndarray:
    """(40, 3) plan: the current velocity vector held for 4 s."""
    vx, vy = float(scene["ego_state"][1]), float(scene["ego_state"][2])
    t = np.arange(1, T_STEPS + 1) * DT
    return np.stack([vx * t, vy * t, np.full(T_STEPS, np.arctan2(vy, vx) if vx or vy else 0.0)], -1)


def _route(scene: dict):
    pts = geo.dense_route(scene["route"])
    s = np.arange(len(pts)) * geo.ROUTE_STEP
    h = geo.route_tangents(pts)
    s0 = float(geo.project_on_polyline(np.zeros(2), pts))
    return pts, s, h, s0


def _along(pts, s, h, q: np.ndarray, offset: float = 0.0) -> np.ndarray:
    """Poses at arc lengths q (clamped to the route) shifted `offset` m to the left -> (len(q), 3)."""
    q = np.clip(q, 0.0, s[-1])
    x, y = np.interp(q, s, pts[:, 0]), np.interp(q, s, pts[:, 1])
    hh = np.interp(q, s, np.unwrap(h))
    return np.stack([x - offset * np.sin(hh), y + offset * np.cos(hh), geo.wrap_angle(hh)], -1)


def keep_lane(scene: dict) -> np.ndarray:
    """(40, 3) plan: the route centreline at the current speed."""
    pts, s, h, s0 = _route(scene)
    v = float(scene["ego_state"][0])
    return _along(pts, s, h, s0 + v * np.arange(1, T_STEPS + 1) * DT)


def cv_forecast(scene: dict) -> tuple[np.ndarray, np.ndarray]:
    """Agents at constant velocity over the 4 s: (A, 40, 3) poses and (A, 40) validity."""
    ag = np.asarray(scene["agents"], np.float64)
    t = np.arange(1, T_STEPS + 1) * DT
    fut = np.zeros((len(ag), T_STEPS, 3))
    fut[..., 0] = ag[:, None, 0] + ag[:, None, 3] * t
    fut[..., 1] = ag[:, None, 1] + ag[:, None, 4] * t
    fut[..., 2] = ag[:, None, 2]
    return fut, np.ones((len(ag), T_STEPS), bool)


def idm_profile(scene: dict, fut: np.ndarray, v0: float) -> np.ndarray:
    """Arc lengths (40,) m along the route of an IDM ego (Treiber et al. 2000, PDM-Closed parameters)
    with desired speed v0 m/s behind the forecast agents fut (A, 40, 3)."""
    pts, s, h, s0 = _route(scene)
    ag = np.asarray(scene["agents"], np.float64)
    if len(ag):
        flat = fut[..., :2].reshape(-1, 2)
        a_s = geo.project_on_polyline(flat, pts).reshape(fut.shape[:2])  # (A, 40)
        foot = np.stack([np.interp(a_s, s, pts[:, 0]), np.interp(a_s, s, pts[:, 1])], -1)
        on_path = np.linalg.norm(fut[..., :2] - foot, axis=-1) < LEADER_LATERAL
        a_v = np.hypot(ag[:, 3], ag[:, 4])
        a_half = ag[:, 5] / 2.0
    pos, v = s0, float(scene["ego_state"][0])
    out = np.empty(T_STEPS)
    for k in range(T_STEPS):
        acc = IDM_A * (1.0 - (v / max(v0, 0.1)) ** IDM_DELTA)
        if len(ag):
            ahead = on_path[:, k] & (a_s[:, k] > pos)
            if ahead.any():
                gaps = a_s[ahead, k] - pos - geo.PACIFICA_LENGTH / 2.0 - a_half[ahead]
                j = int(np.argmin(gaps))
                gap = max(float(gaps[j]), 0.1)
                dv = v - float(a_v[ahead][j])
                s_star = IDM_GAP + v * IDM_HEADWAY + v * dv / (2.0 * np.sqrt(IDM_A * IDM_B))
                acc -= IDM_A * (max(s_star, 0.0) / gap) ** 2
        acc = min(max(acc, -IDM_MAX_BRAKE), IDM_A)
        v_new = max(v + acc * DT, 0.0)
        pos += 0.5 * (v + v_new) * DT
        v = v_new
        out[k] = pos
    return out


def pdm_proposals(scene: dict) -> np.ndarray:
    """(15, 40, 3) PDM-Closed-style proposals: lateral offsets x IDM speed targets."""
    pts, s, h, _ = _route(scene)
    fut, _ = cv_forecast(scene)
    v_max = max(1.2 * float(scene["ego_state"][0]), 10.0)
    plans = []
    for frac in SPEED_FRACTIONS:
        q = idm_profile(scene, fut, frac * v_max)
        for off in OFFSETS:
            plans.append(_along(pts, s, h, q, off))
    return np.stack(plans)


def pdm_closed(scene: dict) -> np.ndarray:
    """(40, 3) plan: the best PDM-Closed proposal by EPDMS on the constant-velocity forecast."""
    props = pdm_proposals(scene)
    fut, valid = cv_forecast(scene)
    forecast = {k: v for k, v in scene.items() if not k.startswith("_")}
    forecast.update(agents_future=fut.astype(np.float32), agents_future_valid=valid)
    sub = score_trajectories(forecast, props, human_filter=False, reference=props)
    return props[int(np.argmax(sub["EPDMS"]))]


def plan(name: str, scene: dict) -> np.ndarray:
    """Plan of baseline `name` (one of NAMES) for `scene` -> (40, 3).

    Raises:
        ValueError: an unknown baseline name (the message lists NAMES).
    """
    fns = {"constant_velocity": constant_velocity, "keep_lane": keep_lane, "pdm_closed": pdm_closed}
    if name not in fns:
        raise ValueError(f"unknown baseline {name!r}; choose from {', '.join(NAMES)}")
    return fns[name](scene)
