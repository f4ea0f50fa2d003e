"""Checkpoint helpers: safetensors weights, one-line errors, optimizer state, atomic commits."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from trajmoe.train import load_run_config, load_weights, save_weights
from trajmoe.train.checkpoint import (
    commit_checkpoint,
    latest_checkpoint,
    load_optimizer,
    read_tensors,
    save_optimizer,
    truncate_metrics,
)


class Tied(nn.Module):
    def __init__(self, vocab: int = 10, dim: int = 4):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, vocab, bias=False)
        self.head.weight = self.embed.weight  # tied: one tensor under two names
        self.register_buffer("counts_E", torch.arange(3))


def test_round_trip_with_tied_weights_and_buffers(tmp_path):
    torch.manual_seed(0)
    a = Tied()
    a.counts_E += 5
    save_weights(a, tmp_path / "w.safetensors")
    torch.manual_seed(1)
    b = Tied()
    assert load_weights(b, tmp_path / "w.safetensors") == ([], [])
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k]), k
    assert b.head.weight is b.embed.weight  # still tied after loading
    assert not list(tmp_path.glob(".*tmp"))  # no temp files left behind


def test_corrupt_or_missing_file_is_one_line_error_naming_it(tmp_path):
    path = tmp_path / "model.safetensors"
    save_weights(Tied(), path)
    path.write_bytes(path.read_bytes()[:40])  # truncated: a crash of a non-atomic writer
    with pytest.raises(ValueError) as info:
        load_weights(Tied(), path)
    assert str(path) in str(info.value) and "corrupt" in str(info.value) and "\n" not in str(info.value)
    path.write_bytes(b"not a safetensors file at all")
    with pytest.raises(ValueError, match="corrupt safetensors file"):
        read_tensors(path)
    with pytest.raises(FileNotFoundError, match="nope.safetensors"):
        load_weights(Tied(), tmp_path / "nope.safetensors")


def test_mismatched_keys_and_shapes(tmp_path):
    path = tmp_path / "w.safetensors"
    save_weights(Tied(vocab=10), path)
    with pytest.raises(ValueError) as info:
        load_weights(Tied(vocab=12), path)
    msg = str(info.value)
    assert "shape mismatch" in msg and "embed.weight: file (10, 4) vs model (12, 4)" in msg and "\n" not in msg
    other = nn.Sequential(nn.Linear(4, 4))
    with pytest.raises(ValueError, match=r"missing keys \[0.weight, 0.bias\]; unexpected keys"):
        load_weights(other, path)
    # non-strict: loads the overlap and reports the rest
    partial = {"embed.weight": torch.ones(10, 4)}
    save_weights(partial, tmp_path / "p.safetensors")
    m = Tied()
    missing, unexpected = load_weights(m, tmp_path / "p.safetensors", strict=False)
    assert torch.equal(m.embed.weight, torch.ones(10, 4)) and "norm.weight" in missing and unexpected == []


def test_load_run_config_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_run_config(tmp_path)
    (tmp_path / "config.json").write_text("{broken")
    with pytest.raises(ValueError, match="corrupt JSON"):
        load_run_config(tmp_path)
    (tmp_path / "config.json").write_text('{"model": {"dim": 4}}')
    assert load_run_config(tmp_path) == {"model": {"dim": 4}}
    assert load_run_config(tmp_path / "config.json") == {"model": {"dim": 4}}


def test_optimizer_state_round_trip(tmp_path):
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, betas=(0.8, 0.95))
    for _ in range(3):
        model(torch.randn(5, 3)).square().mean().backward()
        opt.step()
        opt.zero_grad()
    save_optimizer(opt, tmp_path)
    opt2 = torch.optim.AdamW(model.parameters(), lr=1.0)
    load_optimizer(opt2, tmp_path)
    s1, s2 = opt.state_dict(), opt2.state_dict()
    assert s2["param_groups"][0]["betas"] == (0.8, 0.95) and s2["param_groups"][0]["lr"] == 1e-2
    for pid, st in s1["state"].items():
        for k, v in st.items():
            assert torch.equal(v, s2["state"][pid][k]), (pid, k)
    with pytest.raises(ValueError, match="does not match the trainable parameters"):
        load_optimizer(torch.optim.AdamW([nn.Parameter(torch.zeros(1))]), tmp_path)


def test_crash_mid_checkpoint_keeps_previous(tmp_path):
    model = Tied()
    commit_checkpoint(tmp_path, 5, lambda d: save_weights(model, d / "model.safetensors"))
    assert latest_checkpoint(tmp_path)[0] == 5

    def crashing(d):
        save_weights(Tied(vocab=3), d / "model.safetensors")
        raise KeyboardInterrupt  # killed half-way through writing step 10

    with pytest.raises(KeyboardInterrupt):
        commit_checkpoint(tmp_path, 10, crashing)
    step, cdir = latest_checkpoint(tmp_path)
    assert step == 5 and cdir.name == "step_00000005"
    load_weights(Tied(), tmp_path / "model.safetensors")  # top-level weights still the step-5 ones
    load_weights(Tied(), cdir / "model.safetensors")
    # the next save cleans the leftovers and older step directories
    commit_checkpoint(tmp_path, 10, lambda d: save_weights(model, d / "model.safetensors"))
    names = sorted(p.name for p in (tmp_path / "state").iterdir())
    assert names == ["latest.json", "step_00000010"]


def test_truncate_metrics_drops_lines_after_checkpoint(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "loss": 1.0}\n{"step": 2, "loss": 0.5}\n{"step": 3, "lo')
    truncate_metrics(path, 1)
    assert path.read_text() == '{"step": 1, "loss": 1.0}\n'
