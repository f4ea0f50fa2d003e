"""The sparse MoE FFN layer shared by Tra-MoE (Tra-MoE paper) and TrajMoE (TrajMoE paper).

    y(x) = sum_{i in S(x)} w(i; x) * e_i(x)  +  sum_j e0_j(x)        (TrajMoE paper eq. 2)

with S(x) the top-k experts of the fp32 router, w the gate weights (MoEConfig.gate) and e0 the
always-on shared experts. Dropless: every token is processed by all its k experts.
Legend: T tokens, D model dim, E experts, K chosen experts per token.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from . import dispatch
from .config import MoEConfig
from .experts import FeedForward, StackedExperts
from .losses import cv2_from_stats, expert_counts, load_balance_loss, router_z_loss
from .router import Router
from .stats import RoutingStats, expand_domain_ids


class MoE(nn.Module):
    """forward(x (..., D), domain_ids=None) -> (y (..., D), aux dict).

    aux: router_logits (T,E) fp32, router_probs (T,E), expert_ids (T,K), gate_weights (T,K),
    z_loss, balance_loss (Switch), cv2_loss (importance + load), tokens_per_expert (E,) for this
    call. The layer never adds the losses to anything: models sum the ones they are configured to use.
    """

    def __init__(self, cfg: MoEConfig) -> None:
        super().__init__()
        if cfg.dim is None:
            raise ValueError("MoEConfig.dim is unset: bind the config to its host width first (MoEConfig.bind)")
        self.cfg = cfg
        self.router = Router(cfg)
        self.experts = StackedExperts(cfg.num_experts, cfg.dim, cfg.hidden_dim, cfg.activation, cfg.dropout, cfg.bias)
        self.shared = nn.ModuleList(
            FeedForward(cfg.dim, cfg.hidden_dim, cfg.activation, cfg.dropout, cfg.bias)
            for _ in range(cfg.num_shared_experts)
        )
        self.stats = RoutingStats(cfg.num_experts, cfg.num_domains)

    @property
    def domain_counts(self) -> torch.Tensor:
        """(num_domains, E) int64 tokens routed per domain and expert since the last `stats.reset()`."""
        return self.stats.domain_counts

    def forward(self, x: torch.Tensor, domain_ids: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
        """Route every token to its top-k experts, weight and sum their outputs, add the shared experts.

        Args:
            x: (..., D) tokens; the leading dims are flattened to T tokens.
            domain_ids: optional (B,) per sequence or (...) per token domain ids in
                [0, num_domains), counted in the routing statistics only.

        Returns:
            y (..., D) (TrajMoE paper eq. 2) and the aux dict described in the class docstring:
            z_loss (Tra-MoE paper eq. 8, after ST-MoE, Zoph et al.), balance_loss (Tra-MoE paper
            eqs. 5-7, Switch Transformer, Fedus et al.), cv2_loss (TrajMoE paper eqs. 3-4).

        Raises:
            ValueError: the last dim of x is not D, or domain_ids have a wrong shape / range
                (or are given with num_domains = 0).
        """
        if x.shape[-1] != self.cfg.dim:
            raise ValueError(f"MoE expects last dim {self.cfg.dim}, got input shape {tuple(x.shape)}")
        lead = x.shape[:-1]
        dom_T = expand_domain_ids(domain_ids, lead, self.cfg.num_domains)
        x_TD = x.reshape(-1, self.cfg.dim)
        logits_TE, probs_TE, ids_TK, gates_TK = self.router(x_TD)
        if self.cfg.impl == "loop":
            y_TD = self._loop(x_TD, ids_TK, gates_TK)
        else:
            y_TD = self._grouped(x_TD, ids_TK, gates_TK)
        for ffn in self.shared:
            y_TD = y_TD + ffn(x_TD)
        self.stats.update(ids_TK, dom_T)  # (under no_grad)

        E = self.cfg.num_experts
        counts_E = expert_counts(ids_TK, E)  # counted once: stats, Q_i (eq. 5) and load L_e (eq. 3)
        # importance I_e (TrajMoE paper eq. 3): gate weights summed per expert, without a (T, E) matrix
        importance_E = gates_TK.new_zeros(E, dtype=torch.float32).scatter_add(0, ids_TK.reshape(-1), gates_TK.reshape(-1).float())
        aux = {
            "router_logits": logits_TE,
            "router_probs": probs_TE,
            "expert_ids": ids_TK,
            "gate_weights": gates_TK,
            "z_loss": router_z_loss(logits_TE),
            "balance_loss": load_balance_loss(probs_TE, ids_TK, counts_E),
            "cv2_loss": cv2_from_stats(importance_E, counts_E.float()),
            "tokens_per_expert": counts_E,
        }
        return y_TD.reshape(*lead, self.cfg.dim), aux

    def _loop(self, x_TD: torch.Tensor, ids_TK: torch.Tensor, gates_TK: torch.Tensor) -> torch.Tensor:
        """Reference: for each expert, gather its tokens, run it, add gate * output back."""
        out_TD = torch.zeros_like(x_TD)
        for e in range(self.cfg.num_experts):
            tok, slot = torch.nonzero(ids_TK == e, as_tuple=True)
            if tok.numel() == 0:
                continue
            y = self.experts.expert(e, x_TD[tok])
            out_TD = out_TD.index_add(0, tok, (gates_TK[tok, slot].unsqueeze(-1) * y).to(out_TD.dtype))
        return out_TD

    def _grouped(self, x_TD: torch.Tensor, ids_TK: torch.Tensor, gates_TK: torch.Tensor) -> torch.Tensor:
        """Sort by expert once; both GEMMs share the plan; un-sort, gate and sum over K in one gather.

        Under autocast the experts run in the autocast dtype (weights cast once per call, as
        nn.Linear does); the output is in that dtype then, else in x's dtype.
        """
        ex = self.experts
        plan = dispatch.make_plan(ids_TK, self.cfg.num_experts)
        w1, w2, b1, b2 = ex.w1_EDH, ex.w2_EHD, ex.b1_EH, ex.b2_ED
        autocast = torch.is_autocast_enabled(x_TD.device.type)
        compute_dtype = torch.get_autocast_dtype(x_TD.device.type) if autocast else x_TD.dtype
        if compute_dtype != w1.dtype:
            w1, w2 = w1.to(compute_dtype), w2.to(compute_dtype)
            b1 = b1.to(compute_dtype) if b1 is not None else None
            b2 = b2.to(compute_dtype) if b2 is not None else None
        x_SD = dispatch.permute_in(x_TD.to(compute_dtype), plan)
        h_SH = ex.drop(ex.act(dispatch.grouped_linear(x_SD, w1, b1, plan)))
        y_SD = ex.drop(dispatch.grouped_linear(h_SH, w2, b2, plan))
        out_TD = dispatch.combine(y_SD, gates_TK, plan)
        return out_TD if autocast else out_TD.to(x_TD.dtype)
