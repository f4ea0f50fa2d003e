"""Configs of the driving planner (model, data/vocabulary, GRPO) and its presets (model config +
training recipe + data options, `trajmoe.config.Preset`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from trajmoe.config import Preset, checker, is_int, is_number
from trajmoe.drive.metrics import TARGET_METRICS
from trajmoe.moe.config import MoEConfig
from trajmoe.train.config import TrainConfig

PLANNER_MOE = MoEConfig(layers=(0, 1, 2), num_experts=4, top_k=2, num_shared_experts=1, gate="renorm",
                        balance_loss="cv2", balance_weight=0.01, z_weight=0.0)


@dataclass(frozen=True)
class SelectionWeights:
    """GTRS selection: argmax_v of  imi * log softmax(imi) + sum_m w_m log s(m)
    + combo * log(ep * s(EP) + ttc * s(TTC) + lk * s(LK) + hc * s(HC))   (GTRS and the TrajMoE paper Sec. III)
    - consistency * c(v, previous plan): our addition for NAVSIM v2's EC (two-frame extended comfort), where
    c compares the entry's acceleration and yaw-rate profile with the plan this planner chose 0.5 s earlier
    (`trajmoe.drive.model.consistency_cost`); 0 = GTRS, and no term without a previous plan."""

    imi: float = 0.03
    NC: float = 0.1
    DAC: float = 0.9
    DDC: float = 0.2
    TLC: float = 0.1
    combo: float = 6.0
    EP: float = 7.0
    TTC: float = 7.0
    LK: float = 3.0
    HC: float = 0.0
    consistency: float = 0.0

    def __post_init__(self):
        need = checker(self, "model.selection")
        for k, v in self.__dict__.items():
            need(is_number(v) and v >= 0, k, "a number >= 0")
        need(self.EP + self.TTC + self.LK + self.HC > 0 or self.combo <= 0, "combo",
             "0 unless one of EP, TTC, LK, HC is > 0")


@dataclass(frozen=True)
class DriveModelConfig:
    """Planner architecture and losses (GTRS sizes in the `moe` / `dense` presets); MoE knobs in `moe`
    (`trajmoe.moe.config.MoEConfig`, MoE iff `moe.layers` is non-empty). ValueError names a bad key."""
    dim: int = 256
    num_heads: int = 8
    encoder_layers: int = 2  # self-attention over scene tokens (ego, route, agents, lanes)
    decoder_layers: int = 3  # GTRS: 3 layers, d 256, 8 heads, FFN 1024
    mlp_ratio: float = 4.0
    dropout: float = 0.0
    vocab_size: int = 1024
    vocab_hidden: int = 1024  # GTRS vocabulary embedding MLP (flattened poses -> 1024 -> D)
    # Decoder layers whose FFN is the sparse MoE (moe.layers; () = dense): top-2 of 4 experts + 1 shared,
    # weights renormalised over the chosen 2 (TrajMoE paper eqs. 1-2), CV^2 balance loss (eq. 4).
    # moe.num_domains is set from the training scenes' domain ids.
    moe: MoEConfig = PLANNER_MOE
    imi_sigma: float = 0.5  # GTRS soft imitation target on 8 poses at 0.5 s
    imi_weight: float = 1.0
    score_weight: float = 1.0
    gaussian_heads: bool = False  # GRPO: each scoring head also predicts a log std (TrajMoE paper eq. 5)
    # Each vocabulary query also sees the map at its own 8 poses (distance to the nearest lane
    # centreline point and to the route polyline): our addition, not in the TrajMoE / GTRS papers,
    # whose queries see the map only through attention (see trajmoe.drive.model.vocab_map_features).
    vocab_map_features: bool = False
    # Each vocabulary query also sees the agents at its own 8 poses (gap to the nearest agent extrapolated
    # at constant velocity): our addition (trajmoe.drive.dataset.vocab_agent_features).
    vocab_agent_features: bool = False
    # Each vocabulary query also sees the drivable area under its ego box at its own 8 poses (the smallest
    # drivable share at the box corners): our addition (trajmoe.drive.dataset.vocab_drivable_features).
    vocab_drivable_features: bool = False
    selection: SelectionWeights = field(default_factory=SelectionWeights)

    @property
    def query_features(self) -> bool:
        """True when the vocabulary queries read per-pose scene features (precomputed per training scene)."""
        return self.vocab_map_features or self.vocab_agent_features or self.vocab_drivable_features

    def __post_init__(self):
        need = checker(self, "model")

        need(isinstance(self.dim, int) and self.dim >= 8, "dim", "an integer >= 8")
        need(isinstance(self.num_heads, int) and self.num_heads >= 1 and self.dim % self.num_heads == 0,
             "num_heads", f"an integer >= 1 dividing dim={self.dim}")
        need(isinstance(self.encoder_layers, int) and self.encoder_layers >= 0, "encoder_layers", "an integer >= 0")
        need(isinstance(self.decoder_layers, int) and self.decoder_layers >= 1, "decoder_layers", "an integer >= 1")
        need(isinstance(self.vocab_size, int) and 2 <= self.vocab_size <= 8192, "vocab_size", "an integer in [2, 8192]")
        need(self.mlp_ratio > 0, "mlp_ratio", "> 0")
        need(0 <= self.dropout < 1, "dropout", "in [0, 1)")
        need(isinstance(self.moe, MoEConfig), "moe", "a mapping of MoE settings")
        self.moe.check_layers(self.decoder_layers, "model")
        need(self.imi_sigma > 0, "imi_sigma", "> 0")


@dataclass(frozen=True)
class DriveDataConfig:
    """Vocabulary construction (k-means samples, iterations, seed) and target precomputation options."""
    vocab_use_agents: bool = True  # cluster agents' futures too (see trajmoe.drive.vocab)
    vocab_iters: int = 30
    vocab_seed: int = 0  # k-means seed (not the training seed: ensemble members share the vocabulary)
    max_scenes: int = 0  # 0 = every scene in the manifest
    workers: int = 2  # processes for precomputing the vocabulary scores
    # Held-out scene folder evaluated every train.eval_every steps (open-loop EPDMS of the planner, overall
    # and per scenario: the learning curve, RUN/best, RUN/validation.json); "" = no validation.
    # val_scenes: that many fixed scenes, round-robin over the scenarios (0 = all).
    val_dir: str = ""
    val_scenes: int = 0

    def __post_init__(self):
        need = checker(self, "data")
        need(isinstance(self.val_dir, str), "val_dir", "a folder path (a string)")
        need(is_int(self.val_scenes) and self.val_scenes >= 0, "val_scenes", "an integer >= 0 (0 = all)")
        need(is_int(self.max_scenes) and self.max_scenes >= 0, "max_scenes", "an integer >= 0 (0 = all)")
        need(is_int(self.workers) and self.workers >= 1, "workers", "an integer >= 1")


@dataclass(frozen=True)
class GRPOConfig:
    """TrajMoE paper eqs. 5-10."""

    group_size: int = 8  # N samples per scoring head (eq. 5)
    clip_eps: float = 0.2  # epsilon of the clipped ratio (eq. 8)
    beta: float = 0.04  # KL weight inside J (eq. 8)
    kl_weight: float = 0.0  # lambda of eq. 10 (extra KL outside J)
    init_log_std: float = -2.0  # log sigma of the new std heads at the start
    metrics: tuple[str, ...] = TARGET_METRICS
    supervised_weight: float = 0.0  # optionally keep the BCE/imitation loss during fine-tuning

    def __post_init__(self):
        if isinstance(self.metrics, list):
            object.__setattr__(self, "metrics", tuple(self.metrics))
        need = checker(self, "grpo")
        need(is_int(self.group_size) and self.group_size >= 2, "group_size", "an integer >= 2 (group-normalised advantages)")
        need(0 < self.clip_eps < 1, "clip_eps", "in (0, 1)")
        need(self.beta >= 0, "beta", ">= 0")
        need(self.kl_weight >= 0, "kl_weight", ">= 0")
        need(all(m in TARGET_METRICS for m in self.metrics), "metrics", f"a list of {', '.join(TARGET_METRICS)}")


def _model(dim: int, heads: int, enc: int, dec: int, vocab: int, hidden: int, moe_layers: tuple[int, ...],
           map_features: bool = True) -> DriveModelConfig:
    return DriveModelConfig(dim=dim, num_heads=heads, encoder_layers=enc, decoder_layers=dec, vocab_size=vocab,
                            vocab_hidden=hidden, moe=dataclasses.replace(PLANNER_MOE, layers=moe_layers),
                            vocab_map_features=map_features)


_TINY_TRAIN = TrainConfig(steps=20, batch_size=8, lr=1e-3, warmup_steps=2, log_every=5, ckpt_every=0)
_CPU_TRAIN = TrainConfig(steps=400, batch_size=16, lr=1e-3, warmup_steps=40, log_every=20, ckpt_every=0)
_GPU_TRAIN = TrainConfig(steps=20000, batch_size=64, lr=2e-4, warmup_steps=500, ckpt_every=1000)

PRESETS: dict[str, Preset] = {
    # CPU / tests.
    "tiny-moe": Preset(_model(32, 2, 1, 2, 64, 64, (0, 1)), _TINY_TRAIN, DriveDataConfig(workers=1)),
    "tiny-dense": Preset(_model(32, 2, 1, 2, 64, 64, ()), _TINY_TRAIN, DriveDataConfig(workers=1)),
    # 2-core CPU budget used for the figures; tiny and cpu presets give each vocabulary query the map
    # at its own poses (vocab_map_features): at 400 steps on 480 scenes the papers' query (map only
    # through attention) stays below keep-the-lane in roundabouts and intersections (docs/results.md).
    "cpu-moe": Preset(_model(96, 4, 1, 2, 256, 256, (0, 1)), _CPU_TRAIN, DriveDataConfig()),
    "cpu-dense": Preset(_model(96, 4, 1, 2, 256, 256, ()), _CPU_TRAIN, DriveDataConfig()),
    # GTRS-size (GPU), the papers' query: the map only through attention.
    "moe": Preset(_model(256, 8, 2, 3, 8192, 1024, (0, 1, 2), False), _GPU_TRAIN, DriveDataConfig()),
    "dense": Preset(_model(256, 8, 2, 3, 8192, 1024, (), False), _GPU_TRAIN, DriveDataConfig()),
}

