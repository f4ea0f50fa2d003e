"""What the vehicle would do with a plan: LQR tracking on a kinematic bicycle, vectorised over plans.

NAVSIM v2 (Dauner et al., "NAVSIM: Data-Driven Non-Reactive Autonomous Vehicle Simulation and
Benchmarking", and its PDM-Closed simulator) does not score the planned poses themselves: it tracks
them at 10 Hz with nuPlan's two-stage LQR controller (longitudinal: one-step LQR on speed toward the
reference speed 1 s ahead; lateral: one-step LQR on lateral error / heading error / steering angle
over a 10-step linearised horizon) driving a kinematic bicycle (rear-axle reference, first-order
actuator lags 0.2 s on acceleration and 0.05 s on steering, steering limit 60 degrees), and scores
the 41 simulated states. This module re-implements that loop for V plans at once (plain numpy,
explicit 3-state algebra instead of batched matrix products).

State layout (`S_*` indices, rear axle, ego frame): x, y, heading, speed, acceleration (longitudinal),
steering angle, yaw rate, yaw acceleration, lateral acceleration (0 in the bicycle model, as in
nuPlan's; the logged history has its measured value).

Reference profiles (speed and curvature along each plan) are the regularised least-squares fits
of nuPlan's tracker (jerk penalty 1e-4, curvature-rate penalty 1e-2); they depend on the plan only,
so they are cached per plan array (a fixed vocabulary is fitted once).
Source: Dauner et al., NAVSIM v2 devkit (PDM-Closed simulator: nuPlan's `LQRTracker` and
`KinematicBicycleModel`). Legend: V plans, T / N steps of 0.1 s; units m, rad, m/s, m/s^2.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict

import numpy as np

from trajmoe.drive import geometry as geo

DT = 0.1
WHEELBASE = geo.PACIFICA_WHEELBASE
CENTRE = geo.PACIFICA_CENTRE_OFFSET  # rear axle -> box centre (m)
S_X, S_Y, S_H, S_V, S_A, S_STEER, S_YAW_RATE, S_YAW_ACC, S_AY = range(9)
N_STATE = 9
HORIZON = 10  # lateral LQR look-ahead steps
Q_LON, R_LON = 10.0, 1.0
Q_LAT = (1.0, 10.0, 0.0)
R_LAT = 1.0
JERK_PENALTY, CURV_RATE_PENALTY, INIT_CURV_PENALTY = 1e-4, 1e-2, 1e-10
STOP_GAIN, STOP_SPEED = 0.5, 0.2
ACC_TAU, STEER_TAU, MAX_STEER = 0.2, 0.05, np.pi / 3

_CACHE: OrderedDict[str, tuple[np.ndarray, np.ndarray]] = OrderedDict()
_CACHE_SIZE = 8


def centre_to_rear(poses: np.ndarray) -> np.ndarray:
    """(..., 3) box-centre poses (m, rad) -> rear-axle poses, CENTRE m behind along the heading."""
    out = np.array(poses, dtype=np.float64, copy=True)
    out[..., 0] -= CENTRE * np.cos(out[..., 2])
    out[..., 1] -= CENTRE * np.sin(out[..., 2])
    return out


def rear_to_centre(poses: np.ndarray) -> np.ndarray:
    """(..., >=3) rear-axle poses -> box-centre (x, y, heading) (..., 3)."""
    out = np.array(poses[..., :3], dtype=np.float64, copy=True)
    out[..., 0] += CENTRE * np.cos(out[..., 2])
    out[..., 1] += CENTRE * np.sin(out[..., 2])
    return out


def _fit_profiles(poses: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(V, N, 3) rear-axle poses at DT -> speed (V, N-1) and curvature (V, N-1) reference profiles.

    Speed: min ||disp - A [v0, a]||^2 + 1e-4 ||diff(a)||^2, displacement k = dt (v0 + dt sum_{j<k} a_j)
    along heading k; curvature: min ||dheading - B [k0, kdot]||^2 + 1e-2 ||kdot||^2 (nuPlan's tracker)."""
    V, N, _ = poses.shape
    M = N - 1
    d = np.diff(poses, axis=1)
    dxy = d[..., :2].reshape(V, -1)  # (V, 2M)
    dh = geo.wrap_angle(d[..., 2])
    h = poses[:, :-1, 2]
    col = np.empty((V, 2 * M))
    col[:, 0::2], col[:, 1::2] = np.cos(h), np.sin(h)
    low = np.tril(np.ones((M, M)), 0)
    low[:, 0] = 0.0
    low = np.repeat(low, 2, axis=0)  # (2M, M): acceleration j-1 acts on displacement k >= j
    A = col[..., None] * DT**2 * low[None]
    A[..., 0] = col * DT
    Rj = np.zeros((M - 2, M))
    Rj[:, 1:] = np.eye(M - 2, M - 1, 1) - np.eye(M - 2, M - 1)
    At = A.transpose(0, 2, 1)
    x = np.linalg.solve(At @ A + JERK_PENALTY * (Rj.T @ Rj)[None], At @ dxy[..., None])[..., 0]
    speed = x[:, :1] + np.concatenate([np.zeros((V, 1)), np.cumsum(x[:, 1:] * DT, 1)], 1)  # (V, M)
    B = np.repeat(np.tri(M)[None], V, 0)
    B[:, 1:, 1:] *= (speed[:, 1:] * DT**2)[:, :, None]
    B[:, :, 0] = speed * DT
    Q = CURV_RATE_PENALTY * np.eye(M)
    Q[0, 0] = INIT_CURV_PENALTY
    Bt = B.transpose(0, 2, 1)
    y = np.linalg.solve(Bt @ B + Q[None], Bt @ dh[..., None])[..., 0]
    curv = y[:, :1] + np.concatenate([np.zeros((V, 1)), np.cumsum(y[:, 1:] * DT, 1)], 1)
    return speed, curv


