"""`trajmoe bench moe`."""

from __future__ import annotations

import json


def register(groups) -> None:
    p = groups["bench"].add_parser("moe", help="MoE layer vs same-FLOPs dense FFN, forward+backward")
    p.add_argument("--device", default="cpu", help="cpu | cuda | auto")
    p.add_argument("--tokens", type=int, default=8192)
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--experts", type=int, default=4)
    p.add_argument("--top-k", type=int, default=1)
    p.add_argument("--dtype", default="fp32", help="fp32 | bf16")
    p.add_argument("--impl", nargs="+", default=["grouped", "loop"], choices=["grouped", "loop"])
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..bench.moe import bench_moe

    res = bench_moe(args.device, args.tokens, args.dim, args.experts, args.top_k, args.dtype,
                    tuple(args.impl), args.repeats, args.threads)
    if args.json:
        print(json.dumps(res))
    else:
        print(f"{res['device']} T={res['tokens']} D={res['dim']} E={res['experts']} k={res['top_k']} {res['dtype']}")
        print(f"  dense   {res['dense']['median_ms']:8.2f} ms")
        for impl in args.impl:
            print(f"  {impl:7s} {res[impl]['median_ms']:8.2f} ms  ratio {res[impl]['ratio']:.3f}")
    return 0
