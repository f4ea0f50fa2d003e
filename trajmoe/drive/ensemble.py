"""Ensembles of planners (TrajMoE paper Sec. II.D): weighted average of the members' sub-score
predictions (and imitation probabilities), then the usual selection.

All members must share the vocabulary (runs trained on the same scenes with the same
`data.vocab_seed` do). An ensemble directory holds `ensemble.json` {runs, weights}.
Legend: B batch, V vocabulary trajectories, M scored metrics.
"""

from __future__ import annotations

from pathlib import Path

import torch

from trajmoe.drive.config import SelectionWeights
from trajmoe.drive.model import select_plan
from trajmoe.config import RUN_KINDS
from trajmoe.drive.run import from_run
from trajmoe.io import atomic_write_json, read_json

ENSEMBLE_FILE = "ensemble.json"


class Ensemble:
    """Planners averaged with normalised weights; quacks like a DrivePlanner for evaluation.

    Raises:
        ValueError: no models, a weight count that differs from the model count, a negative
            weight or a non-positive sum, or members with different vocabularies.
    """

    def __init__(self, models: list, weights: list[float] | None = None):
        if not models:
            raise ValueError("an ensemble needs at least one run")
        weights = [1.0] * len(models) if weights is None else [float(w) for w in weights]
        if len(weights) != len(models):
            raise ValueError(f"--weights has {len(weights)} values for {len(models)} runs")
        if any(w < 0 for w in weights) or sum(weights) <= 0:
            raise ValueError(f"ensemble weights must be >= 0 with a positive sum, got {weights}")
        v0 = models[0].vocab
        for i, m in enumerate(models[1:], 1):
            if m.vocab.shape != v0.shape or not torch.equal(m.vocab, v0):
                raise ValueError(f"run #{i} has a different vocabulary from run #0; ensemble members must share it")
        self.models = models
        total = sum(weights)
        self.weights = [w / total for w in weights]
        self.vocab = v0
        self.cfg = models[0].cfg

    @torch.no_grad()
    def predict(self, batch: dict) -> dict[str, torch.Tensor]:
        """Weighted mean of the members' sub-score probabilities "probs" (B, V, M) and imitation
        probabilities, returned as log "imi_logp" (B, V) (TrajMoE paper Sec. II.D)."""
        probs, imi = 0.0, 0.0
        for w, m in zip(self.weights, self.models):
            p = m.predict(batch)
            probs = probs + w * p["probs"]
            imi = imi + w * p["imi_logp"].exp()
        return {"probs": probs, "imi_logp": torch.log(imi.clamp_min(1e-30))}

    @torch.no_grad()
    def plan(self, batch: dict, weights: SelectionWeights | None = None,
             prev_plan8: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """`select_plan` on the averaged predictions (weights: the first member's selection by default)."""
        return select_plan(self.predict(batch), self.vocab, weights or self.cfg.selection, prev_plan8)

    def eval(self):
        """No-op (members are loaded in eval mode); returns self, as nn.Module.eval does."""
        return self


def write_ensemble(out: str | Path, runs: list[str], weights: list[float] | None) -> dict:
    """Validate the runs (loading each) and write `out/ensemble.json`; returns the spec written.

    Raises:
        ValueError / FileNotFoundError: as `Ensemble` and `from_run` (bad weights, missing run,
            different vocabularies).
    """
    ens = Ensemble([from_run(r)[0] for r in runs], weights)  # validates runs, weights, vocabularies
    spec = {"kind": RUN_KINDS["planner-ensemble"], "runs": [str(Path(r)) for r in runs], "weights": ens.weights}
    atomic_write_json(Path(out) / ENSEMBLE_FILE, spec)
    return spec


def load_any(path: str | Path):
    """A run directory -> DrivePlanner; an ensemble directory -> Ensemble.

    Raises:
        FileNotFoundError: `path` is not a directory; ValueError: a malformed ensemble.json.
    """
    path = Path(path)
    if (path / ENSEMBLE_FILE).is_file():
        spec = read_json(path / ENSEMBLE_FILE)
        if not isinstance(spec, dict) or not isinstance(spec.get("runs"), list) or "weights" not in spec:
            raise ValueError(f"{path / ENSEMBLE_FILE} must hold {{'runs': [...], 'weights': [...]}}")
        return Ensemble([from_run(r)[0] for r in spec["runs"]], spec["weights"])
    if not path.is_dir():
        raise FileNotFoundError(f"missing run directory: {path}")
    return from_run(path)[0]
