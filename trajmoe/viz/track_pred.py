"""Predicted (solid) vs ground-truth (dashed) tracks drawn on a few samples' frames."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np
import torch

from ..io import atomic_path


def plot_predictions(run_dir: str, data_dirs: list[str], out: str | Path, samples: int = 6, seed: int = 0) -> str:
    """Predicted (solid) and ground-truth (dashed) tracks of `samples` evenly spaced samples of the
    run's dataset over `data_dirs`, drawn on their frames (px); returns the written image's path.

    Args:
        run_dir: a track-model run folder (config + weights); data_dirs: episode folders;
        out: image path (format from its suffix); seed: per-sample augmentation rng seed.
    """
    from ..config import from_dict
    from ..families import family
    from ..track.config import TrackDataConfig
    from ..track.run import build_dataset

    model, run_cfg = family("track").from_run(run_dir)
    data = from_dict(TrackDataConfig, run_cfg.get("data", {}), f"{run_dir} data")
    ds = build_dataset(data_dirs, model.cfg, data, heldout=True)
    pick = np.linspace(0, len(ds) - 1, num=min(samples, len(ds))).round().astype(int)
    cols = min(3, len(pick))
    rows = (len(pick) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.3 * cols, 3.4 * rows), squeeze=False)
    S = model.cfg.img_size
    for ax, i in zip(axes.flat, pick):
        it = ds.get(int(i), np.random.default_rng([seed, int(i)]))
        with torch.no_grad():
            pred = model.predict(torch.as_tensor(it["image"])[None], torch.as_tensor(it["tracks"][0])[None],
                                 torch.as_tensor(it["task_emb"])[None])[0].numpy()
        ax.imshow(it["image"].transpose(1, 2, 0))
        colors = plt.cm.hsv(np.linspace(0, 1, pred.shape[1], endpoint=False))
        for n in range(pred.shape[1]):
            ax.plot(it["tracks"][:, n, 0] * S, it["tracks"][:, n, 1] * S, "--", color=colors[n], lw=0.8, alpha=0.8)
            ax.plot(pred[:, n, 0] * S, pred[:, n, 1] * S, "-", color=colors[n], lw=1.2)
            ax.plot(pred[0, n, 0] * S, pred[0, n, 1] * S, "o", color=colors[n], ms=2)
        ax.set_xlim(0, S)
        ax.set_ylim(S, 0)
        src = Path(it["source"].split(":")[0])
        ax.set_title(f"{src.parent.name}/{src.stem}"[:40] + f"\n{it['source'].split(':', 1)[1]}", fontsize=7)
        ax.axis("off")
    for ax in axes.flat[len(pick):]:
        ax.axis("off")
    fig.suptitle("track prediction: solid = predicted, dashed = ground truth", fontsize=9)
    fig.tight_layout()
    out = Path(out)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=110, format=out.suffix.lstrip(".") or "png")
    plt.close(fig)
    return str(out)
