"""Track-model training throughput: forward + backward + grad clip + AdamW, no data loading.

The step is the Trainer's step (trajmoe/train/trainer.py): bf16 autocast on CUDA, AdamW with the
Trainer's parameter groups (fused on CUDA), clip at 10 (Tra-MoE Tab. 6), model in train mode
(dropout, MAE image masking). Inputs are built here with the real shapes (128x128 RGB in [0, 1],
32 query points x 16 steps of smooth tracks in [0, 1], a 384-d unit task embedding, domain ids):
it is a speed benchmark, so their values do not matter, their shapes and dtypes do.

Model FLOPs (MFU numerator) are counted analytically for the math a sample needs (PaLM
appendix B convention: a multiply-add is 2 FLOPs, training = 3x forward, attention's QK^T and
AV included, only the k routed experts a token uses counted for MoE layers, router included).
Legend: B batch, T track length, N query points, H/W image.
"""

from __future__ import annotations

import contextlib
import resource
import statistics
import time

import torch

from ..config import replace
from ..track import TrackConfig, TrackModel, count_params
from ..train.trainer import param_groups
from .timing import device_name, resolve_device

AMP_CHOICES = ("auto", "bf16", "off")
GRAD_CLIP = 10.0  # Tra-MoE Tab. 6 (and TrainConfig's default)

# Dense tensor-core peaks (TFLOP/s, no sparsity) from the vendor data sheets, by name substring.
# (bf16, tf32). First match wins, so the more specific names come first.
GPU_PEAKS = [
    ("H100 PCIe", 756.0, 378.0),
    ("H100", 989.0, 494.0),  # SXM / HBM3
    ("H200", 989.0, 494.0),
    ("GH200", 989.0, 494.0),
    ("A100", 312.0, 156.0),
    ("L40S", 362.0, 183.0),
    ("L4", 121.0, 60.0),
]


def track_forward_flops(cfg: TrackConfig) -> dict[str, float]:
    """Forward FLOPs of one sample (2 per multiply-add), by part."""
    D, L, grid = cfg.dim, cfg.num_tokens, cfg.img_size // cfg.patch
    P, n_trk = grid * grid, cfg.num_points * cfg.track_len // cfg.track_patch
    H = int(cfg.dim * cfg.mlp_ratio)
    patch_in = 3 * cfg.patch * cfg.patch
    embed = 2 * P * patch_in * D + 2 * n_trk * 2 * cfg.track_patch * D + 2 * cfg.lang_dim * D
    heads = 2 * n_trk * D * 2 * cfg.track_patch + 2 * P * D * patch_in
    attn_proj = cfg.depth * 2 * L * 4 * D * D  # q, kv (2D), out
    attn_scores = cfg.depth * 2 * 2 * L * L * D  # QK^T and AV over all heads
    n_moe = len(cfg.moe.layers)
    ffn = (cfg.depth - n_moe) * 2 * L * 2 * D * H + n_moe * cfg.moe.top_k * 2 * L * 2 * D * H
    router = n_moe * 2 * L * D * cfg.moe.num_experts
    parts = {"embed_heads": embed + heads, "attn_proj": attn_proj, "attn_scores": attn_scores,
             "ffn": ffn, "router": router}
    parts["total"] = float(sum(parts.values()))
    return parts


def track_train_flops(cfg: TrackConfig) -> float:
    """Training FLOPs per sample: forward + backward (2x forward)."""
    return 3.0 * track_forward_flops(cfg)["total"]


