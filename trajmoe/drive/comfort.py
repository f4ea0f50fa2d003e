"""Comfort sub-scores of NAVSIM v2 (HC, EC) on simulated ego states (`trajmoe.drive.tracker` layout).

Filters as in NAVSIM's `pdm_comfort_metrics` (Savitzky-Golay, scipy's `mode="interp"`):
  accelerations  smoothed, window 8, order 2 (longitudinal at the box centre: a + d (w^2 + dw/dt),
                 nuPlan's rigid-body shift; lateral: the state's lateral acceleration)
  jerk           d|a|/dt of the smoothed acceleration magnitude (window 15, order 2)
  lon jerk       d(lon acc)/dt of the smoothed longitudinal acceleration (window 15, order 2)
  yaw rate       first derivative of the unwrapped heading (window 5, order 2)
  yaw acc        second derivative (window 5, order 3 for HC; order 2 for EC, as NAVSIM)
HC: every value over history + plan within the bounds below. EC (two-frame extended comfort): RMS of
the difference between this frame's and the previous frame's features over their overlap.
Each filter is a fixed linear operator per length, built once and applied as one matrix product.
Source: Dauner et al., NAVSIM v2 devkit `pdm_comfort_metrics.py` (limits from its config).
Legend: V plans, T states (0.1 s apart), N_STATE = `tracker.N_STATE`; units m/s^2, m/s^3, rad/s, rad/s^2.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from trajmoe.drive import tracker as tr

HC_LIMITS = {"lon_acc": (-4.05, 2.40), "lat_acc": 4.89, "jerk": 8.37, "lon_jerk": 4.13, "yaw_acc": 1.93, "yaw_rate": 0.95}
EC_LIMITS = {"acc": 0.7, "jerk": 0.5, "yaw_rate": 0.1, "yaw_acc": 0.1}
DT = tr.DT


@lru_cache(maxsize=64)
def _operator(n: int, window: int, order: int, deriv: int) -> np.ndarray:
    """(n, n) matrix R with savgol_filter(x) = x @ R for rows x of length n."""
    from scipy.signal import savgol_filter  # lazy: see geometry.rasterise_lanes

    w = min(window, n)
    return savgol_filter(np.eye(n), w, order, deriv=deriv, delta=DT, axis=0).T.copy()


def _sg(x: np.ndarray, window: int, order: int, deriv: int = 0) -> np.ndarray:
    return x @ _operator(x.shape[-1], window, order, deriv)


def _headings(states: np.ndarray) -> np.ndarray:
    """Headings are continuous in `tracker` states (never wrapped), so no phase unwrapping is needed."""
    return states[..., tr.S_H]


def hc_features(states: np.ndarray) -> dict[str, np.ndarray]:
    """(V, T, N_STATE) -> the six HC signals (filters in the module docstring), each (V, T)."""
    w, dw = states[..., tr.S_YAW_RATE], states[..., tr.S_YAW_ACC]
    lon = _sg(states[..., tr.S_A] + tr.CENTRE * (w * w + dw), 8, 2)
    lat = _sg(states[..., tr.S_AY], 8, 2)
    mag = _sg(np.hypot(states[..., tr.S_A], states[..., tr.S_AY]), 8, 2)
    h = _headings(states)
    return {"lon_acc": lon, "lat_acc": lat, "jerk": _sg(mag, 15, 2, 1), "lon_jerk": _sg(lon, 15, 2, 1),
            "yaw_rate": _sg(h, 5, 2, 1), "yaw_acc": _sg(h, 5, 3, 2)}


def history_comfort(states: np.ndarray, history: np.ndarray | None = None) -> np.ndarray:
    """HC of V simulated plans (V, 41, N_STATE), preceded by the ego's past states (H, N_STATE) as
    NAVSIM pads with the logged past -> (V,) 1.0 / 0.0."""
    if history is not None and len(history):
        states = np.concatenate([np.broadcast_to(history, (len(states),) + history.shape), states], 1)
    f = hc_features(states)
    lo, hi = HC_LIMITS["lon_acc"]
    ok = ((f["lon_acc"] > lo) & (f["lon_acc"] < hi)).all(1)
    for name in ("lat_acc", "jerk", "lon_jerk", "yaw_acc", "yaw_rate"):
        ok &= (np.abs(f[name]) < HC_LIMITS[name]).all(1)
    return ok.astype(np.float64)


def ec_features(states: np.ndarray) -> dict[str, np.ndarray]:
    """(V, T, N_STATE) -> acceleration magnitude, jerk, yaw rate, yaw acceleration (V, T) for EC."""
    acc = _sg(np.hypot(states[..., tr.S_A], states[..., tr.S_AY]), 8, 2)
    h = _headings(states)
    return {"acc": acc, "jerk": _sg(acc, 15, 2, 1), "yaw_rate": _sg(h, 5, 2, 1), "yaw_acc": _sg(h, 5, 2, 2)}


def extended_comfort(states: np.ndarray, prev_states: np.ndarray | None, shift_steps: int = 5) -> np.ndarray:
    """EC of V plans (V, T, N_STATE) against the previous frame's simulated states (T, N_STATE),
    made `shift_steps` x 0.1 s earlier: RMS differences over the overlap (current [:-shift] vs
    previous [shift:]) within EC_LIMITS -> (V,) 1.0 / 0.0; all 1.0 when prev_states is None.
    Raises ValueError if prev_states is not (T, N_STATE) or shift_steps leaves under 9 steps of overlap."""
    if prev_states is None:
        return np.ones(len(states))
    prev = np.asarray(prev_states, np.float64)
    if prev.ndim != 2 or prev.shape != states.shape[1:]:
        raise ValueError(f"previous-frame states must have shape {states.shape[1:]}, got {prev.shape}")
    if not 0 < shift_steps < states.shape[1] - 8:
        raise ValueError(f"shift_steps={shift_steps} leaves too little overlap for EC")
    cur = ec_features(states[:, :-shift_steps])
    old = ec_features(prev[None, shift_steps:])
    ok = np.ones(len(states), bool)
    for name, lim in EC_LIMITS.items():
        ok &= np.sqrt(((cur[name] - old[name]) ** 2).mean(1)) <= lim
    return ok.astype(np.float64)
