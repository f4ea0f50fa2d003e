"""Closed-loop MetaWorld evaluation of a trained policy on held-out task variations.

Episode e of task k runs on variation EVAL_VARIATION_START + first + e (never used by data
generation, see trajmoe.envs.metaworld), with the task's episode limit (or --max-steps), the
scene camera and image size of the training data. Success = MetaWorld's `success` flag at any
step (the episode ends there). Worker processes (spawn) each load the policy once and run whole
episodes with one torch thread; results do not depend on the number of workers (each episode is
a pure function of its task, variation and the weights). Success rates come with Wilson 95 %
intervals (trajmoe.eval.stats), per task and overall, beside the trivial baseline on the same
episodes (`baseline`: the arm holds still, action 0, until the limit); `oracle` policies get the exact grid
tracks of a scripted-expert lookahead at every step (trajmoe.envs.oracle; its median cost per step
is reported as `oracle_ms`, apart from the policy's `latency_ms`).

Videos: `video_dir/<task>_v<variation>.mp4` (or `.gif` with video_format="gif", for a markdown
report), every view side by side, upscaled 2x, with the tracks the frozen track model predicted at
that step drawn on the frame by `trajmoe.viz.tracks.draw_tracks_on_frame` (a polyline per point,
coloured by the point's position at t=0, the point itself a dot).
"""

from __future__ import annotations

import os
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
import warnings

import numpy as np
from rich.progress import Progress

from ..parallel import worker_pool
from ..viz.tracks import draw_tracks_on_frame
from ..viz.video import VIDEO_FORMATS, write_video
from ..data.language import task_embedding
from ..envs.metaworld import EVAL_VARIATION_START, check_task, make_eval_env
from ..envs.oracle import ExpertLookahead, oracle_tracks
from ..eval.stats import success_summary

_STATE: dict = {}


@dataclass(frozen=True)
class Job:
    """One evaluation episode: MetaWorld task, held-out variation, and the video path to write (None = no video)."""
    task: str
    variation: int
    video: str | None


def _init_worker(run_dir: str, track_run: str | None, device: str, threads: int) -> None:
    os.environ.setdefault("MUJOCO_GL", "egl")
    # lazy: spawned workers set threads and MUJOCO_GL before torch loads
    import torch

    torch.set_num_threads(threads)
    # lazy: spawned workers set threads and MUJOCO_GL before torch loads
    from ..train.checkpoint import read_tensors
    from .io import load_policy
    from .train import TASK_EMB_FILE

    policy, run_cfg = load_policy(run_dir, device=device, track_run=track_run)
    path = Path(run_dir) / TASK_EMB_FILE
    _STATE.update(policy=policy, run_config=run_cfg, embs={k: v.numpy() for k, v in read_tensors(path).items()} if path.is_file() else {})


def _task_emb(task: str) -> np.ndarray:
    embs = _STATE["embs"]
    if task not in embs:
        embs[task] = np.asarray(task_embedding(task), np.float32)
    return embs[task]


def run_episode(job: Job, max_steps: int | None = None) -> dict:
    """One closed-loop episode in this process (after _init_worker)."""
    policy = _STATE["policy"]
    env_cfg = _STATE["run_config"].get("env", {})
    cfg = policy.cfg
    frames = [] if job.video else None
    latencies, oracle_ms = [], []
    oracle = cfg.conditioning == "oracle"
    lookahead = None
    with make_eval_env(job.task, job.variation, camera=env_cfg.get("camera", "corner"), views=tuple(cfg.views),
                       image_size=cfg.img_size, max_steps=max_steps, with_depth=oracle) as env:
        obs = env.reset()
        policy.reset(task_emb=_task_emb(job.task))
        if oracle:
            lookahead = ExpertLookahead(env)
        success, done, steps = False, False, 0
        while not done:
            if oracle:  # exact grid tracks from a lookahead copy of the simulator (the env is not stepped)

                t0 = time.perf_counter()
                obs["oracle_tracks"] = oracle_tracks(env, lookahead, (cfg.num_points,), cfg.track_len,
                                                     depth=obs["depth"])[cfg.num_points]
                oracle_ms.append((time.perf_counter() - t0) * 1e3)
            t0 = time.perf_counter()
            action = policy.select_action(obs)
            latencies.append((time.perf_counter() - t0) * 1e3)
            if frames is not None:
                views = [obs["rgb"][v] for v in cfg.views]
                if policy.last_tracks is not None:
                    views = [draw_tracks_on_frame(im, tr, np.ones(tr.shape[1], bool), scale=2)
                             for im, tr in zip(views, policy.last_tracks)]
                else:
                    views = [np.repeat(np.repeat(im, 2, 0), 2, 1) for im in views]
                frames.append(np.concatenate(views, axis=1))
            obs, _, success, done = env.step(action)
            steps += 1
        limit = env.episode_limit
        if lookahead is not None:
            lookahead.close()
    if frames is not None:
        write_video(job.video, frames, fps=20)
    return {"task": job.task, "variation": job.variation, "success": bool(success), "length": steps,
            "limit": limit, "latency_ms": statistics.median(latencies),
            "oracle_ms": statistics.median(oracle_ms) if oracle_ms else 0.0, "video": job.video}


def zero_action_success(task: str, variation: int, max_steps: int | None = None) -> bool:
    """The trivial baseline on one held-out episode: the arm holds still (action 0) until the
    episode limit; MetaWorld's success flag at any step. Physics only (nothing looks at images)."""
    with make_eval_env(task, variation, max_steps=max_steps, views=("agentview",)) as env:
        env.reset()
        zero = np.zeros(4, np.float32)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for _ in range(env.episode_limit):
                if env.env.step(zero)[4].get("success"):
                    return True
    return False


