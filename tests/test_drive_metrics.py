"""Scorer on hand-built scenes where the answer is known."""

import numpy as np
import pytest

from trajmoe.drive import geometry as geo
from trajmoe.drive import metrics as M
from trajmoe.drive import tracker as tr

T = np.arange(1, 41) * 0.1  # plan times


def _lane(y: float, heading: float = 0.0, junction: bool = False) -> dict:
    x = np.arange(-30.0, 170.0, 0.2)
    if heading != 0.0:
        x = x[::-1]
    return {"xy": np.stack([x, np.full_like(x, y)], -1), "heading": np.full(len(x), heading), "width": np.full(len(x), 4.0),
            "junction": junction}


def make_scene(agents=(), static=(), lanes=None, speed=10.0, expert=None, route_y=0.0, agent_vy=None) -> dict:
    """Straight road along +x: lanes centred at y=0 and y=4 (both heading +x unless given); the
    route runs along y = route_y; agents (x, y, vx) drive straight (lateral speed agent_vy[i])."""
    lanes = lanes if lanes is not None else [_lane(0.0), _lane(4.0)]
    hist_t = np.arange(-20, 1) * 0.1
    hist = np.stack([speed * hist_t, np.zeros(21), np.zeros(21)], -1)
    A = len(agents)
    ag = np.zeros((A, 7), np.float32)
    fut = np.zeros((A, 40, 3), np.float32)
    for i, (x, y, vx) in enumerate(agents):
        ag[i] = [x, y, 0.0, vx, 0.0, 5.0, 2.0]
        fut[i, :, 0] = x + vx * T
        vy = 0.0 if agent_vy is None else agent_vy[i]
        fut[i, :, 1] = y + vy * T
        fut[i, :, 2] = np.arctan2(vy, vx) if vx or vy else 0.0
        ag[i, 2], ag[i, 4] = fut[i, 0, 2], vy
    sc = {
        "ego_hist": hist.astype(np.float32),
        "ego_state": np.array([speed, speed, 0, 0, 0], np.float32),
        "expert": (straight(speed) if expert is None else expert).astype(np.float32),
        "agents": ag,
        "agents_static": np.array(list(static) if static else [False] * A, bool),
        "agents_future": fut,
        "agents_future_valid": np.ones((A, 40), bool),
        "route": np.stack([np.arange(-30.0, 250.0), np.full(280, route_y)], -1).astype(np.float32),
        "scenario": "highway",
        "domain": 0,
    }
    sc.update(geo.rasterise_lanes(lanes))
    return sc


def straight(speed: float, y: float = 0.0) -> np.ndarray:
    return np.stack([speed * T, np.full(40, y), np.zeros(40)], -1)


def score(scene, *plans, **kw):
    return M.score_trajectories(scene, np.stack(plans), **kw)


def braking(speed: float, decel: float) -> np.ndarray:
    """Constant deceleration from `speed` to a stop, then standing."""
    t = np.minimum(T, speed / decel)
    return np.stack([speed * t - 0.5 * decel * t**2, np.zeros(40), np.zeros(40)], -1)


def test_expert_like_plan_scores_one():
    s = score(make_scene(), straight(10.0))
    assert all(s[m][0] == 1.0 for m in M.METRICS), s


def test_tracked_straight_plan_is_reproduced():
    sc = make_scene()
    st = M.simulate_plans(sc, straight(10.0)[None])
    cen = tr.rear_to_centre(st)[0, 1:]
    assert np.allclose(cen, straight(10.0), atol=1e-9) and np.allclose(st[0, :, tr.S_V], 10.0)


def test_tracking_joins_the_plan_to_the_ego_state():
    # The ego drives 10 m/s; a 12 m/s plan taken literally jumps 20 m/s^2 in its first 0.1 s (HC 0),
    # the tracked vehicle accelerates smoothly onto it (HC 1), as NAVSIM scores it.
    sc = make_scene()
    assert score(sc, straight(12.0), track=False)["HC"][0] == 0.0
    assert score(sc, straight(12.0))["HC"][0] == 1.0


def test_leaving_the_road_fails_dac():
    sc = make_scene()
    y = np.clip(T - 1.0, 0, None) * 6.0  # drifts 18 m to the left (road ends at y = 6.75)
    plan = np.stack([10 * T, y, np.zeros(40)], -1)
    s = score(sc, plan, straight(10.0))
    assert s["DAC"].tolist() == [0.0, 1.0] and s["EPDMS"][0] == 0.0


def test_dac_shoulder_is_symmetric():
    # (j) one 4 m lane + 0.75 m shoulder: road edge 2.75 m from its centre. The ego box (half width
    # 1.1485 m) driving along y = 0 with the lane centred 1.5 m to either side: inside; 1.7 m: out.
    def dac(y):
        return score(make_scene(lanes=[_lane(y)], route_y=y), straight(10.0), human_filter=False)["DAC"][0]

    ok, out = [dac(-1.5), dac(1.5)], [dac(-1.7), dac(1.7)]
    assert ok == [1.0, 1.0] and out == [0.0, 0.0]


