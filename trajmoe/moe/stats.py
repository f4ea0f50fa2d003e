"""Routing statistics: which expert gets how many tokens, per domain.

Counts accumulate in training and eval (under no_grad, sync-free scatter_add) until `reset()`.
They are non-persistent buffers: checkpoints hold weights, not bookkeeping.
Legend: T tokens, K chosen experts per token, E experts, B sequences, L tokens per sequence.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
import torch.nn as nn


class RoutingStats(nn.Module):
    """Token counts per expert (E,) and per (domain, expert) (num_domains, E), int64 buffers.

    Args:
        num_experts: E; num_domains: rows of `domain_counts` (0: no per-domain statistics).
    """

    def __init__(self, num_experts: int, num_domains: int = 0) -> None:
        super().__init__()
        self.num_experts, self.num_domains = num_experts, num_domains
        self.register_buffer("tokens_per_expert", torch.zeros(num_experts, dtype=torch.int64), persistent=False)
        self.register_buffer(
            "domain_counts", torch.zeros(num_domains, num_experts, dtype=torch.int64), persistent=False
        )

    def reset(self) -> None:
        """Zero both count buffers."""
        self.tokens_per_expert.zero_()
        self.domain_counts.zero_()

    @torch.no_grad()
    def update(self, expert_ids_TK: torch.Tensor, domain_ids_T: torch.Tensor | None) -> None:
        """Add one layer call's routing: expert_ids_TK (T, K) int64, domain_ids_T (T,) or None.

        Every one of the K slots of a token counts once (sync-free scatter_add, no gradient).
        """
        flat = expert_ids_TK.reshape(-1)
        self.tokens_per_expert.scatter_add_(0, flat, torch.ones_like(flat))
        if domain_ids_T is None:
            return
        k = expert_ids_TK.shape[-1]
        dom = domain_ids_T.to(flat.device, torch.int64).repeat_interleave(k)
        cell = dom * self.num_experts + flat
        self.domain_counts.view(-1).scatter_add_(0, cell, torch.ones_like(cell))



def expert_shares(layers: Iterable[tuple[int | str, nn.Module]], domain_names: Sequence[str]) -> dict[str, dict]:
    """Per-layer, per-domain expert shares from the routing statistics counted since the last reset.

    layers: (index or name, MoE layer) pairs, e.g. a model's `moe_layers()`; pairs with the same
    name (the members of an ensemble) are summed. domain_names: name of each row of the layers'
    (num_domains, E) counts; rows past its length are dropped.
    Returns {"layer{i}": {"tokens_per_expert": [E ints], "domain_fraction": {domain: [E shares]},
    "busiest_share": {domain: largest share}}}, each domain's shares summing to 1 (4 decimals); a domain
    that routed no token is left out. busiest_share is 1/E for perfectly balanced routing and 1.0 when
    the router sends every token of the domain to one expert (collapse).
    """
    counts: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for key, moe in layers:
        name = f"layer{key}" if isinstance(key, int) else str(key)
        tok, dom = moe.stats.tokens_per_expert.cpu(), moe.stats.domain_counts.cpu()
        if name in counts:
            tok, dom = counts[name][0] + tok, counts[name][1] + dom
        counts[name] = (tok, dom)
    out = {}
    for name, (tok, dom) in counts.items():
        rows = dom[: len(domain_names)].double()
        fractions = {d: (rows[k] / rows[k].sum()).round(decimals=4).tolist()
                     for k, d in enumerate(domain_names[: rows.shape[0]]) if rows[k].sum() > 0}
        out[name] = {"tokens_per_expert": tok.tolist(), "domain_fraction": fractions,
                     "busiest_share": {d: max(f) for d, f in fractions.items()}}
    return out


def busiest_share_by_domain(shares: dict[str, dict]) -> dict[str, float]:
    """{domain: mean over MoE layers of the busiest expert's share} from `expert_shares`' output: one number
    per domain that shows router collapse in a table (1/E balanced, 1.0 collapsed); {} without MoE layers."""
    per: dict[str, list[float]] = {}
    for layer in shares.values():
        for d, s in layer["busiest_share"].items():
            per.setdefault(d, []).append(s)
    return {d: round(sum(v) / len(v), 4) for d, v in per.items()}


def reset_routing(model: nn.Module) -> None:
    """Zero the routing statistics of every MoE layer inside `model`."""
    for m in model.modules():
        if isinstance(m, RoutingStats):
            m.reset()


def expand_domain_ids(domain_ids: torch.Tensor | None, lead_shape: torch.Size, num_domains: int) -> torch.Tensor | None:
    """Per-sequence (B,) or per-token (B, L) / (T,) domain ids -> per-token (T,), validated.

    Args:
        domain_ids: (B,) or the tokens' lead shape, ints in [0, num_domains); None passes through.
        lead_shape: the tokens' shape without D, e.g. (B, L); num_domains: MoEConfig.num_domains.

    Raises:
        ValueError: ids given with num_domains = 0, a shape matching neither tokens nor sequences,
            or (on CPU, where the check is free of host syncs) an id out of range.
    """
    if domain_ids is None:
        return None
    if num_domains == 0:
        raise ValueError("domain_ids were passed but MoEConfig.num_domains is 0; set num_domains to count them")
    domain_ids = torch.as_tensor(domain_ids)
    n_tokens = 1
    for s in lead_shape:
        n_tokens *= s
    if tuple(domain_ids.shape) == tuple(lead_shape):
        out = domain_ids.reshape(-1)
    elif len(lead_shape) >= 2 and tuple(domain_ids.shape) == (lead_shape[0],):
        out = domain_ids.repeat_interleave(n_tokens // lead_shape[0])
    else:
        raise ValueError(
            f"domain_ids shape {tuple(domain_ids.shape)} matches neither tokens {tuple(lead_shape)} "
            f"nor sequences ({lead_shape[0]},)"
        )
    if out.device.type == "cpu" and out.numel() and (int(out.min()) < 0 or int(out.max()) >= num_domains):
        raise ValueError(f"domain id out of range [0, {num_domains}): got {out.min().item()}..{out.max().item()}")
    return out
