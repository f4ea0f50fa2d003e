"""GRPO fine-tuning of the scoring heads as Gaussians (TrajMoE paper Sec. II.C, eqs. 5-10).

Per scene, vocabulary trajectory and scored metric, the head is a Gaussian N(mu, sigma^2) with
mu = sigmoid(logit) (the score the planner selects with) and log sigma from a new linear head.
  eq. 5  a group of N scores s_i ~ N(mu_old, sigma_old^2) (sampled without gradient)
  eq. 6  r_i = -|s_i - s*|, r~_i = (r_i - mean(r)) / std(r)
  eq. 7  Adv_i = sum of the normalised rewards from step i on; a score is a one-step episode, so
         the sum has one term: Adv_i = r~_i
  eq. 8  J = 1/N sum_i { min(rho_i Adv_i, clip(rho_i, 1-eps, 1+eps) Adv_i) - beta KL },
         rho_i = pi_theta(s_i) / pi_old(s_i); one gradient step per sampled group (pi_old = the
         current policy, detached), so rho = 1 in value and the clip only matters for reuse
  eq. 9  KL = 1/2 [log sigma^2 - log sigma_ref^2 + (sigma_ref^2 + (mu - mu_ref)^2) / sigma^2 - 1]
         (as printed; it is KL(pi_ref || pi_theta)), reference = the supervised model (frozen)
  eq. 10 L = -J + lambda KL
Only the scoring heads (and the new std heads) are trained; the trunk stays frozen.
The model subclasses DrivePlanner, so its state dict (the run's model.safetensors) loads as a planner.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn as nn

from trajmoe.drive.config import DriveModelConfig, GRPOConfig
from trajmoe.drive.metrics import TARGET_METRICS
from trajmoe.drive.model import DrivePlanner


def group_advantages(rewards_XN: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Eqs. 6-7: normalise rewards within each group (last dim); one-step episodes -> Adv_i = r~_i."""
    mean = rewards_XN.mean(-1, keepdim=True)
    std = rewards_XN.std(-1, keepdim=True, unbiased=False)
    return (rewards_XN - mean) / (std + eps)


def gaussian_kl(mu: torch.Tensor, log_std: torch.Tensor, mu_ref: torch.Tensor, log_std_ref: torch.Tensor) -> torch.Tensor:
    """Eq. 9 (TrajMoE paper): 1/2 [log s^2 - log s_ref^2 + (s_ref^2 + (mu - mu_ref)^2) / s^2 - 1]
    (elementwise, broadcast; s = exp(log_std)), i.e. KL(N(mu_ref, s_ref^2) || N(mu, s^2))."""
    var, var_ref = torch.exp(2 * log_std), torch.exp(2 * log_std_ref)
    return 0.5 * (2 * log_std - 2 * log_std_ref + (var_ref + (mu - mu_ref) ** 2) / var - 1.0)


def gaussian_log_prob(s: torch.Tensor, mu: torch.Tensor, log_std: torch.Tensor) -> torch.Tensor:
    """log N(s; mu, exp(log_std)^2), elementwise (broadcast): the policy density of eq. 8's ratio."""
    return -0.5 * ((s - mu) / torch.exp(log_std)) ** 2 - log_std - 0.5 * math.log(2 * math.pi)


def grpo_objective(mu: torch.Tensor, log_std: torch.Tensor, target: torch.Tensor, mu_ref: torch.Tensor,
                   log_std_ref: torch.Tensor, cfg: GRPOConfig, generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict]:
    """Eqs. 5-10 (TrajMoE paper, Xing et al.) for any batch shape X of Gaussian heads.

    Args:
        mu, log_std: (X) current heads (mu in [0, 1]); target: (X) true sub-scores s*;
        mu_ref, log_std_ref: (X) frozen reference heads; cfg: group size N, clip eps, beta, KL weight;
        generator: rng of the N samples per head.

    Returns:
        L_RL (scalar) and logs {"reward", "kl", "sigma", "abs_err_mu"} (detached scalars).
    """
    N = cfg.group_size
    with torch.no_grad():
        noise = torch.randn((*mu.shape, N), generator=generator, device=mu.device, dtype=mu.dtype)
        samples = mu.detach()[..., None] + torch.exp(log_std.detach())[..., None] * noise  # eq. 5
        rewards = -(samples - target[..., None]).abs()  # eq. 6
        adv = group_advantages(rewards)  # eqs. 6-7
        logp_old = gaussian_log_prob(samples, mu.detach()[..., None], log_std.detach()[..., None])
    logp = gaussian_log_prob(samples, mu[..., None], log_std[..., None])
    ratio = torch.exp(logp - logp_old)
    f1 = ratio * adv
    f2 = torch.clamp(ratio, 1 - cfg.clip_eps, 1 + cfg.clip_eps) * adv
    kl = gaussian_kl(mu, log_std, mu_ref, log_std_ref)  # eq. 9
    J = (torch.minimum(f1, f2) - cfg.beta * kl[..., None]).mean(-1)  # eq. 8
    loss = (-J + cfg.kl_weight * kl).mean()  # eq. 10
    logs = {"reward": rewards.mean().detach(), "kl": kl.mean().detach(), "sigma": torch.exp(log_std).mean().detach(),
            "abs_err_mu": (mu - target).abs().mean().detach()}
    return loss, logs


