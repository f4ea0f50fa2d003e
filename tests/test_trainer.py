"""Trainer unit tests on a tiny regression model and a small deterministic dataset (CPU)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from trajmoe.train import TrainConfig, Trainer, TrainingError, load_run_config, load_weights
from trajmoe.train.checkpoint import latest_checkpoint, read_tensors
from trajmoe.train.schedule import lr_at
from trajmoe.train.batches import global_batch_indices, sample_cdf

MODEL_CFG = {"dim": 4, "hidden": 16}


class RegressionData:
    """y = x @ w on fixed inputs; `get` adds input jitter drawn only from the given rng."""

    def __init__(self, n: int = 64, d: int = 4, seed: int = 0):
        g = np.random.default_rng(seed)
        self.x = g.normal(size=(n, d)).astype(np.float32)
        self.y = (self.x @ g.normal(size=(d, 1))).astype(np.float32)

    def __len__(self) -> int:
        return len(self.x)

    def get(self, index: int, rng: np.random.Generator) -> dict:
        x = self.x[index] + rng.normal(0.0, 0.01, size=self.x.shape[1]).astype(np.float32)
        return {"x": torch.from_numpy(x), "y": torch.from_numpy(self.y[index]), "index": index,
                "source": f"episode_{index:03d}.hdf5"}


class TinyRegressor(nn.Module):
    def __init__(self, dim: int = 4, hidden: int = 16, dropout: float = 0.1, frozen: bool = False):
        super().__init__()
        self.frozen = nn.Linear(dim, dim) if frozen else None
        if self.frozen is not None:
            self.frozen.requires_grad_(False)
        self.norm = nn.LayerNorm(dim)
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, 1))
        self.register_buffer("seen", torch.zeros((), dtype=torch.long))
        self.nan_at_call = self.crash_at_call = None
        self.calls, self.indices = 0, []

    def forward(self, batch: dict):
        self.calls += 1
        self.indices.extend(int(i) for i in batch["index"])
        x_BD = batch["x"]  # (B, D)
        if self.frozen is not None:
            x_BD = x_BD + self.frozen(x_BD)
        loss = F.mse_loss(self.net(self.norm(x_BD)), batch["y"])
        self.seen += len(x_BD)
        if self.calls == self.crash_at_call:
            raise RuntimeError("simulated crash")
        if self.calls == self.nan_at_call:
            loss = loss * float("nan")
        return loss, {"mse": loss.detach(), "batch": float(len(x_BD))}


def cfg_(**kw) -> TrainConfig:
    base = dict(steps=12, batch_size=8, lr=1e-2, warmup_steps=2, log_every=1, ckpt_every=4,
                progress=False, device="cpu", weight_decay=1e-4)
    return TrainConfig(**{**base, **kw})


def losses(run: Path) -> list[tuple[int, float]]:
    lines = [json.loads(s) for s in (run / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"]) for r in lines if "loss" in r]


def model_(seed: int = 0, **kw) -> TinyRegressor:
    torch.manual_seed(seed)
    return TinyRegressor(**kw)


def test_loss_decreases_and_run_dir_is_complete(tmp_path):
    run = tmp_path / "run"
    model = model_()
    out = Trainer(model, RegressionData(), cfg_(steps=80, batch_size=16, log_every=10, ckpt_every=0, progress=True),
                  run, {"model": MODEL_CFG, "data": "regression"}).fit()
    recs = losses(run)
    assert [s for s, _ in recs] == list(range(10, 81, 10))
    assert recs[-1][1] < 0.2 * recs[0][1], recs
    assert out["step"] == 80 and out["loss"] == recs[-1][1] and "mse" in out and out["batch"] == 16.0
    first = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
    assert {"step", "loss", "lr", "grad_norm", "samples_per_s", "mse"} <= set(first)
    cfg = load_run_config(run)
    assert cfg["model"] == MODEL_CFG and cfg["data"] == "regression" and cfg["train"]["steps"] == 80
    assert list((run / "tb").iterdir()), "no TensorBoard events"
    assert latest_checkpoint(run)[0] == 80 and not (run / "model_ema.safetensors").exists()
    fresh = model_(seed=5)
    load_weights(fresh, run / "model.safetensors")
    assert int(fresh.seen) == 80 * 16  # buffers are saved too
    assert torch.equal(fresh.net[0].weight, model.net[0].weight)


def test_resume_reproduces_uninterrupted_run_exactly(tmp_path):
    cfg = cfg_(ema_decay=0.9)
    full = tmp_path / "full"
    ref = model_()
    Trainer(ref, RegressionData(), cfg, full, {"model": MODEL_CFG}).fit()

    part = tmp_path / "part"
    crashing = model_()
    crashing.crash_at_call = 7  # dies during step 7: steps 5-6 were logged after the step-4 checkpoint
    with pytest.raises(RuntimeError, match="simulated crash"):
        Trainer(crashing, RegressionData(), cfg, part, {"model": MODEL_CFG}).fit()
    assert latest_checkpoint(part)[0] == 4
    resumed = model_(seed=123)  # different init: everything must come from the checkpoint
    Trainer(resumed, RegressionData(), cfg, part, {"model": MODEL_CFG}, resume=True).fit()

    assert losses(part) == losses(full)  # exact, and each step logged once
    assert [s for s, _ in losses(part)] == list(range(1, 13))
    for name, v in ref.state_dict().items():
        assert torch.equal(v, resumed.state_dict()[name]), name
    ema_full, ema_part = read_tensors(full / "model_ema.safetensors"), read_tensors(part / "model_ema.safetensors")
    assert all(torch.equal(ema_full[k], ema_part[k]) for k in ema_full)


def test_batches_do_not_depend_on_workers(tmp_path):
    a, b = model_(), model_()
    Trainer(a, RegressionData(), cfg_(steps=4), tmp_path / "w0", {"model": MODEL_CFG}).fit()
    Trainer(b, RegressionData(), cfg_(steps=4, num_workers=2), tmp_path / "w2", {"model": MODEL_CFG}).fit()
    assert losses(tmp_path / "w0") == losses(tmp_path / "w2")
    assert torch.equal(a.net[0].weight, b.net[0].weight)


def test_nan_loss_raises_and_keeps_last_good_checkpoint(tmp_path):
    run = tmp_path / "run"
    model = model_()
    model.nan_at_call = 8
    trainer = Trainer(model, RegressionData(), cfg_(ckpt_every=5), run, {"model": MODEL_CFG})
    with pytest.raises(TrainingError) as info:
        trainer.fit()
    msg = str(info.value)
    assert "step 8" in msg and "episode_" in msg and ".hdf5" in msg and "step 5" in msg and "\n" not in msg
    step, cdir = latest_checkpoint(run)
    assert step == 5
    fresh = model_(seed=9)
    load_weights(fresh, run / "model.safetensors")
    assert int(fresh.seen) == 5 * 8
    assert all(torch.isfinite(p).all() for p in fresh.parameters())
    assert max(s for s, _ in losses(run)) == 7  # the bad step was never logged nor applied
    # and the run can be resumed from the good checkpoint
    Trainer(model_(seed=1), RegressionData(), cfg_(ckpt_every=5), run, {"model": MODEL_CFG}, resume=True).fit()
    assert latest_checkpoint(run)[0] == 12


def test_refuses_architecture_mismatch_and_overwrite(tmp_path):
    run = tmp_path / "run"
    Trainer(model_(), RegressionData(), cfg_(steps=2), run, {"model": MODEL_CFG}).fit()
    with pytest.raises(ValueError, match=r"hidden \(16 != 32\)"):
        Trainer(model_(hidden=32), RegressionData(), cfg_(steps=4), run, {"model": {**MODEL_CFG, "hidden": 32}}, resume=True)
    with pytest.raises(ValueError, match="--resume"):
        Trainer(model_(), RegressionData(), cfg_(steps=4), run, {"model": MODEL_CFG})
    # extending a finished run with more steps is a valid resume
    out = Trainer(model_(), RegressionData(), cfg_(steps=4), run, {"model": MODEL_CFG}, resume=True).fit()
    assert out["step"] == 4 and load_run_config(run)["train"]["steps"] == 4


def test_ema_weights_differ_from_raw(tmp_path):
    run = tmp_path / "run"
    Trainer(model_(), RegressionData(), cfg_(ema_decay=0.95, steps=20), run, {"model": MODEL_CFG}).fit()
    raw, ema = read_tensors(run / "model.safetensors"), read_tensors(run / "model_ema.safetensors")
    assert raw.keys() == ema.keys()
    assert not torch.allclose(raw["net.0.weight"], ema["net.0.weight"])
    assert torch.equal(raw["seen"], ema["seen"])  # integer buffers are copied, not averaged
    load_weights(model_(), run / "model_ema.safetensors")


def test_weighted_sampling_follows_weights(tmp_path):
    cdf = sample_cdf([0.0, 1.0, 3.0, 0.0], 4)
    idx = np.concatenate([global_batch_indices(0, s, 4, 256, cdf) for s in range(1, 41)])
    counts = np.bincount(idx, minlength=4)
    assert counts[0] == 0 and counts[3] == 0
    assert 2.7 < counts[2] / counts[1] < 3.3, counts
    uni = np.concatenate([global_batch_indices(0, s, 4, 256) for s in range(1, 41)])
    assert np.bincount(uni, minlength=4).min() > 2000
    assert np.array_equal(global_batch_indices(3, 7, 10, 8), global_batch_indices(3, 7, 10, 8))
    assert not np.array_equal(global_batch_indices(3, 7, 10, 8), global_batch_indices(3, 8, 10, 8))
    with pytest.raises(ValueError, match="one weight per"):
        sample_cdf([1.0, 2.0], 4)

    data = RegressionData(n=8)
    model = model_()
    w = [0.0] * 8
    w[2], w[5] = 1.0, 1.0
    Trainer(model, data, cfg_(steps=5), tmp_path / "run", {"model": MODEL_CFG}, sample_weights=w).fit()
    assert set(model.indices) == {2, 5} and len(model.indices) == 40


def test_frozen_parameters_stay_frozen(tmp_path):
    model = model_(frozen=True)
    before = {k: v.clone() for k, v in model.frozen.state_dict().items()}
    w0 = model.net[0].weight.detach().clone()
    trainer = Trainer(model, RegressionData(), cfg_(steps=5), tmp_path / "run", {"model": MODEL_CFG})
    opt_params = {id(p) for g in trainer.optimizer.param_groups for p in g["params"]}
    assert not any(id(p) in opt_params for p in model.frozen.parameters())
    trainer.fit()
    for k, v in model.frozen.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert not torch.equal(model.net[0].weight, w0)
    # weight decay only on matrices: biases and LayerNorm go to the no-decay group
    decay_group, no_decay_group = trainer.optimizer.param_groups
    assert all(p.ndim >= 2 for p in decay_group["params"]) and no_decay_group["weight_decay"] == 0.0
    assert any(p is model.norm.weight for p in no_decay_group["params"])


def test_eval_fn_called_and_logged(tmp_path):
    calls = []

    def eval_fn(model, step):
        calls.append((step, model.training, torch.is_grad_enabled()))
        return {"score": float(step) * 2}

    run = tmp_path / "run"
    out = Trainer(model_(), RegressionData(), cfg_(steps=7, eval_every=3), run, {"model": MODEL_CFG}, eval_fn=eval_fn).fit()
    assert calls == [(3, False, False), (6, False, False), (7, False, False)]
    recs = [json.loads(s) for s in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["eval/score"] for r in recs if "eval/score" in r] == [6.0, 12.0, 14.0]
    assert out["eval/score"] == 14.0


def test_config_validation_and_schedule():
    with pytest.raises(ValueError, match="-1"):
        TrainConfig(lr=-1)
    with pytest.raises(ValueError, match="fp8"):
        TrainConfig(amp="fp8")
    with pytest.raises(ValueError, match="betas"):
        TrainConfig(betas=(0.9, 1.5))
    cfg = TrainConfig(steps=110, lr=1.0, warmup_steps=10, min_lr_ratio=0.1)
    assert lr_at(1, cfg) == pytest.approx(0.1) and lr_at(10, cfg) == pytest.approx(1.0)
    assert lr_at(11, cfg) == pytest.approx(1.0) and lr_at(61, cfg) == pytest.approx(0.55)
    assert 0.1 < lr_at(110, cfg) < 0.101
    lrs = [lr_at(s, cfg) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))


DDP_SCRIPT = """
import sys
sys.path.insert(0, {tests!r})
from test_trainer import RegressionData, model_, cfg_, MODEL_CFG
from trajmoe.train import Trainer
Trainer(model_(dropout=0.0), RegressionData(), cfg_(steps=6, ckpt_every=3), sys.argv[1], {{"model": MODEL_CFG}}).fit()
"""


def test_ddp_two_process_gloo_matches_single_process(tmp_path):
    script = tmp_path / "ddp_run.py"
    script.write_text(textwrap.dedent(DDP_SCRIPT.format(tests=str(Path(__file__).parent))))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script), str(tmp_path / "ddp")],
        env=env, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    single = model_(dropout=0.0)
    Trainer(single, RegressionData(), cfg_(steps=6, ckpt_every=3), tmp_path / "single", {"model": MODEL_CFG}).fit()
    ddp = model_(seed=7, dropout=0.0)
    load_weights(ddp, tmp_path / "ddp" / "model.safetensors")
    for k, v in single.named_parameters():
        assert torch.allclose(v, ddp.get_parameter(k), atol=1e-5), k
    l_ddp, l_single = losses(tmp_path / "ddp"), losses(tmp_path / "single")
    assert [s for s, _ in l_ddp] == list(range(1, 7))
    assert np.allclose([l for _, l in l_ddp], [l for _, l in l_single], rtol=1e-5)
    assert int(ddp.seen) == 6 * 4  # each rank saw its half of every global batch (rank 0's buffer is saved)


def test_bf16_autocast_and_rerun_after_a_death_before_first_checkpoint(tmp_path):
    run = tmp_path / "run"
    crashing = model_()
    crashing.crash_at_call = 3
    with pytest.raises(RuntimeError, match="simulated crash"):
        Trainer(crashing, RegressionData(), cfg_(steps=4, amp="bf16", ckpt_every=0), run, {"model": MODEL_CFG}).fit()
    assert latest_checkpoint(run) is None and len(losses(run)) == 2
    with pytest.raises(ValueError, match="nothing to resume.*no checkpoint"):  # never a silent start over
        Trainer(model_(), RegressionData(), cfg_(steps=4, amp="bf16", ckpt_every=0), run, {"model": MODEL_CFG},
                resume=True)
    out = Trainer(model_(), RegressionData(), cfg_(steps=4, amp="bf16", ckpt_every=0), run, {"model": MODEL_CFG}).fit()
    assert [s for s, _ in losses(run)] == [1, 2, 3, 4] and np.isfinite(out["loss"])
