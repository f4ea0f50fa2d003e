"""`trajmoe data libero` (exact-track LIBERO episodes), the scripted LIBERO-Object expert and LIBERO
demonstration files. Always: the one-line errors that need no LIBERO (missing extra, bad suite / spec
values, malformed demonstration files). With the optional extra: the expert writes a demonstration file
in LIBERO's layout; replaying it by actions reproduces the stored states; replaying it by states through
the CLI writes an ATM-layout episode whose proprioception and actions are the demonstration's, and whose
tracks stay on the pixels of the body they started on (segmentation check, on the moving object too);
seeded scene placement; a short expert episode kept as failed; a non-pick-and-place task refused.
Without the extra those are skipped, saying so."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from trajmoe.cli import main
from trajmoe.data import libero as ld
from trajmoe.envs import libero as lib

needs_libero = pytest.mark.skipif(not lib.libero_available(),
                                  reason="the optional LIBERO extra is not installed: pip install 'trajmoe[libero]'")
SUITE, TASK = "libero_object", "pick_up_the_cream_cheese_and_place_it_in_the_basket"
IMG = 64  # small frames keep the rendered replay short; the object still covers tens of pixels


def test_missing_extra_is_one_line(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(lib, "libero_version", lambda: None)
    monkeypatch.setattr(lib, "_MODULES", {})
    for argv in (["data", "libero", "--suite", SUITE, "--out", str(tmp_path / "o")],
                 ["data", "libero", "--demo", str(tmp_path / "x.hdf5"), "--out", str(tmp_path / "o")],
                 ["eval", "expert", "--suite", SUITE]):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "trajmoe[libero]" in err, err


def test_bad_values_are_one_line(tmp_path, capsys):
    assert main(["data", "libero", "--suite", "libero_100", "--out", str(tmp_path / "o")]) == 2
    assert "unknown LIBERO suite 'libero_100'" in capsys.readouterr().err
    assert main(["data", "libero", "--suite", SUITE, "--episodes", "0", "--out", str(tmp_path / "o")]) == 2
    assert "--episodes must be positive" in capsys.readouterr().err
    with pytest.raises(ValueError, match="init must be one of random, benchmark"):
        ld.LiberoSpec(name="x", suite=SUITE, tasks=(TASK,), episodes=1, init="fixed")
    with pytest.raises(ValueError, match="replay must be one of states, actions"):
        ld.LiberoSpec(name="x", suite=SUITE, tasks=(TASK,), episodes=1, replay="frames")
    with pytest.raises(ValueError, match="init states 0..49"):
        ld.LiberoSpec(name="x", suite=SUITE, tasks=(TASK,), episodes=10, init="benchmark", seed=45)
    with pytest.raises(ValueError, match="one demonstration file per task"):
        ld.LiberoSpec(name="x", suite=SUITE, tasks=(TASK,), episodes=1, source="demo")
    spec = ld.LiberoSpec(name="x", suite=SUITE, tasks=(TASK,), episodes=2, seed=7)
    assert spec.scene(1, 2) == (None, 7 + 1 + 2 * ld.ATTEMPT_STRIDE)
    item = ld.work_items(spec, str(tmp_path))[1]
    assert item.path == tmp_path / f"{TASK}_demo" / "demo_1.hdf5"  # ATM's <task>_demo folders


def test_malformed_demo_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing LIBERO demonstration file"):
        ld.read_demo_file(tmp_path / "none.hdf5")
    bad = tmp_path / "bad.hdf5"
    bad.write_bytes(b"not hdf5")
    with pytest.raises(ValueError, match="corrupt or truncated HDF5"):
        ld.read_demo_file(bad)
    p = tmp_path / "d.hdf5"
    with h5py.File(p, "w") as f:
        f.create_group("other")
    with pytest.raises(ValueError, match=r"key 'data' is missing"):
        ld.read_demo_file(p)
    with h5py.File(p, "w") as f:
        f.create_group("data/demo_0").create_dataset("states", data=np.zeros((3, 5)))
    with pytest.raises(ValueError, match=r"key 'data/demo_0/actions' is missing"):
        ld.read_demo_file(p)
    with h5py.File(p, "w") as f:
        g = f.create_group("data/demo_0")
        g.create_dataset("states", data=np.zeros((3, 5)))
        g.create_dataset("actions", data=np.zeros((3, 4)))
    with pytest.raises(ValueError, match=r"'data/demo_0/actions' must be \(T, 7\), got \(3, 4\)"):
        ld.read_demo_file(p)


# ---------------------------------------------------------------------------------------------
# with the extra


@pytest.fixture(scope="module")
def demo_file(tmp_path_factory):
    """One expert demonstration of TASK in LIBERO's layout (physics only)."""
    out = tmp_path_factory.mktemp("raw")
    rc = main(["data", "libero", "--suite", SUITE, "--tasks", TASK, "--episodes", "1", "--seed", "3", "--raw-demos",
               "--out", str(out), "--no-progress"])
    assert rc == 0
    return out / f"{TASK}_demo.hdf5"


