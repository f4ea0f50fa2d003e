"""One battery over every preset of every registered model family (as timm's test_models.py):
forward, backward, every parameter gets a finite gradient, no NaN, save/load round trip through a run
folder (config.json + safetensors, the family's own `load_run`), parameter counts. A new preset is
tested by being registered in its family's PRESETS."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from trajmoe.config import to_dict
from trajmoe.families import FAMILIES, family
from trajmoe.io import atomic_write_json
from trajmoe.moe import MoE
from trajmoe.nn import count_params
from trajmoe.policy.config import CONDITIONINGS
from trajmoe.train.checkpoint import save_weights

CASES = [(f, p) for f in FAMILIES for p in FAMILIES[f].presets]
POLICY_IMG = 64  # policy frames at 64 px (every preset's patch grid divides it): seconds, not minutes
VOCAB = 16  # the planner's vocabulary comes from the data; a small one keeps the paper-size preset fast


def _track_batch(cfg, B: int = 2, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, cfg.img_size), torch.linspace(0, 1, cfg.img_size), indexing="ij")
    start = torch.rand(B, 1, cfg.num_points, 2, generator=g) * 0.6 + 0.2
    t = torch.arange(cfg.track_len).view(1, -1, 1, 1).float()
    return {"image": torch.stack([xx, yy, (xx + yy) / 2])[None].repeat(B, 1, 1, 1),
            "tracks": start + (0.5 - start) * 0.04 * t, "vis": torch.ones(B, cfg.track_len, cfg.num_points),
            "task_emb": torch.randn(B, cfg.lang_dim, generator=g), "domain": torch.arange(B) % 2}


def _policy_batch(cfg, B: int = 2, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    F, V = cfg.frame_stack, len(cfg.views)
    extra = {}
    if cfg.conditioning == "oracle":
        extra["tracks"] = torch.rand(B, F, V, cfg.track_len, cfg.num_points, 2, generator=g)
    return {**extra, "rgb": torch.randint(0, 256, (B, F, V, 3, cfg.img_size, cfg.img_size), generator=g, dtype=torch.uint8),
            "proprio": torch.randn(B, F, cfg.proprio_dim, generator=g), "task_emb": torch.randn(B, cfg.lang_dim, generator=g),
            "actions": torch.rand(B, F, cfg.action_dim, generator=g) * 2 - 1,
            "valid": torch.tensor([[True] * F, [False] + [True] * (F - 1)])}


@pytest.fixture(scope="module")
def scenes():
    from trajmoe.drive.scenes import SceneGenConfig, simulate_episode

    return simulate_episode("merge", 3, SceneGenConfig(episode_steps=70, stride=10))  # 2-3 real highway-env scenes


@pytest.fixture(scope="module")
def planner_batch(scenes):
    from trajmoe.drive.dataset import DriveDataset, collate
    from trajmoe.drive.metrics import TARGET_METRICS

    rng = np.random.default_rng(0)
    ds = DriveDataset(scenes, rng.random((len(scenes), VOCAB, len(TARGET_METRICS))).astype(np.float32))
    return collate([ds.get(i, rng) for i in range(len(ds))])


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
    if fam_name == "track":
        b = _track_batch(cfg, B=1 if cfg.dim > 64 else 2)
        return cfg, fam.build(cfg), b, lambda m: m.predict(b["image"], b["tracks"][:, 0], b["task_emb"]), {}
    if fam_name == "policy":
        cfg = dataclasses.replace(cfg, img_size=POLICY_IMG, conditioning=conditioning or cfg.conditioning)
        if cfg.uses_track_model:
            path = request.getfixturevalue("track_run")
            tm, _ = family("track").load_run(path)
            cfg = dataclasses.replace(cfg, track_len=tm.cfg.track_len, lang_dim=tm.cfg.lang_dim)
        model = fam.build(cfg)
        extra = {"track_run": None, "track_model": None}
        if cfg.uses_track_model:
            model.set_track_model(tm)
            extra = {"track_run": str(path), "track_model": to_dict(tm.cfg)}
        b = _policy_batch(cfg)
        return cfg, model, b, lambda m: m.predict_actions(b), extra
    cfg = dataclasses.replace(cfg, vocab_size=VOCAB, moe=dataclasses.replace(cfg.moe, num_domains=4))
    b = request.getfixturevalue("planner_batch")
    model = fam.build(cfg)
    model.vocab.copy_(torch.from_numpy(_vocab()))  # the k-means vocabulary of a run (a buffer saved with it)
    return cfg, model, b, lambda m: m.predict(b)["probs"], {}


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
    loaded, run_cfg = fam.load_run(tmp_path, device="cpu", ema=True)
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
        assert ("cv2" in logs) == bool(cfg.moe.layers) and (not cfg.moe.layers or logs["cv2"] >= 0)
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
    with pytest.raises(ValueError, match="model.moe.balance_weight"):  # a renamed flat key names its new place
        family("track").resolve("tiny-tramoe", ["w_lb=0.1"])
    with pytest.raises(ValueError, match="model.moe.layers"):
        family("planner").resolve("tiny-moe", {"model.moe_layers": [0]})


def test_old_run_folders_load_through_the_shim(tmp_path):
    """A track run and a planner run written with the flat MoE keys of the previous release load
    with the same settings as the nested form."""
    old_track = {"dim": 64, "depth": 4, "heads": 4, "dropout": 0.0, "img_mask_ratio": 0.0, "w_img": 0.1,
                 "moe_layers": [0, 2, 3], "num_experts": 4, "top_k": 1, "gate": "softmax", "noisy_gating": False,
                 "moe_impl": "grouped", "num_domains": 8, "w_z": 1e-4, "w_lb": 0.0}
    old_planner = {"dim": 32, "num_heads": 2, "encoder_layers": 1, "decoder_layers": 2, "vocab_size": 64, "vocab_hidden": 64,
                   "moe": True, "num_experts": 4, "top_k": 2, "num_shared_experts": 1, "moe_layers": [0, 1],
                   "balance_weight": 0.01, "z_weight": 0.0}
    for name, preset, old in (("track", "tiny-tramoe", old_track), ("planner", "tiny-moe", old_planner)):
        fam = family(name)
        cfg = fam.presets[preset].model
        if name == "planner":  # runs of the previous release had no vocabulary map features
            cfg = dataclasses.replace(cfg, vocab_map_features=False)
        torch.manual_seed(0)
        save_weights(fam.build(cfg), tmp_path / "model.safetensors")
        atomic_write_json(tmp_path / "config.json", {"kind": fam.kind, "model": old})
        loaded, _ = fam.load_run(tmp_path)
        want = cfg if name == "track" else dataclasses.replace(cfg, moe=dataclasses.replace(cfg.moe, num_domains=4))
        assert loaded.cfg == want
    atomic_write_json(tmp_path / "config.json", {"kind": "policy", "model": {}})
    with pytest.raises(ValueError, match="is not a planner run"):
        family("planner").load_run(tmp_path)
