"""Track model on real MetaWorld episodes: data pipeline, training CLI, eval, resume, bad inputs."""

import json
import shutil

import numpy as np
import pytest

from trajmoe.cli import main
from trajmoe.track import PRESETS
from trajmoe.track.config import TrackDataConfig
from trajmoe.families import family
from trajmoe.track.run import build_dataset

FAST = ["steps=4", "batch_size=4", "log_every=1", "ckpt_every=2", "progress=false", "warmup_steps=1"]



def train_track(preset: str, data_dirs: list[str], out: str, sets: list[str] | None = None, resume: bool = False) -> dict:
    fam = family("track")
    return fam.fit(fam.resolve(preset, sets), data_dirs, out, resume=resume)

def _losses(run):
    return [(r["step"], r["loss"]) for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())]


def test_samples_follow_atm_recipe(mw_data):
    cfg = PRESETS["tiny-tramoe"].model
    ds = build_dataset([mw_data["id"], mw_data["ood"]], cfg, TrackDataConfig(), heldout=True)
    assert ds.domain_names == ["id", "ood"]
    it = ds.get(0, np.random.default_rng(0))
    assert it["image"].shape == (3, 128, 128) and it["image"].dtype == np.float32
    assert 0 <= it["image"].min() and it["image"].max() <= 1
    assert it["tracks"].shape == (cfg.track_len, cfg.num_points, 2)
    assert it["vis"][0].all(), "every drawn point is visible at the query frame"
    assert it["task_emb"].shape == (384,)
    # end padding by repetition: the last frame's sample repeats its final position
    last = max(i for i in range(len(ds)) if ds.index.episode[i] == ds.index.episode[0] and ds.index.view[i] == ds.index.view[0])
    tail = ds.get(last, np.random.default_rng(1))["tracks"]
    assert np.allclose(tail[0], tail[-1])
    # same rng seed -> same sample (resume-exactness of the data path)
    a, b = ds.get(5, np.random.default_rng(3)), ds.get(5, np.random.default_rng(3))
    assert all(np.array_equal(a[k], b[k]) for k in ("image", "tracks", "vis"))


def test_domain_weights_give_per_sample_weights(mw_data):
    cfg = PRESETS["tiny-dense"].model
    ds = build_dataset([mw_data["id"], mw_data["ood"]], cfg, TrackDataConfig())
    w = ds.sample_weights({"id": 3.0, "ood": 1.0})
    dom = ds.domains()
    assert w[dom == 0].sum() / w.sum() == pytest.approx(0.75)
    with pytest.raises(ValueError, match="unknown domain"):
        ds.sample_weights({"nope": 1.0})


def test_random_shift_moves_tracks_with_the_image():
    from trajmoe.data.augment import random_shift

    img = np.zeros((32, 32, 3), np.float32)
    img[10, 20] = 1.0  # row 10, col 20 -> (x, y) = (20/32, 10/32)
    for seed in range(5):
        out, tr, (sx, sy) = random_shift(img, np.array([[20 / 32, 10 / 32]], np.float32), np.random.default_rng(seed))
        r, c = np.argwhere(out[..., 0] == 1.0)[0]
        assert (c, r) == (20 + sx, 10 + sy)
        assert np.allclose(tr[0] * 32, [c, r])


