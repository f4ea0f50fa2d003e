"""Policy training samples from action-labelled episode files (ATM layout, trajmoe.data.atm_hdf5).

A sample is the frame-stack window ending at frame t of an episode: frames t-F+1 .. t of every
policy view, their proprioception and actions (the action taken AT each frame), the task
embedding, and `valid` (False for window slots before the episode start; those slots repeat
frame 0, as `TrajectoryPolicy.select_action` pads its queues). One sample per (episode, frame).

Augmentation (ATM's ColorJitter + RandomShift, Tab. 7): one draw per (sample, view), applied to
every frame of the window alike; randomness only from the rng the Trainer passes in.

Track cache (`PolicyDataConfig.track_cache`, measured in the note): the frozen track model's
predictions for every (episode, frame, view) are computed once before training
(`build_track_cache`, batched, with a progress bar), stored in the run directory as
`track_cache.safetensors` (reused by --resume when the track run and query grid match) and served
with each sample; under RandomShift the cached tracks are shifted with the image (the track model
sees un-shifted frames; an approximation). Without the cache the policy predicts the tracks of
every frame of every sample in its forward pass (F x V track-model calls per sample).

Oracle conditioning: the exact future tracks of the query grid stored in the episode files
(`root/<view>/oracle_tracks_<N>`, trajmoe.envs.oracle) are served in place of predictions, shifted
with the image under RandomShift like the cache.

Legend: T episode frames, F frame stack, V views, H/W image, Tt track timesteps, N points, A action,
P proprioception, L task-embedding size.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..data.augment import color_jitter, random_shift
from .config import PolicyConfig, PolicyDataConfig
from ..data.atm_hdf5 import open_episode
from ..data.datasets import iter_metas, list_episodes

CACHE_FILE = "track_cache.safetensors"


@dataclass
class PolicyEpisode:
    """One action-labelled episode in memory: frames (T, 3, H, W) uint8 per view, actions (T, A), proprio (T, P),
    task_emb (L,).
    """
    path: Path
    task: str
    frames: dict[str, np.ndarray]  # view -> (T, 3, H, W) uint8
    actions: np.ndarray  # (T, A) float32
    proprio: np.ndarray  # (T, P) float32
    task_emb: np.ndarray  # (L,) float32

    @property
    def length(self) -> int:
        """Number of frames T (= number of actions)."""
        return int(self.actions.shape[0])


def scan_data(data_dir: str | Path, tasks: list[str] | None = None, max_per_task: int = 0) -> list:
    """Metadata of the action-labelled, successful episodes of a directory (optionally some tasks)."""
    paths = list_episodes(data_dir)
    metas = [m for m in iter_metas(paths) if m.has_actions]
    if tasks:
        unknown = sorted(set(tasks) - {m.task for m in metas})
        if unknown:
            have = sorted({m.task for m in metas})
            raise ValueError(f"task(s) {unknown} have no action-labelled episodes in {data_dir}; it has {have}")
        metas = [m for m in metas if m.task in tasks]
    if max_per_task:
        kept, count = [], {}
        for m in metas:
            count[m.task] = count.get(m.task, 0) + 1
            if count[m.task] <= max_per_task:
                kept.append(m)
        metas = kept
    if not metas:
        raise ValueError(f"no action-labelled episodes in {data_dir} (episodes from `trajmoe data metaworld` carry actions)")
    return metas


def data_fields(metas: list) -> dict:
    """The data-derived PolicyConfig fields, checked to agree across the episodes."""
    first = metas[0]
    with open_episode(first.path) as ep:
        prop = ep.proprio()
        emb = ep.task_emb()
    if prop is None:
        raise ValueError(f"{first.path}: no extra_states (ee_pos, gripper_states): the policy needs proprioception")
    views = tuple(first.views)
    for m in metas:
        if m.action_dim != first.action_dim:
            raise ValueError(f"{m.path}: action dim {m.action_dim} differs from {first.path} ({first.action_dim})")
        if m.image_size != first.image_size:
            raise ValueError(f"{m.path}: image size {m.image_size} differs from {first.path} ({first.image_size})")
        views = tuple(v for v in views if v in m.views)
    H, W = first.image_size
    if H != W:
        raise ValueError(f"{first.path}: the policy needs square frames, got {H}x{W}")
    return {"views": views, "img_size": int(H), "action_dim": int(first.action_dim),
            "proprio_dim": int(prop.shape[1]), "lang_dim": int(emb.shape[0])}


def check_against_data(cfg: PolicyConfig, fields: dict, where: str) -> None:
    """One-line errors when the policy config disagrees with the episode files."""
    missing = [v for v in cfg.views if v not in fields["views"]]
    if missing:
        raise ValueError(f"policy views {list(cfg.views)} do not match the data in {where}: {missing} not among its views {list(fields['views'])}")
    for key in ("img_size", "action_dim", "proprio_dim", "lang_dim"):
        if getattr(cfg, key) != fields[key]:
            raise ValueError(f"policy {key}={getattr(cfg, key)} does not match the data in {where} ({key}={fields[key]})")


def fit_to_data(cfg: PolicyConfig, metas: list, explicit: set, where: str) -> PolicyConfig:
    """`cfg` with the data-derived fields (`data_fields`) of the episodes `metas` (of folder `where`)
    filled in unless `explicit` names them, and for oracle conditioning the oracle tracks' horizon as
    track_len. Errors: one-line ValueError where an explicit value disagrees with the data."""
    fields = data_fields(metas)
    cfg = replace(cfg, **{k: v for k, v in fields.items() if k not in explicit})
    check_against_data(cfg, fields, str(where))
    if cfg.conditioning == "oracle":  # exact grid tracks from the episode files; their horizon is the track length
        horizon = oracle_horizon(metas[0].path, cfg.views[0], cfg.num_points)
        if "track_len" in explicit and cfg.track_len != horizon:
            raise ValueError(f"policy track_len={cfg.track_len} does not match the oracle tracks in {metas[0].path} (horizon {horizon})")
        cfg = replace(cfg, track_len=horizon)
    return cfg


class PolicyDataset:
    """Trainer dataset protocol: len(ds), ds.get(index, rng) -> dict of numpy arrays."""

    def __init__(self, metas: list, cfg: PolicyConfig, data: PolicyDataConfig, augment: bool = True) -> None:
        self.cfg, self.data, self.augment = cfg, data, augment
        self.episodes: list[PolicyEpisode] = []
        oracle: list[np.ndarray] = []
        for m in metas:
            with open_episode(m.path) as ep:
                for v in cfg.views:
                    if v not in ep.meta.views:
                        raise ValueError(f"{m.path}: no view {v!r} (views: {', '.join(ep.meta.views)})")
                actions, proprio = ep.actions(), ep.proprio()
                if actions.shape[1] != cfg.action_dim:
                    raise ValueError(f"{m.path}: actions have dim {actions.shape[1]} but policy action_dim={cfg.action_dim}")
                if proprio is None or proprio.shape[1] != cfg.proprio_dim:
                    got = None if proprio is None else proprio.shape[1]
                    raise ValueError(f"{m.path}: proprio dim {got} but policy proprio_dim={cfg.proprio_dim}")
                self.episodes.append(PolicyEpisode(
                    path=m.path, task=m.task, frames={v: ep.frames(v) for v in cfg.views},
                    actions=actions, proprio=proprio, task_emb=ep.task_emb(),
                ))
                if cfg.conditioning == "oracle":
                    tr = np.stack([ep.oracle_tracks(v, cfg.num_points) for v in cfg.views], axis=1)  # (T, V, Hz, N, 2)
                    if tr.shape[2] != cfg.track_len:
                        raise ValueError(f"{m.path}: oracle tracks have horizon {tr.shape[2]} but policy track_len={cfg.track_len}")
                    oracle.append(tr)
        lens = np.array([e.length for e in self.episodes])
        self._starts = np.concatenate([[0], np.cumsum(lens)])
        # per episode (T, V, Tt, N, 2): float16 predictions when cached, float32 exact ones for oracle
        self.tracks: list[np.ndarray] | None = oracle or None

    def __len__(self) -> int:
        return int(self._starts[-1])

    def locate(self, index: int) -> tuple[int, int]:
        """(episode number, frame t) of flat sample `index`."""
        e = int(np.searchsorted(self._starts, index, side="right") - 1)
        return e, int(index - self._starts[e])

    def get(self, index: int, rng: np.random.Generator) -> dict:
        """Sample `index` drawn with `rng`: the frame stack ending at t (padded at the episode start by
        repeating frame 0) with the actions and proprioception of those F frames, and the task embedding.
        """
        cfg = self.cfg
        e, t = self.locate(index)
        ep = self.episodes[e]
        F = cfg.frame_stack
        raw = np.arange(t - F + 1, t + 1)
        idx = np.clip(raw, 0, None)
        rgb, tracks = [], []
        for vi, v in enumerate(cfg.views):
            frames_F3HW = ep.frames[v][idx]
            tr = None if self.tracks is None else self.tracks[e][idx, vi].astype(np.float32)  # (F, Tt, N, 2)
            if self.augment:
                frames_F3HW, tr = self._augment(frames_F3HW, tr, rng)
            rgb.append(frames_F3HW)
            if tr is not None:
                tracks.append(tr)
        out = {
            "rgb": np.stack(rgb, axis=1),  # (F, V, 3, H, W) uint8
            "proprio": ep.proprio[idx],
            "task_emb": ep.task_emb,
            "actions": ep.actions[idx],
            "valid": raw >= 0,
            "source": f"{ep.path.name}:{t}",
        }
        if tracks:
            out["tracks"] = np.stack(tracks, axis=1)  # (F, V, Tt, N, 2)
        return out

    def _augment(self, frames_F3HW: np.ndarray, tracks_FTN2: np.ndarray | None, rng: np.random.Generator):
        """Same ColorJitter + RandomShift draw for every frame of the window (one view)."""
        H = frames_F3HW.shape[-1]
        pad = int(round(self.data.aug_shift * H / 128))
        s = self.data.color_jitter
        if pad == 0 and s == 0:
            return frames_F3HW, tracks_FTN2
        seed = int(rng.integers(2**62))
        out = np.empty_like(frames_F3HW)
        shift = (0, 0)
        for f in range(frames_F3HW.shape[0]):
            r = np.random.default_rng(seed)  # identical draws for every frame of the window
            img = frames_F3HW[f].transpose(1, 2, 0).astype(np.float32) / 255.0
            if s > 0:
                img = color_jitter(img, r, s, s, s)
            if pad > 0:
                img, _, shift = random_shift(img, None, r, pad)
            out[f] = np.round(img * 255.0).clip(0, 255).astype(np.uint8).transpose(2, 0, 1)
        if tracks_FTN2 is not None and shift != (0, 0):
            tracks_FTN2 = tracks_FTN2 + np.array([shift[0] / H, shift[1] / H], dtype=np.float32)
        return out, tracks_FTN2


def oracle_horizon(path: Path, view: str, num_points: int) -> int:
    """Horizon (track length) of the oracle grid tracks stored in one episode file."""
    with open_episode(path) as ep:
        return int(ep.oracle_tracks(view, num_points).shape[1])


# ---------------------------------------------------------------------------------------------
# Track cache


def build_track_cache(policy, ds: PolicyDataset, run_dir: Path | None, track_id: str, batch_size: int = 256,
                      device: str = "cpu") -> None:
    """Predict (or reload) the frozen track model's tracks for every (episode, frame, view)."""
    # lazy: only the track cache needs torch (the dataset is numpy-only)
    import torch
    # lazy: only the track cache shows progress
    from rich.progress import Progress

    # lazy: imports torch (track cache only)
    from ..train.checkpoint import read_tensors, save_tensors

    cfg = policy.cfg
    meta = {"track_run": track_id, "num_points": str(cfg.num_points), "views": ",".join(cfg.views)}
    path = None if run_dir is None else Path(run_dir) / CACHE_FILE
    if path is not None and path.is_file():
        # lazy: track cache only
        from safetensors import safe_open

        with safe_open(str(path), "pt") as f:
            ok = f.metadata() is not None and all(f.metadata().get(k) == v for k, v in meta.items())
        if ok:
            t = read_tensors(path)
            keys = [f"{i}" for i in range(len(ds.episodes))]
            if all(k in t and t[k].shape[0] == e.length for k, e in zip(keys, ds.episodes)):
                ds.tracks = [t[k].numpy() for k in keys]
                return
    policy = policy.to(device)
    todo = [(e, v) for e in range(len(ds.episodes)) for v in range(len(cfg.views))]
    total = sum(ds.episodes[e].length for e, _ in todo)
    out = [np.zeros((e.length, len(cfg.views), cfg.track_len, cfg.num_points, 2), np.float16) for e in ds.episodes]
    with Progress(transient=True) as bar:
        task = bar.add_task("predicting tracks (cache)", total=total)
        for e, vi in todo:
            ep = ds.episodes[e]
            frames = ep.frames[cfg.views[vi]]
            emb = torch.from_numpy(ep.task_emb).to(device)
            for s in range(0, ep.length, batch_size):
                img = torch.from_numpy(frames[s : s + batch_size]).to(device).float() / 255.0
                tr = policy.predict_tracks(img, emb.expand(img.shape[0], -1))
                out[e][s : s + img.shape[0], vi] = tr.cpu().numpy().astype(np.float16)
                bar.advance(task, img.shape[0])
    ds.tracks = out
    if path is not None:
        save_tensors({f"{i}": torch.from_numpy(a) for i, a in enumerate(out)}, path, meta)
