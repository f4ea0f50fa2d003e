"""Multi-head attention on PyTorch SDPA (flash / memory-efficient kernels where available).

Legend: B batch, L query length, S key length, D model dim, h heads.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange


class Attention(nn.Module):
    """Self-attention (context=None) or cross-attention to `context` (Vaswani et al. 2017, eq. 1).

    Args:
        dim: D; num_heads: h (must divide D); dropout: attention-weight and output dropout;
        bias: whether the projections have a bias.

    Raises:
        ValueError: dim is not divisible by num_heads.
    """

    def __init__(self, dim: int, num_heads: int, dropout: float = 0.0, bias: bool = True) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"attention dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim, bias=bias)
        self.kv = nn.Linear(dim, 2 * dim, bias=bias)
        self.proj = nn.Linear(dim, dim, bias=bias)
        self.attn_dropout = dropout
        self.proj_drop = nn.Dropout(dropout)

    def forward(
        self,
        x_BLD: torch.Tensor,
        context_BSD: torch.Tensor | None = None,
        attn_mask: torch.Tensor | None = None,
        key_mask_BS: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Queries x_BLD (B, L, D), keys/values context_BSD (B, S, D) (x itself when None) -> (B, L, D).

        attn_mask: (L, S) or (B, 1, L, S) bool, True = may attend; key_mask_BS: (B, S), True = keep key.
        """
        ctx = x_BLD if context_BSD is None else context_BSD
        q = rearrange(self.q(x_BLD), "b l (h d) -> b h l d", h=self.num_heads)
        k, v = rearrange(self.kv(ctx), "b s (two h d) -> two b h s d", two=2, h=self.num_heads)
        mask = attn_mask
        if key_mask_BS is not None:
            km = key_mask_BS[:, None, None, :]
            mask = km if mask is None else (mask & km)
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.attn_dropout if self.training else 0.0
        )
        return self.proj_drop(self.proj(rearrange(y, "b h l d -> b l (h d)")))