def test_train_eval_cli_and_routing_report(mw_data, tmp_path, capsys):
    run = tmp_path / "run"
    args = ["train", "track", "--preset", "tiny-tramoe", "--data", str(mw_data["id"]), str(mw_data["ood"]), "--out", str(run)]
    for s in FAST:
        args += ["--set", s]
    assert main(args) == 0
    for f in ("config.json", "model.safetensors", "metrics.jsonl"):
        assert (run / f).is_file(), f
    capsys.readouterr()
    assert main(["eval", "track", "--run", str(run), "--data", str(mw_data["id"]), str(mw_data["ood"]),
                 "--max-samples", "16", "--json"]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    views = {f"view:{v}" for v in ("agentview", "eye_in_hand")}
    assert set(res["metrics"]) == {"id", "ood", "overall"} | views
    assert res["metrics"]["overall"]["samples"] == 16
    assert sum(res["metrics"][v]["samples"] for v in views) == 16
    o = res["metrics"]["overall"]  # the no-motion baseline on the same samples, and the skills from it
    assert o["track_mse_static"] > 0 and o["skill_mse"] == pytest.approx(1 - o["track_mse"] / o["track_mse_static"])
    assert res["metrics"]["overall"]["ade_px"] > 0
    assert set(res["routing"]) == {"layer0", "layer2", "layer3"}
    for layer in res["routing"].values():
        assert set(layer["domain_fraction"]) == {"id", "ood"}
        assert sum(layer["domain_fraction"]["id"]) == pytest.approx(1.0, abs=1e-3)
    out = tmp_path / "routing.png"
    assert main(["viz", "routing", "--run", str(run), "--data", str(mw_data["id"]), str(mw_data["ood"]),
                 "--out", str(out), "--max-samples", "8"]) == 0
    assert out.stat().st_size > 1000
    out = tmp_path / "pred.png"
    assert main(["viz", "track-pred", "--run", str(run), "--data", str(mw_data["id"]), "--out", str(out), "--samples", "2"]) == 0
    assert out.stat().st_size > 1000


def test_resumed_run_reproduces_uninterrupted_losses(mw_data, tmp_path, monkeypatch):
    from trajmoe.track import model as model_mod

    sets = FAST[:]
    full, part = tmp_path / "full", tmp_path / "part"
    train_track("tiny-tramoe", [str(mw_data["id"])], str(full), sets=sets)
    orig = model_mod.TrackModel.forward
    calls = {"n": 0}

    def crashing(self, batch):
        calls["n"] += 1
        if calls["n"] == 4:
            raise RuntimeError("simulated crash")
        return orig(self, batch)

    monkeypatch.setattr(model_mod.TrackModel, "forward", crashing)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train_track("tiny-tramoe", [str(mw_data["id"])], str(part), sets=sets)
    monkeypatch.setattr(model_mod.TrackModel, "forward", orig)
    train_track("tiny-tramoe", [str(mw_data["id"])], str(part), sets=sets, resume=True)
    assert _losses(part) == _losses(full)


def test_nan_loss_names_step_and_files_and_keeps_checkpoint(mw_data, tmp_path, monkeypatch):
    from trajmoe.track import model as model_mod
    from trajmoe.train import TrainingError

    orig = model_mod.TrackModel.forward
    calls = {"n": 0}

    def nan_at_3(self, batch):
        calls["n"] += 1
        loss, logs = orig(self, batch)
        return (loss * float("nan") if calls["n"] == 3 else loss), logs

    monkeypatch.setattr(model_mod.TrackModel, "forward", nan_at_3)
    run = tmp_path / "nan"
    with pytest.raises(TrainingError, match=r"step 3.*demo_0\.hdf5"):
        train_track("tiny-dense", [str(mw_data["id"])], str(run), sets=FAST)
    assert family("track").from_run(run)[0] is not None  # the step-2 checkpoint stays loadable


def test_bad_inputs(mw_data, tmp_path, capsys):
    base = ["train", "track", "--preset", "tiny-dense", "--out", str(tmp_path / "r")]
    assert main(base + ["--data", str(tmp_path / "missing")]) == 2
    assert "missing" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(base + ["--data", str(tmp_path / "empty")]) == 2
    assert "empty" in capsys.readouterr().err
    assert main(base + ["--data", str(mw_data["id"]), "--set", "nope=1"]) == 2
    err = capsys.readouterr().err
    assert "nope" in err and "train.steps" in err and len(err.strip().splitlines()) == 1
    # corrupt episode file
    bad = tmp_path / "bad"
    shutil.copytree(mw_data["id"], bad)
    victim = next(bad.rglob("*.hdf5"))
    victim.write_bytes(victim.read_bytes()[:2000])
    assert main(base + ["--data", str(bad)]) == 2
    assert victim.name in capsys.readouterr().err


def test_resume_with_different_architecture_is_refused(mw_data, tmp_path, capsys):
    run = tmp_path / "arch"
    train_track("tiny-tramoe", [str(mw_data["id"])], str(run), sets=FAST)
    args = ["train", "track", "--preset", "tiny-tramoe", "--data", str(mw_data["id"]), "--out", str(run), "--resume",
            "--set", "model.moe.num_experts=8"] + sum((["--set", s] for s in FAST), [])
    assert main(args) == 2
    assert "num_experts" in capsys.readouterr().err


def test_two_process_cpu_ddp_track_training(mw_data, tmp_path):
    import os
    import subprocess
    import sys

    run = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "trajmoe.cli", "train", "track", "--preset", "tiny-tramoe", "--data", str(mw_data["id"]),
           "--out", str(run)] + sum((["--set", s] for s in FAST), [])
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    steps = [s for s, _ in _losses(run)]
    assert steps == [1, 2, 3, 4]  # rank 0 alone writes, once per step


