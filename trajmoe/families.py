"""The registry of model families: the one protocol the track model, the policy and the planner
implement, and the only path from the CLI to a family (the pattern of LeRobot's policy registry;
timm's `tests/test_models.py` runs one battery over every registered preset).

    fam = family("planner")
    cfg = fam.resolve("tiny-moe", ["steps=5", "model.moe.top_k=1"])   # {"model", "train", "data", ...}
    model = fam.build(cfg["model"])                                   # nn.Module
    fam.fit(cfg, data, out)                                           # run folder: config.json + safetensors
    model, run_cfg = fam.from_run(out, device="cpu", ema=True)
    fam.evaluate(out, data)                                           # the family's evaluation dict
    batch = fam.example_batch(cfg["model"])                           # a small batch model(batch) trains on

Each family registers itself in its own package (`trajmoe/<package>/family.py`: `register(Family(...))`);
this module imports none of them at import time (`FAMILY_MODULES` names them), so the dependency
direction stays families -> core. Run kinds come from `trajmoe.config.RUN_KINDS`.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable

from .config import RUN_KINDS, Preset

# family name -> the module that registers it (imported on first use of the registry)
FAMILY_MODULES = {"track": "trajmoe.track.family", "policy": "trajmoe.policy.family",
                  "planner": "trajmoe.drive.family"}


@dataclass(frozen=True)
class Family:
    """One model family.

    resolve(preset, overrides=None, config_file=None) -> config: {"model", "train", "data" sections, ...}
        (the policy's also holds "track", the record of its track-model run, and "tasks"; a bare
        `--set key=value` goes to the one section with that key).
    build(model_config) -> nn.Module, untrained.
    fit(config, data, out, resume=False, allow_change=False, overwrite=False, progress=True) -> final
        metrics; owns the run folder `out` (lock, `check_run_dir`, data-derived fields, the Trainer).
    from_run(path, device="cpu", ema=True) -> (model in eval mode, run config dict).
    evaluate(run, data, **options) -> the family's evaluation dict (its baseline beside it).
    example_batch(model_config) -> a small batch (dict of tensors) `model(batch)` trains on.
    verbs: the family's own further verbs by name (the planner's "finetune" (GRPO) and "ensemble"), so the
        CLI reaches them through the registry too.
    """

    name: str
    config_cls: type
    presets: dict[str, Preset]
    resolve: Callable[..., dict]
    build: Callable[[Any], Any]
    fit: Callable[..., dict]
    from_run: Callable[..., tuple[Any, dict]]
    evaluate: Callable[..., dict]
    example_batch: Callable[[Any], dict]
    verbs: dict[str, Callable[..., Any]] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        """The `kind` this family's run folders record in config.json."""
        return RUN_KINDS[self.name]


_REGISTRY: dict[str, Family] = {}


def register(fam: Family) -> Family:
    """Add a family to the registry (called by the family's own module); returns it."""
    if fam.name not in FAMILY_MODULES:
        raise ValueError(f"family {fam.name!r} has no entry in trajmoe.families.FAMILY_MODULES")
    _REGISTRY[fam.name] = fam
    return fam


def families() -> dict[str, Family]:
    """Every registered family by name (importing their modules on first use)."""
    for name, module in FAMILY_MODULES.items():
        if name not in _REGISTRY:
            importlib.import_module(module)
    return dict(_REGISTRY)


def family(name: str) -> Family:
    """The family `name`; an unknown name is a one-line ValueError listing the valid ones."""
    if name not in FAMILY_MODULES:
        raise ValueError(f"unknown model family {name!r}; valid: {', '.join(FAMILY_MODULES)}")
    return families()[name]