def assumed_peak_tflops(dev: torch.device, bf16: bool, threads: int) -> tuple[float | None, str]:
    """Assumed peak for MFU and where it comes from."""
    if dev.type == "cuda":
        name = torch.cuda.get_device_name(dev)
        for key, p_bf16, p_tf32 in GPU_PEAKS:
            if key in name:
                return (p_bf16, f"{key} bf16 dense data sheet") if bf16 else (p_tf32, f"{key} tf32 dense data sheet")
        return None, f"unknown GPU {name!r}: pass --peak-tflops"
    flags, mhz = "", 0.0
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as f:
            for ln in f:
                if ln.startswith("flags") and not flags:
                    flags = ln
                elif ln.startswith("cpu MHz") and not mhz:
                    mhz = float(ln.split(":", 1)[1])
    if not mhz:
        return None, "CPU clock unknown: pass --peak-tflops"
    # fp32 FMA: 2 FMA pipes x (16 lanes AVX-512 | 8 lanes AVX2) x 2 FLOPs per cycle per core.
    lanes = 16 if " avx512f" in flags else 8
    return threads * 2 * lanes * 2 * mhz * 1e6 / 1e12, f"{threads} cores x {mhz:.0f} MHz x {4 * lanes} fp32 FLOP/cycle"


def synthetic_batch(cfg: TrackConfig, batch: int, device: torch.device, dtype: torch.dtype, seed: int = 0) -> dict:
    """Real-shaped inputs: image (B,3,H,W) in [0,1], smooth tracks (B,T,N,2) in [0,1], task_emb, domain."""
    g = torch.Generator().manual_seed(seed)
    img = torch.rand(batch, 3, cfg.img_size, cfg.img_size, generator=g)
    start = torch.rand(batch, 1, cfg.num_points, 2, generator=g)
    steps = torch.randn(batch, cfg.track_len - 1, cfg.num_points, 2, generator=g) * 0.01
    tracks = torch.cat([start, start + steps.cumsum(1)], dim=1).clamp(0, 1)
    emb = torch.nn.functional.normalize(torch.randn(batch, cfg.lang_dim, generator=g), dim=-1)
    domain = torch.randint(0, max(cfg.moe.num_domains, 1), (batch,), generator=g)
    out = {"image": img.to(dtype), "tracks": tracks.to(dtype), "task_emb": emb.to(dtype), "domain": domain}
    return {k: v.to(device) for k, v in out.items()}


def bench_train(preset: str = "tramoe", batch: int = 512, device: str = "auto", *, steps: int = 10, warmup: int = 3,
                amp: str = "auto", bf16_weights: bool = False, compile: bool = False,
                peak_tflops: float | None = None, threads: int | None = None,
                overrides: dict | None = None, seed: int = 0) -> dict:
    """Time `steps` training steps after `warmup` untimed ones; one JSON-able dict of figures.

    Args:
        preset: TrackConfig preset name; `overrides` ({dotted key: value}) are applied on top.
        batch: samples per step. device: "auto", "cpu", "cuda" or "cuda:N".
        steps, warmup: timed and untimed steps. amp: "auto" (bf16 autocast on CUDA), "bf16" or "off".
        bf16_weights: cast the model to bf16 (router kept fp32). compile: wrap the model in torch.compile.
        peak_tflops: MFU denominator (TFLOP/s; None = data sheet / CPU estimate). threads: torch CPU threads.

    Returns:
        {"step_ms" (median), "step_min_ms", "samples_per_s", "gflop_per_sample", "achieved_tflops",
        "peak_tflops", "mfu", "peak_mem_mb", parameter counts, run settings, ...}.

    Raises:
        ValueError: batch or steps < 1, warmup < 0, amp unknown, peak_tflops <= 0, an unknown preset
            or override key.
    """
    _check_args(batch, steps, warmup, amp, peak_tflops)
    cfg = replace(TrackConfig.preset(preset), overrides or {}, "TrackConfig")
    dev = resolve_device(device)
    if threads:
        torch.set_num_threads(threads)
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # as the Trainer does
        torch.backends.cudnn.allow_tf32 = True
    use_amp = amp == "bf16" or (amp == "auto" and dev.type == "cuda")
    torch.manual_seed(seed)

    model = TrackModel(cfg).to(dev)
    params = count_params(model)
    step = _make_step(model, cfg, batch, dev, use_amp, bf16_weights, compile, seed)
    times = _time_steps(step, dev, steps, warmup)

    step_s = statistics.median(times)
    flops = track_train_flops(cfg)
    achieved = flops * batch / step_s / 1e12
    bf16 = use_amp or bf16_weights
    if peak_tflops is not None:
        peak, source = peak_tflops, "--peak-tflops"
    else:
        peak, source = assumed_peak_tflops(dev, bf16, torch.get_num_threads())
    mem_mb, mem_kind = _peak_memory(dev)
    precision = "bf16 weights" if bf16_weights else ("bf16 autocast" if use_amp else "fp32")
    if bf16_weights and use_amp:
        precision = "bf16 weights + autocast"
    return {
        "device": device_name(dev), "torch": torch.__version__, "threads": torch.get_num_threads(),
        "preset": preset, "overrides": overrides or {}, "batch": batch, "precision": precision, "compile": compile,
        "steps": steps, "warmup": warmup, "tokens_per_sample": cfg.num_tokens,
        "params_total": params.total, "params_active": params.active_per_token,
        "step_ms": step_s * 1e3, "step_min_ms": min(times) * 1e3,
        "samples_per_s": batch / step_s,
        "gflop_per_sample": flops / 1e9, "achieved_tflops": achieved,
        "peak_tflops": peak, "peak_source": source, "mfu": achieved / peak if peak else None,
        "peak_mem_mb": mem_mb, "peak_mem_kind": mem_kind,
    }


