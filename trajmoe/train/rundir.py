"""Run folders that say what they are: checks before a Trainer writes into `--out`.

A run folder's config.json records the model, data and training settings (and a `history` of
deliberate changes); `check_run_dir` holds every new process to it. See `trajmoe.train.trainer`.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from trajmoe.io import diff_keys, remove_stale_temps
from trajmoe.train import checkpoint as ckpt
from trajmoe.train.validation import BEST_DIR, VALIDATION

RUN_FILES = (ckpt.CONFIG, ckpt.WEIGHTS, ckpt.STATE_DIR, "metrics.jsonl", BEST_DIR, VALIDATION)
# What a resume may change without --allow-change (recorded in the run's history when it does):
# how the run is operated, not what it computes. `steps` extends (or shortens) a run.
RESUME_MAY_CHANGE_TRAIN = ("steps", "progress", "num_workers", "log_every", "ckpt_every", "eval_every", "device",
                           "ddp_find_unused")
RESUME_VOLATILE = ("timings", "history")  # run_config keys that are measurements, never compared


def check_run_dir(out: str | Path, config: dict, resume: bool, allow_change: bool = False,
                  writer: bool = True) -> tuple[tuple[int, Path] | None, list]:
    """Check a run folder against the run about to use it; returns (checkpoint to resume from or
    None, the run's history for config.json). Call it holding the folder's lock (`DirLock`).

    `config` is the full config.json to be (run_config + {"train": ...}). Without `resume`: a
    folder with a checkpoint is refused; one whose run died before its first checkpoint is cleared
    (a failed run never blocks its rerun). With `resume`: a folder with no run is an error; a run
    whose recorded settings differ (other than `RESUME_MAY_CHANGE_TRAIN` and measurements) is
    refused with a one-line ValueError naming the keys, unless `allow_change`; every change is
    appended to the history. `writer` (rank 0) also removes temporaries left by a killed writer.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"output path {out} exists and is not a directory")
    if writer:  # we hold the lock: no temporary file here belongs to a live writer
        remove_stale_temps(out)
        remove_stale_temps(ckpt.state_dir(out))
    latest = ckpt.latest_checkpoint(out)
    started = [f for f in (*RUN_FILES, "tb") if (out / f).exists()]
    if not resume:
        if latest is not None:
            raise ValueError(f"{out} already holds a run (checkpoint at step {latest[0]}); pass --resume to continue it "
                             "or choose another --out")
        if started and writer:  # died before its first checkpoint: nothing worth keeping
            _clear_unfinished_run(out)
        return None, []
    if not (out / ckpt.CONFIG).is_file():
        raise ValueError(f"nothing to resume in {out}: no run there (no {ckpt.CONFIG}); drop --resume to start a new run")
    old = ckpt.load_run_config(out)
    history = list(old.get("history") or [])
    if latest is None:  # started but never checkpointed: start over with the new settings
        if writer:
            ckpt.truncate_metrics(out / "metrics.jsonl", 0)
        return None, history
    diffs = diff_keys(_comparable(old, strict=True), _comparable(config, strict=True))
    if diffs and not allow_change:
        raise ValueError(f"cannot resume {out}: settings differ from its config.json at {', '.join(diffs)} "
                         "(pass --allow-change to change them deliberately, or choose another --out)")
    changed = diff_keys(_comparable(old, strict=False), _comparable(config, strict=False))
    if changed:
        history.append({"resumed_at_step": latest[0], "changed": changed, "allowed": bool(diffs),
                        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    return latest, history


def _clear_unfinished_run(out: Path) -> None:
    for name in (*RUN_FILES, ckpt.EMA_WEIGHTS, "tb"):
        p = out / name
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()


def _comparable(config: dict, strict: bool) -> dict:
    """A run's config without measurements; strict also drops what a resume may change freely."""
    out = {k: v for k, v in config.items() if k not in RESUME_VOLATILE}
    if strict and isinstance(out.get("train"), dict):
        out["train"] = {k: v for k, v in out["train"].items() if k not in RESUME_MAY_CHANGE_TRAIN}
    return json.loads(json.dumps(out, default=str))