@needs_libero
@pytest.mark.libero
def test_expert_demo_file_layout(demo_file):
    df = ld.read_demo_file(demo_file)
    assert (df.suite, df.task, df.demos) == (SUITE, TASK, ("demo_0",))
    with h5py.File(demo_file) as f:
        info = json.loads(f["data"].attrs["problem_info"])
        assert info["language_instruction"] == "pick up the cream cheese and place it in the basket"
        assert str(f["data"].attrs["bddl_file_name"]).endswith(f"libero_object/{TASK}.bddl")
        d = f["data/demo_0"]
        assert d["states"].shape[0] == d["actions"].shape[0] == d.attrs["num_samples"] == d["rewards"].shape[0]
        assert np.array_equal(d.attrs["init_state"], d["states"][0]) and d["dones"][-1] == 1
        assert np.allclose(d["actions"][: lib.SETTLE_STEPS], lib.SETTLE_ACTION)  # recorded from the scene's placement


@needs_libero
@pytest.mark.libero
def test_action_replay_reproduces_stored_states(demo_file):
    df = ld.read_demo_file(demo_file)
    states, actions = ld.load_demo(demo_file, df.demos[0])
    with lib.LiberoEnv(SUITE, TASK, render=False, max_steps=10**6) as env:
        env.reset_to_state(states[0])
        nq = env.model.nq
        err = []
        for t in range(len(actions)):
            err.append(np.abs(env.sim_state()["state"] - states[t]))
            _, _, success, _ = env.step(actions[t])
        assert success  # the replayed demonstration reaches the goal
        err = np.array(err)
        # exact until contacts start (robosuite's solver warm start is not part of a stored state); then
        # positions within 1e-4 (measured 1e-4 m / rad), velocities within 0.06 (contact transients)
        assert err[:30, 1:].max() < 1e-9, err[:30, 1:].max()
        assert err[:, 1:1 + nq].max() < 1e-3, err[:, 1:1 + nq].max()
        with pytest.raises(ValueError, match="a flattened MuJoCo state of libero_object"):
            env.set_sim_state(states[0][:-1])


@pytest.fixture(scope="module")
def replayed(demo_file, tmp_path_factory):
    """`trajmoe data libero --demo` (replay by states) of the expert's demonstration: the episode file."""
    out = tmp_path_factory.mktemp("rep")
    rc = main(["data", "libero", "--demo", str(demo_file), "--out", str(out), "--image-size", str(IMG), "--num-points", "48",
               "--no-progress"])
    assert rc == 0
    return out / f"{TASK}_demo" / "demo_0.hdf5"


@needs_libero
@pytest.mark.libero
def test_state_replay_writes_the_demonstration(demo_file, replayed):
    from trajmoe.data.atm_hdf5 import load_episode

    ep = load_episode(replayed)
    m = ep.meta
    assert (m.task, m.domain, m.success, m.views) == (TASK, SUITE, True, lib.VIEWS)
    assert m.instruction == "pick up the cream cheese and place it in the basket" and m.image_size == (IMG, IMG)
    assert m.attrs["source"] == "demo" and m.attrs["replay"] == "states" and m.attrs["demo"].endswith(":demo_0")
    with h5py.File(demo_file) as f:
        d = f["data/demo_0"]
        assert np.array_equal(ep.actions, d["actions"][()].astype(np.float32))
        assert ep.proprio.shape == (len(ep.actions), 5)  # ee_pos (3) + both fingers (2), as ATM's files
        with h5py.File(replayed) as g:  # joint positions are the stored states' own (qpos)
            assert np.allclose(g["root/extra_states/joint_states"][()], d["obs/joint_states"][()], atol=1e-6)
        # robosuite samples ee_pos / finger observables inside its physics-substep loop, a substep (2 ms)
        # before the stored state; the replay computes them from the stored state itself
        assert np.allclose(ep.proprio[:, :3], d["obs/ee_pos"][()], atol=2e-3)
        assert np.allclose(ep.proprio[:, 3:], d["obs/gripper_states"][()], atol=2e-3)
    assert all(ep.tracks[v].shape == (m.length, 48, 2) and 0 <= ep.tracks[v].min() and ep.tracks[v].max() <= 1
               for v in lib.VIEWS)


