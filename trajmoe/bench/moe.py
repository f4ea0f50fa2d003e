"""MoE layer vs a dense FFN with the same active FLOPs, forward + backward, in one run.

ratio = dense_ms / moe_ms (1.0 = the MoE layer costs no more than the dense math it performs),
the median over rounds in which dense and every implementation run back to back (round-robin),
so a load that drifts during the run (a shared CPU) skews them alike.
The dense reference has hidden size k * H so that its FLOPs equal the routed experts' FLOPs
(docs/performance.md measures the same ratio on an H100). Implementations timed:
  grouped  the layer's fast path (router + sort + grouped GEMMs + gated combine + aux losses)
  loop     the per-expert reference (`MoEConfig.impl="loop"`)
  gemms    the two grouped GEMMs + activation alone on pre-sorted rows (the floor the dispatch
           overhead is measured against; the public H100 measurements' "grouped GEMMs alone")
"""

from __future__ import annotations

import itertools

import torch

from ..moe import FeedForward, MoE, MoEConfig
from ..moe import dispatch
from .timing import device_name, paired_ratio, resolve_device, time_interleaved

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
IMPLS = ("grouped", "loop", "gemms")


def _fwd_bwd(module, x, grad):
    def step():
        xi = x.detach().requires_grad_()
        y = module(xi)
        y = y[0] if isinstance(y, tuple) else y
        y.backward(grad)
    return step


def _gemms_only(moe: MoE, x_TD: torch.Tensor, grad_TD: torch.Tensor):
    """Both expert GEMMs + activation on rows already sorted by the router's choice."""
    with torch.no_grad():
        _, _, ids_TK, _ = moe.router(x_TD)
    plan = dispatch.make_plan(ids_TK, moe.cfg.num_experts)
    x_SD = x_TD.index_select(0, plan.order_S // plan.top_k)
    g_SD = grad_TD.index_select(0, plan.order_S // plan.top_k)
    ex = moe.experts

    def step():
        xi = x_SD.detach().requires_grad_()
        h = ex.act(dispatch.grouped_linear(xi, ex.w1_EDH, ex.b1_EH, plan))
        dispatch.grouped_linear(h, ex.w2_EHD, ex.b2_ED, plan).backward(g_SD)
    return step


def bench_moe_one(dev: torch.device, tokens: int, dim: int, experts: int, top_k: int, dtype: str,
                  impls: tuple[str, ...], repeats: int, seed: int = 0) -> dict:
    """One configuration: the dense reference and each implementation timed round-robin on the same
    inputs; ratio = median over rounds of dense_ms / impl_ms."""
    torch.manual_seed(seed)
    dt = DTYPES[dtype]
    x = torch.randn(tokens, dim, device=dev, dtype=dt)
    grad = torch.randn_like(x)
    fns = {"dense": _fwd_bwd(FeedForward(dim, 4 * dim * top_k).to(dev, dt), x, grad)}
    for impl in impls:
        moe = MoE(MoEConfig(dim=dim, num_experts=experts, top_k=top_k, impl="loop" if impl == "loop" else "grouped"))
        moe = moe.to(dev, dt)
        moe.router.float()  # router math stays fp32 (as in training under bf16 weights)
        fns[impl] = _gemms_only(moe, x, grad) if impl == "gemms" else _fwd_bwd(moe, x, grad)
    timed = time_interleaved(fns, dev, repeats=repeats)
    result = {"tokens": tokens, "dim": dim, "experts": experts, "top_k": top_k, "dtype": dtype}
    flops = 3 * 2 * tokens * dim * 4 * dim * top_k * 2  # (fwd + 2x bwd) x 2 GEMMs of 2*T*D*kH
    for name, t in timed.items():
        result[name] = {"median_ms": t["median_ms"], "min_ms": t["min_ms"]}
        result[name]["tflops"] = flops / t["median_ms"] / 1e9  # active (dense-equivalent) math
        if name != "dense":
            result[name]["ratio"] = paired_ratio(timed["dense"]["times_ms"], t["times_ms"])
    return result


def bench_moe(device: str = "cpu", tokens: int = 8192, dim: int | list[int] = 384, experts: int | list[int] = 4,
              top_k: int | list[int] = 1, dtype: str = "fp32", impls: tuple[str, ...] = ("grouped", "loop"),
              repeats: int = 10, threads: int | None = None, seed: int = 0) -> dict:
    """A single configuration returns its flat result; lists of dims / experts / top-k sweep every
    combination and return {"device", "torch", "threads", "sweep": [flat results]}."""
    dims, exps, ks = ([v] if isinstance(v, int) else list(v) for v in (dim, experts, top_k))
    if dtype not in DTYPES:
        raise ValueError(f"--dtype must be one of {list(DTYPES)}, got {dtype!r}")
    for impl in impls:
        if impl not in IMPLS:
            raise ValueError(f"--impl must be among {list(IMPLS)}, got {impl!r}")
    for name, vals in (("tokens", [tokens]), ("dim", dims), ("experts", exps), ("top-k", ks), ("repeats", [repeats])):
        for v in vals:
            if v < 1:
                raise ValueError(f"--{name} must be >= 1, got {v}")
    for e, k in itertools.product(exps, ks):
        if k > e:
            raise ValueError(f"--top-k {k} exceeds --experts {e}")
    dev = resolve_device(device)
    if threads:
        torch.set_num_threads(threads)
    head = {"device": device_name(dev), "torch": torch.__version__, "threads": torch.get_num_threads()}
    runs = [bench_moe_one(dev, tokens, d, e, k, dtype, impls, repeats, seed)
            for d, e, k in itertools.product(dims, exps, ks)]
    if len(runs) == 1:
        return {**head, **runs[0]}
    return {**head, "sweep": runs}
