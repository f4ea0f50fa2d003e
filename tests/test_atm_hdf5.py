"""Episode files: round trip, ATM's LIBERO layout, atomic writes, and one-line errors for bad files.

These are format tests: the arrays are small synthetic fixtures (the real-data path is covered by
tests/test_generate.py, which writes episodes from the simulator).
"""

from __future__ import annotations

import json
import os

import h5py
import numpy as np
import pytest

from trajmoe.data.atm_hdf5 import (
    EpisodeData,
    ViewData,
    libero_instruction,
    load_episode,
    open_episode,
    write_episode,
)
from trajmoe.data.datasets import list_episodes


def _episode(T=6, N=5, H=16, W=16, actions=True, seed=0) -> EpisodeData:
    rng = np.random.default_rng(seed)
    views = {
        v: ViewData(
            camera=cam,
            frames_THW3=rng.integers(0, 256, (T, H, W, 3), dtype=np.uint8),
            tracks_TN2=rng.uniform(0, 1, (T, N, 2)).astype(np.float32),
            vis_TN=rng.uniform(size=(T, N)) > 0.3,
            query_frame_N=rng.integers(0, T, N).astype(np.int32),
        )
        for v, cam in (("agentview", "corner"), ("eye_in_hand", "gripperPOV"))
    }
    attrs = {"task": "push-v3", "instruction": "push the puck to the goal", "domain": "id", "camera": "corner",
             "seed": 7, "variation": 3, "visual_seed": None, "success": True, "generator_version": "test"}
    return EpisodeData(
        views=views, ee_pos_T3=rng.normal(size=(T, 3)).astype(np.float32), gripper_T1=rng.uniform(size=(T, 1)).astype(np.float32),
        task_emb=rng.normal(size=384).astype(np.float32), attrs=attrs,
        actions_TA=rng.uniform(-1, 1, (T, 4)).astype(np.float32) if actions else None,
        state_TS=rng.normal(size=(T, 39)).astype(np.float32),
    )


def test_round_trip(tmp_path):
    ep = _episode()
    path = write_episode(tmp_path / "push-v3" / "demo_0.hdf5", ep)
    got = load_episode(path)
    m = got.meta
    assert (m.task, m.domain, m.instruction, m.format) == ("push-v3", "id", "push the puck to the goal", "trajmoe-episode")
    assert m.views == ("agentview", "eye_in_hand") and m.length == 6 and m.has_actions and m.action_dim == 4
    assert m.num_points == {"agentview": 5, "eye_in_hand": 5} and m.image_size == (16, 16) and m.success
    assert m.attrs["variation"] == 3 and m.attrs["visual_seed"] == -1 and m.attrs["action_free"] is False
    for v, vd in ep.views.items():
        np.testing.assert_array_equal(got.frames[v], vd.frames_THW3.transpose(0, 3, 1, 2))
        np.testing.assert_array_equal(got.tracks[v], vd.tracks_TN2)
        np.testing.assert_array_equal(got.vis[v], vd.vis_TN)
    np.testing.assert_array_equal(got.actions, ep.actions_TA)
    np.testing.assert_array_equal(got.proprio, np.concatenate([ep.ee_pos_T3, ep.gripper_T1], 1))
    np.testing.assert_array_equal(got.task_emb, ep.task_emb)
    with open_episode(path) as f:  # lazy reads: frame subsets in any order, channels last
        sub = f.frames("eye_in_hand", [4, 1, 4], channels_last=True)
        np.testing.assert_array_equal(sub, ep.views["eye_in_hand"].frames_THW3[[4, 1, 4]])
        np.testing.assert_array_equal(f.query_frames("agentview"), ep.views["agentview"].query_frame_N)
        with pytest.raises(ValueError, match="out of range"):
            f.frames("agentview", [6])
        with pytest.raises(ValueError, match="no view 'wrist'"):
            f.tracks("wrist")
    # the ATM layout, by key and shape
    with h5py.File(path) as f:
        assert f["root/agentview/video"].shape == (1, 6, 3, 16, 16) and f["root/agentview/video"].dtype == np.uint8
        assert f["root/agentview/tracks"].shape == (1, 6, 5, 2) and f["root/agentview/vis"].shape == (1, 6, 5)
        assert f["root/actions"].shape == (6, 4) and f["root/task_emb"].shape == (384,)
        assert f["root/extra_states/ee_pos"].shape == (6, 3) and f["root/extra_states/gripper_states"].shape == (6, 1)


