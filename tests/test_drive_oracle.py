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


def test_closed_loop_rates_carry_wilson_intervals():
    from trajmoe.drive.closed_loop import _aggregate
    from trajmoe.eval.stats import wilson_interval

    rows = [{"scenario": "highway", "crash": c, "offroad": False, "progress": 100.0} for c in (True, False, False, False)]
    out = _aggregate(rows, ["highway"])
    assert out["crash_rate"] == 0.25 and out["crash_rate_wilson95"] == list(wilson_interval(1, 4))
    assert out["offroad_rate_wilson95"][0] == 0.0 and 0.4 < out["offroad_rate_wilson95"][1] < 0.6  # 0/4: up to ~49 %


def test_scene_limit_mixes_scenarios_and_rejects_negative(tmp_path, monkeypatch):
    import json

    from trajmoe.drive import scenes as sc_mod

    names = [("highway", i) for i in range(3)] + [("merge", i) for i in range(3)]
    (tmp_path / "manifest.json").write_text(json.dumps(
        {"format": "trajmoe-drive-scenes/1", "scenes": [{"name": f"{s}_{i}", "scenario": s, "domain": 0} for s, i in names]}))
    loaded = []
    monkeypatch.setattr(sc_mod, "load_scene", lambda p: loaded.append(p.name) or {})
    sc_mod.load_scenes(tmp_path, 3)
    assert sorted(n.split(".")[0] for n in loaded) == ["highway_0", "highway_1", "merge_0"]  # both scenarios
    with pytest.raises(ValueError, match="scene limit must be >= 0"):
        sc_mod.load_scenes(tmp_path, -1)


def test_finite_json_turns_nan_into_null():
    import json

    from trajmoe.io import finite_json

    out = json.dumps(finite_json({"a": float("nan"), "b": [1.0, float("inf")], "c": {"d": 2}}))
    assert out == '{"a": null, "b": [1.0, null], "c": {"d": 2}}'
