"""Auxiliary MoE losses, each a pure function of router outputs (the layer never sums them), and
`add_moe_aux`: the one place a model sums them over its MoE layers, weights them and logs them.

Shapes: T tokens, E experts, K chosen experts per token.
"""

from __future__ import annotations

import torch

# The key of a config's `balance_loss` in every MoE layer's aux dict (`MoE.forward`).
BALANCE_KEYS = {"switch": "balance_loss", "cv2": "cv2_loss"}


def add_moe_aux(loss: torch.Tensor, logs: dict, cfg, auxes: list[dict | None]) -> torch.Tensor:
    """`loss` + balance_weight * (the configured balance loss) + z_weight * z-loss, each summed over
    the MoE layers (TrajMoE paper: "summing the balancing losses from all MoE layers"; Tra-MoE paper
    Sec. 3.3, TrajMoE paper eq. 4). `logs` gains "z_loss" and the balance loss under its key
    ("balance_loss" or "cv2_loss"), detached. A model without MoE layers (`cfg.layers` empty) is unchanged.

    Args:
        cfg: the model's `MoEConfig`; auxes: one entry per block, its MoE aux dict or None (dense block).
    """
    present = [a for a in auxes if a is not None]
    if not cfg.layers or not present:
        return loss
    total = {k: torch.stack([a[k] for a in present]).sum() for k in ("z_loss", BALANCE_KEYS[cfg.balance_loss])}
    balance = total[BALANCE_KEYS[cfg.balance_loss]]
    logs.update({k: v.detach() for k, v in total.items()})
    return loss + (cfg.balance_weight * balance + cfg.z_weight * total["z_loss"]).to(loss.device)


def load_balance_loss(probs_TE: torch.Tensor, expert_ids_TK: torch.Tensor,
                      counts_E: torch.Tensor | None = None) -> torch.Tensor:
    """Switch / GShard load-balancing loss, Tra-MoE paper eqs. 5-7: L = N * sum_i Q_i * P_i.

    Q_i: fraction of token slots dispatched to expert i (eq. 5; for top-1 the argmax), not
    differentiable. P_i: mean router probability of expert i over tokens (eq. 6), using the full
    softmax as in Switch Transformer (with eq. 1's top-k softmax and k=1, P would equal Q and carry
    no gradient). Equals 1 at perfect balance, N when everything goes to one expert.
    """
    num_experts = probs_TE.shape[-1]
    if counts_E is None:  # slots per expert; the layer passes the counts it already has
        counts_E = expert_counts(expert_ids_TK, num_experts)
    q_E = counts_E.float() / max(expert_ids_TK.numel(), 1)
    p_E = probs_TE.float().mean(dim=0)
    return num_experts * torch.sum(q_E * p_E)


def router_z_loss(logits_TE: torch.Tensor) -> torch.Tensor:
    """Router z-loss (ST-MoE, Zoph et al. 2022), Tra-MoE paper eq. 8: mean_t (logsumexp_i g_i(t))^2."""
    return torch.logsumexp(logits_TE.float(), dim=-1).pow(2).mean()


def cv_squared(v: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """Squared coefficient of variation Var(v) / Mean(v)^2 (population variance), 0 for one expert."""
    v = v.float()
    if v.numel() <= 1:
        return v.new_zeros(())
    return v.var(correction=0) / (v.mean().pow(2) + eps)


def expert_counts(expert_ids_TK: torch.Tensor, num_experts: int) -> torch.Tensor:
    """(E,) int64 slots routed to each expert (scatter_add: no host sync, unlike bincount on CUDA)."""
    flat = expert_ids_TK.reshape(-1)
    return torch.zeros(num_experts, dtype=torch.int64, device=flat.device).scatter_add_(0, flat, torch.ones_like(flat))


def cv2_from_stats(importance_E: torch.Tensor, load_E: torch.Tensor) -> torch.Tensor:
    """TrajMoE paper eq. 4 from the per-expert sums of eq. 3: CV^2(I) + CV^2(L)."""
    return cv_squared(importance_E) + cv_squared(load_E)


def cv2_balance_loss(gates_TE: torch.Tensor) -> torch.Tensor:
    """Importance + load balance loss, TrajMoE paper eqs. 3-4 (after Shazeer et al. 2017).

    gates_TE: the sparse gating matrix (the chosen experts' gate weights, 0 elsewhere).
    I_e = sum_t gates[t, e] (importance, differentiable); L_e = sum_t 1(gates[t, e] > 0) (load,
    a count, no gradient). L = CV^2(I) + CV^2(L).
    Eq. 3 writes P as "router probabilities after softmax"; read literally (dense softmax) every
    entry is > 0 and L_e would be the constant T, so P is read as the sparse gate matrix, as in
    Shazeer et al. (the paper's ref. [10]).
    """
    return cv2_from_stats(gates_TE.float().sum(dim=0), (gates_TE > 0).float().sum(dim=0))
