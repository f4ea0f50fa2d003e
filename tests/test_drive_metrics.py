"""Scorer on hand-built scenes where the answer is known."""

import numpy as np
import pytest

from trajmoe.drive import geometry as geo
from trajmoe.drive import metrics as M

T = np.arange(1, 41) * 0.1  # plan times


def _lane(y: float, heading: float = 0.0, junction: bool = False) -> dict:
    x = np.arange(-30.0, 170.0, 0.2)
    if heading != 0.0:
        x = x[::-1]
    return {"xy": np.stack([x, np.full_like(x, y)], -1), "heading": np.full(len(x), heading), "width": np.full(len(x), 4.0),
            "junction": junction}


def make_scene(agents=(), static=(), lanes=None, speed=10.0) -> dict:
    """Straight road along +x: lanes centred at y=0 and y=4 (both heading +x unless given)."""
    lanes = lanes if lanes is not None else [_lane(0.0), _lane(4.0)]
    hist_t = np.arange(-20, 1) * 0.1
    hist = np.stack([speed * hist_t, np.zeros(21), np.zeros(21)], -1)
    A = len(agents)
    ag = np.zeros((A, 7), np.float32)
    fut = np.zeros((A, 40, 3), np.float32)
    for i, (x, y, vx) in enumerate(agents):
        ag[i] = [x, y, 0.0, vx, 0.0, 5.0, 2.0]
        fut[i, :, 0] = x + vx * T
        fut[i, :, 1] = y
    sc = {
        "ego_hist": hist.astype(np.float32),
        "ego_state": np.array([speed, speed, 0, 0, 0], np.float32),
        "expert": straight(speed).astype(np.float32),
        "agents": ag,
        "agents_static": np.array(list(static) if static else [False] * A, bool),
        "agents_future": fut,
        "agents_future_valid": np.ones((A, 40), bool),
        "route": np.stack([np.arange(-30.0, 250.0), np.zeros(280)], -1).astype(np.float32),
        "scenario": "highway",
        "domain": 0,
    }
    sc.update(geo.rasterise_lanes(lanes))
    return sc


def straight(speed: float, y: float = 0.0) -> np.ndarray:
    return np.stack([speed * T, np.full(40, y), np.zeros(40)], -1)


def score(scene, *plans, **kw):
    return M.score_trajectories(scene, np.stack(plans), **kw)


def test_expert_like_plan_scores_one():
    sc = make_scene()
    s = score(sc, straight(10.0))
    assert all(s[m][0] == 1.0 for m in M.METRICS), s


def test_leaving_the_road_fails_dac():
    sc = make_scene()
    y = np.clip(T - 1.0, 0, None) * 6.0  # drifts 18 m to the left (road ends at y = 6.5)
    plan = np.stack([10 * T, y, np.zeros(40)], -1)
    s = score(sc, plan, straight(10.0))
    assert s["DAC"].tolist() == [0.0, 1.0]
    assert s["EPDMS"][0] == 0.0


def test_stopped_car_ahead_fails_nc_and_ttc():
    sc = make_scene(agents=[(25.0, 0.0, 0.0)])
    into = straight(10.0)  # reaches x = 40 m: drives through the stopped car
    stop = np.stack([np.minimum(10 * T, 15.0), np.zeros(40), np.zeros(40)], -1)  # stops 7.4 m short of its rear
    s = score(sc, into, stop)
    assert s["NC"][0] == 0.0 and s["TTC"][0] == 0.0 and s["EPDMS"][0] == 0.0
    assert s["NC"][1] == 1.0


def test_static_object_collision_is_half():
    sc = make_scene(agents=[(25.0, 0.0, 0.0)], static=[True])
    assert score(sc, straight(10.0))["NC"][0] == 0.5


def test_rear_ended_while_stopped_is_not_at_fault():
    sc = make_scene(agents=[(-12.0, 0.0, 8.0)], speed=0.0)  # a car from behind drives into the stopped ego
    s = score(sc, np.zeros((40, 3)))
    assert s["NC"][0] == 1.0


