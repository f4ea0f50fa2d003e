"""Held-out validation during training: convergence rule, best checkpoint, resume (CPU, tiny regressor)."""

from __future__ import annotations

import json

import pytest
import torch

from test_trainer import MODEL_CFG, RegressionData, cfg_, model_
from trajmoe.train import Trainer, load_weights
from trajmoe.train.checkpoint import read_tensors
from trajmoe.train.validation import Selection, convergence, read_curve


def test_convergence_rule():
    steps = [100, 200, 300, 400, 500, 600, 700, 800]
    rising = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]
    flat = [0.1, 0.4, 0.5, 0.55, 0.58, 0.60, 0.601, 0.602]
    assert convergence(steps, rising)["converged"] is False
    v = convergence(steps, flat)
    assert v["converged"] is True and v["best"] == 0.602 and v["best_step"] == 800
    assert v["relative_gain"] == pytest.approx((0.602 - 0.60) / 0.60)
    # "min" mode: an error that keeps falling has not converged; one that rises again has
    assert convergence(steps, [8, 7, 6, 5, 4, 3, 2, 1], "min")["converged"] is False
    assert convergence(steps, [8, 4, 3, 2.9, 2.9, 3.0, 3.1, 3.2], "min")["converged"] is True
    assert convergence(steps[:3], rising[:3])["converged"] is None  # too few evaluations to judge
    assert convergence([], [])["best"] is None
    with pytest.raises(ValueError, match="mode"):
        convergence(steps, rising, "up")
    with pytest.raises(ValueError, match="mode"):
        Selection("x", "largest")


def _score_fn(values: dict[int, float]):
    return lambda model, step: {"score": values[step]}


def test_best_checkpoint_kept_beside_last_and_survives_resume(tmp_path):
    values = {2: 0.1, 4: 0.5, 6: 0.3, 8: 0.2}
    run = tmp_path / "run"
    snapshots = {}

    def eval_fn(model, step):
        snapshots[step] = {k: v.clone() for k, v in model.state_dict().items()}
        return {"score": values[step]}

    tr = Trainer(model_(), RegressionData(), cfg_(steps=6, eval_every=2, ckpt_every=2), run, {"model": MODEL_CFG},
                 eval_fn=eval_fn, select=Selection("score", "max"))
    tr.fit()
    best = json.loads((run / "best" / "eval.json").read_text())
    assert best["step"] == 4 and best["metrics"]["score"] == 0.5 and best["samples_seen"] == 4 * 8
    saved = read_tensors(run / "best" / "model.safetensors")
    assert all(torch.equal(saved[k], snapshots[4][k]) for k in saved)  # the step-4 weights, not the last
    assert json.loads((run / "best" / "config.json").read_text())["model"] == MODEL_CFG  # loadable run folder
    m = model_()
    load_weights(m, run / "best" / "model.safetensors")
    # resume to step 8: step 8's 0.2 does not beat step 4's 0.5 recorded before the resume
    out = Trainer(model_(), RegressionData(), cfg_(steps=8, eval_every=2, ckpt_every=2), run, {"model": MODEL_CFG},
                  eval_fn=_score_fn(values), select=Selection("score", "max"), resume=True).fit()
    assert json.loads((run / "best" / "eval.json").read_text())["step"] == 4
    v = json.loads((run / "validation.json").read_text())
    assert v["metric"] == "score" and v["best_step"] == 4 and v["evaluations"] == 4 and v["converged"] is True
    assert out["converged"] is True and out["best_step"] == 4 and out["best/score"] == 0.5
    assert read_curve(run / "metrics.jsonl", "eval/score") == ([2, 4, 6, 8], [0.1, 0.5, 0.3, 0.2])


def test_selection_metric_missing_is_one_line_error(tmp_path):
    with pytest.raises(KeyError, match="'skill'.*score"):
        Trainer(model_(), RegressionData(), cfg_(steps=2, eval_every=1), tmp_path / "run", {"model": MODEL_CFG},
                eval_fn=lambda m, s: {"score": 1.0}, select=Selection("skill")).fit()
