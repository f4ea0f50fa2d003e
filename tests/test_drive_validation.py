"""Planner training streams scenes (features only) and validates on held-out scenes during training."""

import json

import numpy as np
import pytest
import torch

from trajmoe.drive.dataset import DriveDataset
from trajmoe.drive.scenes import SceneGenConfig, generate, load_scenes, select_scene_paths


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """One tiny scene folder (4 merge + highway scenes); validation takes 2 of them (`data.val_scenes`,
    one per scenario): held-out-ness is the user's choice of folder, the wiring is what is tested here."""
    root = tmp_path_factory.mktemp("drive_val")
    generate(root / "train", ["merge", "highway"], 4, SceneGenConfig(episode_steps=70, stride=10), progress=False)
    return root


def test_streamed_features_and_samples_match_the_in_memory_ones(data):
    from trajmoe.drive.run import stream_features
    from trajmoe.drive.vocab import trajectory_samples

    paths = select_scene_paths(data / "train")
    scenes = load_scenes(data / "train")
    features, samples = stream_features(paths)
    assert np.array_equal(samples, trajectory_samples(scenes))  # same order: the same k-means vocabulary
    ref = DriveDataset(scenes).features
    assert len(features) == len(ref) == len(paths)
    for f, r in zip(features, ref):
        assert f.keys() == r.keys() and all(np.array_equal(f[k], r[k]) for k in f)
    assert stream_features(paths, with_samples=False)[1] is None


def test_train_with_val_keeps_the_best_held_out_epdms(data, tmp_path):
    from trajmoe.cli import main
    from trajmoe.drive.evaluate import evaluate_open_loop, evaluate_planner_files
    from trajmoe.families import family

    load_planner = lambda path: family("planner").from_run(path)[0]  # noqa: E731

    out = tmp_path / "run"
    assert main(["train", "planner", "--preset", "tiny-moe", "--data", str(data / "train"), "--val", str(data / "train"),
                 "--out", str(out), "--no-progress", "--set", "steps=4", "data.val_scenes=2", "eval_every=2", "model.vocab_size=8",
                 "batch_size=2", "data.vocab_iters=3"]) == 0
    recs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in recs if "eval/EPDMS" in r]
    assert [r["step"] for r in evals] == [2, 4]
    assert all(0.0 <= r["eval/EPDMS"] <= 1.0 and "eval/merge/EPDMS" in r and "eval/highway/EPDMS" in r and "eval/DAC" in r
               for r in evals)
    best = max(evals, key=lambda r: r["eval/EPDMS"])  # first of equals: the Trainer keeps only strict gains
    info = json.loads((out / "best" / "eval.json").read_text())
    assert info["step"] == best["step"] and info["metric"] == "EPDMS"
    assert json.loads((out / "validation.json").read_text())["best"] == pytest.approx(best["eval/EPDMS"])
    # RUN/best is a loadable planner that reproduces its recorded held-out EPDMS, as `eval planner` scores it
    planner = load_planner(out / "best")
    paths = select_scene_paths(data / "train", 2)
    assert {p.name.split("_")[0] for p in paths} == {"merge", "highway"}
    assert evaluate_planner_files(planner, paths)["EPDMS"] == pytest.approx(info["metrics"]["EPDMS"])
    full = evaluate_open_loop(planner, load_scenes(data / "train", 2), with_baselines=False)["planner"]
    assert full["EPDMS"] == pytest.approx(info["metrics"]["EPDMS"]) and full["n"] == 2
    assert torch.equal(planner.vocab, load_planner(out).vocab)


def test_bad_val_folder_is_a_one_line_error(data, tmp_path):
    from trajmoe.families import family

    fam = family("planner")
    cfg = fam.resolve("tiny-moe", {"data.val_dir": str(tmp_path / "nope"), "steps": 1})
    with pytest.raises(FileNotFoundError, match="nope"):
        fam.fit(cfg, str(data / "train"), str(tmp_path / "run"), progress=False)
