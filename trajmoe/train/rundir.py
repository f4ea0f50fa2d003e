"""Run folders that say what they are: checks before a Trainer writes into `--out`.

A run folder's config.json records the model, data and training settings (and a `history` of
deliberate changes); `check_run_dir` holds every new process to it. See `trajmoe.train.trainer`.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

from trajmoe.config import RUN_KINDS
from trajmoe.io import DirLock, diff_keys, read_json, remove_stale_temps
from trajmoe.train import checkpoint as ckpt
from trajmoe.train.validation import BEST_DIR, VALIDATION

RUN_FILES = (ckpt.CONFIG, ckpt.WEIGHTS, ckpt.STATE_DIR, "metrics.jsonl", BEST_DIR, VALIDATION)
# What a new run clears in a folder of a trajmoe run that never checkpointed (only with --overwrite when
# it holds TRAINED_WEIGHTS): the run files, the EMA weights and the TensorBoard logs.
CLEARED = (*RUN_FILES, ckpt.EMA_WEIGHTS, "tb")
TRAINED_WEIGHTS = (ckpt.WEIGHTS, ckpt.EMA_WEIGHTS, BEST_DIR)
# What a resume may change without --allow-change (recorded in the run's history when it does):
# how the run is operated, not what it computes. `steps` extends (or shortens) a run.
RESUME_MAY_CHANGE_TRAIN = ("steps", "progress", "num_workers", "log_every", "ckpt_every", "eval_every", "device",
                           "ddp_find_unused")
RESUME_VOLATILE = ("timings", "history")  # run_config keys that are measurements, never compared


class RunFolder:
    """A run folder held for one training run: its lock (taken by the writing process, rank 0) and
    `check_run_dir`'s verdict (`latest`: the checkpoint to resume from or None; `history`).

    A family's `fit` opens it before it writes anything into the folder (vocabularies, caches) and
    hands it to the `Trainer`, which releases the lock when training ends. Used as a context manager
    it releases the lock only when the block raises (the Trainer owns it afterwards).
    `config` is the full config.json to be (run_config + {"train": ...}).
    """

    def __init__(self, path: str | Path, config: dict, resume: bool = False, allow_change: bool = False,
                 overwrite: bool = False):
        self.path, self.resume = Path(path), resume
        self.writer = os.environ.get("RANK", "0") in ("", "0")  # torchrun: only rank 0 writes
        if self.path.exists() and not self.path.is_dir():
            raise ValueError(f"output path {self.path} exists and is not a directory")
        self.lock = DirLock.acquire(self.path, what="run folder") if self.writer else None
        try:
            self.latest, self.history = check_run_dir(self.path, config, resume, allow_change, self.writer, overwrite)
        except BaseException:
            self.release()
            raise

    def release(self) -> None:
        """Release the folder's lock (idempotent)."""
        if self.lock is not None:
            self.lock.release()
            self.lock = None

    def __enter__(self) -> "RunFolder":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.release()


