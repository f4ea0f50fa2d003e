"""MoEConfig: the one configuration of the shared sparse MoE layer (both applications use it)."""

from __future__ import annotations

from dataclasses import dataclass

GATES = ("softmax", "topk_softmax", "renorm", "top2_ratio")
ACTIVATIONS = ("gelu", "gelu_tanh", "relu", "silu")
IMPLS = ("grouped", "loop")


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
    """

    dim: int
    hidden_dim: int | None = None  # default 4 * dim
    num_experts: int = 4
    top_k: int = 1
    num_shared_experts: int = 0
    activation: str = "gelu"
    dropout: float = 0.0
    gate: str = "softmax"
    noisy_gating: bool = False
    impl: str = "grouped"
    num_domains: int = 0
    bias: bool = True

    def __post_init__(self) -> None:
        if self.dim < 1:
            raise ValueError(f"MoEConfig.dim must be >= 1, got {self.dim}")
        if self.hidden_dim is None:
            object.__setattr__(self, "hidden_dim", 4 * self.dim)
        if self.hidden_dim < 1:
            raise ValueError(f"MoEConfig.hidden_dim must be >= 1, got {self.hidden_dim}")
        if self.num_experts < 1:
            raise ValueError(f"MoEConfig.num_experts must be >= 1, got {self.num_experts}")
        if not 1 <= self.top_k <= self.num_experts:
            raise ValueError(f"MoEConfig.top_k must be in [1, num_experts={self.num_experts}], got {self.top_k}")
        if self.num_shared_experts < 0:
            raise ValueError(f"MoEConfig.num_shared_experts must be >= 0, got {self.num_shared_experts}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"MoEConfig.activation must be one of {ACTIVATIONS}, got {self.activation!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"MoEConfig.dropout must be in [0, 1), got {self.dropout}")
        if self.gate not in GATES:
            raise ValueError(f"MoEConfig.gate must be one of {GATES}, got {self.gate!r}")
        if self.gate == "top2_ratio" and (self.top_k != 1 or self.num_experts < 2):
            raise ValueError(
                f"MoEConfig.gate='top2_ratio' needs top_k=1 and num_experts>=2, got top_k={self.top_k}, "
                f"num_experts={self.num_experts}"
            )
        if self.impl not in IMPLS:
            raise ValueError(f"MoEConfig.impl must be one of {IMPLS}, got {self.impl!r}")
        if self.num_domains < 0:
            raise ValueError(f"MoEConfig.num_domains must be >= 0, got {self.num_domains}")

    @property
    def active_params_per_token(self) -> int:
        """Expert parameters a token touches: k routed + shared FFNs (router excluded)."""
        per_ffn = 2 * self.dim * self.hidden_dim + (self.hidden_dim + self.dim if self.bias else 0)
        return (self.top_k + self.num_shared_experts) * per_ffn
