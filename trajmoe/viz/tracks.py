"""Ground-truth tracks of an episode file drawn on its frames -> PNG (a few frames), GIF or MP4 (all).

At frame t every point's next `horizon` positions are drawn as a polyline in the point's colour
(colour = hue from the point's position at frame t, so neighbours look alike); the point itself
is a filled dot when visible at t and a hollow grey ring when occluded (or outside the image).
Views are placed side by side; frames are upscaled by `scale` (nearest) so lines stay thin.
Pure numpy drawing, no matplotlib: fast enough for a GIF of a whole episode.
Legend: T frames, N points, H/W frame height/width (px), s = `scale`.
"""

from __future__ import annotations

import colorsys
from pathlib import Path

import numpy as np

from ..io import atomic_path
from .video import write_video

OCCLUDED_RGB = np.array([150, 150, 150], dtype=np.uint8)


def _colours(xy_N2: np.ndarray) -> np.ndarray:
    """(N, 3) uint8: hue from x, value from y (stable while the points move)."""
    out = np.empty((len(xy_N2), 3), dtype=np.uint8)
    for i, (x, y) in enumerate(np.clip(xy_N2, 0, 1)):
        r, g, b = colorsys.hsv_to_rgb(0.85 * float(x), 0.9, 0.55 + 0.45 * float(y))
        out[i] = (int(255 * r), int(255 * g), int(255 * b))
    return out


def _disc(img: np.ndarray, cx: float, cy: float, r: float, rgb: np.ndarray, ring: bool = False) -> None:
    H, W, _ = img.shape
    x0, x1 = int(max(0, np.floor(cx - r - 1))), int(min(W, np.ceil(cx + r + 1)))
    y0, y1 = int(max(0, np.floor(cy - r - 1))), int(min(H, np.ceil(cy + r + 1)))
    if x0 >= x1 or y0 >= y1:
        return
    yy, xx = np.mgrid[y0:y1, x0:x1]
    d = np.hypot(xx + 0.5 - cx, yy + 0.5 - cy)
    mask = (d <= r) & (d >= r - 1.2) if ring else d <= r
    img[y0:y1, x0:x1][mask] = rgb


def _polylines(img: np.ndarray, pix_TN2: np.ndarray, colours_N3: np.ndarray) -> None:
    """Draw every point's polyline (T, N, 2) at once by dense sampling of each segment."""
    H, W, _ = img.shape
    p, q = pix_TN2[:-1], pix_TN2[1:]  # (T-1, N, 2)
    if p.size == 0:
        return
    n = int(np.ceil(np.abs(q - p).max() * 2)) + 2  # samples per segment (<= 0.5 px apart)
    s = np.linspace(0.0, 1.0, n)[:, None, None, None]  # (S, 1, 1, 1)
    pts = p[None] * (1 - s) + q[None] * s  # (S, T-1, N, 2)
    cols = np.clip(pts[..., 0].astype(int), 0, W - 1)
    rows = np.clip(pts[..., 1].astype(int), 0, H - 1)
    img[rows, cols] = colours_N3[None, None, :, :].repeat(rows.shape[0], 0).repeat(rows.shape[1], 1)


def draw_tracks_on_frame(frame_HW3: np.ndarray, tracks_TN2: np.ndarray, vis_N: np.ndarray, scale: int = 3,
                         colours_N3: np.ndarray | None = None) -> np.ndarray:
    """One frame (H, W, 3) uint8 with tracks (T, N, 2) in [0, 1] from this frame on -> (sH, sW, 3).

    vis_N: (N,) bool, visible at this frame (hollow grey ring otherwise); scale: s, nearest
    upscaling; colours_N3: (N, 3) uint8 per-point colours (from the positions when None).
    """
    img = np.repeat(np.repeat(frame_HW3, scale, axis=0), scale, axis=1).copy()
    H, W = frame_HW3.shape[:2]
    pix = tracks_TN2 * np.array([W, H]) * scale  # (T, N, 2) in upscaled pixels
    colours = _colours(tracks_TN2[0]) if colours_N3 is None else colours_N3
    _polylines(img, pix, colours)
    for n in range(pix.shape[1]):
        cx, cy = pix[0, n]
        if vis_N[n]:
            _disc(img, cx, cy, 1.6 + 0.3 * scale, colours[n])
        else:
            _disc(img, cx, cy, 1.6 + 0.3 * scale, OCCLUDED_RGB, ring=True)
    return img


