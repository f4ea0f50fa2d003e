"""A scripted pick-and-place expert for LIBERO tasks whose goal is `(In OBJECT REGION)`, from privileged
simulator state (object poses and collision boxes, not images): LIBERO-Object's ten "pick up the X and
place it in the basket" tasks.

    from trajmoe.envs.libero import LiberoEnv
    from trajmoe.envs.libero_expert import PickPlaceExpert
    env = LiberoEnv("libero_object", 0, render=False)
    obs = env.reset(init_state=0)
    expert = PickPlaceExpert(env)          # after each reset
    while not done:
        obs, _, success, done = env.step(expert.action())

Controller: robosuite's OSC_POSE with delta actions (LIBERO's default), so action[:3] is a hand
displacement of up to 0.05 m per unit and action[3:6] an axis-angle rotation of up to 0.5 rad per unit,
both in the world frame (robosuite 1.4 `controllers/osc.py`, `utils/control_utils.set_goal_orientation`);
action[6] closes (+1) or opens (-1) the gripper. Each step is a proportional move towards the current
phase's target: approach above the object (turning the fingers across the object), descend, close,
lift, carry above the region, lower until the object is inside, open, retreat. A grasp that did not
lift the object is retried (twice).

Grasp choice: the Panda hand is ~0.21 m long along the fingers' closing axis and sits 0.03 m above
the grip site (measured from the hand's collision mesh), so a top-down grasp of a low object next to
a tall one can hit it. Candidate grasps (the closing axis every 15 degrees, offsets across it) that the
object fits between the fingers (width <= MAX_GRASP_WIDTH) are scored by the clearance of the hand's
and fingers' footprints from every other object's collision box (separating-axis gaps in the
horizontal plane, for boxes reaching above the part's bottom); the first that clears CLEARANCE with
the least turn and offset is taken, else the one with the most clearance.

Success is the env's own predicate (`LiberoEnv.step`), never the expert's. Measured success over
the benchmark's init states: docs/libero.md ("Scripted expert").
"""

from __future__ import annotations

import math
import os
import statistics
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

POS_MAX = 0.05  # m per unit action (OSC_POSE output_max, position)
ROT_MAX = 0.5  # rad per unit action (OSC_POSE output_max, rotation)
POS_GAIN = 1.5  # proportional gain on the position error, in units of POS_MAX
ROT_GAIN = 1.0
HAND_HALF_LEN = 0.105  # Panda hand collision mesh, half-extent along the closing axis (m)
HAND_HALF_WID = 0.033  # ... across it
HAND_BOTTOM = 0.031  # hand bottom above the grip site
FINGER_OFFSET = 0.047  # open finger centre from the grip site along the closing axis
FINGER_HALF = (0.014, 0.012)  # finger half-extents (along, across the closing axis)
FINGER_BOTTOM = -0.010  # finger bottom relative to the grip site
MAX_GRASP_WIDTH = 0.07  # object width across the closing axis that the open fingers (0.08) take
CLEARANCE = 0.008  # m between a footprint and an obstacle box
GRASP_BELOW_TOP = 0.03  # tall objects are held this far below their top
LOW_OBJECT = 0.045  # objects lower than this are held at mid-height
RETRIES = 2
PHASE_LIMITS = {"approach": 120, "descend": 60, "grasp": 12, "lift": 80, "carry": 140, "lower": 80, "release": 12}


@dataclass(frozen=True)
class Box:
    """An axis-aligned world box (lo, hi) of one body's collision geoms, (3,) each, metres."""

    lo: np.ndarray
    hi: np.ndarray

    @property
    def centre(self) -> np.ndarray:
        """(3,) centre of the box."""
        return (self.lo + self.hi) / 2


@dataclass(frozen=True)
class Grasp:
    """A top-down grasp: grip-site position (3,) m and closing-axis yaw (rad, world frame)."""

    pos: np.ndarray
    yaw: float
    clearance: float


