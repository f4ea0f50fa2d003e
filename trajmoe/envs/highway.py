"""highway-env wrapper for the driving planner: four scenarios, an IDM/MOBIL expert ego, 10 Hz.

Frames. highway-env draws with y pointing down, so its world is left-handed as seen by a driver
(a car heading east has its left at -y). Everything leaving this module is in a right-handed world
frame obtained by flipping y (y' = -y, heading' = -heading): x forward / y left once rotated into
the ego frame, as NAVSIM uses.

Expert. The ego is replaced by highway-env's own `IDMVehicle` (IDM longitudinal control, MOBIL lane
changes, following the scenario's route to its destination), i.e. the same rule-based family as
NAVSIM's PDM-Closed reference planner (IDM along the route centreline). It reacts to traffic, is
deterministic given the seed, and its recorded 4 s future is the imitation target.

Time. The road is stepped directly at dt = 0.1 s (NAVSIM's scoring resolution), bypassing the
env's action interface; the intersection scenario's spawning/clearing of traffic is re-run once per
simulated second as `IntersectionEnv.step` would.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

SCENARIOS = ("highway", "merge", "roundabout", "intersection")
DT = 0.1  # s, simulation and recording step (NAVSIM's 10 Hz)
BRIDGE = 10.0  # m over which the route polyline moves between consecutive lanes that do not join

# Per-scenario env config changes: fewer highway vehicles (the O(n^2) collision loop dominates).
_ENV_CONFIG = {
    "highway": {"vehicles_count": 24, "vehicles_density": 1.2, "lanes_count": 4},
    "merge": {},
    "roundabout": {},
    # destination None: the ego turns left, right or goes straight (default config: always o1).
    "intersection": {"initial_vehicle_count": 10, "spawn_probability": 0.6, "destination": None},
}


def _env_class(scenario: str):
    # highway-env (optional `sim` extra) is imported lazily here and below: the planner
    # (trajmoe.drive.model) imports SCENARIOS from this module and must not need the simulator.
    if scenario == "highway":
        from highway_env.envs.highway_env import HighwayEnv as cls
    elif scenario == "merge":
        from highway_env.envs.merge_env import MergeEnv as cls
    elif scenario == "roundabout":
        from highway_env.envs.roundabout_env import RoundaboutEnv as cls
    elif scenario == "intersection":
        from highway_env.envs.intersection_env import IntersectionEnv as cls
    else:
        raise ValueError(f"unknown scenario {scenario!r}; choose from {', '.join(SCENARIOS)}")
    return cls


def flip(xy: np.ndarray) -> np.ndarray:
    """highway-env (y down) -> right-handed world (y up): (..., 2) m -> a float64 copy with y negated."""
    out = np.array(xy, dtype=np.float64, copy=True)
    out[..., 1] *= -1.0
    return out


@dataclass
class LaneSample:
    """One lane sampled along its centreline in the right-handed world frame."""

    key: tuple  # highway-env lane index (from, to, id)
    xy: np.ndarray  # (M, 2) centreline points
    heading: np.ndarray  # (M,) rad
    width: np.ndarray  # (M,) m
    junction: bool  # inside an intersection (lane keeping is not required there)


class HighwaySim:
    """One highway-env episode with an IDM/MOBIL ego, stepped at 0.1 s.

    `state()` returns every vehicle's box; `ego` is the vehicle the planner (or the expert) drives.
    """

    def __init__(self, scenario: str, seed: int, expert_ego: bool = True):
        """Reset `scenario` (one of SCENARIOS) with `seed`; `expert_ego` swaps the ego for an IDMVehicle.

        Raises:
            ValueError: an unknown scenario.
        """
        logging.getLogger("highway_env").setLevel(logging.ERROR)  # route warnings of other vehicles
        cls = _env_class(scenario)
        self.scenario = scenario
        self.seed = int(seed)
        env = cls()
        env.configure(_ENV_CONFIG[scenario])
        env.reset(seed=self.seed)
        self.env = env
        self.road = env.road
        self.rng = np.random.RandomState(self.seed)
        if expert_ego:
            from highway_env.vehicle.behavior import IDMVehicle  # lazy: see _env_class

            old = env.vehicle
            ego = IDMVehicle.create_from(old)
            if old.route:
                ego.route = list(old.route)
            elif scenario == "roundabout":
                ego.plan_route_to("nxs")
            self._replace_ego(old, ego)
        self._ids: dict[int, int] = {}
        self.t = 0  # steps taken

    def _replace_ego(self, old, new) -> None:
        i = self.road.vehicles.index(old)
        self.road.vehicles[i] = new
        self.env.controlled_vehicles[0] = new

    @property
    def ego(self):
        """The highway-env vehicle the planner (or the expert) drives (highway-env's frame, y down)."""
        return self.env.vehicle

    def step(self, ego_action: dict | None = None) -> None:
        """Advance 0.1 s. With `ego_action` ({'acceleration': m/s^2, 'steering': rad, highway-env's
        left-handed sign}) the ego is driven by it, else by its own IDM/MOBIL controller."""
        from highway_env.vehicle.kinematics import Vehicle  # lazy: see _env_class

        for v in self.road.vehicles:
            if v is self.ego and ego_action is not None:
                Vehicle.act(v, ego_action)
            else:
                v.act()
        self.road.step(DT)
        self.t += 1
        if self.scenario == "intersection" and self.t % 10 == 0:
            self.env._clear_vehicles()
            self.env._spawn_vehicle(spawn_probability=self.env.config["spawn_probability"])

    def _track_id(self, obj) -> int:
        return self._ids.setdefault(id(obj), len(self._ids))

    def state(self) -> dict[str, np.ndarray]:
        """Boxes of the ego (row 0), other vehicles, then static objects, right-handed world frame.

        Returns ids (N,) (stable track ids), xy (N, 2) m (box centres), heading (N,) rad,
        speed (N,) m/s, length (N,) m, width (N,) m, static (N,) bool, crashed (N,) bool.
        """
        objs = [self.ego] + [v for v in self.road.vehicles if v is not self.ego] + list(self.road.objects)
        n_veh = 1 + len(self.road.vehicles) - 1
        xy = flip(np.array([o.position for o in objs], dtype=np.float64).reshape(-1, 2))
        return {
            "ids": np.array([self._track_id(o) for o in objs], dtype=np.int64),
            "xy": xy,
            "heading": -np.array([o.heading for o in objs], dtype=np.float64),
            "speed": np.array([getattr(o, "speed", 0.0) for o in objs], dtype=np.float64),
            "length": np.array([o.LENGTH for o in objs], dtype=np.float64),
            "width": np.array([o.WIDTH for o in objs], dtype=np.float64),
            "static": np.arange(len(objs)) >= n_veh,
            "crashed": np.array([bool(getattr(o, "crashed", False)) for o in objs]),
        }

    def ego_on_road(self) -> bool:
        """Whether the ego's centre lies on some lane (within half its width). highway-env's own
        `on_road` checks only the lane it assigns the vehicle to, chosen by position and heading, so a
        vehicle turning from a roundabout entry onto the ring counts as off-road there."""
        if self.ego.on_road:
            return True
        return any(lane.on_lane(self.ego.position) for _, lane in self._lane_items())

    # ---- map ---------------------------------------------------------------------------------
    def lanes(self, center_xy: np.ndarray, radius: float, step: float = 1.0) -> list[LaneSample]:
        """Every lane's centreline within `radius` m of `center_xy` (2,) m (right-handed frame), sampled
        `step` m apart; lanes with fewer than 2 samples inside the radius are left out."""
        out = []
        c = flip(np.asarray(center_xy, dtype=np.float64))  # back to highway-env frame
        for (fr, to, idx), lane in self._lane_items():
            s0, s1 = self._visible_range(lane, c, radius)
            if s1 <= s0:
                continue
            s = np.arange(s0, s1 + 1e-6, step)
            if len(s) < 2:
                continue
            xy = np.array([lane.position(si, 0.0) for si in s])
            keep = np.linalg.norm(xy - c, axis=1) <= radius
            if keep.sum() < 2:
                continue
            xy, s = xy[keep], s[keep]
            out.append(
                LaneSample(
                    key=(fr, to, idx),
                    xy=flip(xy),
                    heading=-np.array([lane.heading_at(si) for si in s]),
                    width=np.array([lane.width_at(si) for si in s]),
                    junction=self.scenario == "intersection" and fr.startswith("ir") and to.startswith("il"),
                )
            )
        return out

    def _lane_items(self):
        for fr, tos in self.road.network.graph.items():
            for to, lanes in tos.items():
                for idx, lane in enumerate(lanes):
                    yield (fr, to, idx), lane

    @staticmethod
    def _visible_range(lane, c: np.ndarray, radius: float) -> tuple[float, float]:
        if lane.length > 2000:  # highway's 10 km straight lanes: only the window around the ego
            s_c, _ = lane.local_coordinates(c)
            return max(0.0, s_c - radius), min(lane.length, s_c + radius)
        return 0.0, float(lane.length)

    def route_lanes(self, max_lanes: int = 8) -> list[tuple]:
        """Lane indices (from, to, id) the ego's route follows from its current lane, at most
        `max_lanes` + 1 of them (highway-env's next_lane rule)."""
        net = self.road.network
        route = list(self.ego.route or [])
        # With a route (roundabout, intersection) stop at its last road: past the destination,
        # highway-env's next_lane would wrap back into the network.
        on_route = {r[:2] for r in route}
        # The lane being followed: inside junctions the closest lane (`lane_index`) can be a
        # crossing lane of another movement, so the followed road comes from `target_lane_index`;
        # but on the same road a different target lane is the expert's (MOBIL's) lane-change
        # decision, which the planner must not be told: then the current lane is used.
        cur, tgt = self.ego.lane_index, self.ego.target_lane_index
        idx = cur if (tgt is None or (cur is not None and tgt[:2] == cur[:2])) else tgt
        seq = [idx]
        rng = np.random.RandomState(0)
        for _ in range(max_lanes):
            lane = net.get_lane(idx)
            nxt = net.next_lane(idx, route=route, position=lane.position(lane.length, 0.0), np_random=rng)
            if nxt is None or nxt == idx or nxt in seq or (on_route and nxt[:2] not in on_route):
                break
            seq.append(nxt)
            idx = nxt
        return seq

    def route_polyline(self, behind: float = 30.0, ahead: float = 250.0, step: float = 1.0) -> np.ndarray:
        """(M, 2) centreline of the ego's route from `behind` m back to `ahead` m forward (right-handed)."""
        net = self.road.network
        seq = self.route_lanes()
        first = net.get_lane(seq[0])  # first lane followed
        s_ego, _ = first.local_coordinates(self.ego.position)
        pts = []
        remaining = ahead + behind
        if s_ego <= 0.0 and self.ego.lane_index not in (None, seq[0]):
            # The followed lane starts ahead (the ego is finishing the previous lane, e.g. entering a
            # roundabout): that lane to its end first; the bridge below joins the two if they do not meet.
            cur = net.get_lane(self.ego.lane_index)
            s_cur, _ = cur.local_coordinates(self.ego.position)
            s = np.arange(max(0.0, s_cur - behind), cur.length, step)
            if len(s):
                pts.append(np.array([cur.position(si, 0.0) for si in s]))
                remaining -= cur.length - s[0]
                s_ego = 0.0
        for k, key in enumerate(seq):
            lane = net.get_lane(key)
            s0 = max(0.0, s_ego - behind) if k == 0 else 0.0
            if pts and np.linalg.norm(lane.position(s0, 0.0) - pts[-1][-1]) > 1.5:
                # Consecutive route lanes that do not join (another lane index on the next road, or
                # the ego finishing a lane that does not lead there): move onto the new lane over
                # BRIDGE m along it, the lateral offset easing to 0 (a lane change following the lane's
                # curvature, not a sideways jump or a chord across the roundabout island).
                s_a, lat_a = lane.local_coordinates(pts[-1][-1])
                q = s_a + np.arange(1, int(BRIDGE / step) + 1) * step
                u = np.clip((q - s_a) / BRIDGE, 0.0, 1.0)
                lat = lat_a * (1.0 - u * u * (3.0 - 2.0 * u))
                pts.append(np.array([lane.position(qi, li) for qi, li in zip(q, lat)]))
                s0 = min(lane.length, max(s0, q[-1] + step))
            s1 = min(lane.length, s0 + remaining)
            s = np.arange(s0, s1, step)
            if len(s):
                pts.append(np.array([lane.position(si, 0.0) for si in s]))
                remaining -= s1 - s0
            if remaining <= 0:
                break
        xy = np.concatenate(pts) if pts else np.array([self.ego.position, self.ego.position + [1.0, 0.0]])
        return flip(xy)
