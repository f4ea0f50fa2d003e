"""ATM-style trajectory-guided BC policy with adaptive trajectory-mask conditioning.

Tra-MoE paper Sec. 3.2, Fig. 3(b), Tab. 3; ATM policy (Wen et al., RSS 2024). Papers: docs/references.md.

Per frame and view: the frozen track model predicts tracks (T x N) from a fixed query grid; the
image (RGB, plus the trajectory mask as a 4th channel in the mask modes) goes through a per-view
conv patch encoder; every track becomes one token. A spatial transformer runs over
[CLS, text, image tokens of all views, track tokens of all views] per frame; a temporal transformer
runs over the frame stack (tokens per frame: spatial CLS, proprio, action) with a block-causal
mask; the action token of each frame is concatenated with that frame's flattened raw predicted
tracks (late fusion) and an MLP head predicts the action; MSE loss (Tra-MoE paper Sec. 3.3).

Legend: B batch, F frames in the stack, V views, C channels, H/W image, T track timesteps,
N points, P image tokens per view, M tokens per frame in the temporal transformer, D dim, A action.

Interface (LeRobot habits): `forward(batch) -> (loss, logs)`, `select_action(obs) -> action`,
`reset()`. The frozen track model is held outside the module tree (it is not saved with the
policy's weights; the run directory records which track run it came from) but moves with `.to()`.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..nn import Block
from .conditioning import drawn_mask_values, query_grid, rasterize_tracks
from .config import LATE_FUSION_MOTION_SCALE, PolicyConfig
from .encoders import MLP, PatchEncoder, TrackEncoder

TEMPORAL_TOKENS = 3  # per frame: spatial CLS, proprio, action


def block_causal_mask(frames: int, per_frame: int, device=None) -> torch.Tensor:
    """(F*M, F*M) bool, True = may attend: a token sees every token of its own and earlier frames."""
    f = torch.arange(frames, device=device).repeat_interleave(per_frame)
    return f[None, :] <= f[:, None]


class TrajectoryPolicy(nn.Module):
    """ATM-style BC policy (ATM, Wen et al.) with the Tra-MoE trajectory-mask conditioning
    (Tra-MoE paper, Yang et al., Sec. 3.2, Tab. 3): image + track tokens -> spatial transformer per
    frame -> block-causal temporal transformer over the frame stack -> action MLP (MSE loss).

    Args:
        cfg: PolicyConfig. track_model: frozen TrackModel (held outside the module tree, never saved);
            None for 'none' / 'oracle' conditioning or when tracks come cached with the batch.

    Raises:
        ValueError: the track model's track_len or lang_dim differ from the policy's.
    """

    def __init__(self, cfg: PolicyConfig, track_model: nn.Module | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        D, V = cfg.dim, len(cfg.views)
        self._track: list[nn.Module] = []  # held outside the module tree (frozen, not saved)
        if track_model is not None:  # else tracks come with the batch (cached) or a track model is set later
            self.set_track_model(track_model)
        self.register_buffer("query_N2", query_grid(cfg.num_points), persistent=False)

        # Trajectory mask values: fixed (drawn) or learnable (adaptive), one per track timestep.
        # Adaptive: values = drawn + mask_value_scale * mask_delta, mask_delta initialised at 0, so the
        # adaptive mask starts where the drawn baseline is and Adam moves a value by about
        # mask_value_scale * lr per step (see PolicyConfig.mask_value_scale for the measured reason).
        self.register_buffer("mask_init", drawn_mask_values(cfg.track_len), persistent=False)
        if cfg.conditioning == "adaptive_mask":
            self.mask_delta = nn.Parameter(torch.zeros(cfg.track_len))

        self.img_encoders = nn.ModuleList(
            PatchEncoder(cfg.in_chans, cfg.encoder_size, cfg.conv_channels, cfg.patch, D) for _ in range(V)
        )
        self.view_embed = nn.Parameter(torch.zeros(V, D))
        if cfg.uses_track_tokens:
            self.track_encoder = TrackEncoder(cfg.track_len, cfg.num_points, D)
            self.track_view_embed = nn.Parameter(torch.zeros(V, D))
        self.text_proj = nn.Linear(cfg.lang_dim, D)
        self.cls_token = nn.Parameter(torch.zeros(D))
        self.spatial = nn.ModuleList(
            Block(D, cfg.spatial_heads, cfg.mlp_ratio, cfg.dropout) for _ in range(cfg.spatial_depth)
        )
        self.spatial_norm = nn.LayerNorm(D)

        self.proprio_proj = nn.Linear(cfg.proprio_dim, D)
        self.action_token = nn.Parameter(torch.zeros(D))
        self.frame_embed = nn.Parameter(torch.zeros(cfg.frame_stack, D))
        self.type_embed = nn.Parameter(torch.zeros(TEMPORAL_TOKENS, D))
        self.temporal = nn.ModuleList(
            Block(D, cfg.temporal_heads, cfg.mlp_ratio, cfg.dropout) for _ in range(cfg.temporal_depth)
        )
        self.temporal_norm = nn.LayerNorm(D)
        self.register_buffer("temporal_mask", block_causal_mask(cfg.frame_stack, TEMPORAL_TOKENS), persistent=False)
        late = cfg.uses_tracks and cfg.late_fusion != "none"
        fused = D + (V * cfg.track_len * cfg.num_points * 2 if late else 0)  # late fusion
        self.head = MLP(fused, cfg.head_hidden, cfg.action_dim, cfg.dropout)
        if late and cfg.late_fusion_init == "split":  # the head starts as plain BC's; the track columns at 0
            first = self.head.net[0]
            with torch.no_grad():
                first.weight.zero_()
                bound = 1.0 / math.sqrt(D)  # PyTorch's Linear default (kaiming_uniform a=sqrt(5)) for fan_in D
                first.weight[:, :D].uniform_(-bound, bound)
                first.bias.uniform_(-bound, bound)
        for p in (self.view_embed, self.cls_token, self.action_token, self.frame_embed, self.type_embed):
            nn.init.trunc_normal_(p, std=0.02)
        if cfg.uses_track_tokens:
            nn.init.trunc_normal_(self.track_view_embed, std=0.02)
        self.reset()

    @property
    def mask_values(self) -> torch.Tensor:
        """(T,) values written at the track points of the mask channel (drawn, or drawn + learned)."""
        if self.cfg.conditioning == "adaptive_mask":
            return self.mask_init + self.cfg.mask_value_scale * self.mask_delta
        return self.mask_init

    # ------------------------------------------------------------------------------------------
    # Track model (frozen)

    def set_track_model(self, track_model: nn.Module) -> None:
        """Attach a frozen track model (eval mode, no gradients) that predicts the tracks.

        Raises:
            ValueError: its track_len or lang_dim differ from the policy config's.
        """
        tc = track_model.cfg
        if tc.track_len != self.cfg.track_len:
            raise ValueError(f"track model track_len={tc.track_len} != policy track_len={self.cfg.track_len}")
        if tc.lang_dim != self.cfg.lang_dim:
            raise ValueError(f"track model lang_dim={tc.lang_dim} != policy lang_dim={self.cfg.lang_dim} (task embedding size)")
        track_model.eval()
        for p in track_model.parameters():
            p.requires_grad_(False)
        self._track = [track_model]

    @property
    def track_model(self) -> nn.Module | None:
        """The attached frozen track model, or None."""
        return self._track[0] if self._track else None

    def _apply(self, fn, recurse=True):  # .to() / .cuda() / .half() also move the frozen track model
        super()._apply(fn, recurse)
        if self._track:
            self._track[0]._apply(fn)
        return self

    def train(self, mode: bool = True):
        """Set train/eval mode; the frozen track model always stays in eval mode."""
        super().train(mode)
        if self._track:
            self._track[0].eval()  # frozen: never dropout / MAE masking
        return self

    @torch.no_grad()
    def predict_tracks(self, img_B3HW: torch.Tensor, task_emb_BL: torch.Tensor) -> torch.Tensor:
        """Frozen track model on the fixed query grid: images in [0, 1] -> (B, T, N, 2)."""
        tm = self.track_model
        if tm is None:
            if self.cfg.conditioning == "oracle":
                raise ValueError("conditioning='oracle' takes the exact grid tracks from the batch ('tracks') or the observation ('oracle_tracks'), never from a track model")
            raise ValueError(f"conditioning={self.cfg.conditioning!r} needs a track model (or cached tracks in the batch)")
        size = tm.cfg.img_size
        if img_B3HW.shape[-1] != size or img_B3HW.shape[-2] != size:
            img_B3HW = F.interpolate(img_B3HW, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        B = img_B3HW.shape[0]
        query = self.query_N2.to(img_B3HW.dtype).expand(B, -1, -1)
        return tm.predict(img_B3HW, query, task_emb_BL.to(img_B3HW.dtype)).float()

    # ------------------------------------------------------------------------------------------
    # Core

    def encode_frames(self, img_BV3HW: torch.Tensor, task_emb_BL: torch.Tensor,
                      tracks_BVTN2: torch.Tensor | None) -> torch.Tensor:
        """Spatial transformer over one frame per row -> spatial CLS feature (B, D).
        img uint8 in [0, 255] or float in [0, 1]; tracks in [0, 1] (None for conditioning='none')."""
        cfg = self.cfg
        B, V = img_BV3HW.shape[:2]
        scale = 2.0 / 255.0 if img_BV3HW.dtype == torch.uint8 else 2.0
        x = img_BV3HW.float()
        if cfg.downsample > 1:  # pool first: cheaper than normalising full-resolution frames
            x = F.avg_pool2d(x.flatten(0, 1), cfg.downsample).view(B, V, 3, cfg.encoder_size, cfg.encoder_size)
        x = x * scale - 1.0  # ATM scales pixels to [-1, 1]
        H, W = x.shape[-2:]
        if cfg.uses_mask:
            # (B*V, T, N, 2) -> (B*V, H, W): 4th channel, concatenated before the encoder (Fig. 3b)
            mask = rasterize_tracks(tracks_BVTN2.flatten(0, 1), self.mask_values, H, W, cfg.mask_interp)
            x = torch.cat([x, mask.view(B, V, 1, H, W).to(x.dtype)], dim=2)
        tokens = [self.cls_token.expand(B, 1, -1), self.text_proj(task_emb_BL).unsqueeze(1)]
        for v, enc in enumerate(self.img_encoders):
            tokens.append(enc(x[:, v]) + self.view_embed[v])  # (B, P, D)
        if cfg.uses_track_tokens:
            for v in range(V):
                tokens.append(self.track_encoder(tracks_BVTN2[:, v]) + self.track_view_embed[v])  # (B, N, D)
        h = torch.cat(tokens, dim=1)
        for blk in self.spatial:
            h, _ = blk(h)
        return self.spatial_norm(h[:, 0])

    def decode_actions(self, feat_BFD: torch.Tensor, proprio_BFP: torch.Tensor,
                       tracks_BFVTN2: torch.Tensor | None) -> torch.Tensor:
        """Temporal transformer (block-causal) + late fusion + head -> actions (B, F, A)."""
        cfg = self.cfg
        B, Fr, D = feat_BFD.shape
        tok = torch.stack(
            [feat_BFD, self.proprio_proj(proprio_BFP), self.action_token.expand(B, Fr, D)], dim=2
        )  # (B, F, M, D)
        tok = tok + self.frame_embed[:Fr, None] + self.type_embed
        h = tok.reshape(B, Fr * TEMPORAL_TOKENS, D)
        mask = self.temporal_mask[: Fr * TEMPORAL_TOKENS, : Fr * TEMPORAL_TOKENS]
        for blk in self.temporal:
            h, _ = blk(h, attn_mask=mask)
        act_BFD = self.temporal_norm(h.view(B, Fr, TEMPORAL_TOKENS, D)[:, :, -1])
        if cfg.uses_tracks and cfg.late_fusion == "raw":  # late fusion with the raw predicted tracks (ATM)
            act_BFD = torch.cat([act_BFD, tracks_BFVTN2.flatten(2) * 2.0 - 1.0], dim=-1)
        elif cfg.uses_tracks and cfg.late_fusion == "motion":  # displacement from each track's query point
            motion = (tracks_BFVTN2 - tracks_BFVTN2[:, :, :, :1]) * LATE_FUSION_MOTION_SCALE
            act_BFD = torch.cat([act_BFD, motion.flatten(2)], dim=-1)
        return self.head(act_BFD)

    def predict_actions(self, batch: dict[str, Any]) -> torch.Tensor:
        """Actions (B, F, A) for every frame of the windows in `batch` (see `forward`)."""
        cfg = self.cfg
        rgb = batch["rgb"]
        self._check_batch(batch)
        B, Fr, V = rgb.shape[:3]
        tracks = None
        if cfg.uses_tracks:
            tracks = batch.get("tracks")
            if tracks is None:  # predicted here, under no_grad, from the (augmented) frames
                img = rgb.float() / 255.0 if rgb.dtype == torch.uint8 else rgb.float()
                emb = batch["task_emb"].float()[:, None, None].expand(B, Fr, V, -1)
                tracks = self.predict_tracks(img.flatten(0, 2), emb.flatten(0, 2))
                tracks = tracks.view(B, Fr, V, *tracks.shape[1:])
            tracks = self._blend_oracle(tracks.float())
        emb_F = batch["task_emb"].float()[:, None].expand(B, Fr, -1).flatten(0, 1)
        feat = self.encode_frames(rgb.flatten(0, 1), emb_F, None if tracks is None else tracks.flatten(0, 1))
        return self.decode_actions(feat.view(B, Fr, -1), batch["proprio"].float(), tracks)

    def forward(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """batch: rgb (B, F, V, 3, H, W) uint8 (or float in [0, 1]); proprio (B, F, Dp);
        task_emb (B, L); actions (B, F, A); valid (B, F) bool (False = padding before the episode
        start, optional); tracks (B, F, V, T, N, 2) optional (cached predictions).
        Loss: MSE between predicted and demonstrated actions over the valid frames (Tra-MoE paper Sec. 3.3)."""
        pred = self.predict_actions(batch)
        err = ((pred.float() - batch["actions"].float()) ** 2).mean(-1)  # (B, F)
        valid = batch.get("valid")
        w = torch.ones_like(err) if valid is None else valid.to(err.dtype)
        loss = (err * w).sum() / w.sum().clamp(min=1.0)
        logs = {"mse": loss.detach(), "mse_last": err[:, -1].detach().mean()}
        if self.cfg.conditioning == "adaptive_mask":  # every value, for the learned-values plot
            vals = self.mask_values.detach()
            logs.update({f"mask_value_{t:02d}": vals[t] for t in range(len(vals))})
        return loss, logs

    def _check_batch(self, batch: dict[str, Any]) -> None:
        cfg = self.cfg
        rgb = batch["rgb"]
        want = (len(cfg.views), 3, cfg.img_size, cfg.img_size)
        if rgb.ndim != 6 or tuple(rgb.shape[2:]) != want:
            raise ValueError(f"batch rgb must be (B, F, {', '.join(map(str, want))}), got {tuple(rgb.shape)}")
        if rgb.shape[1] > cfg.frame_stack:
            raise ValueError(f"batch has {rgb.shape[1]} frames > frame_stack={cfg.frame_stack}")
        if batch["actions"].shape[-1] != cfg.action_dim:
            raise ValueError(f"batch actions have dim {batch['actions'].shape[-1]} but policy action_dim={cfg.action_dim}")
        if batch["proprio"].shape[-1] != cfg.proprio_dim:
            raise ValueError(f"batch proprio has dim {batch['proprio'].shape[-1]} but policy proprio_dim={cfg.proprio_dim}")
        if batch["task_emb"].shape[-1] != cfg.lang_dim:
            raise ValueError(f"batch task_emb has dim {batch['task_emb'].shape[-1]} but policy lang_dim={cfg.lang_dim}")

    # ------------------------------------------------------------------------------------------
    # Closed loop (LeRobot-style): select_action keeps its own frame and track queues

    def reset(self, task_emb: np.ndarray | torch.Tensor | None = None) -> None:
        """Clear the frame-feature / proprio / track queues (call at every episode start)."""
        self._feat_q: deque = deque(maxlen=self.cfg.frame_stack)
        self._proprio_q: deque = deque(maxlen=self.cfg.frame_stack)
        self._track_q: deque = deque(maxlen=self.cfg.frame_stack)
        self._task_emb = None if task_emb is None else torch.as_tensor(np.asarray(task_emb), dtype=torch.float32)
        self.last_tracks: np.ndarray | None = None  # (V, T, N, 2) of the latest frame, for videos

    @torch.no_grad()
    def select_action(self, obs: dict[str, Any]) -> np.ndarray:
        """obs: rgb {view: (H, W, 3) uint8}, ee_pos (3,), gripper (1,) or float, optional
        task_emb (L,) (else the one given to reset). Returns the action (A,) clipped to [-1, 1].
        Only the new frame is encoded (tracks predicted, spatial transformer); earlier frames come
        from the queues, so a step costs one spatial pass + one temporal pass. The queues are
        padded at the episode start by repeating the first frame, as the training windows are."""
        cfg = self.cfg
        if self.training:
            raise RuntimeError("select_action needs eval mode: call policy.eval() first")
        device = self.cls_token.device
        missing = [v for v in cfg.views if v not in obs["rgb"]]
        if missing:
            raise ValueError(f"observation lacks view(s) {missing}; it has {sorted(obs['rgb'])}, the policy wants {list(cfg.views)}")
        img = np.stack([obs["rgb"][v] for v in cfg.views])  # (V, H, W, 3)
        img_V3HW = torch.from_numpy(img).to(device).permute(0, 3, 1, 2)  # uint8
        if img_V3HW.shape[-1] != cfg.img_size or img_V3HW.shape[-2] != cfg.img_size:
            raise ValueError(f"observation images are {tuple(img.shape[1:3])} but the policy wants {cfg.img_size}x{cfg.img_size}")
        emb = obs.get("task_emb")
        emb = self._task_emb if emb is None else torch.as_tensor(np.asarray(emb), dtype=torch.float32)
        if emb is None:
            raise ValueError("no task embedding: pass obs['task_emb'] or policy.reset(task_emb=...)")
        emb_1L = emb.to(device).view(1, -1)
        proprio = np.concatenate([np.asarray(obs["ee_pos"], np.float32).reshape(-1), np.asarray(obs["gripper"], np.float32).reshape(-1)])
        if proprio.shape[0] != cfg.proprio_dim:
            raise ValueError(f"observation proprio (ee_pos + gripper) has dim {proprio.shape[0]} but policy proprio_dim={cfg.proprio_dim}")
        tracks_1VTN2 = None
        if cfg.conditioning == "oracle":
            tracks_1VTN2 = self._blend_oracle(self._oracle_obs(obs).to(device).unsqueeze(0))
            self.last_tracks = tracks_1VTN2[0].cpu().numpy()
        elif cfg.uses_tracks:
            tracks_1VTN2 = self.predict_tracks(img_V3HW.float() / 255.0, emb_1L.expand(len(cfg.views), -1)).unsqueeze(0)
            self.last_tracks = tracks_1VTN2[0].cpu().numpy()
        feat_1D = self.encode_frames(img_V3HW.unsqueeze(0), emb_1L, tracks_1VTN2)
        prop = torch.from_numpy(proprio).to(device)
        if not self._feat_q:  # episode start: pad by repeating the first frame
            for _ in range(cfg.frame_stack - 1):
                self._feat_q.append(feat_1D)
                self._proprio_q.append(prop)
                self._track_q.append(tracks_1VTN2)
        self._feat_q.append(feat_1D)
        self._proprio_q.append(prop)
        self._track_q.append(tracks_1VTN2)
        feat_1FD = torch.stack(list(self._feat_q), dim=1)
        prop_1FP = torch.stack(list(self._proprio_q)).unsqueeze(0)
        tracks_1F = torch.stack(list(self._track_q), dim=1) if cfg.uses_tracks else None
        act = self.decode_actions(feat_1FD, prop_1FP, tracks_1F)[0, -1]
        return act.clamp(-1.0, 1.0).cpu().numpy()


    def _blend_oracle(self, tracks_TN2: torch.Tensor) -> torch.Tensor:
        """Oracle tracks (..., T, N, 2) moved toward no motion: q + a (tracks - q), q = tracks[..., :1, :, :],
        a = cfg.oracle_blend (identity for every other conditioning and for a = 1)."""
        a = self.cfg.oracle_blend
        if self.cfg.conditioning != "oracle" or a == 1:
            return tracks_TN2
        q = tracks_TN2[..., :1, :, :]
        return q + a * (tracks_TN2 - q)

    def _oracle_obs(self, obs: dict[str, Any]) -> torch.Tensor:
        """obs['oracle_tracks'] (V, T, N, 2) in [0, 1], checked against the config."""
        cfg = self.cfg
        tr = obs.get("oracle_tracks")
        want = (len(cfg.views), cfg.track_len, cfg.num_points, 2)
        if tr is None:
            raise ValueError("conditioning='oracle' needs obs['oracle_tracks'] (trajmoe.envs.oracle.oracle_tracks)")
        tr = torch.as_tensor(np.asarray(tr), dtype=torch.float32)
        if tuple(tr.shape) != want:
            raise ValueError(f"obs['oracle_tracks'] must be {want} (views, track_len, num_points, 2), got {tuple(tr.shape)}")
        return tr