def test_stopped_car_ahead_fails_nc_and_ttc():
    stop_expert = braking(10.0, 3.0)  # stops after 16.7 m, 10.8 m short of the car's rear
    sc = make_scene(agents=[(30.0, 0.0, 0.0)], expert=stop_expert)
    s = score(sc, straight(10.0), stop_expert)
    assert s["NC"][0] == 0.0 and s["TTC"][0] == 0.0 and s["EPDMS"][0] == 0.0
    assert s["NC"][1] == 1.0


def test_static_object_collision_is_half():
    sc = make_scene(agents=[(30.0, 0.0, 0.0)], static=[True], expert=braking(10.0, 3.0))
    assert score(sc, straight(10.0))["NC"][0] == 0.5


def test_rear_ended_while_stopped_is_not_at_fault():
    sc = make_scene(agents=[(-12.0, 0.0, 8.0)], speed=0.0, expert=np.zeros((40, 3)))
    assert score(sc, np.zeros((40, 3)))["NC"][0] == 1.0


def test_nc_ignores_a_track_after_a_not_at_fault_contact():
    # (a) A car rear-ends the slow ego (2 m/s) and, being non-reactive, drives on through it: the
    # first contact is from behind (not at fault), so the later overlaps do not count either.
    sc = make_scene(agents=[(-8.0, 0.0, 10.0)], speed=2.0, expert=straight(2.0))
    assert score(sc, straight(2.0))["NC"][0] == 1.0


def test_nc_lateral_contact_blamed_only_between_lanes():
    # (b) A car alongside (1 m behind the ego centre) drifts 1.5 m/s sideways into the ego's flank.
    sc = make_scene(agents=[(-1.0, 3.7, 10.0)], agent_vy=[-1.5])
    assert score(sc, straight(10.0))["NC"][0] == 1.0  # ego centred in its lane: not at fault
    # Lanes shifted so that the ego (y = 0) straddles two lanes: the same contact is at fault.
    lanes = [_lane(-1.5), _lane(2.5)]
    sc = make_scene(agents=[(-1.0, 5.2, 10.0)], agent_vy=[-1.5], lanes=lanes, route_y=-1.5)
    assert score(sc, straight(10.0), human_filter=False)["NC"][0] == 0.0


def test_ttc_horizon_and_cone():
    # (c) Stopped car, ego at 10 m/s, front bumper at 10 t + 2.59 m. Car's rear at 37.5 m: the box
    # pushed 0.9 s ahead touches it from t = 2.6 s (<= 3.1 s): TTC 0. At 47.5 m only from 3.6 s,
    # past the last state NAVSIM checks: TTC 1 (and no contact within 4 s: NC 1; the nearer car is
    # hit at 3.5 s).
    near = make_scene(agents=[(40.0, 0.0, 0.0)], expert=braking(10.0, 3.0))
    far = make_scene(agents=[(50.0, 0.0, 0.0)], expert=braking(10.0, 3.0))
    assert score(near, straight(10.0))["TTC"][0] == 0.0
    s = score(far, straight(10.0))
    assert s["TTC"][0] == 1.0 and s["NC"][0] == 1.0
    # A slower car cutting in 9 m ahead (inside the 30 degree cone ahead of the rear axle): TTC 0.
    cut = make_scene(agents=[(9.0, 4.0, 7.0)], agent_vy=[-1.5])
    assert score(cut, straight(10.0), human_filter=False)["TTC"][0] == 0.0


def test_ddc_oncoming_lane_and_intersection_exemption():
    # (d) The ego drives 4 s in a lane of the opposite direction (route in the lane to its right).
    two_way = [_lane(-4.0), _lane(0.0, heading=np.pi)]
    assert score(make_scene(lanes=two_way, route_y=-4.0), straight(10.0), human_filter=False)["DDC"][0] == 0.0
    junction = [_lane(-4.0, junction=True), _lane(0.0, heading=np.pi, junction=True)]
    assert score(make_scene(lanes=junction, route_y=-4.0), straight(10.0), human_filter=False)["DDC"][0] == 1.0


def test_lk_measures_to_the_route_centreline():
    # (e) A lane change completed in 1.5 s leaves the ego 4 m from the route for 2.5 s: LK 0
    # (the nearest lane centreline is 0 m away, which is what the old rule measured).
    y = 4.0 * np.clip(T / 1.5, 0, 1) ** 2 * (3 - 2 * np.clip(T / 1.5, 0, 1))
    plan = np.stack([10 * T, y, np.arctan2(np.gradient(y, 0.1), 10.0)], -1)
    assert score(make_scene(), plan, human_filter=False)["LK"][0] == 0.0
    sc = make_scene(lanes=[_lane(0.0, junction=True), _lane(4.0, junction=True)])
    assert score(sc, plan, human_filter=False)["LK"][0] == 1.0  # intersection states are skipped


