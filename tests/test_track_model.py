"""Track model battery over every preset: shapes, gradients, overfitting, params, round trip."""

import dataclasses

import pytest
import torch

from trajmoe.track import PRESETS as _PRESETS
from trajmoe.track import TrackConfig, TrackModel, count_params

PRESETS = {name: p.model for name, p in _PRESETS.items()}

TINY = [n for n in PRESETS if n.startswith("tiny-")]
FULL = [n for n in PRESETS if not n.startswith("tiny-")]


def _batch(cfg: TrackConfig, B: int = 2, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    # a smooth image and straight-line tracks: structured enough to be learnable
    yy, xx = torch.meshgrid(torch.linspace(0, 1, cfg.img_size), torch.linspace(0, 1, cfg.img_size), indexing="ij")
    img = torch.stack([xx, yy, (xx + yy) / 2])[None].repeat(B, 1, 1, 1)
    start = torch.rand(B, 1, cfg.num_points, 2, generator=g) * 0.6 + 0.2
    vel = (0.5 - start) * 0.04  # points drift to the centre: a motion field the model can learn
    t = torch.arange(cfg.track_len).view(1, -1, 1, 1).float()
    return {"image": img, "tracks": start + vel * t, "vis": torch.ones(B, cfg.track_len, cfg.num_points),
            "task_emb": torch.randn(B, cfg.lang_dim, generator=g), "domain": torch.arange(B) % 2}


@pytest.mark.parametrize("name", TINY)
def test_each_tiny_preset_overfits_one_batch(name):
    cfg = dataclasses.replace(PRESETS[name], dropout=0.0, img_mask_ratio=0.0, num_points=8)  # 97 tokens: fast
    torch.manual_seed(0)
    m = TrackModel(cfg)
    b = _batch(cfg)
    opt = torch.optim.AdamW(m.parameters(), lr=2e-3)
    first = None
    for _ in range(80):
        loss, logs = m(b)
        opt.zero_grad()
        loss.backward()
        opt.step()
        first = first if first is not None else logs["track_mse"].item()  # = no-motion error (zero head)
    assert logs["track_mse"].item() < first / 5, (first, logs["track_mse"].item())


def test_moe_active_params_per_token_equal_dense():
    for moe_name, dense_name in (("tramoe", "dense"), ("tiny-tramoe", "tiny-dense")):
        moe, dense = count_params(TrackModel(PRESETS[moe_name])), count_params(TrackModel(PRESETS[dense_name]))
        assert moe.active_per_token == dense.total
        assert moe.total > 1.5 * dense.total


def test_parameter_matched_baselines_are_within_5_percent():
    for moe_name, others in (("tramoe", ("dense-wide", "dense-deep")), ("tiny-tramoe", ("tiny-dense-wide", "tiny-dense-deep"))):
        target = count_params(TrackModel(PRESETS[moe_name])).total
        for o in others:
            assert abs(count_params(TrackModel(PRESETS[o])).total / target - 1) < 0.05, o


def test_loss_weights_and_aux_losses_enter_the_loss():
    cfg = dataclasses.replace(PRESETS["tiny-tramoe"], dropout=0.0, img_mask_ratio=0.0)
    b = _batch(cfg)
    torch.manual_seed(0)
    m = TrackModel(cfg).eval()
    loss, logs = m(b)
    expected = 10 * logs["track_mse"] + cfg.w_img * logs["img_mse"] + 1e-4 * logs["z_loss"]
    torch.testing.assert_close(loss.detach(), expected)
    m2 = TrackModel(dataclasses.replace(cfg, moe=dataclasses.replace(cfg.moe, balance_weight=0.5))).eval()
    m2.load_state_dict(m.state_dict())
    loss2, logs2 = m2(b)
    torch.testing.assert_close(loss2.detach(), expected + 0.5 * logs2["balance_loss"])


def test_routing_stats_see_domains():
    cfg = PRESETS["tiny-tramoe"]
    m = TrackModel(cfg).eval()
    b = _batch(cfg)
    m.predict(b["image"], b["tracks"][:, 0], b["task_emb"], b["domain"])
    for _, moe in m.moe_layers():
        assert moe.domain_counts[:2].sum().item() == 2 * cfg.num_tokens
    m.reset_routing_stats()
    assert all(moe.domain_counts.sum().item() == 0 for _, moe in m.moe_layers())


@pytest.mark.parametrize("kw,match", [
    (dict(layers=(9,)), "moe.layers"), (dict(patch=15), "patch"), (dict(heads=5), "heads"),
    (dict(num_experts=0), "num_experts"), (dict(track_patch=5), "track_patch"), (dict(z_weight=-1.0), "z_weight"),
    (dict(dim=64), "moe.dim"),
])
def test_bad_track_configs_raise(kw, match):
    from trajmoe.config import replace

    flat = {k: v for k, v in kw.items() if k in ("patch", "heads", "track_patch")}
    moe = {f"moe.{k}": v for k, v in kw.items() if k not in flat}
    with pytest.raises(ValueError, match=match):
        replace(PRESETS["tiny-tramoe"], {**flat, **moe}, "TrackConfig")


def test_wrong_input_shapes_raise():
    cfg = PRESETS["tiny-dense"]
    m = TrackModel(cfg)
    b = _batch(cfg)
    with pytest.raises(ValueError, match="image must be"):
        m({**b, "image": b["image"][:, :, :64]})
    with pytest.raises(ValueError, match="task_emb must be"):
        m({**b, "task_emb": b["task_emb"][:, :10]})
    with pytest.raises(ValueError, match="tracks must be"):
        m({**b, "tracks": b["tracks"][:, :5]})