def _run_job(args: tuple[Job, int | None]) -> dict:
    return run_episode(*args)


def evaluate_policy(run_dir: str, tasks: list[str] | None = None, episodes: int = 10, workers: int = 2,
                    video_dir: str | None = None, video_per_task: int = 1, max_steps: int | None = None,
                    device: str = "cpu", track_run: str | None = None, first_variation: int = 0,
                    progress: bool = True, video_format: str = "mp4") -> dict:
    """Closed-loop success of the policy in `run_dir` on `episodes` held-out variations per task,
    beside the zero-action baseline on the same episodes (module doc). Bad arguments raise a
    one-line ValueError (FileNotFoundError for a missing run folder)."""
    run_path = Path(run_dir)
    run_cfg, tasks = _check_eval_args(run_path, tasks, episodes, workers, video_format, first_variation)
    first = EVAL_VARIATION_START + first_variation
    jobs = [Job(task, first + e, str(Path(video_dir) / f"{task}_v{first + e}.{video_format}")
                if video_dir and e < video_per_task else None)
            for task in tasks for e in range(episodes)]
    jobs.sort(key=lambda j: (j.variation, j.task))  # interleave tasks so every worker gets a mix
    workers = min(workers, len(jobs))
    t0 = time.perf_counter()
    results = _run_jobs(jobs, workers, (str(run_path), track_run, device), max_steps, progress)
    wall = time.perf_counter() - t0
    return {
        "run": str(run_path), "conditioning": run_cfg["model"]["conditioning"],
        **_success_table(results, tasks),
        "mean_length": sum(r["length"] for r in results) / len(results),
        "episodes": len(results), "episodes_per_task": episodes,
        "variations": [first, first + episodes - 1],
        "latency_ms": statistics.median(r["latency_ms"] for r in results),
        "oracle_ms": statistics.median(r["oracle_ms"] for r in results),
        "workers": workers, "wall_s": wall,
        "videos": [r["video"] for r in results if r["video"]],
        "baseline": _zero_action_baseline(jobs, tasks, episodes, max_steps),
    }


def _check_eval_args(run_path: Path, tasks: list[str] | None, episodes: int, workers: int, video_format: str,
                     first_variation: int) -> tuple[dict, list[str]]:
    """(the run's config.json, the tasks to evaluate), or a one-line error naming the bad argument."""
    # lazy: spawned workers set threads and MUJOCO_GL before torch loads
    from ..train.checkpoint import load_run_config

    if not run_path.is_dir():
        raise FileNotFoundError(f"policy run directory not found: {run_path}")
    run_cfg = load_run_config(run_path)
    if run_cfg.get("kind") != "policy":
        raise ValueError(f"{run_path} is not a policy run (config.json has kind={run_cfg.get('kind')!r})")
    tasks = list(tasks or run_cfg.get("tasks") or [])
    if not tasks:
        raise ValueError("no tasks to evaluate: pass --tasks")
    for t in tasks:
        check_task(t)
    if episodes < 1:
        raise ValueError(f"--episodes must be >= 1, got {episodes}")
    if workers < 1:
        raise ValueError(f"--workers must be >= 1, got {workers}")
    if video_format not in VIDEO_FORMATS:
        raise ValueError(f"--video-format must be one of {', '.join(VIDEO_FORMATS)}, got {video_format!r}")
    if first_variation < 0:
        raise ValueError(f"--first-variation must be >= 0, got {first_variation}")
    return run_cfg, tasks


def _run_jobs(jobs: list[Job], workers: int, load_args: tuple, max_steps: int | None, progress: bool) -> list[dict]:
    """Every episode, on `workers` spawned processes (one torch thread each) or in this process."""
    import torch  # lazy like the rest of this module: spawned workers set their environment first

    init_args = (*load_args, 1 if workers > 1 else max(1, os.cpu_count() or 1))
    threads_before = torch.get_num_threads()  # the in-process path sets torch's threads: put them back after
    results = []
    bar = None
    if progress:
        bar = Progress(transient=True)
        bar.start()
        task_id = bar.add_task("rollouts", total=len(jobs))
    try:
        if workers == 1:
            _init_worker(*init_args)
        with worker_pool(workers, initializer=_init_worker, initargs=init_args) as imap:
            for r in imap(_run_job, [(j, max_steps) for j in jobs], ordered=False):
                results.append(r)
                if bar:
                    bar.advance(task_id)
    finally:
        torch.set_num_threads(threads_before)
        if bar:
            bar.stop()
    return results


def _success_table(results: list[dict], tasks: list[str]) -> dict:
    """Per-task and overall success with Wilson 95% intervals."""
    per_task = {}
    for task in tasks:
        rs = [r for r in results if r["task"] == task]
        per_task[task] = dict(success_summary(sum(r["success"] for r in rs), len(rs)),
                              mean_length=sum(r["length"] for r in rs) / len(rs), limit=rs[0]["limit"])
    overall = success_summary(sum(r["success"] for r in results), len(results))
    return {"tasks": per_task, "success_rate": overall["success_rate"], "successes": overall["successes"],
            "ci95": overall["ci95"]}


def _zero_action_baseline(jobs: list[Job], tasks: list[str], episodes: int, max_steps: int | None) -> dict:
    """The trivial baseline on the same episodes (zero action), with the same intervals."""
    zero = {(j.task, j.variation): zero_action_success(j.task, j.variation, max_steps) for j in jobs}
    baseline = {"policy": "zero action", "tasks": {
        t: success_summary(sum(v for (tt, _), v in zero.items() if tt == t), episodes) for t in tasks}}
    baseline.update(success_summary(sum(zero.values()), len(zero)))
    return baseline
