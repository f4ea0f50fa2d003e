"""Vectorised NAVSIM-v2-style scorer (EPDMS and its sub-scores), batched over trajectories.

Input: a scene (`trajmoe.drive.scenes`) and plans `traj_VT3` = (V, 40, 3) ego-frame poses
(x, y, heading) at t = 0.1 .. 4.0 s. A pose is the centre of NAVSIM's ego box (Pacifica,
5.176 x 2.297 m). NAVSIM turns 8 poses at 0.5 s into 40 at 0.1 s and tracks them with an LQR
controller on a kinematic bicycle; here 8-pose plans are interpolated (`interpolate_plan`) and scored
as they are (no tracking controller: a known simplification).

Definitions (REFERENCE.md section 5; EPDMS = NC*DAC*DDC*TLC*(5EP+5TTC+2LK+2HC+2EC)/16):
  NC   1, or 0 after an at-fault collision with a vehicle, 0.5 with a static object (highway-env's
       Obstacle). Not at fault (NAVSIM): the ego is stopped (< 0.05 m/s), or the other box's centre is
       behind the ego's rear bumper (the ego was rear-ended). Agents follow their simulated futures
       (non-reactive, like NAVSIM's log replay).
  DAC  1 if all 4 ego corners lie on a lane (drivable raster) at every step, else 0.
  DDC  oncoming-lane progress = the largest distance driven within any 1 s window while the ego
       centre is on lanes but none of them runs within 90 degrees of the ego heading:
       < 2 m -> 1, < 6 m -> 0.5, else 0. Only intersection scenes have oncoming lanes.
  TLC  1 always: highway-env has no traffic lights (no red light can be run).
  EP   progress along the route centreline (arc-length of the final pose minus the start) divided
       by max(expert progress, own progress if NC*DAC*DDC = 1), clipped to [0, 1]; 1 if that
       denominator is under 5 m. The IDM/MOBIL expert plays NAVSIM's PDM-Closed reference here, so
       EP of a trajectory does not depend on which other trajectories are scored with it.
  TTC  0 if the ego box, pushed along its heading at its current speed for 0.3, 0.6 or 0.9 s (and
       0 s), overlaps an agent that is ahead of it (centre in front of the ego centre) at that time,
       while the ego moves (> 0.05 m/s); past the 4 s horizon agents keep their last velocity.
  LK   0 if the ego centre is more than 0.5 m from the nearest lane centreline for 2 s in a row
       (20 steps), steps inside intersections exempt (and resetting the count).
  HC   1 if over the plan (origin + 40 poses; derivatives by Savitzky-Golay, window 7, order 2)
       longitudinal acc in (-4.05, 2.40), |lateral acc| < 4.89, |jerk| < 8.37, |longitudinal jerk| < 4.13,
       |yaw acc| < 1.93, |yaw rate| < 0.95.
  EC   needs the previous frame's plan: RMS differences over the overlap of acc <= 0.7, jerk <= 0.5,
       yaw rate <= 0.1, yaw acc <= 0.1 -> 1, else 0. Without a previous plan (open-loop scenes) EC = 1.
"""

from __future__ import annotations

import numpy as np

from trajmoe.drive import geometry as geo

DT = 0.1
METRICS = ("NC", "DAC", "DDC", "TLC", "EP", "TTC", "LK", "HC", "EC", "EPDMS")
# Sub-scores the planner predicts (GTRS heads; EC needs a previous plan and is not a target).
TARGET_METRICS = ("NC", "DAC", "DDC", "TLC", "EP", "TTC", "LK", "HC")
STOPPED_SPEED = 0.05
TTC_OFFSETS = (0, 3, 6, 9)  # steps of 0.1 s
HC_LIMITS = {"lon_acc": (-4.05, 2.40), "lat_acc": 4.89, "jerk": 8.37, "lon_jerk": 4.13, "yaw_acc": 1.93, "yaw_rate": 0.95}
EC_LIMITS = {"acc": 0.7, "jerk": 0.5, "yaw_rate": 0.1, "yaw_acc": 0.1}
EP_MIN_PROGRESS = 5.0
LK_MAX_DEV = 0.5
LK_STEPS = 20


