"""Token-choice router: fp32 logits -> top-k expert ids -> gate weights.

Legend: T tokens, D model dim, E experts, K chosen experts per token.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import MoEConfig


class Router(nn.Module):
    """Token-choice router: fp32 logits g = x W^T (E x D weight), optional trainable noise
    (Shazeer et al. 2017 eqs. 4-5), top-k selection and gate weights per `MoEConfig.gate`
    (Tra-MoE paper eq. 1, TrajMoE paper eq. 1, Switch Transformer, Fedus et al.)."""

    def __init__(self, cfg: MoEConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.weight_ED = nn.Parameter(torch.empty(cfg.num_experts, cfg.dim))
        nn.init.normal_(self.weight_ED, std=cfg.dim**-0.5 * 0.1)
        # Shazeer et al. 2017 eq. 4-5: trainable noise scale, zero-init so noise starts at softplus(0).
        self.noise_ED = nn.Parameter(torch.zeros(cfg.num_experts, cfg.dim)) if cfg.noisy_gating else None

    def forward(self, x_TD: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Route tokens x_TD (T, D) -> (logits_TE fp32, probs_TE fp32, expert_ids_TK int64, gate_weights_TK fp32).

        probs_TE is the softmax over all E logits; the noise (if configured) is added in training only.
        """
        # Router math in fp32: bf16 logits flip top-1 choices and destabilise softmax (ST-MoE Sec. 3).
        with torch.autocast(device_type=x_TD.device.type, enabled=False):
            x32 = x_TD.float()
            logits_TE = F.linear(x32, self.weight_ED.float())
            if self.noise_ED is not None and self.training:
                std_TE = F.softplus(F.linear(x32, self.noise_ED.float()))
                logits_TE = logits_TE + torch.randn_like(logits_TE) * std_TE
            probs_TE = logits_TE.softmax(dim=-1)
            expert_ids_TK, gates_TK = select(logits_TE, probs_TE, self.cfg.top_k, self.cfg.gate)
        return logits_TE, probs_TE, expert_ids_TK, gates_TK


def select(logits_TE: torch.Tensor, probs_TE: torch.Tensor, k: int, gate: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k selection and gate weighting (see MoEConfig.gate for the four rules).

    Args:
        logits_TE: (T, E) fp32 router logits; probs_TE: (T, E) their softmax.
        k: experts per token (K); gate: "softmax" (Switch Transformer, Fedus et al.),
            "topk_softmax" (Tra-MoE paper eq. 1), "renorm" (TrajMoE paper eq. 1) or "top2_ratio"
            (public Tra-MoE code; returns K = 1).

    Returns:
        expert_ids_TK (T, K) int64 and gate weights gates_TK (T, K) fp32.

    Raises:
        ValueError: an unknown gate (MoEConfig rejects it first).
    """
    if k == 1 and gate != "top2_ratio":
        # max is sync-free and ~8x cheaper than topk on GPU for k=1 (docs/performance.md).
        top_logits_TK, ids_TK = logits_TE.max(dim=-1, keepdim=True)
    else:
        kk = 2 if gate == "top2_ratio" else k
        top_logits_TK, ids_TK = logits_TE.topk(kk, dim=-1)
    if gate == "softmax":  # Switch Transformer: raw probability of each chosen expert
        gates_TK = probs_TE.gather(-1, ids_TK)
    elif gate == "topk_softmax":  # Tra-MoE paper eq. 1: softmax(TopK(g))
        gates_TK = top_logits_TK.softmax(dim=-1)
    elif gate == "renorm":  # TrajMoE paper eq. 1: w_i = r_i / sum_{j in S} r_j
        p_TK = probs_TE.gather(-1, ids_TK)
        # k=1: exactly 1 (p/p would leak a rounding-level gradient into the router)
        gates_TK = torch.ones_like(p_TK) if k == 1 else p_TK / p_TK.sum(dim=-1, keepdim=True)
    elif gate == "top2_ratio":  # public Tra-MoE code: p1 / (p1 + p2), expert 2 dropped
        p_T2 = probs_TE.gather(-1, ids_TK)
        gates_TK = p_T2[:, :1] / p_T2.sum(dim=-1, keepdim=True)
        ids_TK = ids_TK[:, :1]
    else:  # pragma: no cover - validated by MoEConfig
        raise ValueError(f"unknown gate {gate!r}")
    return ids_TK, gates_TK
