"""Batches as a pure function of (seed, step): the Trainer's data order (see `trajmoe.train.trainer`).

The global batch of step s is drawn i.i.d. (with replacement, no epochs) from a generator seeded
by (seed, s), uniformly or by per-index weights; sample `slot` gets its own rng seeded by
(seed, s, slot). DDP rank r takes slots [r*B/W, (r+1)*B/W) of the same global batch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import default_collate

from trajmoe.io import close_inherited_locks

# Independent random streams derived from (seed, step, ...): never reuse a stream id.
STREAM_BATCH, STREAM_SAMPLE, STREAM_MODEL = 0, 1, 2


def derive_seed(*keys: int) -> int:
    """A 63-bit seed from integer keys via numpy's SeedSequence (well-mixed, collision-resistant)."""
    a, b = np.random.SeedSequence([int(k) for k in keys]).generate_state(2, np.uint32)
    return (int(a) << 31) ^ int(b)


def sample_cdf(weights: Sequence[float], n: int) -> np.ndarray:
    """Validated per-index weights -> float64 CDF for inverse-CDF sampling."""
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (n,):
        raise ValueError(f"sample_weights must have one weight per dataset index ({n}), got shape {w.shape}")
    if not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
        raise ValueError("sample_weights must be finite, >= 0, with a positive sum")
    cdf = np.cumsum(w) / w.sum()
    last = int(np.flatnonzero(w > 0)[-1])
    cdf[last:] = 1.0  # no rounding gap at the top; trailing zero-weight indices stay unreachable
    return cdf


def global_batch_indices(seed: int, step: int, n: int, batch_size: int, cdf: np.ndarray | None = None) -> np.ndarray:
    """Dataset indices of the global batch of `step`: i.i.d. uniform, or weighted via inverse CDF
    (same distribution as torch.multinomial with replacement, O(B log n), no 2^24-category cap)."""
    rng = np.random.default_rng(derive_seed(seed, step, STREAM_BATCH))
    if cdf is None:
        return rng.integers(0, n, size=batch_size)
    return np.searchsorted(cdf, rng.random(batch_size), side="right").clip(max=n - 1)


class StepBatches(torch.utils.data.Dataset):
    """Map-style dataset whose item `step` is this rank's collated slice of the global batch.

    Wrapped in a DataLoader (batch_size=None) so `num_workers` workers build whole steps in
    parallel; the content does not depend on which worker builds it.
    """

    def __init__(self, dataset, seed: int, global_batch: int, rank: int, world: int, cdf, collate_fn):
        self.dataset, self.seed, self.global_batch = dataset, seed, global_batch
        self.n = len(dataset)
        self.lo, self.hi = rank * global_batch // world, (rank + 1) * global_batch // world
        self.cdf, self.collate_fn = cdf, collate_fn or default_collate

    def __len__(self) -> int:  # steps are indexed by the sampler; no natural length
        return 2**62

    def __getitem__(self, step: int) -> tuple[int, list[int], Any] | "WorkerError":
        idx = global_batch_indices(self.seed, step, self.n, self.global_batch, self.cdf)[self.lo : self.hi]
        try:
            samples = [
                self.dataset.get(int(i), np.random.default_rng(derive_seed(self.seed, step, STREAM_SAMPLE, slot)))
                for slot, i in zip(range(self.lo, self.hi), idx)
            ]
        except (ValueError, OSError) as e:
            if torch.utils.data.get_worker_info() is None:
                raise
            # In a DataLoader worker: hand the data error back as a value, so the main process
            # raises it with its own one-line message (not torch's 16-line worker traceback).
            return WorkerError(type(e), str(e))
        return step, [int(i) for i in idx], self.collate_fn(samples)


@dataclasses.dataclass
class WorkerError:
    """A data error (ValueError / OSError) raised by `dataset.get` inside a DataLoader worker."""

    kind: type
    message: str

    def reraise(self):
        """Raise the worker's exception again in the main process (as ValueError if its type cannot be rebuilt)."""
        try:
            err = self.kind(self.message)
        except Exception:  # an exception type that wants other arguments
            err = ValueError(self.message)
        raise err from None


def identity(x):
    """Return `x` (a picklable collate_fn: the dataset already returns collated batches)."""
    return x


def worker_init(_worker_id: int) -> None:
    """DataLoader worker init: close run-folder locks inherited from the trainer process."""
    close_inherited_locks()  # a worker outliving a killed trainer must not hold its run folder


def to_device(x: Any, device: torch.device, non_blocking: bool = False) -> Any:
    """Move tensors (nested in dicts / lists / tuples / dataclasses) to `device`; leave the rest."""
    if torch.is_tensor(x):
        return x.to(device, non_blocking=non_blocking)
    if isinstance(x, dict):
        return {k: to_device(v, device, non_blocking) for k, v in x.items()}
    if isinstance(x, tuple) and hasattr(x, "_fields"):  # namedtuple
        return type(x)(*(to_device(v, device, non_blocking) for v in x))
    if isinstance(x, (list, tuple)):
        return type(x)(to_device(v, device, non_blocking) for v in x)
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        fields = {f.name: to_device(getattr(x, f.name), device, non_blocking) for f in dataclasses.fields(x) if f.init}
        return dataclasses.replace(x, **fields)
    return x


def batch_sources(batch: Any) -> list[str] | None:
    """The batch's sample sources ('path:view:t' strings) if it carries any, else None."""
    src = batch.get("source") if isinstance(batch, dict) else getattr(batch, "source", None)
    if src is None:
        return None
    return [str(s) for s in (src if isinstance(src, (list, tuple)) else [src])]
