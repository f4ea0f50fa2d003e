"""The driving planner's registration in `trajmoe.families`: its `fit` (supervised training composed with
the held-out validation), and its evaluation work (the `evaluate` verb, the validation during training)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

from ..envs.highway import SCENARIOS
from ..families import Family, register
from ..train.validation import Selection
from .config import PRESETS, DriveModelConfig
from .dataset import DriveDataset, collate
from .ensemble import Ensemble, load_any, write_ensemble
from .evaluate import evaluate_open_loop, evaluate_planner_files, evaluate_vocab_oracle
from .metrics import METRICS, TARGET_METRICS
from .model import DrivePlanner
from .run import finetune, from_run, resolve
from .run import fit as fit_supervised
from .scenes import load_scenes, select_scene_paths


def fit(cfg: dict, data_dir: str, out: str, resume: bool = False, allow_change: bool = False,
        overwrite: bool = False, progress: bool = True) -> dict:
    """The family's `fit`: `trajmoe.drive.run.fit` (supervised training; arguments, result and errors
    as there) with, when `data.val_dir` is set, the held-out EPDMS validation of `validation_fn`
    (ranked by "EPDMS", highest best). Errors also: a bad `data.val_dir`, as `validation_fn`."""
    data = cfg["data"]
    validation = (validation_fn(data.val_dir, data.val_scenes), Selection("EPDMS", "max")) if data.val_dir else None
    return fit_supervised(cfg, data_dir, out, resume, allow_change, overwrite, progress, validation)


def validation_fn(val_dir: str | Path, max_scenes: int = 0, batch_size: int = 16):
    """eval_fn(planner, step) for the Trainer: open-loop EPDMS and every sub-score of the planner on the
    fixed held-out scenes of `val_dir` (all, or `max_scenes` round-robin over the scenarios), as
    `trajmoe eval planner --no-baselines` scores them (`evaluate_planner_files`: plans tracked and
    scored, EC against the plan of the previous frame), plus `<scenario>/EPDMS` per scenario.
    The scenes are read from disk a batch at a time at every evaluation, never kept (~4 MB each).
    Errors: the folder's manifest is checked now (FileNotFoundError / ValueError naming it)."""
    paths = select_scene_paths(val_dir, max_scenes or None)
    if not paths:
        raise ValueError(f"{Path(val_dir) / 'manifest.json'}: no held-out scenes")

    def eval_fn(planner, step: int) -> dict:
        agg = evaluate_planner_files(planner, paths, batch_size)
        out = {m: agg[m] for m in METRICS}
        out.update({f"{s}/EPDMS": r["EPDMS"] for s, r in agg["per_scenario"].items()})
        return out

    return eval_fn


def evaluate(run: str | None, data: str | None = None, limit: int = 0, closed_loop: int = 0,
             scenarios: tuple[str, ...] = SCENARIOS, ensemble: list[str] | None = None, weights: list[float] | None = None,
             baselines: bool = True, plots: str | None = None, progress: bool = True) -> dict:
    """{"open_loop": EPDMS and sub-scores on the scenes of `data` (first `limit`, 0 = all) beside the expert,
    the rule-based baselines (unless not `baselines`) and the vocabulary oracle, "closed_loop": `closed_loop`
    highway-env episodes per scenario} of a run or ensemble folder `run`, the runs of `ensemble` (averaged
    with `weights`), or with neither the baselines alone. `plots`: a folder for scene and routing pictures.

    Raises:
        ValueError: nothing to evaluate (no data and no closed loop; no planner and no baselines), or a
            bad run / ensemble (as `load_any`)."""
    if not data and not closed_loop:
        raise ValueError("give --data DIR (open loop) and/or --closed-loop EPISODES")
    if weights and not ensemble:
        raise ValueError("--weights goes with --ensemble")
    planner = Ensemble([from_run(r)[0] for r in ensemble], weights) if ensemble else (load_any(run) if run else None)
    if planner is None and (plots or not baselines):
        raise ValueError("--plots and --no-baselines need a planner (--run or --ensemble)")
    result: dict = {}
    if data:
        result["open_loop"] = _open_loop(planner, data, limit, baselines, plots)
    if closed_loop:
        from .closed_loop import evaluate_closed_loop  # lazy: drives the simulator

        result["closed_loop"] = evaluate_closed_loop(planner, list(scenarios), closed_loop, progress=progress)
    return result


def _open_loop(planner, data: str, limit: int, baselines: bool, plots: str | None) -> dict:
    scenes = load_scenes(data, limit or None)
    res = evaluate_open_loop(planner, scenes, keep_plans=bool(plots), with_baselines=baselines)
    plans = res.pop("_plans", None)
    if planner is not None and hasattr(planner, "vocab"):
        res["vocab_oracle"] = evaluate_vocab_oracle(planner.vocab.numpy(), scenes)
    if plots:
        from ..viz.routing import plot_routing  # lazy: matplotlib
        from .plots import plot_scenes

        picks = [idx[len(idx) // 2] for s in SCENARIOS if (idx := [i for i, sc in enumerate(scenes) if sc["scenario"] == s])]
        plot_scenes(Path(plots) / "scenes.png", [scenes[i] for i in picks], [plans[i] for i in picks], planner.vocab.numpy())
        if "routing" in res:
            plot_routing({k: v["domain_fraction"] for k, v in res["routing"].items()}, Path(plots) / "routing.png",
                         title="routing share per scenario (vocabulary tokens)", row_label="scenario")
    return res


@lru_cache(maxsize=1)
def _example_scenes() -> tuple:
    from .scenes import SceneGenConfig, simulate_episode  # lazy: highway-env

    return tuple(simulate_episode("merge", 3, SceneGenConfig(episode_steps=70, stride=10)))  # 2-3 real scenes


def example_batch(cfg: DriveModelConfig, seed: int = 0) -> dict:
    """A small training batch for `cfg`: a few real highway-env scenes with random vocabulary targets."""
    rng = np.random.default_rng(seed)
    scenes = _example_scenes()
    ds = DriveDataset(scenes, rng.random((len(scenes), cfg.vocab_size, len(TARGET_METRICS))).astype(np.float32))
    return collate([ds.get(i, rng) for i in range(len(ds))])


FAMILY = register(Family("planner", DriveModelConfig, PRESETS, resolve, DrivePlanner, fit, from_run, evaluate, example_batch,
                         verbs={"finetune": finetune, "ensemble": write_ensemble}))
