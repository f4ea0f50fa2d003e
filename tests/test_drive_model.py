"""Planner routing statistics, ensembles, and an end-to-end smoke run on real highway-env scenes."""

import dataclasses
import json

import numpy as np
import pytest
import torch

from trajmoe.moe import MoEConfig
from trajmoe.drive.config import PRESETS, DriveModelConfig
from trajmoe.drive.dataset import DriveDataset, collate
from trajmoe.drive.ensemble import Ensemble
from trajmoe.drive.metrics import TARGET_METRICS
from trajmoe.drive.model import DrivePlanner

V = 16


@pytest.fixture(scope="module")
def scenes():
    from trajmoe.drive.scenes import SceneGenConfig, simulate_episode

    return simulate_episode("merge", 3, SceneGenConfig(episode_steps=70, stride=10))  # 2-3 real scenes


@pytest.fixture(scope="module")
def batch(scenes):
    rng = np.random.default_rng(0)
    tg = rng.random((len(scenes), V, len(TARGET_METRICS))).astype(np.float32)
    ds = DriveDataset(scenes, tg)
    return collate([ds.get(i, rng) for i in range(len(ds))])


def _vocab():
    g = np.random.default_rng(1)
    t = np.arange(1, 41) * 0.1
    speeds = g.uniform(0, 25, V)
    lat = g.uniform(-3, 3, V)
    x = speeds[:, None] * t
    y = lat[:, None] * (t / 4) ** 2
    return np.stack([x, y, np.arctan2(np.gradient(y, axis=1), np.gradient(x, axis=1) + 1e-6)], -1).astype(np.float32)


def _model(name: str, seed: int = 0) -> DrivePlanner:
    torch.manual_seed(seed)
    cfg = dataclasses.replace(PRESETS[name].model, vocab_size=V, moe=dataclasses.replace(PRESETS[name].model.moe, num_domains=4))
    return DrivePlanner(cfg, _vocab())


def test_moe_routes_per_scenario(batch):
    m = _model("tiny-moe").eval()
    m.predict(batch)
    counts = sum(blk.ffn.domain_counts for blk in m.decoder if blk.is_moe)
    dom = int(batch["domain"][0])  # merge
    assert counts[dom].sum() == len(batch["ego"]) * V * 2 * m.cfg.moe.top_k  # 2 MoE layers, k experts per token
    assert counts.sum() == counts[dom].sum()


def test_ensemble_of_identical_models_equals_the_model(batch):
    m = _model("tiny-moe").eval()
    ens = Ensemble([m, _clone(m), _clone(m)], [0.2, 0.5, 0.3])
    a, b = m.predict(batch), ens.predict(batch)
    assert torch.allclose(a["probs"], b["probs"], atol=1e-6)
    assert torch.allclose(a["imi_logp"], b["imi_logp"], atol=1e-5)
    assert torch.equal(m.plan(batch)["index"], ens.plan(batch)["index"])


def test_ensemble_averages_and_validates(batch):
    m1, m2 = _model("tiny-moe", 0).eval(), _model("tiny-dense", 1).eval()
    ens = Ensemble([m1, m2], [1.0, 3.0])
    expect = 0.25 * m1.predict(batch)["probs"] + 0.75 * m2.predict(batch)["probs"]
    assert torch.allclose(ens.predict(batch)["probs"], expect, atol=1e-6)
    with pytest.raises(ValueError, match="weights"):
        Ensemble([m1, m2], [1.0])
    with pytest.raises(ValueError, match="weights"):
        Ensemble([m1, m2], [-1.0, 1.0])
    other = _model("tiny-moe")
    other.vocab.add_(1.0)
    with pytest.raises(ValueError, match="vocabulary"):
        Ensemble([m1, other])


def _clone(m):
    c = DrivePlanner(m.cfg, m.vocab.numpy())
    c.load_state_dict(m.state_dict())
    return c.eval()


def test_bad_configs():
    with pytest.raises(ValueError, match="top_k"):
        DriveModelConfig(moe=MoEConfig(num_experts=2, top_k=3))
    with pytest.raises(ValueError, match="moe.layers"):
        DriveModelConfig(decoder_layers=2, moe=MoEConfig(layers=(0, 5)))
    with pytest.raises(ValueError, match="num_heads"):
        DriveModelConfig(dim=30, num_heads=4)
    with pytest.raises(ValueError, match="vocabulary must have shape"):
        DrivePlanner(DriveModelConfig(vocab_size=8), np.zeros((4, 40, 3), np.float32))


