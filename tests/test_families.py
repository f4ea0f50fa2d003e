"""One battery over every preset of every registered model family (as timm's test_models.py):
forward, backward on the family's `example_batch`, every parameter gets a finite gradient, no NaN,
save/load round trip through a run folder (config.json + safetensors, the family's `from_run`),
parameter counts. A new preset is tested by being registered in its family's PRESETS."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from trajmoe.config import to_dict
from trajmoe.families import families, family
from trajmoe.io import atomic_write_json
from trajmoe.moe import MoE
from trajmoe.nn import count_params
from trajmoe.policy.config import CONDITIONINGS
from trajmoe.train.checkpoint import save_weights

FAMILIES = families()
CASES = [(f, p) for f in FAMILIES for p in FAMILIES[f].presets]
POLICY_IMG = 64  # policy frames at 64 px (every preset's patch grid divides it): seconds, not minutes
VOCAB = 16  # the planner's vocabulary comes from the data; a small one keeps the paper-size preset fast


@pytest.fixture(scope="module")
def track_run(tmp_path_factory):
    """A saved tiny track model: the frozen track model of the policies that use one."""
    fam = family("track")
    cfg = fam.presets["tiny-dense"].model.replace(depth=1, dim=32, heads=2, zero_init_head=False)
    torch.manual_seed(0)
    tm = fam.build(cfg).eval()
    path = tmp_path_factory.mktemp("track_run")
    save_weights(tm, path / "model.safetensors")
    atomic_write_json(path / "config.json", {"kind": fam.kind, "model": to_dict(cfg)})
    return path


def _vocab() -> np.ndarray:
    g = np.random.default_rng(1)
    t = np.arange(1, 41) * 0.1
    x, y = g.uniform(0, 25, VOCAB)[:, None] * t, g.uniform(-3, 3, VOCAB)[:, None] * (t / 4) ** 2
    return np.stack([x, y, np.arctan2(np.gradient(y, axis=1), np.gradient(x, axis=1) + 1e-6)], -1).astype(np.float32)


def _setup(fam_name: str, preset: str, request, conditioning: str | None = None):
    """(model config, model, batch, outputs(model) -> tensors, extra run-config keys)."""
    fam = family(fam_name)
    cfg = fam.presets[preset].model
    torch.manual_seed(0)
    extra = {}
    if fam_name == "policy":
        cfg = dataclasses.replace(cfg, img_size=POLICY_IMG, conditioning=conditioning or cfg.conditioning)
        extra = {"track_run": None, "track_model": None}
        if cfg.uses_track_model:
            path = request.getfixturevalue("track_run")
            tm, _ = family("track").from_run(path)
            cfg = dataclasses.replace(cfg, track_len=tm.cfg.track_len, lang_dim=tm.cfg.lang_dim)
            extra = {"track_run": str(path), "track_model": to_dict(tm.cfg)}
    elif fam_name == "planner":
        cfg = dataclasses.replace(cfg, vocab_size=VOCAB, moe=dataclasses.replace(cfg.moe, num_domains=4))
    model = fam.build(cfg)
    if extra.get("track_run"):
        model.set_track_model(tm)
    if fam_name == "planner":
        model.vocab.copy_(torch.from_numpy(_vocab()))  # the k-means vocabulary of a run (a buffer saved with it)
    b = fam.example_batch(cfg)
    outputs = {"track": lambda m: m.predict(b["image"], b["tracks"][:, 0], b["task_emb"]),
               "policy": lambda m: m.predict_actions(b), "planner": lambda m: m.predict(b)["probs"]}[fam_name]
    return cfg, model, b, outputs, extra


def _battery(fam_name: str, preset: str, request, tmp_path, conditioning: str | None = None):
    cfg, model, batch, outputs, extra = _setup(fam_name, preset, request, conditioning)
    model.train()
    loss, logs = model(batch)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    if fam_name == "track":  # a track expert that got no token this step legitimately has no gradient
        no_grad = [n for n in no_grad if ".experts." not in n]
    assert not no_grad, no_grad
    # parameter counts: positive, the module's own parameters, active = total minus idle experts and routers
    pc = count_params(model)
    assert pc.total == sum(p.numel() for p in model.parameters()) > 0
    moes = [m for m in model.modules() if isinstance(m, MoE)]
    assert len(moes) == len(cfg.moe.layers if hasattr(cfg, "moe") else ())
    idle = sum((m.cfg.num_experts - m.cfg.top_k) * sum(p.numel() for p in m.experts.parameters()) // m.cfg.num_experts
               + sum(p.numel() for p in m.router.parameters()) for m in moes)
    assert pc.active_per_token == pc.total - idle and (pc.active_per_token < pc.total) == bool(moes)
    # round trip through a run folder and the family's loader (EMA weights absent: the plain ones);
    # every weight moved off its initial value first (zero-initialised heads, adaptive-mask deltas)
    model.eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
        ref = outputs(model)
    assert torch.isfinite(ref).all()
    fam = family(fam_name)
    save_weights(model, tmp_path / "model.safetensors")
    atomic_write_json(tmp_path / "config.json", {"kind": fam.kind, "model": to_dict(cfg), **extra})
    loaded, run_cfg = fam.from_run(tmp_path, device="cpu", ema=True)
    assert run_cfg["kind"] == fam.kind and not loaded.training and loaded.cfg == cfg
    with torch.no_grad():
        torch.testing.assert_close(outputs(loaded), ref, rtol=0, atol=0)
    return model, batch, logs


@pytest.mark.parametrize("fam_name,preset", CASES)
def test_every_preset_of_every_family(fam_name, preset, request, tmp_path):
    model, batch, logs = _battery(fam_name, preset, request, tmp_path)
    cfg = model.cfg
    if fam_name == "track":
        assert model.predict(batch["image"], batch["tracks"][:, 0], batch["task_emb"]).shape == batch["tracks"].shape
        assert ("z_loss" in logs) == bool(cfg.moe.layers)
    elif fam_name == "planner":
        for key in ("cv2_loss", "z_loss"):  # every MoE model logs its balance loss and its z-loss
            assert (key in logs) == bool(cfg.moe.layers) and (not cfg.moe.layers or logs[key] >= 0)
        out = model.plan(batch)
        assert out["plan8"].shape == (len(batch["ego"]), 8, 3)
        assert torch.equal(out["plan8"], model.vocab[out["index"]][:, 4::5])


@pytest.mark.parametrize("mode", CONDITIONINGS)
def test_every_policy_conditioning(mode, request, tmp_path):
    """The tiny policy in every conditioning mode; the frozen track model gets no gradient and is not
    part of the policy's parameters or weights file."""
    model, _, logs = _battery("policy", "tiny", request, tmp_path, conditioning=mode)
    if model.cfg.uses_track_model:
        assert all(p.grad is None and not p.requires_grad for p in model.track_model.parameters())
    else:
        assert model.track_model is None
    assert not any(k.startswith("_track") or "track_head" in k for k in model.state_dict())
    if mode == "adaptive_mask":
        assert model.mask_delta.grad.abs().sum() > 0
        assert "mask_value_00" in logs and f"mask_value_{model.cfg.track_len - 1:02d}" in logs


def test_unknown_family_and_preset_list_the_valid_ones():
    with pytest.raises(ValueError, match="planner"):
        family("drive")
    for name, fam in FAMILIES.items():
        with pytest.raises(ValueError, match=next(iter(fam.presets))):
            fam.resolve("huge")


def test_resolve_applies_overrides_in_one_grammar():
    for name, preset, key in (("track", "tiny-tramoe", "model.moe.top_k"), ("planner", "tiny-moe", "model.moe.top_k")):
        cfg = family(name).resolve(preset, [f"{key}=1", "steps=3"])
        assert cfg["model"].moe.top_k == 1 and cfg["train"].steps == 3
    with pytest.raises(ValueError, match="w_lb"):  # the flat MoE keys of earlier releases are unknown keys now
        family("track").resolve("tiny-tramoe", ["w_lb=0.1"])
    with pytest.raises(ValueError, match="moe_layers"):
        family("planner").resolve("tiny-moe", {"model.moe_layers": [0]})


def test_from_run_checks_the_kind(tmp_path):
    atomic_write_json(tmp_path / "config.json", {"kind": "policy", "model": {}})
    with pytest.raises(ValueError, match="is not a planner run"):
        family("planner").from_run(tmp_path)
