"""Oracle tracks: the exact future tracks of a fixed query grid, from a simulator lookahead.

The "oracle" conditioning of the trajectory-guided policy gives the policy the ground-truth
future tracks of its own query grid instead of a track model's prediction: the ceiling of what
tracks can give the policy, and a test of its track pathway on its own.

At a frame (the env's current state), for every view:
  1. lift: each grid point (x, y) in (0, 1) is the continuous pixel (u, v) = (x W, y H); the
     rendered depth and the geom-id segmentation at pixel (floor(v), floor(u)) give its 3-D point
     and the body it lies on (a pixel that shows no geom is attached to the world body at the
     rendered far depth); the point is stored in that body's local frame;
  2. look ahead: a second copy of the simulator (`ExpertLookahead`, same task and variation) is set
     to the env's exact state (`mujoco.mj_copyData` plus MetaWorld's frame-stacked observation)
     and stepped `horizon - 1` times with the scripted expert, recording body and camera poses;
     the evaluated env is only read (rendered), never stepped or set;
  3. carry and project: local points -> world with each step's body pose -> pixels with that
     step's camera pose, exactly the projection of trajmoe.envs.tracks (`project`), normalised
     to [0, 1] as x = u / W, y = v / H and clipped to the image like the sampled tracks.
Step 0 of the result is the current frame (the lifted grid reprojected, equal to the grid up to
~1e-13 px).

The data generator stores these tracks for every frame of an episode (`oracle_points`), and the
closed-loop evaluation computes them at every control step with the same function, so a policy
sees the same quantity in training and in evaluation. Cost per control step: one segmentation
render per view, one extra depth readback, and `horizon - 1` physics steps (no rendering) of the
lookahead copy (measured in docs/results.md).

Legend: V views, H horizon (track timesteps), N grid points, B bodies.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np

from trajmoe.envs.metaworld import MetaWorldEnv
from trajmoe.envs.tracks import backproject, local_to_world, project, world_to_local


def grid_points(num_points: int) -> np.ndarray:
    """Fixed query grid (N, 2) float32 as (x, y) in (0, 1): a rows x cols grid of cell centres, rows
    the largest divisor of N not above sqrt(N) (32 -> 4 x 8), row-major (ATM grid sampling).
    Raises ValueError unless num_points is an integer >= 1."""
    if not isinstance(num_points, (int, np.integer)) or num_points < 1:
        raise ValueError(f"num_points must be an integer >= 1, got {num_points!r}")
    rows = max(d for d in range(1, int(math.isqrt(num_points)) + 1) if num_points % d == 0)
    cols = num_points // rows
    ys = ((np.arange(rows) + 0.5) / rows).astype(np.float32)
    xs = ((np.arange(cols) + 0.5) / cols).astype(np.float32)
    gy, gx = np.meshgrid(ys, xs, indexing="ij")
    return np.stack([gx.reshape(-1), gy.reshape(-1)], axis=-1)


class ExpertLookahead:
    """A second, never-rendered copy of a MetaWorld env that replays the scripted expert from
    another env's exact current state."""

    def __init__(self, env: Any) -> None:
        """A fresh MetaWorldEnv with `env`'s config (same task, variation, views); never rendered."""
        self.shadow = MetaWorldEnv(env.cfg)
        self._variation: int | None = None

    def _sync(self, env: Any) -> np.ndarray:
        """Copy `env`'s simulator state into the shadow; returns the observation to act on."""
        import mujoco  # lazy: optional `sim` extra; grid_points is used without the simulator

        sh = self.shadow
        if self._variation != env.variation:  # task placement (rand_vec) and per-variation model edits
            sh._set_variation(env.variation)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                sh.env.reset()
            self._variation = env.variation
        spec = mujoco.mjtState.mjSTATE_INTEGRATION  # qpos, qvel, act, warm start, mocap, ctrl, applied forces, ...
        buf = np.empty(mujoco.mj_stateSize(env.model, spec))
        mujoco.mj_getState(env.model, env.data, buf, spec)
        mujoco.mj_setState(sh.model, sh.data, buf, spec)
        # no mj_forward: it would rewrite the warm start; the first mj_step recomputes everything derived
        src, dst = env.env, sh.env
        dst._prev_obs = np.array(src._prev_obs, copy=True)  # frame-stacked observation
        dst._last_stable_obs = None if src._last_stable_obs is None else np.array(src._last_stable_obs, copy=True)
        dst._did_see_sim_exception = src._did_see_sim_exception
        dst.curr_path_length = 0  # only gates MetaWorld's 500-step limit; the lookahead may pass it
        if env._state is None:
            raise ValueError("oracle tracks need an env that has been reset")
        return np.array(env._state, copy=True)

    def poses(self, env: Any, horizon: int) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray], dict[str, np.ndarray]]:
        """Body poses (H, B, 3) m, (H, B, 3, 3) and per-view camera poses {view: (H, 3) m}, {view:
        (H, 3, 3)} at the current state (step 0) and after each of `horizon - 1` expert steps of the
        shadow copy. Raises ValueError if `env` has not been reset."""
        state = self._sync(env)
        sh, views = self.shadow, env.cfg.views
        body_pos, body_mat = [], []
        cam_pos: dict[str, list] = {v: [] for v in views}
        cam_mat: dict[str, list] = {v: [] for v in views}

        def record(e: Any) -> None:
            x, r = e.body_poses()
            body_pos.append(x)
            body_mat.append(r)
            for v in views:
                p, m = e.camera_pose(v)
                cam_pos[v].append(p)
                cam_mat[v].append(m)

        record(env)
        for _ in range(horizon - 1):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                action = np.clip(np.asarray(sh.expert.get_action(state), dtype=np.float32), -1.0, 1.0)
                # the same float32 -> float64 clip -> float32 path as MetaWorldEnv.step
                action = np.clip(action.astype(np.float64), -1.0, 1.0).astype(np.float32)
                state, *_ = sh.env.step(action)
            record(sh)
        return (np.stack(body_pos), np.stack(body_mat), {v: np.stack(cam_pos[v]) for v in views},
                {v: np.stack(cam_mat[v]) for v in views})

    def close(self) -> None:
        """Close the shadow env."""
        self.shadow.close()


