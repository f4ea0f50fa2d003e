"""Expert FFNs: a dense FeedForward and E experts stacked with a leading E dim (grouped-GEMM ready).

Both are Linear -> activation -> Dropout -> Linear -> Dropout (the ATM / ViT FFN), so a dense
model and an MoE model differ only in routing.
Legend: T tokens, D model dim, H hidden dim, E experts.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


def activation_fn(name: str):
    """The elementwise activation called `name` (gelu, gelu_tanh, relu or silu) as a function.

    Raises:
        ValueError: an unknown name (the message lists the valid ones).
    """
    if name == "gelu":
        return F.gelu
    if name == "gelu_tanh":
        return lambda x: F.gelu(x, approximate="tanh")
    if name == "relu":
        return F.relu
    if name == "silu":
        return F.silu
    raise ValueError(f"unknown activation {name!r}; valid: gelu, gelu_tanh, relu, silu")


class FeedForward(nn.Module):
    """Dense FFN D -> H -> D: fc2(drop(act(fc1(x)))) then dropout (the ATM / ViT MLP).

    Args:
        dim: D; hidden_dim: H; activation: see `activation_fn`; dropout: probability after the
        activation and after fc2; bias: whether both linears have a bias.
    """

    def __init__(self, dim: int, hidden_dim: int, activation: str = "gelu", dropout: float = 0.0, bias: bool = True):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim, bias=bias)
        self.fc2 = nn.Linear(hidden_dim, dim, bias=bias)
        self.act = activation_fn(activation)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(..., D) -> (..., D)."""
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class StackedExperts(nn.Module):
    """E FFNs with weights w1_EDH (E, D, H), w2_EHD (E, H, D) so token rows multiply as x @ w[e]."""

    def __init__(self, num_experts: int, dim: int, hidden_dim: int, activation: str = "gelu",
                 dropout: float = 0.0, bias: bool = True):
        super().__init__()
        self.num_experts, self.dim, self.hidden_dim = num_experts, dim, hidden_dim
        self.w1_EDH = nn.Parameter(torch.empty(num_experts, dim, hidden_dim))
        self.w2_EHD = nn.Parameter(torch.empty(num_experts, hidden_dim, dim))
        self.b1_EH = nn.Parameter(torch.zeros(num_experts, hidden_dim)) if bias else None
        self.b2_ED = nn.Parameter(torch.zeros(num_experts, dim)) if bias else None
        self.act = activation_fn(activation)
        self.drop = nn.Dropout(dropout)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Initialise every expert as nn.Linear would: weights and biases U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
        # Same distribution as nn.Linear per expert: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
        for w, fan_in in ((self.w1_EDH, self.dim), (self.w2_EHD, self.hidden_dim)):
            nn.init.uniform_(w, -1 / math.sqrt(fan_in), 1 / math.sqrt(fan_in))
        for b, fan_in in ((self.b1_EH, self.dim), (self.b2_ED, self.hidden_dim)):
            if b is not None:
                nn.init.uniform_(b, -1 / math.sqrt(fan_in), 1 / math.sqrt(fan_in))

    def expert(self, e: int, x_TD: torch.Tensor) -> torch.Tensor:
        """Expert e applied to rows x_TD (T, D) -> (T, D) (the per-expert reference computation)."""
        h = x_TD @ self.w1_EDH[e]
        if self.b1_EH is not None:
            h = h + self.b1_EH[e]
        h = self.drop(self.act(h))
        y = h @ self.w2_EHD[e]
        if self.b2_ED is not None:
            y = y + self.b2_ED[e]
        return self.drop(y)
