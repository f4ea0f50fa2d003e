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

LIBERO (`evaluate_libero`, `trajmoe eval policy --suite`, the optional `libero` extra): the same
workers, intervals, baseline and videos on a LIBERO suite under ATM's protocol (trajmoe.envs.libero:
the benchmark's init states, horizon 600, success latched), the task embedding the policy was trained
with (refused when the run has none), ATM's per-suite CSV; videos `<suite>_<task>_init<k>.mp4`.

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
from ..config import check_run_kind
from ..eval.stats import success_summary

_STATE: dict = {}


@dataclass(frozen=True)
class Job:
    """One evaluation episode: task, held-out variation (LIBERO: the init-state index), the video path
    to write (None = no video), the LIBERO suite (None = MetaWorld) and whether it is the zero-action
    baseline's episode rather than the policy's."""
    task: str
    variation: int
    video: str | None
    suite: str | None = None
    baseline: bool = False


def _init_worker(run_dir: str, track_run: str | None, device: str, threads: int) -> None:
    os.environ.setdefault("MUJOCO_GL", "egl")
    # lazy: spawned workers set threads and MUJOCO_GL before torch loads
    import torch

    torch.set_num_threads(threads)
    # lazy: spawned workers set threads and MUJOCO_GL before torch loads
    from ..train.checkpoint import read_tensors
    from .io import from_run
    from .train import TASK_EMB_FILE

    policy, run_cfg = from_run(run_dir, device=device, track_run=track_run)
    path = Path(run_dir) / TASK_EMB_FILE
    _STATE.update(policy=policy, run_config=run_cfg, embs={k: v.numpy() for k, v in read_tensors(path).items()} if path.is_file() else {})


def _task_emb(task: str) -> np.ndarray:
    embs = _STATE["embs"]
    if task not in embs:
        embs[task] = np.asarray(task_embedding(task), np.float32)
    return embs[task]


def run_episode(job: Job, max_steps: int | None = None) -> dict:
    """One closed-loop episode in this process (after _init_worker)."""
    if job.suite is not None:
        return run_libero_episode(job, max_steps)
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
                frames.append(_video_frame(obs, policy))
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


def _video_frame(obs: dict, policy) -> np.ndarray:
    """Every view side by side, upscaled 2x, with the tracks predicted at this step drawn on it."""
    views = [obs["rgb"][v] for v in policy.cfg.views]
    if policy.last_tracks is not None:
        views = [draw_tracks_on_frame(im, tr, np.ones(tr.shape[1], bool), scale=2)
                 for im, tr in zip(views, policy.last_tracks)]
    else:
        views = [np.repeat(np.repeat(im, 2, 0), 2, 1) for im in views]
    return np.concatenate(views, axis=1)


def _libero_env(job: Job, image_size: int, views: tuple[str, ...], max_steps: int | None):
    """This worker's LIBERO env for the job's task, kept between episodes of the same task (building
    one costs seconds); the previous task's env is closed first, so a worker holds at most one."""
    from ..envs.libero import LiberoEnv  # lazy: the optional `libero` extra

    key = (job.suite, job.task, image_size, views, max_steps, not job.baseline)
    cached = _STATE.get("libero_env")
    if cached is not None and cached[0] == key:
        return cached[1]
    close_cached_env()
    env = LiberoEnv(job.suite, job.task, image_size=image_size, views=views, max_steps=max_steps,
                    render=not job.baseline)
    _STATE["libero_env"] = (key, env)
    return env


def close_cached_env() -> None:
    """Close the LIBERO env this process keeps between episodes (if any)."""
    cached = _STATE.pop("libero_env", None)
    if cached is not None:
        cached[1].close()


