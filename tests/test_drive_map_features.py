"""Vocabulary queries that see the map (`model.vocab_map_features`), the agents (`model.vocab_agent_features`)
and the drivable area (`model.vocab_drivable_features`) at their own poses."""

import numpy as np
import torch

import pytest

from trajmoe.drive import geometry as geo
from trajmoe.drive.dataset import (AGENT_FEATS, LANE_FEATS, ROUTE_POINTS, collate, drivable_bev, vocab_agent_features,
                                   vocab_drivable_features, vocab_map_features)
from trajmoe.drive.scenes import MAX_AGENTS
from trajmoe.drive.scenes import LANE_CHUNK, MAX_LANES


def _batch() -> dict:
    lanes = np.zeros((1, MAX_LANES, LANE_FEATS), np.float32)
    xs = np.arange(LANE_CHUNK, dtype=np.float32) * 5.0  # one lane along y = 0, points 5 m apart, 0..95 m
    lanes[0, 0, : 2 * LANE_CHUNK] = np.stack([xs, np.zeros_like(xs)], -1).reshape(-1) / 50
    lanes[0, 1, : 2 * LANE_CHUNK] = 10.0  # a masked token far away at (500, 500) m: must be ignored
    route = np.stack([np.linspace(0, 95, ROUTE_POINTS), np.full(ROUTE_POINTS, 1.0)], -1)  # y = 1 m
    return {"lanes": torch.as_tensor(lanes), "lanes_mask": torch.tensor([[True] + [False] * (MAX_LANES - 1)]),
            "route": torch.as_tensor(route.reshape(1, -1) / 50, dtype=torch.float32)}


def test_distances_against_hand_values():
    t = np.arange(1, 41) * 0.1
    straight = np.stack([10 * t, np.zeros(40), np.zeros(40)], -1)  # 10 m/s along the lane: 5, 10, ... 40 m
    offset = straight + np.array([0.0, 4.0, 0.0])
    v = torch.as_tensor(np.stack([straight, offset]), dtype=torch.float32)
    f = vocab_map_features(v, _batch())  # (1, 2, 16): [lane, route] per pose, / 4 m
    assert f.shape == (1, 2, 16)
    assert torch.allclose(f[0, 0, 0::2], torch.zeros(8), atol=1e-5)  # poses on lane points (multiples of 5 m)
    assert torch.allclose(f[0, 0, 1::2], torch.full((8,), 0.25), atol=1e-5)  # 1 m from the route
    assert torch.allclose(f[0, 1, 0::2], torch.full((8,), 1.0), atol=1e-5)  # 4 m from the lane
    assert torch.allclose(f[0, 1, 1::2], torch.full((8,), 0.75), atol=1e-5)  # 3 m from the route


def test_dataset_precomputes_what_the_model_computes():
    import dataclasses

    from trajmoe.drive.config import PRESETS
    from trajmoe.drive.dataset import DriveDataset
    from trajmoe.drive.model import DrivePlanner
    from trajmoe.drive.scenes import SceneGenConfig, simulate_episode

    scenes = simulate_episode("roundabout", 2, SceneGenConfig(episode_steps=66, stride=1))[:2]
    cfg = dataclasses.replace(PRESETS["tiny-moe"].model, vocab_size=8, vocab_map_features=True, vocab_agent_features=True,
                              vocab_drivable_features=True)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    vocab = np.cumsum(rng.normal(0.5, 0.2, (8, 40, 3)), 1).astype(np.float32)
    model = DrivePlanner(cfg, vocab).eval()
    ds = DriveDataset(scenes, None, vocab)
    with_cache = collate([ds.get(i, rng) for i in range(len(ds))])
    without = {k: v for k, v in with_cache.items() if k not in ("vocab_map", "vocab_agents", "vocab_drivable")}
    assert with_cache["vocab_map"].shape == (2, 8, 16) and with_cache["vocab_agents"].shape == (2, 8, 8)
    assert with_cache["vocab_drivable"].shape == (2, 8, 8)
    a, b = model.predict(with_cache), model.predict(without)
    assert torch.allclose(a["probs"], b["probs"], atol=1e-6)
    # the map input matters: the features differ between the two real scenes' poses
    assert not torch.allclose(with_cache["vocab_map"][0], with_cache["vocab_map"][1])


def test_agent_gaps_against_hand_values():
    """An agent 20 m ahead driving at 5 m/s, a 10 m/s plan straight ahead: the gap closes from
    25 + 2.5 - 5 - 2.5 (half length) at 0.5 s to 0 (clipped) when the plan reaches it; a masked agent on
    the path is ignored."""
    t = np.arange(1, 41) * 0.1
    plan = torch.as_tensor(np.stack([10 * t, np.zeros(40), np.zeros(40)], -1)[None], dtype=torch.float32)
    agents = np.zeros((1, MAX_AGENTS, AGENT_FEATS), np.float32)
    agents[0, 0, [0, 2, 4, 6]] = [20 / 50, 1.0, 5 / 20, 5 / 5]  # x 20 m, heading 0, vx 5 m/s, length 5 m
    agents[0, 1, [0, 6]] = [10 / 50, 1.0]  # static, right on the plan: masked
    mask = torch.tensor([[True, False] + [False] * (MAX_AGENTS - 2)])
    f = vocab_agent_features(plan, {"agents": torch.as_tensor(agents), "agents_mask": mask})
    assert f.shape == (1, 1, 8)
    tk = np.arange(1, 9) * 0.5
    gap = np.abs(20 + 5 * tk - 10 * tk) - 2.5
    assert torch.allclose(f[0, 0], torch.as_tensor(np.clip(gap / 4, 0, 3), dtype=torch.float32), atol=1e-5)


def test_drivable_under_the_ego_box_against_hand_values():
    """A straight road |y| < 4 m in the scorer's raster: a plan along y = 0 keeps all four corners of the
    2.3 m wide ego box on it (1); one along y = 3 m puts its left corners at 4.15 m, off the road (~0.35:
    bilinear between the 1 m cells); one at y = 10 m is off the road (0); a plan beyond the map reads 0."""
    rows = (np.arange(geo.H_CELLS) + 0.5) * geo.RES + geo.Y_RANGE[0]
    dir_bits = np.zeros((geo.H_CELLS, geo.W_CELLS), np.uint8)
    dir_bits[np.abs(rows) < 4.0] = 1
    bev = drivable_bev(dir_bits)
    assert bev.shape == (64, 128) and bev[32, 0] == 255 and bev[20, 0] == 0  # rows along y: y = 0.5 m, -11.5 m
    t = np.arange(1, 41) * 0.1
    plans = [np.stack([5 * t, np.full(40, y), np.zeros(40)], -1) for y in (0.0, 3.0, 10.0)]
    plans.append(np.stack([30 * t + 10, np.zeros(40), np.zeros(40)], -1))  # reaches 130 m: beyond the map
    f = vocab_drivable_features(torch.as_tensor(np.stack(plans), dtype=torch.float32),
                                {"drivable": torch.as_tensor(bev[None])})
    assert f.shape == (1, 4, 8)
    assert torch.allclose(f[0, 0], torch.ones(8)) and torch.allclose(f[0, 2], torch.zeros(8))
    assert torch.all((f[0, 1] > 0.2) & (f[0, 1] < 0.5))
    assert f[0, 3, 0] == 1 and f[0, 3, -1] == 0
    with pytest.raises(KeyError, match="drivable-area raster"):
        vocab_drivable_features(torch.as_tensor(np.stack(plans), dtype=torch.float32), {})
