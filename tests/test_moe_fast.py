"""Fast MoE paths agree with the per-expert "loop" reference (forward and backward, on CPU), the
CUDA grouped_mm path is exercised on CPU and reads nothing back to the host, and the benchmarks'
CLI and FLOP counting are right. Nothing here times anything."""

import dataclasses
import json

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from trajmoe.bench.train import synthetic_batch, track_forward_flops
from trajmoe.cli import main
from trajmoe.moe import MoE, MoEConfig
from trajmoe.moe import dispatch
from trajmoe.track import TrackConfig, TrackModel

CONFIGS = [
    dict(num_experts=4, top_k=1),
    dict(num_experts=8, top_k=1),
    dict(num_experts=4, top_k=2, gate="renorm"),
    dict(num_experts=8, top_k=2, gate="softmax", num_shared_experts=1),
    dict(num_experts=4, top_k=1, gate="top2_ratio", bias=False),
]
IDS = ["E4k1", "E8k1", "E4k2renorm", "E8k2shared", "E4k1top2ratio-nobias"]


def _pair(kw, dim=16, seed=0):
    torch.manual_seed(seed)
    ref = MoE(MoEConfig(dim=dim, hidden_dim=24, impl="loop", **kw))
    fast = MoE(MoEConfig(dim=dim, hidden_dim=24, impl="grouped", **kw))
    fast.load_state_dict(ref.state_dict())
    return ref, fast


def _run(moe, x, w):
    xi = x.clone().requires_grad_()
    y, aux = moe(xi)
    ((y.float() * w).sum() + aux["z_loss"] + aux["balance_loss"] + aux["cv2_loss"]).backward()
    return y, xi.grad, {n: p.grad for n, p in moe.named_parameters()}


def _skew_router(moe):
    """Logits (3 x.v, -x.v, 0, ...): every token's top-1 is expert 0 or 1, the others stay empty."""
    with torch.no_grad():
        v = moe.router.weight_ED[0].clone()
        moe.router.weight_ED.zero_()
        moe.router.weight_ED[0], moe.router.weight_ED[1] = 3.0 * v, -v


@pytest.fixture
def force_grouped_mm(monkeypatch):
    """Take the CUDA code path on CPU: grouped_mm for fp32 too (torch's CPU kernel handles it) and
    the device-side (no host read) branches."""
    monkeypatch.setattr(dispatch, "grouped_mm_supported", lambda x, w: True)
    monkeypatch.setattr(dispatch, "host_sync_free", lambda t: True)