@needs_libero
@pytest.mark.libero
def test_tracks_stay_on_their_body(demo_file, replayed):
    """A point queried on a body is, at every later frame where it is visible, on a pixel of that body."""
    from trajmoe.data.atm_hdf5 import open_episode

    states, _ = ld.load_demo(demo_file, "demo_0")
    with open_episode(replayed) as ep, lib.LiberoEnv(SUITE, TASK, image_size=IMG, max_steps=10**6) as env:
        env.reset_to_state(states[0])
        obj = env.domain.obj_body_id["cream_cheese_1"]
        gb = env.geom_body
        T = ep.meta.length
        frames = sorted(set(range(0, T, 3)) | {T - 1})
        seg = {}
        for t in frames:
            env.set_sim_state(states[t])
            seg[t] = {v: env.render_segmentation(v) for v in lib.VIEWS}
        checked = {"all": [0, 0], "object": [0, 0]}
        for v in lib.VIEWS:
            tr, vis, qf = ep.tracks(v), ep.vis(v), ep.query_frames(v)
            px = np.clip(np.floor(tr * IMG).astype(int), 0, IMG - 1)  # (T, N, 2) as (col, row)
            for i in range(tr.shape[1]):
                q = int(qf[i])
                env.set_sim_state(states[q])
                g = env.render_segmentation(v)[px[q, i, 1], px[q, i, 0]]
                if g < 0:
                    continue
                body = gb[g]
                moved = np.ptp(tr[:, i], axis=0).max() * IMG > 3  # pixels
                for t in frames:
                    if t > q and vis[t, i]:
                        s = seg[t][v][px[t, i, 1], px[t, i, 0]]
                        hit = s >= 0 and gb[s] == body
                        checked["all"][0] += hit
                        checked["all"][1] += 1
                        if body == obj and moved:
                            checked["object"][0] += hit
                            checked["object"][1] += 1
    print("track-on-body checks", checked)
    hits, n = checked["object"]
    assert n >= 10, checked  # points on the cream cheese, carried while it moves
    assert hits / n >= 0.9, checked  # pixel quantisation at the object's edge may miss a few
    assert checked["all"][0] / checked["all"][1] >= 0.9, checked


@needs_libero
@pytest.mark.libero
def test_expert_episode_kept_failed_and_seeded_scenes(tmp_path, capsys):
    out = tmp_path / "ds"
    rc = main(["data", "libero", "--suite", SUITE, "--tasks", "1", "--episodes", "1", "--max-steps", "6", "--keep-failed",
               "--image-size", "32", "--num-points", "16", "--out", str(out), "--no-progress", "--json"])
    assert rc == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["episodes_written"] == 1 and res["source"] == "expert"
    manifest = json.loads((out / "manifest.json").read_text())
    ep = manifest["episodes"][0]
    # every attempt failed (6 steps cannot do it); the last one is kept
    assert ep["success"] is False and ep["length"] == 6 and ep["init_state"] == -1
    assert ep["scene_seed"] == (ld.MAX_ATTEMPTS - 1) * ld.ATTEMPT_STRIDE and res["env_steps"] == 6 * ld.MAX_ATTEMPTS
    # a rerun with other settings is refused, naming the key
    assert main(["data", "libero", "--suite", SUITE, "--tasks", "1", "--episodes", "1", "--max-steps", "7",
                 "--keep-failed", "--image-size", "32", "--num-points", "16", "--out", str(out), "--no-progress"]) == 2
    assert "max_steps" in capsys.readouterr().err
    with lib.LiberoEnv(SUITE, TASK, render=False) as env:
        env.reset(init_state=None, seed=5)
        a = env.sim_state()["state"]
        env.reset(init_state=None, seed=5)
        b = env.sim_state()["state"]
        env.reset(init_state=None, seed=6)
        c = env.sim_state()["state"]
        assert np.array_equal(a[1:], b[1:]) and not np.allclose(a[1:], c[1:])
    with pytest.raises(ValueError, match=r"handles goals \(In OBJECT REGION\).*libero_spatial/"):
        from trajmoe.envs.libero_expert import check_expert_task

        check_expert_task("libero_spatial", lib.suite_tasks("libero_spatial")[0])
