"""PolicyConfig: the ATM-style trajectory-guided BC policy and its conditioning mode.

No torch import here so the CLI can validate configs before the heavy imports.

Conditioning modes (Tra-MoE paper Sec. 3.2, Tab. 3; ATM policy):
  none           images + language + proprioception (plain BC, the floor)
  atm            + one token per predicted track in the spatial transformer + late fusion of the
                 flattened raw predicted tracks with the action token (ATM, Wen et al. 2023)
  drawn_mask     atm + a 4th image channel with the tracks drawn in: first half of each track
                 128/255, second half 255/255 (RT-Trajectory style, Tab. 3 "DM")
  adaptive_mask  atm + the 4th channel where each track point carries a learnable value indexed
                 by its timestep (track_len of them) (Tab. 3 "AM")
  oracle         the atm pathway fed the EXACT future tracks of the query grid (trajmoe.envs.oracle:
                 stored by the generator with --oracle-points, computed in closed loop by a
                 scripted-expert lookahead on a copy of the simulator); no track model. The ceiling
                 of what tracks can give the policy, and a test of its track pathway on its own.

Data-derived fields (views, img_size, action_dim, proprio_dim, lang_dim) are filled from the
episode files by `trajmoe train policy`; an explicit value that disagrees with the data is an error.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..config import Preset, checker, pick_preset
from ..train.config import TrainConfig

CONDITIONINGS = ("none", "atm", "drawn_mask", "adaptive_mask", "oracle")
LATE_FUSIONS = ("raw", "motion", "none")
TRACK_TOKENS = ("per_track", "none")
LATE_FUSION_INITS = ("concat", "split")
LATE_FUSION_MOTION_SCALE = 10.0  # displacements are fractions of the image: 0.1 (12.8 px at 128 px) -> 1


@dataclass(frozen=True)
class PolicyConfig:
    """Model config of the trajectory-guided BC policy (ATM, Wen et al.; Tra-MoE paper, Yang et al., Sec. 3.2).

    Fields are documented inline; `conditioning` is one of CONDITIONINGS (module docstring). A bad
    value raises a one-line ValueError naming the field.
    """
    conditioning: str = "adaptive_mask"
    # Data-derived (checked against the episode files at training time).
    views: tuple[str, ...] = ("agentview", "eye_in_hand")  # ATM / trajmoe.envs.metaworld view names
    img_size: int = 128  # square H = W of the policy's input frames
    action_dim: int = 4  # MetaWorld: dx, dy, dz, gripper
    proprio_dim: int = 4  # ee_pos (3) + gripper (1)
    lang_dim: int = 384  # task embedding (all-MiniLM-L6-v2)
    # Tracks (must match the frozen track model: track_len).
    num_points: int = 32  # fixed query grid per view (ATM: 32 points, grid sampling, Tab. 7)
    track_len: int = 16
    # Image encoder (ATM PatchEncoder): 7x7 s2 conv + BN + ReLU, then patch x patch conv stride patch.
    conv_channels: int = 64
    patch: int = 8
    # Average-pool the frames by this factor before the image encoder (and rasterise the mask at
    # that resolution); the frozen track model still sees full-resolution frames. 1 = ATM.
    downsample: int = 1
    # Transformers.
    dim: int = 128
    spatial_depth: int = 7
    spatial_heads: int = 8
    temporal_depth: int = 4
    temporal_heads: int = 8
    mlp_ratio: float = 2.0
    dropout: float = 0.1
    frame_stack: int = 10  # frames in the temporal window (ATM: 10)
    head_hidden: int = 256  # MLP action head width (2 hidden layers)
    # Trajectory mask (drawn_mask / adaptive_mask).
    mask_interp: int = 3  # extra points drawn between consecutive track points (0 = points only)
    # adaptive_mask: values = drawn + mask_value_scale * delta (delta learnable, starts at 0), i.e. the
    # values learn mask_value_scale times faster than the network's weights under Adam (whose step is
    # ~lr whatever the gradient's size). At 1 (the plain parameter) the values moved <= 0.011 in
    # 150-200 steps: Adam bounds the total move by the summed lr (~0.04 at cpu scale) and their
    # gradient's sign is noisy (measured in docs/results.md).
    mask_value_scale: float = 50.0
    # oracle: the tracks given are q + a (oracle - q), q = each track's query point repeated (no motion):
    # 1 = exact, 0 = "no point moves". Degrades the tracks in a known way (skill ADE = a, skill MSE =
    # 1 - (1 - a)^2) in training and evaluation alike: success against track error, the Tra-MoE paper's Fig. 5.
    oracle_blend: float = 1.0
    # How the head sees the tracks beside the action token (track modes): "raw" = ATM's late fusion of the
    # flattened absolute tracks (V x T x N x 2 values, centred to [-1, 1]); "motion" = the same values as
    # displacements from each track's query point x LATE_FUSION_MOTION_SCALE (a static point adds exactly 0);
    # "none" = no late fusion (tracks reach the policy through their tokens / the mask channel only).
    # "motion" and "none" are our measured alternatives (docs/results.md, issue 23); what made the pathway
    # cost plain BC was the head's initialisation (late_fusion_init below).
    late_fusion: str = "raw"
    # Track tokens in the spatial transformer (track modes): "per_track" = ATM's one token per track and view
    # (V x N tokens); "none" = no track tokens (tracks reach the policy through late fusion / the mask channel
    # only). "none" with late_fusion="none" and conditioning="oracle" is plain BC's network fed the oracle
    # data path: the control that isolates what the track tokens cost (docs/results.md, issue 23).
    track_tokens: str = "per_track"
    # Initialisation of the head's first layer under late fusion: "concat" = ATM's (PyTorch's default for one
    # Linear over [action token, tracks]: weights ~ U(+-1/sqrt(D + V*T*N*2)), so the 1,024 track inputs shrink
    # the action token's weights ~4x and, with raw tracks, add a random per-sample offset); "split" = the action
    # token's columns initialised as a D-input layer's and the tracks' columns at zero (the head starts as plain
    # BC's and learns what the tracks add). Measured in docs/results.md (issue 23).
    late_fusion_init: str = "concat"

    def __post_init__(self) -> None:
        need = checker(self, "policy")

        def pos_int(v: object) -> bool:
            return isinstance(v, int) and not isinstance(v, bool) and v >= 1

        need(self.conditioning in CONDITIONINGS, "conditioning", f"one of {', '.join(CONDITIONINGS)}")
        if isinstance(self.views, list):
            object.__setattr__(self, "views", tuple(self.views))
        need(isinstance(self.views, tuple) and len(self.views) >= 1 and all(isinstance(v, str) and v for v in self.views)
             and len(set(self.views)) == len(self.views), "views", "a non-empty list of distinct camera names")
        for key in ("img_size", "action_dim", "proprio_dim", "lang_dim", "num_points", "track_len", "conv_channels",
                    "patch", "downsample", "dim", "spatial_depth", "spatial_heads", "temporal_depth", "temporal_heads",
                    "frame_stack", "head_hidden"):
            need(pos_int(getattr(self, key)), key, "an integer >= 1")
        need(self.img_size % (2 * self.patch * self.downsample) == 0, "img_size",
             f"divisible by 2 * patch * downsample = {2 * self.patch * self.downsample}")
        need(self.dim % self.spatial_heads == 0, "spatial_heads", f"a divisor of dim={self.dim}")
        need(self.dim % self.temporal_heads == 0, "temporal_heads", f"a divisor of dim={self.dim}")
        need(self.dim % 4 == 0, "dim", "divisible by 4 (2D sin-cos position embedding)")
        need(isinstance(self.mlp_ratio, (int, float)) and not isinstance(self.mlp_ratio, bool)
             and math.isfinite(self.mlp_ratio) and self.mlp_ratio > 0, "mlp_ratio", "a number > 0")
        need(isinstance(self.dropout, (int, float)) and not isinstance(self.dropout, bool)
             and 0 <= self.dropout < 1, "dropout", "a number in [0, 1)")
        need(isinstance(self.mask_value_scale, (int, float)) and not isinstance(self.mask_value_scale, bool)
             and math.isfinite(self.mask_value_scale) and self.mask_value_scale > 0, "mask_value_scale", "a number > 0")
        need(isinstance(self.oracle_blend, (int, float)) and not isinstance(self.oracle_blend, bool)
             and 0 <= self.oracle_blend <= 1, "oracle_blend", "a number in [0, 1]")
        need(self.late_fusion in LATE_FUSIONS, "late_fusion", f"one of {', '.join(LATE_FUSIONS)}")
        need(self.track_tokens in TRACK_TOKENS, "track_tokens", f"one of {', '.join(TRACK_TOKENS)}")
        need(self.late_fusion_init in LATE_FUSION_INITS, "late_fusion_init", f"one of {', '.join(LATE_FUSION_INITS)}")
        need(self.oracle_blend == 1 or self.conditioning == "oracle", "oracle_blend",
             "1 unless conditioning is 'oracle' (it blends the simulator's exact tracks)")
        need(isinstance(self.mask_interp, int) and not isinstance(self.mask_interp, bool) and 0 <= self.mask_interp <= 16,
             "mask_interp", "an integer in [0, 16]")

    # Derived properties -------------------------------------------------------------------

    @property
    def uses_tracks(self) -> bool:
        """True unless conditioning is 'none' (the policy takes tracks)."""
        return self.conditioning != "none"

    @property
    def uses_track_tokens(self) -> bool:
        """True when the spatial transformer gets one token per track (track modes, track_tokens='per_track')."""
        return self.uses_tracks and self.track_tokens == "per_track"

    @property
    def uses_track_model(self) -> bool:
        """Tracks come from a frozen track model (not from the simulator, as for `oracle`)."""
        return self.conditioning in ("atm", "drawn_mask", "adaptive_mask")

    @property
    def uses_mask(self) -> bool:
        """True for the drawn / adaptive trajectory-mask conditionings (4th image channel)."""
        return self.conditioning in ("drawn_mask", "adaptive_mask")

    @property
    def in_chans(self) -> int:
        """Image-encoder input channels: 4 (RGB + trajectory mask) with a mask, else 3."""
        return 4 if self.uses_mask else 3

    @property
    def encoder_size(self) -> int:
        """Side of the frames the image encoder sees (img_size / downsample)."""
        return self.img_size // self.downsample

    @staticmethod
    def preset(name: str) -> "PolicyConfig":
        """The model config of preset `name` (ValueError listing the valid ones)."""
        return pick_preset(PRESETS, name, "policy").model


@dataclass(frozen=True)
class PolicyDataConfig:
    """How training samples are drawn from the episode files (trajmoe.policy.dataset)."""

    aug_shift: int = 4  # RandomShift pad in pixels at 128 px (DrQ / ATM); scaled to the image size; 0 = off
    color_jitter: float = 0.2  # brightness / contrast / saturation factors in [1 - s, 1 + s]; 0 = off
    # Predict every frame's tracks once with the frozen track model and reuse them (exact for
    # un-augmented frames; under RandomShift the cached tracks are shifted with the image).
    # False: the policy predicts them in every forward from the augmented frames (slow on CPU).
    track_cache: bool = True
    max_episodes_per_task: int = 0  # 0 = all episodes in the directory
    # held-out episode folder evaluated every train.eval_every steps (held-out action MSE: the learning
    # curve, RUN/best, RUN/validation.json); "" = no validation. val_samples: fixed evenly spaced samples.
    val_dir: str = ""
    val_samples: int = 512

    def __post_init__(self) -> None:
        need = checker(self, "data")
        need(isinstance(self.val_dir, str), "val_dir", "a folder path (a string)")
        need(isinstance(self.val_samples, int) and not isinstance(self.val_samples, bool) and self.val_samples >= 1,
             "val_samples", "an integer >= 1")

        need(isinstance(self.aug_shift, int) and not isinstance(self.aug_shift, bool) and 0 <= self.aug_shift <= 32,
             "aug_shift", "an integer in [0, 32]")
        need(isinstance(self.color_jitter, (int, float)) and not isinstance(self.color_jitter, bool)
             and 0 <= self.color_jitter < 1, "color_jitter", "a number in [0, 1)")
        need(isinstance(self.track_cache, bool), "track_cache", "true or false")
        need(isinstance(self.max_episodes_per_task, int) and not isinstance(self.max_episodes_per_task, bool)
             and self.max_episodes_per_task >= 0, "max_episodes_per_task", "an integer >= 0 (0 = all)")



# `default` follows ATM's LIBERO policy (dim 128, spatial 7 x 8 heads, temporal 4, frame stack 10,
# 32 grid points, dropout 0.1, Tab. 7); `tiny` is the CPU/test model; `cpu` the budget used for the
# CPU figures (small enough to train a few thousand steps on 2 cores). Training recipe: paper Tab. 7
# (AdamW lr 5e-4, wd 1e-4, cosine, no warm-up, clip 100, batch 384); `cpu` / `tiny` shrink batch and steps.
_RECIPE = dict(lr=5e-4, weight_decay=1e-4, warmup_steps=0, grad_clip=100.0, min_lr_ratio=0.0)
PRESETS: dict[str, Preset] = {
    "default": Preset(PolicyConfig(), TrainConfig(steps=20000, batch_size=384, log_every=50, ckpt_every=2000, **_RECIPE),
                      PolicyDataConfig()),
    "cpu": Preset(PolicyConfig(dim=64, spatial_depth=2, spatial_heads=4, temporal_depth=2, temporal_heads=4,
                               frame_stack=4, num_points=16, conv_channels=16, patch=8, downsample=2,
                               head_hidden=256, dropout=0.1),
                  TrainConfig(steps=2000, batch_size=32, log_every=50, ckpt_every=500, **_RECIPE), PolicyDataConfig()),
    "tiny": Preset(PolicyConfig(dim=32, spatial_depth=1, spatial_heads=2, temporal_depth=1, temporal_heads=2,
                                frame_stack=3, num_points=8, conv_channels=8, patch=16, head_hidden=32, dropout=0.0),
                   TrainConfig(steps=100, batch_size=8, log_every=10, ckpt_every=0, **_RECIPE), PolicyDataConfig()),
}
