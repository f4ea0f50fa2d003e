"""LIBERO (the optional `libero` extra): the missing-extra error and ATM's trial -> init-state map
always; with the extra installed, one real LIBERO-Spatial scene (a few steps, the protocol's
observations) and one `trajmoe eval policy --suite` episode of a tiny policy trained on ATM-layout
files (video, both CSVs, the zero-action baseline). Without the extra those are skipped, saying so."""

from __future__ import annotations

import csv
import json

import h5py
import numpy as np
import pytest

from trajmoe.cli import main
from trajmoe.envs import libero as lib

needs_libero = pytest.mark.skipif(not lib.libero_available(),
                                  reason="the optional LIBERO extra is not installed: pip install 'trajmoe[libero]'")
SUITE, TASK = "libero_spatial", "pick_up_the_black_bowl_between_the_plate_and_the_ramekin_and_place_it_on_the_plate"
IMG = 32  # the smoke test renders small frames; the protocol's 128 px costs the same physics


def test_missing_extra_is_one_line(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(lib, "libero_version", lambda: None)
    monkeypatch.setattr(lib, "_MODULES", {})
    with pytest.raises(lib.LiberoNotInstalled, match=r"pip install 'trajmoe\[libero\]'"):
        lib.require_libero()
    rc = main(["eval", "policy", "--run", str(tmp_path), "--suite", SUITE])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "trajmoe[libero]" in err, err
    with pytest.raises(ValueError, match="unknown LIBERO suite"):
        lib.check_suite("libero_100")


@pytest.mark.parametrize("flag", ["--video", "--results"])
def test_output_folder_that_is_a_file_is_refused_before_any_rollout(flag, tmp_path, capsys):
    f = tmp_path / "afile.txt"
    f.write_text("keep me")
    rc = main(["eval", "policy", "--run", str(tmp_path / "no-such-run"), "--suite", SUITE, flag, str(f)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err == f"trajmoe: error: {flag} {f} exists and is not a directory", err
    assert f.read_text() == "keep me"


def test_trials_use_atm_init_states():
    assert sorted(lib.trial_init_state(e) for e in range(20)) == sorted([5 * i for i in range(10)] + [5 * i + 1 for i in range(10)])
    assert [lib.trial_init_state(e) for e in (0, 1, 10, 11, 49)] == [0, 5, 1, 6, 49]
    with pytest.raises(ValueError, match="trial must be in 0..49"):
        lib.trial_init_state(50)


def _write_atm_demo(path, T=6, H=IMG):
    """One demo laid out as ATM's LIBERO preprocessing writes it (random content)."""
    rng = np.random.default_rng(0)
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        root = f.create_group("root")
        root.create_dataset("actions", data=rng.uniform(-1, 1, (T, 7)))
        es = root.create_group("extra_states")
        for k, d in (("gripper_states", 2), ("joint_states", 7), ("ee_pos", 3)):
            es.create_dataset(k, data=rng.normal(size=(T, d)))
        root.create_dataset("task_emb_bert", data=rng.normal(size=768).astype(np.float32))
        for view in lib.VIEWS:
            g = root.create_group(view)
            g.create_dataset("video", data=rng.integers(0, 256, (1, T, 3, H, H)).astype(np.uint8))
            g.create_dataset("tracks", data=rng.uniform(0, 1, (1, T, 4, 2)).astype(np.float32))
            g.create_dataset("vis", data=np.ones((1, T, 4), bool))


@pytest.fixture(scope="module")
def libero_policy(tmp_path_factory):
    """A tiny plain-BC policy trained one step on one ATM-layout LIBERO-Spatial demo of TASK."""
    root = tmp_path_factory.mktemp("libero")
    _write_atm_demo(root / "data" / SUITE / f"{TASK}_demo" / "demo_0.hdf5")
    run = root / "pol"
    rc = main(["train", "policy", "--preset", "tiny", "--conditioning", "none", "--data", str(root / "data" / SUITE),
               "--out", str(run), "--set", "steps=1", "--set", "batch_size=2", "--set", "progress=false"])
    assert rc == 0
    return run


@needs_libero
@pytest.mark.libero
def test_libero_scene_steps():
    with lib.make_libero_env(SUITE, 0, image_size=IMG) as env:
        assert env.task_name == TASK and env.language.startswith("pick up the black bowl")
        assert env.init_states.shape[0] == 50 and env.episode_limit == lib.HORIZON
        obs = env.reset(init_state=env.trial_init_state(1))
        assert env.init_state == 5
        assert {v: im.shape for v, im in obs["rgb"].items()} == {v: (IMG, IMG, 3) for v in lib.VIEWS}
        assert obs["ee_pos"].shape == (3,) and obs["gripper"].shape == (2,) and obs["joint_states"].shape == (7,)
        assert obs["rgb"]["agentview"].std() > 5  # a rendered scene, not a blank frame
        ee0 = obs["ee_pos"].copy()
        for _ in range(3):
            obs, _, success, done = env.step(np.array([0, 0, 1, 0, 0, 0, -1.0]))  # up
        assert not success and not done and obs["step"] == 3
        assert obs["ee_pos"][2] > ee0[2]  # the OSC controller moved the hand up
        with pytest.raises(ValueError, match="7-D"):
            env.step(np.zeros(4))


@needs_libero
@pytest.mark.libero
def test_eval_policy_on_libero(libero_policy, tmp_path, capsys):
    out = tmp_path / "res"
    rc = main(["eval", "policy", "--run", str(libero_policy), "--suite", SUITE, "--tasks", "0", "--episodes", "1",
               "--workers", "1", "--max-steps", "8", "--video", str(tmp_path / "vid"), "--results", str(out), "--json"])
    assert rc == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["suite"] == SUITE and list(res["tasks"]) == [TASK] and res["episodes"] == 1
    assert res["tasks"][TASK]["mean_length"] == 8 and res["init_states"] == {TASK: [0]}
    assert res["baseline"]["episodes"] == 1 and 0 <= res["tasks"][TASK]["ci95"][0] <= res["tasks"][TASK]["ci95"][1] <= 1
    assert len(res["videos"]) == 1 and (tmp_path / "vid" / f"{SUITE}_{TASK}_init0.mp4").stat().st_size > 0
    rows = list(csv.reader(open(out / f"summary_{SUITE}.csv")))
    assert rows[0] == ["", "epoch", "success_env0", "success_env_avg"] and rows[1][1] == "final"
    tasks = list(csv.DictReader(open(out / f"tasks_{SUITE}.csv")))
    assert tasks[0]["task"] == TASK and tasks[0]["episodes"] == "1"
    # a task the policy was not trained on: refused in one line, naming the embedding
    rc = main(["eval", "policy", "--run", str(libero_policy), "--suite", SUITE, "--tasks", "3"])
    assert rc == 2 and "no task embedding" in capsys.readouterr().err
