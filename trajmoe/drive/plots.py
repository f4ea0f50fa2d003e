"""Pictures: scenes with the vocabulary's top candidates coloured by selection score and the chosen
plan (the routing heatmap: `trajmoe.viz.routing`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from trajmoe.drive import geometry as geo
from trajmoe.io import atomic_path


def _fig():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_scenes(path: str | Path, scenes: list[dict], plans: list[dict], vocab: np.ndarray, top: int = 32) -> None:
    """PNG with one panel per scene (ego frame, m): drivable area, agents, the `top` vocabulary
    trajectories coloured by selection score, the expert's and the chosen plan.

    Args:
        scenes: scene dicts (`trajmoe.drive.scenes`); plans: per scene {"scores": (V,), "plan8":
            (8, 3) chosen poses at 0.5 s}; vocab: (V, 40, 3) ego-frame poses (x m, y m, heading rad).
    """
    plt = _fig()
    n = len(scenes)
    fig, axs = plt.subplots(1, n, figsize=(4.5 * n, 4.5), squeeze=False)
    for ax, sc, pl in zip(axs[0], scenes, plans):
        ax.imshow(sc["dir_bits"] > 0, origin="lower", extent=[*geo.X_RANGE, *geo.Y_RANGE], cmap="Greys_r", alpha=0.35)
        for a in sc["agents"]:
            c = geo.box_corners(a[:2], a[2], a[5], a[6])
            ax.fill(c[:, 0], c[:, 1], color="tab:blue", alpha=0.6)
        order = np.argsort(pl["scores"])[::-1][:top]
        s = pl["scores"][order]
        norm = (s - s.min()) / max(s.max() - s.min(), 1e-9)
        for v, w in zip(order[::-1], norm[::-1]):
            ax.plot(vocab[v, :, 0], vocab[v, :, 1], color=plt.cm.viridis(w), lw=1, alpha=0.8)
        ax.plot(sc["expert"][:, 0], sc["expert"][:, 1], "k--", lw=1.5, label="expert")
        p8 = pl["plan8"]
        ax.plot(np.r_[0, p8[:, 0]], np.r_[0, p8[:, 1]], "r-o", ms=3, lw=2, label="chosen (8 poses)")
        c = geo.box_corners(np.zeros(2), 0.0, geo.PACIFICA_LENGTH, geo.PACIFICA_WIDTH)
        ax.fill(c[:, 0], c[:, 1], color="red")
        reach = max(20.0, float(np.abs(sc["expert"][:, :2]).max()) + 15)
        ax.set_xlim(-15, reach)
        ax.set_ylim(-reach / 2, reach / 2)
        ax.set_aspect("equal")
        ax.set_title(f"{sc['scenario']} seed {sc['seed']} t0 {sc['t0']}")
    axs[0][0].legend(loc="upper left", fontsize=7)
    fig.tight_layout()
    with atomic_path(path, suffix=".tmp.png") as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)

