"""`trajmoe data metaworld` / `trajmoe data libero` (episodes with exact GT tracks), `trajmoe eval expert`
(the scripted LIBERO expert's success) and `trajmoe viz tracks`.

    trajmoe data metaworld --tasks reach-v3,push-v3 --episodes 2 --out data/mw_demo
    trajmoe data libero --suite libero_object --tasks 0,1 --episodes 5 --out data/libero_object
    trajmoe data libero --demo libero_object/pick_up_the_milk_and_place_it_in_the_basket_demo.hdf5 --out data/lo
    trajmoe eval expert --suite libero_object --episodes 20 --workers 2
    trajmoe data metaworld --benchmark trajmoe/configs/benchmarks/metaworld.yaml --out data/mw --workers 2
    trajmoe data metaworld ... --shard 0/4          # this machine's quarter of the work list
    trajmoe viz tracks data/mw_demo/push-v3/demo_0.hdf5 --out tracks.png   # or .gif / .mp4
"""

from __future__ import annotations

from pathlib import Path

from . import Result


def _add_generation_options(p) -> None:
    """The options every episode generator shares (resumable, sharded, verified worker loop)."""
    p.add_argument("--keep-failed", action="store_true", help="keep failed expert episodes (success=False)")
    p.add_argument("--retry-failed", action="store_true", help="retry episodes recorded as failed")
    p.add_argument("--verify", action="store_true", help="read every dataset of the finished episodes; regenerate damaged ones")
    p.add_argument("--workers", type=int, default=1, help="worker processes")
    p.add_argument("--shard", default=None, help="I/N: generate only items I, I+N, ... of the work list")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--json", action="store_true", help="print a JSON summary (throughput) as the last line")


def _report(res: dict, summary, out, n_views: int, checked: str = "") -> Result:
    """Print a generator's summary (episodes, throughput, first errors); exit code 1 when any episode errored."""
    print(f"wrote {res['episodes_written']} episodes, skipped {res['episodes_skipped']} done{checked}, "
          f"{res['episodes_failed']} expert failures, {len(summary.errors)} errors -> {out}")
    if res["steps_per_s_per_core"]:
        print(f"throughput: {res['steps_per_s_per_core']} env steps/s per core (RGB + depth + tracks, "
              f"{n_views} view(s)), {res['env_steps']} steps in {res['wall_s']} s wall")
    for e in summary.errors[:5]:
        print(f"error: {e}")
    return Result(res, 1 if summary.errors else 0)


def register(groups) -> None:
    """Add `trajmoe data metaworld`, `trajmoe data libero`, `trajmoe eval expert` and `trajmoe viz tracks` to the
    CLI's verb groups."""
    _register_metaworld(groups)
    _register_libero(groups)
    _register_eval_expert(groups)
    _register_viz_tracks(groups)


def _register_metaworld(groups) -> None:
    """`trajmoe data metaworld`: MetaWorld episodes with exact tracks."""
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
    _add_generation_options(p)
    p.set_defaults(func=run_metaworld)