def test_ttc_fails_when_closing_fast_without_contact():
    # Stopped car centred at 46 m (rear at 43.5 m); the ego ends at 40 m still at 10 m/s, its front
    # bumper at 42.6 m: no contact within 4 s, but 0.3 s further at its speed it would hit.
    sc = make_scene(agents=[(46.0, 0.0, 0.0)], speed=10.0)
    x = 10 * T
    s = score(sc, np.stack([x, np.zeros(40), np.zeros(40)], -1))
    assert s["NC"][0] == 1.0  # no contact within 4 s
    assert s["TTC"][0] == 0.0  # but projected 0.3-0.9 s ahead it would hit


def test_violent_swerve_fails_hc():
    sc = make_scene()
    y = 1.5 * np.sin(2 * np.pi * T / 1.0)
    h = np.arctan2(np.gradient(y, 0.1), 10.0)
    s = score(sc, np.stack([10 * T, y, h], -1), straight(10.0))
    assert s["HC"].tolist() == [0.0, 1.0]


def test_more_progress_scores_higher_ep():
    sc = make_scene()
    s = score(sc, straight(4.0), straight(7.0), straight(10.0))
    assert s["EP"][0] < s["EP"][1] < s["EP"][2] == 1.0
    assert np.isclose(s["EP"][0], 16.0 / 40.0, atol=0.02)


def test_oncoming_lane_fails_ddc_and_lk_off_centre():
    sc = make_scene(lanes=[_lane(0.0), _lane(4.0, heading=np.pi)])
    s = score(sc, straight(10.0, y=4.0), straight(10.0, y=0.0), straight(10.0, y=2.0))
    assert s["DDC"].tolist()[:2] == [0.0, 1.0]
    assert s["LK"][1] == 1.0 and s["LK"][2] == 0.0  # 2 m from both centrelines for 4 s


def test_lk_exempt_in_junctions():
    sc = make_scene(lanes=[_lane(0.0, junction=True), _lane(4.0, junction=True)])
    assert score(sc, straight(10.0, y=2.0))["LK"][0] == 1.0


def test_ec_compares_with_previous_plan():
    sc = make_scene()
    prev = straight(10.0)
    same = M.score_trajectories(sc, straight(10.0)[None], prev_plan=prev)
    brake = np.stack([np.minimum(10 * T, 10 * T[0] + np.cumsum(np.maximum(10 - 8 * T, 0) * 0.1)), np.zeros(40), np.zeros(40)], -1)
    diff = M.score_trajectories(sc, brake[None], prev_plan=prev)
    assert same["EC"][0] == 1.0 and diff["EC"][0] == 0.0
    assert M.score_trajectories(sc, brake[None])["EC"][0] == 1.0  # no previous plan: EC = 1


def test_epdms_formula_and_tlc():
    sub = {m: np.array([1.0]) for m in M.METRICS}
    sub.update(EP=np.array([0.5]), LK=np.array([0.0]))
    assert np.isclose(M.epdms(sub)[0], (5 * 0.5 + 5 + 0 + 2 + 2) / 16)
    sub["DAC"] = np.array([0.0])
    assert M.epdms(sub)[0] == 0.0
    assert score(make_scene(), straight(10.0))["TLC"][0] == 1.0  # no traffic lights in highway-env


def test_interpolate_plan_straight_line():
    p8 = straight(10.0)[4::5][None]
    p40 = M.interpolate_plan(p8)
    assert p40.shape == (1, 40, 3)
    assert np.allclose(p40[0], straight(10.0), atol=1e-9)


def test_bad_inputs():
    sc = make_scene()
    with pytest.raises(ValueError, match="shape"):
        M.score_trajectories(sc, np.zeros((2, 8, 3)))
    bad = straight(10.0)[None].copy()
    bad[0, 3, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        M.score_trajectories(sc, bad)
    with pytest.raises(ValueError, match="shape"):
        M.interpolate_plan(np.zeros((8, 3)))
