"""Image augmentations applied consistently to a frame and its point tracks (ATM's recipe:
ColorJitter + RandomShift). Randomness comes only from the numpy Generator passed in, so a
sample is a pure function of (index, rng seed) and training resumes exactly.

Images are float32 (H, W, 3) in [0, 1]; tracks are (..., 2) as (x = col/W, y = row/H).
"""

from __future__ import annotations

import numpy as np

_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def color_jitter(img_HW3: np.ndarray, rng: np.random.Generator, brightness: float = 0.2,
                 contrast: float = 0.2, saturation: float = 0.2) -> np.ndarray:
    """torchvision-style ColorJitter factors drawn from [1 - s, 1 + s] (no hue shift)."""
    out = img_HW3
    b = rng.uniform(1 - brightness, 1 + brightness)
    c = rng.uniform(1 - contrast, 1 + contrast)
    s = rng.uniform(1 - saturation, 1 + saturation)
    out = out * b
    gray_mean = float((out @ _LUMA).mean())
    out = (out - gray_mean) * c + gray_mean
    gray = (out @ _LUMA)[..., None]
    out = (out - gray) * s + gray
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def random_shift(img_HW3: np.ndarray, tracks_N2: np.ndarray | None, rng: np.random.Generator,
                 pad: int = 4) -> tuple[np.ndarray, np.ndarray | None, tuple[int, int]]:
    """DrQ's RandomShift: replicate-pad by `pad`, crop back at a random offset.

    The content moves by (sx, sy) = (pad - ox, pad - oy) pixels, so a point at column u moves to
    u + sx: x += sx / W, and y += sy / H (the public Tra-MoE code added the vertical shift to x).
    Returns (image, shifted tracks, (sx, sy)).
    """
    H, W = img_HW3.shape[:2]
    ox, oy = (int(v) for v in rng.integers(0, 2 * pad + 1, size=2))
    padded = np.pad(img_HW3, ((pad, pad), (pad, pad), (0, 0)), mode="edge")
    out = padded[oy : oy + H, ox : ox + W]
    sx, sy = pad - ox, pad - oy
    if tracks_N2 is not None:
        tracks_N2 = tracks_N2 + np.array([sx / W, sy / H], dtype=np.float32)
    return np.ascontiguousarray(out), tracks_N2, (sx, sy)
