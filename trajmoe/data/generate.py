"""Generate MetaWorld episode datasets: scripted-expert rollouts + exact GT tracks -> HDF5 files.

The simulator-independent parts (`record_frame`, `label_tracks`, `dataset_folders`, `generate_items`,
`write_manifest`) are also the machinery of trajmoe.data.libero (`trajmoe data libero`).

A dataset directory holds `<task>/demo_<i>.hdf5` (ATM's per-task folders of per-demo files), a
`<task>/demo_<i>.failed.json` marker for episodes whose expert failed on every attempt, and a
`manifest.json` rebuilt from the files at the end of every run. A benchmark directory holds one
dataset directory per domain plus a top-level `manifest.json` naming them.

Robustness:
  * every file is written atomically, so a file that exists is complete; a rerun validates and
    skips finished episodes (and known failures unless `retry_failed`);
  * an episode whose expert fails is retried on the next variations (`variation + k * STRIDE`),
    then skipped with a failure marker, or kept with `success=False` only with `keep_failed`;
  * `shard=(I, N)` picks items I, I+N, I+2N, ... of the sorted work list, so N machines can split
    a dataset with no coordination; each rebuilds the manifest from the files present;
  * variations are asserted to be training variations (< EVAL_VARIATION_START).

Episode = frames 0..T-1 and the expert action taken at each; it ends with the step that reaches
success (the success state itself is not a frame: there is no action to label it with) or at
`max_steps`.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
import contextlib
import re
import signal

import numpy as np
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from trajmoe.data.specs import GENERATOR_VERSION, DomainSpec, WorkItem, work_items
from trajmoe.envs.metaworld import EnvConfig, view_camera
from trajmoe.envs.tracks import TrackLabelConfig
from trajmoe.parallel import worker_pool
from trajmoe.config import to_dict
from trajmoe.data.atm_hdf5 import EpisodeData, MANIFEST, ViewData, is_complete_episode, open_episode, write_episode
from trajmoe.data.folders import prepare_dataset_folder
from trajmoe.data.language import embed_texts, instruction
from trajmoe.envs.metaworld import MetaWorldEnv
from trajmoe.envs.oracle import ExpertLookahead, oracle_tracks
from trajmoe.envs.tracks import ViewRecording, compute_view_tracks
from trajmoe.io import atomic_write_json, read_json

# ---------------------------------------------------------------------------------------------
# one episode


@dataclass
class Rollout:
    """Everything recorded from one scripted-expert episode: per-view RGB, depth and camera poses, body poses,
    actions, states, per frame.
    """
    frames: dict[str, list[np.ndarray]]
    depth: dict[str, list[np.ndarray]]
    cam_pos: dict[str, list[np.ndarray]]
    cam_mat: dict[str, list[np.ndarray]]
    body_pos: list[np.ndarray]
    body_mat: list[np.ndarray]
    sim_states: list[dict[str, np.ndarray]]
    actions: list[np.ndarray]
    ee_pos: list[np.ndarray]
    gripper: list[np.ndarray]
    state: list[np.ndarray]
    success: bool = False
    oracle: list[dict[int, np.ndarray]] = field(default_factory=list)  # per frame {N: (V, H, N, 2)}

    @classmethod
    def empty(cls, views: tuple[str, ...]) -> "Rollout":
        """A Rollout with empty per-frame lists for `views`."""
        return cls(*({v: [] for v in views} for _ in range(4)), [], [], [], [], [], [], [])  # type: ignore[arg-type]


def record_frame(rec: Rollout, env: Any, obs: dict[str, Any], state: np.ndarray | None = None) -> None:
    """Append one frame to `rec`: every view's RGB, depth and camera pose, all body poses, the simulator state
    (for replaying it when labelling), ee_pos, gripper and `state` (the env's full state vector, or None).

    `env` is any simulator with the track interface of trajmoe.envs.tracks (`camera_pose`, `body_poses`,
    `sim_state`: trajmoe.envs.metaworld.MetaWorldEnv, trajmoe.envs.libero.LiberoEnv); `obs` carries "rgb"
    and "depth" per view of `rec`.
    """
    for v in rec.frames:
        rec.frames[v].append(obs["rgb"][v])
        rec.depth[v].append(obs["depth"][v])
        p, m = env.camera_pose(v)
        rec.cam_pos[v].append(p)
        rec.cam_mat[v].append(m)
    x, r = env.body_poses()
    rec.body_pos.append(x)
    rec.body_mat.append(r)
    rec.sim_states.append(env.sim_state())
    rec.ee_pos.append(obs["ee_pos"])
    rec.gripper.append(obs["gripper"])
    if state is not None:
        rec.state.append(np.asarray(state, np.float32))


def rollout_expert(env: Any, variation: int, max_steps: int, oracle: tuple[tuple[int, ...], int] | None = None) -> Rollout:
    """Run the scripted expert, recording RGB + depth of every view and all poses at every frame;
    with `oracle` = (grid sizes, horizon) also each frame's oracle grid tracks (trajmoe.envs.oracle)."""
    rec = Rollout.empty(env.cfg.views)
    obs = env.reset(variation=variation)
    lookahead = None
    if oracle and oracle[0]:
        lookahead = ExpertLookahead(env)
    for _t in range(max_steps):
        if lookahead is not None:
            rec.oracle.append(oracle_tracks(env, lookahead, oracle[0], oracle[1], depth=obs["depth"]))
        record_frame(rec, env, obs, obs["state"])
        action = env.expert_action()
        rec.actions.append(action)
        obs, _reward, success, done = env.step(action)
        if success or done:
            rec.success = success
            break
    if lookahead is not None:
        lookahead.close()
    return rec


def label_tracks(env: Any, rec: Rollout, cfg: TrackLabelConfig, rng: np.random.Generator) -> dict[str, Any]:
    """Exact GT tracks for every view of `rec`; segmentation at query frames is rendered by replaying state.

    `env`: the simulator `rec` was recorded in (the track interface of `record_frame`, plus
    `set_sim_state`, `render_segmentation`, `camera_model`, `geom_body`, `body_is_static`); its state is
    replaced (the episode cannot continue). Returns {view: trajmoe.envs.tracks.TrackResult}.
    """
    body_pos, body_mat = np.stack(rec.body_pos), np.stack(rec.body_mat)
    geom_body, body_is_static = env.geom_body, env.body_is_static
    out = {}
    for v in rec.frames:
        cache: dict[int, np.ndarray] = {}

        def seg_at(t: int, v: str = v) -> np.ndarray:
            if t not in cache:
                env.set_sim_state(rec.sim_states[t])
                cache[t] = env.render_segmentation(v)
            return cache[t]

        view = ViewRecording(env.camera_model(v), np.stack(rec.cam_pos[v]), np.stack(rec.cam_mat[v]), np.stack(rec.depth[v]))
        out[v] = compute_view_tracks(view, body_pos, body_mat, seg_at, geom_body, body_is_static, cfg, rng)
    return out


_ENV_CACHE: dict[Any, Any] = {}


def _env_for(spec: DomainSpec, task: str, visual_seed: int | None) -> Any:
    """One env per (task, camera, views, size, step limit) in this process; the last one is reused."""
    key = (task, spec.camera, spec.views, spec.image_size, spec.max_steps)
    env = _ENV_CACHE.get(key)
    if env is None:
        for old in _ENV_CACHE.values():
            old.close()
        _ENV_CACHE.clear()
        cfg = EnvConfig(task=task, camera=spec.camera, views=spec.views, image_size=spec.image_size,
                        max_steps=spec.max_steps, with_depth=True)
        env = _ENV_CACHE[key] = MetaWorldEnv(cfg)
    env.set_visual_seed(visual_seed)
    return env


def generate_episode(item: WorkItem, task_emb: np.ndarray, instruction: str) -> dict[str, Any]:
    """Roll out, label, write one episode; returns a record for the manifest / progress."""
    spec, task = item.spec, item.task
    seed = spec.episode_seed(task, item.index)
    visual_seed = seed if spec.visual_variation else None
    t_env = time.perf_counter()
    env = _env_for(spec, task, visual_seed)
    cpu0 = time.process_time()  # CPU seconds of this process (renderer threads included)
    t0 = time.perf_counter()
    t_env = t0 - t_env
    attempts, steps, rec, variation = [], 0, None, None
    for k in range(spec.attempts):
        variation = spec.variation(item.index, k)
        rec = rollout_expert(env, variation, env.episode_limit, (spec.oracle_points, spec.oracle_horizon))
        steps += len(rec.actions)
        attempts.append({"variation": variation, "steps": len(rec.actions), "success": rec.success})
        if rec.success:
            break
    t_sim = time.perf_counter() - t0
    base = {"task": task, "domain": spec.name, "index": item.index, "steps": steps, "attempts": attempts, "t_sim": t_sim,
            "t_env": t_env}
    assert rec is not None and variation is not None
    if not rec.success and not spec.keep_failed:
        atomic_write_json(item.failed_path, {"task": task, "domain": spec.name, "index": item.index, "attempts": attempts,
                                              "generator_version": GENERATOR_VERSION})
        return dict(base, status="failed", t_tracks=0.0, t_write=0.0, cpu_s=time.process_time() - cpu0)
    t1 = time.perf_counter()
    tracks = label_tracks(env, rec, spec.track, np.random.default_rng(seed))
    t2 = time.perf_counter()
    views = {
        v: ViewData(
            camera=view_camera(v, spec.camera),
            frames_THW3=np.stack(rec.frames[v]),
            tracks_TN2=tracks[v].tracks_TN2,
            vis_TN=tracks[v].vis_TN,
            query_frame_N=tracks[v].query_frame_N,
            oracle_tracks={n: np.stack([f[n][vi] for f in rec.oracle]) for n in spec.oracle_points},
        )
        for vi, v in enumerate(spec.views)
    }
    attrs = {
        "task": task, "instruction": instruction, "domain": spec.name, "camera": spec.camera, "seed": seed,
        "variation": variation, "visual_seed": -1 if visual_seed is None else visual_seed, "success": rec.success,
        "generator_version": GENERATOR_VERSION, "episode_index": item.index,
    }
    ep = EpisodeData(
        views=views, ee_pos_T3=np.stack(rec.ee_pos), gripper_T1=np.stack(rec.gripper), task_emb=task_emb, attrs=attrs,
        actions_TA=None if spec.action_free else np.stack(rec.actions), state_TS=np.stack(rec.state),
    )
    write_episode(item.path, ep)
    if item.failed_path.exists():
        item.failed_path.unlink()
    t3 = time.perf_counter()
    return dict(base, status="ok" if rec.success else "kept_failed", length=len(rec.actions), t_tracks=t2 - t1, t_write=t3 - t2,
                cpu_s=time.process_time() - cpu0)


def _worker_init() -> None:
    os.environ.setdefault("MUJOCO_GL", "egl")
    os.environ.setdefault("OMP_NUM_THREADS", "1")


def _pool_worker_init() -> None:
    """Pool workers turn SIGTERM (Pool.terminate on Ctrl-C) into KeyboardInterrupt, so an
    interrupted atomic write deletes its temporary file instead of leaving it behind."""
    def _raise(_signum, _frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _raise)
    _worker_init()


def _run_chunk(chunk: list[tuple]) -> list[dict[str, Any]]:
    return [_run_item(a) for a in chunk]


def _chunks(args: list, workers: int) -> list[list]:
    """Episodes of one task stay together (one env build per task and worker), split so that
    every worker gets work when there are fewer tasks than workers."""
    groups: dict[tuple, list] = {}
    for a in args:
        groups.setdefault((a[1].out_dir, a[1].spec.name, a[1].task), []).append(a)
    size = max(1, -(-len(args) // max(workers * 2, 1)))  # ~2 chunks per worker for balance
    return [g[i:i + size] for g in groups.values() for i in range(0, len(g), size)]


def _run_item(args: tuple) -> dict[str, Any]:
    """Run one job (episode_fn, item, task embedding, instruction): episode_fn(item, emb, instruction)."""
    episode_fn, item, emb, instr = args
    try:
        return episode_fn(item, emb, instr)
    except (ValueError, RuntimeError, OSError) as e:  # a broken episode must not kill the whole run
        return {"task": item.task, "domain": item.spec.name, "index": item.index, "status": "error",
                "error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}", "steps": 0}


# ---------------------------------------------------------------------------------------------
# datasets


@dataclass
class RunSummary:
    """Counters of one generation run (episodes written / skipped / failed, env steps, wall / busy / CPU
    seconds).
    """
    done: int = 0
    skipped: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)
    steps: int = 0
    busy_s: float = 0.0  # summed worker time on generated episodes (per-core throughput)
    wall_s: float = 0.0
    t_env: float = 0.0  # env construction (once per task and worker), not in busy_s
    cpu_s: float = 0.0  # CPU seconds spent on those episodes (robust to other load on the machine)
    t_sim: float = 0.0
    t_tracks: float = 0.0
    t_write: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """The summary as a JSON-able dict (first 10 errors; throughput in env steps per core-second)."""
        return {
            "episodes_written": self.done, "episodes_skipped": self.skipped, "episodes_failed": self.failed,
            "errors": self.errors[:10], "env_steps": self.steps, "wall_s": round(self.wall_s, 2),
            "worker_busy_s": round(self.busy_s, 2),
            "steps_per_s_per_core": round(self.steps / self.busy_s, 2) if self.busy_s > 0 else None,
            "steps_per_cpu_s": round(self.steps / self.cpu_s, 2) if self.cpu_s > 0 else None,
            "time_split_s": {"env_setup": round(self.t_env, 2), "sim_render": round(self.t_sim, 2),
                             "tracks": round(self.t_tracks, 2), "write": round(self.t_write, 2)},
        }


def generate(
    specs: list[tuple[DomainSpec, str]],
    workers: int = 1,
    shard: tuple[int, int] = (0, 1),
    retry_failed: bool = False,
    progress: bool = True,
    verify: bool = False,
) -> RunSummary:
    """Generate every (domain spec, output dir) pair; resumable, shardable, parallel over processes.

    Each folder is locked per shard, records its generation settings (a rerun with other settings
    is refused naming the keys; only `episodes` may grow) and loses the temporaries a killed run
    left for this shard's episodes. `verify` reads every dataset of the finished episodes, so a
    damaged one is generated again.
    """
    if workers <= 0:
        raise ValueError(f"--workers must be positive, got {workers!r}")
    items = work_items(specs, shard)
    with dataset_folders(specs, items, shard, GENERATOR_VERSION):
        return generate_items(specs, items, workers, retry_failed, progress, verify, generate_episode,
                              lambda it: instruction(it.task))


@contextlib.contextmanager
def dataset_folders(specs: list[tuple[Any, str]], items: list, shard: tuple[int, int], generator_version: str):
    """Hold every output folder of `specs` for this shard while generating (trajmoe.data.folders): writable,
    locked, its generation settings (the spec dataclass + `generator_version`) recorded or checked, this
    shard's temporaries of a killed run removed. PermissionError / ValueError (one line) otherwise."""
    for _spec, out in specs:
        _check_writable(Path(out))
    with contextlib.ExitStack() as locks:
        for spec, out in specs:
            stems = {it.path.parent: set() for it in items if it.out_dir == out}
            for it in items:
                if it.out_dir == out:
                    stems[it.path.parent].add(it.path.stem)
            settings = {**to_dict(spec), "generator_version": generator_version}
            locks.enter_context(prepare_dataset_folder(Path(out), settings, shard, stems))
        yield


def generate_items(specs: list[tuple[Any, str]], items: list, workers: int, retry_failed: bool, progress: bool,
                   verify: bool, episode_fn: Any, instruction_of: Any) -> RunSummary:
    """Generate the work `items` not done yet (the shared loop of every simulator's generator).

    An item (trajmoe.data.specs.WorkItem or alike) has `spec`, `task`, `index`, `out_dir`, `path`,
    `failed_path`; `episode_fn(item, task_emb, instruction) -> record` is a module-level function (it
    travels to spawned workers) writing one episode; `instruction_of(item) -> str` (a function of the
    item's task) is called here, once per task, and the instructions are embedded in one batch.
    Finished episodes (and known failures unless `retry_failed`) are skipped; every spec's folder gets
    its manifest rebuilt at the end. Caller holds the folder locks (`prepare_dataset_folder`).
    """
    todo, summary = [], RunSummary()
    for it in items:
        if _is_done(it.path, verify) or (it.failed_path.exists() and not retry_failed):
            summary.skipped += 1
        else:
            todo.append(it)
    first = {}
    for it in todo:
        first.setdefault(it.task, it)
    tasks = sorted(first)
    texts = {t: instruction_of(first[t]) for t in tasks}  # an instruction is a function of the task
    embs = dict(zip(tasks, embed_texts([texts[t] for t in tasks]))) if tasks else {}
    args = [(episode_fn, it, embs[it.task], texts[it.task]) for it in todo]
    t0 = time.perf_counter()
    for res in _map(args, workers, progress, total=len(todo)):
        summary.steps += int(res.get("steps", 0))
        if res["status"] in ("ok", "kept_failed"):
            summary.done += 1
        elif res["status"] == "failed":
            summary.failed += 1
        else:
            summary.errors.append(f"{res['domain']}/{res['task']}/demo_{res['index']}: {res.get('error')}")
        for k in ("t_env", "t_sim", "t_tracks", "t_write", "cpu_s"):
            setattr(summary, k, getattr(summary, k) + float(res.get(k, 0.0)))
    summary.busy_s = summary.t_sim + summary.t_tracks + summary.t_write
    summary.wall_s = time.perf_counter() - t0
    for spec, out in specs:
        write_manifest(Path(out), spec, getattr(spec, "generator_version", GENERATOR_VERSION))
    return summary


def _check_writable(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise PermissionError(f"cannot create output directory {out}: {e.strerror}") from None
    if not os.access(out, os.W_OK):
        raise PermissionError(f"output directory is not writable: {out}")


def _is_done(path: Path, verify: bool = False) -> bool:
    return path.is_file() and is_complete_episode(path, verify)


def _map(args: list, workers: int, progress: bool, total: int):
    cols = [TextColumn("episodes"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn()]
    with Progress(*cols, disable=not progress, transient=False) as bar:
        job = bar.add_task("episodes", total=total)
        n = 1 if total <= 1 else min(workers, total)
        if n == 1:
            _worker_init()
        with worker_pool(n, initializer=_pool_worker_init) as imap:
            for results in imap(_run_chunk, _chunks(args, workers) if n > 1 else [[a] for a in args], ordered=False):
                for res in results:
                    bar.advance(job)
                    yield res


def write_manifest(out: Path, spec: Any = None, generator_version: str = GENERATOR_VERSION) -> dict[str, Any]:
    """Rebuild `out/manifest.json` from the episode files and failure markers present (`spec`: the
    generating spec dataclass, recorded as is; LIBERO episodes also list their scene: init_state,
    scene_seed, source)."""
    episodes, failed = [], []
    for p in sorted(out.glob("*/demo_*.hdf5"), key=_natural_key):
        if p.name.startswith(".") or p.parent.name.startswith("."):
            continue
        try:
            with open_episode(p) as ep:
                a = ep.meta.attrs
                episodes.append({
                    "path": str(p.relative_to(out)), "task": ep.meta.task, "domain": ep.meta.domain,
                    "camera": a.get("camera"), "views": list(ep.meta.views), "length": ep.meta.length,
                    "success": ep.meta.success, "action_free": not ep.meta.has_actions,
                    "variation": a.get("variation"), "seed": a.get("seed"), "visual_seed": a.get("visual_seed"),
                    **{k: a[k] for k in ("source", "init_state", "scene_seed", "demo") if k in a},
                })
        except ValueError:
            continue  # an unreadable file is not listed; rerunning generation rewrites it
    for p in sorted(out.glob("*/demo_*.failed.json"), key=_natural_key):
        if p.parent.name.startswith("."):
            continue
        rec = read_json(p)
        failed.append(dict(rec, path=str(p.relative_to(out))))
    manifest = {
        "format": "trajmoe-episodes",
        "generator_version": generator_version,
        "domain": spec.name if spec else None,
        "spec": to_dict(spec) if spec else None,
        "num_episodes": len(episodes),
        "num_steps": int(sum(e["length"] for e in episodes)),
        "episodes": episodes,
        "failed": failed,
    }
    atomic_write_json(out / MANIFEST, manifest)
    return manifest


def _natural_key(p: Path) -> tuple:
    return tuple(int(s) if s.isdigit() else s for s in re.split(r"(\d+)", str(p)))
