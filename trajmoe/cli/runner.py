"""Run an experiment spec: shared data steps, then every variant x seed, resuming from DIR.

A step is written as a `trajmoe` command line (the grammar users already know); the runner parses it
and calls the command's library function in this process (`trajmoe.cli.run_command`), taking the
record the function returns, never stdout. Each finished step leaves DIR/.../<step>.done.json
(atomic) holding the step's command, its wall time and that record. A rerun skips finished steps,
so an interrupted experiment continues where it stopped; a training command (one that declares
itself `resumable`) is resumed when its run folder already holds a checkpoint.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from rich.console import Console

from ..io import atomic_write_json, finite_json, read_json
from ..train.checkpoint import latest_checkpoint
from ..experiment.spec import Spec, Step, plain_name, substitute
from . import USER_ERRORS, UsageError, is_training_error, parse_command, run_command  # steps are written as CLI commands

console = Console(stderr=True)


def run_experiment(spec: Spec, out: Path, seeds: int = 1, only: list[str] | None = None,
                   report_only: bool = False) -> dict[str, Any]:
    """Run (or, with report_only, just collect the finished steps of) every data step and variant x seed."""
    out.mkdir(parents=True, exist_ok=True)
    # built-ins: dir (the experiment directory), configs (the folder holding the spec's folder)
    base_env = {"configs": str(spec.path.resolve().parent.parent), **spec.vars, "dir": str(out)}
    results: dict[str, Any] = {"data": {}, "runs": {}}
    t0 = time.perf_counter()
    run = _collect if report_only else _run_step
    variants = [v for v in spec.variants if not only or v in only]
    if only and len(variants) != len(only):  # checked before the (long) data steps run
        raise ValueError(f"unknown variant(s) {sorted(set(only) - set(spec.variants))}; spec has {list(spec.variants)}")
    results["run_dirs"] = {v: str(variant_run_dir(spec, base_env, v)) for v in variants}
    for step in spec.data:
        rec = run(step, base_env, out / "data" / f"{step.name}.done.json", f"data/{step.name}")
        if rec is not None:
            results["data"][step.name] = rec
    for variant in variants:
        for seed in range(seeds):
            run_dir = Path(results["run_dirs"][variant]) / f"seed{seed}"
            env = {**base_env, **spec.variants[variant], "variant": variant, "seed": seed, "run": str(run_dir)}
            per = results["runs"].setdefault(variant, {}).setdefault(seed, {})
            for step in spec.steps:
                if (step.when and not env.get(step.when)) or (step.unless and env.get(step.unless)):
                    continue
                rec = run(step, env, run_dir / f"{step.name}.done.json", f"{variant}/seed{seed}/{step.name}")
                if rec is not None:
                    per[step.name] = rec
    results["wall_s"] = time.perf_counter() - t0
    return results


def variant_run_dir(spec: Spec, base_env: dict[str, Any], variant: str) -> Path:
    """Folder of a variant's runs: {runs_dir}/{run_name}, by default DIR/runs/<variant>.

    Two specs given the same `runs_dir` (`--var runs_dir=...`) share a run whose variants have the same
    `run_name` (default: the variant's name): a step finished by one with the same command is skipped by
    the other, so e.g. Tab. 1d's MoE row reuses Tab. 1f's MoE ID+OOD runs instead of retraining them.

    Raises:
        ValueError: a run_name that is not a plain folder name.
    """
    env = {**base_env, **spec.variants[variant], "variant": variant}
    root = substitute([str(spec.vars["runs_dir"])], env, f"variant {variant} runs_dir")[0]
    name = str(spec.variants[variant].get("run_name", variant))
    plain_name(name, f"spec {spec.path}: variant {variant} run_name")
    return Path(root) / name


def _collect(step: Step, env: dict[str, Any], marker: Path, label: str) -> dict[str, Any] | None:
    """A finished step's record, or None (report-only mode runs nothing)."""
    return read_json(marker) if marker.is_file() else None


def _run_step(step: Step, env: dict[str, Any], marker: Path, label: str) -> dict[str, Any]:
    """Run one step in this process through the library call its command names (`run_command`), keep its
    record (the dict the command returns: what its --json would print) in the marker, and return it."""
    argv = substitute(step.cmd, env, f"step {label}")
    if marker.is_file():
        done = read_json(marker)
        if done.get("cmd") != argv:
            raise UsageError(
                f"step {label} in {marker.parent} was done with another command (another --scale, --var or spec?): "
                f"use a new --out, or delete {marker} to redo it"
            )
        console.print(f"[dim]skip[/dim] {label} (done in {done.get('wall_s', 0):.0f}s)")
        return done
    args = parse_command(argv)
    if getattr(args, "resumable", False) and not args.resume and args.out and latest_checkpoint(args.out) is not None:
        args.resume = True  # an interrupted training step continues where it stopped
    resumed = " --resume" if getattr(args, "resume", False) and "--resume" not in argv else ""
    console.rule(f"[bold]{label}[/bold]: trajmoe {' '.join(argv)}{resumed}", style="cyan")
    t0 = time.perf_counter()
    try:
        result = run_command(args)
    except Exception as e:
        if not (isinstance(e, USER_ERRORS) or is_training_error(e)):
            raise
        raise UsageError(f"experiment step {label} failed: {e}; rerun resumes here: trajmoe {' '.join(argv)}") from None
    if result.rc:
        raise UsageError(f"experiment step {label} failed (exit {result.rc}); rerun resumes here: trajmoe {' '.join(argv)}")
    record = {"cmd": argv, "wall_s": time.perf_counter() - t0, "json": finite_json(result.record)}
    marker.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(marker, record)
    return record
