"""Converged models shipped with trajmoe: loadable run folders plus a manifest of how they were made.

Each lives in `trajmoe/configs/pretrained/<name>/` (installed as package data): `config.json` and
`model.safetensors` (a run folder every loader reads: `trajmoe eval track --run ...`), plus
`manifest.json`:

    {"name", "family": "track" | "policy" | "planner", "command": the exact training command, "seed",
     (a policy also holds task_emb.safetensors, and "closed_loop": its held-out success)
     "data": {"benchmark", "generator_version", "train": [...], "heldout": ...},
     "heldout": the figures on the benchmark's held-out set (e.g. skill MSE per camera),
     "check": {"episode": one held-out episode as a DomainSpec dict, "max_samples", "metrics"}
              (a planner: {"scenes": {"scenarios", "scenes", "seed"}, "metrics"}: held-out scenes),
     "validation": the run's RUN/validation.json (best step, convergence verdict), "cpu_hours"}

`check` is what anyone can reproduce in seconds: regenerate that one episode with the simulator
(`regenerate_check_episode`) and evaluate the model on it (`check_pretrained`); the figures must
match the recorded ones (tests/test_pretrained.py does exactly this).
"""

from __future__ import annotations

import json
from pathlib import Path

from .configs import PACKAGED

PRETRAINED = PACKAGED / "pretrained"
MANIFEST = "manifest.json"


def list_pretrained() -> list[str]:
    """Names of the shipped models (folders of trajmoe/configs/pretrained holding a manifest)."""
    if not PRETRAINED.is_dir():
        return []
    return sorted(p.name for p in PRETRAINED.iterdir() if (p / MANIFEST).is_file())


def pretrained_run(name: str) -> Path:
    """The run folder of shipped model `name` (ValueError listing the shipped names)."""
    if name not in list_pretrained():
        raise ValueError(f"no shipped model {name!r}; shipped: {', '.join(list_pretrained()) or 'none'}")
    return PRETRAINED / name


def manifest(name: str) -> dict:
    """The manifest of shipped model `name` (module docstring)."""
    return json.loads((pretrained_run(name) / MANIFEST).read_text())


def regenerate_check_episode(name: str, out: str | Path) -> Path:
    """Regenerate the one held-out episode of `name`'s check with the simulator into folder `out`
    (ATM layout, as `trajmoe data metaworld` writes it; a planner's check scenes as `trajmoe data scenes`
    writes them, with highway-env); returns the folder. Needs MetaWorld (highway-env for a planner)."""
    m = manifest(name)
    if m["family"] == "planner":
        from .drive.scenes import SceneGenConfig, generate as generate_scenes

        c = m["check"]["scenes"]
        generate_scenes(out, list(c["scenarios"]), int(c["scenes"]), SceneGenConfig(seed=int(c["seed"])), progress=False)
        return Path(out)
    from .data.generate import generate
    from .data.specs import DomainSpec
    from .config import from_dict

    spec = from_dict(DomainSpec, manifest(name)["check"]["episode"], f"{name} manifest check.episode")
    summary = generate([(spec, str(out))], workers=1, progress=False)
    if summary.done != 1:
        raise RuntimeError(f"regenerating the check episode of {name} failed: {summary}")
    return Path(out)


def check_pretrained(name: str, data_dir: str | Path) -> dict:
    """{"recorded": the manifest's check metrics, "measured": the same metrics now} on the check episode
    folder `data_dir` (`regenerate_check_episode`): a track model's skill scores (`trajmoe eval track`'s
    metrics), a policy's held-out action MSE (the validation metric of `trajmoe train policy --val`), a
    planner's open-loop EPDMS overall and per scenario (`trajmoe eval planner`'s figures)."""
    m = manifest(name)
    run = pretrained_run(name)
    if m["family"] == "track":
        from .families import family

        res = family("track").evaluate(str(run), [str(data_dir)], m["check"]["max_samples"])
        measured = {k: _path(res["metrics"], k) for k in m["check"]["metrics"]}
    elif m["family"] == "policy":
        from .config import from_dict
        from .policy.config import PolicyDataConfig
        from .policy.dataset import PolicyDataset, scan_data
        from .families import family
        from .policy.train import action_validation_fn

        policy, run_cfg = family("policy").from_run(run)
        data = from_dict(PolicyDataConfig, {**run_cfg["data"], "val_dir": ""}, f"{run}/config.json data")
        ds = PolicyDataset(scan_data(data_dir), policy.cfg, data, augment=False)
        import torch

        with torch.no_grad():
            res = action_validation_fn(ds, m["check"]["max_samples"])(policy, 0)
        measured = {k: float(res[k]) for k in m["check"]["metrics"]}
    elif m["family"] == "planner":
        from .drive.evaluate import evaluate_planner_files
        from .drive.scenes import select_scene_paths
        from .families import family

        res = evaluate_planner_files(family("planner").from_run(run)[0], select_scene_paths(data_dir))
        measured = {k: _path(res, k) for k in m["check"]["metrics"]}
    else:
        raise ValueError(f"{run}/{MANIFEST}: family {m['family']!r} has no check (track, policy, planner)")
    return {"recorded": m["check"]["metrics"], "measured": measured}


def _path(d: dict, dotted: str) -> float:
    """d["view:agentview"]["skill_mse"] for "view:agentview.skill_mse" (d["per_scenario"]["merge"]["EPDMS"]
    for "per_scenario.merge.EPDMS")."""
    for key in dotted.split("."):
        d = d[key]
    return float(d)
