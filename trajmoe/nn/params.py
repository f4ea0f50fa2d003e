"""Parameter counts of any trajmoe model, MoE-aware: one result type for every family."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch.nn as nn

from ..moe import MoE


@dataclass(frozen=True)
class ParamCount:
    """total: parameters of the module (a policy's frozen track model is not one of its modules);
    active_per_token: total minus, in every MoE layer, the idle routed experts (E - k of them) and the
    router (E x D, 0.03% of `tramoe`), so a top-1 MoE model and its dense twin report the same count."""

    total: int
    active_per_token: int

    def as_dict(self) -> dict[str, int]:
        """{"total": ..., "active_per_token": ...} for a run's config.json."""
        return asdict(self)


def count_params(model: nn.Module) -> ParamCount:
    """ParamCount of `model`; shared experts count as active (every token uses them)."""
    total = sum(p.numel() for p in model.parameters())
    inactive = 0
    for moe in model.modules():
        if isinstance(moe, MoE):
            per_expert = sum(p.numel() for p in moe.experts.parameters()) // moe.cfg.num_experts
            inactive += (moe.cfg.num_experts - moe.cfg.top_k) * per_expert + sum(p.numel() for p in moe.router.parameters())
    return ParamCount(total, total - inactive)
