"""TrackConfig and the presets of the Tra-MoE track transformer and its dense baselines.

Paper defaults (Tra-MoE paper Sec. 3, Tab. 6; ATM, Wen et al., RSS 2024): dim 384, depth 8, 8 heads,
MoE FFNs at 0-based layers {0, 4, 7} (the paper's layers 1, 5, 8), 4 experts, top-1,
l_z = 1e-4, l_lb = 0; loss 10 * track MSE + 1 * image MSE.
Parameter-matched dense baselines (Tra-MoE paper Tab. 1d): 3 MoE layers x 3 extra experts x 8 d^2
= 72 d^2 extra parameters = 6 dense layers, hence depth 8 -> 14 ("dense-deep"), or a width with
8 * 12 d'^2 = 8 * 12 d^2 + 72 d^2, d' ~ 1.32 d = 508 -> 512 ("dense-wide").
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from ..config import Preset, checker, is_int, pick_preset
from ..moe import MoEConfig
from ..train.config import TrainConfig

# Paper defaults: MoE FFNs at 0-based layers {0, 4, 7}, 4 experts, top-1, l_z = 1e-4, l_lb = 0.
PAPER_MOE = MoEConfig(layers=(0, 4, 7), num_experts=4, top_k=1, gate="softmax", num_domains=8,
                      balance_loss="switch", balance_weight=0.0, z_weight=1e-4)


@dataclass(frozen=True)
class TrackConfig:
    """The track transformer's shape, MoE settings (`moe`, a `MoEConfig`) and loss weights."""

    img_size: int = 128
    patch: int = 16
    dim: int = 384
    depth: int = 8
    heads: int = 8
    mlp_ratio: float = 4.0
    dropout: float = 0.2
    track_len: int = 16
    num_points: int = 32
    track_patch: int = 4
    lang_dim: int = 384
    img_mask_ratio: float = 0.5  # MAE-like patch masking in training (ATM)
    residual_tracks: bool = True  # predict offsets from the query point (ATM predicts absolute)
    query_pos_embed: bool = False  # add the image's 2D sin-cos embedding at each query point to its track tokens
    track_out_scale: float = 1.0  # head output x scale = offset in [0, 1] units (small: finer early Adam steps)
    zero_init_head: bool = True  # track head starts at 0: a fresh model predicts "no point moves"
    moe: MoEConfig = PAPER_MOE  # moe.layers = () is a dense model; num_domains grows to the data's
    # loss weights (the MoE ones are moe.balance_weight / moe.z_weight)
    w_track: float = 10.0
    w_img: float = 1.0
    track_loss: str = "mse"  # "mse" (Tra-MoE / ATM) | "l1"
    w_occluded: float = 0.1  # weight of occluded points in the track loss (as the public Tra-MoE code)

    def __post_init__(self) -> None:
        need = checker(self, "model")
        for k in ("img_size", "patch", "dim", "depth", "heads", "track_len", "num_points", "track_patch", "lang_dim"):
            need(is_int(getattr(self, k)) and getattr(self, k) >= 1, k, "an integer >= 1")
        need(self.img_size % self.patch == 0, "patch", f"a divisor of img_size={self.img_size}")
        need(self.dim % self.heads == 0, "heads", f"a divisor of dim={self.dim}")
        need(self.dim % 4 == 0, "dim", "divisible by 4 (2D sin-cos position embedding)")
        need(self.track_len % self.track_patch == 0, "track_patch", f"a divisor of track_len={self.track_len}")
        need(0.0 <= self.img_mask_ratio < 1.0, "img_mask_ratio", "in [0, 1)")
        need(0.0 <= self.dropout < 1.0, "dropout", "in [0, 1)")
        need(isinstance(self.moe, MoEConfig), "moe", "a mapping of MoE settings")
        self.moe.check_layers(self.depth, "model")
        for k in ("w_track", "w_img", "w_occluded"):
            need(getattr(self, k) >= 0, k, ">= 0")
        need(self.track_loss in ("mse", "l1"), "track_loss", "'mse' or 'l1'")
        need(self.track_out_scale > 0, "track_out_scale", "> 0")
        need(self.residual_tracks or not self.zero_init_head, "zero_init_head",
             "false without residual_tracks (a zero head predicts the query points only with residual tracks)")

    def moe_config(self) -> MoEConfig:
        """The MoE layer config of this model's blocks (width, FFN width and dropout bound)."""
        return self.moe.bind(self.dim, int(self.dim * self.mlp_ratio), self.dropout)

    @property
    def num_tokens(self) -> int:
        """Sequence length L = image patches (img_size / patch)^2 + N * T / track_patch track tokens + 1 text
        token.
        """
        return (self.img_size // self.patch) ** 2 + self.num_points * self.track_len // self.track_patch + 1

    @staticmethod
    def preset(name: str) -> "TrackConfig":
        """The model config of preset `name` (ValueError listing the valid ones)."""
        return pick_preset(PRESETS, name, "track").model

    def replace(self, **kw) -> "TrackConfig":
        """A copy with fields `kw` changed (dataclasses.replace; TypeError on an unknown field)."""
        return dataclasses.replace(self, **kw)


VIEW_LOSSES = ("equal", "no_motion")
QUERY_SAMPLING = ("visible", "moving")


@dataclass(frozen=True)
class TrackDataConfig:
    """How training samples are drawn from the episode folders (trajmoe.track.dataset)."""

    views: tuple[str, ...] = ()  # () = every view in the data
    frame_stride: int = 1
    augment: bool = True
    domain_weights: dict = field(default_factory=dict)  # {domain name: weight}; {} = proportional to data
    max_episodes_per_dir: int = 0  # 0 = all
    # held-out episode folders evaluated every train.eval_every steps (the learning curve, RUN/best);
    # () = no validation. val_samples: how many fixed samples (evenly spaced over the folders' samples).
    val_dirs: tuple[str, ...] = ()
    val_samples: int = 512
    # How the views share the track loss: "equal" (the papers' plain mean over samples) or "no_motion"
    # (each view's samples weighted by mean no-motion MSE / that view's no-motion MSE over the training
    # set, so a view whose points barely move, e.g. a fixed scene camera, weighs as much as one whose
    # points move a lot, e.g. the gripper camera). Not in the Tra-MoE paper; see trajmoe.track.dataset.
    view_loss: str = "equal"
    # Query points: "visible" (uniform among points visible at t) or "moving" (after ATM's motion-aware
    # sampling: 3/4 among visible points that move >= 10 % of the sample's largest displacement in the
    # window, the rest uniform). Held-out evaluation always draws "visible".
    query_sampling: str = "visible"
    # How many of the N query points of a training sample come from the policy's fixed query grid, with the
    # exact grid tracks stored in the episode (`trajmoe data metaworld --oracle-points G`); episodes without
    # them (e.g. action-free videos) keep N drawn points. 0 = off (the papers). The policy asks the track model
    # about that grid, mostly static background in a fixed camera, which the generator's moving query points
    # never show it (docs/results.md, "Root cause ... on the policy's own query points").
    grid_queries: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.val_dirs, (list, str)):  # frozen: keep it hashable; one folder may be a string
            object.__setattr__(self, "val_dirs", (self.val_dirs,) if isinstance(self.val_dirs, str) else tuple(self.val_dirs))
        need = checker(self, "data")
        need(self.view_loss in VIEW_LOSSES, "view_loss", f"one of {', '.join(VIEW_LOSSES)}")
        need(self.query_sampling in QUERY_SAMPLING, "query_sampling", f"one of {', '.join(QUERY_SAMPLING)}")
        need(is_int(self.grid_queries) and self.grid_queries >= 0, "grid_queries", "an integer >= 0")
        need(is_int(self.val_samples) and self.val_samples >= 1, "val_samples", "an integer >= 1")
        need(is_int(self.frame_stride) and self.frame_stride >= 1, "frame_stride", "an integer >= 1")
        need(is_int(self.max_episodes_per_dir) and self.max_episodes_per_dir >= 0, "max_episodes_per_dir", "an integer >= 0")
        need(isinstance(self.domain_weights, dict), "domain_weights", "a mapping name -> weight")


