"""`trajmoe train policy`: resolve the config against the data and the track run, then the Trainer.

Sections (YAML file and `--set`): model (PolicyConfig), train (TrainConfig), data
(PolicyDataConfig); a bare `--set key=value` goes to the one section that has `key`.
The data-derived model fields (views, img_size, action_dim, proprio_dim, lang_dim) are taken from
the episode files, and track_len from the track model, unless set explicitly; an explicit value
that disagrees is an error naming both values.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import torch

from ..config import RUN_KINDS, load_yaml, parse_overrides, pick_preset, resolve_sections, to_dict
from ..io import atomic_write_json
from ..nn import count_params
from ..track.run import explicit_model_keys, heldout_indices
from ..train import Trainer
from ..train.validation import BEST_DIR, Selection
from ..train.checkpoint import save_tensors
from ..train.rundir import RunFolder
from .config import CONDITIONINGS, PRESETS
from .dataset import PolicyDataset, build_track_cache, fit_to_data, scan_data
from .io import load_track_for_policy, pin_track
from .model import TrajectoryPolicy

TASK_EMB_FILE = "task_emb.safetensors"


def resolve(preset: str, overrides: list[str] | dict | None = None, config_file: str | None = None,
            conditioning: str | None = None, track_run: str | None = None, tasks: list[str] | None = None) -> dict:
    """{"model": PolicyConfig, "train": TrainConfig, "data": PolicyDataConfig, "preset": name,
    "explicit": model keys the file or `--set` named, "track": the record of the trained track-model run
    `track_run` that the track / mask conditionings need (`pin_track`: its folder, TrackConfig and weights
    digest; the model's track_len is its), "tasks": task names to keep (None = all)} before the data is seen.

    Raises:
        ValueError: (one line) a bad preset, key or value; a conditioning that needs a track run without
            one; an explicit track_len that differs from the track model's. FileNotFoundError: a missing run.
    """
    file_data = load_yaml(config_file) if config_file else None
    overrides = parse_overrides(overrides)
    p = pick_preset(PRESETS, preset, "policy")
    model = p.model
    if conditioning is not None:
        if conditioning not in CONDITIONINGS:
            raise ValueError(f"--conditioning must be one of {', '.join(CONDITIONINGS)}, got {conditioning!r}")
        model = dataclasses.replace(model, conditioning=conditioning)
    secs = resolve_sections({"model": model, "train": p.train, "data": p.data},
                            file_data, overrides, "policy config")
    if conditioning is not None and secs["model"].conditioning != conditioning:
        raise ValueError(f"--conditioning {conditioning} conflicts with model.conditioning={secs['model'].conditioning} from --config/--set")
    explicit = explicit_model_keys(file_data, overrides)
    model, track = pin_track(secs["model"], track_run, explicit)
    return {**secs, "model": model, "preset": preset, "explicit": explicit, "track": track, "tasks": tasks}


def fit(cfg_in: dict, data_dir: str, out: str, resume: bool = False, allow_change: bool = False,
        overwrite: bool = False, progress: bool = True) -> dict:
    """Train a policy from a resolved config (`resolve`) on the episodes of `data_dir` into the run
    folder `out`: the final training metrics (resume / allow_change / overwrite: as `check_run_dir`).

    Raises:
        ValueError: (one line) when the track run, the data and the config disagree.
    """
    cfg = cfg_in["model"]
    train_cfg = cfg_in["train"]
    data = cfg_in["data"]
    track = cfg_in["track"]
    if not progress:
        train_cfg = dataclasses.replace(train_cfg, progress=False)
    if data.val_dir:  # config.json records the real folder (a resume from another working directory compares it)
        data = dataclasses.replace(data, val_dir=str(Path(data.val_dir).resolve()))
    tm = load_track_for_policy(track["track_run"], expected=track["track_model"]) if track["track_run"] else None
    metas = scan_data(data_dir, cfg_in.get("tasks"), data.max_episodes_per_task)
    cfg = fit_to_data(cfg, metas, cfg_in["explicit"], data_dir)
    if tm is not None and tm.cfg.lang_dim != cfg.lang_dim:
        raise ValueError(f"track model in {track['track_run']} takes task embeddings of size {tm.cfg.lang_dim}, the data in {data_dir} has {cfg.lang_dim}")
    tasks = sorted({m.task for m in metas})
    ds = PolicyDataset(metas, cfg, data, augment=True)
    val_ds = PolicyDataset(scan_data(data.val_dir, tasks, 0), cfg, data, augment=False) if data.val_dir else None
    torch.manual_seed(train_cfg.seed)
    policy = TrajectoryPolicy(cfg, tm)
    eval_fn = select = None
    if val_ds is not None:  # held-out action error during training (trajmoe.train.validation)
        eval_fn, select = action_validation_fn(val_ds, data.val_samples), Selection("action_mse", "min")
        if not train_cfg.eval_every:  # default: evaluate at every checkpoint
            train_cfg = dataclasses.replace(train_cfg, eval_every=train_cfg.ckpt_every or train_cfg.steps)
    run_config = _run_config(cfg, data, cfg_in.get("preset"), data_dir, metas, tasks, ds, track, policy)
    with RunFolder(out, {**run_config, "train": to_dict(train_cfg)}, resume, allow_change, overwrite) as run:
        trainer = Trainer(policy, ds, train_cfg, run, run_config, eval_fn=eval_fn, select=select)
        _write_run_inputs(policy, ds, val_ds, Path(out), track["track_run"], str(trainer.device))
    metrics = trainer.fit()
    if cfg.conditioning == "adaptive_mask":
        save_mask_values(policy, Path(out))
    return metrics


def _write_run_inputs(policy, ds, val_ds, out: Path, track_run: str | None, device: str) -> None:
    """RUN/task_emb.safetensors (and in RUN/best: a loadable policy run too; rollouts read them) and,
    with a track model, the cached track predictions of the training (and held-out) frames."""
    embs = {}
    for e in ds.episodes:
        embs.setdefault(e.task, torch.from_numpy(np.asarray(e.task_emb, np.float32)))
    save_tensors(embs, out / TASK_EMB_FILE)
    if val_ds is not None:
        save_tensors(embs, out / BEST_DIR / TASK_EMB_FILE)
    if policy.cfg.uses_track_model and ds.data.track_cache:
        build_track_cache(policy, ds, out, track_run, device=device)
    if val_ds is not None and policy.cfg.uses_track_model:  # held-out frames' tracks, predicted once (not saved)
        build_track_cache(policy, val_ds, None, track_run, device=device)


def action_validation_fn(val_ds: PolicyDataset, max_samples: int):
    """eval_fn(policy, step) for the Trainer: held-out action MSE over the valid frames of each window
    (`action_mse`, the training loss's reduction) and at the window's last frame (`action_mse_last`, the
    action the policy executes), on up to `max_samples` fixed, evenly spaced, un-augmented samples."""
    from torch.utils.data import default_collate

    pick = heldout_indices(len(val_ds), max_samples)

    def eval_fn(policy, step: int) -> dict:
        device = next(policy.parameters()).device
        num = den = last = 0.0
        for s in range(0, len(pick), 64):
            items = [val_ds.get(int(i), np.random.default_rng(int(i))) for i in pick[s : s + 64]]
            batch = {k: v.to(device) if torch.is_tensor(v) else v
                     for k, v in default_collate([{k: v for k, v in it.items() if k != "source"} for it in items]).items()}
            err = ((policy.predict_actions(batch).float() - batch["actions"].float()) ** 2).mean(-1)  # (B, F)
            w = batch["valid"].to(err.dtype)
            num, den, last = num + float((err * w).sum()), den + float(w.sum()), last + float(err[:, -1].sum())
        return {"action_mse": num / max(den, 1.0), "action_mse_last": last / len(pick)}

    return eval_fn


def _run_config(cfg, data, preset: str, data_dir: str, metas: list, tasks: list[str], ds, track: dict, policy) -> dict:
    """The run folder's config.json: model, data, tasks, track run (`track_record`), env, params."""
    first = metas[0].attrs
    return {
        "kind": RUN_KINDS["policy"], "preset": preset, "model": to_dict(cfg), "data": to_dict(data),
        "data_dir": str(Path(data_dir).resolve()), "tasks": tasks, "episodes": len(metas),
        "samples": len(ds), **track,
        "env": {"camera": first.get("camera", "corner"), "image_size": cfg.img_size,
                "visual_seed": None},
        "params": count_params(policy).as_dict(),
    }


def save_mask_values(policy, out: Path) -> str:
    """RUN/mask_values.json and RUN/mask_values.png: the learned adaptive-mask value per track
    timestep (final weights) beside the drawn ones, with the logged history (metrics.jsonl)."""
    from ..viz.mask_values import plot_mask_values  # imports matplotlib: only when a mask run finishes

    learned = policy.mask_values.detach().cpu().numpy()
    drawn = policy.mask_init.detach().cpu().numpy()
    hist = []
    mfile = out / "metrics.jsonl"
    if mfile.is_file():
        for line in mfile.read_text().splitlines():
            row = json.loads(line)
            if "mask_value_00" in row:
                hist.append([row.get(f"mask_value_{t:02d}", np.nan) for t in range(len(learned))])
    atomic_write_json(out / "mask_values.json", {"learned": learned.tolist(), "drawn": drawn.tolist(),
                                                 "max_abs_change": float(np.abs(learned - drawn).max()),
                                                 "mask_value_scale": policy.cfg.mask_value_scale})
    return plot_mask_values(learned, drawn, out / "mask_values.png", title=f"adaptive mask values ({out.name})",
                            history_ST=np.array(hist) if hist else None)
