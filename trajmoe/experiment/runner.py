"""Run an experiment spec: shared data steps, then every variant x seed, resuming from DIR.

A step is written as a `trajmoe` command line (the grammar users already know); the runner hands it
to the `execute(argv, label) -> record` it is given (the CLI's: parse the command and call its
library function in this process, which reaches a model family only through `trajmoe.families`),
taking the record the command returns, never stdout. Each finished step leaves
DIR/.../<step>.done.json (atomic) holding the step's command, its wall time and that record. A rerun
skips finished steps, so an interrupted experiment continues where it stopped.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

from rich.console import Console

from ..io import atomic_write_json, finite_json, read_json
from .spec import Spec, Step, plain_name, substitute

console = Console(stderr=True)
# execute(argv, label) -> the step's record (a JSON-able dict or None); raises a one-line error naming the step
Execute = Callable[[list[str], str], "dict[str, Any] | None"]


def run_experiment(spec: Spec, out: Path, execute: Execute | None, seeds: int = 1,
                   only: list[str] | None = None) -> dict[str, Any]:
    """Run every data step and variant x seed through `execute` (None: just collect the finished steps)."""
    out.mkdir(parents=True, exist_ok=True)
    # built-ins: dir (the experiment directory), configs (the folder holding the spec's folder)
    base_env = {"configs": str(spec.path.resolve().parent.parent), **spec.vars, "dir": str(out)}
    results: dict[str, Any] = {"data": {}, "runs": {}}
    t0 = time.perf_counter()
    variants = [v for v in spec.variants if not only or v in only]
    if only and len(variants) != len(only):  # checked before the (long) data steps run
        raise ValueError(f"unknown variant(s) {sorted(set(only) - set(spec.variants))}; spec has {list(spec.variants)}")
    results["run_dirs"] = {v: str(variant_run_dir(spec, base_env, v)) for v in variants}
    for step in spec.data:
        rec = _run_step(step, base_env, out / "data" / f"{step.name}.done.json", f"data/{step.name}", execute)
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
                rec = _run_step(step, env, run_dir / f"{step.name}.done.json", f"{variant}/seed{seed}/{step.name}", execute)
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


def _run_step(step: Step, env: dict[str, Any], marker: Path, label: str, execute: Execute | None) -> dict[str, Any] | None:
    """Run one step (`execute`), keep its record (what its --json would print) in the marker, and return it;
    without `execute` (report only) the finished step's record or None."""
    if execute is None:
        return read_json(marker) if marker.is_file() else None
    argv = substitute(step.cmd, env, f"step {label}")
    if marker.is_file():
        done = read_json(marker)
        if done.get("cmd") != argv:
            raise ValueError(
                f"step {label} in {marker.parent} was done with another command (another --scale, --var or spec?): "
                f"use a new --out, or delete {marker} to redo it"
            )
        console.print(f"[dim]skip[/dim] {label} (done in {done.get('wall_s', 0):.0f}s)")
        return done
    t0 = time.perf_counter()
    result = execute(argv, label)
    record = {"cmd": argv, "wall_s": time.perf_counter() - t0, "json": finite_json(result)}
    marker.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(marker, record)
    return record
