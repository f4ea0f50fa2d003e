"""Frames -> a video file: MP4 (H.264 through imageio-ffmpeg, whose wheel ships the ffmpeg binary)
or GIF (what a markdown report can embed as an image). The format follows the file's suffix."""

from __future__ import annotations

from pathlib import Path

import imageio.v2 as imageio
import numpy as np

from ..io import atomic_path

VIDEO_FORMATS = ("mp4", "gif")


def write_video(path: str | Path, frames: list[np.ndarray], fps: float = 20.0) -> Path:
    """Write `frames` (each (H, W, 3) uint8, all the same size) to `path` (.mp4 or .gif) at `fps`
    frames per second, atomically. Raises ValueError for another suffix or no frames."""
    path = Path(path)
    fmt = path.suffix.lower().lstrip(".")
    if fmt not in VIDEO_FORMATS:
        raise ValueError(f"video path must end in .mp4 or .gif, got {path}")
    if not frames:
        raise ValueError(f"no frames to write to {path}")
    with atomic_path(path, suffix=f".tmp.{fmt}") as tmp:
        if fmt == "gif":
            imageio.mimsave(tmp, frames, format="GIF", duration=1.0 / fps, loop=0)
        else:  # yuv420p needs even sides: macro_block_size=2 resizes an odd side up by one pixel
            imageio.mimsave(tmp, frames, format="FFMPEG", fps=fps, codec="libx264", pixelformat="yuv420p",
                            macro_block_size=2, quality=7)
    return path