# CPU-friendly training recipe of every track preset; the paper's (Tab. 6): lr 1e-4, wd 1e-4, clip 10,
# batch 2048.
CPU_TRAIN = TrainConfig(steps=2000, batch_size=64, lr=5e-4, weight_decay=1e-4, warmup_steps=100,
                        grad_clip=10.0, log_every=20, ckpt_every=500)

_PAPER = TrackConfig()
_DENSE = dataclasses.replace(PAPER_MOE, layers=())
# Tiny: same token layout (128x128 images, 16x16 patches, 32 points x 16 steps = 193 tokens),
# narrow and shallow for CPU. MoE at {0, depth//2, depth-1} as the public code places them.
# Small-budget recipe (measured in docs/results.md, "Track models that learn"), NOT the paper's:
# no dropout (a few hundred steps underfit; dropout also keeps SDPA off its fused kernel, 1.9x
# slower on CPU), no MAE image masking (p_img 0.5 -> 0: the largest single gain in held-out skill),
# image-reconstruction weight 0.1 (at 1.0 its gradient swamps the track term's).
_TINY = TrackConfig(dim=64, depth=4, heads=4, dropout=0.0, img_mask_ratio=0.0, w_img=0.1,
                    moe=dataclasses.replace(PAPER_MOE, layers=(0, 2, 3)))

# Every preset weighs the views' track losses by their no-motion error (data.view_loss="no_motion"), a
# departure from the papers' plain mean: with the plain mean the gripper camera's ~16x larger motion made
# the loss mostly gripper-camera error and the fixed scene camera went unlearned (docs/results.md, "The
# scene camera"). `--set data.view_loss=equal` restores the papers' loss.
_DATA = TrackDataConfig(view_loss="no_motion")
PRESETS: dict[str, Preset] = {name: Preset(cfg, CPU_TRAIN, _DATA) for name, cfg in {
    "tramoe": _PAPER,
    "dense": _PAPER.replace(moe=_DENSE),
    "dense-wide": _PAPER.replace(moe=_DENSE, dim=512),
    "dense-deep": _PAPER.replace(moe=_DENSE, depth=14),
    "tiny-tramoe": _TINY,
    "tiny-dense": _TINY.replace(moe=_DENSE),
    # 4 * 12 d'^2 = 4 * 12 * 64^2 + 72 * 64^2 -> d' ~ 101; 96 matches the total best (non-FFN parts scale too)
    "tiny-dense-wide": _TINY.replace(moe=_DENSE, dim=96),
    # 72 d^2 extra = 6 extra dense layers
    "tiny-dense-deep": _TINY.replace(moe=_DENSE, depth=10),
}.items()}
