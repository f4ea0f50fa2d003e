"""The planner's verbs in the one grammar `trajmoe <verb> <family>`: `data scenes`, `train planner`,
`finetune planner`, `ensemble planner`, `eval planner`; and `bench drive-scorer`.
The old spellings `trajmoe drive data|train|finetune|ensemble|eval` are rewritten to these (`trajmoe.cli.OLD_SPELLINGS`)."""

from __future__ import annotations

import json
from pathlib import Path
import time

from trajmoe.io import atomic_write_json, finite_json
from . import Result


def register(groups) -> None:
    """Add the planner's verbs to the CLI's verb groups.

    Args:
        groups: {verb: argparse sub-parsers action} from `trajmoe.cli.build_parser`.
    """
    _register_data(groups)
    _register_train(groups)
    _register_finetune(groups)
    _register_ensemble(groups)
    _register_eval(groups)
    _register_bench_scorer(groups)


def _register_data(groups) -> None:
    """`trajmoe data scenes`: highway-env scene generation."""
    p = groups["data"].add_parser("scenes", help="highway-env scenes for the planner (one domain per scenario)")
    p.add_argument("--scenarios", default="highway,merge,roundabout,intersection")
    p.add_argument("--scenes", type=int, required=True, help="total scenes, split evenly over the scenarios")
    p.add_argument("--out", required=True)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--seed", type=int, default=0, help="first episode seed (use a distant one for held-out data)")
    p.add_argument("--stride", type=int, default=20, help="steps (0.1 s) between scenes of one episode")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--verify", action="store_true", help="read every finished scene; simulate damaged episodes again")
    p.set_defaults(func=run_data)


def _register_train(groups) -> None:
    """`trajmoe train planner`: supervised planner training."""
    p = groups["train"].add_parser("planner", help="train the TrajMoE driving planner (supervised vocabulary scorer)")
    p.add_argument("--data", required=True, help="scene directory (trajmoe data scenes)")
    p.add_argument("--preset", default=None, help="tiny-moe, tiny-dense, cpu-moe, cpu-dense, moe, dense")
    p.add_argument("--config", default=None, help="YAML with sections model/data/train")
    p.add_argument("--out", required=True)
    p.add_argument("--val", default=None, metavar="DIR",
                   help="held-out scenes: open-loop EPDMS every train.eval_every steps (default: 10 evaluations), "
                        "best weights in RUN/best, RUN/validation.json (data.val_scenes=N: N of them)")
    _run_folder_options(p, "e.g. --set steps=50 model.moe.top_k=1")
    p.set_defaults(func=run_train, resumable=True)


def _run_folder_options(p, set_help: str) -> None:
    """--set / --resume / --allow-change / --overwrite / --no-progress of the verbs that write a run folder."""
    p.add_argument("--set", action="extend", nargs="+", default=[], metavar="KEY=VALUE", help=set_help)
    p.add_argument("--resume", action="store_true", help="continue the run in --out exactly")
    p.add_argument("--allow-change", action="store_true", help="let --resume change recorded settings (kept in history)")
    p.add_argument("--overwrite", action="store_true",
                   help="discard the run (checkpoints, trained weights) already in --out and start over")
    p.add_argument("--no-progress", action="store_true")


def _register_finetune(groups) -> None:
    """`trajmoe finetune planner`: GRPO fine-tuning."""
    p = groups["finetune"].add_parser("planner", help="GRPO fine-tuning of the planner's scoring heads (TrajMoE paper eqs. 5-10)")
    p.add_argument("--run", required=True, help="supervised run directory")
    p.add_argument("--out", required=True)
    p.add_argument("--config", default=None, help="YAML with sections train/grpo")
    _run_folder_options(p, "e.g. --set steps=50 grpo.beta=0.1")
    p.set_defaults(func=run_finetune, resumable=True)


def _register_ensemble(groups) -> None:
    """`trajmoe ensemble planner`: weighted ensemble of runs."""
    p = groups["ensemble"].add_parser("planner", help="weighted average of several planner runs' sub-score predictions")
    p.add_argument("--runs", nargs="+", required=True)
    p.add_argument("--weights", nargs="+", type=float, default=None)
    p.add_argument("--out", required=True)
    p.set_defaults(func=run_ensemble)


