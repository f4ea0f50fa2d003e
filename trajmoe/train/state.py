"""What one checkpoint directory holds beyond the weights: optimizer, EMA, RNG and trainer state.

    state/step_N/model.safetensors, model_ema.safetensors (EMA on), optimizer.safetensors + .json,
    rng.safetensors (torch CPU, this device's CUDA), trainer.json (step, numpy / python RNG,
    last_metrics, best, cpu_s)

Everything is safetensors or JSON; nothing is unpickled. `trajmoe.train.checkpoint` commits the
directory atomically; the Trainer calls `save_checkpoint` / `load_checkpoint` on it.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch
from torch import nn

from trajmoe.io import atomic_write_json, read_json
from trajmoe.train import checkpoint as ckpt

TRAINER_STATE = "trainer.json"
RNG_STATE = "rng.safetensors"


def save_checkpoint(d: Path, model: nn.Module, optimizer: torch.optim.Optimizer, ema: dict | None,
                    device: torch.device, state: dict) -> None:
    """Write model, EMA, optimizer, RNG states and `state` (step, last_metrics, best, cpu_s) into folder d."""
    ckpt.save_weights(model, d / ckpt.WEIGHTS)
    if ema is not None:
        ckpt.save_weights(ema, d / ckpt.EMA_WEIGHTS)
    ckpt.save_optimizer(optimizer, d)
    rng = {"torch_cpu": torch.get_rng_state()}
    if device.type == "cuda":
        rng[f"torch_cuda_{device.index}"] = torch.cuda.get_rng_state(device)
    ckpt.save_tensors(rng, d / RNG_STATE)
    np_state = np.random.get_state()
    atomic_write_json(d / TRAINER_STATE, {**state, "rng": {"numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
                                                           "python": list(random.getstate())}})


def load_checkpoint(cdir: Path, model: nn.Module, optimizer: torch.optim.Optimizer, ema: dict | None,
                    device: torch.device) -> dict:
    """Restore what `save_checkpoint` wrote into `model`, `optimizer`, `ema` (in place) and the global
    RNGs; returns the trainer state dict. EMA switched on at resume starts from the resumed weights."""
    ckpt.load_weights(model, cdir / ckpt.WEIGHTS)
    ckpt.load_optimizer(optimizer, cdir)
    if ema is not None and (cdir / ckpt.EMA_WEIGHTS).is_file():
        saved = ckpt.read_tensors(cdir / ckpt.EMA_WEIGHTS)
        ckpt.check_state_dict(ema, saved, f"EMA weights {cdir / ckpt.EMA_WEIGHTS}")
        for k, v in ema.items():
            v.copy_(saved[k])
    state = read_json(cdir / TRAINER_STATE)
    rng = ckpt.read_tensors(cdir / RNG_STATE)
    torch.set_rng_state(rng["torch_cpu"])
    if device.type == "cuda" and f"torch_cuda_{device.index}" in rng:
        torch.cuda.set_rng_state(rng[f"torch_cuda_{device.index}"], device)
    np.random.set_state(tuple(state["rng"]["numpy"]))
    py = state["rng"]["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    return state
