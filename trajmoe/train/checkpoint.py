"""Checkpoints: safetensors weights + JSON, never pickles.

Run directory layout (written by `trajmoe.train.Trainer`, rank 0 only):

    RUN/config.json                 run_config + {"train": TrainConfig}
    RUN/model.safetensors           latest weights (parameters + persistent buffers)
    RUN/model_ema.safetensors       EMA weights, same keys (only when ema_decay > 0)
    RUN/metrics.jsonl, RUN/tb/      logs
    RUN/state/latest.json           commit marker: {"step": N, "dir": "step_0000000N"}
    RUN/state/step_0000000N/        model, model_ema, optimizer (.safetensors + .json),
                                    rng.safetensors, trainer.json (step, RNG, metrics): trajmoe.train.state

A checkpoint is written into a temporary directory that is renamed into place, then the marker is
replaced (atomically) to point at it; only then are the top-level weights updated (copies, so that
editing the exported weights never touches the resume state) and older step directories removed.
A crash at any moment leaves the previous checkpoint valid; the next run removes the temporaries.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn
from safetensors.torch import load_file, save_file

from trajmoe.config import check_run_kind
from trajmoe.io import atomic_path, atomic_write_json, atomic_write_text, read_json, storage_errors
from trajmoe.faults import crash_point

STATE_DIR = "state"
MARKER = "latest.json"
WEIGHTS = "model.safetensors"
EMA_WEIGHTS = "model_ema.safetensors"
CONFIG = "config.json"
FORMAT = "trajmoe-weights-v1"


# ----------------------------------------------------------------------------------------------
# Weights (public helpers used across the project)


def _cpu_tensors(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Detached, contiguous CPU copies that share no storage (safetensors refuses shared memory;
    tied weights are simply stored under each of their names)."""
    out = {}
    for k, v in tensors.items():
        v = v.detach()
        out[k] = v.contiguous().clone() if v.device.type == "cpu" else v.to("cpu").contiguous()
    return out


def save_tensors(tensors: Mapping[str, torch.Tensor], path: str | Path, metadata: dict[str, str] | None = None) -> None:
    """Atomically write a flat name -> tensor dict as safetensors (no space / read-only: a one-line
    StorageError naming the file, see `trajmoe.io.storage_errors`)."""
    with atomic_path(path) as tmp:
        save_file(_cpu_tensors(tensors), str(tmp), metadata={"format": "pt", **(metadata or {})})


def read_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    """Load a safetensors file (CPU) with a one-line error naming the file when missing or corrupt."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"missing weights file: {path}")
    try:
        return load_file(str(path), device="cpu")
    except Exception as e:  # safetensors raises its own error type (and OSError) for bad files
        first = (str(e).splitlines() or [type(e).__name__])[0]
        raise ValueError(f"corrupt safetensors file {path}: {first}") from None


def save_weights(model: nn.Module | Mapping[str, torch.Tensor], path: str | Path) -> None:
    """Save `model.state_dict()` (parameters + persistent buffers), or a state dict, atomically."""
    sd = model.state_dict() if isinstance(model, nn.Module) else model
    save_tensors(sd, path, {"trajmoe": FORMAT})


def _names(keys: list[str], limit: int = 5) -> str:
    shown = ", ".join(keys[:limit])
    return f"[{shown}{f', ... (+{len(keys) - limit} more)' if len(keys) > limit else ''}]"


def check_state_dict(expected: Mapping[str, torch.Tensor], got: Mapping[str, torch.Tensor], where: str, strict: bool = True) -> None:
    """Raise one ValueError line listing missing / unexpected keys (strict) and shape mismatches."""
    problems = []
    missing = [k for k in expected if k not in got]
    unexpected = [k for k in got if k not in expected]
    if strict and missing:
        problems.append(f"missing keys {_names(missing)}")
    if strict and unexpected:
        problems.append(f"unexpected keys {_names(unexpected)}")
    shapes = [
        f"{k}: file {tuple(got[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in got and tuple(got[k].shape) != tuple(v.shape)
    ]
    if shapes:
        problems.append(f"shape mismatch {'; '.join(shapes[:5])}{' ...' if len(shapes) > 5 else ''}")
    if problems:
        raise ValueError(f"{where} does not match the model: {'; '.join(problems)}")


def load_weights(model: nn.Module, path: str | Path, strict: bool = True) -> tuple[list[str], list[str]]:
    """Load safetensors weights into `model` (cast to its dtypes, on its devices).

    Returns (missing, unexpected) key lists (both empty when strict). Raises FileNotFoundError /
    ValueError with a one-line message naming the file on a missing or corrupt file, mismatched
    keys (strict) or mismatched shapes.
    """
    got = read_tensors(path)
    expected = model.state_dict()
    check_state_dict(expected, got, f"weights file {path}", strict)
    result = model.load_state_dict({k: v for k, v in got.items() if k in expected}, strict=False)
    missing = list(result.missing_keys)
    unexpected = [k for k in got if k not in expected]
    return missing, unexpected


def load_run_config(run_dir: str | Path) -> dict[str, Any]:
    """The run's config.json (run_config + {"train": ...}); accepts the run dir or the file."""
    path = Path(run_dir)
    if path.is_dir() or not path.suffix:
        path = path / CONFIG
    cfg = read_json(path)
    if not isinstance(cfg, dict):
        raise ValueError(f"config file {path} must hold a JSON object, got {type(cfg).__name__}")
    return cfg


