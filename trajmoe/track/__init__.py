"""Tra-MoE track model (Tra-MoE paper) and its dense baselines."""

from .config import PRESETS, TrackConfig
from ..nn import count_params
from .model import TrackModel
from .io import load_track_model as _load

__all__ = ["PRESETS", "TrackConfig", "TrackModel", "count_params", "load_track_model"]


def load_track_model(run_dir, device="cpu", ema: bool = True) -> TrackModel:
    """Load a trained track model from a run directory (config.json + safetensors), in eval mode."""
    return _load(run_dir, device=device, ema=ema)
