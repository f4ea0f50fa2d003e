"""The trajectory-guided policy's registration in `trajmoe.families`."""

from __future__ import annotations

import torch

from ..families import Family, register
from .config import PRESETS, PolicyConfig
from .io import from_run
from .model import TrajectoryPolicy
from .train import fit, resolve


def evaluate(run: str, data: str | None = None, **options) -> dict:
    """Closed-loop success of a policy run: on MetaWorld's held-out variations of its tasks (`data` None,
    `trajmoe.policy.rollout.evaluate_policy`) or on the LIBERO suite named by `data` (`evaluate_libero`);
    `options` are those functions' keyword arguments."""
    from .rollout import evaluate_libero, evaluate_policy  # lazy: the simulators load only to evaluate

    return evaluate_libero(run, data, **options) if data else evaluate_policy(run, **options)


def example_batch(cfg: PolicyConfig, batch_size: int = 2, seed: int = 0) -> dict[str, torch.Tensor]:
    """A small training batch for `cfg` (random frames, proprioception and actions; the oracle
    conditioning's exact tracks; the second window's first frame padding)."""
    g = torch.Generator().manual_seed(seed)
    F, V, B = cfg.frame_stack, len(cfg.views), batch_size
    extra = {}
    if cfg.conditioning == "oracle":
        extra["tracks"] = torch.rand(B, F, V, cfg.track_len, cfg.num_points, 2, generator=g)
    valid = torch.ones(B, F, dtype=torch.bool)
    valid[1:, 0] = False
    return {**extra, "rgb": torch.randint(0, 256, (B, F, V, 3, cfg.img_size, cfg.img_size), generator=g, dtype=torch.uint8),
            "proprio": torch.randn(B, F, cfg.proprio_dim, generator=g), "task_emb": torch.randn(B, cfg.lang_dim, generator=g),
            "actions": torch.rand(B, F, cfg.action_dim, generator=g) * 2 - 1, "valid": valid}


FAMILY = register(Family("policy", PolicyConfig, PRESETS, resolve, TrajectoryPolicy, fit, from_run, evaluate, example_batch))