def interpolate_plan(poses_V83: np.ndarray, steps: int = 40) -> np.ndarray:
    """(V, 8, 3) poses at 0.5 s -> (V, 40, 3) at 0.1 s (linear in x, y and unwrapped heading from the origin)."""
    p = np.asarray(poses_V83, dtype=np.float64)
    if p.ndim != 3 or p.shape[-1] != 3:
        raise ValueError(f"plan must have shape (V, N, 3), got {p.shape}")
    n = p.shape[1]
    full = np.concatenate([np.zeros((p.shape[0], 1, 3)), p], axis=1)
    full[..., 2] = np.unwrap(full[..., 2], axis=1)
    t_src = np.linspace(0.0, 4.0, n + 1)
    t_dst = np.linspace(4.0 / steps, 4.0, steps)
    out = np.stack([np.stack([np.interp(t_dst, t_src, full[v, :, d]) for d in range(3)], -1) for v in range(len(p))])
    out[..., 2] = geo.wrap_angle(out[..., 2])
    return out


# ---- collisions -----------------------------------------------------------------------------
def boxes_overlap(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Separating-axis test for convex quads: corners (..., 4, 2) x (..., 4, 2) -> (...) bool."""
    hit = np.ones(a.shape[:-2], bool)
    for box in (a, b):
        for e in range(2):
            edge = box[..., e + 1, :] - box[..., e, :]
            axis = np.stack([-edge[..., 1], edge[..., 0]], -1)[..., None, :]  # (..., 1, 2)
            pa = (a * axis).sum(-1)
            pb = (b * axis).sum(-1)
            hit &= (pa.max(-1) >= pb.min(-1)) & (pb.max(-1) >= pa.min(-1))
    return hit


def _ego_corners(traj: np.ndarray) -> np.ndarray:
    return geo.box_corners(traj[..., :2], traj[..., 2], geo.PACIFICA_LENGTH, geo.PACIFICA_WIDTH)


def _speeds(traj: np.ndarray) -> np.ndarray:
    """(V, T, 3) -> (V, T) speed from backward differences (first step from the origin)."""
    xy = np.concatenate([np.zeros_like(traj[:, :1, :2]), traj[..., :2]], 1)
    return np.linalg.norm(np.diff(xy, axis=1), axis=-1) / DT


def _collisions(traj: np.ndarray, scene: dict, offsets=(0,), ahead_only: bool = False) -> np.ndarray:
    """(V, T) worst collision value per step: 1 none, 0.5 static object, 0 vehicle (at fault only)."""
    V, T, _ = traj.shape
    out = np.ones((V, T))
    agents = scene["agents"]
    if len(agents) == 0:
        return out
    fut, valid, static = scene["agents_future"], scene["agents_future_valid"], scene["agents_static"]
    a_len, a_wid = agents[:, 5], agents[:, 6]
    speed = _speeds(traj)  # (V, T)
    moving = speed > STOPPED_SPEED
    r_ego = 0.5 * np.hypot(geo.PACIFICA_LENGTH, geo.PACIFICA_WIDTH)
    r_ag = 0.5 * np.hypot(a_len, a_wid)  # (A,)
    # Agents overlapping the ego's start box are ignored (already in contact at t0).
    start = _ego_corners(np.zeros((1, 3)))[0]
    a0 = geo.box_corners(agents[:, :2], agents[:, 2], a_len, a_wid)
    ignore = boxes_overlap(np.broadcast_to(start, a0.shape), a0)
    pad = max(offsets)
    if pad:  # agents past the 4 s horizon: constant-velocity extrapolation of their last step
        vel = fut[:, -1:] - fut[:, -2:-1]  # (A, 1, 3) per step
        fut = np.concatenate([fut, fut[:, -1:] + vel * np.arange(1, pad + 1)[None, :, None]], 1)
        valid = np.concatenate([valid, np.repeat(valid[:, -1:], pad, 1)], 1)
    for off in offsets:
        t_ag = np.arange(T) + off  # agent step index for ego step t
        ts = np.arange(T)
        ego = traj[:, ts].copy()  # (V, t, 3)
        if off:
            d = speed[:, ts] * off * DT
            ego[..., 0] += d * np.cos(ego[..., 2])
            ego[..., 1] += d * np.sin(ego[..., 2])
        ag = fut[:, t_ag[ts]]  # (A, t, 3)
        ag_ok = valid[:, t_ag[ts]] & ~ignore[:, None]  # (A, t)
        dist = np.linalg.norm(ego[:, :, None, :2] - ag.transpose(1, 0, 2)[None, :, :, :2], axis=-1)  # (V, t, A)
        cand = (dist < r_ego + r_ag[None, None]) & ag_ok.T[None] & moving[:, ts, None]
        v_i, t_i, a_i = np.nonzero(cand)
        if len(v_i) == 0:
            continue
        e_c = _ego_corners(ego[v_i, t_i])
        a_pose = ag[a_i, t_i]
        a_c = geo.box_corners(a_pose[:, :2], a_pose[:, 2], a_len[a_i], a_wid[a_i])
        hit = boxes_overlap(e_c, a_c)
        # Fault: the other centre, in the ego body frame, must not be behind the ego's rear bumper.
        h = ego[v_i, t_i, 2]
        rel = a_pose[:, :2] - ego[v_i, t_i, :2]
        lon = rel[:, 0] * np.cos(h) + rel[:, 1] * np.sin(h)
        at_fault = lon > (0.0 if ahead_only else -geo.PACIFICA_LENGTH / 2.0)
        hit &= at_fault
        val = np.where(static[a_i], 0.5, 0.0)
        vv, tt = v_i[hit], ts[t_i[hit]]
        np.minimum.at(out, (vv, tt), val[hit])
    return out


# ---- map metrics ------------------------------------------------------------------------------
def _lookup(raster: np.ndarray, xy: np.ndarray, outside):
    r, c, inside = geo.cell_index(xy)
    return np.where(inside, raster[r, c], outside)


def drivable_area_compliance(traj: np.ndarray, scene: dict) -> np.ndarray:
    corners = _ego_corners(traj)  # (V, T, 4, 2)
    bits = _lookup(scene["dir_bits"], corners, 0)
    return (bits != 0).all(axis=(1, 2)).astype(np.float64)


def driving_direction_compliance(traj: np.ndarray, scene: dict) -> np.ndarray:
    bits = _lookup(scene["dir_bits"], traj[..., :2], 0).astype(np.uint8)  # (V, T)
    ok = geo.compatible_bits(traj[..., 2])
    oncoming = (bits != 0) & ((bits & ok) == 0)
    step = _speeds(traj) * DT
    prog = np.where(oncoming, step, 0.0)
    c = np.concatenate([np.zeros((len(traj), 1)), np.cumsum(prog, 1)], 1)
    win = c[:, 10:] - c[:, :-10]  # 1 s windows
    worst = win.max(1) if win.shape[1] else c[:, -1]
    return np.where(worst < 2.0, 1.0, np.where(worst < 6.0, 0.5, 0.0))


def lane_keeping(traj: np.ndarray, scene: dict) -> np.ndarray:
    dev = _lookup(scene["centre_dm"], traj[..., :2], 255).astype(np.float64) / 10.0
    junction = _lookup(scene["junction"], traj[..., :2], False)
    bad = (dev > LK_MAX_DEV) & ~junction  # (V, T)
    # Longest run of consecutive bad steps.
    run = np.zeros(len(traj))
    longest = np.zeros(len(traj))
    for t in range(traj.shape[1]):
        run = np.where(bad[:, t], run + 1, 0)
        longest = np.maximum(longest, run)
    return (longest < LK_STEPS).astype(np.float64)


def route_progress(traj: np.ndarray, scene: dict) -> np.ndarray:
    route = scene["route"].astype(np.float64)
    s_end = geo.project_on_polyline(traj[:, -1, :2], route)
    s_0 = geo.project_on_polyline(np.zeros(2), route)
    return s_end - s_0


# ---- comfort ----------------------------------------------------------------------------------
def _kinematics(poses: np.ndarray) -> dict[str, np.ndarray]:
    """(V, T, 3) poses at 0.1 s -> dict of (V, T) lon/lat acc, jerk, lon jerk, yaw rate, yaw acc."""
    from scipy.signal import savgol_filter

    kw = dict(window_length=7, polyorder=2, delta=DT, axis=1, mode="interp")
    h = np.unwrap(poses[..., 2], axis=1)
    vx, vy = savgol_filter(poses[..., 0], deriv=1, **kw), savgol_filter(poses[..., 1], deriv=1, **kw)
    ax, ay = savgol_filter(vx, deriv=1, **kw), savgol_filter(vy, deriv=1, **kw)
    jx, jy = savgol_filter(ax, deriv=1, **kw), savgol_filter(ay, deriv=1, **kw)
    c, s = np.cos(h), np.sin(h)
    yaw_rate = savgol_filter(h, deriv=1, **kw)
    return {
        "lon_acc": ax * c + ay * s,
        "lat_acc": -ax * s + ay * c,
        "jerk": np.hypot(jx, jy),
        "lon_jerk": jx * c + jy * s,
        "yaw_rate": yaw_rate,
        "yaw_acc": savgol_filter(yaw_rate, deriv=1, **kw),
        "acc": np.hypot(ax, ay),
    }


def history_comfort(traj: np.ndarray, scene: dict) -> np.ndarray:
    """Comfort of the plan from the current pose on (origin + 40 poses).

    NAVSIM tracks the plan from the ego's current state with an LQR controller, so the executed
    trajectory is continuous with the history. Without that tracker, joining raw vocabulary
    trajectories to the history would fail HC for any plan whose start speed differs from the ego's
    (measured: ~95% of a k-means vocabulary), so the history is not part of the window here."""
    start = np.zeros((len(traj), 1, 3))
    k = _kinematics(np.concatenate([start, traj], 1))
    lo, hi = HC_LIMITS["lon_acc"]
    ok = (k["lon_acc"] > lo) & (k["lon_acc"] < hi)
    for name in ("lat_acc", "jerk", "lon_jerk", "yaw_acc", "yaw_rate"):
        ok &= np.abs(k[name]) < HC_LIMITS[name]
    return ok.all(1).astype(np.float64)


def extended_comfort(traj: np.ndarray, prev_plan: np.ndarray | None, shift_steps: int = 5) -> np.ndarray:
    """Compare each plan with the previous frame's plan (given in the current ego frame, made
    `shift_steps` x 0.1 s earlier) over their overlap; 1 when prev_plan is None."""
    if prev_plan is None:
        return np.ones(len(traj))
    T = traj.shape[1]
    n = T - shift_steps
    if n < 8:
        raise ValueError(f"shift_steps={shift_steps} leaves too little overlap for EC")
    cur = _kinematics(traj[:, :n])
    prev = _kinematics(np.asarray(prev_plan, np.float64)[None, shift_steps:])
    ok = np.ones(len(traj), bool)
    for name, lim in EC_LIMITS.items():
        rms = np.sqrt(((cur[name] - prev[name]) ** 2).mean(1))
        ok &= rms <= lim
    return ok.astype(np.float64)


# ---- all together -----------------------------------------------------------------------------
def epdms(sub: dict[str, np.ndarray]) -> np.ndarray:
    """EPDMS = NC*DAC*DDC*TLC*(5EP+5TTC+2LK+2HC+2EC)/16 (NAVSIM v2)."""
    mult = sub["NC"] * sub["DAC"] * sub["DDC"] * sub["TLC"]
    return mult * (5 * sub["EP"] + 5 * sub["TTC"] + 2 * sub["LK"] + 2 * sub["HC"] + 2 * sub["EC"]) / 16.0


def score_trajectories(scene: dict, traj_VT3: np.ndarray, prev_plan: np.ndarray | None = None,
                       expert_progress: float | None = None) -> dict[str, np.ndarray]:
    """Every metric of METRICS for each of V plans (V, 40, 3) -> dict of (V,) float arrays."""
    traj = np.asarray(traj_VT3, dtype=np.float64)
    if traj.ndim != 3 or traj.shape[1:] != (40, 3):
        raise ValueError(f"trajectories must have shape (V, 40, 3), got {traj.shape}")
    if not np.isfinite(traj).all():
        raise ValueError("trajectories contain NaN or inf")
    sub: dict[str, np.ndarray] = {}
    sub["NC"] = _collisions(traj, scene).min(1)
    sub["DAC"] = drivable_area_compliance(traj, scene)
    sub["DDC"] = driving_direction_compliance(traj, scene)
    sub["TLC"] = np.ones(len(traj))
    progress = route_progress(traj, scene)
    if expert_progress is None:
        expert_progress = float(route_progress(scene["expert"][None].astype(np.float64), scene)[0])
    safe = (sub["NC"] == 1) & (sub["DAC"] == 1) & (sub["DDC"] == 1)
    denom = np.maximum(expert_progress, np.where(safe, progress, -np.inf))
    sub["EP"] = np.where(denom < EP_MIN_PROGRESS, 1.0, np.clip(progress / np.maximum(denom, 1e-6), 0.0, 1.0))
    sub["TTC"] = _collisions(traj, scene, offsets=TTC_OFFSETS, ahead_only=True).min(1)
    sub["TTC"] = np.where(sub["TTC"] < 1, 0.0, 1.0)
    sub["LK"] = lane_keeping(traj, scene)
    sub["HC"] = history_comfort(traj, scene)
    sub["EC"] = extended_comfort(traj, prev_plan)
    sub["EPDMS"] = epdms(sub)
    return sub


def score_in_chunks(scene: dict, traj_VT3: np.ndarray, chunk: int = 1024) -> dict[str, np.ndarray]:
    parts = [score_trajectories(scene, traj_VT3[i : i + chunk]) for i in range(0, len(traj_VT3), chunk)]
    return {k: np.concatenate([p[k] for p in parts]) for k in METRICS}
