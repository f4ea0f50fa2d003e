"""`trajmoe data metaworld` (episodes with exact GT tracks) and `trajmoe viz tracks`.

    trajmoe data metaworld --tasks reach-v3,push-v3 --episodes 2 --out data/mw_demo
    trajmoe data metaworld --benchmark trajmoe/configs/benchmarks/metaworld.yaml --out data/mw --workers 2
    trajmoe data metaworld ... --shard 0/4          # this machine's quarter of the work list
    trajmoe viz tracks data/mw_demo/push-v3/demo_0.hdf5 --out tracks.png   # or .gif / .mp4
"""

from __future__ import annotations

from pathlib import Path
from . import Result


def register(groups) -> None:
    """Add `trajmoe data metaworld` and `trajmoe viz tracks` to the CLI's verb groups."""
    p = groups["data"].add_parser("metaworld", help="MetaWorld episodes with exact ground-truth tracks (ATM HDF5 layout)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--tasks", help="comma-separated MetaWorld v3 tasks, or 'all'")
    src.add_argument("--benchmark", help="benchmark YAML or packaged name (metaworld, metaworld-demo, metaworld-smoke): every domain in it")
    p.add_argument("--episodes", type=int, default=None, help="episodes per task (with --tasks; default 10)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--views", default="agentview,eye_in_hand", help="agentview (scene camera) and/or eye_in_hand (gripperPOV)")
    p.add_argument("--camera", default="corner", help="scene camera: topview corner corner2 corner3 corner4 behindGripper")
    p.add_argument("--domain", default="metaworld", help="domain name stored in every file (with --tasks)")
    p.add_argument("--action-free", action="store_true", help="do not store actions (out-of-domain videos)")
    p.add_argument("--variation-seed", type=int, default=0, help="first training variation (episode i uses seed+i)")
    p.add_argument("--visual-variation", action="store_true", help="randomise colours and lighting per episode")
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--num-points", type=int, default=128, help="tracked points per view")
    p.add_argument("--max-steps", type=int, default=None, help="episode step limit for the expert (default: the task's limit)")
    p.add_argument("--oracle-points", default=None, help="comma-separated query-grid sizes (e.g. 16,32): also store each "
                   "frame's exact future tracks of that grid (needed by --conditioning oracle)")
    p.add_argument("--oracle-horizon", type=int, default=16, help="steps of the oracle grid tracks (the track length)")
    p.add_argument("--keep-failed", action="store_true", help="keep failed expert episodes (success=False)")
    p.add_argument("--retry-failed", action="store_true", help="retry episodes recorded as failed")
    p.add_argument("--verify", action="store_true", help="read every dataset of the finished episodes; regenerate damaged ones")
    p.add_argument("--workers", type=int, default=1, help="worker processes")
    p.add_argument("--shard", default=None, help="I/N: generate only items I, I+N, ... of the work list")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--json", action="store_true", help="print a JSON summary (throughput) as the last line")
    p.set_defaults(func=run_metaworld)

    p = groups["viz"].add_parser("tracks", help="draw an episode's tracks (visible/occluded) on its frames")
    p.add_argument("file", help="episode HDF5 file")
    p.add_argument("--out", required=True, help="OUT.png (a few frames), OUT.gif or OUT.mp4 (every frame)")
    p.add_argument("--frames", type=int, default=4, help="frames in the PNG")
    p.add_argument("--horizon", type=int, default=16, help="future steps drawn per point")
    p.add_argument("--scale", type=int, default=3, help="upscaling factor")
    p.add_argument("--points", type=int, default=64, help="at most this many points per view")
    p.set_defaults(func=run_viz_tracks)


def _positive(name: str, value: int | None) -> None:
    if value is not None and value <= 0:
        raise ValueError(f"{name} must be positive, got {value}")


def run_metaworld(args) -> Result | int:
    """`trajmoe data metaworld`: generate expert episodes with exact tracks; exit code 0 when none failed.

    Raises:
        ValueError: unknown task or benchmark, bad --shard, bad counts (one line).
    """
    # lazy: only this verb needs these (the CLI imports no numpy / simulator code up front)
    from ..config import replace
    from ..data.generate import generate
    from ..data.specs import DomainSpec, load_benchmark, parse_shard, write_benchmark_manifest
    from ..envs.metaworld import TASKS, check_task
    from ..envs.tracks import TrackLabelConfig

    for name in ("--episodes", "--image-size", "--num-points", "--max-steps", "--workers"):
        _positive(name, getattr(args, name[2:].replace("-", "_")))
    shard = parse_shard(args.shard)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} exists and is not a directory")
    bench = None
    if args.benchmark:
        bench = load_benchmark(args.benchmark)
        specs = [(d, str(out / d.name)) for d in bench.domains]
        if args.episodes is not None:
            specs = [(replace(d, {"episodes": args.episodes}), o) for d, o in specs]
    else:
        tasks = list(TASKS) if args.tasks.strip() == "all" else [t.strip() for t in args.tasks.split(",") if t.strip()]
        if not tasks:
            raise ValueError("--tasks is empty")
        for t in tasks:
            check_task(t)
        track = TrackLabelConfig(num_points=args.num_points, grid_size=min(4, int((args.num_points / 8) ** 0.5)))
        spec = DomainSpec(
            name=args.domain, tasks=tuple(tasks), episodes=args.episodes or 10, camera=args.camera,
            views=tuple(v.strip() for v in args.views.split(",") if v.strip()), action_free=args.action_free,
            variation_seed=args.variation_seed, visual_variation=args.visual_variation, image_size=args.image_size,
            max_steps=args.max_steps, keep_failed=args.keep_failed, track=track,
            oracle_points=_oracle_points(args.oracle_points), oracle_horizon=args.oracle_horizon,
        )
        specs = [(spec, str(out))]
    summary = generate(specs, workers=args.workers, shard=shard, retry_failed=args.retry_failed, progress=not args.no_progress,
                       verify=args.verify)
    if bench is not None:
        write_benchmark_manifest(out, bench)
    res = summary.as_dict()
    res["out"] = str(out)
    res["shard"] = f"{shard[0]}/{shard[1]}"
    res["workers"] = args.workers
    checked = "" if args.verify or not res["episodes_skipped"] else " (their contents not re-read: --verify checks them)"
    print(f"wrote {res['episodes_written']} episodes, skipped {res['episodes_skipped']} done{checked}, "
          f"{res['episodes_failed']} expert failures, {len(summary.errors)} errors -> {out}")
    if res["steps_per_s_per_core"]:
        print(f"throughput: {res['steps_per_s_per_core']} env steps/s per core (RGB + depth + tracks, "
              f"{len(specs[0][0].views)} view(s)), {res['env_steps']} steps in {res['wall_s']} s wall")
    for e in summary.errors[:5]:
        print(f"error: {e}")
    return Result(res, 1 if summary.errors else 0)


def run_viz_tracks(args) -> int:
    """`trajmoe viz tracks`: draw an episode file's tracks into a PNG; exit code 0."""
    from ..viz.tracks import save_track_picture  # lazy: only this verb needs it

    out = save_track_picture(args.file, args.out, num_frames=args.frames, horizon=args.horizon, scale=args.scale,
                             max_points=args.points)
    print(f"wrote {out}")
    return 0


def _oracle_points(text: str | None) -> tuple[int, ...]:
    if not text:
        return ()
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise ValueError(f"--oracle-points expects comma-separated integers (e.g. 16,32), got {text!r}") from None