def _register_libero(groups) -> None:
    """`trajmoe data libero`: LIBERO episodes with exact tracks (scripted expert or replayed demonstrations)."""
    p = groups["data"].add_parser("libero", help="LIBERO episodes with exact ground-truth tracks (ATM HDF5 layout): "
                                  "scripted expert or replayed demonstrations (extra trajmoe[libero])")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--suite", help="scripted expert on this suite (libero_object: its tasks' goal is (In OBJECT REGION))")
    src.add_argument("--demo", help="comma-separated LIBERO demonstration files (data/demo_<i>/{states,actions}) to replay")
    p.add_argument("--tasks", default=None, help="with --suite: comma-separated task names or indices (default: all)")
    p.add_argument("--episodes", type=int, default=None, help="expert episodes per task (default 10); with --demo the "
                   "first N demonstrations of each file (default: all)")
    p.add_argument("--out", required=True, help="output directory (episodes in <task>_demo/ folders, as ATM's)")
    p.add_argument("--init", default="random", help="expert scenes: random (LIBERO's placement sampler, seeded; "
                   "default) or benchmark (the benchmark's init states, i.e. the evaluation states)")
    p.add_argument("--seed", type=int, default=0, help="first scene seed (random) or init state (benchmark)")
    p.add_argument("--replay", default="states", help="--demo: states (load every stored state; default) or actions "
                   "(step the actions from the first state, LIBERO's replay)")
    p.add_argument("--views", default="agentview,eye_in_hand", help="agentview and/or eye_in_hand")
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--num-points", type=int, default=128, help="tracked points per view")
    p.add_argument("--max-steps", type=int, default=None, help="expert step limit (default 300)")
    p.add_argument("--domain", default=None, help="domain name stored in every file (default: the suite)")
    p.add_argument("--raw-demos", action="store_true", help="with --suite: write the expert's states and actions as "
                   "LIBERO demonstration files OUT/<task>_demo.hdf5 (physics only, no frames or tracks)")
    _add_generation_options(p)
    p.set_defaults(func=run_libero)


def _register_eval_expert(groups) -> None:
    """`trajmoe eval expert`: the scripted LIBERO expert's success on the benchmark's init states."""
    p = groups["eval"].add_parser("expert", help="success of the scripted LIBERO pick-and-place expert on the "
                                  "benchmark's init states (Wilson intervals; extra trajmoe[libero])")
    p.add_argument("--suite", required=True, help="LIBERO suite (libero_object)")
    p.add_argument("--tasks", default=None, help="comma-separated task names or indices (default: all)")
    p.add_argument("--episodes", type=int, default=20, help="trials per task (ATM's 20: init states {5i, 5i+1})")
    p.add_argument("--first-trial", type=int, default=0, help="first trial (trial e uses init state 5 (e mod 10) + e div 10)")
    p.add_argument("--max-steps", type=int, default=None, help="episode limit (default: the protocol's 600)")
    p.add_argument("--workers", type=int, default=1, help="worker processes")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--json", action="store_true", help="print the result as JSON (last line)")
    p.set_defaults(func=run_eval_expert)


def _register_viz_tracks(groups) -> None:
    """`trajmoe viz tracks`: an episode's tracks drawn on its frames."""
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
        track = _track_config(args.num_points)
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
    return _report(res, summary, out, len(specs[0][0].views), checked)


def _track_config(num_points: int):
    """Tracks of `num_points` per view: a double grid of up to 2 x 4^2 points, the rest variance-filtered."""
    from ..envs.tracks import TrackLabelConfig

    return TrackLabelConfig(num_points=num_points, grid_size=min(4, int((num_points / 8) ** 0.5)))


def _split(text: str | None) -> list[str] | None:
    return [t.strip() for t in text.split(",") if t.strip()] if text else None


def run_libero(args) -> Result | int:
    """`trajmoe data libero`: LIBERO episodes with exact tracks from the scripted expert or replayed
    demonstration files (trajmoe.data.libero); exit code 0 when nothing errored.

    Raises:
        ValueError: bad suite, task, file, counts or option values; LiberoNotInstalled without the extra (one line).
    """
    from ..data.libero import LiberoSpec, generate, read_demo_file, write_expert_demos
    from ..data.specs import parse_shard
    from ..envs.libero import check_suite, require_libero, resolve_tasks

    for name in ("--episodes", "--image-size", "--num-points", "--max-steps", "--workers"):
        _positive(name, getattr(args, name[2:].replace("-", "_")))
    if args.seed < 0:
        raise ValueError(f"--seed must be >= 0, got {args.seed}")
    shard = parse_shard(args.shard)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} exists and is not a directory")
    views = tuple(v.strip() for v in args.views.split(",") if v.strip())
    if args.suite:
        check_suite(args.suite)
    require_libero()
    if args.suite:
        tasks = resolve_tasks(args.suite, _split(args.tasks))
        if args.raw_demos:
            res = write_expert_demos(args.suite, tasks, args.episodes or 10, out, seed=args.seed, init=args.init,
                                     max_steps=args.max_steps or 300, progress=not args.no_progress)
            print(f"wrote {res['demos']} expert demonstrations ({res['failed']} failed) in {len(res['files'])} "
                  f"LIBERO demonstration file(s) -> {out}")
            return Result(res, 0)
        spec = LiberoSpec(name=args.domain or args.suite, suite=args.suite, tasks=tuple(tasks), episodes=args.episodes or 10,
                          source="expert", init=args.init, seed=args.seed, views=views, image_size=args.image_size,
                          max_steps=args.max_steps, keep_failed=args.keep_failed, track=_track_config(args.num_points))
    else:
        if args.tasks or args.raw_demos:
            raise ValueError("--tasks and --raw-demos go with --suite; with --demo every file is one task")
        files = [read_demo_file(p) for p in _split(args.demo) or []]
        if not files:
            raise ValueError("--demo is empty")
        suites = sorted({f.suite for f in files})
        if len(suites) > 1:
            raise ValueError(f"--demo files come from several suites ({', '.join(suites)}): generate one suite per --out")
        tasks = [f.task for f in files]
        if len(set(tasks)) != len(tasks):
            raise ValueError(f"--demo files repeat a task: {', '.join(tasks)}")
        n = min(len(f.demos) for f in files)
        if args.episodes is not None and args.episodes > n:
            raise ValueError(f"--episodes {args.episodes} exceeds the demonstrations of a file ({n})")
        spec = LiberoSpec(name=args.domain or suites[0], suite=suites[0], tasks=tuple(tasks), episodes=args.episodes or n,
                          source="demo", replay=args.replay, demo_files=tuple(f.path for f in files), views=views,
                          image_size=args.image_size, track=_track_config(args.num_points))
    summary = generate(spec, out, workers=args.workers, shard=shard, retry_failed=args.retry_failed,
                       progress=not args.no_progress, verify=args.verify)
    res = summary.as_dict()
    res.update(out=str(out), shard=f"{shard[0]}/{shard[1]}", workers=args.workers, source=spec.source)
    return _report(res, summary, out, len(spec.views))


def run_eval_expert(args) -> Result:
    """`trajmoe eval expert`: the scripted expert's success on the benchmark's init states, with intervals."""
    from ..envs.libero_expert import evaluate_expert

    res = evaluate_expert(args.suite, _split(args.tasks), args.episodes, args.workers, args.first_trial, args.max_steps,
                          progress=not args.no_progress)
    lo, hi = res["ci95"]
    for t, r in res["tasks"].items():
        print(f"{t}: {r['successes']}/{r['episodes']} ({r['success_rate']:.0%}, 95% CI {r['ci95'][0]:.2f}-{r['ci95'][1]:.2f}), "
              f"mean length {r['mean_length']:.0f}")
    print(f"{res['suite']}: expert success {res['successes']}/{res['episodes']} = {res['success_rate']:.1%} "
          f"(Wilson 95% CI {lo:.3f}-{hi:.3f}); {res['steps_per_s']:.0f} steps/s, {res['wall_s']:.0f} s wall")
    return Result(res, 0)


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
