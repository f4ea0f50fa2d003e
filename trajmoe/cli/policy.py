"""`trajmoe train policy`, `trajmoe eval policy`, `trajmoe bench policy`."""

from __future__ import annotations

from pathlib import Path

from . import Result

MODES = "none | atm | drawn_mask | adaptive_mask | oracle"


def register(groups) -> None:
    """Add `trajmoe train policy`, `trajmoe eval policy` and `trajmoe bench policy` to the CLI."""
    p = groups["train"].add_parser("policy", help="train a trajectory-guided BC policy (frozen track model)")
    p.add_argument("--preset", default="tiny", help="default | cpu | tiny")
    p.add_argument("--conditioning", default=None, help=f"{MODES} (default: the preset's, adaptive_mask)")
    p.add_argument("--track-run", default=None, help="track-model run directory (not needed for --conditioning none / oracle)")
    p.add_argument("--data", required=True, help="directory of action-labelled episodes (trajmoe data metaworld | libero, or ATM's files)")
    p.add_argument("--tasks", default=None, help="comma-separated subset of the data's tasks")
    p.add_argument("--out", required=True, help="run directory")
    p.add_argument("--val", default=None, metavar="DIR",
                   help="held-out action-labelled episodes: held-out action MSE every train.eval_every steps "
                        "(default: at every checkpoint), best weights in RUN/best, RUN/validation.json")
    p.add_argument("--config", default=None, help="YAML with model:/train:/data: sections")
    p.add_argument("--set", action="extend", nargs="+", default=[], metavar="KEY=VALUE", help="overrides, e.g. --set steps=100 dim=64 data.track_cache=false")
    p.add_argument("--resume", action="store_true", help="continue the run in --out exactly")
    p.add_argument("--allow-change", action="store_true", help="let --resume change recorded settings (kept in history)")
    p.add_argument("--overwrite", action="store_true",
                   help="discard the run (checkpoints, trained weights) already in --out and start over")
    p.set_defaults(func=run_train, resumable=True)

    p = groups["eval"].add_parser("policy", help="closed-loop success: MetaWorld held-out variations, or a LIBERO suite (--suite)")
    p.add_argument("--run", required=True, help="policy run directory")
    p.add_argument("--suite", default=None, metavar="SUITE",
                   help="evaluate on LIBERO (extra `trajmoe[libero]`): libero_spatial | libero_object | libero_goal | "
                        "libero_10 | libero_90, ATM's protocol (horizon 600, the benchmark's init states)")
    p.add_argument("--tasks", default=None, help="comma-separated tasks (default: the tasks it was trained on; "
                                                  "LIBERO: names or indices in the suite, default the whole suite)")
    p.add_argument("--episodes", type=int, default=None, help="episodes per task (default 10; LIBERO 20, ATM's trials)")
    p.add_argument("--results", default=None, metavar="DIR",
                   help="LIBERO: where summary_<suite>.csv (ATM's format) and tasks_<suite>.csv go (default RUN/eval_results)")
    p.add_argument("--no-baseline", action="store_true", help="LIBERO: skip the zero-action baseline episodes")
    p.add_argument("--workers", type=int, default=2, help="worker processes (one torch thread each; default 2)")
    p.add_argument("--video", default=None, metavar="DIR", help="write rollout videos (with the policy's tracks drawn when it uses tracks)")
    p.add_argument("--video-format", default="mp4", choices=["mp4", "gif"],
                   help="mp4 (default) or gif (embeddable in a markdown report)")
    p.add_argument("--video-per-task", type=int, default=1, help="episodes per task written to --video")
    p.add_argument("--max-steps", type=int, default=None, help="cap below the task's episode limit")
    p.add_argument("--first-variation", type=int, default=0, help="offset into the held-out variations (LIBERO: the first trial)")
    p.add_argument("--track-run", default=None, help="override the track run recorded in the policy run")
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    p.set_defaults(func=run_eval)

    p = groups["bench"].add_parser("policy", help="ms per select_action (track prediction included)")
    p.add_argument("--conditioning", default=None, help=f"{MODES} (default adaptive_mask, or the run's)")
    p.add_argument("--device", default="cpu", help="cpu | cuda | auto")
    p.add_argument("--preset", default="default", help="policy preset (ignored with --run)")
    p.add_argument("--track-preset", default="tramoe", help="untrained track model preset when no --track-run")
    p.add_argument("--track-run", default=None, help="trained track model run")
    p.add_argument("--run", default=None, help="trained policy run (instead of a preset)")
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    p.set_defaults(func=run_bench)


def _split(s: str | None) -> list[str] | None:
    return [t.strip() for t in s.split(",") if t.strip()] if s else None


