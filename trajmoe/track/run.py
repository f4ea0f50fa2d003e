"""Train and evaluate track models: config resolution, the Trainer call, evaluation over domains."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

from ..config import RUN_KINDS, from_dict, load_yaml, parse_overrides, pick_preset, resolve_sections, to_dict
from ..moe import busiest_share_by_domain, expert_shares
from .config import PRESETS, TrackConfig, TrackDataConfig
from ..data.atm_hdf5 import open_episode
from ..data.datasets import list_episodes
from ..nn import count_params
from ..train import Trainer
from ..train.validation import Selection
from ..train.rundir import RunFolder
from .dataset import TrackDataset
from .io import from_run
from .metrics import TrackMetrics
from .model import TrackModel


def resolve(preset: str, overrides: list[str] | dict | None = None, config_file: str | None = None) -> dict:
    """preset -> YAML file -> `--set` overrides: {"model": TrackConfig, "train": TrainConfig,
    "data": TrackDataConfig, "preset": name, "explicit": model keys the file or `--set` named}."""
    file_data = load_yaml(config_file) if config_file else None
    overrides = parse_overrides(overrides)
    p = pick_preset(PRESETS, preset, "track")
    secs = resolve_sections({"model": p.model, "train": p.train, "data": p.data}, file_data, overrides, "track config")
    return {**secs, "preset": preset, "explicit": explicit_model_keys(file_data, overrides)}


def explicit_model_keys(file_data: dict | None, overrides: dict) -> set[str]:
    """Model keys a config file's `model:` section or a `--set` (bare or `model.`) names."""
    keys = set((file_data or {}).get("model", {}) or {})
    return keys | {k.split(".", 1)[1] if k.startswith("model.") else k for k in overrides}


def build_dataset(dirs, model_cfg: TrackConfig, data: TrackDataConfig, heldout: bool = False,
                  domain_names: list[str] | None = None):
    """The TrackDataset of `dirs` with the model's T, N and image size and the data options.

    Args:
        heldout: samples for evaluation: no augmentation, query points uniform among the visible ones
            and no per-view loss weights, whatever the training options say. domain_names: the run's
            domain list (None = the domains found).

    Raises:
        ValueError: as TrackDataset (empty folder, unknown domain, bad file).
    """
    return TrackDataset(
        [str(d) for d in dirs], model_cfg.track_len, model_cfg.num_points, model_cfg.img_size,
        views=list(data.views) or None, augment=data.augment and not heldout,
        frame_stride=data.frame_stride, domain_names=domain_names,
        max_episodes_per_dir=data.max_episodes_per_dir or None,
        query_sampling="visible" if heldout else data.query_sampling,
        view_loss="equal" if heldout else data.view_loss,
        grid_queries=0 if heldout else data.grid_queries,
    )


def fit(cfg: dict, data_dirs: list[str], out: str, resume: bool = False, allow_change: bool = False,
        overwrite: bool = False, progress: bool = True) -> dict:
    """Train a track model on episode folders into the run folder `out` (`trajmoe train track`) from a
    resolved config (`resolve`): the final training metrics (resume / allow_change / overwrite: as
    `trajmoe.train.rundir.check_run_dir`).

    The language input size is taken from the data's task embeddings (384 for our files, 768 for
    ATM's LIBERO files with BERT embeddings) unless `model.lang_dim` is set explicitly; an explicit
    value that disagrees with the data is a one-line error naming both.
    """
    model_cfg, train_cfg, data, preset = cfg["model"], cfg["train"], cfg["data"], cfg.get("preset")
    if not progress:
        train_cfg = dataclasses.replace(train_cfg, progress=False)
    # config.json records real folders, so that a resume from another working directory compares the data it uses
    data = dataclasses.replace(data, val_dirs=tuple(str(Path(d).resolve()) for d in data.val_dirs))
    ds = build_dataset(data_dirs, model_cfg, data)
    model_cfg = model_cfg.replace(moe=model_cfg.moe.with_domains(len(ds.domain_names)))
    lang_dim = task_emb_dim(ds.paths)
    if lang_dim != model_cfg.lang_dim:
        if "lang_dim" in cfg.get("explicit", ()):
            raise ValueError(f"model.lang_dim={model_cfg.lang_dim} but the task embeddings in the data have size {lang_dim}")
        model_cfg = dataclasses.replace(model_cfg, lang_dim=lang_dim)
    torch.manual_seed(train_cfg.seed)
    model = TrackModel(model_cfg)
    run_config = {
        "kind": RUN_KINDS["track"], "preset": preset, "model": to_dict(model_cfg), "data": to_dict(data),
        "data_dirs": [str(Path(d).resolve()) for d in data_dirs], "domains": ds.domain_names, "views": ds.view_names,
        "params": count_params(model).as_dict(),
    }
    eval_fn = select = None
    if data.val_dirs:  # held-out curve, best checkpoint and convergence verdict (trajmoe.train.validation)
        if not train_cfg.eval_every:  # default: evaluate at every checkpoint
            train_cfg = dataclasses.replace(train_cfg, eval_every=train_cfg.ckpt_every or train_cfg.steps)
        eval_fn = validation_fn(list(data.val_dirs), model_cfg, data, data.val_samples, ds.domain_names)
        select = Selection("skill_mse", "max")
    with RunFolder(out, {**run_config, "train": to_dict(train_cfg)}, resume, allow_change, overwrite) as run:
        trainer = Trainer(model, ds, train_cfg, run, run_config, eval_fn=eval_fn, select=select,
                          sample_weights=ds.sample_weights(dict(data.domain_weights)))
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
    """Track MSE / ADE / FDE per domain, per view and overall, and expert load per MoE layer and domain."""
    model, run_cfg = from_run(run_dir, device)
    data = from_dict(TrackDataConfig, run_cfg.get("data", {}), f"{run_dir} data")
    known = list(run_cfg.get("domains", []))
    ds = build_dataset(data_dirs, model.cfg, data, heldout=True, domain_names=_merge_domains(known, data_dirs))
    pick = heldout_indices(len(ds), max_samples)
    model.reset_routing_stats()
    use_domains = bool(model.cfg.moe.layers) and len(ds.domain_names) <= model.cfg.moe.num_domains
    result = track_metrics(model, ds, pick, batch_size, device, seed, use_domains)
    routing = expert_shares(model.moe_layers(), ds.domain_names)
    return {"run": str(run_dir), "data": [str(d) for d in data_dirs], "samples": int(len(pick)),
            "metrics": result, "routing": routing, "routing_busiest_share": busiest_share_by_domain(routing)}


