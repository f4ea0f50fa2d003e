"""MetaWorld v3 environments with fast headless rendering, scripted experts and policy observations.

Policy-facing API (closed-loop evaluation):

    from trajmoe.envs.metaworld import EVAL_VARIATION_START, make_eval_env
    env = make_eval_env("push-v3", variation=EVAL_VARIATION_START + 3,   # held-out variation
                        camera="corner", views=("agentview", "eye_in_hand"), image_size=128)
    obs = env.reset()            # {"rgb": {"agentview": (H,W,3) uint8, "eye_in_hand": (H,W,3) uint8},
                                 #  "ee_pos": (3,) float32, "gripper": (1,) float32,
                                 #  "state": (39,) float64, "step": int}
    obs, reward, success, done = env.step(action)     # action (4,) in [-1, 1]: dx, dy, dz, grip
    env.episode_limit            # the task's step limit; done is True at success or at the limit
    env.close()                  # (or use `with make_eval_env(...) as env:`)

Views: "agentview" is the scene camera (`EnvConfig.camera`, e.g. MetaWorld's `corner`) and
"eye_in_hand" is MetaWorld's gripper camera `gripperPOV`; the names match ATM's LIBERO views so
episode files from both sources share one layout. Proprioception: `ee_pos` is the hand position
(MetaWorld observation[0:3], metres, world frame) and `gripper` the normalised finger opening
(observation[3], 0 closed .. 1 open); the same quantities are stored in episode files as
`extra_states/ee_pos` and `extra_states/gripper_states`.

Task variations: MetaWorld randomises object and goal positions through a "rand_vec" drawn from
the task's reset space. Here a variation is an integer: the task's own reset code draws the
rand_vec (re-drawing until objects do not overlap, as some tasks require) from
`numpy.random.default_rng([task index, variation])`, so a variation is the same scene in every
process. Variations `>= EVAL_VARIATION_START` are held out for evaluation: data generation refuses
them (`assert_train_variation`) and `make_eval_env` refuses the others (`assert_eval_variation`),
so evaluation scenes never appear in training data.

Data generation uses the same env with `with_depth=True` (obs["depth"][view], metres), the
scripted expert (`env.expert_action()`, clipped to [-1, 1]), `env.set_visual_seed(s)` for
randomised colours/lighting, and the simulator-state accessors used by trajmoe.envs.tracks
(`camera_model`, `camera_pose`, `body_poses`, `sim_state`/`set_sim_state`, `render_segmentation`).

Rendering (`trajmoe.envs.render`; MuJoCo's pinhole camera model): one OpenGL context and one scene per env (EGL by default,
`MUJOCO_GL=osmesa` as a fallback), `offsamples = 0` (no MSAA), no shadows or reflections, RGB and
depth read from ONE render pass, sites (goal markers) hidden, and the upside-down `corner*`
cameras rotated by 180 degrees (a vertical flip alone would mirror the scene).
Visual variation (`visual_seed`): geom colours, light intensities/positions and the headlight are
randomised deterministically from the seed, starting from the model's defaults each reset.
"""

from __future__ import annotations

import pickle
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from trajmoe.envs.render import FastRenderer, VisualDefaults, apply_visual_variation, choose_gl_backend, rotate180
from trajmoe.envs.tracks import CameraModel


# The 50 MetaWorld v3 tasks, in `metaworld.env_dict.ALL_V3_ENVIRONMENTS` order (checked in tests).
TASKS: tuple[str, ...] = (
    "assembly-v3", "basketball-v3", "bin-picking-v3", "box-close-v3", "button-press-topdown-v3",
    "button-press-topdown-wall-v3", "button-press-v3", "button-press-wall-v3", "coffee-button-v3",
    "coffee-pull-v3", "coffee-push-v3", "dial-turn-v3", "disassemble-v3", "door-close-v3",
    "door-lock-v3", "door-open-v3", "door-unlock-v3", "hand-insert-v3", "drawer-close-v3",
    "drawer-open-v3", "faucet-open-v3", "faucet-close-v3", "hammer-v3", "handle-press-side-v3",
    "handle-press-v3", "handle-pull-side-v3", "handle-pull-v3", "lever-pull-v3",
    "pick-place-wall-v3", "pick-out-of-hole-v3", "pick-place-v3", "plate-slide-v3",
    "plate-slide-side-v3", "plate-slide-back-v3", "plate-slide-back-side-v3", "peg-insert-side-v3",
    "peg-unplug-side-v3", "soccer-v3", "stick-push-v3", "stick-pull-v3", "push-v3", "push-wall-v3",
    "push-back-v3", "reach-v3", "reach-wall-v3", "shelf-place-v3", "sweep-into-v3", "sweep-v3",
    "window-open-v3", "window-close-v3",
)
CAMERAS: tuple[str, ...] = ("topview", "corner", "corner2", "corner3", "corner4", "behindGripper", "gripperPOV")
SCENE_CAMERAS: tuple[str, ...] = tuple(c for c in CAMERAS if c != "gripperPOV")
FLIPPED_CAMERAS = frozenset({"corner", "corner2", "corner3", "corner4"})  # render upside down
GRIPPER_CAMERA = "gripperPOV"
VIEWS: tuple[str, ...] = ("agentview", "eye_in_hand")
EVAL_VARIATION_START = 1_000_000  # variations >= this are held out for evaluation
DEFAULT_EPISODE_LIMIT = 500  # MetaWorld's max_path_length; env.step raises beyond it
ACTION_DIM = 4


