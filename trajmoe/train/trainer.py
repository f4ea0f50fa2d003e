"""The one training loop of trajmoe: every model (track model, policy, driving planner) uses it.

Contract (see the README's design notes):
  * `model(batch) -> (loss, logs)`: scalar loss, logs of floats / scalar tensors.
  * dataset: `len(dataset)` and `dataset.get(index, rng) -> dict`, all augmentation randomness
    drawn from `rng` (a numpy Generator).
Determinism: the global batch of step s is drawn i.i.d. (with replacement, no epochs) from a
generator seeded by (seed, s), uniformly or by `sample_weights`; sample `slot` of that batch gets
its own rng seeded by (seed, s, slot); model-internal randomness (dropout, MAE masks) uses the
torch RNG reseeded by (seed, s, rank) before each step. So a batch is a pure function of
(seed, step), independent of DataLoader workers; resume continues the exact loss sequence; DDP
rank r takes slots [r*B/W, (r+1)*B/W) of the same global batch (`trajmoe.train.batches`).
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from torch.nn.parallel import DistributedDataParallel as DDP

from trajmoe.config import to_dict
from trajmoe.io import atomic_write_json, read_json, storage_errors
from trajmoe.train import checkpoint as ckpt
from trajmoe.train.batches import (
    STREAM_MODEL,
    StepBatches,
    WorkerError,
    batch_sources,
    derive_seed,
    identity,
    sample_cdf,
    to_device,
    worker_init,
)
from trajmoe.train import distributed as D
from trajmoe.train.config import TrainConfig
from trajmoe.faults import crash_point
from trajmoe.train.rundir import RunFolder
from trajmoe.train.state import load_checkpoint, save_checkpoint
from trajmoe.train.schedule import lr_at
from trajmoe.train.validation import BEST_DIR, VALIDATION, Selection, convergence, read_curve

class TrainingError(RuntimeError):
    """Training cannot continue (non-finite loss or gradient); the last good checkpoint is kept."""


def _brief(items: Sequence[Any], limit: int = 12) -> str:
    items = list(dict.fromkeys(items))  # unique, order kept
    more = f", ... (+{len(items) - limit} more)" if len(items) > limit else ""
    return "[" + ", ".join(map(str, items[:limit])) + more + "]"


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups over trainable parameters: decay on matrices, none on biases / norm weights
    (1-D), nn.Embedding tables and directly-held embeddings / tokens (`pos_embed`, `mask_token`),
    nor on names the model lists in `no_weight_decay()` (timm convention)."""
    skip = set(model.no_weight_decay()) if hasattr(model, "no_weight_decay") else set()
    embedding_params = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue  # frozen sub-modules stay frozen: not even in the optimizer
        leaf = name.rsplit(".", 1)[-1]
        if p.ndim < 2 or id(p) in embedding_params or "embed" in leaf or "token" in leaf or name in skip:
            no_decay.append(p)
        else:
            decay.append(p)
    if not decay and not no_decay:
        raise ValueError("model has no trainable parameters (every parameter has requires_grad=False)")
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _float_logs(logs: Any) -> dict[str, torch.Tensor | float]:
    """Scalar entries of the model's logs (detached); non-scalars are skipped."""
    if logs is None:
        return {}
    if not isinstance(logs, dict):
        raise TypeError(f"model(batch) must return (loss, logs: dict), got logs of type {type(logs).__name__}")
    out: dict[str, torch.Tensor | float] = {}
    for k, v in logs.items():
        if torch.is_tensor(v) and v.numel() == 1:
            out[str(k)] = v.detach().float().reshape(())
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out[str(k)] = float(v)
    return out


def _check_args(cfg, dataset, run_config, select) -> None:
    """TypeError / ValueError for arguments the Trainer cannot work with."""
    if not isinstance(cfg, TrainConfig):
        raise TypeError(f"cfg must be a TrainConfig, got {type(cfg).__name__}")
    if not isinstance(run_config, dict):
        raise TypeError(f"run_config must be a dict, got {type(run_config).__name__}")
    if not (hasattr(dataset, "get") and hasattr(dataset, "__len__")):
        raise TypeError("dataset must provide __len__ and get(index, rng) -> dict")
    if len(dataset) == 0:
        raise ValueError("dataset is empty: nothing to train on")
    if select is not None and not isinstance(select, Selection):
        raise TypeError(f"select must be a Selection, got {type(select).__name__}")