def test_action_free_episode(tmp_path):
    path = write_episode(tmp_path / "a.hdf5", _episode(actions=False))
    with open_episode(path) as f:
        assert not f.meta.has_actions and f.actions() is None and f.meta.attrs["action_free"] is True


def _write_atm_libero(path, T=5, N=6, H=16, W=16):
    """A file laid out exactly as ATM's scripts/preprocess_libero.py writes one demo."""
    rng = np.random.default_rng(3)
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        root = f.create_group("root")
        root.create_dataset("actions", data=rng.uniform(-1, 1, (T, 7)))
        es = root.create_group("extra_states")
        for k, d in (("gripper_states", 2), ("joint_states", 7), ("ee_ori", 3), ("ee_pos", 3), ("ee_states", 6)):
            es.create_dataset(k, data=rng.normal(size=(T, d)))
        root.create_dataset("task_emb_bert", data=rng.normal(size=768).astype(np.float32))
        for view in ("agentview", "eye_in_hand"):
            g = root.create_group(view)
            g.create_dataset("video", data=rng.integers(0, 256, (1, T, 3, H, W)).astype(np.uint8))
            g.create_dataset("tracks", data=rng.uniform(0, 1, (1, T, N, 2)).astype(np.float32))
            g.create_dataset("vis", data=rng.uniform(size=(1, T, N)) > 0.5)
    return path


def test_atm_libero_file_loads(tmp_path):
    d = tmp_path / "libero_spatial" / "KITCHEN_SCENE3_turn_on_the_stove_demo"
    path = _write_atm_libero(d / "demo_0.hdf5")
    ep = load_episode(path)
    m = ep.meta
    assert m.format == "atm" and m.instruction == "turn on the stove" and m.domain == "libero_spatial"
    assert m.task == "KITCHEN_SCENE3_turn_on_the_stove_demo" and m.views == ("agentview", "eye_in_hand")
    assert m.action_dim == 7 and ep.actions.shape == (5, 7) and ep.task_emb.shape == (768,)
    assert ep.proprio.shape == (5, 5)  # ee_pos (3) + gripper_states (2)
    assert ep.frames["agentview"].shape == (5, 3, 16, 16) and ep.tracks["eye_in_hand"].shape == (5, 6, 2)
    assert list_episodes(tmp_path / "libero_spatial") == [path]  # no manifest: every *.hdf5
    assert libero_instruction("pick_up_the_black_bowl_demo") == "pick up the black bowl"
    assert libero_instruction("LIVING_ROOM_SCENE10_put_the_box_in_the_basket_demo") == "put the box in the basket"


def test_interrupted_write_leaves_no_partial_file(tmp_path):
    path = tmp_path / "t" / "demo_0.hdf5"

    class Boom:
        def astype(self, *_a, **_k):
            raise KeyboardInterrupt  # the process is stopped after the videos were written

    ep = _episode()
    ep.state_TS = Boom()
    with pytest.raises(KeyboardInterrupt):
        write_episode(path, ep)
    # the file is built in memory: nothing, not even its folder, is on disk before the bytes are written
    assert not path.exists() and (not path.parent.exists() or os.listdir(path.parent) == [])
    good = write_episode(path, _episode(seed=1))
    before = good.read_bytes()
    with pytest.raises(KeyboardInterrupt):
        write_episode(path, ep)
    assert path.read_bytes() == before and os.listdir(path.parent) == ["demo_0.hdf5"]  # old file intact