def _mujoco():
    import mujoco  # lazy: the optional extras bring MuJoCo

    return mujoco


def _in_goal(goal: list, where: str) -> tuple[str, str]:
    if len(goal) != 1 or len(goal[0]) != 3 or str(goal[0][0]).lower() != "in":
        raise ValueError(f"the scripted expert handles goals (In OBJECT REGION) (LIBERO-Object's pick-and-place); "
                         f"{where} has goal {goal}")
    return str(goal[0][1]), str(goal[0][2])


def check_expert_task(suite: str, task: str) -> tuple[str, str]:
    """(object, region) of the goal of `task` in `suite`, read from its BDDL file (no env is built).

    Raises:
        ValueError: the goal is not `(In OBJECT REGION)` (one line naming the task and its goal).
    """
    from trajmoe.envs.libero import task_goal

    return _in_goal(task_goal(suite, task), f"{suite}/{task}")


def goal_of(env: Any) -> tuple[str, str]:
    """(object, region) of the env's task goal `(In OBJECT REGION)`.

    Raises:
        ValueError: the task's goal is another predicate or a conjunction (one line naming task and goal).
    """
    obj, region = _in_goal(env.domain.parsed_problem["goal_state"], f"{env.suite}/{env.task_name}")
    if obj not in env.domain.obj_body_id:
        raise ValueError(f"{env.suite}/{env.task_name}: goal object {obj!r} is not a movable object of the scene")
    return obj, region


def collision_box(env: Any, body: int) -> Box:
    """World AABB of the collision geoms (contype or conaffinity set) of `body`'s whole subtree root."""
    mj = _mujoco()
    m, d = env.model, env.data
    root = m.body_rootid[body]
    lo, hi = np.full(3, np.inf), np.full(3, -np.inf)
    for g in np.nonzero((m.body_rootid[m.geom_bodyid] == root) & ((m.geom_contype != 0) | (m.geom_conaffinity != 0)))[0]:
        R, c, size = d.geom_xmat[g].reshape(3, 3), d.geom_xpos[g], m.geom_size[g]
        t = m.geom_type[g]
        if t == mj.mjtGeom.mjGEOM_BOX:
            half = np.abs(R) @ size
        elif t in (mj.mjtGeom.mjGEOM_CYLINDER, mj.mjtGeom.mjGEOM_CAPSULE):
            half = np.abs(R) @ np.array([size[0], size[0], size[1] + (size[0] if t == mj.mjtGeom.mjGEOM_CAPSULE else 0)])
        elif t == mj.mjtGeom.mjGEOM_SPHERE:
            half = np.full(3, size[0])
        elif t == mj.mjtGeom.mjGEOM_MESH:
            did = m.geom_dataid[g]
            v = m.mesh_vert[m.mesh_vertadr[did]:m.mesh_vertadr[did] + m.mesh_vertnum[did]] @ R.T + c
            lo, hi = np.minimum(lo, v.min(0)), np.maximum(hi, v.max(0))
            continue
        else:
            half = np.full(3, m.geom_rbound[g])
        lo, hi = np.minimum(lo, c - half), np.maximum(hi, c + half)
    if not np.isfinite(lo).all():  # no collision geom: the body position
        lo = hi = d.xpos[body].copy()
    return Box(lo, hi)


def _footprint_corners(centre: np.ndarray, axis: np.ndarray, half_along: float, half_across: float) -> np.ndarray:
    """(4, 2) corners of a rectangle centred at `centre` (2,) with unit `axis` (2,) along its length."""
    across = np.array([-axis[1], axis[0]])
    return np.array([centre + sa * half_along * axis + sb * half_across * across for sa in (-1, 1) for sb in (-1, 1)])


