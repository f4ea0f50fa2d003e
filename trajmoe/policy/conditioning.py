"""Trajectory conditioning: fixed query grids and the trajectory mask (Tra-MoE paper Sec. 3.2, Tab. 3).

Legend: B batch (any flattened leading dims), T track timesteps, N points, P drawn points per
track (T, or (T-1)(S+1)+1 with S interpolated points per segment), H/W image.

Mask rules (`rasterize_tracks`):
  * a point (x, y) in [0, 1] (x = u / W, y = v / H with continuous pixel coordinates (u, v),
    pixel centres at +0.5, the convention of trajmoe.envs.tracks) lies in pixel
    (col, row) = (floor(x W), floor(y H)); a point outside [0, 1) x [0, 1), or not finite, is ignored;
  * the value written at a point is `values_T[t]`, t its timestep along the track (interpolated
    points between t and t+1 take t);
  * overlap rule: when several points land on one pixel, the LATEST point along the track wins
    (highest timestep, then highest interpolation position); equal positions from different
    tracks hold the same value, so which track wins does not matter. Latest-wins keeps the
    mask a pure gather of `values_T`, so the gradient of a pixel goes to exactly one value;
  * pixels no point lands on are 0.
Fully vectorised: one scatter_reduce(amax) over all points, no Python loop over points or frames.
"""

from __future__ import annotations

import torch

from ..envs.oracle import grid_points


def query_grid(num_points: int) -> torch.Tensor:
    """Fixed query points (N, 2) as (x, y) in (0, 1): a rows x cols grid of cell centres, rows the
    largest divisor of N not above sqrt(N) (32 -> 4 x 8), row-major. ATM uses grid sampling (Tab. 7).
    The same grid as trajmoe.envs.oracle.grid_points (whose exact future tracks the oracle gives)."""
    return torch.from_numpy(grid_points(num_points))


def drawn_mask_values(track_len: int) -> torch.Tensor:
    """RT-Trajectory style hand-drawn values (Tra-MoE paper Result 4): first half of the track 128/255,
    second half 255/255. (T,)"""
    t = torch.arange(track_len, dtype=torch.float32)
    return torch.where(t < track_len / 2, torch.tensor(128.0 / 255.0), torch.tensor(1.0))


def interpolate_tracks(tracks_BTN2: torch.Tensor, interp: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Add `interp` evenly spaced points inside every segment t -> t+1 so the drawn track is a
    line rather than dots. Returns points_BPN2 and the timestep index of each point t_P (long),
    P = (T-1)(interp+1)+1, points ordered along the track."""
    B, T, N, _ = tracks_BTN2.shape
    device = tracks_BTN2.device
    if interp == 0 or T == 1:
        return tracks_BTN2, torch.arange(T, device=device)
    S1 = interp + 1
    frac_S = torch.arange(S1, device=device, dtype=tracks_BTN2.dtype) / S1
    p0, p1 = tracks_BTN2[:, :-1], tracks_BTN2[:, 1:]  # (B, T-1, N, 2)
    seg = p0[:, :, None] + frac_S[None, None, :, None, None] * (p1 - p0)[:, :, None]  # (B, T-1, S1, N, 2)
    points_BPN2 = torch.cat([seg.reshape(B, (T - 1) * S1, N, 2), tracks_BTN2[:, -1:]], dim=1)
    t_P = torch.cat([torch.arange(T - 1, device=device).repeat_interleave(S1), torch.tensor([T - 1], device=device)])
    return points_BPN2, t_P


def rasterize_tracks(tracks_BTN2: torch.Tensor, values_T: torch.Tensor, height: int, width: int,
                     interp: int = 0) -> torch.Tensor:
    """Trajectory mask (B, H, W): pixel = values_T[t] of the latest track point on it, else 0.

    tracks_BTN2: (B, T, N, 2) in [0, 1] as (x, y); values_T: (T,) (learnable for the adaptive mask;
    the gradient of each pixel reaches exactly the value it gathered). See the module doc for rules.
    """
    if tracks_BTN2.ndim != 4 or tracks_BTN2.shape[-1] != 2:
        raise ValueError(f"tracks must be (B, T, N, 2), got {tuple(tracks_BTN2.shape)}")
    B, T, N, _ = tracks_BTN2.shape
    if values_T.shape != (T,):
        raise ValueError(f"values must be ({T},) (one per track timestep), got {tuple(values_T.shape)}")
    device = tracks_BTN2.device
    points_BPN2, t_P = interpolate_tracks(tracks_BTN2.detach().float(), interp)
    P = points_BPN2.shape[1]
    col = torch.floor(points_BPN2[..., 0] * width)  # (B, P, N) pixel containing the point
    row = torch.floor(points_BPN2[..., 1] * height)
    inside = (col >= 0) & (col < width) & (row >= 0) & (row < height)  # NaN compares False
    HW = height * width
    b_B11 = torch.arange(B, device=device).view(B, 1, 1)
    flat = b_B11 * HW + row.clamp(0, height - 1).long() * width + col.clamp(0, width - 1).long()
    flat = torch.where(inside, flat, torch.full_like(flat, B * HW))  # ignored points -> a spare slot
    # Ordering key along the track: point index p (later = larger); latest wins via amax.
    key = torch.arange(P, device=device).view(1, P, 1).expand(B, P, N)
    best = torch.full((B * HW + 1,), -1, dtype=torch.long, device=device)
    best = best.scatter_reduce(0, flat.reshape(-1), key.reshape(-1), reduce="amax", include_self=True)
    best = best[: B * HW]
    hit = best >= 0
    vals = values_T[t_P[best.clamp(min=0)]]  # gather: gradient flows to the gathered values only
    mask = torch.where(hit, vals, torch.zeros((), dtype=values_T.dtype, device=device))
    return mask.view(B, height, width)
