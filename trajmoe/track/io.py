"""Track-model run directories: build the model from config.json, load its safetensors weights."""

from __future__ import annotations

from pathlib import Path

import torch

from ..config import from_dict
from ..train.checkpoint import load_run_model, read_run_config
from .config import TrackConfig
from .model import TrackModel


def from_run(run_dir: str | Path, device: str | torch.device = "cpu", ema: bool = True) -> tuple[TrackModel, dict]:
    """(TrackModel in eval mode, run config) from RUN/config.json + RUN/model[_ema].safetensors (EMA if
    present and `ema`); FileNotFoundError / ValueError name the folder."""
    return load_run_model(run_dir, "track", lambda rc, where: TrackModel(_model_config(rc, where)), device, ema)


def read_config(run_dir: str | Path) -> TrackConfig:
    """The TrackConfig a track run was trained with, from its config.json alone (no weights read);
    FileNotFoundError / ValueError name the folder, as `from_run`."""
    return _model_config(read_run_config(run_dir, "track"), Path(run_dir))


def _model_config(run_cfg: dict, where: Path) -> TrackConfig:
    return from_dict(TrackConfig, run_cfg["model"], f"{where} model")


def load_track_model(run_dir: str | Path, device: str | torch.device = "cpu", ema: bool = True) -> TrackModel:
    """Alias of `from_run(...)[0]` kept for scripts; the library loads runs through `trajmoe.families`."""
    return from_run(run_dir, device, ema)[0]
