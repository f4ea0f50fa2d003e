"""GRPO pieces against closed forms (TrajMoE paper eqs. 5-10)."""

import pytest
import torch

from trajmoe.drive.config import GRPOConfig
from trajmoe.drive.grpo import gaussian_kl, gaussian_log_prob, group_advantages, grpo_objective


def test_group_advantages_are_normalised_per_group():
    r = torch.tensor([[-0.1, -0.3, -0.2, -0.6], [1.0, 2.0, 3.0, 4.0]])
    a = group_advantages(r)
    assert torch.allclose(a.mean(-1), torch.zeros(2), atol=1e-6)
    assert torch.allclose(a.std(-1, unbiased=False), torch.ones(2), atol=1e-4)
    manual = (r[1] - 2.5) / torch.tensor([1.0, 2.0, 3.0, 4.0]).std(unbiased=False)
    assert torch.allclose(a[1], manual, atol=1e-5)
    assert a[0].argmax() == 0  # the best reward gets the largest advantage


def test_gaussian_kl_matches_closed_form():
    mu, ls = torch.tensor([0.3, 0.7, 0.1]), torch.tensor([-1.0, -2.0, 0.5])
    mu_r, ls_r = torch.tensor([0.5, 0.7, -0.2]), torch.tensor([-1.5, -1.0, 0.0])
    ours = gaussian_kl(mu, ls, mu_r, ls_r)
    # Eq. 9 as printed is KL(N_ref || N_theta).
    ref = torch.distributions.kl_divergence(torch.distributions.Normal(mu_r, ls_r.exp()), torch.distributions.Normal(mu, ls.exp()))
    assert torch.allclose(ours, ref, atol=1e-6)
    assert torch.allclose(gaussian_kl(mu, ls, mu, ls), torch.zeros(3), atol=1e-7)


def test_log_prob_matches_torch():
    s, mu, ls = torch.tensor([0.2, 1.0]), torch.tensor([0.0, 0.5]), torch.tensor([-1.0, 0.3])
    assert torch.allclose(gaussian_log_prob(s, mu, ls), torch.distributions.Normal(mu, ls.exp()).log_prob(s), atol=1e-6)


def test_grpo_gradient_moves_mean_towards_target():
    cfg = GRPOConfig(group_size=64, beta=0.0)
    mu = torch.full((256,), 0.3, requires_grad=True)
    log_std = torch.full((256,), -1.5, requires_grad=True)
    target = torch.full((256,), 0.8)
    loss, logs = grpo_objective(mu, log_std, target, mu.detach(), log_std.detach(), cfg, torch.Generator().manual_seed(0))
    loss.backward()
    assert mu.grad.sum() < 0  # descending the loss raises mu towards 0.8
    assert logs["reward"] < 0


def test_grpo_kl_term_pulls_back_to_reference():
    cfg = GRPOConfig(group_size=4, beta=1.0)
    mu = torch.full((8,), 0.9, requires_grad=True)
    log_std = torch.full((8,), -2.0, requires_grad=True)
    target = torch.full((8,), 0.9)  # rewards carry no signal beyond noise; the KL dominates on average
    loss, logs = grpo_objective(mu, log_std, target, torch.full((8,), 0.5), torch.full((8,), -2.0), cfg,
                                torch.Generator().manual_seed(1))
    assert logs["kl"] > 0
    loss.backward()
    assert mu.grad.sum() > 0  # pulled down towards mu_ref = 0.5


def test_grpo_config_rejects_bad_values():
    with pytest.raises(ValueError, match="group_size"):
        GRPOConfig(group_size=1)
    with pytest.raises(ValueError, match="clip_eps"):
        GRPOConfig(clip_eps=1.5)
    with pytest.raises(ValueError, match="grpo.metrics must be"):
        GRPOConfig(metrics=("XYZ",))
