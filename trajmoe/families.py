"""The registry of model families: one interface that the track model, the policy and the planner
all implement (the pattern of LeRobot's policy registry; timm's `tests/test_models.py` runs one
battery over every registered preset).

    fam = family("planner")
    cfg = fam.resolve("tiny-moe", ["steps=5", "model.moe.top_k=1"])   # {"model", "train", "data", ...}
    model = fam.build(cfg["model"])                                   # nn.Module
    fam.train(cfg, data, out)                                         # run folder: config.json + safetensors
    model, run_cfg = fam.load_run(out, device="cpu", ema=True)
    fam.evaluate(out, data)                                           # the family's evaluation dict

Dependency direction: this module imports the families (track, policy, drive); they never import it.
Run kinds come from `trajmoe.config.RUN_KINDS`, presets from each family's `PRESETS`
(`trajmoe.config.Preset`: model config + training recipe + data options, next to the config class).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch.nn as nn

from .config import RUN_KINDS, Preset, parse_overrides
from .drive import run as drive_run
from .drive.config import PRESETS as PLANNER_PRESETS
from .drive.config import DriveModelConfig
from .drive.model import DrivePlanner
from .policy import io as policy_io
from .policy import train as policy_train
from .policy.config import PRESETS as POLICY_PRESETS
from .policy.config import PolicyConfig
from .policy.model import TrajectoryPolicy
from .track import io as track_io
from .track import run as track_run
from .track.config import PRESETS as TRACK_PRESETS
from .track.config import TrackConfig
from .track.model import TrackModel
from .drive.ensemble import load_any
from .drive.evaluate import evaluate_open_loop
from .drive.scenes import load_scenes
from .policy.rollout import evaluate_policy
from .train.checkpoint import load_run_config


@dataclass(frozen=True)
class Family:
    """One model family. resolve(preset, overrides, config_file) -> sections dict; build(model_cfg)
    -> nn.Module (untrained); train(sections, data, out, resume=False, allow_change=False, overwrite=False, **family
    options) -> final metrics; load_run(path, device="cpu", ema=True) -> (model in eval mode, run
    config dict); evaluate(run, data, **options) -> result dict with the family's baseline beside it."""

    name: str
    config_cls: type
    presets: dict[str, Preset]
    resolve: Callable[..., dict]
    build: Callable[[Any], nn.Module]
    train: Callable[..., dict]
    load_run: Callable[..., tuple[nn.Module, dict]]
    evaluate: Callable[..., dict]

    @property
    def kind(self) -> str:
        """The `kind` this family's run folders record in config.json."""
        return RUN_KINDS[self.name]


def _sets(overrides: list[str] | dict | None) -> list[str]:
    if isinstance(overrides, dict):
        return [f"{k}={v}" for k, v in overrides.items()]
    return list(overrides or [])


# ---- track model --------------------------------------------------------------------------------
def _track_resolve(preset: str, overrides=None, config_file: str | None = None) -> dict:
    return track_run.resolve(preset, config_file, _sets(overrides))


def _track_load(path, device: str = "cpu", ema: bool = True) -> tuple[TrackModel, dict]:
    return track_io.load_track_model(path, device, ema), load_run_config(path)


# ---- policy ---------------------------------------------------------------------------------------
def _policy_resolve(preset: str, overrides=None, config_file: str | None = None, conditioning: str | None = None) -> dict:
    return policy_train.resolve_policy_config(preset, conditioning, config_file, _sets(overrides))


def _policy_load(path, device: str = "cpu", ema: bool = True, track_run: str | None = None):
    return policy_io.load_policy(path, device, track_run, ema)


def _policy_evaluate(run, tasks: list[str] | None = None, **kw) -> dict:
    return evaluate_policy(run, tasks, **kw)


# ---- driving planner ------------------------------------------------------------------------------
def _planner_resolve(preset: str | None, overrides=None, config_file: str | None = None) -> dict:
    return drive_run.resolve_config(preset, config_file, parse_overrides(_sets(overrides)))


def _planner_train(cfg: dict, data: str, out: str, resume: bool = False, allow_change: bool = False,
                   overwrite: bool = False, **kw) -> dict:
    return drive_run.train(data, out, cfg, resume=resume, allow_change=allow_change, overwrite=overwrite, **kw)


def _planner_load(path, device: str = "cpu", ema: bool = True) -> tuple[DrivePlanner, dict]:
    return drive_run.load_planner(path, device, ema), load_run_config(path)


def _planner_evaluate(run, data: str, limit: int = 0, **kw) -> dict:
    """Open-loop EPDMS of a run or an ensemble folder on the scenes of `data`, rule-based baselines beside it."""
    return evaluate_open_loop(load_any(run), load_scenes(data, limit or None), **kw)


FAMILIES: dict[str, Family] = {
    "track": Family("track", TrackConfig, TRACK_PRESETS, _track_resolve, TrackModel, track_run.train_resolved,
                    _track_load, track_run.evaluate_track),
    "policy": Family("policy", PolicyConfig, POLICY_PRESETS, _policy_resolve, TrajectoryPolicy,
                     policy_train.train_resolved, _policy_load, _policy_evaluate),
    "planner": Family("planner", DriveModelConfig, PLANNER_PRESETS, _planner_resolve, DrivePlanner, _planner_train,
                      _planner_load, _planner_evaluate),
}


def family(name: str) -> Family:
    """FAMILIES[name]; an unknown name is a one-line ValueError listing the valid ones."""
    if name not in FAMILIES:
        raise ValueError(f"unknown model family {name!r}; valid: {', '.join(FAMILIES)}")
    return FAMILIES[name]
