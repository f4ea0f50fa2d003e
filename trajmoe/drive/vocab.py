"""Trajectory vocabulary (GTRS): k-means over 4 s futures, and per-scene scores as training targets.

Samples. The experts' futures of the training scenes, plus (by default) every fully observed,
moving agent future of those scenes expressed in that agent's own frame at t0: they are real
simulated IDM/MOBIL trajectories too, and give ~10x more samples than the experts alone (GTRS
clusters ~100k human futures into 8192; a few thousand scenes would leave most clusters with one
or two members).

k-means: features are the 40 (x, y) positions plus heading x 5 m/rad, clustered by scikit-learn's
KMeans (k-means++ initialisation, Lloyd iterations); cluster poses are member means (heading by
circular mean).
"""

from __future__ import annotations

import numpy as np
from sklearn.cluster import KMeans

from trajmoe.drive import geometry as geo
from trajmoe.drive.metrics import TARGET_METRICS, score_in_chunks
from trajmoe.parallel import worker_pool

HEADING_SCALE = 5.0  # m per rad in the clustering features


def scene_trajectory_samples(scene: dict, use_agents: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """One scene's k-means samples: its expert future (40, 3) and (A, 40, 3) agent futures (A >= 0;
    fully observed, moving, non-static agents, each in its own frame at t0); x, y in m, heading in rad."""
    agents = []
    if use_agents:
        for a, fut, ok, static in zip(scene["agents"], scene["agents_future"], scene["agents_future_valid"],
                                      scene["agents_static"]):
            if static or not ok.all() or np.hypot(a[3], a[4]) < 0.5:
                continue
            xy, h = geo.to_frame(fut[:, :2], fut[:, 2], np.array([a[0], a[1], a[2]], np.float64))
            agents.append(np.concatenate([xy, h[:, None]], -1))
    agents_A403 = np.stack(agents) if agents else np.zeros((0, 40, 3))
    return scene["expert"].astype(np.float64), agents_A403


def join_samples(experts: list[np.ndarray], agents: list[np.ndarray]) -> np.ndarray:
    """Per-scene `scene_trajectory_samples` -> (N, 40, 3): every expert first, then every agent future,
    in scene order (the order k-means sees, so streaming and in-memory runs build the same vocabulary)."""
    return np.concatenate([np.stack(experts), *[a for a in agents if len(a)]], 0)


def trajectory_samples(scenes: list[dict], use_agents: bool = True) -> np.ndarray:
    """(N, 40, 3) futures in their own start frame: experts (+ agents); see `join_samples` for the order."""
    parts = [scene_trajectory_samples(s, use_agents) for s in scenes]
    return join_samples([e for e, _ in parts], [a for _, a in parts])


def _features(traj_N403: np.ndarray) -> np.ndarray:
    """(N, 40, 3) -> (N, 120) clustering features: the 80 (x, y) in m, then heading x HEADING_SCALE."""
    return np.concatenate([traj_N403[..., :2].reshape(len(traj_N403), -1), HEADING_SCALE * traj_N403[..., 2]], axis=1)


def kmeans_vocab(samples: np.ndarray, size: int, iters: int = 30, seed: int = 0) -> np.ndarray:
    """(N, 40, 3) trajectories (x, y in m, heading in rad) -> (size, 40, 3) float32 vocabulary.

    scikit-learn's KMeans (k-means++ seeding, one run of at most `iters` Lloyd iterations, seeded
    by `seed`) over `_features`, as GTRS clusters its vocabulary; each cluster's poses are then the
    member means (heading by circular mean). Raises ValueError when `size` is outside [2, 65536]
    or exceeds the number of samples.
    """
    if not 2 <= size <= 65536:
        raise ValueError(f"vocabulary size must be in [2, 65536], got {size}")
    n = len(samples)
    if n < size:
        raise ValueError(f"vocabulary size {size} exceeds the {n} trajectory samples available; use fewer or more scenes")
    traj = np.asarray(samples, np.float64)
    km = KMeans(n_clusters=size, init="k-means++", n_init=1, max_iter=max(iters, 1), random_state=seed)
    assign = km.fit_predict(_features(traj))  # (N,)
    counts = np.bincount(assign, minlength=size)
    denom = np.maximum(counts, 1)[:, None]
    pos = np.stack([np.bincount(assign, traj[:, t, c], size) for t in range(40) for c in range(2)], 1) / denom
    sin = np.stack([np.bincount(assign, np.sin(traj[:, t, 2]), size) for t in range(40)], 1) / denom
    cos = np.stack([np.bincount(assign, np.cos(traj[:, t, 2]), size) for t in range(40)], 1) / denom
    vocab = np.concatenate([pos.reshape(size, 40, 2), np.arctan2(sin, cos)[..., None]], -1)
    centres = km.cluster_centers_  # a cluster left without members keeps its centre
    centre_traj = np.concatenate([centres[:, :80].reshape(size, 40, 2), centres[:, 80:, None] / HEADING_SCALE], -1)
    return np.where(counts[:, None, None] > 0, vocab, centre_traj).astype(np.float32)


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
    with worker_pool(workers) as imap, Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task("scoring vocabulary", total=len(jobs))
        for t in imap(_targets_job, jobs, chunksize=4):
            out.append(t)
            bar.advance(task)
    return np.stack(out) if out else np.zeros((0, len(vocab), len(TARGET_METRICS)), np.float32)
