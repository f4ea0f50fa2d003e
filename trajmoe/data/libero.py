"""LIBERO episodes with exact ground-truth tracks in ATM's layout: `trajmoe data libero`.

Two sources, one writer (the MetaWorld generator's machinery, trajmoe.data.generate: the same frame
recorder, exact track labeller on the simulator's body poses, atomic episode files, folder locks and
recorded settings, failure markers, shards, workers, manifest):

  * source "expert": the scripted pick-and-place expert (trajmoe.envs.libero_expert, tasks whose goal
    is `(In OBJECT REGION)`, i.e. LIBERO-Object). Scenes are placed by LIBERO's own region sampler from
    a seed (init="random", the default: scene seed `seed + index + attempt * ATTEMPT_STRIDE`; training
    data that are independent draws from the distribution of the benchmark's init states, not the
    evaluation states) or are the benchmark's init states `seed + index` (init="benchmark": the states
    `trajmoe eval policy --suite` evaluates on; for inspection, not for training data). A failed
    expert episode is retried on the next scene seeds, then skipped with a failure marker
    (`--keep-failed` keeps it with success=False).
  * source "demo": a LIBERO demonstration file (`data/demo_<i>/{states, actions}` and the `data`
    attribute `bddl_file_name`, as LIBERO's `scripts/collect_demonstration.py` and `create_dataset.py`
    write them; the released `libero_<suite>/<task>_demo.hdf5` files have this layout). replay="states"
    (default) loads every stored state (frame t = `states[t]`, action t = `actions[t]`: the demonstration
    exactly, whatever the simulator version); replay="actions" loads `states[0]` and steps the actions
    (LIBERO's own replay), recording the largest differences between the replayed and the stored states
    (attributes `replay_max_qpos_error`, `replay_max_qvel_error`; LIBERO warns when the state differs by
    more than 0.01). Measured on the expert's own demonstrations: exact (1e-14) until contacts begin,
    then qpos within 1e-4 and qvel within 0.06 (robosuite's solver warm start is not part of a stored
    state). LIBERO's demos were recorded on MuJoCo 2.3; here robosuite runs on MuJoCo 3.3, so action
    replay of them may drift further where state replay cannot.

Layout: `OUT/<task>_demo/demo_<i>.hdf5` (ATM's folder names, so ATM's loaders and `trajmoe train`
read them alike) in trajmoe.data.atm_hdf5's format: views agentview / eye_in_hand at `image_size`,
frames upright (rows reversed, as ATM's preprocessing and the evaluation protocol store them),
`tracks`/`vis`/`query_frame` per view, 7-D `actions`, `extra_states/{ee_pos (3), gripper_states (2),
joint_states (7)}` (ATM's names), `task_emb` (384-d embedding of the benchmark's language instruction,
trajmoe.data.language), attributes task, instruction, suite, source, init_state, scene_seed, demo,
success. Frame t is the state before action t (the MetaWorld files' convention). ATM's preprocessed
files differ by one frame: LIBERO's released files store `obs[k]` after action k but `states[k]`
before it, and ATM takes the frames from `obs`.

`write_demo_file` (trajmoe.data.libero_demos, beside the reader of such files) writes the expert's
states and actions in LIBERO's demonstration layout (physics only, no images: `trajmoe data libero
--raw-demos`), which `--demo` reads back. Like LIBERO's own recordings they start right after the
scene is placed: the first SETTLE_STEPS actions are the protocol's settle actions (robosuite's gripper
command is stateful, so a replay that starts after them from a fresh reset would open the gripper
differently).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from trajmoe.data.atm_hdf5 import EpisodeData, ViewData, write_episode
from trajmoe.data.generate import (
    Rollout,
    RunSummary,
    dataset_folders,
    generate_items,
    label_tracks,
    record_frame,
)
from trajmoe.data.libero_demos import load_demo, read_demo_file, write_demo_file
from trajmoe.envs.tracks import TrackLabelConfig
from trajmoe.io import atomic_write_json

GENERATOR_VERSION = "trajmoe-libero-1"
SOURCES = ("expert", "demo")
INITS = ("random", "benchmark")
REPLAYS = ("states", "actions")
ATTEMPT_STRIDE = 100_000  # attempt k of episode i uses scene seed seed + i + k * STRIDE
MAX_ATTEMPTS = 3
EXPERT_MAX_STEPS = 300  # the expert needs 90-170 steps on LIBERO-Object (docs/libero.md)
REPLAY_WARN = 0.01  # LIBERO's create_dataset.py warns when playback diverges by more


@dataclass(frozen=True)
class LiberoSpec:
    """What one LIBERO dataset folder holds (recorded in its generation.json; a rerun may only add episodes).

    demo_files: for source "demo", the demonstration files, one per task, in `tasks` order.
    """

    name: str
    suite: str
    tasks: tuple[str, ...]
    episodes: int
    source: str = "expert"
    init: str = "random"
    seed: int = 0
    replay: str = "states"
    demo_files: tuple[str, ...] = ()
    views: tuple[str, ...] = ("agentview", "eye_in_hand")
    image_size: int = 128
    max_steps: int | None = None  # expert episodes (default EXPERT_MAX_STEPS); demos run to their end
    keep_failed: bool = False
    attempts: int = MAX_ATTEMPTS
    track: TrackLabelConfig = field(default_factory=TrackLabelConfig)
    generator_version: str = GENERATOR_VERSION

    def __post_init__(self) -> None:
        from trajmoe.envs.libero import VIEWS, check_suite

        if not self.name or "/" in self.name or self.name.startswith("."):
            raise ValueError(f"domain name must be a plain folder name, got {self.name!r}")
        check_suite(self.suite)
        for key, allowed in (("source", SOURCES), ("init", INITS), ("replay", REPLAYS)):
            if getattr(self, key) not in allowed:
                raise ValueError(f"{key} must be one of {', '.join(allowed)}, got {getattr(self, key)!r}")
        object.__setattr__(self, "tasks", tuple(self.tasks))
        object.__setattr__(self, "views", tuple(self.views))
        object.__setattr__(self, "demo_files", tuple(str(p) for p in self.demo_files))
        if not self.tasks:
            raise ValueError("tasks must not be empty")
        for v in self.views:
            if v not in VIEWS:
                raise ValueError(f"unknown LIBERO view {v!r}; valid views: {', '.join(VIEWS)}")
        for key in ("episodes", "image_size", "max_steps", "attempts"):
            if getattr(self, key) is not None and getattr(self, key) <= 0:
                raise ValueError(f"{key} must be positive, got {getattr(self, key)!r}")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed!r}")
        if self.source == "demo" and len(self.demo_files) != len(self.tasks):
            raise ValueError(f"source 'demo' needs one demonstration file per task, got {len(self.demo_files)} "
                             f"for {len(self.tasks)} task(s)")
        if self.source == "expert" and self.init == "benchmark" and self.seed + self.episodes > 50:
            raise ValueError(f"init 'benchmark' has init states 0..49: seed {self.seed} + {self.episodes} episodes "
                             f"goes past them")

    def scene(self, index: int, attempt: int) -> tuple[int | None, int | None]:
        """(init_state, scene_seed) of expert episode `index` at retry `attempt` (module doc)."""
        if self.init == "benchmark":
            return self.seed + index, None
        return None, self.seed + index + attempt * ATTEMPT_STRIDE

    def track_seed(self, task: str, index: int) -> int:
        """Deterministic seed of the track sampling of one episode."""
        import zlib

        return zlib.crc32(f"{self.name}/{task}/{index}/{self.seed}/{self.source}".encode()) & 0x7FFFFFFF


@dataclass(frozen=True)
class LiberoItem:
    """One episode to generate: its spec, task, index and output folder (paths in ATM's `<task>_demo` folders)."""

    spec: LiberoSpec
    task: str
    index: int
    out_dir: str

    @property
    def path(self) -> Path:
        """OUT/<task>_demo/demo_<index>.hdf5."""
        return Path(self.out_dir) / f"{self.task}_demo" / f"demo_{self.index}.hdf5"

    @property
    def failed_path(self) -> Path:
        """OUT/<task>_demo/demo_<index>.failed.json (written when every attempt failed)."""
        return Path(self.out_dir) / f"{self.task}_demo" / f"demo_{self.index}.failed.json"


def work_items(spec: LiberoSpec, out: str, shard: tuple[int, int] = (0, 1)) -> list[LiberoItem]:
    """The sorted (task, index) work list of `spec`, then this shard's part (items I, I+N, ...)."""
    items = sorted((LiberoItem(spec, t, i, str(out)) for t in spec.tasks for i in range(spec.episodes)),
                   key=lambda w: (w.task, w.index))
    return items[shard[0]::shard[1]]


# ---------------------------------------------------------------------------------------------
# one episode


def rollout_expert(env: Any, max_steps: int, init_state: int | None, seed: int | None, record: bool = True,
                   record_settle: bool = False) -> Rollout:
    """Run the scripted expert from a reset (benchmark init state, or a seeded placement) and the protocol's
    settle steps, recording every frame (trajmoe.data.generate.record_frame; with `record` False only the
    simulator states, proprioception and actions); ends with the step that reaches success or at
    `max_steps` env steps. `record_settle`: the settle steps are recorded too (as SETTLE_ACTION actions
    from the state right after placing the scene, where LIBERO's demonstrations start: their replay
    then starts from the same controller state as the recording)."""
    from trajmoe.envs.libero import SETTLE_ACTION, SETTLE_STEPS
    from trajmoe.envs.libero_expert import PickPlaceExpert

    rec = Rollout.empty(env.views)
    obs = env.reset(init_state=init_state, seed=seed, settle=not record_settle)
    pre = [SETTLE_ACTION.astype(np.float32)] * (SETTLE_STEPS if record_settle else 0)
    expert = None
    for t in range(max_steps):
        if record:
            record_frame(rec, env, obs, obs["joint_states"])
        else:
            rec.sim_states.append(env.sim_state())
            rec.ee_pos.append(obs["ee_pos"])
            rec.gripper.append(obs["gripper"])
            rec.state.append(obs["joint_states"])
        if t < len(pre):
            action = pre[t]
        else:
            expert = expert or PickPlaceExpert(env)
            action = expert.action()
        rec.actions.append(action)
        obs, _reward, success, done = env.step(action)
        if success or done:
            rec.success = success
            break
    return rec


def replay_demo(env: Any, states: np.ndarray, actions: np.ndarray, mode: str = "states") -> tuple[Rollout, dict[str, float]]:
    """Replay one demonstration (module doc) recording every frame; (rollout, {"qpos", "qvel"}: the largest
    |replayed - stored| difference of each over the episode, 0 for replay by states). `rollout.success`:
    the goal holds after the last action."""
    if mode not in REPLAYS:
        raise ValueError(f"replay must be one of {', '.join(REPLAYS)}, got {mode!r}")
    rec = Rollout.empty(env.views)
    obs = env.reset_to_state(states[0])
    nq = int(env.model.nq)
    err = {"qpos": 0.0, "qvel": 0.0}
    for t in range(len(actions)):
        if mode == "states" and t > 0:
            env.set_sim_state(states[t])
            obs = env.observe()
        elif mode == "actions":
            diff = np.abs(env.sim_state()["state"] - states[t])
            err["qpos"] = max(err["qpos"], float(diff[1:1 + nq].max()))
            err["qvel"] = max(err["qvel"], float(diff[1 + nq:].max(initial=0.0)))
        record_frame(rec, env, obs, obs["joint_states"])
        rec.actions.append(np.asarray(actions[t], np.float32))
        if mode == "actions":
            obs, _, success, _ = env.step(actions[t])
    if mode == "states":  # the goal after the last action, stepped from the last stored state
        env.reset_to_state(states[-1])
        _, _, success, _ = env.step(actions[-1])
    rec.success = bool(success)
    return rec, err


_ENV: dict[Any, Any] = {}
_ENV_FINALIZER: list = []


def _env_for(spec: LiberoSpec, task: str) -> Any:
    """One LiberoEnv (RGB + depth) per (suite, task, views, size, limit) in this process; the last is reused."""
    from trajmoe.envs.libero import LiberoEnv

    limit = spec.max_steps or EXPERT_MAX_STEPS
    if spec.source == "demo":
        limit = max(limit, 10**6)  # a demonstration runs to its end
    key = (spec.suite, task, spec.views, spec.image_size, limit)
    env = _ENV.get(key)
    if env is None:
        close_envs()
        if not _ENV_FINALIZER:  # a pool worker frees its GL context before EGL goes away at exit
            import multiprocessing.util

            _ENV_FINALIZER.append(multiprocessing.util.Finalize(None, close_envs, exitpriority=100))
        env = _ENV[key] = LiberoEnv(spec.suite, task, image_size=spec.image_size, views=spec.views, max_steps=limit,
                                    with_depth=True)
    return env


def close_envs() -> None:
    """Close the LIBERO env this process keeps between episodes (if any)."""
    for env in _ENV.values():
        env.close()
    _ENV.clear()


def generate_episode(item: LiberoItem, task_emb: np.ndarray, instruction: str) -> dict[str, Any]:
    """Roll out (expert) or replay (demo), label exact tracks, write one episode; a record for the summary."""
    from trajmoe.envs.libero import CAMERAS

    spec, task = item.spec, item.task
    t_env = time.perf_counter()
    env = _env_for(spec, task)
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    t_env = t0 - t_env
    attrs: dict[str, Any] = {"source": spec.source, "init_state": -1, "scene_seed": -1, "demo": ""}
    attempts: list[dict] = []
    if spec.source == "expert":
        rec = None
        tries = 1 if spec.init == "benchmark" else spec.attempts
        for k in range(tries):
            init_state, seed = spec.scene(item.index, k)
            rec = rollout_expert(env, env.episode_limit, init_state, seed)
            attempts.append({"init_state": init_state, "scene_seed": seed, "steps": len(rec.actions), "success": rec.success})
            if rec.success:
                break
        assert rec is not None
        attrs.update(init_state=-1 if init_state is None else init_state, scene_seed=-1 if seed is None else seed)
    else:
        demo_path = spec.demo_files[spec.tasks.index(task)]
        demo = read_demo_file(demo_path, spec.suite).demos[item.index]
        states, actions = load_demo(demo_path, demo)
        rec, err = replay_demo(env, states, actions, spec.replay)
        attempts.append({"demo": demo, "steps": len(rec.actions), "success": rec.success})
        attrs.update(demo=f"{Path(demo_path).name}:{demo}", replay=spec.replay, replay_max_qpos_error=err["qpos"],
                     replay_max_qvel_error=err["qvel"])
    steps = sum(a["steps"] for a in attempts)
    t_sim = time.perf_counter() - t0
    base = {"task": task, "domain": spec.name, "index": item.index, "steps": steps, "attempts": attempts,
            "t_sim": t_sim, "t_env": t_env}
    if not rec.success and not spec.keep_failed and spec.source == "expert":
        atomic_write_json(item.failed_path, {"task": task, "domain": spec.name, "index": item.index,
                                             "attempts": attempts, "generator_version": GENERATOR_VERSION})
        return dict(base, status="failed", t_tracks=0.0, t_write=0.0, cpu_s=time.process_time() - cpu0)
    t1 = time.perf_counter()
    tracks = label_tracks(env, rec, spec.track, np.random.default_rng(spec.track_seed(task, item.index)))
    t2 = time.perf_counter()
    views = {v: ViewData(camera=CAMERAS[v], frames_THW3=np.stack(rec.frames[v]), tracks_TN2=tracks[v].tracks_TN2,
                         vis_TN=tracks[v].vis_TN, query_frame_N=tracks[v].query_frame_N) for v in spec.views}
    attrs.update(task=task, instruction=instruction, domain=spec.name, suite=spec.suite, camera=CAMERAS[spec.views[0]],
                 seed=spec.seed, success=rec.success, generator_version=GENERATOR_VERSION, episode_index=item.index)
    ep = EpisodeData(views=views, ee_pos_T3=np.stack(rec.ee_pos), gripper_T1=np.stack(rec.gripper), task_emb=task_emb,
                     attrs=attrs, actions_TA=np.stack(rec.actions).astype(np.float32),
                     extra_states={"joint_states": np.stack(rec.state)})
    write_episode(item.path, ep)
    if item.failed_path.exists():
        item.failed_path.unlink()
    t3 = time.perf_counter()
    return dict(base, status="ok" if rec.success else "kept_failed", length=len(rec.actions), t_tracks=t2 - t1,
                t_write=t3 - t2, cpu_s=time.process_time() - cpu0)


def _instruction(item: LiberoItem) -> str:
    from trajmoe.envs.libero import task_language

    return task_language(item.spec.suite, item.task)


def generate(spec: LiberoSpec, out: str | Path, workers: int = 1, shard: tuple[int, int] = (0, 1),
             retry_failed: bool = False, progress: bool = True, verify: bool = False) -> RunSummary:
    """Generate `spec` into `out` (module doc); resumable, shardable, parallel over processes, as
    trajmoe.data.generate.generate. Raises LiberoNotInstalled / ValueError (one line) on bad input."""
    from trajmoe.envs.libero import require_libero

    require_libero()
    if workers <= 0:
        raise ValueError(f"--workers must be positive, got {workers!r}")
    if spec.source == "expert":
        from trajmoe.envs.libero_expert import check_expert_task

        for t in spec.tasks:
            check_expert_task(spec.suite, t)
    specs = [(spec, str(out))]
    items = work_items(spec, str(out), shard)
    try:
        with dataset_folders(specs, items, shard, GENERATOR_VERSION):
            return generate_items(specs, items, workers, retry_failed, progress, verify, generate_episode, _instruction)
    finally:
        close_envs()


# ---------------------------------------------------------------------------------------------
# expert demonstrations in LIBERO's own layout (physics only)


def write_expert_demos(suite: str, tasks: list[str], episodes: int, out: str | Path, seed: int = 0,
                       init: str = "random", max_steps: int = EXPERT_MAX_STEPS, progress: bool = True) -> dict[str, Any]:
    """Record `episodes` successful expert demonstrations per task (no rendering) into
    `out/<task>_demo.hdf5` in LIBERO's layout (`write_demo_file`); scenes as source "expert" (a failed
    episode is retried on the next scene seeds, MAX_ATTEMPTS in all, then left out). Returns a summary."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from trajmoe.envs.libero import LiberoEnv, require_libero
    from trajmoe.envs.libero_expert import check_expert_task

    require_libero()
    spec = LiberoSpec(name=suite, suite=suite, tasks=tuple(tasks), episodes=episodes, init=init, seed=seed,
                      max_steps=max_steps)
    for t in spec.tasks:
        check_expert_task(suite, t)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    res: dict[str, Any] = {"files": [], "demos": 0, "failed": 0, "steps": 0}
    t0 = time.perf_counter()
    cols = [TextColumn("demos"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
    with Progress(*cols, disable=not progress) as bar:
        job = bar.add_task("demos", total=len(spec.tasks) * episodes)
        for task in spec.tasks:
            demos = []
            with LiberoEnv(suite, task, render=False, max_steps=max_steps) as env:
                for i in range(episodes):
                    tries = 1 if init == "benchmark" else MAX_ATTEMPTS
                    for k in range(tries):
                        init_state, scene_seed = spec.scene(i, k)
                        rec = rollout_expert(env, max_steps, init_state, scene_seed, record=False, record_settle=True)
                        res["steps"] += len(rec.actions)
                        if rec.success:
                            break
                    if rec.success:
                        demos.append({"states": np.stack([s["state"] for s in rec.sim_states]),
                                      "actions": np.stack(rec.actions), "ee_pos": np.stack(rec.ee_pos),
                                      "gripper_states": np.stack(rec.gripper), "joint_states": np.stack(rec.state)})
                    else:
                        res["failed"] += 1
                    bar.advance(job)
                env_args = {"camera_heights": 128, "camera_widths": 128, "control_freq": 20}
            if demos:
                res["files"].append(str(write_demo_file(out / f"{task}_demo.hdf5", suite, task, demos, env_args)))
                res["demos"] += len(demos)
    res["wall_s"] = round(time.perf_counter() - t0, 2)
    return res
