"""Track-prediction metrics: MSE in normalised coordinates, ADE / FDE in pixels on visible points.

Accumulated per domain so multi-domain evaluation reports each domain and the total.
Legend: B batch, T track length, N points.
"""

from __future__ import annotations

from collections import defaultdict

import torch


class TrackMetrics:
    def __init__(self, img_size: int, domain_names: list[str]) -> None:
        self.img_size, self.domain_names = img_size, domain_names
        self.sums: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))

    @torch.no_grad()
    def update(self, pred_BTN2: torch.Tensor, gt_BTN2: torch.Tensor, vis_BTN: torch.Tensor, domain_B: torch.Tensor) -> None:
        pred, gt, vis = pred_BTN2.float().cpu(), gt_BTN2.float().cpu(), vis_BTN.float().cpu()
        sq_B = (pred - gt).pow(2).mean(dim=(1, 2, 3))  # same reduction as the training loss
        dist_BTN = torch.linalg.vector_norm((pred - gt) * self.img_size, dim=-1)  # pixels
        ade_num_B = (dist_BTN * vis).sum(dim=(1, 2))
        ade_den_B = vis.sum(dim=(1, 2))
        fde_num_B = (dist_BTN[:, -1] * vis[:, -1]).sum(dim=1)
        fde_den_B = vis[:, -1].sum(dim=1)
        for b, d in enumerate(domain_B.tolist()):
            for key in (self.domain_names[d], "overall"):
                s = self.sums[key]
                s["n"] += 1
                s["mse"] += float(sq_B[b])
                s["ade_num"] += float(ade_num_B[b])
                s["ade_den"] += float(ade_den_B[b])
                s["fde_num"] += float(fde_num_B[b])
                s["fde_den"] += float(fde_den_B[b])

    def result(self) -> dict[str, dict[str, float]]:
        out = {}
        for key, s in self.sums.items():
            out[key] = {
                "samples": int(s["n"]),
                "track_mse": s["mse"] / max(s["n"], 1),
                "ade_px": s["ade_num"] / max(s["ade_den"], 1),
                "fde_px": s["fde_num"] / max(s["fde_den"], 1),
            }
        return dict(sorted(out.items(), key=lambda kv: (kv[0] == "overall", kv[0])))
