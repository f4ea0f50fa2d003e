"""Wall-clock timing helpers shared by the benchmarks (CUDA-synchronised when on GPU)."""

from __future__ import annotations

import statistics
import time
from typing import Callable

import torch


def time_ms(fn: Callable[[], object], device: torch.device, warmup: int = 3, repeats: int = 10) -> dict[str, float]:
    """Median and min milliseconds per call of `fn` after `warmup` untimed calls."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - t0) * 1e3)
    return {"median_ms": statistics.median(times), "min_ms": min(times)}


def time_interleaved(fns: dict[str, Callable[[], object]], device: torch.device, warmup: int = 2,
                     repeats: int = 10) -> dict[str, dict[str, list[float] | float]]:
    """Time several functions round-robin (A B C A B C ...), so load that drifts during the run
    (a shared machine) hits all of them alike. Returns per name: median_ms, min_ms, times_ms."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    sync()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            sync()
            times[name].append((time.perf_counter() - t0) * 1e3)
    return {n: {"median_ms": statistics.median(t), "min_ms": min(t), "times_ms": t} for n, t in times.items()}


def paired_ratio(ref_ms: list[float], ms: list[float]) -> float:
    """Median over rounds of ref / candidate, each round timed back to back (robust to drift)."""
    return statistics.median(r / m for r, m in zip(ref_ms, ms))


def resolve_device(name: str) -> torch.device:
    """'auto' (CUDA if available), 'cpu' or 'cuda' -> torch.device.

    Raises:
        ValueError: another name, or 'cuda' without a CUDA device.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda requested but no CUDA device is available")
    if name not in ("cpu", "cuda"):
        raise ValueError(f"--device must be cpu, cuda or auto, got {name!r}")
    return torch.device(name)


def device_name(dev: torch.device) -> str:
    """The CUDA device's name, or 'cpu: <model name>' (threads are reported separately)."""
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    try:
        with open("/proc/cpuinfo") as f:
            model = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "")
    except OSError:
        model = ""
    return f"cpu: {model}" if model else "cpu"