def run_libero_episode(job: Job, max_steps: int | None = None) -> dict:
    """One LIBERO episode (trajmoe.envs.libero's protocol) in this process (after _init_worker): the
    policy's, or with job.baseline the zero-action baseline's (arm still, gripper open; no cameras)."""
    from ..envs.libero import SETTLE_ACTION  # lazy: the optional `libero` extra

    policy = _STATE["policy"]
    cfg = policy.cfg
    t0 = time.perf_counter()
    env = _libero_env(job, cfg.img_size, tuple(cfg.views), max_steps)
    build_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    obs = env.reset(init_state=job.variation)
    reset_s = time.perf_counter() - t0
    frames = [] if job.video else None
    latencies: list[float] = []
    if not job.baseline:
        policy.reset(task_emb=_STATE["embs"][libero_emb_key(_STATE["embs"], job.task)])
    success, done, steps = False, False, 0
    t0 = time.perf_counter()
    while not done:
        if job.baseline:
            action = SETTLE_ACTION
        else:
            t1 = time.perf_counter()
            action = policy.select_action(obs)
            latencies.append((time.perf_counter() - t1) * 1e3)
            if frames is not None:
                frames.append(_video_frame(obs, policy))
        obs, _, success, done = env.step(action)
        steps += 1
    step_s = time.perf_counter() - t0
    if frames is not None:
        write_video(job.video, frames, fps=20)
    return {"task": job.task, "variation": job.variation, "success": bool(success), "length": steps,
            "limit": env.episode_limit, "latency_ms": statistics.median(latencies) if latencies else 0.0,
            "oracle_ms": 0.0, "video": job.video, "baseline": job.baseline, "suite": job.suite,
            "build_s": build_s, "reset_s": reset_s, "episode_s": step_s, "steps_per_s": steps / max(step_s, 1e-9)}


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
    check_run_kind(run_cfg, "policy", str(run_path))
    tasks = list(tasks or run_cfg.get("tasks") or [])
    if not tasks:
        raise ValueError("no tasks to evaluate: pass --tasks")
    for t in tasks:
        try:
            check_task(t)
        except ValueError as e:
            raise ValueError(f"{e} (LIBERO tasks: pass --suite)") from None
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
        close_cached_env()  # the in-process path's LIBERO env (workers' close with their process)
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


# ---------------------------------------------------------------------------------------------
# LIBERO (the optional `libero` extra; protocol in trajmoe.envs.libero)

SUMMARY_CSV = "summary_{suite}.csv"  # ATM's per-suite file name (engine/eval_mv_bc.py)
TASKS_CSV = "tasks_{suite}.csv"      # ours: per task, with intervals and the baseline


