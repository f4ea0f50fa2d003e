"""MoE layer vs a dense FFN with the same active FLOPs, forward + backward, in one run.

ratio = dense_ms / moe_ms (1.0 = the MoE layer costs no more than the dense math it performs).
The dense reference has hidden size k * H so that its FLOPs equal the routed experts' FLOPs.
"""

from __future__ import annotations

import torch

from ..moe import FeedForward, MoE, MoEConfig
from .timing import resolve_device, time_ms

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def bench_moe(device: str = "cpu", tokens: int = 8192, dim: int = 384, experts: int = 4, top_k: int = 1,
              dtype: str = "fp32", impls: tuple[str, ...] = ("grouped", "loop"), repeats: int = 10,
              threads: int | None = None, seed: int = 0) -> dict:
    if dtype not in DTYPES:
        raise ValueError(f"--dtype must be one of {list(DTYPES)}, got {dtype!r}")
    for name, v in (("tokens", tokens), ("dim", dim), ("experts", experts), ("top-k", top_k)):
        if v < 1:
            raise ValueError(f"--{name} must be >= 1, got {v}")
    dev = resolve_device(device)
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    dt = DTYPES[dtype]
    x = torch.randn(tokens, dim, device=dev, dtype=dt)
    grad = torch.randn_like(x)

    def fwd_bwd(module):
        def step():
            xi = x.detach().requires_grad_()
            y = module(xi)
            y = y[0] if isinstance(y, tuple) else y
            y.backward(grad)
        return step

    dense = FeedForward(dim, 4 * dim * top_k).to(dev, dt)
    result = {
        "device": str(dev) if dev.type == "cpu" else torch.cuda.get_device_name(dev),
        "torch": torch.__version__, "threads": torch.get_num_threads(),
        "tokens": tokens, "dim": dim, "experts": experts, "top_k": top_k, "dtype": dtype,
        "dense": time_ms(fwd_bwd(dense), dev, repeats=repeats),
    }
    flops = 3 * 2 * tokens * dim * 4 * dim * top_k * 2  # fwd + 2x bwd, two GEMMs
    result["dense"]["tflops"] = flops / result["dense"]["median_ms"] / 1e9
    for impl in impls:
        moe = MoE(MoEConfig(dim=dim, num_experts=experts, top_k=top_k, impl=impl)).to(dev, dt)
        moe.router.float()
        r = time_ms(fwd_bwd(moe), dev, repeats=repeats)
        r["ratio"] = result["dense"]["median_ms"] / r["median_ms"]
        result[impl] = r
    return result