def check_run_dir(out: str | Path, config: dict, resume: bool, allow_change: bool = False,
                  writer: bool = True, overwrite: bool = False) -> tuple[tuple[int, Path] | None, list]:
    """Check a run folder against the run about to use it; returns (checkpoint to resume from or
    None, the run's history for config.json). Call it holding the folder's lock (`DirLock`).

    `config` is the full config.json to be (run_config + {"train": ...}). A folder is a trajmoe run
    only if its config.json says so (`is_run_record`); one holding any run file name (`CLEARED`)
    otherwise is refused naming them, whatever the flags: trajmoe never deletes or overwrites
    what it did not make. Without `resume`: a run with a checkpoint is refused unless `overwrite`;
    one that never checkpointed is cleared (a failed run never blocks its rerun), unless it holds
    trained weights (`TRAINED_WEIGHTS`, e.g. a finished run whose state/ was deleted): those are
    cleared only with `overwrite`. With `resume`: a folder with no run, or a run without a
    checkpoint, is an error (never a silent start over); a run whose recorded settings differ
    (other than `RESUME_MAY_CHANGE_TRAIN` and measurements) is refused with a one-line ValueError
    naming the keys, unless `allow_change`; every change is appended to the history. `writer`
    (rank 0) also removes temporaries left by a killed writer.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"output path {out} exists and is not a directory")
    started = [f for f in CLEARED if (out / f).exists() or (out / f).is_symlink()]
    if started and not is_run_record(out / ckpt.CONFIG):
        what = "no config.json" if ckpt.CONFIG not in started else "its config.json is not a trajmoe run record"
        raise ValueError(f"{out} holds files trajmoe did not make ({', '.join(started)}; {what}); "
                         "trajmoe will not replace them: choose another --out")
    if writer:  # we hold the lock: no temporary file here belongs to a live writer
        remove_stale_temps(out)
        remove_stale_temps(ckpt.state_dir(out))
    latest = ckpt.latest_checkpoint(out)
    if not resume:
        weights = [f for f in TRAINED_WEIGHTS if f in started]
        if latest is not None and not overwrite:
            raise ValueError(f"{out} already holds a run (checkpoint at step {latest[0]}); pass --resume to continue it, "
                             "--overwrite to discard it, or choose another --out")
        if weights and not overwrite:
            raise ValueError(f"{out} holds the trained weights of a run with no checkpoint to resume "
                             f"({', '.join(weights)}); pass --overwrite to discard them or choose another --out")
        if started and writer:
            _clear_unfinished_run(out)
        return None, []
    if not (out / ckpt.CONFIG).is_file():
        raise ValueError(f"nothing to resume in {out}: no run there (no {ckpt.CONFIG}); drop --resume to start a new run")
    if latest is None:
        raise ValueError(f"nothing to resume in {out}: its run has no checkpoint ({ckpt.state_dir(out) / ckpt.MARKER} "
                         "missing); drop --resume to start over (add --overwrite if it holds trained weights)")
    old = ckpt.load_run_config(out)
    history = list(old.get("history") or [])
    diffs = diff_keys(_comparable(old, strict=True), _comparable(config, strict=True))
    if diffs and not allow_change:
        raise ValueError(f"cannot resume {out}: settings differ from its config.json at {', '.join(diffs)} "
                         "(pass --allow-change to change them deliberately, or choose another --out)")
    changed = diff_keys(_comparable(old, strict=False), _comparable(config, strict=False))
    if changed:
        history.append({"resumed_at_step": latest[0], "changed": changed, "allowed": bool(diffs),
                        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    return latest, history


def is_run_record(path: str | Path) -> bool:
    """True when `path` is a trajmoe run's config.json: a readable JSON object whose `kind` is one of
    `trajmoe.config.RUN_KINDS` (every family's run), or that holds what a `Trainer` writes for any
    run_config (a `train` object and a `history` list)."""
    try:
        cfg = read_json(path)
    except (OSError, ValueError):
        return False
    return isinstance(cfg, dict) and (cfg.get("kind") in RUN_KINDS.values()
                                      or (isinstance(cfg.get("train"), dict) and isinstance(cfg.get("history"), list)))


def _clear_unfinished_run(out: Path) -> None:
    """Remove the `CLEARED` names of a trajmoe run folder (a symlink itself, never what it points at)."""
    for name in CLEARED:
        p = out / name
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        elif p.exists() or p.is_symlink():
            p.unlink()


def _comparable(config: dict, strict: bool) -> dict:
    """A run's config without measurements; strict also drops what a resume may change freely."""
    out = {k: v for k, v in config.items() if k not in RESUME_VOLATILE}
    if strict and isinstance(out.get("train"), dict):
        out["train"] = {k: v for k, v in out["train"].items() if k not in RESUME_MAY_CHANGE_TRAIN}
    return json.loads(json.dumps(out, default=str))
