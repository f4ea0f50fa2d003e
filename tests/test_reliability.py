"""Runs and datasets that cannot silently lie: locked run folders that record their settings,
dataset folders that record theirs, data checked on the way in, paths that stay inside their folder."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from trajmoe.cli import main

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--set", "steps=2", "batch_size=2", "log_every=1", "progress=false", "warmup_steps=1"]


def track_args(data, out, *extra):
    return ["train", "track", "--preset", "tiny-dense", "--data", *map(str, data), "--out", str(out), *FAST, *extra]


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


# ---- run folders ---------------------------------------------------------------------------------


def test_resume_refuses_changed_settings_unless_allowed_and_records_history(mw_data, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(track_args([mw_data["id"]], run)) == 0
    assert main(track_args([mw_data["id"]], run, "--resume", "--set", "lr=0.01", "seed=3")) == 2
    err = one_line_error(capsys)
    assert "train.lr" in err and "train.seed" in err and "--allow-change" in err
    assert main(track_args([mw_data["id"], mw_data["ood"]], run, "--resume")) == 2
    assert "data_dirs" in one_line_error(capsys)
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["train"]["lr"] != 0.01 and cfg["history"] == []  # the refused resume rewrote nothing
    assert main(track_args([mw_data["id"]], run, "--resume", "--allow-change", "--set", "lr=0.01", "steps=3")) == 0
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["train"]["lr"] == 0.01
    (entry,) = cfg["history"]
    assert entry["resumed_at_step"] == 2 and entry["allowed"] and any("train.lr" in c for c in entry["changed"])


def test_resume_without_a_run_is_an_error(tmp_path, mw_data, capsys):
    assert main(track_args([mw_data["id"]], tmp_path / "typo", "--resume")) == 2
    assert "nothing to resume" in one_line_error(capsys)


def test_lock_refuses_a_second_writer(mw_data, tmp_path, capsys):
    run = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from trajmoe.io import DirLock; DirLock.acquire(sys.argv[1]); "
         "print('locked', flush=True); time.sleep(60)", str(run)],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert main(track_args([mw_data["id"]], run)) == 2
        err = one_line_error(capsys)
        assert "in use by another process" in err and f"pid {holder.pid}" in err
    finally:
        holder.kill()
        holder.wait()
    assert main(track_args([mw_data["id"]], run)) == 0  # the kernel dropped the dead holder's lock


def test_exported_weights_are_a_copy_and_failed_runs_do_not_block(mw_data, tmp_path):
    from trajmoe.train.checkpoint import latest_checkpoint

    run = tmp_path / "run"
    assert main(track_args([mw_data["id"]], run)) == 0
    _, cdir = latest_checkpoint(run)
    assert os.stat(run / "model.safetensors").st_ino != os.stat(cdir / "model.safetensors").st_ino
    before = (cdir / "model.safetensors").read_bytes()
    (run / "model.safetensors").write_bytes(b"user overwrote this")  # in place, as users do
    assert (cdir / "model.safetensors").read_bytes() == before
    # a run that died before its first checkpoint (config.json + metrics only) never blocks a rerun
    dead = tmp_path / "dead"
    dead.mkdir()
    (dead / "config.json").write_text(json.dumps({"kind": "track", "model": {"dim": 1}}))
    (dead / "metrics.jsonl").write_text('{"step": 1, "loss": 1.0}\n')
    (dead / ".model.safetensors.abc.tmp").write_bytes(b"half")
    assert main(track_args([mw_data["id"]], dead)) == 0
    assert not (dead / ".model.safetensors.abc.tmp").exists()
    assert [json.loads(x)["step"] for x in (dead / "metrics.jsonl").read_text().splitlines()] == [1, 2]


# ---- data on the way in --------------------------------------------------------------------------


def _copy_episode(src_dir: Path, dst: Path) -> Path:
    src = next(p for p in sorted(src_dir.rglob("demo_*.hdf5")))
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(src, dst)
    return dst


def test_pixel_tracks_nan_and_hidden_folders(mw_data, tmp_path, capsys):
    from trajmoe.data.datasets import list_episodes

    d = tmp_path / "pix"
    ep = _copy_episode(mw_data["id"], d / "reach" / "demo_0.hdf5")
    with h5py.File(ep, "r+") as f:
        f["root/agentview/tracks"][...] = f["root/agentview/tracks"][...] * 128  # CoTracker's pixel units
    assert main(track_args([d], tmp_path / "r1")) == 2
    err = one_line_error(capsys)
    assert "root/agentview/tracks" in err and "pixel units" in err and "demo_0.hdf5" in err
    with h5py.File(ep, "r+") as f:
        f["root/agentview/tracks"][...] = f["root/agentview/tracks"][...] / 128
        acts = f["root/actions"][...]
        acts[3, 1] = np.nan
        f["root/actions"][...] = acts
    assert main(track_args([d], tmp_path / "r2")) == 2
    assert "root/actions" in one_line_error(capsys)
    # a hidden folder (Jupyter's checkpoints) is not a task
    ok = tmp_path / "ok"
    _copy_episode(mw_data["id"], ok / "reach" / "demo_0.hdf5")
    _copy_episode(mw_data["id"], ok / ".ipynb_checkpoints" / "demo_0.hdf5")
    assert [p.relative_to(ok).as_posix() for p in list_episodes(ok)] == ["reach/demo_0.hdf5"]


def test_libero_768_embeddings_train_with_the_default_preset(mw_data, tmp_path):
    """An ATM-layout LIBERO file (task_emb_bert (768,), no attributes) built from a real episode."""
    src = next(mw_data["id"].rglob("demo_*.hdf5"))
    d = tmp_path / "libero_spatial" / "KITCHEN_SCENE3_turn_on_the_stove_demo"
    d.mkdir(parents=True)
    with h5py.File(src, "r") as f, h5py.File(d / "demo_0.hdf5", "w") as g:
        for key in ("agentview", "eye_in_hand", "actions", "extra_states"):
            f.copy(f"root/{key}", g.require_group("root"), name=key)
        emb = f["root/task_emb"][...]
        g["root"].create_dataset("task_emb_bert", data=np.concatenate([emb, emb]))
    run = tmp_path / "run"
    assert main(["train", "track", "--data", str(tmp_path / "libero_spatial"), "--out", str(run), *FAST]) == 0
    assert json.loads((run / "config.json").read_text())["model"]["lang_dim"] == 768


def test_worker_errors_and_eval_options_are_one_line(mw_data, tmp_path, capsys):
    assert main(track_args([mw_data["id"]], tmp_path / "w", "--set", "img_size=64", "num_workers=1")) == 2
    err = one_line_error(capsys)
    assert "the model expects 64" in err and "Traceback" not in err
    run = tmp_path / "ok"
    assert main(track_args([mw_data["id"]], run)) == 0
    capsys.readouterr()
    assert main(["eval", "track", "--run", str(run), "--data", str(mw_data["id"]), "--max-samples", "-1"]) == 2
    assert "--max-samples" in one_line_error(capsys)


# ---- dataset folders -----------------------------------------------------------------------------


def test_dataset_rerun_with_other_settings_is_refused_and_verify_regenerates(tmp_path, capsys):
    out = tmp_path / "mw"
    base = ["data", "metaworld", "--tasks", "reach-v3", "--episodes", "1", "--max-steps", "60", "--out", str(out),
            "--no-progress", "--views", "agentview", "--keep-failed"]
    assert main(base) == 0
    capsys.readouterr()
    assert main([*base, "--camera", "corner2", "--image-size", "64"]) == 2
    err = one_line_error(capsys)
    assert "camera" in err and "image_size" in err
    ep = out / "reach-v3" / "demo_0.hdf5"
    with h5py.File(ep, "r") as f:  # zero one video chunk in place (file size intact)
        offset, size = f["root/agentview/video"].id.get_chunk_info(2).byte_offset, f["root/agentview/video"].id.get_chunk_info(2).size
    with open(ep, "r+b") as fh:
        fh.seek(offset)
        fh.write(b"\0" * size)
    size_before = ep.stat().st_size
    out_text = (main(base), capsys.readouterr().out)[1]  # the quick check does not read video, and says so
    assert "skipped 1 done (their contents not re-read: --verify checks them)" in out_text
    assert main([*base, "--verify"]) == 0
    assert "wrote 1 episodes" in capsys.readouterr().out
    from trajmoe.data.atm_hdf5 import is_complete_episode

    assert is_complete_episode(ep, verify=True) and ep.stat().st_size == size_before


def test_manifest_paths_and_variant_names_stay_inside(mw_data, tmp_path, capsys):
    from trajmoe.data.datasets import list_episodes

    d = tmp_path / "d"
    _copy_episode(mw_data["id"], tmp_path / "outside" / "demo_0.hdf5")
    d.mkdir()
    for bad in ("../outside/demo_0.hdf5", str(tmp_path / "outside" / "demo_0.hdf5")):
        (d / "manifest.json").write_text(json.dumps({"episodes": [{"path": bad}]}))
        with pytest.raises(ValueError, match=r"episodes\[0\]\.path.*inside"):
            list_episodes(d)
    scenes = tmp_path / "scenes"
    scenes.mkdir()
    (scenes / "manifest.json").write_text(json.dumps({"format": "trajmoe-drive-scenes/1", "scenes": [{"name": "../../x"}]}))
    assert main(["drive", "train", "--preset", "tiny-moe", "--data", str(scenes), "--out", str(tmp_path / "r")]) == 2
    assert "scene name" in one_line_error(capsys)
    from trajmoe.experiment.spec import load_spec

    spec = tmp_path / "spec.yaml"
    spec.write_text("scales: {smoke: {}}\nvariants: {'../../x': {}}\nsteps: [{name: a, cmd: [demo]}]\n")
    with pytest.raises(ValueError, match=r"variant '\.\./\.\./x'"):
        load_spec(spec, "smoke")


def test_truncated_scene_is_one_line(tmp_path, capsys):
    data = tmp_path / "scenes"
    gen = ["drive", "data", "--scenarios", "merge", "--scenes", "2", "--out", str(data), "--no-progress"]
    assert main(gen) == 0
    assert main([*gen[:-3], "--stride", "10", "--out", str(data), "--no-progress"]) == 2
    assert "stride" in one_line_error(capsys)
    victim = sorted((data / "scenes").glob("*.npz"))[0]
    victim.write_bytes(victim.read_bytes()[:500])
    assert main(["drive", "train", "--preset", "tiny-moe", "--data", str(data), "--out", str(tmp_path / "r"),
                 "--no-progress"]) == 2
    err = one_line_error(capsys)
    assert victim.name in err and "truncated" in err
    assert main([*gen, "--verify"]) == 0  # the damaged episode is simulated again
    from trajmoe.drive.scenes import load_scene

    assert load_scene(victim)["scenario"] == "merge"


# ---- run folders never destroy what trajmoe did not make (issue 28, item 1) ----------------------


def test_out_with_someone_elses_model_files_is_refused_and_left_alone(mw_data, tmp_path, capsys):
    theirs = tmp_path / "hf_model"
    theirs.mkdir()
    files = {"config.json": '{"architectures": ["BertModel"], "hidden_size": 768}\n', "model.safetensors": "weights",
             "tokenizer.json": "{}", ".notes.tmp": "mine"}
    for name, text in files.items():
        (theirs / name).write_text(text)
    for extra in ([], ["--overwrite"], ["--resume"]):
        assert main(track_args([mw_data["id"]], theirs, *extra)) == 2
        err = one_line_error(capsys)
        assert "did not make" in err and "config.json" in err and "model.safetensors" in err, err
    assert {p.name: p.read_text() for p in theirs.iterdir() if p.name != ".lock"} == files
    # weights without any config.json are not trajmoe's either
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "model.safetensors").write_text("weights")
    assert main(track_args([mw_data["id"]], bare)) == 2
    assert "no config.json" in one_line_error(capsys)
    assert (bare / "model.safetensors").read_text() == "weights"


def test_trained_weights_without_a_checkpoint_are_kept_unless_overwrite(mw_data, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(track_args([mw_data["id"]], run, "--set", "steps=4")) == 0
    shutil.rmtree(run / "state")  # the user saved disk
    weights = (run / "model.safetensors").read_bytes()
    assert main(track_args([mw_data["id"]], run, "--set", "steps=3")) == 2
    err = one_line_error(capsys)
    assert "trained weights" in err and "model.safetensors" in err and "--overwrite" in err
    assert main(track_args([mw_data["id"]], run, "--resume", "--set", "steps=5")) == 2
    err = one_line_error(capsys)
    assert "nothing to resume" in err and "no checkpoint" in err
    assert (run / "model.safetensors").read_bytes() == weights
    assert json.loads((run / "config.json").read_text())["train"]["steps"] == 4
    assert main(track_args([mw_data["id"]], run, "--set", "steps=3", "--overwrite")) == 0
    assert json.loads((run / "config.json").read_text())["train"]["steps"] == 3
    # a run with a checkpoint is discarded only with --overwrite too
    assert main(track_args([mw_data["id"]], run)) == 2
    assert "--overwrite" in one_line_error(capsys)
    assert main(track_args([mw_data["id"]], run, "--overwrite")) == 0
    assert json.loads((run / "config.json").read_text())["train"]["steps"] == 2


def test_deflate_damaged_scene_is_one_line_and_verify_repairs_it(tmp_path, capsys):
    """Same size, damaged deflate stream (zlib.error, not a zip error): one line naming the file (issue 28, item 2)."""
    import zipfile

    data = tmp_path / "scenes"
    gen = ["drive", "data", "--scenarios", "merge", "--scenes", "1", "--out", str(data), "--no-progress"]
    assert main(gen) == 0
    victim = sorted((data / "scenes").glob("*.npz"))[0]
    with zipfile.ZipFile(victim) as z:
        biggest = max(z.infolist(), key=lambda i: i.compress_size)
    raw = bytearray(victim.read_bytes())
    raw[biggest.header_offset + 100: biggest.header_offset + 164] = b"\x55" * 64
    victim.write_bytes(bytes(raw))
    assert main(["drive", "train", "--preset", "tiny-moe", "--data", str(data), "--out", str(tmp_path / "r"),
                 "--no-progress"]) == 2
    err = one_line_error(capsys)
    assert str(victim) in err and "damaged" in err, err
    assert main([*gen, "--verify"]) == 0  # the damaged episode is simulated again
    from trajmoe.drive.scenes import load_scene

    assert load_scene(victim)["scenario"] == "merge"


def test_resume_from_another_directory_compares_the_real_data_folder(mw_data, tmp_path, monkeypatch, capsys):
    """config.json records real folders: the same relative --data from elsewhere is another dataset (item 4)."""
    for where in ("x", "y"):
        shutil.copytree(mw_data["id"], tmp_path / where / "data")
    run = tmp_path / "run"
    monkeypatch.chdir(tmp_path / "x")
    assert main(track_args(["data"], run)) == 0
    assert json.loads((run / "config.json").read_text())["data_dirs"] == [str((tmp_path / "x" / "data").resolve())]
    monkeypatch.chdir(tmp_path / "y")
    assert main(track_args(["data"], run, "--resume", "--set", "steps=3")) == 2
    assert "data_dirs" in one_line_error(capsys)
    monkeypatch.chdir(tmp_path)
    assert main(track_args([tmp_path / "x" / "data"], run, "--resume", "--set", "steps=3")) == 0


def test_the_same_data_folder_twice_is_refused(mw_data, tmp_path, capsys):
    """`--data A A` or A and a symlink to it would double A's share of draws (item 7)."""
    link = tmp_path / "link"
    link.symlink_to(mw_data["id"], target_is_directory=True)
    for dirs in ([mw_data["id"], mw_data["id"]], [mw_data["id"], link]):
        assert main(track_args(dirs, tmp_path / "run")) == 2
        err = one_line_error(capsys)
        assert f"{dirs[0]} and {dirs[1]}" in err and "give each folder once" in err, err
    assert not (tmp_path / "run" / "config.json").exists()