class GRPOPlanner(DrivePlanner):
    """DrivePlanner with Gaussian heads whose forward computes the GRPO loss (for the Trainer).

    Raises ValueError unless cfg.gaussian_heads; the std heads start at log sigma = grpo.init_log_std.
    """

    def __init__(self, cfg: DriveModelConfig, grpo: GRPOConfig, vocab=None):
        if not cfg.gaussian_heads:
            raise ValueError("GRPOPlanner needs model.gaussian_heads=true")
        super().__init__(cfg, vocab)
        self.grpo = grpo
        for h in self.std_heads.values():
            nn.init.zeros_(h.weight)
            nn.init.constant_(h.bias, grpo.init_log_std)
        self._ref: list[DrivePlanner] = []  # frozen reference, kept out of the state dict

    def start_finetune(self) -> None:
        """Freeze the trunk, snapshot the reference policy (call after loading supervised weights)."""
        for n, p in self.named_parameters():
            p.requires_grad = n.startswith("score_heads.") or n.startswith("std_heads.")
        ref = copy.deepcopy(self)
        ref._ref = []
        ref.eval()
        for p in ref.parameters():
            p.requires_grad = False
        self._ref = [ref]

    def train(self, mode: bool = True) -> "GRPOPlanner":
        """While fine-tuning, the frozen trunk stays in eval mode (no dropout, no routing statistics
        drift), exactly like the reference, so the KL starts at 0 and only the heads move."""
        super().train(mode)
        if self._ref:
            for name, child in self.named_children():
                if name not in ("score_heads", "std_heads"):
                    child.eval()
        return self

    def forward(self, batch: dict) -> tuple[torch.Tensor, dict]:
        """GRPO loss of a batch (TrajMoE paper eqs. 5-10 summed over `grpo.metrics`, plus
        `supervised_weight` x the supervised loss) and logs; batch["targets"] is (B, V, M).

        Raises:
            RuntimeError: `start_finetune()` has not been called.
        """
        if not self._ref:
            raise RuntimeError("call start_finetune() before training")
        ref = self._ref[0]
        if ref.vocab.device != self.vocab.device:
            ref.to(self.vocab.device)
        with torch.no_grad():  # the trunk is frozen: no graph needed through it
            feat, _ = self.decode(batch)
        out = self.heads(feat)
        with torch.no_grad():
            ref_out = ref.heads(ref.decode(batch)[0])
        loss = torch.zeros((), device=feat.device)
        logs = {}
        tgt = batch["targets"]
        for i, m in enumerate(TARGET_METRICS):
            if m not in self.grpo.metrics:
                continue
            mu = torch.sigmoid(out[m].float())
            mu_ref = torch.sigmoid(ref_out[m].float())
            l_m, lg = grpo_objective(mu, out[f"log_std_{m}"].float(), tgt[..., i].float(), mu_ref,
                                     ref_out[f"log_std_{m}"].float(), self.grpo)
            loss = loss + l_m
            logs[f"rl_{m}"] = l_m.detach()
            for k, v in lg.items():
                logs[k] = logs.get(k, 0.0) + v / len(self.grpo.metrics)
        if self.grpo.supervised_weight > 0:
            sup, _ = self.supervised_loss(out, batch)
            loss = loss + self.grpo.supervised_weight * sup
        return loss, logs


assert set(TARGET_METRICS) >= {"NC", "DAC"}
