"""TrajMoE planner: GTRS vocabulary scorer whose decoder FFNs are a sparse MoE (TrajMoE paper Sec. II.B:
Xing et al., "TrajMoE: Scene-Adaptive Trajectory Planning with Mixture of Experts and Reinforcement
Learning", arXiv:2512.07135; see docs/references.md).

Legend: B batch, V vocabulary, S scene tokens, D model dim, M scored metrics.

Scene encoder. Agents, lane chunks, the route and the ego are vectors, so each becomes one token
(an MLP per type + a type embedding) and a small transformer encoder mixes them (VAD/GTRS-style
vectorised scene). highway-env gives exact boxes and lanes; a BEV raster would spend most of its
pixels on empty space and cost a CNN on 2 CPU cores, for the same information.
Decoder. Each vocabulary trajectory (40 poses) is embedded by an MLP (GTRS: flattened poses ->
1024 -> D), the ego embedding is added, then decoder layers: self-attention across the vocabulary,
cross-attention to scene tokens, FFN = dense or `trajmoe.moe.MoE` (top-k routed experts with
weights renormalised over the selected k + 1 shared expert, TrajMoE paper eqs. 1-2; balance loss
CV^2(importance) + CV^2(load) summed over MoE layers, eqs. 3-4). Routing statistics are kept per
scenario (domain) for the routing heatmap.
Heads. One MLP per sub-score (BCE against the scorer's value for that trajectory in that scene) and
an imitation head (soft cross-entropy to softmax(-sum_t ||v_t - gt_t||^2 / sigma), 8 poses at
0.5 s, GTRS). With `gaussian_heads` every scoring head also predicts log sigma (GRPO, TrajMoE paper eq. 5);
the predicted score is the mean mu = sigmoid(logit) either way.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from trajmoe.drive.config import DriveModelConfig, SelectionWeights
from trajmoe.drive.dataset import (AGENT_FEATS, EGO_FEATS, LANE_FEATS, PLAN_STEPS, PLAN_STRIDE, ROUTE_FEATS,
                                    vocab_agent_features, vocab_drivable_features, vocab_map_features)
from trajmoe.drive.comfort import EC_LIMITS
from trajmoe.drive.metrics import TARGET_METRICS
from trajmoe.drive.scenes import FUTURE_STEPS
from trajmoe.moe import add_moe_aux
from trajmoe.nn.blocks import Block


def _mlp(i: int, h: int, o: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(i, h), nn.GELU(), nn.Linear(h, o))


def selection_scores(probs_BVM: torch.Tensor, imi_logp_BV: torch.Tensor, w: SelectionWeights,
                     metrics: tuple[str, ...] = TARGET_METRICS) -> torch.Tensor:
    """GTRS selection score (GTRS and the TrajMoE paper Sec. III): weighted sum of log-scores -> (B, V)."""
    eps = 1e-6
    p = {m: probs_BVM[..., i].clamp(eps, 1.0) for i, m in enumerate(metrics)}
    s = w.imi * imi_logp_BV
    for m in ("NC", "DAC", "DDC", "TLC"):
        s = s + getattr(w, m) * torch.log(p[m])
    if w.combo > 0:
        combo = w.EP * p["EP"] + w.TTC * p["TTC"] + w.LK * p["LK"] + w.HC * p["HC"]
        s = s + w.combo * torch.log(combo.clamp_min(eps))
    return s


class DrivePlanner(nn.Module):
    """GTRS-style vocabulary scorer (TrajMoE paper, Sec. III; GTRS): scene tokens -> encoder; the V vocabulary
    trajectories as queries -> decoder with cross-attention (MoE FFNs in `cfg.moe.layers`, top-k + shared
    experts, CV² balance loss, TrajMoE paper eqs. 1-4) -> one sigmoid head per NAVSIM sub-score and an
    imitation head. `vocab` (V, 40, 3) in the ego frame (m, rad) is saved with the model; ValueError on
    another shape. Legend: B batch, V vocabulary, D model width, M scored metrics."""

    def __init__(self, cfg: DriveModelConfig, vocab: np.ndarray | None = None):
        super().__init__()
        self.cfg = cfg
        D = cfg.dim
        V = cfg.vocab_size
        if vocab is not None and tuple(vocab.shape) != (V, FUTURE_STEPS, 3):
            raise ValueError(f"vocabulary must have shape ({V}, {FUTURE_STEPS}, 3), got {tuple(vocab.shape)}")
        v = torch.zeros(V, FUTURE_STEPS, 3) if vocab is None else torch.as_tensor(vocab, dtype=torch.float32)
        self.register_buffer("vocab", v)  # (V, 40, 3) saved with the run
        # Scene tokens.
        self.agent_in = _mlp(AGENT_FEATS, D, D)
        self.lane_in = _mlp(LANE_FEATS, D, D)
        self.route_in = _mlp(ROUTE_FEATS, D, D)
        self.ego_in = _mlp(EGO_FEATS, D, D)
        self.type_embed = nn.Parameter(torch.zeros(4, D))  # ego, route, agent, lane
        nn.init.normal_(self.type_embed, std=0.02)
        self.encoder = nn.ModuleList(Block(D, cfg.num_heads, cfg.mlp_ratio, cfg.dropout) for _ in range(cfg.encoder_layers))
        self.enc_norm = nn.LayerNorm(D)
        # Vocabulary queries.
        self.vocab_in = _mlp(FUTURE_STEPS * 3, cfg.vocab_hidden, D)
        self.ego_to_query = nn.Linear(D, D)
        self.map_in = _mlp(2 * PLAN_STEPS, D, D) if cfg.vocab_map_features else None
        self.agents_q_in = _mlp(PLAN_STEPS, D, D) if cfg.vocab_agent_features else None
        self.drivable_in = _mlp(PLAN_STEPS, D, D) if cfg.vocab_drivable_features else None
        moe = cfg.moe.bind(D, int(cfg.mlp_ratio * D), cfg.dropout)
        self.decoder = nn.ModuleList(
            Block(D, cfg.num_heads, cfg.mlp_ratio, cfg.dropout, moe=moe if i in cfg.moe.layers else None, cross_attention=True)
            for i in range(cfg.decoder_layers)
        )
        self.dec_norm = nn.LayerNorm(D)
        self.score_heads = nn.ModuleDict({m: _mlp(D, D, 1) for m in TARGET_METRICS})
        self.imi_head = _mlp(D, D, 1)
        self.std_heads = nn.ModuleDict({m: nn.Linear(D, 1) for m in TARGET_METRICS}) if cfg.gaussian_heads else None

    # ---- forward pieces --------------------------------------------------------------------
    def moe_layers(self) -> list[tuple[int, nn.Module]]:
        """(decoder block index, MoE layer) of every MoE decoder block."""
        return [(i, b.ffn) for i, b in enumerate(self.decoder) if b.is_moe]

    def encode(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """-> scene tokens (B, S, D), keep-mask (B, S), ego embedding (B, D)."""
        ego_BD = self.ego_in(batch["ego"])
        route_BD = self.route_in(batch["route"])
        agents_BAD = self.agent_in(batch["agents"])
        lanes_BLD = self.lane_in(batch["lanes"])
        te = self.type_embed
        tok = torch.cat([(ego_BD + te[0])[:, None], (route_BD + te[1])[:, None], agents_BAD + te[2], lanes_BLD + te[3]], 1)
        B = tok.shape[0]
        ones = torch.ones(B, 2, dtype=torch.bool, device=tok.device)
        mask = torch.cat([ones, batch["agents_mask"].bool(), batch["lanes_mask"].bool()], 1)
        attn = mask[:, None, None, :]  # (B, 1, 1, S): keys that may be attended
        for blk in self.encoder:
            tok, _ = blk(tok, attn_mask=attn)
        return self.enc_norm(tok), mask, ego_BD

    def decode(self, batch: dict) -> tuple[torch.Tensor, list]:
        """-> per-trajectory features (B, V, D), MoE aux dicts."""
        tok, mask, ego_BD = self.encode(batch)
        scale = torch.tensor([1 / 50, 1 / 50, 1.0], device=self.vocab.device)
        q_VD = self.vocab_in((self.vocab * scale).flatten(1))
        x = q_VD[None] + self.ego_to_query(ego_BD)[:, None]  # (B, V, D)
        if self.map_in is not None:
            f = batch.get("vocab_map")  # precomputed by DriveDataset(vocab=...) for training
            x = x + self.map_in(vocab_map_features(self.vocab, batch) if f is None else f)
        if self.agents_q_in is not None:
            f = batch.get("vocab_agents")  # precomputed by DriveDataset(vocab=...) for training
            x = x + self.agents_q_in(vocab_agent_features(self.vocab, batch) if f is None else f)
        if self.drivable_in is not None:
            f = batch.get("vocab_drivable")  # precomputed by DriveDataset(vocab=...) for training
            x = x + self.drivable_in(vocab_drivable_features(self.vocab, batch) if f is None else f)
        auxes = []
        dom = batch.get("domain")
        if dom is not None and (not self.cfg.moe.num_domains or int(dom.max()) >= self.cfg.moe.num_domains):
            dom = None  # a scenario the training data did not have: no routing-statistics row for it
        for blk in self.decoder:
            x, aux = blk(x, context=tok, context_mask=mask, domain_ids=dom if blk.is_moe else None)
            auxes.append(aux)
        return self.dec_norm(x), auxes

    def heads(self, feat_BVD: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-trajectory features (B, V, D) -> logits (B, V) of every sub-score head, "imi", and the GRPO
        log-std heads (`log_std_<metric>`) when `cfg.gaussian_heads`."""
        out = {m: h(feat_BVD)[..., 0] for m, h in self.score_heads.items()}  # logits (B, V)
        out["imi"] = self.imi_head(feat_BVD)[..., 0]
        if self.std_heads is not None:
            for m, h in self.std_heads.items():
                out[f"log_std_{m}"] = h(feat_BVD)[..., 0]
        return out

    # ---- training ----------------------------------------------------------------------------
    def imitation_target(self, expert8_B82: torch.Tensor) -> torch.Tensor:
        """softmax(-sum_t ||v_t - gt_t||^2 / sigma) over the vocabulary on 8 poses at 0.5 s (GTRS) -> (B, V)."""
        v8 = self.vocab[:, PLAN_STRIDE - 1 :: PLAN_STRIDE, :2]  # (V, 8, 2)
        d2 = ((v8[None] - expert8_B82[:, None]) ** 2).sum((-1, -2))  # (B, V)
        return torch.softmax(-d2 / self.cfg.imi_sigma, dim=-1)

    def supervised_loss(self, out: dict, batch: dict) -> tuple[torch.Tensor, dict]:
        """BCE of each sub-score head against the (B, V, M) targets in [0, 1] (the vocabulary scored by
        our NAVSIM scorer) + the GTRS soft imitation loss; returns (weighted sum, per-term logs)."""
        tgt = batch["targets"]  # (B, V, M)
        logs = {}
        bce = 0.0
        for i, m in enumerate(TARGET_METRICS):
            l_m = F.binary_cross_entropy_with_logits(out[m].float(), tgt[..., i].float())
            logs[f"bce_{m}"] = l_m.detach()
            bce = bce + l_m
        imi = -(self.imitation_target(batch["expert8"]) * F.log_softmax(out["imi"].float(), -1)).sum(-1).mean()
        logs["imi"] = imi.detach()
        return self.cfg.score_weight * bce + self.cfg.imi_weight * imi, logs

    def forward(self, batch: dict) -> tuple[torch.Tensor, dict]:
        """Training step on a collated batch -> (loss, logs): supervised loss + balance_weight x CV² +
        z_weight x z-loss of the MoE layers (TrajMoE paper eq. 4; ST-MoE z-loss, Zoph et al.)."""
        feat, auxes = self.decode(batch)
        out = self.heads(feat)
        loss, logs = self.supervised_loss(out, batch)
        return add_moe_aux(loss, logs, self.cfg.moe, auxes), logs

    # ---- inference -------------------------------------------------------------------------
    @torch.no_grad()
    def predict(self, batch: dict) -> dict[str, torch.Tensor]:
        """probs (B, V, M) of TARGET_METRICS and imitation log-probabilities (B, V)."""
        feat, _ = self.decode(batch)
        out = self.heads(feat)
        probs = torch.stack([torch.sigmoid(out[m].float()) for m in TARGET_METRICS], -1)
        return {"probs": probs, "imi_logp": F.log_softmax(out["imi"].float(), -1)}

    @torch.no_grad()
    def plan(self, batch: dict, weights: SelectionWeights | None = None,
             prev_plan8: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Choose one vocabulary trajectory per scene: {"index" (B,), "scores" (B, V), "plan40" (B, 40, 3),
        "plan8" (B, 8, 3) at 0.5 s} by the GTRS selection score (`weights` default: `cfg.selection`);
        `prev_plan8` (B, 8, 3): the plan8 this planner chose 0.5 s earlier (NaN rows: none), read only by
        the selection's `consistency` term."""
        pred = self.predict(batch)
        return select_plan(pred, self.vocab, weights or self.cfg.selection, prev_plan8)


def _profiles(plan_B83: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """8 poses at 0.5 s from the origin -> (acceleration (B, 7) m/s^2, yaw rate (B, 8) rad/s) per segment."""
    full = torch.cat([torch.zeros_like(plan_B83[:, :1]), plan_B83], 1)
    dt = PLAN_STRIDE * 0.1
    speed = (full[:, 1:, :2] - full[:, :-1, :2]).norm(dim=-1) / dt
    dh = full[:, 1:, 2] - full[:, :-1, 2]
    yaw_rate = torch.atan2(torch.sin(dh), torch.cos(dh)) / dt
    return (speed[:, 1:] - speed[:, :-1]) / dt, yaw_rate


def consistency_cost(plan8_V83: torch.Tensor, prev8_B83: torch.Tensor) -> torch.Tensor:
    """How far each vocabulary entry's motion departs from the previous plan's over their overlap -> (B, V).

    The previous plan was chosen 0.5 s (one output step) earlier, so entry segment k overlaps previous
    segment k + 1: RMS acceleration difference / 0.7 m/s^2 + RMS yaw-rate difference / 0.1 rad/s (the
    acceleration and yaw-rate limits of NAVSIM v2's EC, `comfort.EC_LIMITS`), from the 8 output poses
    (frame-free: speeds and yaw rates). Rows of `prev8_B83` holding NaN (no previous plan) cost 0.
    """
    acc_v, yr_v = _profiles(plan8_V83)  # (V, 7), (V, 8)
    prev = torch.nan_to_num(prev8_B83)
    acc_p, yr_p = _profiles(prev)  # (B, 7), (B, 8)
    d_acc = (acc_v[None, :, :-1] - acc_p[:, None, 1:]).pow(2).mean(-1).sqrt()
    d_yr = (yr_v[None, :, :-1] - yr_p[:, None, 1:]).pow(2).mean(-1).sqrt()
    cost = d_acc / EC_LIMITS["acc"] + d_yr / EC_LIMITS["yaw_rate"]
    return torch.where(torch.isnan(prev8_B83).any(-1).any(-1)[:, None], torch.zeros_like(cost), cost)


def select_plan(pred: dict, vocab_V403: torch.Tensor, w: SelectionWeights,
                prev_plan8: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """argmax of the selection score -> index (B,), full 40-pose plan (B, 40, 3), output 8 poses (B, 8, 3);
    with `w.consistency` > 0 and `prev_plan8` (B, 8, 3), minus w.consistency x `consistency_cost`."""
    s = selection_scores(pred["probs"], pred["imi_logp"], w)
    if w.consistency > 0 and prev_plan8 is not None:
        prev = torch.as_tensor(prev_plan8, dtype=s.dtype, device=s.device)
        s = s - w.consistency * consistency_cost(vocab_V403[:, PLAN_STRIDE - 1 :: PLAN_STRIDE].to(s.dtype), prev)
    idx = s.argmax(-1)
    full = vocab_V403[idx]
    return {"index": idx, "scores": s, "plan40": full, "plan8": full[:, PLAN_STRIDE - 1 :: PLAN_STRIDE]}

