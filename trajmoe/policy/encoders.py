"""Token encoders of the ATM policy: images (+ optional mask channel), tracks, language, proprio.

Legend: B batch (any flattened leading dims), C channels, H/W image, P image tokens, T track
timesteps, N points, D model dim.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ..nn import sincos_2d


class PatchEncoder(nn.Module):
    """ATM's image encoder: 7x7 stride-2 conv + BN + ReLU, then a patch x patch conv with stride
    patch -> (H / 2 / patch)^2 tokens, plus a fixed 2D sin-cos position embedding (MAE).
    Input in [-1, 1] for RGB; the mask channel (when present) is appended as is."""

    def __init__(self, in_chans: int, img_size: int, conv_channels: int, patch: int, dim: int) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_chans, conv_channels, kernel_size=7, stride=2, padding=3, bias=False),
            nn.BatchNorm2d(conv_channels),
            nn.ReLU(inplace=True),
        )
        self.proj = nn.Conv2d(conv_channels, dim, kernel_size=patch, stride=patch)
        grid = img_size // 2 // patch
        self.register_buffer("pos_embed", sincos_2d(dim, grid, grid), persistent=False)  # (P, D)

    def forward(self, img_BCHW: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) image -> (B, P, D) patch tokens plus the fixed 2D sin-cos position embedding."""
        x = self.proj(self.stem(img_BCHW))  # (B, D, g, g)
        return x.flatten(2).transpose(1, 2) + self.pos_embed  # (B, P, D)


class TrackEncoder(nn.Module):
    """One token per track: a temporal patch embed spanning the whole track (Conv1d(2 -> D,
    kernel = stride = T), written as a Linear over the flattened (T, 2) track), plus a learnable
    per-point embedding (the query grid is fixed, so point n always starts at the same place).
    The absolute track is fed (its t = 0 entry is the query point), centred to [-1, 1]."""

    def __init__(self, track_len: int, num_points: int, dim: int) -> None:
        super().__init__()
        self.proj = nn.Linear(track_len * 2, dim)
        self.point_embed = nn.Parameter(torch.zeros(num_points, dim))
        nn.init.trunc_normal_(self.point_embed, std=0.02)

    def forward(self, tracks_BTN2: torch.Tensor) -> torch.Tensor:
        """(B, T, N, 2) tracks in [0, 1] -> (B, N, D): one token per track (rescaled to [-1, 1])."""
        # (B, T, N, 2) -> (B, N, T*2): each track flattened over time
        x = tracks_BTN2.permute(0, 2, 1, 3).flatten(2) * 2.0 - 1.0
        return self.proj(x) + self.point_embed  # (B, N, D)


class MLP(nn.Module):
    """Linear-GELU-Linear-GELU-Linear action head (ATM's deterministic head)."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(in_dim, hidden), nn.GELU(), nn.Dropout(dropout),
            nn.Linear(hidden, hidden), nn.GELU(), nn.Dropout(dropout),
            nn.Linear(hidden, out_dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(..., in) -> (..., out)."""
        return self.net(x)