def _gap(rect: np.ndarray, axis: np.ndarray, box: Box) -> float:
    """Separating-axis gap (m) between a rectangle (4, 2) with unit axis (2,) and a box's footprint:
    > 0 when apart (a lower bound on their distance), <= 0 when they overlap."""
    b = np.array([[box.lo[0], box.lo[1]], [box.lo[0], box.hi[1]], [box.hi[0], box.lo[1]], [box.hi[0], box.hi[1]]])
    best = -np.inf
    for a in (np.array([1.0, 0.0]), np.array([0.0, 1.0]), axis, np.array([-axis[1], axis[0]])):
        pr, pb = rect @ a, b @ a
        best = max(best, pb.min() - pr.max(), pr.min() - pb.max())
    return float(best)


def plan_grasp(env: Any, obj: str) -> Grasp:
    """The top-down grasp of `obj` with the most room for the hand (module doc), from the current state."""
    dom = env.domain
    box = collision_box(env, dom.obj_body_id[obj])
    others = [collision_box(env, b) for n, b in dom.obj_body_id.items() if n != obj]
    height = box.hi[2] - box.lo[2]
    z = box.centre[2] if height < LOW_OBJECT else box.hi[2] - GRASP_BELOW_TOP
    z = max(z, box.lo[2] + 0.011)
    corners = _object_corners(env, dom.obj_body_id[obj])
    best: tuple | None = None
    for yaw in np.deg2rad(np.arange(0, 180, 15)):
        axis = np.array([math.cos(yaw), math.sin(yaw)])
        across = np.array([-axis[1], axis[0]])
        pa, pc = corners @ axis, corners @ across
        if pa.max() - pa.min() > MAX_GRASP_WIDTH:
            continue
        centre_a, centre_c, half_c = (pa.max() + pa.min()) / 2, (pc.max() + pc.min()) / 2, (pc.max() - pc.min()) / 2
        for s in np.arange(-0.03, 0.031, 0.01):
            if abs(s) > max(half_c - 0.012, 0.0) + 1e-9:
                continue
            xy = centre_a * axis + (centre_c + s) * across
            clear = _clearance(xy, axis, z, others)
            cost = abs(s) + 0.01 * min(yaw, math.pi - yaw)
            key = (clear >= CLEARANCE, -cost if clear >= CLEARANCE else clear)
            if best is None or key > best[0]:
                best = (key, Grasp(np.array([xy[0], xy[1], z]), float(yaw), float(clear)))
    if best is None:  # nothing fits between the fingers: across the narrowest extent anyway
        return Grasp(np.array([*box.centre[:2], z]), 0.0, -np.inf)
    return best[1]


def _object_corners(env: Any, body: int) -> np.ndarray:
    """(K, 2) horizontal corners of the object's collision geoms' oriented boxes (for its width along a
    direction); the AABB corners when it has no box geoms."""
    mj = _mujoco()
    m, d = env.model, env.data
    root = m.body_rootid[body]
    pts = []
    for g in np.nonzero((m.body_rootid[m.geom_bodyid] == root) & ((m.geom_contype != 0) | (m.geom_conaffinity != 0)))[0]:
        R, c, size = d.geom_xmat[g].reshape(3, 3), d.geom_xpos[g], m.geom_size[g]
        if m.geom_type[g] == mj.mjtGeom.mjGEOM_BOX:
            signs = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], float)
            pts.append((signs * size) @ R.T + c)
        else:
            b = collision_box(env, body)
            pts.append(np.array([[x, y, 0.0] for x in (b.lo[0], b.hi[0]) for y in (b.lo[1], b.hi[1])]))
    if not pts:
        b = collision_box(env, body)
        pts.append(np.array([[x, y, 0.0] for x in (b.lo[0], b.hi[0]) for y in (b.lo[1], b.hi[1])]))
    return np.concatenate(pts)[:, :2]