def test_end_to_end_smoke(tmp_path):
    """Real scenes -> vocabulary -> supervised (MoE + dense) -> GRPO -> ensemble -> eval, via the CLI in
    its one grammar (`trajmoe <verb> planner`) and, for the second data call and the dense run, its old
    spelling (`trajmoe drive <verb>`). The run records the planner kind and the data's routing rows."""
    from trajmoe.cli import main

    data = tmp_path / "data"
    assert main(["data", "scenes", "--scenarios", "merge", "--scenes", "4", "--out", str(data), "--no-progress"]) == 0
    manifest = json.loads((data / "manifest.json").read_text())
    assert manifest["n_scenes"] == 4
    # Resumable: a second call generates nothing new.
    assert main(["drive", "data", "--scenarios", "merge", "--scenes", "4", "--out", str(data), "--no-progress"]) == 0
    assert json.loads((data / "manifest.json").read_text())["generated_now"] == 0
    common = ["--data", str(data), "--no-progress", "--set", "steps=2", "--set", "model.vocab_size=8",
              "--set", "batch_size=2", "--set", "data.vocab_iters=3"]
    assert main(["train", "planner", "--preset", "tiny-moe", "--out", str(tmp_path / "moe"), *common]) == 0
    rc = json.loads((tmp_path / "moe" / "config.json").read_text())
    assert rc["kind"] == "trajmoe-drive-planner" and rc["model"]["moe"]["num_domains"] == 2  # merge = domain id 1
    assert main(["drive", "train", "--preset", "tiny-dense", "--out", str(tmp_path / "dense"), *common]) == 0
    for r in ("moe", "dense"):
        assert (tmp_path / r / "model.safetensors").is_file() and (tmp_path / r / "vocab.safetensors").is_file()
    assert main(["finetune", "planner", "--run", str(tmp_path / "moe"), "--out", str(tmp_path / "grpo"), "--set", "steps=2",
                 "--no-progress"]) == 0
    assert main(["ensemble", "planner", "--runs", str(tmp_path / "moe"), str(tmp_path / "dense"), str(tmp_path / "grpo"),
                 "--out", str(tmp_path / "ens")]) == 0
    out = tmp_path / "eval.json"
    assert main(["eval", "planner", "--run", str(tmp_path / "ens"), "--data", str(data), "--json", "--out", str(out)]) == 0
    res = json.loads(out.read_text())["open_loop"]
    assert res["planner"]["n"] == 4 and 0.0 <= res["planner"]["EPDMS"] <= 1.0
    assert set(res["planner"]["per_scenario"]) == {"merge"}


def test_cli_bad_inputs(tmp_path, capsys):
    from trajmoe.cli import main

    assert main(["drive", "data", "--scenarios", "mars", "--scenes", "4", "--out", str(tmp_path / "d")]) == 2
    assert "unknown scenario" in capsys.readouterr().err
    assert main(["drive", "train", "--data", str(tmp_path / "nope"), "--preset", "tiny-moe", "--out", str(tmp_path / "r")]) == 2
    assert "missing scene directory" in capsys.readouterr().err
    assert main(["drive", "train", "--data", str(tmp_path), "--preset", "huge", "--out", str(tmp_path / "r")]) == 2
    assert "unknown planner preset" in capsys.readouterr().err
    assert main(["drive", "eval", "--run", str(tmp_path / "nope"), "--data", str(tmp_path)]) == 2


def test_resolve_config_yaml_and_overrides():
    from trajmoe.families import family

    resolve_config = lambda preset, path, sets: family("planner").resolve(preset, sets, path)  # noqa: E731

    cfg = resolve_config(None, "configs/drive/cpu-moe.yaml", {"steps": 7, "model.moe.top_k": 1})  # the packaged file
    assert cfg["model"].vocab_size == 256 and cfg["model"].moe.top_k == 1 and cfg["train"].steps == 7
    assert cfg["model"] == resolve_config("cpu-moe", None, {"model.moe.top_k": 1})["model"]
    with pytest.raises(ValueError, match="valid keys"):
        resolve_config("tiny-moe", None, {"model.nope": 1})


def test_grpo_trunk_stays_in_eval_mode_so_kl_starts_at_zero(batch):
    from trajmoe.drive.grpo import GRPOConfig, GRPOPlanner

    torch.manual_seed(0)
    cfg = dataclasses.replace(PRESETS["tiny-moe"].model, vocab_size=V, gaussian_heads=True, dropout=0.3)
    m = GRPOPlanner(cfg, GRPOConfig(), _vocab())
    m.start_finetune()
    m.train()
    trunk = [mod for name, mod in m.named_children() if name not in ("score_heads", "std_heads")]
    assert all(not mod.training for mod in trunk) and m.score_heads.training
    _, logs = m(batch)
    assert float(logs["kl"]) == pytest.approx(0.0, abs=1e-6)