def weights_file(run_dir: str | Path, ema: bool = True) -> Path:
    """The weights a run is loaded from: RUN/model_ema.safetensors when present and `ema`, else RUN/model.safetensors."""
    run_dir = Path(run_dir)
    return run_dir / EMA_WEIGHTS if ema and (run_dir / EMA_WEIGHTS).is_file() else run_dir / WEIGHTS


def file_sha256(path: str | Path) -> str:
    """sha256 of a file (weights): pins the exact weights a run was built on (a policy's track model,
    a fine-tuning run's initial planner); FileNotFoundError naming a missing file, as `read_tensors`."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"missing weights file: {path}")
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_run_config(run_dir: str | Path, family: str) -> dict[str, Any]:
    """The config.json of a run folder of `family`, its recorded kind checked (`trajmoe.config.check_run_kind`).

    Raises:
        FileNotFoundError / ValueError: one line naming the folder (missing, not a `family` run, bad JSON).
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"{family} run directory not found: {run_dir}")
    run_cfg = load_run_config(run_dir)
    check_run_kind(run_cfg, family, str(run_dir / CONFIG))
    return run_cfg


def load_run_model(run_dir: str | Path, family: str, build: Callable[[dict, Path], nn.Module],
                   device: str | torch.device = "cpu", ema: bool = True) -> tuple[nn.Module, dict[str, Any]]:
    """The one run loader: (model in eval mode on `device`, the run's config.json) of a run folder of
    `family`. Checks the recorded kind (`trajmoe.config.check_run_kind`), builds the model with
    `build(run_config, run_dir)` and loads its EMA weights when present and `ema`, else the plain ones.

    Raises:
        FileNotFoundError / ValueError: one line naming the folder (missing, not a `family` run, bad weights).
    """
    run_dir = Path(run_dir)
    run_cfg = read_run_config(run_dir, family)
    model = build(run_cfg, run_dir)
    load_weights(model, weights_file(run_dir, ema))
    return model.to(device).eval(), run_cfg


# ----------------------------------------------------------------------------------------------
# Optimizer state: tensors as safetensors, everything else as JSON (no pickles)


def save_optimizer(optimizer: torch.optim.Optimizer, ckpt_dir: Path) -> None:
    """Save the optimizer state as CKPT/optimizer.safetensors (tensors) + CKPT/optimizer.json (scalars, param
    groups); nothing pickled.
    """
    sd = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, pstate in sd["state"].items():
        for key, value in pstate.items():
            if torch.is_tensor(value):
                tensors[f"{pid}.{key}"] = value
            else:
                scalars.setdefault(str(pid), {})[key] = value
    save_tensors(tensors, ckpt_dir / "optimizer.safetensors")
    atomic_write_json(ckpt_dir / "optimizer.json", {"param_groups": sd["param_groups"], "scalars": scalars})


