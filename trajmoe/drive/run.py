"""Driving-planner runs: supervised training, GRPO fine-tuning, loading a run as a planner.

Run directory (on top of the Trainer's config.json / model.safetensors / metrics.jsonl / tb/):
  vocab.safetensors   the k-means vocabulary (V, 40, 3) (also a buffer inside model.safetensors)
  targets.npz         (S, V, M) vocabulary sub-scores of the training scenes (cache; reused by finetune)
  best/, validation.json   with data.val_dir (`--val`): the weights of the best held-out EPDMS (a
                      loadable run: `from_run` reads the vocabulary from its model.safetensors) and
                      the convergence verdict (trajmoe.train.validation)
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from trajmoe.config import (RUN_KINDS, check_run_kind, from_dict, load_yaml, parse_overrides, pick_preset, resolve_sections,
                            to_dict)
from trajmoe.drive.config import PRESETS, DriveDataConfig, DriveModelConfig, GRPOConfig
from trajmoe.drive.dataset import DriveDataset, collate, scene_features
from trajmoe.drive.grpo import GRPOPlanner
from trajmoe.drive.model import DrivePlanner
from trajmoe.drive.scenes import load_scene, read_manifest, scene_path
from trajmoe.drive.vocab import join_samples, kmeans_vocab, precompute_targets, scene_trajectory_samples
from trajmoe.io import DAMAGED_FILE_ERRORS, atomic_path
from trajmoe.train import Trainer
from trajmoe.train.checkpoint import (WEIGHTS, file_sha256, load_run_config, load_run_model, load_weights,
                                      read_tensors, save_tensors)
from trajmoe.train.config import TrainConfig
from trajmoe.train.rundir import RunFolder
from trajmoe.train.validation import Selection

RUN_KIND = RUN_KINDS["planner"]
# GRPO fine-tuning's default recipe, from the supervised run's: this fraction of its steps, its lr
# times FINETUNE_LR_SCALE, no warm-up (`--set` / --config override each).
FINETUNE_STEPS_FRACTION = 0.25
FINETUNE_LR_SCALE = 0.2
VALIDATION_EVALS = 10  # held-out evaluations over a run when train.eval_every is unset and no checkpoints are taken


def resolve(preset: str | None, overrides: list[str] | dict | None = None, config_file: str | None = None) -> dict:
    """preset -> YAML file -> --set overrides; returns {'model', 'data', 'train', 'grpo'} dataclasses.

    Bare `--set` keys go to the one section that has them (`steps=N` -> train), as in every training verb.
    No preset: the config classes' defaults.
    """
    file_data = load_yaml(config_file) if config_file else None
    if preset is None:
        sections = {"model": DriveModelConfig(), "data": DriveDataConfig(), "train": TrainConfig()}
    else:
        p = pick_preset(PRESETS, preset, "planner")
        sections = {"model": p.model, "data": p.data, "train": p.train}
    return resolve_sections({**sections, "grpo": GRPOConfig()}, file_data, parse_overrides(overrides), "drive config")


def _scene_paths(data_dir: str | Path, max_scenes: int = 0) -> tuple[list[Path], int]:
    """The first `max_scenes` (0 = all) scene files of a folder in manifest order, and the number of
    domains (1 + the highest domain id) among them. Errors: as `read_manifest` / `scene_path`."""
    items = read_manifest(data_dir)["scenes"][: max_scenes or None]
    return [scene_path(data_dir, it) for it in items], 1 + max((int(it["domain"]) for it in items), default=-1)


def save_vocab(path: Path, vocab: np.ndarray) -> None:
    """Write the (V, 40, 3) vocabulary (ego frame, m / rad, 0.1 s steps) to a safetensors file."""
    save_tensors({"vocab": torch.as_tensor(vocab)}, path)


def load_vocab(path: Path) -> np.ndarray:
    """Read a vocabulary written by `save_vocab` -> (V, 40, 3) float32."""
    return read_tensors(path)["vocab"].numpy()


def fit(cfg: dict, data_dir: str, out: str, resume: bool = False, allow_change: bool = False,
        overwrite: bool = False, progress: bool = True,
        validation: tuple[Callable[..., dict], Selection] | None = None) -> dict:
    """Supervised training of a planner on the scenes of `data_dir` into the run folder `out`.

    Exact and resumable: torch is seeded with train.seed before the model is built, and the score
    targets are the float16 values cached in targets.npz in the first process and after a resume
    alike. The folder is held (`RunFolder`) from before the vocabulary is written to the end of
    training; see `trajmoe.train.rundir.check_run_dir` for what `resume` / `allow_change` / `overwrite` accept.
    `validation`: the Trainer's (eval_fn, Selection) for a held-out curve, best checkpoint and convergence
    verdict (`trajmoe.train.validation`); the family passes the one `data.val_dir` asks for
    (`trajmoe.drive.family.validation_fn`). Errors: FileNotFoundError / ValueError naming the folder's
    manifest when it is missing, bad or lists no scenes.
    """
    out_p = Path(out)
    mcfg: DriveModelConfig = cfg["model"]
    dcfg: DriveDataConfig = cfg["data"]
    tcfg: TrainConfig = cfg["train"]
    paths, domains = _scene_paths(data_dir, dcfg.max_scenes)
    if not paths:
        raise ValueError(f"{Path(data_dir) / 'manifest.json'}: no scenes to train on")
    mcfg = dataclasses.replace(mcfg, moe=mcfg.moe.with_domains(domains))
    if not progress:
        tcfg = dataclasses.replace(tcfg, progress=False)
    if validation and not tcfg.eval_every:  # default: at every checkpoint, else VALIDATION_EVALS evaluations
        tcfg = dataclasses.replace(tcfg, eval_every=tcfg.ckpt_every or max(1, tcfg.steps // VALIDATION_EVALS))
    eval_fn, select = validation or (None, None)
    run_config = {"kind": RUN_KIND, "stage": "supervised", "model": to_dict(mcfg), "data": to_dict(dcfg),
                  "data_dir": str(Path(data_dir).resolve()), "n_scenes": len(paths)}  # the real folder: see check_run_dir
    with RunFolder(out_p, {**run_config, "train": to_dict(tcfg)}, resume, allow_change, overwrite) as run:
        vocab, features, targets, timings = _training_data(out_p, paths, mcfg, dcfg, run.latest is not None, progress)
        query_feats = mcfg.query_features  # precomputed per scene
        ds = DriveDataset.from_features(features, targets, vocab if query_feats else None)
        torch.manual_seed(tcfg.seed)  # the same command twice builds the same initial model
        model = DrivePlanner(mcfg, vocab)
        trainer = Trainer(model, ds, tcfg, run, {**run_config, "timings": timings}, collate_fn=collate,
                          eval_fn=eval_fn, select=select)
    t = time.perf_counter()
    metrics = trainer.fit()
    return {**metrics, **timings, "train_s": time.perf_counter() - t}


def _training_data(out_p: Path, paths: list[Path], mcfg: DriveModelConfig, dcfg: DriveDataConfig, resuming: bool,
                   progress: bool) -> tuple[np.ndarray, list[dict], np.ndarray, dict]:
    """(vocabulary, scene features, float16 targets, timings) of a supervised run: a resumed run reuses
    its own vocabulary (RUN/vocab.safetensors); a new one never reuses what a failed run left behind."""
    vpath = out_p / "vocab.safetensors"
    resuming_vocab = resuming and vpath.is_file()
    timings = {}
    t = time.perf_counter()
    features, samples = stream_features(paths, dcfg.vocab_use_agents, with_samples=not resuming_vocab)
    timings["scenes_s"] = time.perf_counter() - t
    t = time.perf_counter()
    if resuming_vocab:
        vocab = load_vocab(vpath)
    else:
        vocab = kmeans_vocab(samples, mcfg.vocab_size, dcfg.vocab_iters, dcfg.vocab_seed)
        save_vocab(vpath, vocab)
    del samples
    timings["vocab_s"] = time.perf_counter() - t
    t = time.perf_counter()
    targets = cached_targets(out_p, paths, vocab, dcfg.workers, progress)
    timings["targets_s"] = time.perf_counter() - t
    return vocab, features, targets, timings


def stream_features(paths: list[Path], use_agents: bool = True,
                    with_samples: bool = True) -> tuple[list[dict], np.ndarray | None]:
    """Load the scene files one at a time and keep only what training reads.

    Returns the `scene_features` dict of every scene (about 40 KB each, against ~4 MB for a loaded
    scene with its rasters) and, when `with_samples`, the (N, 40, 3) k-means samples
    (`trajectory_samples` order: experts, then agent futures), else None. Peak memory is the
    features plus one scene. Errors: `load_scene`'s one-line errors naming the file.
    """
    features, experts, agents = [], [], []
    for p in paths:
        scene = load_scene(p)
        features.append(scene_features(scene))
        if with_samples:
            e, a = scene_trajectory_samples(scene, use_agents)
            experts.append(e)
            agents.append(a)
        del scene
    return features, (join_samples(experts, agents) if with_samples and experts else None)


def cached_targets(out_p: Path, paths: list[Path], vocab: np.ndarray, workers: int, progress: bool) -> np.ndarray:
    """(S, V, M) float16 vocabulary sub-scores of the scenes, cached in out_p/targets.npz.

    Always the float16 values (computed now or read back), so a resumed run trains on exactly the
    targets of the first process. The cache is used only for the same scenes and the same vocabulary;
    an unreadable cache is recomputed.
    """
    targets = read_cached_targets(out_p, paths, vocab)
    if targets is not None:
        return targets
    names = np.array([p.stem for p in paths])
    targets = precompute_targets([str(p) for p in paths], vocab, workers, progress).astype(np.float16)
    out_p.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_p / "targets.npz", suffix=".tmp.npz") as tmp:
        np.savez_compressed(tmp, targets=targets, names=names, vocab=np.asarray(vocab, np.float32))
    return targets


def read_cached_targets(run_p: Path, paths: list[Path], vocab: np.ndarray) -> np.ndarray | None:
    """The float16 targets cached in run_p/targets.npz for exactly these scenes and vocabulary, else None."""
    tpath = run_p / "targets.npz"
    if not tpath.is_file():
        return None
    try:
        with np.load(tpath, allow_pickle=False) as z:
            if (z["names"].tolist() == [p.stem for p in paths] and "vocab" in z.files
                    and np.array_equal(z["vocab"], np.asarray(vocab, np.float32))):
                return z["targets"].astype(np.float16)
    except DAMAGED_FILE_ERRORS:
        pass  # damaged cache: recompute
    return None


def from_run(run_dir: str | Path, device: str = "cpu", ema: bool = True) -> tuple[DrivePlanner, dict]:
    """(DrivePlanner in eval mode on `device`, run config) of a trained run (supervised or GRPO; EMA
    weights when the run has them and `ema`). FileNotFoundError / ValueError name the folder."""
    return load_run_model(run_dir, "planner",
                          lambda rc, where: DrivePlanner(from_dict(DriveModelConfig, rc["model"], f"{where} model")), device, ema)


def load_planner(run_dir: str | Path, device: str = "cpu", ema: bool = True) -> DrivePlanner:
    """Alias of `from_run(...)[0]` kept for scripts; the library loads runs through `trajmoe.families`."""
    return from_run(run_dir, device, ema)[0]


def finetune(run: str, out: str, cfg_overrides: list[str] | dict | None = None, config_file: str | None = None,
             resume: bool = False, progress: bool = True, allow_change: bool = False, overwrite: bool = False) -> dict:
    """GRPO fine-tuning (TrajMoE, Xing et al., eqs. 5-10) of the scoring heads of a supervised run.

    Exact and resumable like `fit` (torch seeded before the model is built; float16 targets).
    """
    run_p, out_p = Path(run), Path(out)
    rc = load_run_config(run_p)
    check_run_kind(rc, "planner", str(run_p / "config.json"))
    tcfg, gcfg = _finetune_sections(rc, config_file, cfg_overrides, progress)
    mcfg = dataclasses.replace(from_dict(DriveModelConfig, rc["model"], f"{run_p} model"), gaussian_heads=True)
    torch.manual_seed(tcfg.seed)
    model = GRPOPlanner(mcfg, gcfg)
    init = run_p / WEIGHTS
    missing, unexpected = load_weights(model, init, strict=False)
    if unexpected or any(not k.startswith("std_heads.") for k in missing):
        raise ValueError(f"{init} does not match the planner (missing {missing[:3]}, unexpected {unexpected[:3]})")
    model.start_finetune()
    dcfg = from_dict(DriveDataConfig, rc["data"], "data")
    paths, _ = _scene_paths(rc["data_dir"], dcfg.max_scenes)
    vocab = model.vocab.numpy()
    run_config = {"kind": RUN_KIND, "stage": "grpo", "model": to_dict(mcfg), "data": rc["data"], "data_dir": rc["data_dir"],
                  "grpo": to_dict(gcfg), "init_run": str(run_p.resolve()), "init_weights_sha256": file_sha256(init)}
    with RunFolder(out_p, {**run_config, "train": to_dict(tcfg)}, resume, allow_change, overwrite) as held:
        # The supervised run's cached targets when valid; never written into that (unlocked) run folder.
        targets = read_cached_targets(run_p, paths, vocab)
        if targets is None:
            targets = cached_targets(out_p, paths, vocab, dcfg.workers, progress)
        save_vocab(out_p / "vocab.safetensors", vocab)
        query_feats = mcfg.query_features  # precomputed per scene
        ds = DriveDataset((load_scene(p) for p in paths), targets, vocab if query_feats else None)
        trainer = Trainer(model, ds, tcfg, held, run_config, collate_fn=collate)
    t = time.perf_counter()
    metrics = trainer.fit()
    return {**metrics, "train_s": time.perf_counter() - t}


def _finetune_sections(rc: dict, config_file: str | None, overrides, progress: bool) -> tuple[TrainConfig, GRPOConfig]:
    """The fine-tuning run's train and grpo sections: the supervised run's recipe shortened and slowed
    (FINETUNE_STEPS_FRACTION, FINETUNE_LR_SCALE, no warm-up), then the config file and `--set`."""
    base = dict(rc.get("train", {}))
    base.update({"steps": max(1, int(base.get("steps", 100) * FINETUNE_STEPS_FRACTION)), "warmup_steps": 0,
                 "lr": base.get("lr", 1e-4) * FINETUNE_LR_SCALE})
    secs = resolve_sections({"train": from_dict(TrainConfig, base, "train"), "grpo": GRPOConfig()},
                            load_yaml(config_file) if config_file else None, parse_overrides(overrides), "finetune config")
    tcfg = secs["train"] if progress else dataclasses.replace(secs["train"], progress=False)
    return tcfg, secs["grpo"]