def lift_grid(env: Any, view: str, grid_N2: np.ndarray, depth_HW: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Grid points (N, 2) in (0, 1) of `view` at the env's current state -> (body id (N,),
    body-local 3-D point (N, 3) m). `depth_HW` is the view's rendered depth (metres) at this state;
    ValueError if its shape is not the view's (H, W)."""
    cam = env.camera_model(view)
    H, W = cam.height, cam.width
    if depth_HW.shape != (H, W):
        raise ValueError(f"depth for view {view!r} must be ({H}, {W}), got {depth_HW.shape}")
    uv = np.asarray(grid_N2, np.float64) * np.array([W, H], dtype=np.float64)
    rows = np.clip(np.floor(uv[:, 1]), 0, H - 1).astype(np.int64)
    cols = np.clip(np.floor(uv[:, 0]), 0, W - 1).astype(np.int64)
    seg = env.render_segmentation(view)[rows, cols]
    body = np.where(seg >= 0, env.geom_body[np.clip(seg, 0, None)], 0).astype(np.int64)  # no geom: world body
    cam_pos, cam_mat = env.camera_pose(view)
    p_w = backproject(uv, depth_HW[rows, cols].astype(np.float64), cam_pos, cam_mat, cam)
    body_pos, body_mat = env.body_poses()
    return body, world_to_local(p_w, body_pos[body], body_mat[body])


def oracle_tracks(env: Any, lookahead: ExpertLookahead, points: tuple[int, ...], horizon: int,
                  depth: dict[str, np.ndarray] | None = None) -> dict[int, np.ndarray]:
    """Exact future tracks of each query grid: {N: (V, H, N, 2) float32 in [0, 1]} (x, y), views in
    `env.cfg.views` order, for N in `points` (grids from `grid_points(N)`, the policy's query grids);
    `depth` is {view: (H, W)} rendered at the current state (rendered here when None).
    Leaves `env` untouched (it is rendered, not stepped); see the module doc for the method.
    Raises ValueError for horizon < 1 or an env that has not been reset."""
    if horizon < 1:
        raise ValueError(f"oracle horizon must be >= 1, got {horizon}")
    views = env.cfg.views
    if depth is None:
        depth = {v: env.render_view(v, depth=True)[1] for v in views}
    grids = {n: grid_points(n) for n in points}
    lifted = {(n, v): lift_grid(env, v, g, depth[v]) for n, g in grids.items() for v in views}
    body_pos, body_mat, cam_pos, cam_mat = lookahead.poses(env, horizon)
    out = {}
    for n in grids:
        per_view = []
        for v in views:
            cam = env.camera_model(v)
            body, p_l = lifted[(n, v)]
            p_w = local_to_world(p_l[None], body_pos[:, body], body_mat[:, body])  # (H, N, 3)
            uv, _ = project(p_w, cam_pos[v][:, None], cam_mat[v][:, None], cam)
            per_view.append(np.clip(uv / np.array([cam.width, cam.height], dtype=np.float64), 0.0, 1.0))
        out[n] = np.stack(per_view).astype(np.float32)
    return out
