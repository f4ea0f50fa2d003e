"""Policy run directories: config.json (policy config, the track run it used) + safetensors weights.

    RUN/config.json  {"kind": "policy", "model": PolicyConfig, "track_run": "/abs/path" | null,
                      "track_model": TrackConfig | null, "data": {...}, "train": TrainConfig}
    RUN/model.safetensors (and model_ema.safetensors when EMA was on), written by the Trainer.

The frozen track model's weights are not copied into the policy run: it is loaded from the
recorded track run (or an override), and its config must equal the one recorded at training time.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..config import check_run_kind, from_dict, to_dict
from .config import PolicyConfig
from ..track import TrackConfig, load_track_model
from ..track.config import upgrade_model_dict
from ..track.io import track_weights_path, weights_digest
from ..train.checkpoint import EMA_WEIGHTS, WEIGHTS, load_run_config, load_weights
from .model import TrajectoryPolicy


def policy_config_from_run(run_cfg: dict, where: str) -> PolicyConfig:
    """The PolicyConfig a run recorded; ValueError when it is not a policy run."""
    check_run_kind(run_cfg, "policy", where)
    return from_dict(PolicyConfig, run_cfg["model"], f"{where} model")


def load_track_for_policy(track_run: str | Path, device: str | torch.device = "cpu", expected: dict | None = None):
    """The frozen track model of a policy; `expected` = the TrackConfig dict recorded in the policy run."""
    track_run = Path(track_run)
    if not track_run.is_dir():
        raise FileNotFoundError(f"track run directory not found: {track_run}")
    tm = load_track_model(track_run, device=device)
    if expected is not None:
        expected = to_dict(from_dict(TrackConfig, upgrade_model_dict(expected), "track_model"))  # old flat MoE keys
    if expected is not None and to_dict(tm.cfg) != expected:
        diff = [k for k in expected if to_dict(tm.cfg).get(k) != expected[k]]
        raise ValueError(f"track run {track_run} has a different track model config than the policy was trained with (keys: {', '.join(diff)})")
    return tm


def load_policy(run_dir: str | Path, device: str | torch.device = "cpu", track_run: str | Path | None = None,
                ema: bool = True) -> tuple:
    """(TrajectoryPolicy in eval mode, run config dict) from a policy run directory (EMA weights if
    present and `ema`). `track_run` overrides the track run recorded in the policy run (e.g. after
    moving directories); the returned run config's "track_run" is the one actually loaded (None
    without a track model) and its "env" the camera settings rollouts use."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"policy run directory not found: {run_dir}")
    run_cfg = load_run_config(run_dir)
    cfg = policy_config_from_run(run_cfg, str(run_dir))
    tm = None
    if cfg.uses_track_model:
        path = track_run or run_cfg.get("track_run")
        if not path:
            raise ValueError(f"{run_dir}/config.json records no track_run; pass one")
        tm = load_track_for_policy(path, device, run_cfg.get("track_model"))
        pinned = run_cfg.get("track_weights_sha256")
        if pinned and track_run is None:
            if weights_digest(track_weights_path(path)) != pinned:
                raise ValueError(
                    f"the track model in {path} changed since {run_dir} was trained (weights differ); "
                    "pass --track-run to use it anyway, or retrain the policy"
                )
    policy = TrajectoryPolicy(cfg, tm)
    weights = run_dir / EMA_WEIGHTS if ema and (run_dir / EMA_WEIGHTS).is_file() else run_dir / WEIGHTS
    load_weights(policy, weights)
    return policy.to(device).eval(), {**run_cfg, "track_run": None if tm is None else str(path)}
