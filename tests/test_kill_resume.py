"""kill -9 and resume, per model family: a real subprocess SIGKILLs itself at a chosen moment
(trajmoe.faults), `--resume` finishes the run, and its losses and final weights must equal an
uninterrupted run's bit for bit (CPU); no temporary file may survive the resumed run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from trajmoe.cli import main
from trajmoe.io import is_temp_name
from trajmoe.train.checkpoint import read_tensors

ROOT = Path(__file__).resolve().parents[1]


def run_killed(args: list[str], crash: str) -> None:
    """`trajmoe ARGS` in a subprocess that SIGKILLs itself at `crash` (e.g. "step:3")."""
    env = {**os.environ, "TRAJMOE_CRASH_AT": crash, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-m", "trajmoe.cli", *args], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == -signal.SIGKILL, (proc.returncode, proc.stderr[-2000:])


def losses(run: Path) -> list[tuple[int, float]]:
    recs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"]) for r in recs if "loss" in r]


def assert_same_run(a: Path, b: Path) -> None:
    assert losses(a) == losses(b)
    wa, wb = read_tensors(a / "model.safetensors"), read_tensors(b / "model.safetensors")
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
    left = [p for p in b.rglob("*") if is_temp_name(p.name)]
    assert not left, left


@pytest.fixture(scope="module")
def scene_dir(tmp_path_factory):
    data = tmp_path_factory.mktemp("drive") / "scenes"
    assert main(["drive", "data", "--scenarios", "merge", "--scenes", "4", "--out", str(data), "--no-progress"]) == 0
    return data


DRIVE = ["--no-progress", "--set", "steps=6", "model.vocab_size=8", "batch_size=2", "data.vocab_iters=3",
         "ckpt_every=2", "log_every=1"]


def test_planner_kill9_resume_is_bit_exact(scene_dir, tmp_path):
    """Killed inside the atomic write of checkpoint 2's trainer.json (the first checkpoint): a
    half-written step folder and a temporary file are left, and no checkpoint was committed, so
    `--resume` refuses rather than starting over; the plain rerun removes both and reproduces the run."""
    full, part = tmp_path / "full", tmp_path / "part"
    args = ["drive", "train", "--preset", "tiny-moe", "--data", str(scene_dir), *DRIVE]
    assert main([*args, "--out", str(full)]) == 0
    run_killed([*args, "--out", str(part)], "write:trainer.json")
    assert [p for p in (part / "state").rglob("*") if is_temp_name(p.name)]
    assert main([*args, "--out", str(part), "--resume"]) == 2
    assert main([*args, "--out", str(part)]) == 0
    assert_same_run(full, part)


def test_planner_same_command_twice_and_grpo_resume(scene_dir, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    args = ["drive", "train", "--preset", "tiny-dense", "--data", str(scene_dir), *DRIVE[:-4], "ckpt_every=0", "log_every=1"]
    assert main([*args, "--out", str(a)]) == 0
    assert main([*args, "--out", str(b)]) == 0
    assert_same_run(a, b)
    ft = ["drive", "finetune", "--run", str(a), "--no-progress", "--set", "steps=4", "ckpt_every=2", "log_every=1"]
    assert main([*ft, "--out", str(tmp_path / "g_full")]) == 0
    run_killed([*ft, "--out", str(tmp_path / "g_part")], "ckpt_renamed:4")
    assert main([*ft, "--out", str(tmp_path / "g_part"), "--resume"]) == 0
    assert_same_run(tmp_path / "g_full", tmp_path / "g_part")


TRACK = ["--set", "steps=6", "batch_size=4", "log_every=1", "ckpt_every=2", "progress=false", "warmup_steps=1"]


def test_track_kill9_mid_checkpoint_resume_is_bit_exact(mw_data, tmp_path):
    args = ["train", "track", "--preset", "tiny-tramoe", "--data", str(mw_data["id"]), *TRACK]
    assert main([*args, "--out", str(tmp_path / "full")]) == 0
    run_killed([*args, "--out", str(tmp_path / "part")], "ckpt_written:4")
    assert list((tmp_path / "part" / "state").glob(".step_*.tmp")), "the kill left a half-written checkpoint"
    assert main([*args, "--out", str(tmp_path / "part"), "--resume"]) == 0
    assert_same_run(tmp_path / "full", tmp_path / "part")


def test_policy_kill9_resume_is_bit_exact(mw_data, tmp_path):
    args = ["train", "policy", "--preset", "tiny", "--conditioning", "none", "--data", str(mw_data["id"]),
            "--set", "steps=6", "batch_size=2", "log_every=1", "ckpt_every=2", "progress=false"]
    assert main([*args, "--out", str(tmp_path / "full")]) == 0
    run_killed([*args, "--out", str(tmp_path / "part")], "ckpt_committed:2")
    assert main([*args, "--out", str(tmp_path / "part"), "--resume"]) == 0
    assert_same_run(tmp_path / "full", tmp_path / "part")
