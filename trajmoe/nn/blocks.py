"""Pre-LN transformer block whose FFN is dense or a sparse MoE (`trajmoe.moe.MoE`).

    x = x + SelfAttn(LN(x)) [+ CrossAttn(LN(x), context)] + FFN_or_MoE(LN(x))   (pre-LN, ViT/ATM)
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ..moe import FeedForward, MoE, MoEConfig
from .attention import Attention

AUX_LOSS_KEYS = ("z_loss", "balance_loss", "cv2_loss")


class Block(nn.Module):
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
        return isinstance(self.ffn, MoE)

    def forward(
        self,
        x: torch.Tensor,
        context: torch.Tensor | None = None,
        context_mask: torch.Tensor | None = None,
        attn_mask: torch.Tensor | None = None,
        domain_ids: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict | None]:
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


def collect_moe_aux(auxes: list[dict | None]) -> dict[str, torch.Tensor]:
    """Sum z_loss / balance_loss / cv2_loss over MoE layers (TrajMoE paper: 'summing the balancing
    losses from all MoE layers'); zeros when the model has no MoE layer."""
    present = [a for a in auxes if a is not None]
    if not present:
        return {k: torch.zeros(()) for k in AUX_LOSS_KEYS}
    return {k: torch.stack([a[k] for a in present]).sum() for k in AUX_LOSS_KEYS}
