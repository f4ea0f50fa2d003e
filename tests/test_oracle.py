"""Oracle grid tracks (trajmoe.envs.oracle) on the real simulator: stored == recomputed (exact), the
lookahead leaves the evaluated episode untouched, old files give a one-line error; Wilson intervals."""

from __future__ import annotations

import os

import numpy as np
import pytest

from trajmoe.data.atm_hdf5 import open_episode
from trajmoe.data.generate import generate
from trajmoe.data.specs import DomainSpec
from trajmoe.envs.metaworld import make_env
from trajmoe.envs.oracle import ExpertLookahead, grid_points, oracle_tracks
from trajmoe.envs.tracks import TrackLabelConfig
from trajmoe.eval.stats import wilson_interval

os.environ.setdefault("MUJOCO_GL", "egl")
SMALL = TrackLabelConfig(num_points=16, grid_size=2, num_query_frames=2, candidates_per_frame=64)
TASK, GEN_TASK, HORIZON = "drawer-open-v3", "reach-v3", 5


@pytest.fixture(scope="module")
def episode(tmp_path_factory):
    out = tmp_path_factory.mktemp("oracle") / "d"
    spec = DomainSpec(name="o", tasks=(GEN_TASK,), episodes=1, attempts=1, track=SMALL, oracle_points=(8,),
                      oracle_horizon=HORIZON)
    assert generate([(spec, str(out))], progress=False).done == 1
    return out / GEN_TASK / "demo_0.hdf5"