def _clearance(xy: np.ndarray, axis: np.ndarray, z: float, others: list[Box]) -> float:
    """Smallest gap (m) between the hand's / open fingers' footprints at grip-site position (xy, z) and the
    boxes reaching above each part's bottom; +inf with nothing in reach."""
    parts = [(_footprint_corners(xy, axis, HAND_HALF_LEN, HAND_HALF_WID), z + HAND_BOTTOM)]
    for side in (-1, 1):
        parts.append((_footprint_corners(xy + side * FINGER_OFFSET * axis, axis, *FINGER_HALF), z + FINGER_BOTTOM))
    gap = np.inf
    for rect, bottom in parts:
        for b in others:
            if b.hi[2] > bottom:
                gap = min(gap, _gap(rect, axis, b))
    return float(gap)


def _rotation_error(R_goal: np.ndarray, R: np.ndarray) -> np.ndarray:
    """Axis-angle (3,) rad of R_goal R^T (world frame): the rotation that takes R to R_goal."""
    mj = _mujoco()
    q = np.zeros(4)
    mj.mju_mat2Quat(q, (R_goal @ R.T).reshape(-1))
    v = np.zeros(3)
    mj.mju_quat2Vel(v, q, 1.0)
    return v


class PickPlaceExpert:
    """The scripted expert of the module doc, for one episode of a `LiberoEnv` (make one after each reset).

    Raises:
        ValueError: the task's goal is not `(In OBJECT REGION)` (`goal_of`).
    """

    def __init__(self, env: Any) -> None:
        self.env = env
        self.obj, self.region = goal_of(env)
        mj = _mujoco()
        m = env.model
        self._site = mj.mj_name2id(m, mj.mjtObj.mjOBJ_SITE, self.region)
        if self._site < 0:
            raise ValueError(f"{env.suite}/{env.task_name}: goal region {self.region!r} is not a site of the scene")
        self._container = self.region.rsplit("_", 2)[0] if self.region.endswith("_contain_region") else None
        self._eef = env.domain.robots[0].eef_site_id
        self.phase, self._t, self.retries = "approach", 0, 0
        self.grasp = plan_grasp(env, self.obj)
        self._hold: np.ndarray | None = None
        self._lift_bottom = 0.0

    # ---- state -------------------------------------------------------------------------------
    def _hand(self) -> tuple[np.ndarray, np.ndarray]:
        d = self.env.data
        return d.site_xpos[self._eef].copy(), d.site_xmat[self._eef].reshape(3, 3).copy()

    def _region(self) -> tuple[np.ndarray, float]:
        """Region centre (3,) and the top (m) of what must be cleared to get there (container or region)."""
        d, m = self.env.data, self.env.model
        centre = d.site_xpos[self._site].copy()
        top = centre[2] + float(np.abs(d.site_xmat[self._site].reshape(3, 3) @ m.site_size[self._site])[2])
        dom = self.env.domain
        if self._container in dom.obj_body_id:
            top = max(top, collision_box(self.env, dom.obj_body_id[self._container]).hi[2])
        return centre, top

    def _next(self, phase: str) -> None:
        self.phase, self._t = phase, 0

    # ---- action ------------------------------------------------------------------------------
    def action(self) -> np.ndarray:
        """The next (7,) action in [-1, 1] from the current simulator state."""
        ee, R = self._hand()
        box = collision_box(self.env, self.env.domain.obj_body_id[self.obj])
        region, region_top = self._region()
        self._t += 1
        grip, yaw = -1.0, self.grasp.yaw
        limit = self._t > PHASE_LIMITS.get(self.phase, 10**9)
        held = ee - box.centre  # hand offset from the object's box centre (fixed while held)
        carry_z = region_top + (ee[2] - box.lo[2]) + 0.04
        if self.phase == "approach":
            target = np.array([*self.grasp.pos[:2], max(box.hi[2] + 0.08, self.grasp.pos[2] + 0.08)])
            if (np.linalg.norm(target - ee) < 0.015 and abs(self._yaw_error(R, yaw)) < 0.05) or limit:
                self._next("descend")
        elif self.phase == "descend":
            target = self.grasp.pos
            if np.linalg.norm(target - ee) < 0.008 or limit:
                self._next("grasp")
        elif self.phase == "grasp":
            self._hold = ee if self._hold is None else self._hold
            target, grip = self._hold, 1.0
            if limit:
                self._lift_bottom = box.lo[2]
                self._next("lift")
        elif self.phase == "lift":
            target, grip = np.array([ee[0], ee[1], carry_z]), 1.0
            if ee[2] > self.grasp.pos[2] + 0.06 and box.lo[2] < self._lift_bottom + 0.02:  # the object stayed
                self._retry()
            elif ee[2] > carry_z - 0.03 or limit:
                self._next("carry")
        elif self.phase == "carry":
            target, grip = np.array([region[0] + held[0], region[1] + held[1], carry_z]), 1.0
            if np.linalg.norm((target - ee)[:2]) < 0.01 or limit:
                self._next("lower")
        elif self.phase == "lower":
            drop = region[2] + (ee[2] - box.lo[2])  # object bottom at the region's centre height
            target, grip = np.array([region[0] + held[0], region[1] + held[1], max(drop, ee[2] - 0.2)]), 1.0
            if box.lo[2] < region[2] + 0.02 or limit:
                self._next("release")
        elif self.phase == "release":
            target = ee
            if limit:
                self._next("retreat")
        else:  # retreat
            target = np.array([ee[0], ee[1], carry_z])
        a = np.zeros(7)
        a[:3] = np.clip(POS_GAIN * (target - ee) / POS_MAX, -1.0, 1.0)
        a[3:6] = np.clip(ROT_GAIN * _rotation_error(self._goal_rotation(R, yaw), R) / ROT_MAX, -1.0, 1.0)
        a[6] = grip
        return a

    def _retry(self) -> None:
        """The grasp missed: open, plan again from the current state, approach again (at most RETRIES)."""
        if self.retries >= RETRIES:
            self._next("retreat")
            return
        self.retries += 1
        self.grasp = plan_grasp(self.env, self.obj)
        self._hold = None
        self._next("approach")

    @staticmethod
    def _closing_yaw(R: np.ndarray) -> float:
        return math.atan2(R[1, 0], R[0, 0])  # the grip site's x axis is the fingers' closing axis

    def _yaw_error(self, R: np.ndarray, yaw: float) -> float:
        """Turn (rad, in [-pi/2, pi/2)) from the fingers' closing axis to `yaw` (the axis has no sign)."""
        return (yaw - self._closing_yaw(R) + math.pi / 2) % math.pi - math.pi / 2

    def _goal_rotation(self, R: np.ndarray, yaw: float) -> np.ndarray:
        """Fingers pointing down (site z = world -z), closing axis at `yaw` (the nearer of its two signs)."""
        phi = self._closing_yaw(R) + self._yaw_error(R, yaw)
        x = np.array([math.cos(phi), math.sin(phi), 0.0])
        z = np.array([0.0, 0.0, -1.0])
        return np.stack([x, np.cross(z, x), z], axis=1)


