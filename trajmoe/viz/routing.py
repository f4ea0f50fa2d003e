"""Domain x expert routing heatmaps (one panel per MoE layer)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np

from ..io import atomic_path


def plot_routing(fractions: dict[str, dict[str, list[float]]], out: str | Path, title: str = "",
                 row_label: str = "domain") -> str:
    """Heatmap per MoE layer: fractions {layer name: {row name: [share of the row's tokens per
    expert] (E,)}} -> the written image's path (format from `out`'s suffix, PNG by default).

    Raises:
        ValueError: no layer has any statistics.
    """
    layers = [k for k, v in fractions.items() if v]
    if not layers:
        raise ValueError("no routing statistics to draw")
    fig, axes = plt.subplots(1, len(layers), figsize=(3.2 * len(layers) + 1, 0.45 * max(len(fractions[layers[0]]), 3) + 1.5),
                             squeeze=False)
    for ax, layer in zip(axes[0], layers):
        rows = list(fractions[layer])
        m = np.array([fractions[layer][r] for r in rows])
        im = ax.imshow(m, vmin=0, vmax=1, cmap="viridis", aspect="auto")
        ax.set_title(layer)
        ax.set_xticks(range(m.shape[1]), [f"e{i}" for i in range(m.shape[1])])
        ax.set_yticks(range(len(rows)), rows if ax is axes[0][0] else [""] * len(rows))
        for (r, c), v in np.ndenumerate(m):
            ax.text(c, r, f"{v:.2f}", ha="center", va="center", fontsize=7, color="w" if v < 0.6 else "k")
    axes[0][0].set_ylabel(row_label)
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8, label="share of tokens")
    if title:
        fig.suptitle(title, fontsize=9)
    out = Path(out)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=110, format=out.suffix.lstrip(".") or "png")
    plt.close(fig)
    return str(out)
