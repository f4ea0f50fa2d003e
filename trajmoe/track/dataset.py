"""Track-model samples drawn from episode files as ATM draws them, over a multi-domain mixture.

A sample is (episode, view, frame t): the RGB frame at t, the tracks of t..t+T-1 (padded at the
episode end by repeating the last frame), and `num_points` points drawn from those visible at t
(with replacement only when fewer are visible). ColorJitter + RandomShift are applied to the image
and the tracks consistently. Every random choice comes from the rng the Trainer passes, so a
sample is a pure function of (index, seed).
Per-domain sampling weights turn into per-sample weights w_d / n_d for the Trainer's sampler.
Legend: L episode frames, T track length, N points, H/W image, S samples, D task-embedding size.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..data.atm_hdf5 import open_episode
from ..data.datasets import list_episodes
from ..data.augment import color_jitter, random_shift


@dataclass
class _Index:
    episode: np.ndarray  # (S,) episode number
    view: np.ndarray  # (S,) view number
    frame: np.ndarray  # (S,) frame t


class TrackDataset:
    """Track-model samples (episode, view, frame t) over the episode files of several folders (one domain set
    each).

    Args:
        dirs: episode folders. track_len: T. num_points: N points per sample. img_size: square H = W.
        views: view names (None = every view found). augment: ColorJitter + RandomShift.
        frame_stride: keep every k-th frame as a sample start. domain_names: the run's domain list (None =
            found).
        max_episodes_per_dir: cap per folder. cache: keep decoded episodes in memory.

    Raises:
        ValueError: no folder, a folder without episodes, a domain missing from `domain_names`, a bad file.
    """

    def __init__(self, dirs: list[str | Path], track_len: int, num_points: int, img_size: int,
                 views: list[str] | None = None, augment: bool = True, frame_stride: int = 1,
                 domain_names: list[str] | None = None, max_episodes_per_dir: int | None = None,
                 cache: bool = True) -> None:
        if not dirs:
            raise ValueError("no data directory given (--data DIR ...)")
        self.track_len, self.num_points, self.img_size, self.augment = track_len, num_points, img_size, augment
        self.paths: list[Path] = []
        for d in dirs:
            eps = list_episodes(d)
            if not eps:
                raise ValueError(f"data directory {d} holds no episodes")
            self.paths += eps[:max_episodes_per_dir] if max_episodes_per_dir else eps
        self._handles: dict[int, object] = {}
        self.cache = cache  # decoded episodes kept in memory (uint8 frames): no HDF5 read per sample
        self._mem: dict[tuple[int, str], tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self._emb: dict[int, np.ndarray] = {}
        self._pid = os.getpid()
        metas = [self._open(i).meta for i in range(len(self.paths))]
        found = sorted({m.domain for m in metas})
        self.domain_names = list(domain_names) if domain_names else found
        unknown = [d for d in found if d not in self.domain_names]
        if unknown:
            raise ValueError(f"episodes of domain(s) {unknown} are not in the run's domain list {self.domain_names}")
        self.view_names = sorted({v for m in metas for v in m.views}) if views is None else list(views)
        ep, vw, fr = [], [], []
        self.episode_domain = np.array([self.domain_names.index(m.domain) for m in metas], dtype=np.int64)
        for i, m in enumerate(metas):
            for j, v in enumerate(self.view_names):
                if v not in m.views:
                    if views is not None:
                        raise ValueError(f"episode {self.paths[i]} has no view {v!r} (it has {list(m.views)})")
                    continue
                vis_TN = self._open(i).vis(v)
                ok_t = np.nonzero(vis_TN.any(axis=1))[0]
                ok_t = ok_t[ok_t % frame_stride == 0]
                ep.append(np.full(len(ok_t), i))
                vw.append(np.full(len(ok_t), j))
                fr.append(ok_t)
        if not ep or sum(len(e) for e in ep) == 0:
            raise ValueError(f"no frame with a visible track point in {', '.join(map(str, dirs))}")
        self.index = _Index(np.concatenate(ep), np.concatenate(vw), np.concatenate(fr))
        self._close_all()

    # -------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.index.frame)

    def domains(self) -> np.ndarray:
        """(S,) domain id of every sample."""
        return self.episode_domain[self.index.episode]

    def sample_weights(self, domain_weights: dict[str, float] | None) -> np.ndarray | None:
        """Per-sample weights so that domain d is drawn with probability w_d / sum(w)."""
        if not domain_weights:
            return None
        unknown = [k for k in domain_weights if k not in self.domain_names]
        if unknown:
            raise ValueError(f"domain_weights names unknown domain(s) {unknown}; domains in the data: {self.domain_names}")
        dom = self.domains()
        counts = np.bincount(dom, minlength=len(self.domain_names)).astype(np.float64)
        w_d = np.array([float(domain_weights.get(n, 1.0)) for n in self.domain_names])
        if (w_d < 0).any() or not np.isfinite(w_d).all():
            raise ValueError(f"domain_weights must be finite and >= 0, got {domain_weights}")
        per = np.where(counts > 0, w_d / np.maximum(counts, 1), 0.0)
        if per[dom].sum() <= 0:
            raise ValueError(f"domain_weights {domain_weights} give every sample weight 0")
        return per[dom]

    def get(self, index: int, rng: np.random.Generator) -> dict:
        """Sample `index` drawn with `rng`: {"image" (3, H, W) float32 in [0, 1], "tracks" (T, N, 2) in [0, 1],
        "vis" (T, N) float32, "task_emb" (D,), "domain" int64, "source" "path:view:t"}.

        Raises:
            ValueError: the episode's frames are not img_size x img_size (names the file).
        """
        i, j, t = int(self.index.episode[index]), int(self.index.view[index]), int(self.index.frame[index])
        view = self.view_names[j]
        T = self.track_len
        frames_LHW3, tracks_all, vis_all, task_emb = self._episode_view(i, view)  # (L, H, W, 3), (L, N, 2), (L, N)
        img = frames_LHW3[t].astype(np.float32) / 255.0  # (H, W, 3)
        if img.shape[0] != self.img_size or img.shape[1] != self.img_size:
            raise ValueError(f"{self.paths[i]} view {view!r} frames are {img.shape[:2]}, the model expects {self.img_size}")
        steps = np.minimum(np.arange(t, t + T), len(tracks_all) - 1)  # end padding by repetition
        tracks, vis = tracks_all[steps], vis_all[steps].astype(np.float32)
        visible = np.nonzero(vis_all[t])[0]
        pick = rng.choice(visible, size=self.num_points, replace=len(visible) < self.num_points)
        tracks, vis = tracks[:, pick].astype(np.float32), vis[:, pick]
        if self.augment:
            img = color_jitter(img, rng)
            img, tracks, _ = random_shift(img, tracks, rng)
        return {
            "image": np.ascontiguousarray(img.transpose(2, 0, 1)),
            "tracks": tracks,
            "vis": vis,
            "task_emb": task_emb,
            "domain": np.int64(self.episode_domain[i]),
            "source": f"{self.paths[i]}:{view}:{t}",
        }

    # -------------------------------------------------------------------------------------
    def _episode_view(self, i: int, view: str):
        """(frames (L, H, W, 3) uint8, tracks (L, N, 2) float32, vis (L, N) bool, task_emb (D,) float32).

        With `cache`, an episode view is decoded once and kept (uint8); otherwise only the frame
        needed is read from the HDF5 file, at the cost of one read per sample."""
        key = (i, view)
        hit = self._mem.get(key)
        if hit is not None:
            return (*hit, self._emb[i])
        ep = self._open(i)
        if i not in self._emb:
            self._emb[i] = ep.task_emb().astype(np.float32)
        if not self.cache:
            return _LazyFrames(ep, view), ep.tracks(view), ep.vis(view), self._emb[i]
        hit = self._mem[key] = (ep.frames(view, channels_last=True), ep.tracks(view), ep.vis(view))
        return (*hit, self._emb[i])

    def _open(self, i: int):
        if os.getpid() != self._pid:  # DataLoader worker: never share HDF5 handles across fork
            self._handles, self._pid = {}, os.getpid()
        h = self._handles.get(i)
        if h is None:
            if len(self._handles) >= 64:
                self._close_all()
            h = self._handles[i] = open_episode(self.paths[i])
        return h

    def _close_all(self) -> None:
        for h in self._handles.values():
            close = getattr(h, "close", None)
            if close:
                close()
        self._handles = {}

    def __getstate__(self):
        s = dict(self.__dict__)
        s["_handles"], s["_mem"] = {}, {}  # a spawned worker decodes its own copy
        return s


class _LazyFrames:
    """`frames[t]` read from the file on demand (the uncached path)."""

    def __init__(self, ep, view: str) -> None:
        self.ep, self.view = ep, view

    def __getitem__(self, t: int) -> np.ndarray:
        return self.ep.frames(self.view, [t], channels_last=True)[0]
