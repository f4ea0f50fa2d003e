"""Train and evaluate track models: config resolution, the Trainer call, evaluation over domains."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..config import load_yaml, parse_overrides, resolve_sections, to_dict
from ..moe import expert_shares
from ..train import TrainConfig
from .config import TrackConfig


@dataclass(frozen=True)
class DataOptions:
    views: tuple[str, ...] = ()  # () = every view in the data
    frame_stride: int = 1
    augment: bool = True
    domain_weights: dict = field(default_factory=dict)  # {domain name: weight}; {} = proportional to data
    max_episodes_per_dir: int = 0  # 0 = all

    def __post_init__(self) -> None:
        if self.frame_stride < 1:
            raise ValueError(f"data.frame_stride must be >= 1, got {self.frame_stride}")
        if self.max_episodes_per_dir < 0:
            raise ValueError(f"data.max_episodes_per_dir must be >= 0, got {self.max_episodes_per_dir}")
        if not isinstance(self.domain_weights, dict):
            raise ValueError(f"data.domain_weights must be a mapping name -> weight, got {self.domain_weights!r}")


# CPU-friendly default training recipe; paper's (Tab. 6): lr 1e-4, wd 1e-4, clip 10, batch 2048.
DEFAULT_TRAIN = TrainConfig(steps=2000, batch_size=64, lr=5e-4, weight_decay=1e-4, warmup_steps=100,
                            grad_clip=10.0, log_every=20, ckpt_every=500)


def resolve(preset: str, config_file: str | None, sets: list[str] | None):
    file_data = load_yaml(config_file) if config_file else None
    secs = resolve_sections(
        {"model": TrackConfig.preset(preset), "train": DEFAULT_TRAIN, "data": DataOptions()},
        file_data, parse_overrides(sets), "track config",
    )
    return secs["model"], secs["train"], secs["data"]


def build_dataset(dirs, model_cfg: TrackConfig, data: DataOptions, augment: bool | None = None,
                  domain_names: list[str] | None = None):
    from .dataset import TrackDataset

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
    from ..train import Trainer
    from .model import TrackModel, count_params

    model_cfg, train_cfg, data = resolve(preset, config_file, sets)
    ds = build_dataset(data_dirs, model_cfg, data)
    if len(ds.domain_names) > model_cfg.num_domains:
        model_cfg = dataclasses.replace(model_cfg, num_domains=len(ds.domain_names))
    lang_dim = task_emb_dim(ds.paths)
    if lang_dim != model_cfg.lang_dim:
        if _explicitly_set("lang_dim", config_file, sets):
            raise ValueError(f"model.lang_dim={model_cfg.lang_dim} but the task embeddings in the data have size {lang_dim}")
        model_cfg = dataclasses.replace(model_cfg, lang_dim=lang_dim)
    torch.manual_seed(train_cfg.seed)
    model = TrackModel(model_cfg)
    run_config = {
        "kind": "track", "preset": preset, "model": to_dict(model_cfg), "data": to_dict(data),
        "data_dirs": [str(Path(d)) for d in data_dirs], "domains": ds.domain_names, "views": ds.view_names,
        "params": count_params(model),
    }
    trainer = Trainer(model, ds, train_cfg, out, run_config,
                      sample_weights=ds.sample_weights(dict(data.domain_weights)), resume=resume, allow_change=allow_change)
    return trainer.fit()


def task_emb_dim(paths) -> int:
    """The one task-embedding size of these episode files; mixed sizes are a one-line error naming two files."""
    from ..data.atm_hdf5 import open_episode

    dims: dict[int, object] = {}
    for p in paths:
        with open_episode(p) as ep:
            dims.setdefault(int(ep.task_emb().shape[0]), p)
    if len(dims) > 1:
        (d1, p1), (d2, p2) = list(dims.items())[:2]
        raise ValueError(f"task embeddings of different sizes in one training set: {d1} in {p1}, {d2} in {p2}")
    return next(iter(dims))


def _explicitly_set(key: str, config_file: str | None, sets: list[str] | None) -> bool:
    file_data = load_yaml(config_file) if config_file else None
    in_file = isinstance(file_data, dict) and isinstance(file_data.get("model"), dict) and key in file_data["model"]
    return in_file or any(k in (key, f"model.{key}") for k in parse_overrides(sets))


@torch.no_grad()
def evaluate_track(run_dir: str, data_dirs: list[str], max_samples: int = 512, batch_size: int = 64,
                   device: str = "cpu", seed: int = 0) -> dict:
    """Track MSE / ADE / FDE per domain and overall, and expert load per MoE layer and domain."""
    from ..train.checkpoint import load_run_config
    from .io import load_track_model
    from .metrics import TrackMetrics

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
        dom = batch["domain"] if model.cfg.moe_layers and len(ds.domain_names) <= model.cfg.num_domains else None
        pred = model.predict(batch["image"], batch["tracks"][:, 0], batch["task_emb"], dom)
        metrics.update(pred, batch["tracks"], batch["vis"], batch["domain"],
                       [f"view:{it['source'].rsplit(':', 2)[1]}" for it in items])
    routing = expert_shares(model.moe_layers(), ds.domain_names)
    return {"run": str(run_dir), "data": [str(d) for d in data_dirs], "samples": int(len(pick)),
            "metrics": metrics.result(), "routing": routing}


def _merge_domains(known: list[str], data_dirs: list[str]) -> list[str]:
    """The run's domain ids first (so routing rows line up), then any new domain in the eval data."""
    from ..data.atm_hdf5 import list_episodes, open_episode

    names = list(known)
    for d in data_dirs:
        for p in list_episodes(d):
            ep = open_episode(p)
            dom = ep.meta.domain
            getattr(ep, "close", lambda: None)()
            if dom not in names:
                names.append(dom)
    return names