def render_episode_frames(path: str | Path, frames: list[int] | None = None, horizon: int = 16, scale: int = 3,
                          max_points: int | None = 64, views: list[str] | None = None) -> list[np.ndarray]:
    """Frames of an episode with tracks drawn, views side by side; `frames=None` means all.

    Returns one (sH, s * W * len(views), 3) uint8 image per frame; at most `max_points` tracks per
    view (evenly subsampled), each drawn `horizon` frames ahead.

    Raises:
        ValueError: a view the file lacks, or a frame outside 0..T-1 (the message names the file).
    """
    from ..data.atm_hdf5 import open_episode

    out = []
    with open_episode(path) as ep:
        views = list(views or ep.meta.views)
        for v in views:
            if v not in ep.meta.views:
                raise ValueError(f"{path}: no view {v!r}; views: {', '.join(ep.meta.views)}")
        T = ep.meta.length
        idx = list(range(T)) if frames is None else [int(f) for f in frames]
        for f in idx:
            if not 0 <= f < T:
                raise ValueError(f"{path}: frame {f} out of range 0..{T - 1}")
        per_view = []
        for v in views:
            video = ep.frames(v, idx, channels_last=True)
            tracks, vis = ep.tracks(v), ep.vis(v)
            n = tracks.shape[1]
            keep = np.arange(n) if max_points is None or n <= max_points else np.linspace(0, n - 1, max_points).round().astype(int)
            tracks, vis = tracks[:, keep], vis[:, keep]
            colours = _colours(tracks[0])
            imgs = []
            for k, f in enumerate(idx):
                steps = np.minimum(np.arange(f, f + horizon), T - 1)
                imgs.append(draw_tracks_on_frame(video[k], tracks[steps], vis[f], scale, colours))
            per_view.append(imgs)
        for k in range(len(idx)):
            out.append(np.concatenate([pv[k] for pv in per_view], axis=1))
    return out


def save_track_picture(path: str | Path, out: str | Path, num_frames: int = 4, horizon: int = 16, scale: int = 3,
                       fps: int = 10, max_points: int | None = 64) -> Path:
    """PNG: `num_frames` evenly spaced frames stacked vertically (views side by side); GIF or MP4:
    every frame, at `fps`. Raises ValueError for another suffix or a non-positive setting."""
    import imageio.v2 as imageio

    from ..data.atm_hdf5 import open_episode

    out = Path(out)
    suffix = out.suffix.lower()
    if suffix not in (".png", ".gif", ".mp4"):
        raise ValueError(f"--out must end in .png, .gif or .mp4, got {out}")
    if num_frames <= 0 or horizon <= 0 or scale <= 0:
        raise ValueError(f"frames, horizon and scale must be positive, got {num_frames}, {horizon}, {scale}")
    with open_episode(path) as ep:
        T = ep.meta.length
    if suffix == ".png":
        idx = np.unique(np.linspace(0, max(T - 1, 0), num_frames).round().astype(int)).tolist()
        rows = render_episode_frames(path, idx, horizon, scale, max_points)
        sep = np.full((4, rows[0].shape[1], 3), 255, np.uint8)
        img = np.concatenate([x for r in rows for x in (r, sep)][:-1], axis=0)
        with atomic_path(out) as tmp:
            imageio.imwrite(tmp, img, format="PNG")
    else:
        write_video(out, render_episode_frames(path, None, horizon, scale, max_points), fps)
    return out