@pytest.mark.parametrize("skew", [False, True], ids=["balanced", "skewed"])
@pytest.mark.parametrize("kw", CONFIGS, ids=IDS)
@pytest.mark.parametrize("path", ["cpu-loop", "grouped_mm"])
def test_fast_path_matches_loop_fp32(kw, skew, path, request):
    if path == "grouped_mm":
        request.getfixturevalue("force_grouped_mm")
    ref, fast = _pair(kw)
    if skew:
        _skew_router(ref)
        _skew_router(fast)
    x = torch.randn(5, 13, 16)
    w = torch.randn(5, 13, 16)
    y_r, gx_r, g_r = _run(ref, x, w)
    y_f, gx_f, g_f = _run(fast, x, w)
    torch.testing.assert_close(y_f, y_r, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(gx_f, gx_r, atol=1e-5, rtol=1e-5)
    for n, g in g_r.items():
        if g is None:  # e.g. an expert nobody picked in the reference: zero in the fast path
            assert g_f[n] is None or g_f[n].abs().max() == 0, n
            continue
        torch.testing.assert_close(g_f[n], g, atol=1e-5, rtol=1e-5, msg=n)


def test_empty_expert_gets_exact_zero_gradient():
    ref, fast = _pair(dict(num_experts=8, top_k=1))
    _skew_router(fast)
    x = torch.randn(40, 16)
    _, _, grads = _run(fast, x, torch.randn(40, 16))
    ids = fast(x)[1]["expert_ids"].unique()
    unused = [e for e in range(8) if e not in ids.tolist()]
    assert unused, "the skewed router should leave some experts without tokens"
    for e in unused:
        assert grads["experts.w1_EDH"][e].abs().max() == 0 and grads["experts.b2_ED"][e].abs().max() == 0


@pytest.mark.parametrize("kw", CONFIGS[:4], ids=IDS[:4])
def test_bf16_grouped_mm_matches_fp32_loop(kw):
    """The real bf16 grouped_mm kernel (CPU build) vs the fp32 reference, loose tolerances."""
    ref, fast = _pair(kw, dim=32)
    fast = fast.bfloat16()
    fast.router.float()
    x = torch.randn(64, 32)
    w = torch.randn(64, 32)
    assert dispatch.grouped_mm_supported(x.bfloat16(), fast.experts.w1_EDH)
    y_r, gx_r, g_r = _run(ref, x, w)
    y_f, gx_f, g_f = _run(fast, x.bfloat16(), w)
    assert y_f.dtype == torch.bfloat16
    torch.testing.assert_close(y_f.float(), y_r, atol=0.05, rtol=0.05)
    torch.testing.assert_close(gx_f.float(), gx_r, atol=0.05, rtol=0.05)
    for n in ("experts.w1_EDH", "experts.w2_EHD", "experts.b1_EH", "experts.b2_ED", "router.weight_ED"):
        a, b = g_f[n].float(), g_r[n]
        assert torch.linalg.vector_norm(a - b) <= 0.03 * torch.linalg.vector_norm(b) + 1e-3, n


def test_autocast_grouped_matches_loop():
    """bf16 autocast (how the Trainer runs on CUDA): weights cast per call, output in bf16."""
    ref, fast = _pair(dict(num_experts=4, top_k=1), dim=32)
    x = torch.randn(64, 32)
    y_r, _ = ref(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y_f, aux = fast(x)
    assert y_f.dtype == torch.bfloat16 and aux["router_logits"].dtype == torch.float32
    torch.testing.assert_close(y_f.float(), y_r, atol=0.05, rtol=0.05)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_permutations_and_combine_gradcheck(k):
    torch.manual_seed(k)
    T, E, D = 7, 4, 3
    ids = torch.stack([torch.randperm(E)[:k] for _ in range(T)])
    plan = dispatch.make_plan(ids, E)
    # plan invariants: order sorts by expert, inverse undoes it, counts / offsets match
    flat = ids.reshape(-1)
    assert torch.equal(flat[plan.order_S], plan.expert_sorted_S)
    assert torch.all(plan.expert_sorted_S[1:] >= plan.expert_sorted_S[:-1])
    assert torch.equal(plan.order_S[plan.inverse_S], torch.arange(T * k))
    assert torch.equal(plan.counts_E, torch.bincount(flat, minlength=E))
    assert plan.offsets_E.dtype == torch.int32 and plan.offsets_E[-1] == T * k
    x = torch.randn(T, D, dtype=torch.float64, requires_grad=True)
    y = torch.randn(T * k, D, dtype=torch.float64, requires_grad=True)
    gates = torch.rand(T, k, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: dispatch.permute_in(x, plan), (x,))
    assert torch.autograd.gradcheck(lambda y, g: dispatch.combine(y, g, plan), (y, gates))
    # combine == explicit sum_k gate * y(slot)
    out = dispatch.combine(y, gates, plan)
    ref = (y[plan.inverse_S].view(T, k, D) * gates.unsqueeze(-1)).sum(1)  # slot of (t, k) = inverse[t*k + k]
    torch.testing.assert_close(out, ref)
    b = torch.randn(E, D, dtype=torch.float64, requires_grad=True)
    base = torch.randn(T * k, D, dtype=torch.float64)
    fn = lambda b: dispatch._SegmentBias.apply(base.clone(), b, plan.expert_sorted_S, plan.counts_E)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (b,))


def test_segment_sum_device_and_host_versions_agree(monkeypatch):
    g = torch.randn(10, 5, dtype=torch.float64)
    counts = torch.tensor([3, 0, 7, 0])
    ref = torch.stack([g[:3].sum(0), torch.zeros(5, dtype=g.dtype), g[3:].sum(0), torch.zeros(5, dtype=g.dtype)])
    torch.testing.assert_close(dispatch.segment_sum(g, counts), ref)
    monkeypatch.setattr(dispatch, "host_sync_free", lambda t: True)  # the CUDA branch
    torch.testing.assert_close(dispatch.segment_sum(g, counts), ref)


def test_grouped_path_reads_nothing_back_to_the_host(force_grouped_mm, monkeypatch):
    """On the CUDA path (forced on CPU) no op may read device values on the host: trap the ways
    Python can do that during a forward + backward of the layer."""
    moe = MoE(MoEConfig(dim=16, hidden_dim=24, num_experts=4, top_k=2, gate="renorm", num_domains=0))
    x = torch.randn(32, 16, requires_grad=True)

    def trap(name):
        def f(*a, **k):
            raise AssertionError(f"host sync via Tensor.{name} in the grouped path")
        return f

    for name in ("item", "tolist", "__bool__", "__int__", "__float__", "nonzero"):
        monkeypatch.setattr(torch.Tensor, name, trap(name))
    monkeypatch.setattr(torch, "nonzero", trap("torch.nonzero"))
    monkeypatch.setattr(torch, "bincount", trap("torch.bincount"))
    y, aux = moe(x)
    (y.sum() + aux["z_loss"] + aux["balance_loss"]).backward()
    monkeypatch.undo()
    assert x.grad is not None and torch.isfinite(x.grad).all()


# ---------------------------------------------------------------------------------- benchmarks


@pytest.mark.parametrize("preset", ["tiny-tramoe", "tiny-dense"])
def test_analytic_flops_match_flop_counter(preset):
    cfg = TrackConfig.preset(preset).replace(moe=dataclasses.replace(TrackConfig.preset(preset).moe, impl="loop"))
    model = TrackModel(cfg).eval()
    batch = synthetic_batch(cfg, 2, torch.device("cpu"), torch.float32)
    # math SDPA decomposes into counted bmm's (the fused CPU kernel is not counted)
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter, torch.no_grad():
        model(batch)
    counted = counter.get_total_flops() / 2
    expected = track_forward_flops(cfg)["total"]
    assert counted == pytest.approx(expected, rel=1e-9)


def _last_json(capsys):
    out = capsys.readouterr().out.strip().splitlines()
    return json.loads(out[-1])


def test_bench_moe_sweep_cli(capsys):
    argv = ["bench", "moe", "--tokens", "64", "--dim", "32", "--experts", "4", "8", "--top-k", "1", "2",
            "--impl", "grouped", "loop", "gemms", "--repeats", "1", "--json"]
    assert main(argv) == 0
    res = _last_json(capsys)
    assert [(r["experts"], r["top_k"]) for r in res["sweep"]] == [(4, 1), (4, 2), (8, 1), (8, 2)]
    for r in res["sweep"]:
        for impl in ("grouped", "loop", "gemms"):
            assert r[impl]["ratio"] > 0 and r[impl]["median_ms"] >= r[impl]["min_ms"] > 0
    assert main(["bench", "moe", "--tokens", "32", "--dim", "16", "--repeats", "1", "--dtype", "bf16", "--json"]) == 0
    single = _last_json(capsys)
    assert single["dtype"] == "bf16" and "sweep" not in single and single["grouped"]["ratio"] > 0


def test_bench_train_cli_json(capsys):
    argv = ["bench", "train", "--preset", "tiny-tramoe", "--batch", "2", "--device", "cpu", "--steps", "1",
            "--warmup", "0", "--peak-tflops", "1", "--json"]
    assert main(argv) == 0
    r = _last_json(capsys)
    cfg = TrackConfig.preset("tiny-tramoe")
    assert r["gflop_per_sample"] == pytest.approx(3 * track_forward_flops(cfg)["total"] / 1e9)
    assert r["samples_per_s"] == pytest.approx(2 / (r["step_ms"] / 1e3))
    assert 0 < r["mfu"] < 1 and r["peak_tflops"] == 1 and r["peak_mem_mb"] > 0
    assert r["params_active"] < r["params_total"] and r["precision"] == "fp32"
    assert main(argv[:-1] + ["--bf16-weights", "--set", "depth=2", "--set", "moe.layers=[1]", "--json"]) == 0
    r = _last_json(capsys)
    assert r["precision"] == "bf16 weights" and r["overrides"] == {"depth": 2, "moe.layers": [1]}


@pytest.mark.parametrize(
    "argv,msg",
    [
        (["bench", "train", "--preset", "nope", "--device", "cpu"], "unknown track preset"),
        (["bench", "train", "--preset", "tiny-dense", "--batch", "0", "--device", "cpu"], "--batch must be >= 1"),
        (["bench", "train", "--preset", "tiny-dense", "--device", "cpu", "--set", "bogus=1"], "bogus"),
        (["bench", "moe", "--experts", "2", "--top-k", "3"], "exceeds --experts"),
        (["bench", "moe", "--dtype", "fp16"], "--dtype"),
    ],
)
def test_bench_user_errors_are_one_line(argv, msg, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert msg in err and len(err.splitlines()) == 1
