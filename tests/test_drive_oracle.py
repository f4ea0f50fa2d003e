"""The vocabulary oracle (best true-EPDMS entry per scene) is the ceiling of any vocabulary scorer."""

import numpy as np
import pytest

from trajmoe.drive.evaluate import _vocab_plans, evaluate_vocab_oracle, vocab_oracle_index
from trajmoe.drive.metrics import epdms, score_trajectories
from trajmoe.drive.scenes import SceneGenConfig, simulate_episode


def _vocab(speed: float) -> np.ndarray:
    t = np.arange(1, 41) * 0.1
    speeds = np.array([0.0, 0.5, 1.0, 1.3]) * speed
    lat = np.array([0.0, 0.0, 0.0, 8.0])  # the last swerves two lanes over
    x = speeds[:, None] * t
    y = lat[:, None] * (t / 4) ** 2
    return np.stack([x, y, np.arctan2(np.gradient(y, axis=1), np.gradient(x, axis=1))], -1)


def test_oracle_is_the_per_scene_best_and_bounds_every_fixed_choice():
    scenes = simulate_episode("highway", 7, SceneGenConfig(episode_steps=65, stride=5))[:2]
    vocab = _vocab(20.0)
    plans = _vocab_plans(vocab)
    best = []
    for sc in scenes:
        sub = score_trajectories(sc, plans)
        sub["EC"] = np.ones(len(plans))
        e = epdms(sub)
        assert e[vocab_oracle_index(plans, sc)] == e.max()
        best.append(e.max())
    res = evaluate_vocab_oracle(vocab, scenes)
    assert res["n"] == len(scenes)
    assert res["EPDMS"] == pytest.approx(np.mean(best), abs=1e-12) and res["EC"] == 1.0
    with pytest.raises(ValueError, match="empty vocabulary"):
        evaluate_vocab_oracle(np.zeros((0, 40, 3)), scenes)
