"""Track-model samples drawn from episode files as ATM draws them, over a multi-domain mixture.

A sample is (episode, view, frame t): the RGB frame at t, the tracks of t..t+T-1 (padded at the
episode end by repeating the last frame), and `num_points` points drawn from those visible at t
(with replacement only when fewer are visible). ColorJitter + RandomShift are applied to the image
and the tracks consistently. Every random choice comes from the rng the Trainer passes, so a
sample is a pure function of (index, seed).
Per-domain sampling weights turn into per-sample weights w_d / n_d for the Trainer's sampler.
Options beyond the papers' recipe (measured in docs/results.md, "The scene camera"):
  * query_sampling="moving": 3/4 of the points drawn among the visible points whose largest
    displacement over the window t..t+T-1 is >= 10 % of the largest displacement of any visible point
    in it, the rest uniform (after ATM's motion-aware sampling of training points, Wen et al., RSS 2024);
    a window where nothing moves falls back to uniform.
  * view_loss="no_motion": every sample carries `track_weight` = (mean no-motion MSE over all samples) /
    (mean no-motion MSE of its view), so each view's track loss is measured relative to how much its
    points move (the gripper camera's no-motion MSE is ~16x the fixed scene camera's on MetaWorld).
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


def _episode_paths(dirs: list[str | Path], max_episodes_per_dir: int | None) -> list[Path]:
    """The episode files of the folders (the first `max_episodes_per_dir` of each); ValueError for an empty
    folder or one whose files another folder already gave (the same folder twice doubles its share of draws)."""
    paths: list[Path] = []
    owner: dict[Path, int] = {}  # real path of each episode file -> index of the folder that gave it
    for i, d in enumerate(dirs):
        eps = list_episodes(d)
        if not eps:
            raise ValueError(f"data directory {d} holds no episodes")
        for p in eps:
            first = owner.setdefault(p.resolve(), i)
            if first != i:
                raise ValueError(f"data directories {dirs[first]} and {d} hold the same episode files ({p.name}; the "
                                 "same folder given twice or through a symlink): give each folder once")
        paths += eps[:max_episodes_per_dir] if max_episodes_per_dir else eps
    return paths


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
        ValueError: no folder, a folder without episodes, two folders holding the same episode files (one
            folder given twice or through a symlink), a domain missing from `domain_names`, a bad file.
    """

    def __init__(self, dirs: list[str | Path], track_len: int, num_points: int, img_size: int,
                 views: list[str] | None = None, augment: bool = True, frame_stride: int = 1,
                 domain_names: list[str] | None = None, max_episodes_per_dir: int | None = None,
                 cache: bool = True, query_sampling: str = "visible", view_loss: str = "equal",
                 grid_queries: int = 0) -> None:
        if query_sampling not in ("visible", "moving"):
            raise ValueError(f"query_sampling={query_sampling!r}: must be 'visible' or 'moving'")
        if view_loss not in ("equal", "no_motion"):
            raise ValueError(f"view_loss={view_loss!r}: must be 'equal' or 'no_motion'")
        if not 0 <= grid_queries <= num_points:
            raise ValueError(f"grid_queries={grid_queries}: must be in [0, num_points={num_points}]")
        self.query_sampling, self.grid_queries = query_sampling, grid_queries
        self._grid: dict[tuple[int, str], np.ndarray | None] = {}
        if not dirs:
            raise ValueError("no data directory given (--data DIR ...)")
        self.track_len, self.num_points, self.img_size, self.augment = track_len, num_points, img_size, augment
        self.paths: list[Path] = _episode_paths(dirs, max_episodes_per_dir)
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
        ep, vw, fr, static = [], [], [], []
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
                if view_loss == "no_motion":
                    static.append(_no_motion_mse(self._open(i).tracks(v), vis_TN, track_len)[ok_t])
        if not ep or sum(len(e) for e in ep) == 0:
            raise ValueError(f"no frame with a visible track point in {', '.join(map(str, dirs))}")
        self.index = _Index(np.concatenate(ep), np.concatenate(vw), np.concatenate(fr))
        # (V,) per-view weight of the track loss (None: every sample weighs 1)
        self.view_weight: np.ndarray | None = None
        if view_loss == "no_motion":
            st = np.concatenate(static)
            per_view = np.array([st[self.index.view == j].mean() if (self.index.view == j).any() else np.nan
                                 for j in range(len(self.view_names))])
            if not np.all(np.isfinite(per_view[np.isfinite(per_view)]) & (per_view[np.isfinite(per_view)] > 0)):
                raise ValueError(f"view_loss='no_motion': a view's points never move in {', '.join(map(str, dirs))} "
                                 f"(no-motion MSE per view {dict(zip(self.view_names, per_view.tolist()))})")
            self.view_weight = (st.mean() / np.nan_to_num(per_view, nan=1.0)).astype(np.float32)
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
        pick = self._pick_points(visible, tracks, rng)
        tracks, vis = tracks[:, pick].astype(np.float32), vis[:, pick]
        grid = self._grid_tracks(i, view) if self.grid_queries else None
        if grid is not None:  # the first G points: the policy's query grid with its exact tracks (visible)
            G = self.grid_queries
            tracks[:, :G], vis[:, :G] = grid[t], 1.0
        if self.augment:
            img = color_jitter(img, rng)
            img, tracks, _ = random_shift(img, tracks, rng)
        out = {
            "image": np.ascontiguousarray(img.transpose(2, 0, 1)),
            "tracks": tracks,
            "vis": vis,
            "task_emb": task_emb,
            "domain": np.int64(self.episode_domain[i]),
            "source": f"{self.paths[i]}:{view}:{t}",
        }
        if self.view_weight is not None:
            out["track_weight"] = np.float32(self.view_weight[j])
        return out

    def _grid_tracks(self, i: int, view: str) -> np.ndarray | None:
        """(L, T, G, 2) exact tracks of the G-point query grid from every frame, or None when the episode has
        none (or their horizon is not T)."""
        key = (i, view)
        if key not in self._grid:
            try:
                g = self._open(i).oracle_tracks(view, self.grid_queries)
            except ValueError:
                g = None
            self._grid[key] = g if g is not None and g.shape[1] == self.track_len else None
        return self._grid[key]

    def _pick_points(self, visible: np.ndarray, tracks_TN2: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """`num_points` indices among `visible` (with replacement only when too few), uniform or motion-aware."""
        n = self.num_points
        if self.query_sampling == "moving":
            disp = np.abs(tracks_TN2[:, visible] - tracks_TN2[:1, visible]).max(axis=(0, 2))  # (len(visible),)
            top = float(disp.max()) if len(disp) else 0.0
            moving = visible[disp >= 0.1 * top] if top > 1e-6 else visible[:0]
            if len(moving):
                k = int(round(0.75 * n))
                return np.concatenate([rng.choice(moving, size=k, replace=len(moving) < k),
                                       rng.choice(visible, size=n - k, replace=len(visible) < n - k)])
        return rng.choice(visible, size=n, replace=len(visible) < n)

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
        s["_handles"], s["_mem"], s["_grid"] = {}, {}, {}  # a spawned worker decodes its own copy
        return s


def _no_motion_mse(tracks_LN2: np.ndarray, vis_LN: np.ndarray, track_len: int) -> np.ndarray:
    """(L,) no-motion MSE of every start frame t: mean over the window t..t+T-1 (end padded by
    repetition, as samples are) and over the points visible at t of |p_{t+k} - p_t|^2 / 2."""
    L = len(tracks_LN2)
    steps_LT = np.minimum(np.arange(L)[:, None] + np.arange(track_len)[None], L - 1)
    sq_LN = ((tracks_LN2[steps_LT] - tracks_LN2[:, None]) ** 2).mean(axis=(1, 3))  # (L, N)
    w_LN = vis_LN.astype(np.float64)
    return (sq_LN * w_LN).sum(1) / np.maximum(w_LN.sum(1), 1)


class _LazyFrames:
    """`frames[t]` read from the file on demand (the uncached path)."""

    def __init__(self, ep, view: str) -> None:
        self.ep, self.view = ep, view

    def __getitem__(self, t: int) -> np.ndarray:
        return self.ep.frames(self.view, [t], channels_last=True)[0]
