"""Trajectory vocabulary (GTRS): k-means over 4 s futures, and per-scene scores as training targets.

Samples. The experts' futures of the training scenes, plus (by default) every fully observed,
moving agent future of those scenes expressed in that agent's own frame at t0: they are real
simulated IDM/MOBIL trajectories too, and give ~10x more samples than the experts alone (GTRS
clusters ~100k human futures into 8192; a few thousand scenes would leave most clusters with one
or two members).

k-means: features are the 40 (x, y) positions plus heading x 5 m/rad, k-means++ initialisation and
Lloyd iterations, vectorised in torch; cluster poses are member means (heading by circular mean).
"""

from __future__ import annotations

import numpy as np
import torch

from trajmoe.drive import geometry as geo
from trajmoe.drive.metrics import TARGET_METRICS, score_in_chunks

HEADING_SCALE = 5.0  # m per rad in the clustering features


def trajectory_samples(scenes: list[dict], use_agents: bool = True) -> np.ndarray:
    """(N, 40, 3) futures in their own start frame: experts (+ agents)."""
    out = [s["expert"].astype(np.float64) for s in scenes]
    if use_agents:
        for s in scenes:
            for a, fut, ok, static in zip(s["agents"], s["agents_future"], s["agents_future_valid"], s["agents_static"]):
                if static or not ok.all() or np.hypot(a[3], a[4]) < 0.5:
                    continue
                xy, h = geo.to_frame(fut[:, :2], fut[:, 2], np.array([a[0], a[1], a[2]], np.float64))
                out.append(np.concatenate([xy, h[:, None]], -1))
    return np.stack(out)


def _features(traj: torch.Tensor) -> torch.Tensor:
    return torch.cat([traj[..., :2].flatten(1), HEADING_SCALE * traj[..., 2]], dim=1)


def kmeans_vocab(samples: np.ndarray, size: int, iters: int = 30, seed: int = 0) -> np.ndarray:
    """k-means++ + Lloyd over (N, 40, 3) trajectories -> (size, 40, 3) vocabulary."""
    if not 2 <= size <= 65536:
        raise ValueError(f"vocabulary size must be in [2, 65536], got {size}")
    n = len(samples)
    if n < size:
        raise ValueError(f"vocabulary size {size} exceeds the {n} trajectory samples available; use fewer or more scenes")
    g = torch.Generator().manual_seed(seed)
    traj = torch.as_tensor(samples, dtype=torch.float32)
    x = _features(traj)  # (N, F)
    # k-means++ seeding.
    centres = torch.empty(size, x.shape[1])
    centres[0] = x[torch.randint(n, (1,), generator=g)]
    d2 = ((x - centres[0]) ** 2).sum(1)
    for k in range(1, size):
        idx = torch.multinomial(d2 + 1e-12, 1, generator=g)
        centres[k] = x[idx]
        d2 = torch.minimum(d2, ((x - centres[k]) ** 2).sum(1))
    for _ in range(iters):
        assign = torch.cdist(x, centres).argmin(1)  # (N,)
        counts = torch.bincount(assign, minlength=size).float()
        sums = torch.zeros_like(centres).index_add_(0, assign, x)
        empty = counts == 0
        centres = torch.where(empty[:, None], centres, sums / counts.clamp(min=1)[:, None])
    assign = torch.cdist(x, centres).argmin(1)
    counts = torch.bincount(assign, minlength=size).float().clamp(min=1)[:, None, None]
    pos = torch.zeros(size, 40, 2).index_add_(0, assign, traj[..., :2]) / counts
    sin = torch.zeros(size, 40).index_add_(0, assign, torch.sin(traj[..., 2])) / counts[..., 0]
    cos = torch.zeros(size, 40).index_add_(0, assign, torch.cos(traj[..., 2])) / counts[..., 0]
    # Clusters left empty keep their seed trajectory.
    used = torch.bincount(assign, minlength=size) > 0
    heading = torch.atan2(sin, cos)
    vocab = torch.cat([pos, heading[..., None]], -1)
    seed_traj = torch.cat([centres[:, :80].reshape(size, 40, 2), centres[:, 80:, None] / HEADING_SCALE], -1)
    vocab = torch.where(used[:, None, None], vocab, seed_traj)
    return vocab.numpy().astype(np.float32)


def scene_targets(scene: dict, vocab: np.ndarray) -> np.ndarray:
    """(V, len(TARGET_METRICS)) sub-scores of every vocabulary trajectory in `scene` (float32)."""
    sub = score_in_chunks(scene, vocab.astype(np.float64), chunk=512)
    return np.stack([sub[m] for m in TARGET_METRICS], -1).astype(np.float32)


def _targets_job(args):
    path, vocab = args
    from trajmoe.drive.scenes import load_scene

    return scene_targets(load_scene(path), vocab)


def precompute_targets(scene_paths: list[str], vocab: np.ndarray, workers: int = 1, progress: bool = True) -> np.ndarray:
    """(S, V, M) targets for every scene file; `workers` processes."""
    from rich.progress import Progress

    jobs = [(str(p), vocab) for p in scene_paths]
    out = []
    pool = None
    if workers > 1:
        import multiprocessing as mp

        pool = mp.get_context("spawn").Pool(workers)
    try:
        it = pool.imap(_targets_job, jobs, chunksize=4) if pool else map(_targets_job, jobs)
        with Progress(disable=not progress, transient=True) as bar:
            task = bar.add_task("scoring vocabulary", total=len(jobs))
            for t in it:
                out.append(t)
                bar.advance(task)
    finally:
        if pool is not None:
            pool.close()
            pool.join()
    return np.stack(out) if out else np.zeros((0, len(vocab), len(TARGET_METRICS)), np.float32)
