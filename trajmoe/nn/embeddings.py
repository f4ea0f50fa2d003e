"""Position embeddings and patch embedding shared by the track model and the policy.

Legend: P positions, N points, B batch, C channels, H/W image height/width (px), p patch size (px),
D embedding dim.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn


def sincos_1d(dim: int, positions: np.ndarray) -> np.ndarray:
    """MAE's 1D sin-cos embedding (He et al. 2022; Vaswani et al. 2017 Sec. 3.5): (P,) -> (P, dim).

    Raises:
        ValueError: dim is odd.
    """
    if dim % 2:
        raise ValueError(f"sin-cos embedding dim must be even, got {dim}")
    omega = 1.0 / 10000 ** (np.arange(dim // 2, dtype=np.float64) / (dim / 2.0))
    out = np.einsum("p,d->pd", positions.reshape(-1).astype(np.float64), omega)
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)


def sincos_2d(dim: int, grid_h: int, grid_w: int) -> torch.Tensor:
    """Fixed 2D sin-cos position embedding (MAE, He et al. 2022): (grid_h * grid_w, dim), row-major.

    The first dim/2 channels encode the row, the rest the column. Raises ValueError if dim % 4 != 0.
    """
    if dim % 4:
        raise ValueError(f"2D sin-cos embedding dim must be divisible by 4, got {dim}")
    gy, gx = np.meshgrid(np.arange(grid_h), np.arange(grid_w), indexing="ij")
    emb = np.concatenate([sincos_1d(dim // 2, gy), sincos_1d(dim // 2, gx)], axis=1)
    return torch.from_numpy(emb).float()


def sincos_2d_at(dim: int, xy_N2: torch.Tensor, grid: int) -> torch.Tensor:
    """`sincos_2d` evaluated at continuous image points: (..., 2) as (x, y) in [0, 1] -> (..., dim).

    A point at the centre of patch (row i, col j) of a `grid` x `grid` patch grid gets exactly row
    i * grid + j of `sincos_2d(dim, grid, grid)`, so attention can match a point to its patch with
    one dot product. Raises ValueError if dim is not divisible by 4.
    """
    if dim % 4:
        raise ValueError(f"2D sin-cos embedding dim must be divisible by 4, got {dim}")
    half = dim // 2
    omega = 1.0 / 10000 ** (torch.arange(half // 2, dtype=torch.float32, device=xy_N2.device) / (half / 2.0))
    pos = xy_N2.float() * grid - 0.5  # patch-centre coordinates
    out = []
    for c in (1, 0):  # rows (y) first, then columns (x), as sincos_2d
        a = pos[..., c : c + 1] * omega
        out += [torch.sin(a), torch.cos(a)]
    return torch.cat(out, dim=-1)


class PatchEmbed(nn.Module):
    """(B, C, H, W) -> (B, H/p * W/p, D) with a strided conv (ViT, Dosovitskiy et al. 2021).

    Args:
        img_size: H = W in px; patch: p in px; in_chans: C; dim: D.

    Raises:
        ValueError: img_size is not divisible by patch.
    """

    def __init__(self, img_size: int, patch: int, in_chans: int, dim: int) -> None:
        super().__init__()
        if img_size % patch:
            raise ValueError(f"image size {img_size} is not divisible by patch size {patch}")
        self.grid = img_size // patch
        self.proj = nn.Conv2d(in_chans, dim, kernel_size=patch, stride=patch)

    def forward(self, img_BCHW: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, H/p * W/p, D) patch tokens, row-major."""
        return self.proj(img_BCHW).flatten(2).transpose(1, 2)