# ---------------------------------------------------------------------------------------------
# success over the benchmark's init states (`trajmoe eval expert`)

_ENV: dict[Any, Any] = {}


def run_expert_episode(job: tuple[str, str, int, int | None]) -> dict[str, Any]:
    """One expert episode (suite, task, init state, step limit) under the evaluation protocol of
    trajmoe.envs.libero (reset, init state, settle, success latched), physics only (no cameras); the env
    is kept between episodes of the same task in this process."""
    from trajmoe.envs.libero import LiberoEnv

    suite, task, init_state, max_steps = job
    key = (suite, task, max_steps)
    t0 = time.perf_counter()
    if _ENV.get("key") != key:
        close_expert_env()
        _ENV.update(key=key, env=LiberoEnv(suite, task, render=False, max_steps=max_steps))
    env = _ENV["env"]
    build_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    env.reset(init_state=init_state)
    reset_s = time.perf_counter() - t0
    expert = PickPlaceExpert(env)
    done, success, steps = False, False, 0
    t0 = time.perf_counter()
    while not done:
        _, _, success, done = env.step(expert.action())
        steps += 1
    episode_s = time.perf_counter() - t0
    return {"task": task, "init_state": init_state, "success": bool(success), "length": steps, "phase": expert.phase,
            "retries": expert.retries, "build_s": build_s, "reset_s": reset_s, "episode_s": episode_s,
            "steps_per_s": steps / max(episode_s, 1e-9)}