def _check_args(batch: int, steps: int, warmup: int, amp: str, peak_tflops: float | None) -> None:
    """One-line ValueError for a bad benchmark argument (named as its CLI flag)."""
    for name, v, lo in (("batch", batch, 1), ("steps", steps, 1), ("warmup", warmup, 0)):
        if v < lo:
            raise ValueError(f"--{name} must be >= {lo}, got {v}")
    if amp not in AMP_CHOICES:
        raise ValueError(f"--amp must be one of {AMP_CHOICES}, got {amp!r}")
    if peak_tflops is not None and peak_tflops <= 0:
        raise ValueError(f"--peak-tflops must be > 0, got {peak_tflops}")


def _make_step(model: TrackModel, cfg: TrackConfig, batch: int, dev: torch.device, use_amp: bool,
               bf16_weights: bool, compile: bool, seed: int):
    """A closure running one Trainer-like step (forward, backward, clip, AdamW) on a fixed synthetic batch."""
    if bf16_weights:
        model = model.to(torch.bfloat16)
        for _, moe in model.moe_layers():
            moe.router.float()  # router math stays fp32 (ST-MoE); it casts its input itself
    model.train()
    fwd = torch.compile(model) if compile else model
    opt = torch.optim.AdamW(param_groups(model, 1e-4), lr=1e-4, betas=(0.9, 0.999), fused=dev.type == "cuda")
    trainable = [p for grp in opt.param_groups for p in grp["params"]]
    data = synthetic_batch(cfg, batch, dev, torch.bfloat16 if bf16_weights else torch.float32, seed)
    autocast = torch.autocast(dev.type, dtype=torch.bfloat16) if use_amp else contextlib.nullcontext()

    def step() -> None:
        with autocast:
            loss, _ = fwd(data)
        loss.float().backward()
        torch.nn.utils.clip_grad_norm_(trainable, GRAD_CLIP)
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def _time_steps(step, dev: torch.device, steps: int, warmup: int) -> list[float]:
    """Wall seconds of each of `steps` calls of `step` after `warmup` untimed ones (device-synchronised)."""
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        step()
    sync()
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - t0)
    return times


def _peak_memory(dev: torch.device) -> tuple[float, str]:
    """(peak memory in MiB, what was measured): CUDA max allocated, else the process's max RSS."""
    if dev.type == "cuda":
        return torch.cuda.max_memory_allocated(dev) / 2**20, "cuda max_memory_allocated"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "process max RSS"