def test_firm_stop_passes_hc():
    # (f) A -3.0 m/s^2 stop from 10 m/s is within NAVSIM's (-4.05, 2.40) bound once tracked and
    # smoothed; a violent swerve is not.
    sc = make_scene(expert=braking(10.0, 3.0))
    assert score(sc, braking(10.0, 3.0))["HC"][0] == 1.0
    y = 1.5 * np.sin(2 * np.pi * T / 1.0)
    swerve = np.stack([10 * T, y, np.arctan2(np.gradient(y, 0.1), 10.0)], -1)
    assert score(make_scene(), swerve, human_filter=False)["HC"][0] == 0.0


def test_ep_normaliser_ignores_an_off_road_reference():
    # (g) The expert races 60 m but leaves the road: it does not set the bar, own progress does.
    y = np.clip(T - 1.0, 0, None) * 6.0
    wild = np.stack([15 * T, y, np.zeros(40)], -1)
    sc = make_scene(expert=wild)
    s = score(sc, straight(10.0), straight(5.0))  # each scored with the reference alone, as NAVSIM
    assert s["EP"].tolist() == [1.0, 1.0]
    ok = make_scene(expert=straight(15.0))  # on the road: it sets the bar (tracked progress ratio)
    x_end = tr.rear_to_centre(M.simulate_plans(ok, np.stack([straight(10.0), straight(15.0)])))[:, -1, 0]
    assert np.isclose(score(ok, straight(10.0))["EP"][0], x_end[0] / x_end[1], atol=1e-6) and x_end[0] < x_end[1]


def test_ec_compares_with_previous_frame():
    # (h) Previous frame 0.5 s earlier drove the same 10 m/s: its states from t = 0.5 s match.
    sc = make_scene()
    prev = M.simulate_plans(sc, straight(10.0)[None])[0]
    prev[:, tr.S_X] -= 5.0  # it started 5 m further back
    assert score(sc, straight(10.0), prev_states=prev)["EC"][0] == 1.0
    assert score(sc, braking(10.0, 3.0), prev_states=prev, human_filter=False)["EC"][0] == 0.0
    assert score(sc, braking(10.0, 3.0), human_filter=False)["EC"][0] == 1.0  # no previous frame


def test_human_penalty_filter():
    # (i) The expert itself runs into the stopped car: NC is not held against the plan (filter on).
    sc = make_scene(agents=[(25.0, 0.0, 0.0)])
    assert score(sc, straight(10.0))["NC"][0] == 1.0
    assert score(sc, straight(10.0), human_filter=False)["NC"][0] == 0.0


def test_more_progress_scores_higher_ep():
    s = score(make_scene(), straight(4.0), straight(7.0), straight(10.0))
    assert s["EP"][0] < s["EP"][1] < s["EP"][2] == 1.0


def test_epdms_formula_and_tlc():
    sub = {m: np.array([1.0]) for m in M.METRICS}
    sub.update(EP=np.array([0.5]), LK=np.array([0.0]))
    assert np.isclose(M.epdms(sub)[0], (5 * 0.5 + 5 + 0 + 2 + 2) / 16)
    sub["DAC"] = np.array([0.0])
    assert M.epdms(sub)[0] == 0.0
    assert score(make_scene(), straight(10.0))["TLC"][0] == 1.0  # no traffic lights in highway-env


def test_interpolate_plan_straight_line():
    p40 = M.interpolate_plan(straight(10.0)[4::5][None])
    assert p40.shape == (1, 40, 3) and np.allclose(p40[0], straight(10.0), atol=1e-9)


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
    with pytest.raises(ValueError, match="empty vocabulary"):  # (k)
        M.score_in_chunks(sc, np.zeros((0, 40, 3)))
    with pytest.raises(ValueError, match="V = 0"):
        M.score_trajectories(sc, np.zeros((0, 40, 3)))


def test_scene_edits_after_scoring_are_scored(tmp_path):
    """The per-scene cache follows the scene's arrays (issue 28, item 8): agents added to a scored scene,
    or to a dict() copy of it, are in force (NC 0, not the cached empty road's 1)."""
    empty = make_scene(expert=braking(10.0, 3.0))
    with_car = make_scene(agents=[(30.0, 0.0, 0.0)], expert=braking(10.0, 3.0))
    added = {k: with_car[k] for k in ("agents", "agents_static", "agents_future", "agents_future_valid")}
    assert score(empty, straight(10.0))["NC"][0] == 1.0
    copy = dict(empty)  # shares the cache of the scored scene
    copy.update(added)
    assert score(copy, straight(10.0))["NC"][0] == 0.0
    assert score(empty, straight(10.0))["NC"][0] == 1.0  # the original is untouched
    empty.update(added)  # edited in place
    assert score(empty, straight(10.0))["NC"][0] == 0.0
    empty["agents"][0, 0] = 200.0  # an array edited in place: the car is gone from the road ahead
    empty["agents_future"][0, :, 0] = 200.0
    assert score(empty, straight(10.0))["NC"][0] == 1.0