def check_task(task: str) -> str:
    """`task` if it is one of the 50 MetaWorld v3 TASKS, else ValueError listing them."""
    if task not in TASKS:
        raise ValueError(f"unknown MetaWorld task {task!r}; valid tasks: {', '.join(TASKS)}")
    return task


def check_camera(camera: str) -> str:
    """`camera` if it is a scene camera (SCENE_CAMERAS), else ValueError listing them."""
    if camera not in SCENE_CAMERAS:
        raise ValueError(f"unknown scene camera {camera!r}; valid cameras: {', '.join(SCENE_CAMERAS)}")
    return camera


def check_views(views: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """`views` as a tuple; ValueError if empty, naming an unknown view (not in VIEWS) or repeating one."""
    views = tuple(views)
    if not views:
        raise ValueError(f"views must name at least one of {', '.join(VIEWS)}")
    for v in views:
        if v not in VIEWS:
            raise ValueError(f"unknown view {v!r}; valid views: {', '.join(VIEWS)}")
    if len(set(views)) != len(views):
        raise ValueError(f"views repeat a name: {','.join(views)}")
    return views


def variation_split(variation: int) -> str:
    """'train' for variations in [0, EVAL_VARIATION_START), 'eval' above; ValueError if negative."""
    if variation < 0:
        raise ValueError(f"variation must be >= 0, got {variation!r}")
    return "eval" if variation >= EVAL_VARIATION_START else "train"


def assert_train_variation(variation: int) -> None:
    """ValueError unless `variation` is a training variation (0 <= variation < EVAL_VARIATION_START)."""
    if variation_split(variation) != "train":
        raise ValueError(f"variation {variation} is a held-out evaluation variation (>= {EVAL_VARIATION_START}); training data may not use it")


def assert_eval_variation(variation: int) -> None:
    """ValueError unless `variation` is a held-out evaluation variation (>= EVAL_VARIATION_START)."""
    if variation_split(variation) != "eval":
        raise ValueError(f"variation {variation} is a training variation; evaluation uses variations >= {EVAL_VARIATION_START}")


def view_camera(view: str, scene_camera: str) -> str:
    """MuJoCo camera rendering `view`: the gripper camera for "eye_in_hand", else `scene_camera`."""
    return GRIPPER_CAMERA if view == "eye_in_hand" else scene_camera


@dataclass(frozen=True)
class EnvConfig:
    """One MetaWorld env: task, variation, scene camera, views, image size (px), visual seed,
    step limit and whether observations carry depth (m). Every field is validated on creation
    (ValueError naming the field and value)."""

    task: str
    variation: int = 0
    camera: str = "corner"  # scene camera behind the "agentview" view
    views: tuple[str, ...] = VIEWS
    image_size: int = 128
    visual_seed: int | None = None  # None: MetaWorld's default look
    max_steps: int | None = None  # None: the task's episode limit
    with_depth: bool = False  # also return per-view depth (metres) in observations

    def __post_init__(self) -> None:
        check_task(self.task)
        check_camera(self.camera)
        object.__setattr__(self, "views", check_views(self.views))
        variation_split(self.variation)
        if self.image_size <= 0:
            raise ValueError(f"image_size must be positive, got {self.image_size!r}")
        if self.max_steps is not None and not (0 < self.max_steps <= DEFAULT_EPISODE_LIMIT):
            raise ValueError(f"max_steps must be in 1..{DEFAULT_EPISODE_LIMIT}, got {self.max_steps!r}")
        if self.visual_seed is not None and self.visual_seed < 0:
            raise ValueError(f"visual_seed must be >= 0 or None, got {self.visual_seed!r}")


def episode_limit(task: str) -> int:
    """The task's closed-loop step limit (see TASK_EPISODE_LIMITS)."""
    check_task(task)
    return TASK_EPISODE_LIMITS[task]


# Episode limits: twice the longest successful scripted-expert episode over variations 0..4,
# rounded up to 50 steps, at least 150 and at most MetaWorld's 500 (closed-loop policies are
# slower than the experts). Measured here: the experts solved 248/250 of those episodes
# (box-close-v3 and push-back-v3 failed once each); median length 72 steps.
TASK_EPISODE_LIMITS: dict[str, int] = {
    "assembly-v3": 200, "basketball-v3": 250, "bin-picking-v3": 350, "box-close-v3": 300, "button-press-topdown-v3": 150,
    "button-press-topdown-wall-v3": 150, "button-press-v3": 150, "button-press-wall-v3": 150, "coffee-button-v3": 150, "coffee-pull-v3": 200,
    "coffee-push-v3": 150, "dial-turn-v3": 200, "disassemble-v3": 400, "door-close-v3": 200, "door-lock-v3": 300,
    "door-open-v3": 200, "door-unlock-v3": 150, "hand-insert-v3": 150, "drawer-close-v3": 200, "drawer-open-v3": 200,
    "faucet-open-v3": 150, "faucet-close-v3": 150, "hammer-v3": 150, "handle-press-side-v3": 150, "handle-press-v3": 150,
    "handle-pull-side-v3": 250, "handle-pull-v3": 250, "lever-pull-v3": 200, "pick-place-wall-v3": 200, "pick-out-of-hole-v3": 250,
    "pick-place-v3": 150, "plate-slide-v3": 150, "plate-slide-side-v3": 150, "plate-slide-back-v3": 200, "plate-slide-back-side-v3": 150,
    "peg-insert-side-v3": 250, "peg-unplug-side-v3": 250, "soccer-v3": 200, "stick-push-v3": 200, "stick-pull-v3": 300,
    "push-v3": 150, "push-wall-v3": 200, "push-back-v3": 500, "reach-v3": 150, "reach-wall-v3": 150,
    "shelf-place-v3": 200, "sweep-into-v3": 150, "sweep-v3": 200, "window-open-v3": 200, "window-close-v3": 200,
}


class MetaWorldEnv:
    """A MetaWorld v3 task with a fixed variation, views, fast rendering and its scripted expert."""

    def __init__(self, cfg: EnvConfig) -> None:
        """Build the task's env and scripted expert; rendering starts on the first observation."""
        choose_gl_backend()
        # lazy: optional `sim` extra; TASKS, check_task, ... are imported by code that runs without it
        import metaworld  # noqa: F401  (registers the envs; needs `packaging`)
        import mujoco
        from metaworld.env_dict import ALL_V3_ENVIRONMENTS, ML1_ARGS_KWARGS
        from metaworld.policies import ENV_POLICY_MAP

        self.cfg = cfg
        self._cls = ALL_V3_ENVIRONMENTS[cfg.task]
        self._task_kwargs = {k: v for k, v in ML1_ARGS_KWARGS[cfg.task]["kwargs"].items() if k != "task_id"}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.env = self._cls()
        self.model, self.data = self.env.model, self.env.data
        self.expert = ENV_POLICY_MAP[cfg.task]()
        self.cameras = {v: view_camera(v, cfg.camera) for v in cfg.views}
        self._renderer: FastRenderer | None = None  # made on the first render (a lookahead copy never renders)
        self.model.site_rgba[:, 3] = 0.0  # goal markers invisible even if a site group is shown
        self._defaults = VisualDefaults.capture(self.model)
        self.episode_limit = cfg.max_steps or episode_limit(cfg.task)
        self.variation = cfg.variation
        self.visual_seed = cfg.visual_seed
        self.steps = 0
        self.last_info: dict[str, Any] = {}
        self._state: np.ndarray | None = None
        self._rand_vecs: dict[int, np.ndarray] = {}
        self._done = True
        self._geom_body = np.asarray(self.model.geom_bodyid).copy()
        self._body_static = np.asarray(self.model.body_weldid) == 0
        self._cam_ids = {v: mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_CAMERA, c) for v, c in self.cameras.items()}

    @property
    def renderer(self) -> FastRenderer:
        """The env's offscreen renderer (created on first use at image_size x image_size px)."""
        if self._renderer is None:
            self._renderer = FastRenderer(self.model, self.cfg.image_size, self.cfg.image_size)
        return self._renderer

    # ---- task / variation ------------------------------------------------------------------
    def rand_vec(self, variation: int) -> np.ndarray:
        """The task's rand_vec (object/goal placement) for `variation`, deterministic and cached.

        Drawn by the task's own reset code (some tasks re-draw until objects do not overlap)
        from a generator seeded with (task index, variation).
        """
        rv = self._rand_vecs.get(variation)
        if rv is None:
            env = self.env
            env._set_task_called = True
            env._freeze_rand_vec, env.seeded_rand_vec = False, True
            env.np_random = np.random.default_rng([TASKS.index(self.cfg.task), int(variation)])
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                env.reset_model()
            rv = self._rand_vecs[variation] = np.array(env._last_rand_vec, dtype=np.float64)
            env._freeze_rand_vec, env.seeded_rand_vec = True, False
        return rv

    def _set_variation(self, variation: int) -> None:
        from metaworld.types import Task  # lazy: optional `sim` extra (see __init__)

        variation_split(variation)
        data = dict(self._task_kwargs, rand_vec=self.rand_vec(variation), env_cls=self._cls, partially_observable=False)
        # metaworld's own Task record (it pickles its kwargs in memory; nothing is read from disk)
        self.env.set_task(Task(env_name=self.cfg.task, data=pickle.dumps(data)))
        self.variation = variation

    # ---- episode ---------------------------------------------------------------------------
    def set_visual_seed(self, seed: int | None) -> None:
        """Colours/lighting for the following resets (None: MetaWorld's default look); ValueError if < 0."""
        if seed is not None and seed < 0:
            raise ValueError(f"visual_seed must be >= 0 or None, got {seed!r}")
        self.visual_seed = seed

    def reset(self, variation: int | None = None) -> dict[str, Any]:
        """Reset to `variation` (default: the config's) and return the first observation."""
        self._set_variation(self.cfg.variation if variation is None else variation)
        self._defaults.restore(self.model)
        if self.visual_seed is not None:
            apply_visual_variation(self.model, self._body_static, self.visual_seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            state, _ = self.env.reset()
        self._state = state
        self.steps = 0
        self._done = False
        self.last_info = {}
        return self.observation()

    def step(self, action: np.ndarray) -> tuple[dict[str, Any], float, bool, bool]:
        """Apply a (4,) action (dx, dy, dz, grip; clipped to [-1, 1]) -> (obs, reward, success, done).

        Raises:
            ValueError: the episode is finished (success or step limit: reset first), or the action
                does not have 4 values.
        """
        if self._done:
            raise ValueError(f"step() called on a finished episode of {self.cfg.task} (reset first; limit {self.episode_limit} steps)")
        action = np.clip(np.asarray(action, dtype=np.float64).reshape(-1), -1.0, 1.0)
        if action.shape != (ACTION_DIM,):
            raise ValueError(f"action must have {ACTION_DIM} values, got shape {action.shape}")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            state, reward, _, _, info = self.env.step(action.astype(np.float32))
        self._state = state
        self.steps += 1
        self.last_info = info
        success = bool(info.get("success", False))
        self._done = success or self.steps >= self.episode_limit
        return self.observation(), float(reward), success, self._done

    def expert_action(self) -> np.ndarray:
        """The task's scripted expert action for the current state, clipped to [-1, 1], (4,) float32.
        Raises ValueError before the first reset()."""
        if self._state is None:
            raise ValueError("expert_action() before reset()")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # experts warn when their gains saturate
            a = self.expert.get_action(self._state)
        return np.clip(np.asarray(a, dtype=np.float32), -1.0, 1.0)

    # ---- observations ----------------------------------------------------------------------
    def render_view(self, view: str, depth: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        """`view` now: (H, W, 3) uint8 RGB and, with `depth`, (H, W) float32 depth in m (else None),
        upright (the `corner*` cameras are rotated by 180 degrees)."""
        cam = self.cameras[view]
        rgb, dep = self.renderer.render(self.data, cam, depth=depth)
        if cam in FLIPPED_CAMERAS:
            rgb = rotate180(rgb)
            dep = rotate180(dep) if dep is not None else None
        return rgb, dep

    def render_segmentation(self, view: str) -> np.ndarray:
        """(H, W) int32 geom id seen at each pixel of `view` (-1: no geom), upright like `render_view`."""
        cam = self.cameras[view]
        seg = self.renderer.render_segmentation(self.data, cam)
        return rotate180(seg) if cam in FLIPPED_CAMERAS else seg

    def observation(self) -> dict[str, Any]:
        """The current observation: rgb {view: (H, W, 3) uint8}, ee_pos (3,) float32 m, gripper (1,)
        float32 (0 closed .. 1 open), state (39,) float64, step int, and depth {view: (H, W) m} when
        configured (see the module docstring)."""
        assert self._state is not None
        rgb, depth = {}, {}
        for v in self.cfg.views:
            rgb[v], d = self.render_view(v, depth=self.cfg.with_depth)
            if d is not None:
                depth[v] = d
        obs: dict[str, Any] = {
            "rgb": rgb,
            "ee_pos": self._state[0:3].astype(np.float32),
            "gripper": self._state[3:4].astype(np.float32),
            "state": self._state.copy(),
            "step": self.steps,
        }
        if self.cfg.with_depth:
            obs["depth"] = depth
        return obs

    # ---- simulator state used by the exact track labeller ----------------------------------
    def camera_model(self, view: str) -> CameraModel:
        """Pinhole intrinsics of `view`'s camera at the env's image size (trajmoe.envs.tracks)."""
        cam = self.cameras[view]
        fovy = float(self.model.cam_fovy[self._cam_ids[view]])
        return CameraModel(fovy_deg=fovy, height=self.cfg.image_size, width=self.cfg.image_size, flip=cam in FLIPPED_CAMERAS)

    def camera_pose(self, view: str) -> tuple[np.ndarray, np.ndarray]:
        """`view`'s camera position (3,) m and rotation matrix (3, 3) (columns = camera axes), world frame."""
        cid = self._cam_ids[view]
        return self.data.cam_xpos[cid].copy(), self.data.cam_xmat[cid].reshape(3, 3).copy()

    def body_poses(self) -> tuple[np.ndarray, np.ndarray]:
        """(B, 3) positions and (B, 3, 3) rotation matrices of every body, world frame."""
        return self.data.xpos.copy(), self.data.xmat.reshape(-1, 3, 3).copy()

    @property
    def geom_body(self) -> np.ndarray:
        """(G,) body id of each geom."""
        return self._geom_body

    @property
    def body_is_static(self) -> np.ndarray:
        """(B,) bool: bodies welded to the world (table, walls, floor)."""
        return self._body_static

    def sim_state(self) -> dict[str, np.ndarray]:
        """Everything the kinematics depend on (for replaying a frame exactly)."""
        d = self.data
        return {"qpos": d.qpos.copy(), "qvel": d.qvel.copy(), "mocap_pos": d.mocap_pos.copy(), "mocap_quat": d.mocap_quat.copy()}

    def set_sim_state(self, state: dict[str, np.ndarray]) -> None:
        """Restore a `sim_state()` and recompute the kinematics; the episode cannot be stepped after."""
        import mujoco  # lazy: optional `sim` extra (see __init__)

        d = self.data
        d.qpos[:], d.qvel[:] = state["qpos"], state["qvel"]
        d.mocap_pos[:], d.mocap_quat[:] = state["mocap_pos"], state["mocap_quat"]
        mujoco.mj_forward(self.model, d)
        self._done = True  # the episode cannot continue from a replayed state

    def close(self) -> None:
        """Free the renderer and close the MetaWorld env."""
        if self._renderer is not None:
            self._renderer.close()
        self.env.close()

    def __enter__(self) -> "MetaWorldEnv":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def make_env(task: str, variation: int = 0, **kwargs: Any) -> MetaWorldEnv:
    """`MetaWorldEnv(EnvConfig(task, variation, **kwargs))`; ValueError on a bad config field."""
    return MetaWorldEnv(EnvConfig(task=task, variation=variation, **kwargs))


def make_eval_env(task: str, variation: int, **kwargs: Any) -> MetaWorldEnv:
    """An env on a held-out evaluation variation (>= EVAL_VARIATION_START); refuses training ones."""
    assert_eval_variation(variation)
    return make_env(task, variation, **kwargs)