# ---- storage failures are one line naming the file (issue 28, items 5 and 6) ---------------------


def test_read_only_out_is_one_line(mw_data, tmp_path, monkeypatch, capsys):
    """A read-only file system (EROFS: root bypasses chmod, so it is simulated at os.open)."""
    import errno

    ro = tmp_path / "ro"
    ro.mkdir()
    real_open = os.open

    def read_only_open(path, flags, *a, **kw):
        if str(path).startswith(str(ro)) and flags & (os.O_CREAT | os.O_WRONLY | os.O_RDWR):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real_open(path, flags, *a, **kw)

    monkeypatch.setattr(os, "open", read_only_open)
    assert main(track_args([mw_data["id"]], ro / "run")) == 2
    err = one_line_error(capsys)
    assert str(ro / "run") in err and "read-only file system" in err, err


def test_disk_full_during_a_checkpoint_is_one_line_and_keeps_the_last_one(mw_data, tmp_path, monkeypatch, capsys):
    """ENOSPC inside safetensors (reported as "os error 28", not an OSError) while writing checkpoint 4."""
    from trajmoe.train import checkpoint as ckpt

    real_save = ckpt.save_file

    def full_disk(tensors, path, metadata=None):
        if ".step_00000004.tmp" in str(path):
            raise RuntimeError("Error while serializing: I/O error: No space left on device (os error 28)")
        return real_save(tensors, path, metadata=metadata)

    run = tmp_path / "run"
    monkeypatch.setattr(ckpt, "save_file", full_disk)
    assert main(track_args([mw_data["id"]], run, "--set", "steps=4", "ckpt_every=2")) == 2
    err = one_line_error(capsys)
    assert "no space left" in err and ".step_00000004.tmp" in err, err
    assert ckpt.latest_checkpoint(run)[0] == 2 and not list((run / "state").glob(".step_*"))  # space freed again
    monkeypatch.setattr(ckpt, "save_file", real_save)
    assert main(track_args([mw_data["id"]], run, "--set", "steps=4", "ckpt_every=2", "--resume")) == 0
    assert ckpt.latest_checkpoint(run)[0] == 4