def heldout_indices(n: int, max_samples: int) -> np.ndarray:
    """The fixed held-out sample indices: up to `max_samples` evenly spaced over the n samples."""
    return np.unique(np.linspace(0, n - 1, num=min(n, max_samples)).round().astype(np.int64))


@torch.no_grad()
def track_metrics(model: TrackModel, ds: TrackDataset, pick: np.ndarray, batch_size: int = 64,
                  device: str | torch.device = "cpu", seed: int = 0, use_domains: bool = False,
                  views_as_domains: bool = False) -> dict:
    """TrackMetrics.result() of `model` on samples `pick` of `ds` (each drawn with rng (seed, index),
    so the same samples every call): per domain, per view ("view:<name>") and "overall". `use_domains`
    passes the samples' domain ids to the MoE routing statistics, `views_as_domains` their view ids instead
    (routing per camera); the predictions are the same either way."""
    metrics = TrackMetrics(model.cfg.img_size, ds.domain_names)
    for start in range(0, len(pick), batch_size):
        items = [ds.get(int(i), np.random.default_rng([seed, int(i)])) for i in pick[start : start + batch_size]]
        batch = {k: torch.as_tensor(np.stack([it[k] for it in items])).to(device) for k in ("image", "tracks", "vis", "task_emb", "domain")}
        rows = None
        if views_as_domains:
            rows = torch.as_tensor([ds.view_names.index(it["source"].rsplit(":", 2)[1]) for it in items], device=device)
        elif use_domains:
            rows = batch["domain"]
        pred = model.predict(batch["image"], batch["tracks"][:, 0], batch["task_emb"], rows)
        metrics.update(pred, batch["tracks"], batch["vis"], batch["domain"],
                       [f"view:{it['source'].rsplit(':', 2)[1]}" for it in items])
    return metrics.result()


def validation_fn(val_dirs, model_cfg: TrackConfig, data: TrackDataConfig, max_samples: int,
                  train_domains: list[str] | None = None):
    """eval_fn(model, step) for the Trainer: held-out skill MSE / ADE / FDE overall and per camera
    (`<view>/skill_mse`, ...) and the errors beside their no-motion baselines, on a fixed set of
    samples of `val_dirs` (no augmentation). For an MoE model also the routing over training (the Tra-MoE
    paper's premise that experts specialise): per MoE layer, the busiest expert's share of each training
    domain's tokens since the previous evaluation (`routing/layer<i>/<domain>`) and of each camera's tokens on
    the held-out samples (`routing/layer<i>/view:<name>`); 1/E is a balanced router, 1 a collapsed one."""
    ds = build_dataset(val_dirs, model_cfg, data, heldout=True)
    pick = heldout_indices(len(ds), max_samples)
    keys = ("skill_mse", "skill_ade", "skill_fde", "track_mse", "track_mse_static", "ade_px", "ade_px_static")
    view_ids = {f"view:{v}": i for i, v in enumerate(ds.view_names)}

    def eval_fn(model, step: int) -> dict:
        out = {}
        moe = bool(model.cfg.moe.layers) and len(view_ids) <= model.cfg.moe.num_domains
        if moe and train_domains:  # the training batches' routing since the last evaluation
            out.update(_busiest(expert_shares(model.moe_layers(), train_domains)))
        model.reset_routing_stats()
        res = track_metrics(model, ds, pick, 64, next(model.parameters()).device, views_as_domains=moe)
        if moe:  # held-out routing per camera (the views were passed as routing-statistics rows)
            out.update(_busiest(expert_shares(model.moe_layers(), list(view_ids))))
        model.reset_routing_stats()
        out.update({k: res["overall"][k] for k in keys})
        for group, r in res.items():
            if group.startswith("view:"):
                out.update({f"{group[5:]}/{k}": r[k] for k in ("skill_mse", "skill_ade", "ade_px", "ade_px_static")})
        return out

    return eval_fn


def _busiest(shares: dict) -> dict[str, float]:
    """{"routing/<layer>/<row>": busiest expert share} from `expert_shares`' output."""
    return {f"routing/{layer}/{row}": v for layer, r in shares.items() for row, v in r["busiest_share"].items()}


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
