"""Track-prediction metrics with the no-motion baseline on the same samples.

Errors: track MSE over every point and step in normalised [0, 1] coordinates (the training loss's
reduction), ADE / FDE in pixels over visible points (ADE: mean over steps and points, FDE: last step).
Baseline: "no point moves", i.e. every query point repeated over the horizon, `gt[:, :1]`: the
masked-as-first input the model itself receives (Tra-MoE / ATM feed exactly this), so it costs
nothing and is the first thing a user would try. Skill scores (higher is better, 0 = no better than
the baseline, 1 = perfect): skill_mse = 1 - MSE / MSE_static, skill_ade = 1 - ADE / ADE_static,
skill_fde = 1 - FDE / FDE_static (the usual forecast skill score against a persistence forecast).
Accumulated per domain and overall. Legend: B batch, T track length, N points.
"""

from __future__ import annotations

from collections import defaultdict

import torch


def static_tracks(gt_BTN2: torch.Tensor) -> torch.Tensor:
    """The no-motion prediction (B, T, N, 2): each track's first point (the query) repeated."""
    return gt_BTN2[:, :1].expand_as(gt_BTN2)


def skill(err: float, err_static: float) -> float:
    """1 - err / err_static (nan when the baseline error is 0: nothing moved, no skill to measure)."""
    return 1.0 - err / err_static if err_static > 0 else float("nan")


def _skill_ci95(s: dict, n: int, mse_static: float) -> float:
    """Half-width of the normal 95 % interval of skill_mse from the paired per-sample differences
    MSE - MSE_static (skill_mse = -mean(d) / MSE_static). Samples of one episode are correlated, so
    this is a lower bound on the true uncertainty; nan with < 2 samples or a zero baseline."""
    if n < 2 or mse_static <= 0:
        return float("nan")
    var = max(s["dmse2"] / n - (s["dmse"] / n) ** 2, 0.0) * n / (n - 1)
    return 1.96 * (var / n) ** 0.5 / mse_static


class TrackMetrics:
    """Accumulates model and no-motion errors per domain; `result()` gives both and the skills."""

    def __init__(self, img_size: int, domain_names: list[str]) -> None:
        self.img_size, self.domain_names = img_size, domain_names
        self.sums: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))

    def _errors(self, pred, gt, vis) -> dict[str, torch.Tensor]:
        sq_B = (pred - gt).pow(2).mean(dim=(1, 2, 3))  # same reduction as the training loss
        dist_BTN = torch.linalg.vector_norm((pred - gt) * self.img_size, dim=-1)  # pixels
        return {"mse": sq_B, "ade_num": (dist_BTN * vis).sum(dim=(1, 2)),
                "fde_num": (dist_BTN[:, -1] * vis[:, -1]).sum(dim=1)}

    @torch.no_grad()
    def update(self, pred_BTN2: torch.Tensor, gt_BTN2: torch.Tensor, vis_BTN: torch.Tensor, domain_B: torch.Tensor,
               groups_B: list[str] | None = None) -> None:
        """Add a batch: pred/gt (B, T, N, 2) in [0, 1], vis (B, T, N) in {0, 1}, domain (B,) ids;
        `groups_B` optionally names one more group per sample (e.g. "view:agentview")."""
        pred, gt, vis = pred_BTN2.float().cpu(), gt_BTN2.float().cpu(), vis_BTN.float().cpu()
        model, static = self._errors(pred, gt, vis), self._errors(static_tracks(gt), gt, vis)
        ade_den_B, fde_den_B = vis.sum(dim=(1, 2)), vis[:, -1].sum(dim=1)
        for b, d in enumerate(domain_B.tolist()):
            keys = (self.domain_names[d], "overall") + ((groups_B[b],) if groups_B else ())
            for key in keys:
                s = self.sums[key]
                s["n"] += 1
                s["ade_den"] += float(ade_den_B[b])
                s["fde_den"] += float(fde_den_B[b])
                for k in ("mse", "ade_num", "fde_num"):
                    s[k] += float(model[k][b])
                    s[k + "_static"] += float(static[k][b])
                d = float(model["mse"][b]) - float(static["mse"][b])  # paired per-sample difference
                s["dmse"] += d
                s["dmse2"] += d * d

    def result(self) -> dict[str, dict[str, float]]:
        """{domain or 'overall': {samples, track_mse, ade_px, fde_px, their *_static, skill_*, skill_mse_ci95}}."""
        out = {}
        for key, s in self.sums.items():
            n, ade_den, fde_den = max(s["n"], 1), max(s["ade_den"], 1), max(s["fde_den"], 1)
            r = {"samples": int(s["n"]),
                 "track_mse": s["mse"] / n, "ade_px": s["ade_num"] / ade_den, "fde_px": s["fde_num"] / fde_den,
                 "track_mse_static": s["mse_static"] / n, "ade_px_static": s["ade_num_static"] / ade_den,
                 "fde_px_static": s["fde_num_static"] / fde_den}
            r["skill_mse"] = skill(r["track_mse"], r["track_mse_static"])
            r["skill_mse_ci95"] = _skill_ci95(s, n, r["track_mse_static"])
            r["skill_ade"] = skill(r["ade_px"], r["ade_px_static"])
            r["skill_fde"] = skill(r["fde_px"], r["fde_px_static"])
            out[key] = r
        return dict(sorted(out.items(), key=lambda kv: (kv[0] == "overall", ":" in kv[0], kv[0])))
