"""Held-out learning curves of one or more runs (trajmoe.train.validation), x = training samples seen."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402

from ..io import atomic_path, read_json
from ..train.checkpoint import load_run_config
from ..train.validation import VALIDATION, read_curve


def higher_is_better(key: str) -> bool:
    """Skill scores, success rates and EPDMS rise as a model improves; errors and losses fall."""
    return any(w in key.lower() for w in ("skill", "success", "epdms", "auc", "accuracy"))


def plot_learning_curves(runs: list[str | Path], keys: list[str], out: str | Path, baseline: float | None = 0.0,
                         baseline_label: str = "baseline", labels: list[str] | None = None, title: str = "") -> str:
    """One panel per metric key (e.g. "eval/skill_mse", "eval/agentview/skill_ade"), one line per run, against
    training samples seen (step x the run's train.batch_size); each run's best evaluation is marked and its
    convergence verdict (RUN/validation.json) named in the legend; `baseline` drawn dashed (0 = the trivial
    baseline of a skill score; None = none). Returns the written image's path.

    Raises:
        FileNotFoundError: a run folder without config.json. ValueError: no run holds any of the keys.
    """
    labels = labels or [str(r) for r in runs]
    if len(labels) != len(runs):
        raise ValueError(f"{len(labels)} labels for {len(runs)} runs")
    fig, axes = plt.subplots(1, len(keys), figsize=(4.6 * len(keys), 3.6), squeeze=False)
    drawn = 0
    for ax, key in zip(axes[0], keys):
        for i, (run, label) in enumerate(zip(runs, labels)):
            run = Path(run)
            batch = int(load_run_config(run)["train"]["batch_size"])
            steps, vals = read_curve(run / "metrics.jsonl", key)
            if not steps:
                continue
            drawn += 1
            verdict = ""
            if (run / VALIDATION).is_file():
                c = read_json(run / VALIDATION).get("converged")
                verdict = {True: " (converged)", False: " (not converged)"}.get(c, "")
            xs = [s * batch for s in steps]
            ax.plot(xs, vals, color=f"C{i % 10}", label=label + verdict, lw=1.4)
            sign = 1.0 if higher_is_better(key) else -1.0
            best = max(range(len(vals)), key=lambda j: sign * vals[j])
            ax.plot([xs[best]], [vals[best]], "o", color=f"C{i % 10}", ms=4)
        if baseline is not None:
            ax.axhline(baseline, color="0.3", ls="--", lw=1.0, label=baseline_label)
        ax.set_xlabel("training samples seen")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
    if not drawn:
        raise ValueError(f"no run in {[str(r) for r in runs]} logged any of {keys} (train with --val to get a held-out curve)")
    axes[0][0].legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=110, format=Path(out).suffix.lstrip(".") or "png")
    plt.close(fig)
    return str(out)
