"""Learning-rate schedule: linear warm-up, then half-cosine decay to min_lr_ratio * lr.

A pure function of the step, so the "scheduler state" saved for resume is just the step count
(no LambdaLR object whose internal counter could drift from the optimizer's).
Cosine decay: Loshchilov & Hutter, SGDR (2017), eq. 5 without restarts; warm-up as in
Goyal et al., "Accurate, Large Minibatch SGD" (2017). Tra-MoE trains with this shape (paper Tab. 6).
"""

from __future__ import annotations

import math

from trajmoe.train.config import TrainConfig


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Learning rate for optimizer step `step` (1-based: the first update is step 1)."""
    if step < 1:
        raise ValueError(f"step must be >= 1, got {step}")
    if cfg.warmup_steps > 0 and step <= cfg.warmup_steps:
        return cfg.lr * step / cfg.warmup_steps
    decay_steps = cfg.steps - cfg.warmup_steps
    if decay_steps <= 0:
        return cfg.lr
    progress = min(1.0, (step - 1 - cfg.warmup_steps) / decay_steps)  # in [0, 1): no wasted lr=min step
    min_lr = cfg.min_lr_ratio * cfg.lr
    return min_lr + (cfg.lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))
