"""Exact GT tracks: projection round trip, carry exactness, and points staying on their own geom."""

from __future__ import annotations

import numpy as np
import pytest

from trajmoe.envs.tracks import (
    CameraModel,
    TrackLabelConfig,
    backproject,
    double_grid,
    local_to_world,
    project,
    query_frames,
    visibility,
    world_to_local,
)


def _rot(rng) -> np.ndarray:
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    return q * np.sign(np.linalg.det(q))


@pytest.mark.parametrize("flip", [False, True])
def test_projection_round_trip(flip):
    rng = np.random.default_rng(0)
    cam = CameraModel(fovy_deg=45.0, height=128, width=128, flip=flip)
    cam_pos, cam_mat = rng.normal(size=3), _rot(rng)
    uv = rng.uniform(0, 128, size=(500, 2))
    depth = rng.uniform(0.3, 3.0, size=500)
    p_w = backproject(uv, depth, cam_pos, cam_mat, cam)
    uv2, depth2 = project(p_w, cam_pos, cam_mat, cam)
    np.testing.assert_allclose(uv2, uv, atol=1e-9)
    np.testing.assert_allclose(depth2, depth, atol=1e-12)
    # the optical axis lands on the image centre; flipping maps (u, v) -> (W - u, H - v)
    centre, d = project(cam_pos - 2.0 * cam_mat[:, 2], cam_pos, cam_mat, cam)
    np.testing.assert_allclose(centre, [64.0, 64.0], atol=1e-9)
    assert d == pytest.approx(2.0)
    up = cam_pos - 2.0 * cam_mat[:, 2] + 0.1 * cam_mat[:, 1]  # camera +y is up in the image
    (u, v), _ = project(up, cam_pos, cam_mat, cam)
    assert (v > 64) if flip else (v < 64)


def test_body_carry_is_exact_both_directions():
    rng = np.random.default_rng(1)
    T, N = 5, 7
    body_pos = rng.normal(size=(T, N, 3))
    body_mat = np.stack([np.stack([_rot(rng) for _ in range(N)]) for _ in range(T)])
    p_l = rng.normal(size=(N, 3))
    p_w = local_to_world(p_l[None], body_pos, body_mat)  # (T, N, 3)
    for t in range(T):  # lifting at any frame recovers the same local point
        np.testing.assert_allclose(world_to_local(p_w[t], body_pos[t], body_mat[t]), p_l, atol=1e-12)


def test_visibility_depth_test_and_bounds():
    depth_img = np.full((1, 4, 4), 2.0, dtype=np.float32)
    uv = np.array([[[1.5, 1.5], [1.5, 1.5], [5.0, 1.0], [1.5, 1.5]]])
    d = np.array([[2.0, 2.5, 2.0, -1.0]])  # visible, behind a surface, outside, behind camera
    np.testing.assert_array_equal(visibility(uv, d, depth_img), [[True, False, False, False]])


def test_sampling_helpers_and_config_validation():
    rng = np.random.default_rng(0)
    f = query_frames(100, 8, rng)
    assert len(f) == 8 and f.min() >= 0 and f.max() < 100 and np.all(np.diff(f) > 0)
    assert len(query_frames(3, 8, rng)) <= 3
    g = double_grid(4, 128, 128)
    assert g.shape == (32, 2) and len(np.unique(g, axis=0)) == 32 and np.all((g > 0) & (g < 128))
    for bad in ({"num_points": 0}, {"grid_size": 9}, {"num_query_frames": -1}, {"var_threshold": -1.0}):
        with pytest.raises(ValueError, match=str(next(iter(bad.values())))):
            TrackLabelConfig(**bad)
    with pytest.raises(ValueError, match="fovy"):
        CameraModel(fovy_deg=0.0, height=8, width=8)


@pytest.fixture(scope="module")
def labelled_push():
    """A real push-v3 expert rollout (both views) with exact tracks."""
    from trajmoe.data.generate import label_tracks, rollout_expert
    from trajmoe.envs.metaworld import make_env

    env = make_env("push-v3", variation=5, with_depth=True, max_steps=60)
    rec = rollout_expert(env, variation=5, max_steps=40)
    res = label_tracks(env, rec, TrackLabelConfig(), np.random.default_rng(0))
    yield env, rec, res
    env.close()


def test_tracks_land_on_their_own_geom(labelled_push):
    """>= 95% of visible tracked points fall on the geom they were sampled on, in later renders."""
    env, rec, res = labelled_push
    T = len(rec.actions)
    for view, r in res.items():
        assert r.tracks_TN2.shape == (T, 128, 2) and r.vis_TN.shape == (T, 128)
        assert r.tracks_TN2.dtype == np.float32 and 0.0 <= r.tracks_TN2.min() and r.tracks_TN2.max() <= 1.0
        hit = total = 0
        for t in range(0, T, 6):
            env.set_sim_state(rec.sim_states[t])
            seg = env.render_segmentation(view)
            vis = r.vis_TN[t]
            cols = np.clip((r.tracks_TN2[t, vis, 0] * 128).astype(int), 0, 127)
            rows = np.clip((r.tracks_TN2[t, vis, 1] * 128).astype(int), 0, 127)
            hit += int((seg[rows, cols] == r.geom_N[vis]).sum())
            total += int(vis.sum())
        assert total > 100, view
        assert hit / total >= 0.95, f"{view}: {hit}/{total} visible points on their own geom"


def test_query_frame_is_exact_and_movers_move(labelled_push):
    env, rec, res = labelled_push
    for view, r in res.items():
        n = np.arange(r.tracks_TN2.shape[1])
        at_q = r.tracks_TN2[r.query_frame_N, n] * 128  # each point at its own query frame
        np.testing.assert_allclose(at_q - np.floor(at_q), 0.5, atol=1e-3)  # a pixel centre, exactly
        assert r.vis_TN[r.query_frame_N, n].all()  # visible where it was sampled
        var = (r.tracks_TN2 * 128).var(axis=0).sum(-1)
        assert (var[r.moving_N] > 10.0).all()
        assert r.moving_N[:96].mean() > 0.9  # the variance-filtered part is made of movers
    # scene camera: grid points on static geoms never move
    r = res["agentview"]
    static = env.body_is_static[r.body_N]
    assert static.any()
    np.testing.assert_allclose(r.tracks_TN2[:, static].std(axis=0), 0.0, atol=1e-6)