class Trainer:
    """AdamW + warm-up/cosine, grad clipping, bf16 autocast, EMA, atomic checkpoints, resume, DDP."""

    def __init__(
        self,
        model: nn.Module,
        dataset,
        cfg: TrainConfig,
        out_dir: str | Path | RunFolder,
        run_config: dict,
        *,
        sample_weights: Sequence[float] | None = None,
        collate_fn=None,
        eval_fn: Callable[[nn.Module, int], dict] | None = None,
        select: Selection | None = None,
        resume: bool = False,
        allow_change: bool = False,
        overwrite: bool = False,
    ):
        """`out_dir`: a `RunFolder` a family's `fit` already holds (then resume / allow_change / overwrite
        were applied when it was opened), or a path the Trainer opens itself with those flags."""
        _check_args(cfg, dataset, run_config, select)
        self.cfg, self.dataset, self.collate_fn, self.eval_fn = cfg, dataset, collate_fn, eval_fn
        self.select = select  # ranks evaluations: best weights in RUN/best, verdict in RUN/validation.json
        self.best: dict | None = None  # {"step", "value"} of the best evaluation so far
        self._cpu_base = 0.0  # process CPU seconds spent by earlier processes of this run (resume)
        self.run_config = run_config
        self.cdf = None if sample_weights is None else sample_cdf(sample_weights, len(dataset))
        self.step = 0
        self.last_metrics: dict[str, float] = {}
        if not isinstance(out_dir, RunFolder):  # one writer (rank 0 locks); every rank checks the folder
            out_dir = RunFolder(out_dir, {**run_config, "train": to_dict(cfg)}, resume, allow_change, overwrite)
        self._run, self.out_dir, self.resumed = out_dir, out_dir.path, out_dir.resume
        try:
            self._setup_device()
            D.barrier(self.dist)
            self._build(model, out_dir.latest)
            if self.dist.is_main:
                atomic_write_json(self.out_dir / ckpt.CONFIG, {**run_config, "train": to_dict(cfg), "history": out_dir.history})
        except BaseException:
            self.close()
            raise

    def _setup_device(self) -> None:
        """Device, process group (torchrun), bf16 autocast and TF32 from cfg.device / cfg.amp."""
        cfg = self.cfg
        if cfg.device == "cuda" and not torch.cuda.is_available():
            raise ValueError("train.device='cuda' but CUDA is not available on this machine")
        dev_type = "cuda" if cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available()) else "cpu"
        self.dist = D.init_distributed(dev_type)
        if dev_type == "cuda":
            self.device = torch.device("cuda", self.dist.local_rank if self.dist.enabled else torch.cuda.current_device())
        else:
            self.device = torch.device("cpu")
        if cfg.batch_size % self.dist.world_size:
            raise ValueError(f"train.batch_size={cfg.batch_size} must be divisible by the number of processes ({self.dist.world_size})")
        self.amp = cfg.amp == "bf16" or (cfg.amp == "auto" and dev_type == "cuda")
        if dev_type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True  # fp32 matmuls outside autocast: TF32 is the training norm
            torch.backends.cudnn.allow_tf32 = True

    def _build(self, model: nn.Module, saved: tuple[int, Path] | None) -> None:
        """Model on the device, AdamW, EMA copy, the checkpoint `saved` loaded, the DDP wrapper."""
        cfg, cuda = self.cfg, self.device.type == "cuda"
        self._model = model.to(self.device)
        self.optimizer = torch.optim.AdamW(
            param_groups(self._model, cfg.weight_decay), lr=cfg.lr, betas=cfg.betas, fused=cuda
        )
        self._trainable = [p for g in self.optimizer.param_groups for p in g["params"]]
        self.ema: dict[str, torch.Tensor] | None = None
        if cfg.ema_decay > 0:
            self.ema = {k: v.detach().clone() for k, v in self._model.state_dict().items()}
        if saved is not None:
            self._load_state(*saved)
        self.ddp_model: nn.Module = self._model
        if self.dist.enabled:
            self.ddp_model = DDP(
                self._model,
                device_ids=[self.device.index] if cuda else None,
                find_unused_parameters=cfg.ddp_find_unused,
            )

    @property
    def model(self) -> nn.Module:
        """The unwrapped model (not the DDP wrapper)."""
        return self._model

    # ------------------------------------------------------------------------------------------
    # Run directory, resume

    def close(self) -> None:
        """Release the run folder's lock (fit() does it at the end; idempotent)."""
        self._run.release()

    def _load_state(self, step: int, cdir: Path) -> None:
        state = load_checkpoint(cdir, self._model, self.optimizer, self.ema, self.device)
        self.step = int(state["step"])
        self.last_metrics = dict(state.get("last_metrics", {}))
        self.best = state.get("best")
        self._cpu_base = float(state.get("cpu_s", 0.0))
        if self.dist.is_main:
            ckpt.truncate_metrics(self.out_dir / "metrics.jsonl", self.step)

    def _save(self) -> None:
        """Checkpoint the current step (rank 0 writes; everyone waits)."""
        if self.dist.is_main:
            state = {"step": self.step, "last_metrics": self.last_metrics, "best": self.best, "cpu_s": self._cpu_s()}
            ckpt.commit_checkpoint(self.out_dir, self.step,
                                   lambda d: save_checkpoint(d, self._model, self.optimizer, self.ema, self.device, state))
        D.barrier(self.dist)

    # ------------------------------------------------------------------------------------------
    # Loop

    def _loader(self, first: int) -> DataLoader:
        steps = StepBatches(self.dataset, self.cfg.seed, self.cfg.batch_size, self.dist.rank, self.dist.world_size, self.cdf, self.collate_fn)
        workers = self.cfg.num_workers
        return DataLoader(
            steps,
            batch_size=None,
            sampler=range(first, self.cfg.steps + 1),
            num_workers=workers,
            collate_fn=identity,
            pin_memory=self.device.type == "cuda",
            generator=torch.Generator(),  # keeps the global torch RNG untouched
            prefetch_factor=4 if workers else None,
            worker_init_fn=worker_init if workers else None,
        )

    def _seed_model_rng(self, seed: int) -> None:
        """Reseed the generators model code draws from (dropout, masks) for this step only:
        the CPU one and this rank's CUDA one (cheaper than torch.manual_seed, which seeds all GPUs)."""
        torch.default_generator.manual_seed(seed)
        if self.device.type == "cuda":
            torch.cuda.default_generators[self.device.index].manual_seed(seed)

    def _ema_update(self) -> None:
        # Decay warm-up min(d, (1+t)/(10+t)) as in tf.train.ExponentialMovingAverage(num_updates).
        d = min(self.cfg.ema_decay, (1 + self.step) / (10 + self.step))
        with torch.no_grad():
            for k, v in self._model.state_dict().items():
                e = self.ema[k]
                if e.is_floating_point():
                    e.lerp_(v.to(e.dtype), 1.0 - d)  # e = d * e + (1 - d) * v
                else:
                    e.copy_(v)

    def _fail(self, step: int, loss: float, gnorm: float, sources: list[str] | None, indices: list[int]) -> None:
        every = D.all_gather_objects((sources, indices), self.dist)
        all_src = [s for src, _ in every for s in (src or [])]
        all_idx = [i for _, idx in every for i in idx]
        what = "loss" if not math.isfinite(loss) else "gradient"
        where = f"batch sources {_brief(all_src)}" if all_src else f"dataset indices {_brief(all_idx)}"
        latest = ckpt.latest_checkpoint(self.out_dir)
        kept = f"last good checkpoint: step {latest[0]} in {latest[1]}" if latest else "no checkpoint was saved yet"
        raise TrainingError(f"non-finite {what} at step {step} (loss={loss}, grad_norm={gnorm}); {where}; {kept}")

    def fit(self) -> dict:
        """Train until cfg.steps; returns the final logged metrics (train + latest eval)."""
        cfg, main = self.cfg, self.dist.is_main
        self._cpu0 = time.process_time()
        if self.step >= cfg.steps:
            D.cleanup(self.dist)
            self.close()
            return dict(self.last_metrics)
        writer = progress = None
        ok = False
        try:
            if main:
                # lazy: heavy optional, only with TensorBoard logging on
                from torch.utils.tensorboard import SummaryWriter

                writer = SummaryWriter(str(self.out_dir / "tb"), purge_step=self.step + 1 if self.resumed else None)
                if cfg.progress:
                    progress = _Progress(cfg.steps, self.step)
            self._loop(writer, progress)
            ok = True
            if main and self.select is not None and self.eval_fn is not None and self.cfg.eval_every:
                self._write_validation()
        finally:
            if progress is not None:
                progress.close()
            if writer is not None:
                writer.close()
            self.ddp_model = self._model  # release DDP's reducer before its process group goes
            D.cleanup(self.dist, sync=ok)
            self.close()
        return dict(self.last_metrics)

    def _loop(self, writer, progress) -> None:
        cfg = self.cfg
        self._model.train()
        window: dict[str, list] = {}  # key -> [sum, count] since the last log
        # Throughput clock: training time only (data wait included; eval and checkpoints excluded).
        t_mark, train_time, steps_in_window, eval_logs = time.perf_counter(), 0.0, 0, {}
        autocast = torch.autocast(self.device.type, dtype=torch.bfloat16) if self.amp else contextlib.nullcontext()
        for item in self._loader(self.step + 1):
            if isinstance(item, WorkerError):
                item.reraise()
            step, indices, batch = item
            lr = lr_at(step, cfg)
            loss_v, gnorm_v, logs = self._train_step(step, lr, indices, batch, autocast)
            for k, v in {"loss": loss_v, "grad_norm": gnorm_v, **_float_logs(logs)}.items():
                acc = window.setdefault(k, [0.0, 0])
                acc[0] += v.detach() if torch.is_tensor(v) else v
                acc[1] += 1
            steps_in_window += 1
            if progress is not None:
                now = time.perf_counter()
                progress.update(step, loss_v, cfg.batch_size * steps_in_window / max(train_time + now - t_mark, 1e-9))

            if step % cfg.log_every == 0 or step == cfg.steps:
                elapsed = max(train_time + time.perf_counter() - t_mark, 1e-9)
                self._log(step, lr, window, cfg.batch_size * steps_in_window / elapsed, eval_logs, writer)
                window, steps_in_window, train_time, t_mark = {}, 0, 0.0, time.perf_counter()

            do_eval = self.eval_fn is not None and cfg.eval_every and (step % cfg.eval_every == 0 or step == cfg.steps)
            do_save = step == cfg.steps or (cfg.ckpt_every and step % cfg.ckpt_every == 0)
            if do_eval or do_save:
                train_time += time.perf_counter() - t_mark  # pause the throughput clock
                if do_eval:
                    eval_logs = self._evaluate(step, writer)
                    self.last_metrics.update(eval_logs)
                if do_save:
                    self._save()
                t_mark = time.perf_counter()

    def _train_step(self, step: int, lr: float, indices: list[int], batch: Any, autocast) -> tuple[float, float, Any]:
        """One optimizer step on this rank's slice of global batch `step` -> (global mean loss,
        global mean grad norm, the model's logs). A non-finite loss or gradient raises TrainingError."""
        cfg, world = self.cfg, self.dist.world_size
        for g in self.optimizer.param_groups:
            g["lr"] = lr
        self._seed_model_rng(derive_seed(cfg.seed, step, STREAM_MODEL, self.dist.rank))
        sources = batch_sources(batch)
        batch = to_device(batch, self.device, non_blocking=True)
        with autocast:
            out = self.ddp_model(batch)
        if not (isinstance(out, (tuple, list)) and len(out) == 2):
            raise TypeError(f"model(batch) must return (loss, logs), got {type(out).__name__}")
        loss, logs = out
        if not (torch.is_tensor(loss) and loss.numel() == 1):
            raise TypeError(f"model(batch) must return a scalar loss tensor, got {getattr(loss, 'shape', type(loss))}")
        loss.float().backward()
        if cfg.grad_clip > 0:
            gnorm = torch.nn.utils.clip_grad_norm_(self._trainable, cfg.grad_clip)
        else:  # still logged
            grads = [p.grad for p in self._trainable if p.grad is not None]
            gnorm = torch.nn.utils.get_total_norm(grads) if grads else torch.zeros((), device=self.device)
        # One host sync per step: global mean loss, non-finite flag, grad norm (same on all ranks).
        loss_f = loss.detach().float().reshape(())
        vec = torch.stack([loss_f, (~torch.isfinite(loss_f)).float(), gnorm.detach().float().reshape(()).to(loss_f.device)])
        loss_sum, bad, gnorm_sum = D.all_reduce_(vec, self.dist).tolist()
        loss_v, gnorm_v = loss_sum / world, gnorm_sum / world
        if bad > 0 or not math.isfinite(loss_v) or not math.isfinite(gnorm_v):
            self.optimizer.zero_grad(set_to_none=True)
            self._fail(step, loss_v, gnorm_v, sources, indices)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step = step
        if self.ema is not None:
            self._ema_update()
        crash_point("step", step)
        return loss_v, gnorm_v, logs

    def _log(self, step: int, lr: float, window: dict[str, list], samples_per_s: float, eval_logs: dict, writer) -> None:
        """Means over the steps since the last log, merged over ranks -> last_metrics, metrics.jsonl, TensorBoard."""
        local = {k: (float(s), c) for k, (s, c) in window.items()}
        merged: dict[str, list[float]] = {}
        for rank_logs in D.all_gather_objects(local, self.dist):
            for k, (s, c) in rank_logs.items():
                m = merged.setdefault(k, [0.0, 0])
                m[0], m[1] = m[0] + s, m[1] + c
        metrics = {k: s / c for k, (s, c) in merged.items()}
        # loss / grad_norm were already global means on every rank: undo the rank-sum.
        for k in ("loss", "grad_norm"):
            metrics[k] = window[k][0] / window[k][1]
        record = {"step": step, "loss": metrics.pop("loss"), "lr": lr, "grad_norm": metrics.pop("grad_norm"),
                  "samples_per_s": samples_per_s, "cpu_s": self._cpu_s(), **metrics}
        self.last_metrics = {**record, **eval_logs}
        if self.dist.is_main:
            self._write_metrics(record, writer)

    def _cpu_s(self) -> float:
        """CPU seconds this run has cost so far from the start of fit() (steps, evaluations and
        checkpoints; all threads of this process; earlier processes of a resumed run included): the CPU-hours of a figure."""
        return self._cpu_base + time.process_time() - self._cpu0

    def _write_metrics(self, record: dict, writer) -> None:
        with storage_errors(self.out_dir / "metrics.jsonl"), open(self.out_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
        for k, v in record.items():
            if k != "step":
                writer.add_scalar(k if "/" in k else f"train/{k}", v, record["step"])

    def _evaluate(self, step: int, writer) -> dict[str, float]:
        """eval_fn(model, step) on rank 0 under no_grad with model.eval(); others wait."""
        logs: dict[str, float] = {}
        if self.dist.is_main:
            self._model.eval()
            try:
                with torch.no_grad():
                    result = self.eval_fn(self._model, step) or {}
            finally:
                self._model.train()
            if not isinstance(result, dict):
                raise TypeError(f"eval_fn must return a dict, got {type(result).__name__}")
            logs = {f"eval/{k}": float(v) for k, v in _float_logs(result).items()}
            with open(self.out_dir / "metrics.jsonl", "a") as f:
                f.write(json.dumps({"step": step, **logs}) + "\n")
            for k, v in logs.items():
                writer.add_scalar(k, v, step)
            if self.select is not None:
                self._keep_best(step, logs)
        return D.broadcast_object(logs, self.dist)

    def _keep_best(self, step: int, logs: dict[str, float]) -> None:
        """Copy the current weights to RUN/best (a loadable run folder) when the selected metric improved."""
        key = f"eval/{self.select.metric}"
        if key not in logs:
            raise KeyError(f"eval_fn returned no {self.select.metric!r} to select the best checkpoint by; "
                           f"it returned {sorted(k[5:] for k in logs)}")
        value = logs[key]
        if not self.select.better(value, None if self.best is None else self.best["value"]):
            return
        self.best = {"step": step, "value": value}
        best = self.out_dir / BEST_DIR
        best.mkdir(exist_ok=True)
        ckpt.save_weights(self._model, best / ckpt.WEIGHTS)
        atomic_write_json(best / ckpt.CONFIG, read_json(self.out_dir / ckpt.CONFIG))
        atomic_write_json(best / "eval.json", {"step": step, "samples_seen": step * self.cfg.batch_size,
                                               "metric": self.select.metric, "mode": self.select.mode,
                                               "metrics": {k[5:]: v for k, v in logs.items()}})

    def _write_validation(self) -> None:
        """RUN/validation.json: best evaluation and the convergence verdict of the held-out curve; also
        merged into the metrics fit() returns (`converged`, `best_step`, `best/<metric>`)."""
        steps, values = read_curve(self.out_dir / "metrics.jsonl", f"eval/{self.select.metric}")
        verdict = convergence(steps, values, self.select.mode)
        self.last_metrics.update({"converged": verdict["converged"], "best_step": verdict["best_step"],
                                  f"best/{self.select.metric}": verdict["best"]})
        atomic_write_json(self.out_dir / VALIDATION, {
            "metric": self.select.metric, "mode": self.select.mode, "batch_size": self.cfg.batch_size,
            "steps": self.cfg.steps, **verdict,
            "best_samples_seen": None if verdict["best_step"] is None else verdict["best_step"] * self.cfg.batch_size})


class _Progress:
    """rich progress bar: step / total, loss, samples/s, ETA."""

    def __init__(self, total: int, done: int):
        self._p = Progress(
            TextColumn("train"), BarColumn(), MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}"), TextColumn("{task.fields[rate]} samples/s"), TimeRemainingColumn(),
        )
        self._task = self._p.add_task("train", total=total, completed=done, loss="-", rate="-")
        self._p.start()

    def update(self, step: int, loss: float, rate: float) -> None:
        self._p.update(self._task, completed=step, loss=f"{loss:.4g}", rate=f"{rate:,.0f}")

    def close(self) -> None:
        self._p.stop()
