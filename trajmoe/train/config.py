"""TrainConfig: the one set of optimisation knobs every trainable model in trajmoe shares.

No torch import here, so CLI modules can build and validate configs before the heavy imports.
"""

from __future__ import annotations

from dataclasses import dataclass

from trajmoe.config import checker, is_int, is_number

AMP_MODES = ("auto", "bf16", "off")
DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class TrainConfig:
    """The Trainer's settings (optimizer, schedule, batch, precision, checkpointing); fields documented inline.

    lr, weight decay and clip follow the Tra-MoE paper (Yang et al.) Tab. 6 (AdamW lr 1e-4, wd 1e-4, clip 10);
    warm-up is counted in steps, then cosine. A bad value raises a one-line ValueError naming the field.
    """
    steps: int = 1000  # optimizer steps (`--set steps=N` caps smoke runs)
    batch_size: int = 64  # global batch (split evenly across DDP ranks)
    lr: float = 1e-4
    weight_decay: float = 1e-4  # AdamW; no decay on biases/norms/embeddings (see trainer.param_groups)
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = 100  # linear warm-up then cosine to min_lr_ratio * lr
    min_lr_ratio: float = 0.0
    grad_clip: float = 10.0  # max grad norm; 0 = off (the norm is still logged)
    ema_decay: float = 0.0  # 0 = off; else EMA weights kept and saved as model_ema.safetensors
    amp: str = "auto"  # "auto" (bf16 autocast on CUDA, off on CPU) | "bf16" | "off"
    device: str = "auto"  # "auto" | "cpu" | "cuda"
    seed: int = 0
    num_workers: int = 0  # DataLoader workers (each builds whole per-step batches)
    log_every: int = 10
    ckpt_every: int = 500  # periodic checkpoint (0 = only final)
    eval_every: int = 0  # 0 = off; calls eval_fn(model, step)
    progress: bool = True  # rich progress bar with loss and samples/s
    # Compatible extensions of the contract:
    ddp_find_unused: bool = True  # DDP find_unused_parameters (an MoE expert may get no token)

    def __post_init__(self) -> None:
        need = checker(self, "train")

        need(is_int(self.steps) and self.steps >= 1, "steps", "an integer >= 1")
        need(is_int(self.batch_size) and self.batch_size >= 1, "batch_size", "an integer >= 1")
        need(is_number(self.lr) and self.lr > 0, "lr", "a number > 0")
        need(is_number(self.weight_decay) and self.weight_decay >= 0, "weight_decay", "a number >= 0")
        betas_ok = (
            isinstance(self.betas, (tuple, list))
            and len(self.betas) == 2
            and all(is_number(b) and 0 <= b < 1 for b in self.betas)
        )
        need(betas_ok, "betas", "two numbers in [0, 1)")
        if isinstance(self.betas, list):  # frozen: keep it hashable
            object.__setattr__(self, "betas", tuple(self.betas))
        need(is_int(self.warmup_steps) and self.warmup_steps >= 0, "warmup_steps", "an integer >= 0")
        need(is_number(self.min_lr_ratio) and 0 <= self.min_lr_ratio <= 1, "min_lr_ratio", "a number in [0, 1]")
        need(is_number(self.grad_clip) and self.grad_clip >= 0, "grad_clip", "a number >= 0 (0 = off)")
        need(is_number(self.ema_decay) and 0 <= self.ema_decay < 1, "ema_decay", "a number in [0, 1) (0 = off)")
        need(self.amp in AMP_MODES, "amp", f"one of {', '.join(AMP_MODES)}")
        need(self.device in DEVICES, "device", f"one of {', '.join(DEVICES)}")
        need(is_int(self.seed) and self.seed >= 0, "seed", "an integer >= 0")
        need(is_int(self.num_workers) and self.num_workers >= 0, "num_workers", "an integer >= 0")
        need(is_int(self.log_every) and self.log_every >= 1, "log_every", "an integer >= 1")
        need(is_int(self.ckpt_every) and self.ckpt_every >= 0, "ckpt_every", "an integer >= 0 (0 = only final)")
        need(is_int(self.eval_every) and self.eval_every >= 0, "eval_every", "an integer >= 0 (0 = off)")
        need(isinstance(self.progress, bool), "progress", "true or false")
        need(isinstance(self.ddp_find_unused, bool), "ddp_find_unused", "true or false")