def run_train(args) -> Result | int:
    """`trajmoe train policy`: train a trajectory-guided policy; prints the final metrics; exit code 0."""
    from ..families import family  # lazy: only this verb needs it

    if args.val:
        args.set = [*args.set, f"data.val_dir={args.val}"]
    fam = family("policy")
    cfg = fam.resolve(args.preset, args.set, args.config, conditioning=args.conditioning, track_run=args.track_run,
                      tasks=_split(args.tasks))
    metrics = fam.fit(cfg, args.data, args.out, resume=args.resume, allow_change=args.allow_change, overwrite=args.overwrite)
    print(f"trained policy -> {args.out}: " + ", ".join(f"{k}={v:.4g}" for k, v in metrics.items() if isinstance(v, float)))
    return Result(metrics)


def run_eval(args) -> Result | int:
    """`trajmoe eval policy`: closed-loop MetaWorld (or LIBERO, --suite) success with Wilson intervals (table or
    --json); exit code 0."""
    from ..families import family  # lazy: only this verb needs it

    for flag, d in (("--video", args.video), ("--results", args.results)):  # before any rollout is spent
        if d and Path(d).exists() and not Path(d).is_dir():
            raise ValueError(f"{flag} {d} exists and is not a directory")
    common = dict(tasks=_split(args.tasks), workers=args.workers, video_dir=args.video, video_per_task=args.video_per_task,
                  max_steps=args.max_steps, device=args.device, track_run=args.track_run, progress=not args.json,
                  video_format=args.video_format)
    if args.suite:
        res = family("policy").evaluate(args.run, args.suite, episodes=args.episodes or 20, first_trial=args.first_variation,
                                        results_dir=args.results, baseline=not args.no_baseline, **common)
    else:
        if args.results or args.no_baseline:
            raise ValueError("--results and --no-baseline apply to LIBERO evaluation (--suite)")
        res = family("policy").evaluate(args.run, None, episodes=args.episodes or 10, first_variation=args.first_variation,
                                        **common)
    if args.json:
        return Result(res)
    if args.suite:
        print(f"{res['run']} ({res['conditioning']}), {res['suite']} trials {res['trials'][0]}..{res['trials'][1]} "
              f"(the benchmark's init states)")
    else:
        print(f"{res['run']} ({res['conditioning']}), held-out variations {res['variations'][0]}..{res['variations'][1]}")
    w = max(28, *(len(t) for t in res["tasks"]))
    print(f"{'task':{w}s} {'success':>8s} {'Wilson 95% CI':>14s} {'episodes':>9s} {'mean len':>9s} {'limit':>6s}")
    for task, r in res["tasks"].items():
        ci = f"[{r['ci95'][0]:.2f}, {r['ci95'][1]:.2f}]"
        print(f"{task:{w}s} {r['success_rate']:8.2f} {ci:>14s} {r['episodes']:9d} {r['mean_length']:9.1f} {r['limit']:6d}")
    ci = f"[{res['ci95'][0]:.2f}, {res['ci95'][1]:.2f}]"
    print(f"{'overall':{w}s} {res['success_rate']:8.2f} {ci:>14s} {res['episodes']:9d} {res['mean_length']:9.1f}")
    b = res.get("baseline")
    if b:
        per = ", ".join(f"{t} {r['successes']}/{r['episodes']}" for t, r in b["tasks"].items())
        bci = f"[{b['ci95'][0]:.2f}, {b['ci95'][1]:.2f}]"
        print(f"{'baseline (zero action)':{w}s} {b['success_rate']:8.2f} {bci:>14s} {b['episodes']:9d}  ({per})")
    if "timing" in res:
        tm = res["timing"]
        print(f"simulator: {tm['steps_per_s']:.1f} steps/s with rendering, reset {tm['reset_s']:.1f} s, "
              f"episode {tm['episode_s']:.0f} s (medians); csv: {res['csv']['summary']}, {res['csv']['tasks']}")
    oracle = f", oracle lookahead {res['oracle_ms']:.1f} ms/step" if res["oracle_ms"] else ""
    print(f"policy latency {res['latency_ms']:.1f} ms/step (median){oracle}, {res['workers']} workers, {res['wall_s']:.0f} s")
    for v in res["videos"]:
        print(f"video: {v}")
    return Result(res)


def run_bench(args) -> Result | int:
    """`trajmoe bench policy`: `select_action` latency (table or --json); exit code 0."""
    from ..policy.bench import bench_policy  # lazy: only this verb needs it

    res = bench_policy(args.conditioning, args.device, args.preset, args.track_preset, args.track_run, args.run,
                       args.repeats, args.threads)
    if args.json:
        return Result(res)
    print(f"{res['device']} {res['conditioning']} ({res['preset']}, track {res['track_model']}), {res['threads']} threads")
    print(f"  select_action {res['select_action_ms']:8.2f} ms  (track prediction {res['track_predict_ms']:.2f} ms, policy {res['policy_only_ms']:.2f} ms)")
    return Result(res)