def _register_eval(groups) -> None:
    """`trajmoe eval planner`: open- and closed-loop evaluation."""
    p = groups["eval"].add_parser("planner", help="planner EPDMS + sub-scores on held-out scenes; --closed-loop drives highway-env")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--run", help="run or ensemble directory")
    src.add_argument("--ensemble", nargs="+", help="run directories to ensemble")
    src.add_argument("--baselines-only", action="store_true", help="the expert and the rule-based baselines only")
    p.add_argument("--weights", nargs="+", type=float, default=None)
    p.add_argument("--data", help="held-out scene directory (open loop)")
    p.add_argument("--limit", type=int, default=0, help="N scenes only, taken round-robin over the scenarios (0 = all)")
    p.add_argument("--closed-loop", type=int, default=0, metavar="EPISODES", help="episodes per scenario in closed loop")
    p.add_argument("--scenarios", default="highway,merge,roundabout,intersection")
    p.add_argument("--plots", default=None, help="directory for scene / routing pictures")
    p.add_argument("--out", default=None, help="write the result JSON here")
    p.add_argument("--no-baselines", action="store_true",
                   help="skip the rule-based baselines (deterministic: evaluate them once per scene set)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run_eval)


def _register_bench_scorer(groups) -> None:
    """`trajmoe bench drive-scorer`: EPDMS scorer throughput."""
    p = groups["bench"].add_parser("drive-scorer", help="trajectory-scores per second of the EPDMS scorer (CPU)")
    p.add_argument("--data", required=True)
    p.add_argument("--trajectories", type=int, default=1024)
    p.add_argument("--scenes", type=int, default=8)
    p.add_argument("--no-track", action="store_true", help="score the poses as given (no LQR tracking)")
    p.add_argument("--repeat", type=int, default=3, help="time each scene this many times, keep the fastest")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run_bench_scorer)


def _split(s: str) -> list[str]:
    return [x.strip() for x in s.split(",") if x.strip()]


def run_data(args) -> int:
    """`trajmoe data scenes`: generate highway-env planner scenes; exit code 0."""
    from trajmoe.drive.scenes import SceneGenConfig, generate  # lazy: only this verb needs it

    m = generate(args.out, _split(args.scenarios), args.scenes, SceneGenConfig(seed=args.seed, stride=args.stride),
                 workers=args.workers, progress=not args.no_progress, verify=args.verify)
    print(f"{m['n_scenes']} scenes in {args.out} ({m['generated_now']} new, "
          f"{m['scenes_per_second_now'] or 0:.2f} scenes/s)")
    return 0


def run_train(args) -> Result | int:
    """`trajmoe train planner`: supervised planner training; exit code 0.

    Raises:
        ValueError: neither --preset nor --config, or a bad config key/value.
    """
    from trajmoe.families import family  # lazy: only this verb needs it

    if args.preset is None and args.config is None:
        raise ValueError("give --preset NAME or --config FILE")
    sets = [*args.set, f"data.val_dir={Path(args.val).resolve()}"] if args.val else args.set  # the real folder (resume checks)
    fam = family("planner")
    res = fam.fit(fam.resolve(args.preset, sets, args.config), args.data, args.out, resume=args.resume,
                  allow_change=args.allow_change, overwrite=args.overwrite, progress=not args.no_progress)
    summary = {k: v for k, v in res.items() if isinstance(v, (int, float, str))}
    print(json.dumps(summary))
    return Result(summary)


def run_finetune(args) -> Result | int:
    """`trajmoe finetune planner`: GRPO fine-tuning of a supervised run (TrajMoE paper, Xing et al., eqs. 5-10);
    exit code 0.
    """
    from trajmoe.families import family  # lazy: only this verb needs it

    res = family("planner").verbs["finetune"](args.run, args.out, args.set, args.config, args.resume, progress=not args.no_progress,
                   allow_change=args.allow_change, overwrite=args.overwrite)
    summary = {k: v for k, v in res.items() if isinstance(v, (int, float, str))}
    print(json.dumps(summary))
    return Result(summary)


def run_ensemble(args) -> int:
    """`trajmoe ensemble planner`: write RUN/ensemble.json averaging several runs; exit code 0."""
    from trajmoe.families import family  # lazy: only this verb needs it

    spec = family("planner").verbs["ensemble"](args.out, args.runs, args.weights)
    print(f"ensemble of {len(spec['runs'])} runs written to {Path(args.out) / 'ensemble.json'}")
    return 0


def run_eval(args) -> Result | int:
    """`trajmoe eval planner`: EPDMS and sub-scores open (and closed) loop beside the rule-based baselines; exit
    code 0. ValueError: neither --data nor --closed-loop, or a bad run / weights.
    """
    from trajmoe.families import family  # lazy: only this verb needs it

    result = family("planner").evaluate(
        args.run, args.data, limit=args.limit, closed_loop=args.closed_loop, scenarios=tuple(_split(args.scenarios)),
        ensemble=args.ensemble, weights=args.weights, baselines=not args.no_baselines, plots=args.plots,
        progress=not args.json)
    if args.out:
        atomic_write_json(args.out, finite_json(result))
    if not args.json:
        _print_eval(result)
    return Result(result)


