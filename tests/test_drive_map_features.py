"""Vocabulary queries that see the map at their own poses (`model.vocab_map_features`)."""

import numpy as np
import torch

from trajmoe.drive.dataset import LANE_FEATS, ROUTE_POINTS, collate, vocab_map_features
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
    cfg = dataclasses.replace(PRESETS["tiny-moe"].model, vocab_size=8, vocab_map_features=True)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    vocab = np.cumsum(rng.normal(0.5, 0.2, (8, 40, 3)), 1).astype(np.float32)
    model = DrivePlanner(cfg, vocab).eval()
    ds = DriveDataset(scenes, None, vocab)
    with_cache = collate([ds.get(i, rng) for i in range(len(ds))])
    without = {k: v for k, v in with_cache.items() if k != "vocab_map"}
    assert with_cache["vocab_map"].shape == (2, 8, 16)
    a, b = model.predict(with_cache), model.predict(without)
    assert torch.allclose(a["probs"], b["probs"], atol=1e-6)
    # the map input matters: the features differ between the two real scenes' poses
    assert not torch.allclose(with_cache["vocab_map"][0], with_cache["vocab_map"][1])
