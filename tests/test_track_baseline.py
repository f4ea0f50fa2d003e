"""The no-motion baseline and skill scores, and a track model that starts at and then beats it."""

import numpy as np
import pytest
import torch

from trajmoe.track import TrackConfig, TrackModel
from trajmoe.track.metrics import TrackMetrics, skill, static_tracks


def test_static_tracks_repeat_the_query_point():
    gt = torch.arange(2 * 3 * 2 * 2, dtype=torch.float32).view(2, 3, 2, 2)
    st = static_tracks(gt)
    assert st.shape == gt.shape
    assert torch.equal(st[:, 2], gt[:, 0]) and torch.equal(st[:, 0], gt[:, 0])


def test_metrics_and_skill_against_hand_values():
    # one sample, 2 steps, 1 point; image 10 px. Query (0, 0) -> (0.3, 0.4): moves 5 px.
    gt = torch.tensor([[[[0.0, 0.0]], [[0.3, 0.4]]]])
    pred = torch.tensor([[[[0.0, 0.0]], [[0.3, 0.1]]]])  # 3 px short at the last step
    vis = torch.ones(1, 2, 1)
    m = TrackMetrics(img_size=10, domain_names=["id"])
    m.update(pred, gt, vis, torch.tensor([0]))
    r = m.result()["overall"]
    assert r["track_mse"] == pytest.approx(0.3**2 / 4)  # mean over T*N*2 = 4 elements
    assert r["track_mse_static"] == pytest.approx((0.3**2 + 0.4**2) / 4)
    assert r["ade_px"] == pytest.approx(3.0 / 2) and r["ade_px_static"] == pytest.approx(5.0 / 2)
    assert r["fde_px"] == pytest.approx(3.0) and r["fde_px_static"] == pytest.approx(5.0)
    assert r["skill_mse"] == pytest.approx(1 - 0.09 / 0.25)
    assert r["skill_ade"] == pytest.approx(1 - 3 / 5) and r["skill_fde"] == pytest.approx(1 - 3 / 5)
    assert m.result()["id"].keys() == r.keys() and np.isnan(r["skill_mse_ci95"])  # one sample: no interval
    assert all(m.result()["id"][k] == v for k, v in r.items() if k != "skill_mse_ci95")
    assert np.isnan(skill(0.0, 0.0)) and skill(1.0, 2.0) == 0.5


def test_skill_interval_from_paired_differences():
    # two samples, 2 steps, 1 point: both start at (0, 0); the model covers half of each motion.
    gt = torch.tensor([[[[0.0, 0.0]], [[0.4, 0.0]]], [[[0.0, 0.0]], [[0.0, 0.2]]]])
    pred = torch.tensor([[[[0.0, 0.0]], [[0.2, 0.0]]], [[[0.0, 0.0]], [[0.0, 0.1]]]])
    m = TrackMetrics(img_size=10, domain_names=["id"])
    m.update(pred, gt, torch.ones(2, 2, 1), torch.tensor([0, 0]))
    r = m.result()["overall"]
    static = np.array([0.4**2, 0.2**2]) / 4  # mean over T*N*2 = 4 elements
    d = np.array([0.2**2, 0.1**2]) / 4 - static  # paired model - no-motion error per sample
    assert r["skill_mse"] == pytest.approx(0.75) == pytest.approx(-d.mean() / static.mean())
    assert r["skill_mse_ci95"] == pytest.approx(1.96 * d.std(ddof=1) / np.sqrt(2) / static.mean())


def test_occluded_points_count_in_mse_but_not_in_ade():
    gt = torch.tensor([[[[0.0, 0.0], [0.5, 0.5]], [[0.0, 0.5], [0.5, 0.5]]]])  # point 0 moves, point 1 still
    vis = torch.tensor([[[1.0, 1.0], [0.0, 1.0]]])  # point 0 occluded at the last step
    m = TrackMetrics(img_size=10, domain_names=["id"])
    m.update(static_tracks(gt), gt, vis, torch.tensor([0]))
    r = m.result()["overall"]
    assert r["track_mse"] == r["track_mse_static"] > 0
    assert r["ade_px"] == 0.0 and r["skill_mse"] == 0.0


@pytest.mark.parametrize("preset", ["tiny-dense", "tiny-tramoe"])
def test_a_fresh_model_predicts_exactly_no_motion(preset):
    cfg = TrackConfig.preset(preset)
    torch.manual_seed(0)
    m = TrackModel(cfg).eval()
    q = torch.rand(2, cfg.num_points, 2)
    pred = m.predict(torch.rand(2, 3, cfg.img_size, cfg.img_size), q, torch.randn(2, cfg.lang_dim))
    assert torch.equal(pred, q[:, None].expand_as(pred))


def test_zero_init_head_needs_residual_tracks():
    with pytest.raises(ValueError, match="zero_init_head"):
        TrackConfig(residual_tracks=False, zero_init_head=True)


def test_a_tiny_model_beats_no_motion_on_a_small_fixed_set(mw_data):
    """Real MetaWorld samples (reach-v3, exact simulator tracks): 60 steps take the tiny
    preset below half the no-motion error on the set it is fitted to (deterministic, CPU)."""
    from trajmoe.track.dataset import TrackDataset

    cfg = TrackConfig.preset("tiny-dense")
    ds = TrackDataset([mw_data["id"]], cfg.track_len, cfg.num_points, cfg.img_size, augment=False)
    pick = np.linspace(0, len(ds) - 1, 8).astype(int)
    items = [ds.get(int(i), np.random.default_rng([0, int(i)])) for i in pick]
    batch = {k: torch.as_tensor(np.stack([it[k] for it in items])) for k in ("image", "tracks", "vis", "task_emb", "domain")}
    static = (static_tracks(batch["tracks"]) - batch["tracks"]).pow(2).mean().item()
    torch.manual_seed(0)
    m = TrackModel(cfg)
    opt = torch.optim.AdamW(m.parameters(), lr=1e-3)
    for _ in range(60):
        loss, _ = m(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    m.eval()
    pred = m.predict(batch["image"], batch["tracks"][:, 0], batch["task_emb"])
    mse = (pred - batch["tracks"]).pow(2).mean().item()
    assert static > 1e-4, "the fixed set must contain motion"
    assert mse < 0.5 * static, (mse, static)
