"""MoEConfig: the one configuration of the shared sparse MoE layer, and of every model's MoE settings.

Each knob has one name, whichever model holds it (`model.moe.top_k` for the track model and the
planner alike). Nested in a model config, `dim`, `hidden_dim` and `dropout` are left unset and
taken from the host model (`bind`); `num_domains` is filled from the training data.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..config import checker

GATES = ("softmax", "topk_softmax", "renorm", "top2_ratio")
ACTIVATIONS = ("gelu", "gelu_tanh", "relu", "silu")
IMPLS = ("grouped", "loop")
BALANCE_LOSSES = ("switch", "cv2")


@dataclass(frozen=True)
class MoEConfig:
    """Sparse MoE FFN: `num_experts` routed experts (top-`top_k` token choice) + always-on shared ones.

    gate (how the chosen experts' outputs are weighted; see `router.gate_weights`):
      * "softmax" (default): raw softmax probability of each chosen expert over all E logits
        (Switch Transformer, Fedus et al. 2021). For top-1 this is the only common choice that
        gives the router a gradient from the task loss, which is why it is the default.
      * "topk_softmax": softmax over the top-k logits only (Tra-MoE paper eq. 1). For k=1 the weight
        is exactly 1 and the router learns only through the auxiliary losses.
      * "renorm": chosen softmax probabilities renormalised over the selected k (TrajMoE paper eq. 1);
        identical to "topk_softmax" mathematically, kept as its own name to match the paper.
      * "top2_ratio": p1 / (p1 + p2) of the two largest probabilities, second expert discarded
        (what the public Tra-MoE code does for its top-1 router); requires top_k=1, E>=2.
    noisy_gating: Shazeer et al. 2017 eq. 4: logits += N(0,1) * softplus(x W_noise), training only.
    impl: "grouped" (sort by expert, one permutation, grouped GEMM) or "loop" (per-expert reference).
    num_domains: size of the (num_domains x E) routing statistics matrix; 0 disables it.
    layers: indices of the host model's blocks whose FFN is this MoE; () = a dense model.
    balance_loss: "switch" (N sum_i Q_i P_i, Tra-MoE paper Sec. 3.3) or "cv2" (CV^2(importance) +
      CV^2(load) summed over MoE layers, TrajMoE paper eqs. 3-4), weighted by balance_weight.
    z_weight: weight of the router z-loss (ST-MoE; Tra-MoE paper Sec. 3.3: l_z = 1e-4).
    dim / hidden_dim / dropout: None = the host model's width / FFN width / dropout
    (standalone: dim is required, hidden_dim = 4 * dim, dropout = 0).
    Raises ValueError (one line naming the field) on an invalid value.
    """

    dim: int | None = None
    hidden_dim: int | None = None
    num_experts: int = 4
    top_k: int = 1
    num_shared_experts: int = 0
    activation: str = "gelu"
    dropout: float | None = None
    gate: str = "softmax"
    noisy_gating: bool = False
    impl: str = "grouped"
    num_domains: int = 0
    bias: bool = True
    layers: tuple[int, ...] = ()
    balance_loss: str = "switch"
    balance_weight: float = 0.0
    z_weight: float = 0.0

    def __post_init__(self) -> None:
        need = checker(self, "MoEConfig")

        object.__setattr__(self, "layers", tuple(self.layers))
        if self.dim is not None:  # a layer to build: fill the standalone defaults
            need(self.dim >= 1, "dim", ">= 1")
            if self.hidden_dim is None:
                object.__setattr__(self, "hidden_dim", 4 * self.dim)
            if self.dropout is None:
                object.__setattr__(self, "dropout", 0.0)
        need(self.hidden_dim is None or self.hidden_dim >= 1, "hidden_dim", ">= 1")
        need(self.num_experts >= 1, "num_experts", ">= 1")
        need(1 <= self.top_k <= self.num_experts, "top_k", f"in [1, num_experts={self.num_experts}]")
        need(self.num_shared_experts >= 0, "num_shared_experts", ">= 0")
        need(self.activation in ACTIVATIONS, "activation", f"one of {ACTIVATIONS}")
        need(self.dropout is None or 0.0 <= self.dropout < 1.0, "dropout", "in [0, 1)")
        need(self.gate in GATES, "gate", f"one of {GATES}")
        if self.gate == "top2_ratio" and (self.top_k != 1 or self.num_experts < 2):
            raise ValueError(
                f"MoEConfig.gate='top2_ratio' needs top_k=1 and num_experts>=2, got top_k={self.top_k}, "
                f"num_experts={self.num_experts}"
            )
        need(self.impl in IMPLS, "impl", f"one of {IMPLS}")
        need(self.num_domains >= 0, "num_domains", ">= 0")
        need(all(isinstance(i, int) and i >= 0 for i in self.layers) and len(set(self.layers)) == len(self.layers),
             "layers", "distinct block indices >= 0")
        need(self.balance_loss in BALANCE_LOSSES, "balance_loss", f"one of {BALANCE_LOSSES}")
        need(self.balance_weight >= 0, "balance_weight", ">= 0")
        need(self.z_weight >= 0, "z_weight", ">= 0")

    def check_layers(self, depth: int, where: str) -> None:
        """ValueError naming `where` when a MoE layer index is outside the host's 0..depth-1."""
        bad = [i for i in self.layers if i >= depth]
        if bad:
            raise ValueError(f"{where}.moe.layers: layer {bad[0]} is outside 0..{depth - 1}")
        if self.dim is not None:
            raise ValueError(f"{where}.moe.dim is the model's width; leave it unset (got {self.dim})")

    def bind(self, dim: int, hidden_dim: int, dropout: float) -> "MoEConfig":
        """The layer config for a host block of width `dim` (unset hidden_dim / dropout: the host's)."""
        return dataclasses.replace(self, dim=dim, hidden_dim=self.hidden_dim or hidden_dim,
                                   dropout=dropout if self.dropout is None else self.dropout)

    def with_domains(self, n: int) -> "MoEConfig":
        """This config with a routing-statistics row for each of the training data's `n` domain ids
        (a model with MoE layers and fewer rows; otherwise unchanged)."""
        return dataclasses.replace(self, num_domains=n) if self.layers and n > self.num_domains else self
