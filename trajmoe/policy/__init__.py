"""trajmoe.policy: ATM-style trajectory-guided BC policy with (adaptive) trajectory-mask conditioning.

`PolicyConfig` imports without torch; the rest loads on first use so `trajmoe --help` stays fast.
"""

from __future__ import annotations

import importlib
from typing import Any

from .config import CONDITIONINGS, PRESETS, PolicyConfig, PolicyDataConfig

_LAZY = {
    "TrajectoryPolicy": "trajmoe.policy.model",
    "rasterize_tracks": "trajmoe.policy.conditioning",
    "evaluate_policy": "trajmoe.policy.rollout",
    "bench_policy": "trajmoe.policy.bench",
}

__all__ = ["CONDITIONINGS", "PRESETS", "PolicyConfig", "PolicyDataConfig", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'trajmoe.policy' has no attribute {name!r}")
