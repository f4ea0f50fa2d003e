"""Train and evaluate track models: config resolution, the Trainer call, evaluation over domains."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

from ..config import RUN_KINDS, check_legacy_keys, load_yaml, parse_overrides, pick_preset, resolve_sections, to_dict
from ..moe import busiest_share_by_domain, expert_shares
from .config import LEGACY_MOE_KEYS, PRESETS, DataOptions, TrackConfig
from ..data.atm_hdf5 import open_episode
from ..data.datasets import list_episodes
from ..nn import count_params
from ..train import Trainer
from ..train.checkpoint import load_run_config
from .dataset import TrackDataset
from .io import load_track_model
from .metrics import TrackMetrics
from .model import TrackModel


def resolve(preset: str, config_file: str | None = None, sets: list[str] | None = None) -> dict:
    """preset -> YAML file -> `--set` overrides: {"model": TrackConfig, "train": TrainConfig,
    "data": DataOptions, "preset": name, "explicit": model keys the file or `--set` named}."""
    file_data = load_yaml(config_file) if config_file else None
    overrides = parse_overrides(sets)
    check_legacy_keys("model", LEGACY_MOE_KEYS, file_data, overrides)
    p = pick_preset(PRESETS, preset, "track")
    secs = resolve_sections({"model": p.model, "train": p.train, "data": p.data}, file_data, overrides, "track config")
    return {**secs, "preset": preset, "explicit": explicit_model_keys(file_data, overrides)}


def explicit_model_keys(file_data: dict | None, overrides: dict) -> set[str]:
    """Model keys a config file's `model:` section or a `--set` (bare or `model.`) names."""
    keys = set((file_data or {}).get("model", {}) or {})
    return keys | {k.split(".", 1)[1] if k.startswith("model.") else k for k in overrides}


def build_dataset(dirs, model_cfg: TrackConfig, data: DataOptions, augment: bool | None = None,
                  domain_names: list[str] | None = None):
    """The TrackDataset of `dirs` with the model's T, N and image size and the data options.

    Args:
        augment: None = `data.augment`. domain_names: the run's domain list (None = the domains found).

    Raises:
        ValueError: as TrackDataset (empty folder, unknown domain, bad file).
    """
    return TrackDataset(
        [str(d) for d in dirs], model_cfg.track_len, model_cfg.num_points, model_cfg.img_size,
        views=list(data.views) or None, augment=data.augment if augment is None else augment,
        frame_stride=data.frame_stride, domain_names=domain_names,
        max_episodes_per_dir=data.max_episodes_per_dir or None,
    )


def train_track(preset: str, data_dirs: list[str], out: str, config_file: str | None = None,
                sets: list[str] | None = None, resume: bool = False, allow_change: bool = False) -> dict:
    """Train a track model on episode folders into the run folder `out` (see `trajmoe train track`).

    The language input size is taken from the data's task embeddings (384 for our files, 768 for
    ATM's LIBERO files with BERT embeddings) unless `model.lang_dim` is set explicitly; an explicit
    value that disagrees with the data is a one-line error naming both.
    """
    return train_resolved(resolve(preset, config_file, sets), data_dirs, out, resume, allow_change)


def train_resolved(cfg: dict, data_dirs: list[str], out: str, resume: bool = False, allow_change: bool = False) -> dict:
    """`train_track` from a resolved config (`resolve`): the final training metrics."""
    model_cfg, train_cfg, data, preset = cfg["model"], cfg["train"], cfg["data"], cfg.get("preset")
    ds = build_dataset(data_dirs, model_cfg, data)
    if len(ds.domain_names) > model_cfg.moe.num_domains:  # routing statistics: one row per domain of the data
        model_cfg = model_cfg.replace(moe=dataclasses.replace(model_cfg.moe, num_domains=len(ds.domain_names)))
    lang_dim = task_emb_dim(ds.paths)
    if lang_dim != model_cfg.lang_dim:
        if "lang_dim" in cfg.get("explicit", ()):
            raise ValueError(f"model.lang_dim={model_cfg.lang_dim} but the task embeddings in the data have size {lang_dim}")
        model_cfg = dataclasses.replace(model_cfg, lang_dim=lang_dim)
    torch.manual_seed(train_cfg.seed)
    model = TrackModel(model_cfg)
    run_config = {
        "kind": RUN_KINDS["track"], "preset": preset, "model": to_dict(model_cfg), "data": to_dict(data),
        "data_dirs": [str(Path(d)) for d in data_dirs], "domains": ds.domain_names, "views": ds.view_names,
        "params": count_params(model).as_dict(),
    }
    trainer = Trainer(model, ds, train_cfg, out, run_config,
                      sample_weights=ds.sample_weights(dict(data.domain_weights)), resume=resume, allow_change=allow_change)
    return trainer.fit()


def task_emb_dim(paths) -> int:
    """The one task-embedding size of these episode files; mixed sizes are a one-line error naming two files."""
    dims: dict[int, object] = {}
    for p in paths:
        with open_episode(p) as ep:
            dims.setdefault(int(ep.task_emb().shape[0]), p)
    if len(dims) > 1:
        (d1, p1), (d2, p2) = list(dims.items())[:2]
        raise ValueError(f"task embeddings of different sizes in one training set: {d1} in {p1}, {d2} in {p2}")
    return next(iter(dims))


@torch.no_grad()
def evaluate_track(run_dir: str, data_dirs: list[str], max_samples: int = 512, batch_size: int = 64,
                   device: str = "cpu", seed: int = 0) -> dict:
    """Track MSE / ADE / FDE per domain and overall, and expert load per MoE layer and domain."""
    run_cfg = load_run_config(run_dir)
    model = load_track_model(run_dir, device)
    data = DataOptions(**{k: (tuple(v) if k == "views" else v) for k, v in run_cfg.get("data", {}).items()})
    known = list(run_cfg.get("domains", []))
    ds = build_dataset(data_dirs, model.cfg, data, augment=False, domain_names=_merge_domains(known, data_dirs))
    n = len(ds)
    pick = np.unique(np.linspace(0, n - 1, num=min(n, max_samples)).round().astype(np.int64))
    metrics = TrackMetrics(model.cfg.img_size, ds.domain_names)
    model.reset_routing_stats()
    for start in range(0, len(pick), batch_size):
        items = [ds.get(int(i), np.random.default_rng([seed, int(i)])) for i in pick[start : start + batch_size]]
        batch = {k: torch.as_tensor(np.stack([it[k] for it in items])).to(device) for k in ("image", "tracks", "vis", "task_emb", "domain")}
        dom = batch["domain"] if model.cfg.moe.layers and len(ds.domain_names) <= model.cfg.moe.num_domains else None
        pred = model.predict(batch["image"], batch["tracks"][:, 0], batch["task_emb"], dom)
        metrics.update(pred, batch["tracks"], batch["vis"], batch["domain"],
                       [f"view:{it['source'].rsplit(':', 2)[1]}" for it in items])
    routing = expert_shares(model.moe_layers(), ds.domain_names)
    return {"run": str(run_dir), "data": [str(d) for d in data_dirs], "samples": int(len(pick)),
            "metrics": metrics.result(), "routing": routing, "routing_busiest_share": busiest_share_by_domain(routing)}


def _merge_domains(known: list[str], data_dirs: list[str]) -> list[str]:
    """The run's domain ids first (so routing rows line up), then any new domain in the eval data."""
    names = list(known)
    for d in data_dirs:
        for p in list_episodes(d):
            ep = open_episode(p)
            dom = ep.meta.domain
            getattr(ep, "close", lambda: None)()
            if dom not in names:
                names.append(dom)
    return names
