"""trajmoe.moe: losses vs hand-computed values, layer vs the explicit formula, loop == grouped."""

import math

import pytest
import torch

from trajmoe.moe import MoE, MoEConfig, busiest_share_by_domain, cv2_balance_loss, expert_shares, load_balance_loss, reset_routing, router_z_loss
from trajmoe.moe import dispatch


def test_load_balance_loss_hand_computed():
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.6, 0.3, 0.1], [0.2, 0.2, 0.6]])
    ids = probs.argmax(-1, keepdim=True)  # experts 0, 1, 0, 2
    q = torch.tensor([2 / 4, 1 / 4, 1 / 4])
    p = probs.mean(0)
    expected = 3 * (q * p).sum()
    assert torch.allclose(load_balance_loss(probs, ids), expected)
    # perfect balance with uniform probs -> exactly 1
    uni = torch.full((4, 4), 0.25)
    assert load_balance_loss(uni, torch.arange(4).view(4, 1)).item() == pytest.approx(1.0)


def test_z_loss_hand_computed():
    logits = torch.tensor([[0.0, 0.0], [1.0, 2.0]])
    lse0 = math.log(2.0)
    lse1 = math.log(math.exp(1) + math.exp(2))
    assert router_z_loss(logits).item() == pytest.approx((lse0**2 + lse1**2) / 2, rel=1e-6)


def test_cv2_loss_hand_computed():
    gates = torch.tensor([[0.9, 0.0, 0.0], [0.0, 0.5, 0.0], [0.6, 0.0, 0.0], [0.0, 0.0, 0.0]])
    imp = torch.tensor([1.5, 0.5, 0.0])
    load = torch.tensor([2.0, 1.0, 0.0])
    cv2 = lambda v: v.var(correction=0) / v.mean() ** 2  # noqa: E731
    assert cv2_balance_loss(gates).item() == pytest.approx((cv2(imp) + cv2(load)).item(), rel=1e-5)
    assert cv2_balance_loss(torch.eye(3)).item() == pytest.approx(0.0, abs=1e-6)


CONFIGS = [
    dict(num_experts=4, top_k=1, gate="softmax"),
    dict(num_experts=4, top_k=1, gate="topk_softmax"),
    dict(num_experts=4, top_k=1, gate="top2_ratio"),
    dict(num_experts=4, top_k=2, gate="renorm", num_shared_experts=1),
    dict(num_experts=8, top_k=3, gate="softmax", num_shared_experts=2),
    dict(num_experts=1, top_k=1, gate="softmax"),
]


@pytest.mark.parametrize("kw", CONFIGS, ids=lambda kw: "-".join(f"{k}{v}" for k, v in kw.items()))
def test_output_equals_explicit_per_token_formula(kw):
    torch.manual_seed(0)
    moe = MoE(MoEConfig(dim=16, hidden_dim=24, **kw)).eval()
    x = torch.randn(3, 5, 16)
    y, aux = moe(x)
    xt = x.reshape(-1, 16)
    ids, gates = aux["expert_ids"], aux["gate_weights"]
    for t in range(xt.shape[0]):
        ref = sum(gates[t, j] * moe.experts.expert(int(ids[t, j]), xt[t : t + 1])[0] for j in range(ids.shape[1]))
        for sh in moe.shared:
            ref = ref + sh(xt[t])
        torch.testing.assert_close(y.reshape(-1, 16)[t], ref, atol=1e-5, rtol=1e-5)
    assert aux["router_logits"].dtype == torch.float32
    assert aux["tokens_per_expert"].sum().item() == xt.shape[0] * kw["top_k"]


@pytest.mark.parametrize("kw", CONFIGS, ids=lambda kw: "-".join(f"{k}{v}" for k, v in kw.items()))
def test_loop_and_grouped_agree_forward_backward(kw):
    torch.manual_seed(1)
    a = MoE(MoEConfig(dim=16, impl="loop", **kw))
    b = MoE(MoEConfig(dim=16, impl="grouped", **kw))
    b.load_state_dict(a.state_dict())
    x = torch.randn(4, 9, 16)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, aa = a(xa)
    yb, ab = b(xb)
    torch.testing.assert_close(ya, yb, atol=1e-5, rtol=1e-5)
    w = torch.randn_like(ya)
    ((ya * w).sum() + aa["z_loss"] + aa["balance_loss"]).backward()
    ((yb * w).sum() + ab["z_loss"] + ab["balance_loss"]).backward()
    torch.testing.assert_close(xa.grad, xb.grad, atol=1e-5, rtol=1e-5)
    for (n, pa), pb in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(pa.grad, pb.grad, atol=1e-5, rtol=1e-5, msg=n)


def test_grouped_bf16_grouped_mm_path_matches_fp32_loop():
    torch.manual_seed(2)
    cfg = dict(dim=32, hidden_dim=64, num_experts=4, top_k=2, gate="renorm")
    a = MoE(MoEConfig(impl="loop", **cfg))
    b = MoE(MoEConfig(impl="grouped", **cfg))
    b.load_state_dict(a.state_dict())
    x = torch.randn(64, 32)
    assert dispatch.grouped_mm_supported(x.bfloat16(), b.experts.w1_EDH.bfloat16())
    ya, _ = a(x)
    b = b.bfloat16()
    b.router.float()  # router stays fp32
    yb, _ = b(x.bfloat16())
    assert yb.dtype == torch.bfloat16
    torch.testing.assert_close(yb.float(), ya, atol=0.05, rtol=0.05)


