"""Policy run directories: config.json (policy config, the track run it used) + safetensors weights.

    RUN/config.json  {"kind": "policy", "model": PolicyConfig, "track_run": "/abs/path" | null,
                      "track_model": TrackConfig | null, "track_weights_sha256": ..., "data": {...}, "train": TrainConfig}
    RUN/model.safetensors (and model_ema.safetensors when EMA was on), written by the Trainer.

The frozen track model's weights are not copied into the policy run: it is loaded from the
recorded track run (or an override), and its config must equal the one recorded at training time.
The record is made once, when the training config is resolved (`pin_track`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from ..config import from_dict, to_dict
from ..track.io import from_run as track_from_run
from ..track.io import read_config as read_track_config
from ..train.checkpoint import file_sha256, load_run_model, weights_file
from .config import PolicyConfig
from .model import TrajectoryPolicy

# The record of a policy whose conditioning uses no track model.
NO_TRACK = {"track_run": None, "track_model": None, "track_weights_sha256": None}


def pin_track(cfg: PolicyConfig, track_run: str | Path | None, explicit: set) -> tuple[PolicyConfig, dict]:
    """The policy's dependency on a track run, resolved once: (`cfg` with the track model's track_len,
    the record config.json keeps: "track_run" (the run folder, resolved), "track_model" (its TrackConfig
    dict, which `load_track_for_policy` holds the loaded model to) and "track_weights_sha256" (its
    weights' digest, which `from_run` checks)). A conditioning without a track model: (`cfg`, NO_TRACK).
    Only the run's config.json and a digest of its weights are read.

    Raises:
        ValueError: the conditioning needs a track run and none is given; an explicit track_len (in
            `explicit`) differs from the track model's. FileNotFoundError / ValueError: a missing or bad
            run folder or weights file, named.
    """
    if not cfg.uses_track_model:
        return cfg, dict(NO_TRACK)
    if not track_run:
        raise ValueError(f"conditioning={cfg.conditioning!r} needs --track-run RUN (a trained track model)")
    tc = read_track_config(track_run)
    if "track_len" in explicit and cfg.track_len != tc.track_len:
        raise ValueError(f"policy track_len={cfg.track_len} does not match the track model in {track_run} (track_len={tc.track_len})")
    record = {"track_run": str(Path(track_run).resolve()), "track_model": to_dict(tc),
              "track_weights_sha256": file_sha256(weights_file(track_run))}
    return dataclasses.replace(cfg, track_len=tc.track_len), record


def load_track_for_policy(track_run: str | Path, device: str | torch.device = "cpu", expected: dict | None = None):
    """The frozen track model of a policy; `expected` = the TrackConfig dict recorded for it (`pin_track`).

    Raises:
        ValueError: the run's track model config differs from `expected` (naming the keys).
    """
    tm, _ = track_from_run(track_run, device)
    if expected is not None and to_dict(tm.cfg) != expected:
        diff = [k for k in expected if to_dict(tm.cfg).get(k) != expected[k]]
        raise ValueError(f"track run {track_run} has a different track model config than the policy was trained with (keys: {', '.join(diff)})")
    return tm


def from_run(run_dir: str | Path, device: str | torch.device = "cpu", ema: bool = True,
             track_run: str | Path | None = None) -> tuple[TrajectoryPolicy, dict]:
    """(TrajectoryPolicy in eval mode, run config dict) from a policy run directory (EMA weights if
    present and `ema`). `track_run` overrides the track run recorded in the policy run (e.g. after
    moving directories); the returned run config's "track_run" is the one actually loaded (None
    without a track model) and its "env" the camera settings rollouts use."""
    loaded: dict = {"track_run": None}

    def build(run_cfg: dict, where: Path) -> TrajectoryPolicy:
        cfg = from_dict(PolicyConfig, run_cfg["model"], f"{where} model")
        if not cfg.uses_track_model:
            return TrajectoryPolicy(cfg)
        path = track_run or run_cfg.get("track_run")
        if not path:
            raise ValueError(f"{where}/config.json records no track_run; pass one")
        tm = load_track_for_policy(path, device, run_cfg.get("track_model"))
        pinned = run_cfg.get("track_weights_sha256")
        if pinned and track_run is None and file_sha256(weights_file(path)) != pinned:
            raise ValueError(f"the track model in {path} changed since {where} was trained (weights differ); "
                             "pass --track-run to use it anyway, or retrain the policy")
        loaded["track_run"] = str(path)
        return TrajectoryPolicy(cfg, tm)

    policy, run_cfg = load_run_model(run_dir, "policy", build, device, ema)
    return policy, {**run_cfg, **loaded}