def _print_eval(result: dict) -> None:
    """Planner, expert and baselines side by side (open loop: EPDMS +- 95% interval and sub-scores;
    closed loop: crash, off-road, progress)."""
    subs = ("NC", "DAC", "DDC", "TLC", "EP", "TTC", "LK", "HC", "EC")
    ol = result.get("open_loop")
    if ol:
        print(f"open loop ({ol['expert']['n']} scenes, {ol.get('scenes_with_previous_frame', 0)} with a previous frame for EC)")
        rows = {**({"planner": ol["planner"]} if "planner" in ol else {}),
                **({"vocab oracle": ol["vocab_oracle"]} if "vocab_oracle" in ol else {}),
                "expert": ol["expert"], **ol.get("baselines", {})}
        print(f"  {'':18s} {'EPDMS +- 95% CI':>15s} " + " ".join(f"{m:>5s}" for m in subs))
        for name, p in rows.items():
            print(f"  {name:18s} {p['EPDMS']:.3f} +- {p['EPDMS_ci95']:.3f}  " + " ".join(f"{p[m]:5.3f}" for m in subs))
        for s, v in ol["expert"]["per_scenario"].items():
            line = " ".join(f"{n} {r['per_scenario'][s]['EPDMS']:.3f}" for n, r in rows.items() if s in r["per_scenario"])
            print(f"  {s:12s} n={v['n']:4d} EPDMS: {line}")
        if "vocab_oracle" in ol:
            print("  (vocab oracle: the vocabulary entry with the best true EPDMS per scene, EC = 1: the ceiling of any"
                  " scorer over this vocabulary)")
    cl = result.get("closed_loop")
    if cl:
        for name, c in cl.items():
            if isinstance(c, dict):
                cw, ow = c["crash_rate_wilson95"], c["offroad_rate_wilson95"]
                print(f"closed loop {name:18s}: crash {c['crash_rate']:.2f} [{cw[0]:.2f}, {cw[1]:.2f}]  off-road "
                      f"{c['offroad_rate']:.2f} [{ow[0]:.2f}, {ow[1]:.2f}]  progress {c['progress_m']:.1f} +- "
                      f"{c['progress_m_ci95']:.1f} m  ({c['episodes']} episodes; rates with Wilson 95 %)")


def run_bench_scorer(args) -> Result | int:
    """Trajectory-scores per CPU-second of one process (single-threaded numpy): a fixed set of plans
    (drawn from the scenes' expert and agent futures, like a vocabulary) scored in every scene. The
    first scene pays the per-plan reference-profile fit and per-scene preparation ("cold"); the
    figure is the mean over the others (the vocabulary's profiles cached, as in target generation)
    of each scene's fastest of --repeat timings (the machine is shared: the minimum is the least
    disturbed)."""
    import numpy as np  # lazy: only this verb needs it

    from trajmoe.drive.metrics import prepare, score_trajectories  # lazy: only this verb needs it
    from trajmoe.drive.scenes import load_scenes  # lazy: only this verb needs it
    from trajmoe.drive.vocab import trajectory_samples  # lazy: only this verb needs it

    if args.trajectories < 1 or args.scenes < 2 or args.repeat < 1:
        raise ValueError("--trajectories and --repeat must be >= 1 and --scenes >= 2")
    scenes = load_scenes(args.data, args.scenes)
    if len(scenes) < 2:
        raise ValueError(f"{args.data} holds {len(scenes)} scene(s); the benchmark needs >= 2")
    samples = trajectory_samples(scenes)
    rng = np.random.default_rng(0)
    traj = samples[rng.integers(0, len(samples), args.trajectories)].astype(np.float64)
    times, prep_times = [], []
    for sc in scenes:
        t = time.process_time()
        prepare(sc)
        score_trajectories(sc, traj[:1], track=not args.no_track)  # the expert reference, cached per scene
        prep_times.append(time.process_time() - t)
        best = float("inf")
        for _ in range(args.repeat if times else 1):  # the first (cold) scene once
            t = time.process_time()
            score_trajectories(sc, traj, track=not args.no_track)
            best = min(best, time.process_time() - t)
        times.append(best)
    warm = np.array(times[1:])
    agents = float(np.mean([len(sc["agents"]) for sc in scenes]))
    res = {"scenes": len(scenes), "trajectories_per_scene": args.trajectories, "mean_agents": agents, "repeat": args.repeat,
           "tracked": not args.no_track, "trajectory_scores_per_cpu_s": args.trajectories / float(warm.mean()),
           "cold_first_scene_s": times[0], "scene_prep_s": float(np.mean(prep_times)),
           "per_scene_s": [round(x, 4) for x in times]}
    if not args.json:
        print(f"{res['trajectory_scores_per_cpu_s']:.0f} trajectory-scores per CPU-second "
              f"({args.trajectories} plans x {len(scenes) - 1} scenes, {agents:.1f} agents on average, "
              f"{'LQR-tracked' if res['tracked'] else 'poses as given'}); first scene {times[0]:.2f} s, "
              f"per-scene preparation {res['scene_prep_s']:.3f} s")
    return Result(res)
