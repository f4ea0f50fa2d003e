"""Pre-LN transformer block whose FFN is dense or a sparse MoE (`trajmoe.moe.MoE`).

    x = x + SelfAttn(LN(x)) [+ CrossAttn(LN(x), context)] + FFN_or_MoE(LN(x))   (pre-LN, ViT/ATM)

Legend: B batch, L tokens, S context tokens, D model dim.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ..moe import FeedForward, MoE, MoEConfig
from .attention import Attention



class Block(nn.Module):
    """One pre-LN transformer block; its FFN is a sparse `MoE` when `moe` is given, else dense.

    Args:
        dim: D; num_heads: attention heads (must divide D); mlp_ratio: dense FFN hidden = D * ratio;
        dropout: attention / FFN dropout; moe: MoEConfig of the sparse FFN (its dim must be D);
        cross_attention: add a cross-attention sub-layer to `context`; activation: dense FFN's.

    Raises:
        ValueError: moe.dim != dim, or dim not divisible by num_heads.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
        moe: MoEConfig | None = None,
        cross_attention: bool = False,
        activation: str = "gelu",
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads, dropout)
        self.cross = Attention(dim, num_heads, dropout) if cross_attention else None
        self.norm_cross = nn.LayerNorm(dim) if cross_attention else None
        self.norm2 = nn.LayerNorm(dim)
        if moe is not None:
            if moe.dim != dim:
                raise ValueError(f"MoEConfig.dim {moe.dim} != block dim {dim}")
            self.ffn: nn.Module = MoE(moe)
        else:
            self.ffn = FeedForward(dim, int(dim * mlp_ratio), activation, dropout)

    @property
    def is_moe(self) -> bool:
        """Whether the FFN is a sparse MoE layer."""
        return isinstance(self.ffn, MoE)

    def forward(
        self,
        x: torch.Tensor,
        context: torch.Tensor | None = None,
        context_mask: torch.Tensor | None = None,
        attn_mask: torch.Tensor | None = None,
        domain_ids: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict | None]:
        """x (B, L, D) -> (x' (B, L, D), MoE aux dict or None for a dense FFN).

        Args:
            context: (B, S, D) tokens for the cross-attention (required when it exists).
            context_mask: (B, S) bool, True = attend to that context token.
            attn_mask: (L, L) or (B, 1, L, L) bool self-attention mask, True = may attend.
            domain_ids: (B,) or (B, L) domain ids for the MoE routing statistics.

        Raises:
            ValueError: a cross-attention block called without context.
        """
        x = x + self.attn(self.norm1(x), attn_mask=attn_mask)
        if self.cross is not None:
            if context is None:
                raise ValueError("this block has cross-attention: pass context")
            x = x + self.cross(self.norm_cross(x), context, key_mask_BS=context_mask)
        h = self.norm2(x)
        if self.is_moe:
            y, aux = self.ffn(h, domain_ids=domain_ids)
            return x + y, aux
        return x + self.ffn(h), None