def evaluate_libero(run_dir: str, suite: str, tasks: list[str] | None = None, episodes: int = 20, workers: int = 2,
                    video_dir: str | None = None, video_per_task: int = 1, max_steps: int | None = None,
                    device: str = "cpu", track_run: str | None = None, first_trial: int = 0, progress: bool = True,
                    video_format: str = "mp4", results_dir: str | None = None, baseline: bool = True) -> dict:
    """Closed-loop success of the policy in `run_dir` on LIBERO `suite` (all its tasks, or `tasks`:
    names or indices), trials first_trial.. first_trial + episodes - 1 per task on the benchmark's
    init states (trajmoe.envs.libero.trial_init_state), beside the zero-action baseline on the same
    init states; per-task and overall Wilson intervals. Writes ATM's per-suite CSV
    (`summary_<suite>.csv`: columns epoch, success_env<i> over the tasks in sorted name order,
    success_env_avg) and ours (`tasks_<suite>.csv`) to `results_dir` (default RUN/eval_results).
    Bad arguments, a policy that does not fit LIBERO (action/proprio/view/embedding) or a missing
    extra raise a one-line ValueError."""
    from ..envs.libero import ACTION_DIM, PROPRIO_DIM, VIEWS, check_suite, require_libero, trial_init_state
    from ..train.checkpoint import load_run_config

    run_path = Path(run_dir)
    check_suite(suite)
    require_libero()  # the missing extra first, in one line
    if not run_path.is_dir():
        raise FileNotFoundError(f"policy run directory not found: {run_path}")
    run_cfg = load_run_config(run_path)
    check_run_kind(run_cfg, "policy", str(run_path))
    model = run_cfg["model"]
    _check_libero_policy(run_path, model, ACTION_DIM, PROPRIO_DIM, VIEWS)
    if workers < 1:
        raise ValueError(f"--workers must be >= 1, got {workers}")
    if video_format not in VIDEO_FORMATS:
        raise ValueError(f"--video-format must be one of {', '.join(VIDEO_FORMATS)}, got {video_format!r}")
    if episodes < 1 or first_trial < 0:
        raise ValueError(f"--episodes must be >= 1 and --first-variation >= 0, got {episodes}, {first_trial}")
    trial_init_state(first_trial + episodes - 1)  # one-line error beyond the benchmark's 50 init states
    tasks = _libero_tasks(run_path, run_cfg, suite, tasks)
    jobs = _libero_jobs(suite, tasks, range(first_trial, first_trial + episodes), video_dir, video_per_task,
                        video_format, baseline)
    workers = min(workers, len(jobs))
    t0 = time.perf_counter()
    results = _run_jobs(jobs, workers, (str(run_path), track_run, device), max_steps, progress)
    wall = time.perf_counter() - t0
    pol = [r for r in results if not r["baseline"]]
    base = [r for r in results if r["baseline"]]
    res = {
        "run": str(run_path), "conditioning": model["conditioning"], "suite": suite,
        **_success_table(pol, tasks),
        "mean_length": sum(r["length"] for r in pol) / len(pol),
        "episodes": len(pol), "episodes_per_task": episodes, "trials": [first_trial, first_trial + episodes - 1],
        "init_states": {t: [j.variation for j in jobs if j.task == t and not j.baseline] for t in tasks},
        "latency_ms": statistics.median(r["latency_ms"] for r in pol), "oracle_ms": 0.0,
        "workers": workers, "wall_s": wall,
        "timing": {k: statistics.median(r[k] for r in pol) for k in ("build_s", "reset_s", "episode_s", "steps_per_s")},
        "videos": [r["video"] for r in pol if r["video"]],
    }
    if baseline:
        res["baseline"] = _zero_action_summary(base, tasks, episodes)
    res["csv"] = _write_libero_csv(res, Path(results_dir) if results_dir else run_path / "eval_results")
    return res


def _libero_jobs(suite: str, tasks: list[str], trials: range, video_dir: str | None, video_per_task: int,
                 ext: str, baseline: bool) -> list[Job]:
    """The policy's episodes: each task on each trial's init state (a video of the first `video_per_task`
    trials in `video_dir`), then the zero-action baseline's on the same states; grouped by task."""
    from ..envs.libero import trial_init_state

    jobs = [Job(t, trial_init_state(e), str(Path(video_dir) / f"{suite}_{t}_init{trial_init_state(e)}.{ext}")
                if video_dir and e - trials.start < video_per_task else None, suite=suite)
            for t in tasks for e in trials]
    if baseline:
        jobs += [Job(t, trial_init_state(e), None, suite=suite, baseline=True) for t in tasks for e in trials]
    jobs.sort(key=lambda j: (j.task, j.baseline, j.variation))  # a worker keeps one env per task: group them
    return jobs


def _zero_action_summary(base: list[dict], tasks: list[str], episodes: int) -> dict:
    """Per-task and overall success (Wilson 95 %) of the zero-action baseline's episodes."""
    b = {"policy": "zero action (gripper open)", "tasks": {
        t: success_summary(sum(r["success"] for r in base if r["task"] == t), episodes) for t in tasks}}
    b.update(success_summary(sum(r["success"] for r in base), len(base)))
    b["steps_per_s"] = statistics.median(r["steps_per_s"] for r in base)
    return b


