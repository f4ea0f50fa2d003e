"""Exact ground-truth point tracks from simulator state (no learned tracker).

The Tra-MoE / ATM recipe labels videos with CoTracker; in simulation the exact answer is known:
a pixel seen at a query frame lies on one geom of one body, so lifting it into that body's local
frame and moving it with the body pose gives its 3-D position at every other frame, and a pinhole
projection gives its pixel track (MuJoCo's pinhole camera model).

Conventions (shared by the writer, the reader and every consumer):
  * Continuous pixel coordinates (u, v) = (column, row) with pixel centres at +0.5, so pixel
    (row i, col j) covers [j, j+1) x [i, i+1). Stored tracks are normalised x = u / W, y = v / H,
    in [0, 1] (ATM layout), clipped to the image; a point outside the image is marked not visible.
  * MuJoCo cameras look along their local -z axis with +y up; `cam_xmat` columns are the camera
    axes in world coordinates. Focal length in pixels f = 0.5 H / tan(fovy / 2), principal point at
    the image centre, square pixels (MuJoCo's own projection).
  * Cameras whose images are rotated by 180 degrees after rendering (MetaWorld's `corner*`
    cameras render upside down) have `flip=True`: pixel coordinates are mapped (u, v) -> (W-u, H-v)
    so tracks match the stored (rotated) frames.
  * Visibility at frame t: in front of the camera, inside the image and
    |rendered depth - point depth| < 0.01 + 0.02 * point depth (metres; MuJoCo's pinhole camera model).

Point sampling (ATM preprocessing / paper Tab. 6 "variance filtering"): candidates are sampled at
several query frames (half uniformly over the image, half on bodies that are not welded to the
world, so that small objects are represented), carried exactly through the WHOLE episode in both
directions (rigid-body carry is exact backwards too, so a point queried at frame 40 also has a
track for frames 0..39), and kept when the variance of their pixel track over the episode exceeds
`var_threshold` (ATM: 10 px^2 at 128 px). A double grid (two interleaved g x g grids, as ATM's
`sample_double_grid`) adds points regardless of motion. Pixels that show no geom (sky box) are
never used: they have no 3-D point to carry.

Shape legend: T frames, N points, B bodies, H/W image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Mapping

import numpy as np

from trajmoe.config import checker

VIS_ABS_TOL = 0.01  # metres; MuJoCo's pinhole camera model visibility test
VIS_REL_TOL = 0.02  # fraction of the point depth


@dataclass(frozen=True)
class CameraModel:
    """Pinhole intrinsics of one MuJoCo camera rendered at (height, width); see module docstring."""

    fovy_deg: float
    height: int
    width: int
    flip: bool = False

    def __post_init__(self) -> None:
        if not (0.0 < self.fovy_deg < 180.0):
            raise ValueError(f"fovy_deg must be in (0, 180), got {self.fovy_deg!r}")
        if self.height <= 0 or self.width <= 0:
            raise ValueError(f"image size must be positive, got {self.height}x{self.width}")

    @property
    def focal(self) -> float:
        """Focal length in pixels: f = 0.5 H / tan(fovy / 2)."""
        return 0.5 * self.height / math.tan(math.radians(self.fovy_deg) / 2.0)


def project(points_w: np.ndarray, cam_pos: np.ndarray, cam_mat: np.ndarray, cam: CameraModel) -> tuple[np.ndarray, np.ndarray]:
    """World points (..., 3) -> pixel coordinates (..., 2) as (u, v) and depth (...,) along the view axis.

    `cam_pos` (..., 3) and `cam_mat` (..., 3, 3) broadcast against the points (e.g. one camera pose
    per frame: points (T, N, 3), cam_pos (T, 1, 3), cam_mat (T, 1, 3, 3)). Depth <= 0 means the
    point is behind the camera (its pixel coordinates are then meaningless).
    """
    rel = points_w - cam_pos
    # p_cam = R^T (p_w - c): the columns of cam_mat are the camera axes in the world frame.
    p_cam = np.einsum("...ji,...j->...i", cam_mat, rel)
    depth = -p_cam[..., 2]  # camera looks along -z
    safe = np.where(np.abs(depth) < 1e-9, 1e-9, depth)
    f = cam.focal
    u = 0.5 * cam.width + f * p_cam[..., 0] / safe
    v = 0.5 * cam.height - f * p_cam[..., 1] / safe  # image rows grow downwards, camera +y is up
    if cam.flip:
        u, v = cam.width - u, cam.height - v
    return np.stack([u, v], axis=-1), depth


def backproject(uv: np.ndarray, depth: np.ndarray, cam_pos: np.ndarray, cam_mat: np.ndarray, cam: CameraModel) -> np.ndarray:
    """Pixel coordinates (N, 2) with depths (N,) -> world points (N, 3); inverse of `project`."""
    u, v = uv[..., 0], uv[..., 1]
    if cam.flip:
        u, v = cam.width - u, cam.height - v
    f = cam.focal
    x = (u - 0.5 * cam.width) * depth / f
    y = -(v - 0.5 * cam.height) * depth / f
    p_cam = np.stack([x, y, -depth], axis=-1)
    return np.einsum("...ij,...j->...i", cam_mat, p_cam) + cam_pos


def world_to_local(points_w: np.ndarray, body_pos: np.ndarray, body_mat: np.ndarray) -> np.ndarray:
    """World points (N, 3) -> body-local coordinates, p_l = R_b^T (p_w - x_b); body_pos (N, 3), body_mat (N, 3, 3)."""
    return np.einsum("...ji,...j->...i", body_mat, points_w - body_pos)


def local_to_world(points_l: np.ndarray, body_pos: np.ndarray, body_mat: np.ndarray) -> np.ndarray:
    """Body-local points (N, 3) -> world, p_w = R_b p_l + x_b; body_pos/body_mat broadcast (e.g. (T, N, 3))."""
    return np.einsum("...ij,...j->...i", body_mat, points_l) + body_pos


def visibility(uv_TN2: np.ndarray, depth_TN: np.ndarray, depth_imgs_THW: np.ndarray) -> np.ndarray:
    """Depth-test visibility (T, N) bool: in front, inside the image, rendered depth matches the point's.

    uv_TN2: (T, N, 2) pixel coordinates (u, v); depth_TN: (T, N) point depths (m); depth_imgs_THW:
    (T, H, W) rendered depth (m). Tolerance VIS_ABS_TOL + VIS_REL_TOL * depth (module docstring).
    """
    T, H, W = depth_imgs_THW.shape
    u, v = uv_TN2[..., 0], uv_TN2[..., 1]
    inside = (depth_TN > 0) & (u >= 0) & (u < W) & (v >= 0) & (v < H)
    col = np.clip(np.floor(u), 0, W - 1).astype(np.int64)
    row = np.clip(np.floor(v), 0, H - 1).astype(np.int64)
    t_idx = np.arange(T)[:, None]
    rendered = depth_imgs_THW[t_idx, row, col]
    close = np.abs(rendered - depth_TN) < VIS_ABS_TOL + VIS_REL_TOL * np.abs(depth_TN)
    return inside & close


@dataclass(frozen=True)
class TrackLabelConfig:
    """How many points per view and how they are chosen (see module docstring)."""

    num_points: int = 128  # N per view, fixed for every episode
    grid_size: int = 4  # double grid: 2 * grid_size^2 points (32), ATM uses 7 (98 of ~1100)
    num_query_frames: int = 8  # distinct query frames per view, one drawn in each of Q equal segments
    candidates_per_frame: int = 256  # candidates drawn at each query frame before variance filtering
    var_threshold: float = 10.0  # px^2 at the stored resolution, ATM `track_and_remove` default

    def __post_init__(self) -> None:
        need = checker(self, "track")
        for name in ("num_points", "num_query_frames", "candidates_per_frame"):
            need(getattr(self, name) > 0, name, "positive")
        need(self.grid_size >= 0, "grid_size", ">= 0")
        need(2 * self.grid_size**2 <= self.num_points, "grid_size", f"such that 2 * grid_size^2 <= num_points={self.num_points}")
        need(self.var_threshold >= 0, "var_threshold", ">= 0")

    @property
    def num_grid(self) -> int:
        """Points of the double grid: 2 * grid_size^2."""
        return 2 * self.grid_size**2


@dataclass
class ViewRecording:
    """What one view needs for tracks, recorded every frame: camera pose and rendered depth."""

    cam: CameraModel
    cam_pos_T3: np.ndarray
    cam_mat_T33: np.ndarray
    depth_THW: np.ndarray


@dataclass
class TrackResult:
    """Tracks of one view: N points over T frames, with where each point came from."""

    tracks_TN2: np.ndarray  # float32 in [0, 1], (x = u / W, y = v / H)
    vis_TN: np.ndarray  # bool
    query_frame_N: np.ndarray  # int32, frame at which each point was sampled
    body_N: np.ndarray  # int32, MuJoCo body id the point is attached to
    geom_N: np.ndarray  # int32, MuJoCo geom id seen at the query pixel
    moving_N: np.ndarray  # bool, passed the variance filter (grid points may be static)


def query_frames(T: int, q: int, rng: np.random.Generator) -> np.ndarray:
    """At most q distinct query frames (sorted (Q,) int), one drawn uniformly inside each of
    min(q, T) equal segments of [0, T)."""
    q = min(q, T)
    edges = np.linspace(0, T, q + 1)
    frames = [int(rng.integers(int(math.floor(a)), max(int(math.floor(a)) + 1, int(math.floor(b))))) for a, b in zip(edges[:-1], edges[1:])]
    return np.unique(np.clip(frames, 0, T - 1))


def double_grid(g: int, height: int, width: int) -> np.ndarray:
    """Two interleaved g x g grids of pixel centres (2 g^2, 2) as (u, v) (after ATM's `sample_double_grid`)."""
    if g == 0:
        return np.zeros((0, 2))
    a = (np.arange(g) + 0.5) / g  # first grid at cell centres
    b = np.arange(1, g + 1) / (g + 1)  # second grid offset between them
    pts = []
    for ax in (a, b):
        xx, yy = np.meshgrid(ax, ax, indexing="xy")
        pts.append(np.stack([xx.ravel() * width, yy.ravel() * height], axis=-1))
    uv = np.concatenate(pts, axis=0)
    return np.floor(uv) + 0.5  # snap to pixel centres


def compute_view_tracks(
    view: ViewRecording,
    body_pos_TB3: np.ndarray,
    body_mat_TB33: np.ndarray,
    seg_at: Callable[[int], np.ndarray] | Mapping[int, np.ndarray],
    geom_body: np.ndarray,
    body_is_static: np.ndarray,
    cfg: TrackLabelConfig,
    rng: np.random.Generator,
) -> TrackResult:
    """Sample N query points for one view and carry them exactly through every frame.

    `seg_at(t)` gives the geom-id segmentation (H, W) int (-1 = no geom) of this view at frame t
    (rendered on demand by replaying the simulator state); `geom_body` (G,) maps geom -> body;
    `body_is_static` (B,) marks bodies welded to the world; body poses are (T, B, 3) m and
    (T, B, 3, 3). Point selection: ATM's variance filtering (Wen et al., "Any-point Trajectory
    Modeling", Tab. 6) plus a double grid (module docstring).

    Raises:
        ValueError: no pixel shows any geom at the query frames.
    """
    T, H, W = view.depth_THW.shape
    get_seg = seg_at if callable(seg_at) else seg_at.__getitem__
    frames = query_frames(T, cfg.num_query_frames, rng)
    grid_uv = double_grid(cfg.grid_size, H, W)
    grid_frame = rng.choice(frames, size=len(grid_uv))
    (c_uv, c_t, c_body, c_geom), (g_uv, g_t, g_body, g_geom) = _sample_points(
        get_seg, frames, grid_uv, grid_frame, geom_body, body_is_static, cfg, rng)
    if len(c_uv) + len(g_uv) == 0:
        raise ValueError("no pixel shows any geom at the query frames: cannot sample track points")

    c_tracks, c_depth = _carry(c_uv, c_t, c_body, view, body_pos_TB3, body_mat_TB33)
    g_tracks, g_depth = _carry(g_uv, g_t, g_body, view, body_pos_TB3, body_mat_TB33)

    # Variance filter (ATM `track_and_remove`): sum over x, y of the temporal variance, in px^2.
    c_var = c_tracks.var(axis=0).sum(axis=-1) if len(c_uv) else np.zeros(0)
    g_var = g_tracks.var(axis=0).sum(axis=-1) if len(g_uv) else np.zeros(0)
    n_grid = min(len(g_uv), cfg.num_grid)
    chosen = _choose_movers(c_var, cfg.num_points - n_grid, cfg.var_threshold, rng)
    order_g = np.arange(n_grid)

    tracks_TN2 = np.concatenate([c_tracks[:, chosen], g_tracks[:, order_g]], axis=1)
    depth_TN = np.concatenate([c_depth[:, chosen], g_depth[:, order_g]], axis=1)
    vis_TN = visibility(tracks_TN2, depth_TN, view.depth_THW)
    norm = np.array([W, H], dtype=np.float64)
    tracks01 = np.clip(tracks_TN2 / norm, 0.0, 1.0).astype(np.float32)
    return TrackResult(
        tracks_TN2=tracks01,
        vis_TN=vis_TN,
        query_frame_N=np.concatenate([c_t[chosen], g_t[order_g]]).astype(np.int32),
        body_N=np.concatenate([c_body[chosen], g_body[order_g]]).astype(np.int32),
        geom_N=np.concatenate([c_geom[chosen], g_geom[order_g]]).astype(np.int32),
        moving_N=np.concatenate([c_var[chosen] > cfg.var_threshold, g_var[order_g] > cfg.var_threshold]),
    )


def _sample_points(get_seg: Callable[[int], np.ndarray], frames: np.ndarray, grid_uv: np.ndarray,
                   grid_frame: np.ndarray, geom_body: np.ndarray, body_is_static: np.ndarray,
                   cfg: TrackLabelConfig, rng: np.random.Generator) -> tuple[tuple, tuple]:
    """Candidate and grid query points at each query frame, on pixels that show a geom.

    Candidates: half uniform over the image, half on moving bodies; grid point i is queried at
    grid_frame[i]. Returns two (uv (N, 2) px, frame (N,), body (N,), geom (N,)) tuples.
    """
    cand: tuple[list, ...] = ([], [], [], [])
    grid: tuple[list, ...] = ([], [], [], [])
    for t in frames:
        seg_HW = np.asarray(get_seg(int(t)))
        valid_HW = seg_HW >= 0
        if not valid_HW.any():
            continue
        body_HW = np.where(valid_HW, geom_body[np.clip(seg_HW, 0, None)], -1)
        mover_HW = valid_HW & ~body_is_static[np.clip(body_HW, 0, None)]
        n_half = cfg.candidates_per_frame // 2
        for mask, n in ((valid_HW, cfg.candidates_per_frame - n_half), (mover_HW, n_half)):
            rows, cols = np.nonzero(mask)
            if len(rows) == 0:
                continue
            pick = rng.choice(len(rows), size=min(n, len(rows)), replace=False)
            _append(cand, np.stack([cols[pick] + 0.5, rows[pick] + 0.5], axis=-1), t,
                    body_HW[rows[pick], cols[pick]], seg_HW[rows[pick], cols[pick]])
        at_t = grid_frame == t
        if at_t.any():
            g_uv = grid_uv[at_t]
            g_rows, g_cols = g_uv[:, 1].astype(int), g_uv[:, 0].astype(int)
            ok = valid_HW[g_rows, g_cols]
            _append(grid, g_uv[ok], t, body_HW[g_rows[ok], g_cols[ok]], seg_HW[g_rows[ok], g_cols[ok]])
    return _stack_points(cand), _stack_points(grid)


def _append(points: tuple[list, ...], uv: np.ndarray, t, body: np.ndarray, geom: np.ndarray) -> None:
    points[0].append(uv)
    points[1].append(np.full(len(uv), t))
    points[2].append(body)
    points[3].append(geom)


def _stack_points(points: tuple[list, ...]) -> tuple[np.ndarray, ...]:
    """Lists of per-frame arrays -> (uv (N, 2) float64, frame, body, geom (N,) int64)."""
    uv, t, body, geom = points
    uv_N2 = np.concatenate(uv, axis=0) if uv else np.zeros((0, 2), dtype=np.float64)
    return (uv_N2, *(np.concatenate(x, axis=0).astype(np.int64) if x else np.zeros(0, dtype=np.int64) for x in (t, body, geom)))


def _choose_movers(var_N: np.ndarray, n_move: int, threshold: float, rng: np.random.Generator) -> np.ndarray:
    """Indices of `n_move` candidates: a random choice among those whose track variance (px^2)
    exceeds `threshold`; with too few, all of them, then the most-moving rest, then repeats."""
    moving = np.nonzero(var_N > threshold)[0]
    if len(moving) >= n_move:
        return rng.choice(moving, size=n_move, replace=False)
    rest = np.setdiff1d(np.arange(len(var_N)), moving)
    rest = rest[np.argsort(-var_N[rest], kind="stable")]
    chosen = np.concatenate([moving, rest])[:n_move]
    if len(chosen) < n_move:
        chosen = np.resize(chosen, n_move)
    return chosen


def _carry(
    uv_N2: np.ndarray,
    t_N: np.ndarray,
    body_N: np.ndarray,
    view: ViewRecording,
    body_pos_TB3: np.ndarray,
    body_mat_TB33: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Lift query pixels into their body frames at their query frames, carry through all T frames.

    Returns pixel tracks (T, N, 2) as (u, v) (unclipped) and point depths (T, N).
    """
    T = body_pos_TB3.shape[0]
    if len(uv_N2) == 0:
        return np.zeros((T, 0, 2)), np.zeros((T, 0))
    rows = np.floor(uv_N2[:, 1]).astype(np.int64)
    cols = np.floor(uv_N2[:, 0]).astype(np.int64)
    d_N = view.depth_THW[t_N, rows, cols].astype(np.float64)
    p_w = backproject(uv_N2, d_N, view.cam_pos_T3[t_N], view.cam_mat_T33[t_N], view.cam)  # (N, 3)
    p_l = world_to_local(p_w, body_pos_TB3[t_N, body_N], body_mat_TB33[t_N, body_N])  # (N, 3)
    p_w_TN3 = local_to_world(p_l[None], body_pos_TB3[:, body_N], body_mat_TB33[:, body_N])
    uv_TN2, depth_TN = project(p_w_TN3, view.cam_pos_T3[:, None], view.cam_mat_T33[:, None], view.cam)
    return uv_TN2, depth_TN