def test_bad_files_give_one_line_errors(tmp_path):
    good = write_episode(tmp_path / "good.hdf5", _episode())
    with pytest.raises(FileNotFoundError, match="missing.hdf5"):
        open_episode(tmp_path / "missing.hdf5")
    junk = tmp_path / "junk.hdf5"
    junk.write_bytes(b"not an hdf5 file" * 10)
    with pytest.raises(ValueError, match="junk.hdf5") as e:
        open_episode(junk)
    assert "\n" not in str(e.value)
    trunc = tmp_path / "trunc.hdf5"
    trunc.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(ValueError, match="trunc.hdf5") as e:
        load_episode(trunc)
    assert "\n" not in str(e.value)

    def edit(name, fn):
        p = tmp_path / name
        p.write_bytes(good.read_bytes())
        with h5py.File(p, "a") as f:
            fn(f)
        return p

    p = edit("novis.hdf5", lambda f: f.__delitem__("root/agentview/vis"))
    with pytest.raises(ValueError, match=r"novis.hdf5.*root/agentview/vis.*missing"):
        open_episode(p)

    def nan(f):
        f["root/eye_in_hand/tracks"][0, 2, 1, 0] = np.nan

    p = edit("nan.hdf5", nan)
    with pytest.raises(ValueError, match=r"nan.hdf5.*root/eye_in_hand/tracks.*NaN"):
        open_episode(p)
    p = edit("noemb.hdf5", lambda f: f.__delitem__("root/task_emb"))
    with pytest.raises(ValueError, match=r"noemb.hdf5.*task_emb"):
        open_episode(p)
    p = edit("noroot.hdf5", lambda f: f.__delitem__("root"))
    with pytest.raises(ValueError, match=r"noroot.hdf5.*'root'"):
        open_episode(p)

    def short_actions(f):
        del f["root/actions"]
        f["root/actions"] = np.zeros((2, 4), np.float32)

    p = edit("short.hdf5", short_actions)
    with pytest.raises(ValueError, match=r"short.hdf5.*root/actions"):
        open_episode(p)
    # writer refuses NaN tracks too
    ep = _episode()
    ep.views["agentview"].tracks_TN2[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="agentview.*NaN"):
        write_episode(tmp_path / "w.hdf5", ep)


def test_list_episodes_manifest(tmp_path):
    write_episode(tmp_path / "d" / "push-v3" / "demo_0.hdf5", _episode())
    (tmp_path / "d" / "manifest.json").write_text(json.dumps({"episodes": [
        {"path": "push-v3/demo_0.hdf5", "success": True}, {"path": "push-v3/demo_1.hdf5", "success": False}]}))
    assert list_episodes(tmp_path / "d") == [tmp_path / "d" / "push-v3" / "demo_0.hdf5"]
    assert len(list_episodes(tmp_path / "d", success_only=False)) == 2
    (tmp_path / "manifest.json").write_text(json.dumps({"domains": {"id": "d"}}))
    assert list_episodes(tmp_path) == [tmp_path / "d" / "push-v3" / "demo_0.hdf5"]
    (tmp_path / "d" / "manifest.json").write_text("{broken")
    with pytest.raises(ValueError, match="manifest.json"):
        list_episodes(tmp_path / "d")
    with pytest.raises(FileNotFoundError, match="nowhere"):
        list_episodes(tmp_path / "nowhere")


def test_disk_full_is_one_storage_error_and_no_segfault(tmp_path):
    """ENOSPC while writing an episode (issue 28, item 5): HDF5 used to fail flushing its open handles while
    the error unwound (100 lines of tracebacks, then SIGSEGV); now one StorageError naming the file, no temp
    left. Needs a tiny real file system (tmpfs: root with mount rights), else skipped."""
    import subprocess
    import sys
    from pathlib import Path

    mnt = tmp_path / "full"
    mnt.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)],
                                           capture_output=True).returncode:
        pytest.skip("needs a tiny tmpfs (root with mount rights)")
    try:
        script = (
            "import sys; sys.path.insert(0, sys.argv[2]); from test_atm_hdf5 import _episode\n"
            "from trajmoe.data.atm_hdf5 import write_episode\nfrom trajmoe.io import StorageError\n"
            "try:\n    write_episode(sys.argv[1], _episode(T=20, H=32, W=32))\n"
            "except StorageError as e:\n    print('ERR', e)\n"
        )
        root = Path(__file__).resolve().parents[1]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
        proc = subprocess.run([sys.executable, "-c", script, str(mnt / "t" / "demo_0.hdf5"), str(Path(__file__).parent)],
                              capture_output=True, text=True, env=env, timeout=120)
        assert proc.returncode == 0, (proc.returncode, proc.stderr[-2000:])
        assert proc.stdout.strip() == f"ERR cannot write {mnt / 't' / 'demo_0.hdf5'}: no space left on the device"
        assert proc.stderr == "" and list((mnt / "t").iterdir()) == []
    finally:
        subprocess.run(["umount", str(mnt)], check=False)
