"""The Tra-MoE track transformer (ATM's track transformer with sparse MoE FFNs; Tra-MoE paper Sec. 3:
Yang et al., "Tra-MoE: Learning Trajectory Prediction Model from Multiple Domains for Adaptive Policy
Conditioning", CVPR 2025, arXiv:2411.14519; see docs/references.md).

Tokens (ATM (Wen et al., RSS 2024) and the Tra-MoE paper Tab. 6): 64 image patches (16x16 on 128x128, fixed 2D sin-cos position,
MAE-like masking in training), (T/4) x N track tokens (tracks "masked as first": every timestep is
the query point, then Conv1d patches of 4 steps per point, + a learnable temporal embedding shared
by points), 1 language token. Full attention, pre-LN blocks; FFNs of `moe.layers` are MoE.
Loss = w_track * track MSE + w_img * image-patch MSE + moe.z_weight * z-loss + moe.balance_weight * balance loss
(Tra-MoE paper Sec. 3.3: l_tra L_tra + l_lb L_lo-ba + l_z L_z).
Legend: B batch, T track length, N points, P image patches, D dim.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange

from ..moe import reset_routing
from ..moe import add_moe_aux
from ..nn import Block, PatchEmbed, sincos_2d, sincos_2d_at
from .config import TrackConfig


class TrackModel(nn.Module):
    """Tra-MoE track transformer: (image, task embedding, query points) -> future tracks (B, T, N, 2).

    MoE FFNs at `cfg.moe.layers` (Tra-MoE paper, Yang et al., Sec. 3.2); loss as in the module docstring
    (Sec. 3.3: z-loss eq. 8 after ST-MoE, Zoph et al.; balance loss eqs. 5-7 after Switch Transformer, Fedus et al.).
    """

    def __init__(self, cfg: TrackConfig) -> None:
        super().__init__()
        self.cfg = cfg
        D = cfg.dim
        self.patch_embed = PatchEmbed(cfg.img_size, cfg.patch, 3, D)
        self.register_buffer("img_pos_PD", sincos_2d(D, self.patch_embed.grid, self.patch_embed.grid), persistent=False)
        # MAE-style mask token, only when training masks image patches (else it would get no gradient)
        self.mask_token = nn.Parameter(torch.randn(D) * 0.02) if cfg.img_mask_ratio > 0 else None
        self.track_embed = nn.Conv1d(2, D, kernel_size=cfg.track_patch, stride=cfg.track_patch)
        self.track_time_emb = nn.Parameter(torch.randn(cfg.track_len // cfg.track_patch, D) * 0.02)
        self.lang_proj = nn.Linear(cfg.lang_dim, D)
        moe_cfg = cfg.moe_config()
        self.blocks = nn.ModuleList(
            Block(D, cfg.heads, cfg.mlp_ratio, cfg.dropout, moe=moe_cfg if i in cfg.moe.layers else None)
            for i in range(cfg.depth)
        )
        self.norm = nn.LayerNorm(D)
        self.track_head = nn.Linear(D, 2 * cfg.track_patch)
        self.img_head = nn.Linear(D, 3 * cfg.patch * cfg.patch)
        if cfg.zero_init_head:  # residual head at 0: the first prediction is "no point moves"
            nn.init.zeros_(self.track_head.weight)
            nn.init.zeros_(self.track_head.bias)

    # ---------------------------------------------------------------- core
    def encode(self, img_B3HW: torch.Tensor, query_BN2: torch.Tensor, task_emb_BL: torch.Tensor,
               domain_ids: torch.Tensor | None = None, mask_ratio: float = 0.0):
        """Returns (tracks_BTN2, img_tokens_BPD, aux list). img in [0, 1], queries in [0, 1]."""
        cfg = self.cfg
        B, N = query_BN2.shape[:2]
        x_img = self.patch_embed(img_B3HW * 2.0 - 1.0)  # ATM scales pixels to [-1, 1]
        if mask_ratio > 0 and self.mask_token is not None:
            drop_BP = torch.rand(x_img.shape[:2], device=x_img.device) < mask_ratio
            x_img = torch.where(drop_BP[..., None], self.mask_token.to(x_img.dtype), x_img)
        x_img = x_img + self.img_pos_PD
        # masked as first: the input track is the query point repeated over T steps
        first_BN2T = query_BN2.unsqueeze(-1).expand(B, N, 2, cfg.track_len)
        x_trk = self.track_embed(rearrange(first_BN2T, "b n c t -> (b n) c t"))  # (B*N, D, T/4)
        x_trk = rearrange(x_trk, "(b n) d s -> b n s d", b=B) + self.track_time_emb
        if cfg.query_pos_embed:  # where the point is, in the image patches' own position code
            x_trk = x_trk + sincos_2d_at(cfg.dim, query_BN2, self.patch_embed.grid).to(x_trk.dtype)[:, :, None]
        x_trk = rearrange(x_trk, "b n s d -> b (n s) d")
        x_lang = self.lang_proj(task_emb_BL).unsqueeze(1)
        x = torch.cat([x_img, x_trk, x_lang], dim=1)
        auxes = []
        for blk in self.blocks:
            x, aux = blk(x, domain_ids=domain_ids)
            auxes.append(aux)
        x = self.norm(x)
        P = x_img.shape[1]
        out_trk = self.track_head(x[:, P : P + x_trk.shape[1]])  # (B, N*S, 2*track_patch)
        tracks_BTN2 = rearrange(out_trk, "b (n s) (p c) -> b (s p) n c", n=N, c=2) * cfg.track_out_scale
        if cfg.residual_tracks:
            tracks_BTN2 = tracks_BTN2 + query_BN2.unsqueeze(1)
        return tracks_BTN2, x[:, :P], auxes

    def forward(self, batch: dict) -> tuple[torch.Tensor, dict]:
        """Training loss and logs.

        batch: image (B,3,H,W) in [0,1], tracks (B,T,N,2) in [0,1], task_emb (B,L), optional
        domain (B,) ids, vis (B,T,N) (needed when w_occluded != 1) and track_weight (B,) per-sample
        weights of the track loss (trajmoe.track.dataset, view_loss="no_motion"). Logs the track MSE and the
        no-motion MSE of the same batch (`track_mse_static`), so curves show the baseline.
        Raises ValueError on wrongly shaped inputs.
        """
        cfg = self.cfg
        img, tracks, lang = batch["image"], batch["tracks"], batch["task_emb"]
        self._check(img, tracks, lang)
        pred, img_tok, auxes = self.encode(
            img, tracks[:, 0], lang, batch.get("domain"), cfg.img_mask_ratio if self.training else 0.0
        )
        diff = pred.float() - tracks.float()  # (B, T, N, 2)
        track_mse = diff.pow(2).mean()
        if cfg.track_loss == "mse":  # Tra-MoE / ATM
            per_BTN = diff.pow(2).mean(-1)
        else:  # "l1": mean absolute coordinate error, less pull from the few large (occluded) errors
            per_BTN = diff.abs().mean(-1)
        if cfg.w_occluded != 1.0 and "vis" in batch:  # occluded points weighted as the public code does
            per_BTN = per_BTN * torch.where(batch["vis"].bool(), 1.0, cfg.w_occluded).to(per_BTN.dtype)
        if "track_weight" in batch:  # per-sample weights of the track loss (data.view_loss="no_motion")
            track_loss = (per_BTN.mean(dim=(1, 2)) * batch["track_weight"].to(per_BTN.dtype)).mean()
        else:
            track_loss = per_BTN.mean()
        static_mse = (tracks[:, :1].float() - tracks.float()).pow(2).mean()  # no-motion on this batch
        target = rearrange(img * 2.0 - 1.0, "b c (h p) (w q) -> b (h w) (p q c)", p=cfg.patch, q=cfg.patch)
        img_mse = F.mse_loss(self.img_head(img_tok).float(), target.float())
        logs = {"track_mse": track_mse.detach(), "track_mse_static": static_mse.detach(), "img_mse": img_mse.detach()}
        loss = add_moe_aux(cfg.w_track * track_loss + cfg.w_img * img_mse, logs, cfg.moe, auxes)
        return loss, logs

    @torch.no_grad()
    def predict(self, image_B3HW: torch.Tensor, query_BN2: torch.Tensor, task_emb_BL: torch.Tensor,
                domain_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Tracks (B, T, N, 2) in [0, 1] for N query points at the current frame (no masking)."""
        self._check(image_B3HW, None, task_emb_BL, query_BN2)
        pred, _, _ = self.encode(image_B3HW, query_BN2, task_emb_BL, domain_ids, 0.0)
        return pred

    # ---------------------------------------------------------------- helpers
    def _check(self, img, tracks, lang, query=None) -> None:
        c = self.cfg
        if img.ndim != 4 or img.shape[1:] != (3, c.img_size, c.img_size):
            raise ValueError(f"image must be (B, 3, {c.img_size}, {c.img_size}), got {tuple(img.shape)}")
        if tracks is not None and (tracks.ndim != 4 or tracks.shape[1] != c.track_len or tracks.shape[-1] != 2):
            raise ValueError(f"tracks must be (B, {c.track_len}, N, 2), got {tuple(tracks.shape)}")
        if query is not None and (query.ndim != 3 or query.shape[-1] != 2):
            raise ValueError(f"query points must be (B, N, 2), got {tuple(query.shape)}")
        if lang.ndim != 2 or lang.shape[1] != c.lang_dim:
            raise ValueError(f"task_emb must be (B, {c.lang_dim}), got {tuple(lang.shape)}")

    def moe_layers(self) -> list[tuple[int, nn.Module]]:
        """[(block index, MoE layer)] for the blocks whose FFN is a sparse MoE."""
        return [(i, b.ffn) for i, b in enumerate(self.blocks) if b.is_moe]

    def reset_routing_stats(self) -> None:
        """Zero the routing statistics every MoE layer accumulates (trajmoe.moe.stats)."""
        reset_routing(self)

