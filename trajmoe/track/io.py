"""Track-model run directories: build the model from config.json, load its safetensors weights."""

from __future__ import annotations

from pathlib import Path

import torch

from ..config import from_dict
from ..train.checkpoint import load_run_model
from .config import TrackConfig
from .model import TrackModel


def from_run(run_dir: str | Path, device: str | torch.device = "cpu", ema: bool = True) -> tuple[TrackModel, dict]:
    """(TrackModel in eval mode, run config) from RUN/config.json + RUN/model[_ema].safetensors (EMA if
    present and `ema`); FileNotFoundError / ValueError name the folder."""
    return load_run_model(run_dir, "track", lambda rc, where: TrackModel(from_dict(TrackConfig, rc["model"], f"{where} model")),
                          device, ema)


def load_track_model(run_dir: str | Path, device: str | torch.device = "cpu", ema: bool = True) -> TrackModel:
    """Alias of `from_run(...)[0]` kept for scripts; the library loads runs through `trajmoe.families`."""
    return from_run(run_dir, device, ema)[0]