def test_view_loss_weights_and_moving_query_points(mw_data):
    cfg = PRESETS["tiny-dense"].model
    ds = build_dataset([mw_data["id"]], cfg, TrackDataConfig(view_loss="no_motion", query_sampling="moving"))
    # each view's weight is the mean no-motion MSE over all samples / that view's: the sample-weighted
    # mean no-motion MSE is then the same in every view (the views share the loss by relative error)
    from trajmoe.track.dataset import _no_motion_mse

    per_view = []
    for j, v in enumerate(ds.view_names):
        st = [_no_motion_mse(ds._open(i).tracks(v), ds._open(i).vis(v), cfg.track_len)[ds.index.frame[(ds.index.episode == i) & (ds.index.view == j)]]
              for i in range(len(ds.paths))]
        per_view.append(np.concatenate(st).mean() * ds.view_weight[j])
    assert per_view[0] == pytest.approx(per_view[1], rel=1e-4)
    assert ds.view_weight[ds.view_names.index("agentview")] > ds.view_weight[ds.view_names.index("eye_in_hand")]
    it = ds.get(3, np.random.default_rng(0))
    assert it["track_weight"] == ds.view_weight[ds.index.view[3]]
    # moving sampling: most drawn points move >= 10 % of the window's largest displacement
    t = int(ds.index.frame[3])
    disp = np.abs(it["tracks"] - it["tracks"][:1]).max(axis=(0, 2))
    assert (disp >= 0.1 * disp.max() - 1e-6).mean() >= 0.7, (t, disp)
    # held-out samples ignore both training options
    held = build_dataset([mw_data["id"]], cfg, TrackDataConfig(view_loss="no_motion", query_sampling="moving"), heldout=True)
    assert "track_weight" not in held.get(3, np.random.default_rng(0)) and held.view_weight is None
    with pytest.raises(ValueError, match="data.view_loss must be one of .*got 'loud'"):
        TrackDataConfig(view_loss="loud")


def test_training_with_validation_keeps_best_and_writes_verdict(mw_data, tmp_path):
    run = tmp_path / "run"
    args = ["train", "track", "--preset", "tiny-dense", "--data", str(mw_data["id"]), "--val", str(mw_data["id"]),
            "--out", str(run), "--set", *FAST, "eval_every=1", "data.val_samples=8", "data.view_loss=no_motion"]
    assert main(args) == 0
    recs = [json.loads(s) for s in (run / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in recs if "eval/skill_mse" in r]
    assert [r["step"] for r in evals] == [1, 2, 3, 4]
    assert {"eval/agentview/skill_ade", "eval/eye_in_hand/skill_mse", "eval/ade_px_static"} <= set(evals[0])
    best = json.loads((run / "best" / "eval.json").read_text())
    assert best["metrics"]["skill_mse"] == max(r["eval/skill_mse"] for r in evals)
    v = json.loads((run / "validation.json").read_text())
    assert v["evaluations"] == 4 and v["converged"] in (True, False) and v["best_step"] == best["step"]
    assert main(["eval", "track", "--run", str(run / "best"), "--data", str(mw_data["id"]), "--max-samples", "8"]) == 0
    assert main(["viz", "curve", "--run", str(run), "--key", "eval/skill_mse", "eval/agentview/skill_ade",
                 "--out", str(tmp_path / "curve.png")]) == 0
    assert (tmp_path / "curve.png").stat().st_size > 1000


def test_moe_validation_logs_routing_per_domain_and_camera(mw_data, tmp_path):
    run = tmp_path / "run"
    assert main(["train", "track", "--preset", "tiny-tramoe", "--data", str(mw_data["id"]), str(mw_data["ood"]),
                 "--val", str(mw_data["id"]), "--out", str(run), "--set", "steps=2", "batch_size=4", "eval_every=1",
                 "progress=false", "data.val_samples=8"]) == 0
    recs = [json.loads(s) for s in (run / "metrics.jsonl").read_text().splitlines()]
    ev = [r for r in recs if "eval/skill_mse" in r][-1]
    E = PRESETS["tiny-tramoe"].model.moe.num_experts
    for layer in PRESETS["tiny-tramoe"].model.moe.layers:
        rows = [k.rsplit("/", 1)[1] for k in ev if k.startswith(f"eval/routing/layer{layer}/")]
        # held-out samples per camera, always; training batches per domain (a domain the last batches missed is left out)
        assert {"view:agentview", "view:eye_in_hand"} <= set(rows) and set(rows) & {"id", "ood"}, rows
        for row in rows:
            v = ev[f"eval/routing/layer{layer}/{row}"]
            assert 1 / E - 1e-6 <= v <= 1.0, (layer, row, v)
