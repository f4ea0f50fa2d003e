"""trajmoe.train: the one Trainer (AdamW, warm-up + cosine, clipping, bf16 autocast, EMA,
atomic safetensors checkpoints, exact resume, DDP) and checkpoint helpers.

`TrainConfig` imports without torch; the rest is loaded on first use so `trajmoe --help` stays fast.
"""

from __future__ import annotations

import importlib
from typing import Any

from trajmoe.train.config import TrainConfig

_LAZY = {
    "Trainer": "trajmoe.train.trainer",
    "TrainingError": "trajmoe.train.trainer",
    "save_weights": "trajmoe.train.checkpoint",
    "load_weights": "trajmoe.train.checkpoint",
    "load_run_config": "trajmoe.train.checkpoint",
}

__all__ = ["TrainConfig", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'trajmoe.train' has no attribute {name!r}")
