"""Learned adaptive-mask values per track timestep next to the hand-drawn ones (Tra-MoE Sec. 3.2)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np

from ..io import atomic_path


def plot_mask_values(learned_T: np.ndarray, drawn_T: np.ndarray, out: str | Path, title: str = "",
                     history_ST: np.ndarray | None = None) -> str:
    """PNG: value per track timestep (0 = the query point), learned (solid) vs drawn (dashed);
    `history_ST` (S snapshots, T) adds faint lines for earlier snapshots. Returns the path.

    Args:
        learned_T, drawn_T: (T,) mask values in [0, 1] (Tra-MoE paper, Yang et al., Sec. 3.2).

    Raises:
        ValueError: learned_T and drawn_T are not both (T,).
    """
    learned_T, drawn_T = np.asarray(learned_T, float), np.asarray(drawn_T, float)
    if learned_T.shape != drawn_T.shape or learned_T.ndim != 1:
        raise ValueError(f"learned and drawn values must both be (T,), got {learned_T.shape} and {drawn_T.shape}")
    t = np.arange(len(learned_T))
    f, ax = plt.subplots(figsize=(5, 3.2))
    if history_ST is not None:
        for i, h in enumerate(np.asarray(history_ST, float)):
            ax.plot(t, h, color="C0", alpha=0.15 + 0.5 * i / max(len(history_ST) - 1, 1), lw=0.8)
    ax.plot(t, drawn_T, "--", color="C1", label="drawn (128/255, then 255/255)")
    ax.plot(t, learned_T, "o-", color="C0", label="learned (adaptive)")
    ax.set_xlabel("track timestep")
    ax.set_ylabel("mask value")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=9)
    f.tight_layout()
    out = Path(out)
    with atomic_path(out) as tmp:
        f.savefig(tmp, dpi=110, format="png")
    plt.close(f)
    return str(out)