def test_stored_oracle_tracks_equal_recomputed_ones_exactly(episode):
    with open_episode(episode) as ep:
        stored = np.stack([ep.oracle_tracks(v, 8) for v in ep.meta.views], axis=1)  # (T, V, Hz, 8, 2)
        actions, variation = ep.actions(), int(ep.meta.attrs["variation"])
    T = len(actions)
    assert T >= 12 and stored.shape == (T, 2, HORIZON, 8, 2)
    # step 0 is the grid itself (reprojected); later steps move (at least the gripper view)
    np.testing.assert_allclose(stored[:, :, 0], np.broadcast_to(grid_points(8), stored[:, :, 0].shape), atol=1e-6)
    assert np.abs(stored - stored[:, :, :1]).max() > 1e-3
    env = make_env(GEN_TASK, variation, with_depth=True)
    try:
        obs = env.reset()
        la = ExpertLookahead(env)
        for t in range(T):
            if t in (0, T // 2, T - 1):
                got = oracle_tracks(env, la, (8,), HORIZON, depth=obs["depth"])[8]
                assert np.array_equal(got, stored[t]), f"frame {t}: max diff {np.abs(got - stored[t]).max()}"
            obs, *_ = env.step(actions[t])
        la.close()
    finally:
        env.close()


def test_lookahead_replays_the_expert_bit_exactly_and_leaves_the_episode_untouched():
    rng = np.random.default_rng(0)
    actions = rng.uniform(-1, 1, size=(8, 4)).astype(np.float32)  # fixed actions, not the expert's
    runs = []
    for with_oracle in (False, True):
        env = make_env(TASK, 3, with_depth=True)
        obs = env.reset()
        la = ExpertLookahead(env) if with_oracle else None
        states = []
        for a in actions:
            if la is not None:
                oracle_tracks(env, la, (8, 16), HORIZON, depth=obs["depth"])
            obs, _, success, _ = env.step(a)
            st = env.sim_state()
            states.append((st["qpos"], st["qvel"], st["mocap_pos"], obs["state"], obs["rgb"]["agentview"], success))
        if la is not None:
            # the lookahead's expert steps are the real env's expert steps, bit for bit
            body_pos, *_ = la.poses(env, 4)
            ref = []
            for _ in range(4):
                ref.append(env.body_poses()[0])
                env.step(env.expert_action())
            assert np.array_equal(body_pos, np.stack(ref))
            la.close()
        env.close()
        runs.append(states)
    for t, (a, b) in enumerate(zip(*runs)):
        for x, y in zip(a, b):
            assert np.array_equal(x, y), f"step {t} differs with the oracle computed"


def test_old_files_without_oracle_tracks_give_a_one_line_error(episode):
    with open_episode(episode) as ep, pytest.raises(ValueError) as e:
        ep.oracle_tracks("agentview", 16)
    msg = str(e.value)
    assert "oracle_tracks_16" in msg and "--oracle-points 16" in msg and str(episode) in msg and "\n" not in msg


def test_wilson_interval_against_hand_values():
    # 0/10: upper = z^2 / (n + z^2); 5/10 and 18/20 from the closed form (Brown, Cai & DasGupta 2001)
    z2 = 1.959963984540054 ** 2
    assert wilson_interval(0, 10) == pytest.approx((0.0, z2 / (10 + z2)), abs=1e-12)
    assert wilson_interval(5, 10) == pytest.approx((0.2365931, 0.7634069), abs=1e-6)
    assert wilson_interval(18, 20) == pytest.approx((0.6989664, 0.9721335), abs=1e-6)
    assert wilson_interval(10, 10)[1] == pytest.approx(1.0) and wilson_interval(10, 10)[0] == pytest.approx(10 / (10 + z2))
    for bad in ((3, 2), (-1, 5), (1, 0)):
        with pytest.raises(ValueError):
            wilson_interval(*bad)


def test_oracle_policy_trains_and_runs_closed_loop(episode, tmp_path, capsys):
    import json

    from trajmoe.cli import main

    run = tmp_path / "pol"
    data = episode.parent.parent
    assert main(["train", "policy", "--preset", "tiny", "--conditioning", "oracle", "--data", str(data), "--out", str(run),
                 "--set", "steps=2", "batch_size=2", "progress=false"]) == 0
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["model"]["conditioning"] == "oracle" and cfg["model"]["track_len"] == HORIZON and cfg["track_run"] is None
    capsys.readouterr()
    assert main(["eval", "policy", "--run", str(run), "--episodes", "1", "--max-steps", "3", "--workers", "1", "--json"]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["oracle_ms"] > 0 and res["tasks"][GEN_TASK]["mean_length"] == 3
    b = res["baseline"]  # the trivial baseline on the same episode: holding still does not reach
    assert b["policy"] == "zero action" and b["episodes"] == 1 and b["tasks"][GEN_TASK]["successes"] == 0
    lo, hi = res["tasks"][GEN_TASK]["ci95"]
    assert 0.0 <= lo <= res["success_rate"] <= hi <= 1.0
    # a 16-point grid was not generated: one-line error naming the file and the key
    assert main(["train", "policy", "--preset", "tiny", "--conditioning", "oracle", "--data", str(data), "--out",
                 str(tmp_path / "bad"), "--set", "num_points=16", "steps=1", "progress=false"]) == 2
    err = capsys.readouterr().err.strip()
    assert "oracle_tracks_16" in err and len(err.splitlines()) == 1


def test_track_samples_can_take_the_policy_grid_with_its_exact_tracks(episode):
    from trajmoe.track.config import TrackDataConfig
    from trajmoe.track.dataset import TrackDataset

    ds = TrackDataset([episode.parent.parent], HORIZON, 16, 128, augment=False, grid_queries=8)
    plain = TrackDataset([episode.parent.parent], HORIZON, 16, 128, augment=False)
    with open_episode(episode) as ep:
        grid = {v: ep.oracle_tracks(v, 8) for v in ep.meta.views}
    for idx in (0, len(ds) // 2, len(ds) - 1):
        it, ref = ds.get(idx, np.random.default_rng(idx)), plain.get(idx, np.random.default_rng(idx))
        t, view = int(ds.index.frame[idx]), ds.view_names[ds.index.view[idx]]
        np.testing.assert_array_equal(it["tracks"][:, :8], grid[view][t])  # the grid's exact tracks from frame t
        assert (it["vis"][:, :8] == 1).all()
        np.testing.assert_array_equal(it["tracks"][:, 8:], ref["tracks"][:, 8:])  # the drawn points are unchanged
    with pytest.raises(ValueError, match="grid_queries=17"):
        TrackDataset([episode.parent.parent], HORIZON, 16, 128, grid_queries=17)
    with pytest.raises(ValueError, match="data.grid_queries"):
        TrackDataConfig(grid_queries=-1)
