"""`trajmoe train track`, `trajmoe eval track`, `trajmoe viz track-pred`, `trajmoe viz routing`."""

from __future__ import annotations

import json

from . import Result


def register(groups) -> None:
    """Add `trajmoe train track`, `trajmoe eval track` and the track `viz` commands to the CLI."""
    p = groups["train"].add_parser("track", help="train a Tra-MoE / dense track model")
    p.add_argument("--preset", default="tiny-tramoe", help="tramoe | dense | dense-wide | dense-deep | tiny-*")
    p.add_argument("--config", default=None, help="YAML with model:/train:/data: sections")
    p.add_argument("--set", action="extend", nargs="+", default=[], metavar="KEY=VALUE", help="overrides, e.g. --set steps=100 model.moe.num_experts=8")
    p.add_argument("--data", nargs="+", default=None, help="episode directories (each a domain set)")
    p.add_argument("--out", default=None, help="run directory")
    p.add_argument("--val", nargs="+", default=None, metavar="DIR",
                   help="held-out episode folders evaluated every train.eval_every steps (default: at every "
                        "checkpoint): learning curve in metrics.jsonl, best weights in RUN/best, RUN/validation.json")
    p.add_argument("--resume", action="store_true", help="continue the run in --out exactly")
    p.add_argument("--allow-change", action="store_true", help="let --resume change recorded settings (kept in history)")
    p.add_argument("--overwrite", action="store_true",
                   help="discard the run (checkpoints, trained weights) already in --out and start over")
    p.add_argument("--list-presets", action="store_true", help="print presets with parameter counts and exit")
    p.set_defaults(func=run_train, resumable=True)

    p = groups["eval"].add_parser("track", help="track MSE / ADE / FDE per domain + expert load")
    p.add_argument("--run", required=True)
    p.add_argument("--data", nargs="+", required=True)
    p.add_argument("--max-samples", type=int, default=512)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run_eval)

    p = groups["viz"].add_parser("track-pred", help="predicted vs ground-truth tracks for a few samples")
    p.add_argument("--run", required=True)
    p.add_argument("--data", nargs="+", required=True)
    p.add_argument("--out", required=True, help="PNG")
    p.add_argument("--samples", type=int, default=6)
    p.set_defaults(func=run_viz_pred)

    p = groups["viz"].add_parser("routing", help="domain x expert routing heatmap per MoE layer")
    p.add_argument("--run", required=True)
    p.add_argument("--data", nargs="+", required=True)
    p.add_argument("--out", required=True, help="PNG")
    p.add_argument("--max-samples", type=int, default=256)
    p.add_argument("--json", action="store_true", help="also print the shares (and the busiest expert's share per domain) as JSON")
    p.set_defaults(func=run_viz_routing)


def run_train(args) -> Result | int:
    """`trajmoe train track` (or --list-presets: parameter counts per preset); exit code 0."""
    from ..families import family  # lazy: only this verb needs it

    fam = family("track")
    if args.list_presets:
        from ..nn import count_params  # lazy: only this verb needs it

        print(f"{'preset':18s} {'total':>12s} {'active/token':>13s}  moe_layers")
        for name, preset in fam.presets.items():
            c = count_params(fam.build(preset.model))
            print(f"{name:18s} {c.total:12,d} {c.active_per_token:13,d}  {list(preset.model.moe.layers)}")
        return 0
    if not args.data or not args.out:
        raise ValueError("trajmoe train track needs --data DIR ... and --out RUN")
    if args.val:
        args.set = [*args.set, "data.val_dirs=" + json.dumps(args.val)]
    metrics = fam.fit(fam.resolve(args.preset, args.set, args.config), args.data, args.out, resume=args.resume,
                      allow_change=args.allow_change, overwrite=args.overwrite)
    print(f"trained {args.preset} -> {args.out}: " + ", ".join(f"{k}={v:.4g}" for k, v in metrics.items() if isinstance(v, float)))
    return Result(metrics)


def run_eval(args) -> Result | int:
    """`trajmoe eval track`: held-out track errors beside the trivial baselines (table or --json); exit code 0.

    Raises:
        ValueError: --max-samples or --batch < 1, a bad run or data folder.
    """
    from ..families import family  # lazy: only this verb needs it

    if args.max_samples < 1:
        raise ValueError(f"--max-samples must be >= 1, got {args.max_samples}")
    if args.batch < 1:
        raise ValueError(f"--batch must be >= 1, got {args.batch}")

    res = family("track").evaluate(args.run, args.data, args.max_samples, args.batch, args.device)
    if args.json:
        return Result(res)
    print(f"{'domain':24s} {'samples':>8s} {'':10s} {'track_mse':>10s} {'ADE px':>8s} {'FDE px':>8s}")
    for dom, m in res["metrics"].items():
        print(f"{dom:24s} {m['samples']:8d} {'model':10s} {m['track_mse']:10.3e} {m['ade_px']:8.2f} {m['fde_px']:8.2f}")
        print(f"{'':24s} {'':8s} {'no-motion':10s} {m['track_mse_static']:10.3e} {m['ade_px_static']:8.2f} {m['fde_px_static']:8.2f}")
        print(f"{'':24s} {'':8s} {'skill':10s} {m['skill_mse']:10.3f} {m['skill_ade']:8.3f} {m['skill_fde']:8.3f}")
    print("skill = 1 - model error / no-motion error on the same samples (> 0: the model beats 'no point moves')")
    for layer, r in res["routing"].items():
        print(f"{layer}: tokens/expert {r['tokens_per_expert']}")
    return Result(res)


def run_viz_pred(args) -> int:
    """`trajmoe viz track-pred`: predicted vs true tracks on sample frames; prints the PNG path; exit code 0."""
    from ..viz.track_pred import plot_predictions  # lazy: only this verb needs it

    print(plot_predictions(args.run, args.data, args.out, args.samples))
    return 0


def run_viz_routing(args) -> Result | int:
    """`trajmoe viz routing`: expert load per layer and domain on held-out samples; exit code 0.

    Raises:
        ValueError: --max-samples < 1, a dense run (no MoE layer), a bad run or data folder.
    """
    from ..families import family  # lazy: only this verb needs it
    from ..viz.routing import plot_routing  # lazy: only this verb needs it

    if args.max_samples < 1:
        raise ValueError(f"--max-samples must be >= 1, got {args.max_samples}")

    res = family("track").evaluate(args.run, args.data, args.max_samples)
    if not res["routing"]:
        raise ValueError(f"run {args.run} has no MoE layer: nothing to draw")
    print(plot_routing({k: v["domain_fraction"] for k, v in res["routing"].items()}, args.out,
                       title=f"routing: {args.run}"))
    return Result({"routing": res["routing"], "routing_busiest_share": res["routing_busiest_share"]})