def _libero_tasks(run_path: Path, run_cfg: dict, suite: str, tasks: list[str] | None) -> list[str]:
    """The LIBERO tasks to evaluate (given: names or indices; default: the suite's tasks the run was trained
    on, or all), each checked to have a task embedding of the policy's size in the run."""
    from ..envs.libero import resolve_tasks, suite_tasks
    from ..train.checkpoint import read_tensors
    from .train import TASK_EMB_FILE

    if tasks is None:
        trained = {t.removesuffix("_demo") for t in run_cfg.get("tasks") or []}
        names = suite_tasks(suite)
        tasks = names if trained >= set(names) or not trained & set(names) else [t for t in names if t in trained]
    else:
        tasks = resolve_tasks(suite, tasks)
    emb_path = run_path / TASK_EMB_FILE
    embs = read_tensors(emb_path) if emb_path.is_file() else {}
    missing = [t for t in tasks if libero_emb_key(embs, t) is None]
    if missing:
        have = ", ".join(sorted(embs)) or "none"
        raise ValueError(f"{run_path} has no task embedding for {suite} task(s) {', '.join(missing)}: LIBERO evaluation uses "
                         f"the embedding the policy was trained with (from its data, e.g. ATM's task_emb_bert); "
                         f"the run has: {have}. Pass --tasks with tasks it was trained on")
    for t in tasks:
        shape = tuple(embs[libero_emb_key(embs, t)].shape)
        if shape != (run_cfg["model"]["lang_dim"],):
            raise ValueError(f"{emb_path}: embedding of {t} has shape {shape}, the policy's lang_dim is {run_cfg['model']['lang_dim']}")
    return tasks


def libero_emb_key(embs: dict, task: str) -> str | None:
    """The key of LIBERO task `task` among a run's task embeddings: the task name, or ATM's folder
    name `<task>_demo` (what a policy trained on ATM's preprocessed files recorded); None if absent."""
    return next((k for k in (task, f"{task}_demo") if k in embs), None)


def _check_libero_policy(run_path: Path, model: dict, action_dim: int, proprio_dim: int, views: tuple[str, ...]) -> None:
    """One-line ValueError when the policy cannot act in LIBERO (action, proprioception, views, oracle)."""
    if model.get("conditioning") == "oracle":
        raise ValueError(f"{run_path}: oracle conditioning needs a MetaWorld lookahead expert; LIBERO has none")
    if model.get("action_dim") != action_dim:
        raise ValueError(f"{run_path}: the policy outputs {model.get('action_dim')}-D actions, LIBERO takes {action_dim}-D "
                         "(train it on LIBERO episodes, e.g. ATM's preprocessed files)")
    if model.get("proprio_dim") != proprio_dim:
        raise ValueError(f"{run_path}: the policy reads {model.get('proprio_dim')}-D proprioception, LIBERO gives "
                         f"{proprio_dim} (ee_pos 3 + gripper_states 2)")
    bad = [v for v in model.get("views", []) if v not in views]
    if bad:
        raise ValueError(f"{run_path}: the policy uses view(s) {', '.join(bad)}; LIBERO has {', '.join(views)}")


def _write_libero_csv(res: dict, out: Path) -> dict:
    """ATM's summary_<suite>.csv (one row; tasks as success_env<i> in sorted name order, the order
    ATM's scripts/eval_libero_policy.py lists its task folders) and our tasks_<suite>.csv."""
    import csv

    from ..io import atomic_path

    out.mkdir(parents=True, exist_ok=True)
    suite = res["suite"]
    ordered = sorted(res["tasks"])
    summary, per_task = out / SUMMARY_CSV.format(suite=suite), out / TASKS_CSV.format(suite=suite)
    with atomic_path(summary) as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["", "epoch", *[f"success_env{i}" for i in range(len(ordered))], "success_env_avg"])
        rates = [res["tasks"][t]["success_rate"] for t in ordered]
        w.writerow([0, "final", *rates, sum(rates) / len(rates)])
    base = res.get("baseline", {}).get("tasks", {})
    with atomic_path(per_task) as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["env", "task", "successes", "episodes", "success_rate", "ci95_low", "ci95_high", "mean_length",
                    "baseline_successes"])
        for i, t in enumerate(ordered):
            r = res["tasks"][t]
            w.writerow([i, t, r["successes"], r["episodes"], r["success_rate"], r["ci95"][0], r["ci95"][1],
                        r["mean_length"], base[t]["successes"] if t in base else ""])
    return {"summary": str(summary), "tasks": str(per_task)}