def load_optimizer(optimizer: torch.optim.Optimizer, ckpt_dir: Path) -> None:
    """Load `save_optimizer`'s files into `optimizer`.

    Raises:
        FileNotFoundError: optimizer.json missing. ValueError: a corrupt file, or parameter groups that do
            not match the optimizer's (names the folder).
    """
    meta = read_json(ckpt_dir / "optimizer.json")
    tensors = read_tensors(ckpt_dir / "optimizer.safetensors")
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = value
    for pid, values in meta.get("scalars", {}).items():
        state.setdefault(int(pid), {}).update(values)
    groups = meta["param_groups"]
    for g in groups:
        if "betas" in g:
            g["betas"] = tuple(g["betas"])
    try:
        optimizer.load_state_dict({"state": state, "param_groups": groups})
    except (ValueError, KeyError, RuntimeError) as e:
        first = (str(e).splitlines() or [type(e).__name__])[0]
        raise ValueError(f"optimizer state in {ckpt_dir} does not match the trainable parameters: {first}") from None


# ----------------------------------------------------------------------------------------------
# Step-directory checkpoints with a commit marker


def state_dir(run_dir: str | Path) -> Path:
    """RUN/<STATE_DIR>: the folder of the resumable training state."""
    return Path(run_dir) / STATE_DIR


def latest_checkpoint(run_dir: str | Path) -> tuple[int, Path] | None:
    """(step, directory) of the last committed checkpoint, or None."""
    marker = state_dir(run_dir) / MARKER
    if not marker.is_file():
        return None
    info = read_json(marker)
    try:
        step, name = int(info["step"]), str(info["dir"])
    except (KeyError, TypeError, ValueError):
        raise ValueError(f"corrupt checkpoint marker {marker}: expected keys 'step' and 'dir'") from None
    ckpt = state_dir(run_dir) / name
    if not ckpt.is_dir():
        raise FileNotFoundError(f"checkpoint marker {marker} points to a missing directory: {ckpt}")
    return step, ckpt


def _export_copy(src: Path, dst: Path) -> None:
    """Atomically make `dst` a copy of `src` (never a hard link: a user who overwrites the exported
    weights in place must not corrupt the resume state)."""
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)


def commit_checkpoint(run_dir: str | Path, step: int, write_files) -> Path:
    """Write a checkpoint for `step`: `write_files(dir)` fills a temporary directory, which is
    renamed to state/step_N, then the marker is replaced, then top-level weights are copied and
    older step directories removed. Returns the checkpoint directory. A failed write (no space left, ...)
    removes the temporary directory again and is a one-line StorageError; the previous checkpoint stays."""
    sdir = state_dir(run_dir)
    with storage_errors(sdir):
        return _commit_checkpoint(run_dir, sdir, step, write_files)


def _commit_checkpoint(run_dir: str | Path, sdir: Path, step: int, write_files) -> Path:
    sdir.mkdir(parents=True, exist_ok=True)
    name = f"step_{step:08d}"
    final = sdir / name
    tmp = sdir / f".{name}.tmp"
    for stale in (tmp, final):
        if stale.exists():  # leftovers of a crashed save of this same step (never the committed one:
            latest = latest_checkpoint(run_dir)  # a resumed run only re-saves steps after it)
            if latest is not None and latest[1] == stale:
                raise RuntimeError(f"refusing to overwrite the committed checkpoint {stale}")
            shutil.rmtree(stale)
    tmp.mkdir()
    try:
        write_files(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # frees the space a failed write took (a kill -9 leaves it to the next run)
        raise
    crash_point("ckpt_written", step)
    os.replace(tmp, final)
    crash_point("ckpt_renamed", step)
    atomic_write_json(sdir / MARKER, {"step": step, "dir": name})  # the commit point
    crash_point("ckpt_committed", step)
    for fname in (WEIGHTS, EMA_WEIGHTS):
        if (final / fname).is_file():
            _export_copy(final / fname, Path(run_dir) / fname)
    for old in sdir.iterdir():
        if old.is_dir() and old.name.startswith("step_") and old != final:
            shutil.rmtree(old, ignore_errors=True)
    return final


def truncate_metrics(path: Path, max_step: int) -> None:
    """Drop metrics lines logged after `max_step` (by a run that crashed before its next checkpoint)."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line torn by a crash
        if isinstance(rec, dict) and int(rec.get("step", 0)) <= max_step:
            kept.append(line)
    atomic_write_text(path, "".join(k + "\n" for k in kept))