def close_expert_env() -> None:
    """Close the env `run_expert_episode` keeps in this process (if any)."""
    env = _ENV.pop("env", None)
    _ENV.clear()
    if env is not None:
        env.close()


def _expert_worker_init() -> None:
    os.environ.setdefault("MUJOCO_GL", "egl")


def evaluate_expert(suite: str, tasks: list[str] | None = None, episodes: int = 20, workers: int = 1,
                    first_trial: int = 0, max_steps: int | None = None, progress: bool = True) -> dict[str, Any]:
    """Success of the scripted expert on `suite`'s tasks (default: all), trials first_trial .. +episodes-1
    per task on the benchmark's init states as ATM's evaluation deals them (trajmoe.envs.libero.
    trial_init_state), horizon HORIZON unless `max_steps`; per-task and overall success with Wilson 95 %
    intervals (trajmoe.eval.stats), mean length, timings. Workers are spawned processes.

    Raises:
        ValueError: unknown suite or task, a task the expert cannot do, bad counts (one line).
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from trajmoe.envs.libero import HORIZON, check_suite, require_libero, resolve_tasks, trial_init_state
    from trajmoe.eval.stats import success_summary
    from trajmoe.parallel import worker_pool

    check_suite(suite)
    require_libero()
    if episodes < 1 or first_trial < 0 or workers < 1:
        raise ValueError(f"--episodes and --workers must be >= 1 and --first-trial >= 0, got {episodes}, {workers}, {first_trial}")
    if max_steps is not None and max_steps < 1:
        raise ValueError(f"--max-steps must be >= 1, got {max_steps}")
    trial_init_state(first_trial + episodes - 1)  # one-line error beyond the benchmark's 50 init states
    tasks = resolve_tasks(suite, tasks)
    for t in tasks:
        check_expert_task(suite, t)
    jobs = [(suite, t, trial_init_state(e), max_steps or HORIZON) for t in tasks for e in range(first_trial, first_trial + episodes)]
    workers = min(workers, len(jobs))
    results: list[dict] = []
    t0 = time.perf_counter()
    cols = [TextColumn("expert episodes"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn()]
    try:
        with Progress(*cols, disable=not progress) as bar, \
                worker_pool(workers, initializer=_expert_worker_init) as imap:
            job = bar.add_task("episodes", total=len(jobs))
            for r in imap(run_expert_episode, jobs, ordered=True):
                results.append(r)
                bar.advance(job)
    finally:
        close_expert_env()
    wall = time.perf_counter() - t0
    per_task = {}
    for t in tasks:
        rs = [r for r in results if r["task"] == t]
        per_task[t] = dict(success_summary(sum(r["success"] for r in rs), len(rs)),
                           mean_length=sum(r["length"] for r in rs) / len(rs),
                           failed_init_states=[r["init_state"] for r in rs if not r["success"]])
    overall = success_summary(sum(r["success"] for r in results), len(results))
    ok = [r for r in results if r["success"]]
    return {"suite": suite, "policy": "scripted pick-and-place expert (privileged state)", **overall,
            "tasks": per_task, "episodes_per_task": episodes, "trials": [first_trial, first_trial + episodes - 1],
            "horizon": max_steps or HORIZON, "mean_length_success": sum(r["length"] for r in ok) / len(ok) if ok else None,
            "steps_per_s": statistics.median(r["steps_per_s"] for r in results),
            "reset_s": statistics.median(r["reset_s"] for r in results), "workers": workers, "wall_s": round(wall, 2)}
