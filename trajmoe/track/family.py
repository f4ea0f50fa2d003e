"""The track model's registration in `trajmoe.families`."""

from __future__ import annotations

import torch

from ..families import Family, register
from .config import PRESETS, TrackConfig
from .io import from_run
from .model import TrackModel
from .run import evaluate_track, fit, resolve


def example_batch(cfg: TrackConfig, batch_size: int = 2, seed: int = 0) -> dict[str, torch.Tensor]:
    """A small training batch for `cfg`: a gradient image, points drifting towards the centre, all visible."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, cfg.img_size), torch.linspace(0, 1, cfg.img_size), indexing="ij")
    start = torch.rand(batch_size, 1, cfg.num_points, 2, generator=g) * 0.6 + 0.2
    t = torch.arange(cfg.track_len).view(1, -1, 1, 1).float()
    return {"image": torch.stack([xx, yy, (xx + yy) / 2])[None].repeat(batch_size, 1, 1, 1),
            "tracks": start + (0.5 - start) * 0.04 * t, "vis": torch.ones(batch_size, cfg.track_len, cfg.num_points),
            "task_emb": torch.randn(batch_size, cfg.lang_dim, generator=g), "domain": torch.arange(batch_size) % 2}


FAMILY = register(Family("track", TrackConfig, PRESETS, resolve, TrackModel, fit, from_run, evaluate_track, example_batch))
