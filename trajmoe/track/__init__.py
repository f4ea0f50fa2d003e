"""Tra-MoE track model (Tra-MoE paper) and its dense baselines; runs load through `trajmoe.families`."""

from .config import PRESETS, TrackConfig
from ..nn import count_params
from .model import TrackModel

__all__ = ["PRESETS", "TrackConfig", "TrackModel", "count_params"]
