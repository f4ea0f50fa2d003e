"""Track-model run directories: build the model from config.json, load its safetensors weights."""

from __future__ import annotations

from pathlib import Path
import hashlib

import torch

from ..config import check_run_kind, from_dict
from .config import TrackConfig, upgrade_model_dict
from .model import TrackModel
from ..train.checkpoint import EMA_WEIGHTS, WEIGHTS, load_run_config, load_weights


def track_config_from_run(run_cfg: dict, where: str) -> TrackConfig:
    """The TrackConfig a run recorded; runs written before the MoE settings were nested are read
    through `upgrade_model_dict` (loader shim). ValueError when it is not a track run."""
    check_run_kind(run_cfg, "track", where)
    return from_dict(TrackConfig, upgrade_model_dict(run_cfg["model"]), f"{where} model")


def track_weights_path(run_dir: str | Path, ema: bool = True) -> Path:
    """The weights file `load_track_model` reads: EMA weights when present and asked for."""
    run_dir = Path(run_dir)
    return run_dir / EMA_WEIGHTS if ema and (run_dir / EMA_WEIGHTS).is_file() else run_dir / WEIGHTS


def weights_digest(path: str | Path) -> str:
    """sha256 of a weights file: lets a policy pin the exact track model it was trained with."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_track_model(run_dir: str | Path, device: str | torch.device = "cpu", ema: bool = True) -> TrackModel:
    """TrackModel in eval mode from RUN/config.json + RUN/model[_ema].safetensors (EMA if present)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"track run directory not found: {run_dir}")
    cfg = track_config_from_run(load_run_config(run_dir), str(run_dir))
    model = TrackModel(cfg)
    load_weights(model, track_weights_path(run_dir, ema))
    return model.to(device).eval()