def reference_profiles(poses: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cached `_fit_profiles` (keyed by the bytes of the pose array)."""
    key = hashlib.blake2b(np.ascontiguousarray(poses).tobytes(), digest_size=16).hexdigest() + str(poses.shape)
    hit = _CACHE.get(key)
    if hit is None:
        hit = _fit_profiles(poses)
        _CACHE[key] = hit
        if len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    else:
        _CACHE.move_to_end(key)
    return hit


def initial_state(scene: dict) -> np.ndarray:
    """(N_STATE,) rear-axle state of the ego at t0 from the scene (speed, acceleration, and the
    steering angle implied by the yaw rate of the last history step, v tan(steer) / wheelbase)."""
    es = scene["ego_state"]
    hist = scene["ego_hist"].astype(np.float64)
    yaw_rate = float(geo.wrap_angle(hist[-1, 2] - hist[-2, 2])) / DT if len(hist) > 1 else 0.0
    v = float(es[0])
    s = np.zeros(N_STATE)
    s[S_X] = -CENTRE
    s[S_V] = v
    s[S_A] = float(es[3])
    s[S_STEER] = np.arctan(WHEELBASE * yaw_rate / v) if v > 0.5 else 0.0
    s[S_YAW_RATE] = v * np.tan(s[S_STEER]) / WHEELBASE
    return s


def simulate(plan_VT3: np.ndarray, init: np.ndarray) -> np.ndarray:
    """Track V centre-pose plans (V, 40, 3) at 0.1 s from state `init` (N_STATE,) -> (V, 41, N_STATE).

    Row 0 is `init`; plans are in the ego frame with the ego box centre at the origin."""
    plan = np.asarray(plan_VT3, dtype=np.float64)
    V, T, _ = plan.shape
    ref = centre_to_rear(np.concatenate([np.zeros((V, 1, 3)), plan], 1))  # (V, T+1, 3)
    ref[:, :, 2] = np.unwrap(ref[:, :, 2], axis=1)
    v_prof, k_prof = reference_profiles(ref)  # (V, T)
    n = v_prof.shape[1]
    # Structure of arrays, time-major: every per-step operand is a contiguous (V,) or (V, H) block.
    v_prof_t = np.ascontiguousarray(v_prof.T)
    rx, ry = np.ascontiguousarray(ref[:, :, 0].T), np.ascontiguousarray(ref[:, :, 1].T)
    rh = np.ascontiguousarray(ref[:, :, 2].T)
    rc, rs = np.cos(rh), np.sin(rh)
    k_pad = np.concatenate([k_prof, np.repeat(k_prof[:, -1:], HORIZON, 1)], 1).T  # (n + H, V), past the end = last
    kp, kq, kr, k1, kk = (sum(w[m] * k_pad[m : m + T] for m in range(HORIZON)) for w in _KW)  # (T, V) each
    out = np.empty((T + 1, N_STATE, V))
    out[0] = np.asarray(init, dtype=np.float64)[:, None]
    st = out[0].copy()
    qa, qb, qc = Q_LAT
    for i in range(T):
        v = st[S_V]
        # Errors against the plan pose of this step (Frenet frame of the reference).
        ex, ey = st[S_X] - rx[i], st[S_Y] - ry[i]
        z0 = -ex * rs[i] + ey * rc[i]
        z1 = geo.wrap_angle(st[S_H] - rh[i])
        z2 = st[S_STEER]
        j = min(i + HORIZON, n - 1)
        v_ref = v_prof_t[j]
        stop = (v_ref <= STOP_SPEED) & (v <= STOP_SPEED)
        acc = -(HORIZON * DT * Q_LON * (v - v_ref)) / ((HORIZON * DT) ** 2 * Q_LON + R_LON)
        if stop.any():
            acc = np.where(stop, -STOP_GAIN * (v - v_ref), acc)
        # Lateral: the linearised error after HORIZON steps in closed form (module notes below).
        vv, va, aa = v * v, v * acc, acc * acc
        su = v * _SU[0] + acc * _SU[1]
        z2l = z2 / WHEELBASE
        z0 = z0 + z1 * su + z2l * (_SP[0] * vv + _SP[1] * va + _SP[2] * aa) - (vv * kp[i] + va * kq[i] + aa * kr[i])
        z1 = z1 + z2l * su - (v * k1[i] + acc * kk[i])
        b0 = _B0[0] * vv + _B0[1] * va + _B0[2] * aa
        b1 = _B1[0] * v + _B1[1] * acc
        b2 = HORIZON * DT
        z1 = geo.wrap_angle(z1)  # (the steering angle z2 stays within +-60 degrees)
        rate = -(qa * b0 * z0 + qb * b1 * z1 + qc * b2 * z2) / (qa * b0**2 + qb * b1**2 + qc * b2**2 + R_LAT)
        if stop.any():
            rate = np.where(stop, 0.0, rate)
        _propagate(st, acc, rate, out[i + 1])
        st = out[i + 1]
    return out.transpose(2, 0, 1)


_K = np.arange(HORIZON, dtype=np.float64)


def _excl_cumsum(x: np.ndarray) -> np.ndarray:
    """Cumulative sum over the last axis, excluding the current element."""
    c = np.cumsum(x, axis=-1)
    return np.concatenate([np.zeros_like(c[..., :1]), c[..., :-1]], axis=-1)


def _horizon_coefficients():
    """Constants of the closed-form lateral horizon. With u_k = (v + a k DT) DT (speed after k steps of
    the acceleration command a, times DT), c_k = steer / wheelbase - curvature_k and the error
    recursion z0 += u_k z1, z1 += u_k c_k (z2 = steering constant), after HORIZON steps:
      z1 = z1 + sum_k u_k c_k,   z0 = z0 + z1 sum_k u_k + sum_m u_m c_m U_m,  U_m = sum_{k>m} u_k,
    and u_m U_m = v^2 p_m + v a q_m + a^2 r_m. The steering-rate input column (b0, b1, b2) follows
    b0 += u_k b1, b1 += u_k b2 / wheelbase, b2 += DT."""
    k = _K
    n = HORIZON - 1 - k
    tail = np.array([k[m + 1 :].sum() for m in range(HORIZON)])
    p, q, r = DT**2 * n, DT**3 * (tail + k * n), DT**4 * k * tail
    su = np.array([HORIZON * DT, DT**2 * k.sum()])
    sp = np.array([p.sum(), q.sum(), r.sum()])
    kw = (p, q, r, np.full(HORIZON, DT), DT**2 * k)  # weights of the curvature sums
    uv, ua = np.full(HORIZON, DT), k * DT * DT
    w = k * DT / WHEELBASE
    bv, ba = _excl_cumsum(uv * w), _excl_cumsum(ua * w)  # b1 before step k
    b0 = np.array([(uv * bv).sum(), (uv * ba + ua * bv).sum(), (ua * ba).sum()])
    b1 = np.array([(uv * w).sum(), (ua * w).sum()])
    return su, sp, kw, b0, b1


_SU, _SP, _KW, _B0, _B1 = _horizon_coefficients()


def _propagate(st: np.ndarray, acc_cmd: np.ndarray, rate_cmd: np.ndarray, new: np.ndarray) -> None:
    """One DT step of the kinematic bicycle with first-order actuator lags (nuPlan's motion model);
    states are (N_STATE, V), the result is written into `new`."""
    a_old, steer = st[S_A], st[S_STEER]
    a = a_old + DT / (DT + ACC_TAU) * (acc_cmd - a_old)
    ideal = steer + DT * rate_cmd
    steer_new = steer + DT / (DT + STEER_TAU) * (ideal - steer)
    v, h = st[S_V], st[S_H]
    new[S_X] = st[S_X] + v * np.cos(h) * DT
    new[S_Y] = st[S_Y] + v * np.sin(h) * DT
    new[S_H] = h + v * np.tan(steer) * (DT / WHEELBASE)
    new[S_V] = v + a * DT
    new[S_A] = a
    new[S_STEER] = np.clip(steer_new, -MAX_STEER, MAX_STEER)
    new[S_YAW_RATE] = new[S_V] * np.tan(new[S_STEER]) / WHEELBASE
    new[S_YAW_ACC] = (new[S_YAW_RATE] - st[S_YAW_RATE]) / DT
    new[S_AY] = 0.0


def states_from_poses(poses: np.ndarray, init: np.ndarray | None = None) -> np.ndarray:
    """(V, N, 3) centre poses at DT -> (V, N, N_STATE) rear-axle states by finite differences
    (speed, longitudinal acceleration, yaw rate, yaw acceleration; steering from the yaw rate).
    Used for the history (NAVSIM pads comfort with the logged past) and for untracked scoring."""
    p = centre_to_rear(poses)
    p[..., 2] = np.unwrap(p[..., 2], axis=1)
    V, N, _ = p.shape
    st = np.zeros((V, N, N_STATE))
    st[..., :3] = p  # heading unwrapped (continuous), as the tracker's
    if N < 2:
        return st
    step = np.diff(p[..., :2], axis=1)
    lon = step[..., 0] * np.cos(p[:, 1:, 2]) + step[..., 1] * np.sin(p[:, 1:, 2])
    v = np.concatenate([lon[:, :1], lon], 1) / DT
    w = np.concatenate([np.zeros((V, 1)), np.diff(p[..., 2], axis=1)], 1) / DT
    w[:, 0] = w[:, 1] if N > 1 else 0.0
    if init is not None:
        v[:, 0], w[:, 0] = init[S_V], init[S_YAW_RATE]
    st[..., S_V] = v
    st[..., S_A] = np.concatenate([np.zeros((V, 1)), np.diff(v, axis=1)], 1) / DT
    st[..., S_YAW_RATE] = w
    st[..., S_YAW_ACC] = np.concatenate([np.zeros((V, 1)), np.diff(w, axis=1)], 1) / DT
    st[..., S_STEER] = np.arctan(WHEELBASE * w / np.maximum(np.abs(v), 0.5))
    st[..., S_AY] = v * w
    return st