@pytest.mark.parametrize(
    "gate,k,has_grad",
    [("softmax", 1, True), ("top2_ratio", 1, True), ("topk_softmax", 1, False), ("renorm", 1, False), ("renorm", 2, True)],
)
def test_router_task_gradient(gate, k, has_grad):
    torch.manual_seed(3)
    moe = MoE(MoEConfig(dim=8, num_experts=4, top_k=k, gate=gate))
    y, _ = moe(torch.randn(32, 8))
    y.pow(2).sum().backward()  # task loss only, no aux loss
    g = moe.router.weight_ED.grad
    assert (g is not None and g.abs().sum() > 0) == has_grad


def test_domain_statistics_count_correctly():
    moe = MoE(MoEConfig(dim=8, num_experts=3, num_domains=2))
    x = torch.randn(2, 4, 8)
    _, aux = moe(x, domain_ids=torch.tensor([1, 0]))  # per sequence
    ids = aux["expert_ids"].view(2, 4)
    expected = torch.zeros(2, 3, dtype=torch.int64)
    for e in ids[0]:
        expected[1, e] += 1
    for e in ids[1]:
        expected[0, e] += 1
    assert torch.equal(moe.domain_counts, expected)
    moe.eval()
    with torch.no_grad():
        moe(x, domain_ids=torch.tensor([[1, 1, 1, 1], [0, 0, 0, 0]]))  # per token, eval too
    assert torch.equal(moe.domain_counts, 2 * expected)
    assert moe.stats.tokens_per_expert.sum().item() == 16
    shares = expert_shares([(0, moe)], ["a", "b"])["layer0"]
    assert sum(shares["tokens_per_expert"]) == 16
    for d, row in zip("ab", expected):
        torch.testing.assert_close(torch.tensor(shares["domain_fraction"][d], dtype=torch.float64), row.double() / row.sum(), atol=1e-4, rtol=0)
    assert shares["busiest_share"] == {d: max(shares["domain_fraction"][d]) for d in "ab"}
    assert busiest_share_by_domain({"l0": {"busiest_share": {"a": 0.5}}, "l1": {"busiest_share": {"a": 1.0, "b": 0.4}}}) == {"a": 0.75, "b": 0.4}
    summed = expert_shares([(0, moe), (0, moe)], ["a"])["layer0"]  # same name: summed (ensembles)
    assert sum(summed["tokens_per_expert"]) == 32 and set(summed["domain_fraction"]) == {"a"}
    reset_routing(torch.nn.Sequential(moe))  # finds the layer inside a model
    assert moe.domain_counts.sum().item() == 0 and moe.stats.tokens_per_expert.sum().item() == 0


def test_domain_ids_errors():
    with pytest.raises(ValueError, match="num_domains is 0"):
        MoE(MoEConfig(dim=8))(torch.randn(2, 3, 8), domain_ids=torch.tensor([0, 0]))
    moe = MoE(MoEConfig(dim=8, num_domains=2))
    with pytest.raises(ValueError, match="out of range"):
        moe(torch.randn(2, 3, 8), domain_ids=torch.tensor([0, 5]))
    with pytest.raises(ValueError, match="matches neither"):
        moe(torch.randn(2, 3, 8), domain_ids=torch.tensor([0, 1, 1]))


def test_noisy_gating_only_in_training():
    torch.manual_seed(4)
    moe = MoE(MoEConfig(dim=8, num_experts=4, noisy_gating=True))
    x = torch.randn(64, 8)
    moe.train()
    l1, l2 = moe(x)[1]["router_logits"], moe(x)[1]["router_logits"]
    assert not torch.equal(l1, l2)
    moe.eval()
    assert torch.equal(moe(x)[1]["router_logits"], moe(x)[1]["router_logits"])


@pytest.mark.parametrize(
    "kw,match",
    [
        (dict(dim=8, num_experts=0), "num_experts"),
        (dict(dim=8, num_experts=2, top_k=3), "top_k"),
        (dict(dim=8, top_k=0), "top_k"),
        (dict(dim=8, gate="nope"), "gate"),
        (dict(dim=8, impl="fast"), "impl"),
        (dict(dim=8, activation="tanh"), "activation"),
        (dict(dim=8, dropout=1.5), "dropout"),
        (dict(dim=8, num_shared_experts=-1), "num_shared_experts"),
        (dict(dim=8, top_k=2, gate="top2_ratio"), "top2_ratio"),
        (dict(dim=0), "dim"),
    ],
)
def test_bad_configs_raise(kw, match):
    with pytest.raises(ValueError, match=match):
        MoEConfig(**kw)


def test_wrong_input_dim_raises():
    with pytest.raises(ValueError, match="last dim 8"):
        MoE(MoEConfig(dim=8))(torch.randn(3, 7))


def test_active_params_match_dense_ffn():
    from trajmoe.moe import FeedForward

    from trajmoe.nn import count_params

    cfg = MoEConfig(dim=16, num_experts=4, top_k=1)
    dense = sum(p.numel() for p in FeedForward(16, 64).parameters())
    moe = MoE(cfg)
    assert count_params(moe).active_per_token == dense
    assert sum(p.numel() for p in moe.experts.parameters()) == 4 * dense


def test_layer_aux_losses_equal_the_reference_functions():
    torch.manual_seed(5)
    moe = MoE(MoEConfig(dim=8, num_experts=4, top_k=2, gate="renorm", num_shared_experts=1))
    _, aux = moe(torch.randn(40, 8))
    gates_TE = torch.zeros_like(aux["router_probs"]).scatter(-1, aux["expert_ids"], aux["gate_weights"])
    torch.testing.assert_close(aux["cv2_loss"], cv2_balance_loss(gates_TE))
    torch.testing.assert_close(aux["balance_loss"], load_balance_loss(aux["router_probs"], aux["expert_ids"]))
    assert torch.equal(aux["tokens_per_expert"], torch.bincount(aux["expert_ids"].reshape(-1), minlength=4))
