"""Latency of one closed-loop `select_action` call, track prediction included.

Per call: the frozen track model predicts V x N tracks for the new frame, the trajectory mask is
rasterised (mask modes), the new frame goes through the image encoders + spatial transformer, and
the temporal transformer + head run over the frame-feature queue. Latency does not depend on the
weights or pixel values, so the benchmark can run on an untrained policy / track model (a track
preset) or on trained runs (`run_dir` / `track_run`).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from ..bench.timing import resolve_device, time_ms
from ..nn import count_params
from ..track import TrackConfig, TrackModel
from ..track.io import from_run as track_from_run
from .config import PolicyConfig
from .io import from_run
from .model import TrajectoryPolicy


def bench_policy(conditioning: str | None, device: str = "cpu", preset: str = "default", track_preset: str = "tramoe",
                 track_run: str | None = None, run_dir: str | None = None, repeats: int = 30,
                 threads: int | None = None, seed: int = 0) -> dict:
    """Median latency (ms) of one `select_action` call, and of the track prediction inside it.

    Args:
        conditioning: PolicyConfig conditioning (None = the run's, or "adaptive_mask" for a preset).
        device: "cpu", "cuda", "cuda:N" or "auto". preset: PolicyConfig preset (ignored with `run_dir`).
        track_preset: untrained TrackConfig preset used when no `track_run` is given.
        track_run / run_dir: trained track-model / policy run folders (optional).
        repeats: timed calls (>= 1). threads: torch CPU threads (None = leave). seed: init seed.

    Returns:
        {"select_action_ms", "select_action_min_ms", "track_predict_ms", "policy_only_ms",
        "policy_params", "track_params" (with a track model), device, settings}.

    Raises:
        ValueError: repeats < 1, `conditioning` differs from the run's, an unknown preset.
    """
    dev = resolve_device(device)
    if threads:
        torch.set_num_threads(threads)
    if repeats < 1:
        raise ValueError(f"--repeats must be >= 1, got {repeats}")
    torch.manual_seed(seed)
    policy, cfg, track_name = _build_policy(conditioning, dev, preset, track_preset, track_run, run_dir)
    policy = policy.to(dev).eval()
    H = cfg.img_size
    obs = {
        "rgb": {v: np.full((H, H, 3), 128, np.uint8) for v in cfg.views},
        "ee_pos": np.zeros(3, np.float32),
        "gripper": np.zeros(cfg.proprio_dim - 3, np.float32),
        "task_emb": np.zeros(cfg.lang_dim, np.float32),
    }
    if cfg.conditioning == "oracle":  # the simulator lookahead is timed by `trajmoe eval policy` (oracle_ms)
        obs["oracle_tracks"] = np.full((len(cfg.views), cfg.track_len, cfg.num_points, 2), 0.5, np.float32)
    policy.reset()
    step = time_ms(lambda: policy.select_action(obs), dev, warmup=cfg.frame_stack + 2, repeats=repeats)
    result = {
        "device": str(dev) if dev.type == "cpu" else torch.cuda.get_device_name(dev),
        "torch": torch.__version__, "threads": torch.get_num_threads(),
        "conditioning": cfg.conditioning, "preset": preset if run_dir is None else f"run:{run_dir}",
        "track_model": track_name, "views": len(cfg.views), "num_points": cfg.num_points,
        "frame_stack": cfg.frame_stack, "img_size": H, "policy_params": count_params(policy).total,
        "select_action_ms": step["median_ms"], "select_action_min_ms": step["min_ms"],
    }
    if cfg.uses_track_model:
        img = torch.full((len(cfg.views), 3, H, H), 0.5, device=dev)
        emb = torch.zeros(len(cfg.views), cfg.lang_dim, device=dev)
        tr = time_ms(lambda: policy.predict_tracks(img, emb), dev, repeats=repeats)
        result["track_predict_ms"] = tr["median_ms"]
        result["track_params"] = sum(p.numel() for p in policy.track_model.parameters())
    else:
        result["track_predict_ms"] = 0.0
    result["policy_only_ms"] = result["select_action_ms"] - result["track_predict_ms"]
    return result


def _build_policy(conditioning: str | None, dev: torch.device, preset: str, track_preset: str,
                  track_run: str | None, run_dir: str | None) -> tuple:
    """(policy, its PolicyConfig, track model name): a trained run's policy, or a fresh one from presets."""
    if run_dir is not None:
        policy, run_cfg = from_run(run_dir, device=dev, track_run=track_run)
        if conditioning and conditioning != policy.cfg.conditioning:
            raise ValueError(f"--conditioning {conditioning!r} differs from the run's {policy.cfg.conditioning!r}")
        cfg = policy.cfg
        return policy, cfg, run_cfg["track_run"] if cfg.uses_track_model else None
    cfg = dataclasses.replace(PolicyConfig.preset(preset), conditioning=conditioning or "adaptive_mask")
    tm = None
    track_name = None
    if cfg.uses_track_model:
        if track_run:
            tm, track_name = track_from_run(track_run, device=dev)[0], str(track_run)
        else:
            tm, track_name = TrackModel(TrackConfig.preset(track_preset)).eval(), f"preset:{track_preset}"
        cfg = dataclasses.replace(cfg, track_len=tm.cfg.track_len, lang_dim=tm.cfg.lang_dim)
    return TrajectoryPolicy(cfg, tm), cfg, track_name
