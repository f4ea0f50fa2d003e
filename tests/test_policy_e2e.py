"""End to end on real MetaWorld data: generate 2 episodes, a track run, `trajmoe train policy`,
`trajmoe eval policy` (2 worker processes, GIF video), `trajmoe bench policy`, and bad inputs."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from trajmoe.cli import main

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    from trajmoe.data.generate import generate
    from trajmoe.data.specs import DomainSpec

    out = tmp_path_factory.mktemp("data") / "mw"
    summary = generate([(DomainSpec(name="mw", tasks=("reach-v3",), episodes=2, max_steps=120), str(out))],
                       workers=1, progress=False)
    assert summary.done == 2, summary.as_dict()
    return out


@pytest.fixture(scope="module")
def track_run(data_dir, tmp_path_factory):
    """A tiny-dense track model trained a few steps on the same episodes (`trajmoe train track`)."""
    run = tmp_path_factory.mktemp("track") / "run"
    rc = main(["train", "track", "--preset", "tiny-dense", "--data", str(data_dir), "--out", str(run),
               "--set", "steps=2", "--set", "batch_size=4", "--set", "depth=1", "--set", "progress=false"])
    assert rc == 0 and (run / "model.safetensors").is_file()
    return run


def last_json(capsys) -> dict:
    out = capsys.readouterr().out.strip().splitlines()
    return json.loads(out[-1])


def train_args(data_dir, out, *extra) -> list[str]:
    return ["train", "policy", "--preset", "tiny", "--data", str(data_dir), "--out", str(out),
            "--set", "steps=2", "--set", "batch_size=2", "--set", "progress=false", *extra]


def test_train_eval_bench_end_to_end(data_dir, track_run, tmp_path, capsys):
    from trajmoe.families import family
    from trajmoe.train.checkpoint import load_run_config

    run = tmp_path / "pol"
    rc = main(train_args(data_dir, run, "--conditioning", "adaptive_mask", "--track-run", str(track_run)))
    assert rc == 0
    cfg = load_run_config(run)
    assert cfg["kind"] == "policy" and cfg["model"]["conditioning"] == "adaptive_mask"
    assert cfg["track_run"] == str(track_run.resolve())
    assert cfg["model"]["views"] == ["agentview", "eye_in_hand"] and cfg["model"]["action_dim"] == 4
    assert cfg["tasks"] == ["reach-v3"] and cfg["episodes"] == 2
    for f in ("model.safetensors", "track_cache.safetensors", "task_emb.safetensors", "metrics.jsonl",
              "mask_values.png", "mask_values.json"):
        assert (run / f).is_file(), f
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == 2 and np.isfinite(rows[-1]["loss"])

    # the cached tracks are what the frozen track model predicts for those frames
    from trajmoe.policy.dataset import CACHE_FILE
    from trajmoe.train.checkpoint import read_tensors

    pol, _ = family("policy").from_run(run)
    cache = read_tensors(run / CACHE_FILE)["0"].float()  # episode 0: (T, V, Tt, N, 2)
    from trajmoe.data.atm_hdf5 import open_episode
    from trajmoe.data.datasets import list_episodes

    with open_episode(list_episodes(data_dir)[0]) as ep:
        frames = torch.from_numpy(ep.frames("agentview", [0, 3])).float() / 255
        emb = torch.from_numpy(ep.task_emb())
    pred = pol.predict_tracks(frames, emb.expand(2, -1))
    torch.testing.assert_close(cache[[0, 3], 0], pred, atol=2e-3, rtol=0)

    # closed loop: 2 held-out episodes on 2 worker processes, one MP4 with tracks drawn
    vid = tmp_path / "videos"
    rc = main(["eval", "policy", "--run", str(run), "--episodes", "2", "--max-steps", "4", "--workers", "2",
               "--video", str(vid), "--json"])
    assert rc == 0
    res = last_json(capsys)
    assert res["episodes"] == 2 and res["workers"] == 2 and 0.0 <= res["success_rate"] <= 1.0
    assert set(res["tasks"]) == {"reach-v3"} and res["variations"] == [1_000_000, 1_000_001]
    assert 1 <= res["tasks"]["reach-v3"]["mean_length"] <= 4 and res["latency_ms"] > 0
    assert len(res["videos"]) == 1 and res["videos"][0].endswith(".mp4")  # MP4 by default (imageio-ffmpeg)
    import imageio.v2 as imageio

    frames = imageio.mimread(res["videos"][0])
    assert len(frames) >= 1 and frames[0].shape[:2] == (256, 512)  # two views side by side, 2x

    rc = main(["bench", "policy", "--run", str(run), "--repeats", "2", "--json"])
    assert rc == 0
    b = last_json(capsys)
    assert b["conditioning"] == "adaptive_mask" and b["select_action_ms"] > 0 and b["track_predict_ms"] > 0


def test_none_mode_needs_no_track_run(data_dir, tmp_path, capsys):
    run = tmp_path / "none"
    assert main(train_args(data_dir, run, "--conditioning", "none")) == 0
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["track_run"] is None and not (run / "track_cache.safetensors").exists()
    assert main(["bench", "policy", "--preset", "tiny", "--conditioning", "none", "--repeats", "2", "--json"]) == 0
    b = last_json(capsys)
    assert b["track_predict_ms"] == 0.0 and b["track_model"] is None


@pytest.mark.parametrize("extra,message", [
    (["--conditioning", "atm", "--track-run", "/nonexistent/track"], "track run directory not found: /nonexistent/track"),
    (["--conditioning", "atm"], "needs --track-run"),
    (["--set", "views=[agentview,wrist]"], "policy views ['agentview', 'wrist'] do not match the data"),
    (["--set", "action_dim=7"], "policy action_dim=7 does not match the data"),
    (["--set", "frame_stak=3"], "--set key 'frame_stak' is unknown"),
    (["--conditioning", "mask"], "--conditioning must be one of"),
    (["--tasks", "push-v3"], "task(s) ['push-v3'] have no action-labelled episodes"),
])
def test_bad_inputs_give_one_line_errors(data_dir, track_run, tmp_path, capsys, extra, message):
    if "--track-run" not in extra and "atm" not in extra:
        extra = ["--conditioning", "adaptive_mask", "--track-run", str(track_run), *extra]
    rc = main(train_args(data_dir, tmp_path / "bad", *extra))
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert message in err and len(err.splitlines()) == 1, err


def test_eval_bad_inputs(data_dir, track_run, tmp_path, capsys):
    assert main(["eval", "policy", "--run", str(tmp_path / "missing"), "--episodes", "1"]) == 2
    assert "policy run directory not found" in capsys.readouterr().err
    assert main(["eval", "policy", "--run", str(track_run), "--episodes", "1"]) == 2
    assert "is not a policy run" in capsys.readouterr().err
