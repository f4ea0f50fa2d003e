"""Dataset generation on the real simulator: files, manifest, resume, failures, shards, CLI errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from trajmoe.cli import main
from trajmoe.configs import PACKAGED
from trajmoe.data.atm_hdf5 import load_episode, open_episode
from trajmoe.data.datasets import list_episodes
from trajmoe.data.generate import generate
from trajmoe.data.specs import DomainSpec, load_benchmark, parse_shard, work_items
from trajmoe.envs.metaworld import EVAL_VARIATION_START, TASKS
from trajmoe.envs.tracks import TrackLabelConfig

SMALL = TrackLabelConfig(num_points=32, grid_size=2, num_query_frames=4)


@pytest.fixture(scope="module")
def bench_dir(tmp_path_factory):
    """The smoke benchmark through the CLI: one ID demo (corner) + one OOD video (corner2, visual variation)."""
    out = tmp_path_factory.mktemp("gen") / "bench"
    rc = main(["data", "metaworld", "--benchmark", "configs/benchmarks/metaworld-smoke.yaml",
               "--out", str(out), "--no-progress", "--json"])
    assert rc == 0
    return out


def test_benchmark_files_and_manifests(bench_dir, capsys):
    top = json.loads((bench_dir / "manifest.json").read_text())
    assert top["domains"] == {"id": "id", "ood": "ood"} and top["evaluation"]["variations"][0] >= EVAL_VARIATION_START
    paths = list_episodes(bench_dir)
    assert [p.relative_to(bench_dir).as_posix() for p in paths] == ["id/reach-v3/demo_0.hdf5", "ood/button-press-topdown-v3/demo_0.hdf5"]
    idm, oodm = (load_episode(p) for p in paths)
    for ep in (idm, oodm):
        m = ep.meta
        assert m.success and m.views == ("agentview", "eye_in_hand") and m.image_size == (128, 128)
        assert m.attrs["generator_version"] and m.attrs["variation"] < EVAL_VARIATION_START
        T = m.length
        for v in m.views:
            assert ep.frames[v].shape == (T, 3, 128, 128) and ep.tracks[v].shape == (T, 32, 2)
            assert ep.vis[v].mean() > 0.3 and 0.0 <= ep.tracks[v].min() and ep.tracks[v].max() <= 1.0
        assert ep.task_emb.shape == (384,) and abs(np.linalg.norm(ep.task_emb) - 1.0) < 1e-4
        assert ep.proprio.shape == (T, 4)
    assert idm.meta.has_actions and idm.actions.shape == (idm.meta.length, 4) and np.abs(idm.actions).max() <= 1.0
    assert idm.meta.attrs["camera"] == "corner" and idm.meta.instruction == "move the gripper to the goal position"
    assert not oodm.meta.has_actions and oodm.actions is None and oodm.meta.attrs["camera"] == "corner2"
    assert oodm.meta.attrs["visual_seed"] >= 0 and oodm.meta.domain == "ood"
    # the expert's hand positions are the stored ee_pos, and its actions moved it
    assert np.linalg.norm(idm.proprio[-1, :3] - idm.proprio[0, :3]) > 0.02


def test_rerun_skips_finished_episodes(bench_dir, capsys):
    before = {p: p.stat().st_mtime_ns for p in list_episodes(bench_dir)}
    capsys.readouterr()
    rc = main(["data", "metaworld", "--benchmark", "configs/benchmarks/metaworld-smoke.yaml",
               "--out", str(bench_dir), "--no-progress", "--json"])
    assert rc == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["episodes_written"] == 0 and res["episodes_skipped"] == 2
    assert {p: p.stat().st_mtime_ns for p in list_episodes(bench_dir)} == before


def test_failed_expert_is_never_a_silent_success(tmp_path):
    spec = DomainSpec(name="f", tasks=("reach-v3",), episodes=1, max_steps=3, attempts=2, track=SMALL)
    s = generate([(spec, str(tmp_path / "f"))], progress=False)
    assert (s.done, s.failed) == (0, 1)
    assert not (tmp_path / "f/reach-v3/demo_0.hdf5").exists()
    marker = json.loads((tmp_path / "f/reach-v3/demo_0.failed.json").read_text())
    assert [a["variation"] for a in marker["attempts"]] == [0, 100_000] and not any(a["success"] for a in marker["attempts"])
    m = json.loads((tmp_path / "f/manifest.json").read_text())
    assert m["num_episodes"] == 0 and len(m["failed"]) == 1
    assert generate([(spec, str(tmp_path / "f"))], progress=False).skipped == 1  # known failure not retried
    kept = DomainSpec(name="f", tasks=("reach-v3",), episodes=1, max_steps=3, attempts=1, keep_failed=True, track=SMALL)
    s = generate([(kept, str(tmp_path / "k"))], progress=False)
    assert s.done == 1
    with open_episode(tmp_path / "k/reach-v3/demo_0.hdf5") as ep:
        assert ep.meta.success is False and ep.meta.length == 3
    assert list_episodes(tmp_path / "k") == []  # failed episodes are not listed for training
    assert len(list_episodes(tmp_path / "k", success_only=False)) == 1


def test_shards_partition_the_work_list():
    spec = DomainSpec(name="d", tasks=("reach-v3", "push-v3", "hammer-v3"), episodes=5)
    full = work_items([(spec, "/x")])
    parts = [work_items([(spec, "/x")], (i, 3)) for i in range(3)]
    keys = [(w.task, w.index) for p in parts for w in p]
    assert len(keys) == len(full) == 15 and set(keys) == {(w.task, w.index) for w in full}
    assert parse_shard("2/3") == (2, 3)
    for bad in ("3/3", "1", "a/b", "0/0"):
        with pytest.raises(ValueError, match="--shard"):
            parse_shard(bad)


def test_benchmark_yaml_and_held_out_variations():
    b = load_benchmark("metaworld")
    by = {d.name: d for d in b.domains}
    idd = by["id"]
    assert len(idd.tasks) == 10 and idd.episodes == 10 and not idd.action_free and idd.camera == "corner"
    ood = [d for d in b.domains if d.action_free]
    ood_tasks = {t for d in ood for t in d.tasks}
    assert ood_tasks == set(TASKS) - set(idd.tasks) and all(d.visual_variation and d.camera != "corner" for d in ood)
    ratio = sum(len(d.tasks) * d.episodes for d in ood) / (len(idd.tasks) * idd.episodes)
    assert 4.0 <= ratio <= 5.0  # the paper's OOD:ID = 9:2
    train = {d.variation(i, k) for d in b.domains for i in range(d.episodes) for k in range(d.attempts)}
    assert not train & set(b.eval_variations) and min(b.eval_variations) >= EVAL_VARIATION_START
    with pytest.raises(ValueError, match="held-out evaluation range"):
        DomainSpec(name="x", tasks=("reach-v3",), episodes=10, variation_seed=EVAL_VARIATION_START - 5)
    load_benchmark(PACKAGED / "benchmarks" / "metaworld-demo.yaml")


@pytest.mark.parametrize(
    "args, match",
    [
        (["--tasks", "reach-v7", "--episodes", "1"], "reach-v7"),
        (["--tasks", "reach-v3", "--episodes", "0"], "--episodes must be positive"),
        (["--tasks", "reach-v3", "--camera", "ceiling"], "ceiling"),
        (["--tasks", "reach-v3", "--views", "wrist"], "wrist"),
        (["--tasks", "reach-v3", "--workers", "0"], "--workers"),
        (["--tasks", "reach-v3", "--shard", "5/2"], "--shard"),
        (["--tasks", "reach-v3", "--variation-seed", str(EVAL_VARIATION_START)], "held-out"),
    ],
)
def test_cli_bad_inputs(tmp_path, capsys, args, match):
    rc = main(["data", "metaworld", *args, "--out", str(tmp_path / "o"), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and match in err and len(err.splitlines()) == 1


def test_cli_unwritable_output_and_bad_yaml(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    rc = main(["data", "metaworld", "--tasks", "reach-v3", "--episodes", "1", "--out", str(blocker / "sub"), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and str(blocker) in err and len(err.splitlines()) == 1
    bad = tmp_path / "b.yaml"
    bad.write_text("domains:\n  - {name: id, tasks: [reach-v3], episodes: 1, cameras: corner}\n")
    rc = main(["data", "metaworld", "--benchmark", str(bad), "--out", str(tmp_path / "o"), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "cameras" in err and "b.yaml" in err and len(err.splitlines()) == 1


def test_viz_tracks_png_gif_mp4(bench_dir, tmp_path, capsys):
    import imageio.v2 as imageio

    ep = list_episodes(bench_dir)[0]
    assert main(["viz", "tracks", str(ep), "--out", str(tmp_path / "t.png"), "--frames", "3"]) == 0
    img = imageio.imread(tmp_path / "t.png")
    assert img.shape[1] == 2 * 128 * 3 and img.shape[0] == 3 * 128 * 3 + 2 * 4
    with open_episode(ep) as f:
        T = f.meta.length
    assert main(["viz", "tracks", str(ep), "--out", str(tmp_path / "t.gif"), "--scale", "1"]) == 0
    assert len(imageio.mimread(tmp_path / "t.gif")) == T
    assert main(["viz", "tracks", str(ep), "--out", str(tmp_path / "t.mp4"), "--scale", "2"]) == 0
    assert len(imageio.mimread(tmp_path / "t.mp4")) == T
    capsys.readouterr()
    assert main(["viz", "tracks", str(ep), "--out", str(tmp_path / "t.jpg")]) == 2
    assert ".png, .gif or .mp4" in capsys.readouterr().err
