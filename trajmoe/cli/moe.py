"""`trajmoe bench moe` (MoE layer vs same-FLOPs dense FFN) and `trajmoe bench train` (track-model
training throughput)."""

from __future__ import annotations

from . import Result


def register(groups) -> None:
    """Add `trajmoe bench moe` and `trajmoe bench train` to the CLI."""
    p = groups["bench"].add_parser("moe", help="MoE layer vs same-FLOPs dense FFN, forward+backward")
    p.add_argument("--device", default="cpu", help="cpu | cuda | auto")
    p.add_argument("--tokens", type=int, default=8192)
    p.add_argument("--dim", type=int, nargs="+", default=[384], help="one or more model dims (sweep)")
    p.add_argument("--experts", type=int, nargs="+", default=[4], help="one or more expert counts (sweep)")
    p.add_argument("--top-k", type=int, nargs="+", default=[1], help="one or more top-k values (sweep)")
    p.add_argument("--dtype", default="fp32", help="fp32 | bf16 (bf16: weights and activations, router fp32)")
    p.add_argument("--impl", nargs="+", default=["grouped", "loop"], choices=["grouped", "loop", "gemms"],
                   help="gemms = the two grouped GEMMs alone (no routing / permutation)")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    p.set_defaults(func=run)

    t = groups["bench"].add_parser("train", help="track-model training step throughput (fwd+bwd+clip+AdamW)")
    t.add_argument("--preset", default="tramoe", help="track preset: tramoe, dense, tiny-tramoe, ...")
    t.add_argument("--batch", type=int, default=512)
    t.add_argument("--device", default="auto", help="cpu | cuda | auto")
    t.add_argument("--steps", type=int, default=10, help="timed optimizer steps")
    t.add_argument("--warmup", type=int, default=3, help="untimed steps first (compile, allocator)")
    t.add_argument("--amp", default="auto", choices=["auto", "bf16", "off"],
                   help="bf16 autocast: auto = on for CUDA, off for CPU")
    t.add_argument("--bf16-weights", action="store_true", help="bf16 parameters and inputs (router stays fp32)")
    t.add_argument("--compile", action="store_true", help="torch.compile the model (optional)")
    t.add_argument("--peak-tflops", type=float, default=None,
                   help="peak TFLOP/s for MFU (default: a table by device, see docs/performance.md)")
    t.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    t.add_argument("--set", action="extend", nargs="+", default=[], metavar="KEY=VALUE", help="override TrackConfig fields")
    t.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    t.set_defaults(func=run_train)


def run(args) -> Result | int:
    """`trajmoe bench moe`: MoE layer vs same-FLOPs dense FFN timings (table or --json); exit code 0."""
    from ..bench.moe import bench_moe  # lazy: only this verb needs it

    res = bench_moe(args.device, args.tokens, args.dim, args.experts, args.top_k, args.dtype,
                    tuple(args.impl), args.repeats, args.threads)
    if args.json:
        return Result(res)
    print(f"{res['device']}, {res['threads']} threads, torch {res['torch']}")
    for r in res.get("sweep", [res]):
        print(f"T={r['tokens']} D={r['dim']} E={r['experts']} k={r['top_k']} {r['dtype']}")
        print(f"  dense   {r['dense']['median_ms']:8.2f} ms  {r['dense']['tflops']:.2f} TFLOP/s")
        for impl in args.impl:
            print(f"  {impl:7s} {r[impl]['median_ms']:8.2f} ms  ratio {r[impl]['ratio']:.3f}")
    return Result(res)


def run_train(args) -> Result | int:
    """`trajmoe bench train`: track-model training throughput and MFU (table or --json); exit code 0."""
    from ..bench.train import bench_train  # lazy: only this verb needs it
    from ..config import parse_overrides  # lazy: only this verb needs it

    res = bench_train(args.preset, args.batch, args.device, steps=args.steps, warmup=args.warmup, amp=args.amp,
                      bf16_weights=args.bf16_weights, compile=args.compile, peak_tflops=args.peak_tflops,
                      threads=args.threads, overrides=parse_overrides(args.set))
    if args.json:
        return Result(res)
    print(f"{res['device']} preset={res['preset']} batch={res['batch']} precision={res['precision']}"
          f"{' compiled' if res['compile'] else ''}")
    print(f"  params {res['params_total'] / 1e6:.1f}M total, {res['params_active'] / 1e6:.1f}M active per token")
    print(f"  step {res['step_ms']:.1f} ms (min {res['step_min_ms']:.1f})  {res['samples_per_s']:,.0f} samples/s")
    print(f"  {res['gflop_per_sample']:.2f} GFLOP/sample  {res['achieved_tflops']:.2f} TFLOP/s  "
          f"MFU {100 * res['mfu']:.2f}% of {res['peak_tflops']:g} TFLOP/s  peak mem {res['peak_mem_mb']:,.0f} MB")
    return Result(res)
