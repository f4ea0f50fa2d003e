"""Reliability check, run by hand (not in CI): kill -9 at chosen and random moments for every model
family, then --resume, compared bit for bit with an uninterrupted run; then bad inputs, each of which
must end in a one-line error. Prints one line per case and a summary; exit status 1 if any case fails.

    scripts/reliability.sh [WORKDIR]     (default: a fresh temporary folder)
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import torch

from trajmoe.cli import main
from trajmoe.io import is_temp_name
from trajmoe.train.checkpoint import read_tensors

ROOT = Path(__file__).resolve().parents[1]
RESULTS: list[tuple[str, bool, str]] = []
MOMENTS = ["step:1", "step:3", "write:trainer.json", "ckpt_written:4", "ckpt_renamed:4", "ckpt_committed:4", "random"]


def report(name: str, ok: bool, detail: str = "") -> None:
    RESULTS.append((name, ok, detail))
    print(f"{'PASS' if ok else 'FAIL'}  {name:44s} {detail}", flush=True)


def cli(args: list[str]) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        rc = main(args)
    return rc, err.getvalue().strip()


def killed(args: list[str], moment: str, around_s: float = 5.0) -> str:
    """Run `trajmoe ARGS` in a subprocess killed at `moment` (a crash point, or "random": an outside
    SIGKILL at a random time in [0.5, 1.5] x around_s, the time a run took to reach step 3)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "trajmoe.cli", *args]
    if moment == "random":
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(random.uniform(0.5, 1.5) * around_s)
        proc.send_signal(signal.SIGKILL)
        rc = proc.wait()
        return "finished before the kill" if rc == 0 else "killed"
    proc = subprocess.run(cmd, env={**env, "TRAJMOE_CRASH_AT": moment}, capture_output=True, text=True, timeout=600)
    return "killed" if proc.returncode == -signal.SIGKILL else f"rc={proc.returncode} {proc.stderr[-300:]}"


def same_run(a: Path, b: Path) -> str:
    def losses(r: Path):
        return [(x["step"], x["loss"]) for x in map(json.loads, (r / "metrics.jsonl").read_text().splitlines()) if "loss" in x]

    if losses(a) != losses(b):
        return f"losses differ: {losses(a)[:3]} vs {losses(b)[:3]}"
    wa, wb = read_tensors(a / "model.safetensors"), read_tensors(b / "model.safetensors")
    bad = [k for k in wa if k not in wb or not torch.equal(wa[k], wb[k])]
    if bad:
        return f"weights differ at {bad[:3]}"
    left = [str(p.relative_to(b)) for p in b.rglob("*") if is_temp_name(p.name)]
    return f"temporary files left: {left}" if left else ""


def kill_family(name: str, args_for, ref: Path, work: Path) -> None:
    rc, err = cli(args_for(ref))
    rc2, _ = cli(args_for(work / f"{name}-again"))
    msg = same_run(ref, work / f"{name}-again") if rc == rc2 == 0 else f"rc {rc}/{rc2}: {err}"
    report(f"{name}: same command twice", not msg, msg or "identical losses and weights")
    around = 5.0
    for moment in MOMENTS:
        run = work / f"{name}-{moment.replace(':', '-')}"
        t = time.perf_counter()
        how = killed(args_for(run), moment, around)
        if moment == "step:3":
            around = time.perf_counter() - t
        if how not in ("killed", "finished before the kill"):
            report(f"{name}: kill -9 at {moment}", False, how)
            continue
        rc, err = cli([*args_for(run), "--resume"])
        if rc == 2 and "nothing to resume" in err:  # killed before the run folder said what it is
            how += ", no run yet: started again"
            rc, err = cli(args_for(run))
        msg = same_run(ref, run) if rc == 0 else f"resume rc={rc}: {err}"
        report(f"{name}: kill -9 at {moment}", not msg, msg or f"{how}; resume bit-exact, no temporaries")


def bad_inputs(work: Path, mw: Path, scenes: Path) -> None:
    def expect(name: str, args: list[str], needle: str) -> None:
        rc, err = cli(args)
        ok = rc == 2 and len(err.splitlines()) == 1 and needle in err
        report(f"bad input: {name}", ok, err[:150] if ok else f"rc={rc} {err[-300:]}")

    fast = ["--set", "steps=2", "batch_size=2", "progress=false"]
    track = lambda data, out, *x: ["train", "track", "--preset", "tiny-dense", "--data", str(data), "--out", str(out), *fast, *x]  # noqa: E731
    src = next(mw.rglob("demo_*.hdf5"))

    def copy(dst: Path) -> Path:
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, dst)
        return dst

    pix = copy(work / "pix" / "t" / "demo_0.hdf5")
    with h5py.File(pix, "r+") as f:
        f["root/agentview/tracks"][...] = f["root/agentview/tracks"][...] * 128
    expect("tracks in pixel units", track(work / "pix", work / "r-pix"), "pixel units")
    nan = copy(work / "nan" / "t" / "demo_0.hdf5")
    with h5py.File(nan, "r+") as f:
        a = f["root/actions"][...]
        a[1, 0] = np.inf
        f["root/actions"][...] = a
    expect("inf in actions", track(work / "nan", work / "r-nan"), "root/actions")
    copy(work / "hidden" / "t" / "demo_0.hdf5")
    copy(work / "hidden" / ".ipynb_checkpoints" / "demo_0.hdf5")
    rc, _ = cli(track(work / "hidden", work / "r-hidden"))
    from trajmoe.data.datasets import list_episodes

    listed = [p.relative_to(work / "hidden").as_posix() for p in list_episodes(work / "hidden")]
    report("bad input: hidden folder skipped", rc == 0 and listed == ["t/demo_0.hdf5"], f"trained on {listed}")
    expect("worker error (num_workers=1)", track(mw, work / "r-w", "--set", "img_size=64", "num_workers=1"), "expects 64")
    expect("eval --max-samples -1", ["eval", "track", "--run", str(work / "r-hidden"), "--data", str(mw),
                                     "--max-samples", "-1"], "--max-samples")
    expect("resume with no run", track(mw, work / "typo", "--resume"), "nothing to resume")
    expect("resume with another lr", track(work / "hidden", work / "r-hidden", "--resume", "--set", "lr=0.5"), "train.lr")
    expect("resume with other data", track(mw, work / "r-hidden", "--resume"), "data_dirs")
    out = work / "mani"
    out.mkdir()
    (out / "manifest.json").write_text(json.dumps({"episodes": [{"path": "../pix/t/demo_0.hdf5"}]}))
    expect("manifest path ../", track(out, work / "r-mani"), "inside")
    (out / "manifest.json").write_text(json.dumps({"episodes": [{"path": str(pix)}]}))
    expect("manifest absolute path", track(out, work / "r-mani"), "inside")
    spec = work / "spec.yaml"
    spec.write_text("scales: {smoke: {}}\nvariants: {'../../x': {}}\nsteps: [{name: a, cmd: [demo]}]\n")
    expect("experiment variant ../../x", ["experiment", str(spec), "--out", str(work / "exp"), "--scale", "smoke"], "plain name")
    holder = subprocess.Popen([sys.executable, "-c", "import sys,time; from trajmoe.io import DirLock; "
                               "DirLock.acquire(sys.argv[1]); print('ok', flush=True); time.sleep(60)", str(work / "locked")],
                              stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    holder.stdout.readline()
    expect("second writer on one --out", track(mw, work / "locked"), "in use by another process")
    holder.kill()
    holder.wait()
    expect("dataset rerun, other camera", ["data", "metaworld", "--tasks", "reach-v3", "--episodes", "1", "--max-steps", "60",
                                           "--keep-failed", "--views", "agentview", "--out", str(mw), "--camera", "corner2",
                                           "--no-progress"], "camera")
    expect("scene rerun, other stride", ["drive", "data", "--scenarios", "merge", "--scenes", "4", "--stride", "10",
                                         "--out", str(scenes), "--no-progress"], "stride")
    trunc = work / "trunc"
    shutil.copytree(scenes, trunc)
    victim = sorted((trunc / "scenes").glob("*.npz"))[0]
    victim.write_bytes(victim.read_bytes()[:400])
    expect("truncated scene .npz", ["drive", "train", "--preset", "tiny-moe", "--data", str(trunc), "--out",
                                    str(work / "r-trunc"), "--no-progress"], "truncated")
    ep = next(mw.rglob("demo_*.hdf5"))
    with h5py.File(ep, "r") as f:
        info = f["root/agentview/video"].id.get_chunk_info(1)
    with open(ep, "r+b") as fh:
        fh.seek(info.byte_offset)
        fh.write(b"\0" * info.size)
    gen = ["data", "metaworld", "--tasks", "reach-v3", "--episodes", "1", "--max-steps", "60", "--keep-failed",
           "--views", "agentview", "--out", str(mw), "--no-progress", "--verify"]
    err = io.StringIO()
    with contextlib.redirect_stdout(err):
        rc = main(gen)
    report("zeroed video chunk found by --verify", rc == 0 and "wrote 1 episodes" in err.getvalue(), err.getvalue().strip()[:120])
    # issue 28: folders trajmoe did not make, damaged compressed data, spec typos, the same data twice, read-only
    foreign = work / "foreign"
    foreign.mkdir()
    for name, text in (("config.json", '{"architectures": ["Bert"]}'), ("model.safetensors", "theirs"), ("tokenizer.json", "{}")):
        (foreign / name).write_text(text)
    before = {p.name: p.read_text() for p in foreign.iterdir() if p.is_file()}
    expect("--out holding files trajmoe did not make", track(mw, foreign), "config.json")
    after = {p.name: p.read_text() for p in foreign.iterdir() if p.is_file() and p.name in before}
    report("their files untouched", after == before, f"{sorted(after)}")
    done = work / "r-done"
    assert cli(track(mw, done))[0] == 0
    shutil.rmtree(done / "state")  # a finished run whose state/ the user deleted to save disk
    weights = (done / "model.safetensors").read_bytes()
    expect("rerun over trained weights without --overwrite", track(mw, done, "--set", "steps=1"), "--overwrite")
    report("trained weights kept", (done / "model.safetensors").read_bytes() == weights, "")
    expect("--resume with no checkpoint", track(mw, done, "--resume"), "checkpoint")
    damaged = work / "deflate"
    shutil.copytree(scenes, damaged)
    victim = sorted((damaged / "scenes").glob("*.npz"))[0]
    raw = bytearray(victim.read_bytes())
    mid = len(raw) // 2
    raw[mid : mid + 64] = bytes(64)  # size intact, deflate stream broken
    victim.write_bytes(bytes(raw))
    expect("deflate-damaged scene file", ["drive", "train", "--preset", "tiny-moe", "--data", str(damaged), "--out",
                                          str(work / "r-deflate"), "--no-progress"], victim.name)
    typo = work / "typo.yaml"
    typo.write_text("scales: {smoke: {}}\nvariants: {a: {model_set: [x=1]}}\nsteps: [{name: a, cmd: [demo]}]\n")
    expect("experiment spec variant typo (model_set)", ["experiment", str(typo), "--out", str(work / "exp-typo"),
                                                        "--scale", "smoke"], "model_set")
    expect("the same data folder twice", ["train", "track", "--preset", "tiny-dense", "--data", str(mw), str(mw),
                                          "--out", str(work / "r-twice"), *fast], str(mw))
    ro = work / "readonly"
    ro.mkdir()
    ro.chmod(0o555)
    if os.geteuid() == 0:
        report("read-only --out", True, "skipped: root ignores directory permissions")
    else:
        expect("read-only --out", track(mw, ro / "run"), str(ro))


def main_() -> int:
    work = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="trajmoe-reliability-"))
    work.mkdir(parents=True, exist_ok=True)
    random.seed(int(os.environ.get("RELIABILITY_SEED", "0")))
    print(f"work folder {work}", flush=True)
    mw, scenes = work / "mw", work / "scenes"
    assert cli(["data", "metaworld", "--tasks", "reach-v3", "--episodes", "1", "--max-steps", "60", "--keep-failed",
                "--views", "agentview", "--out", str(mw), "--no-progress"])[0] == 0
    assert cli(["drive", "data", "--scenarios", "merge", "--scenes", "4", "--out", str(scenes), "--no-progress"])[0] == 0
    common = ["--set", "steps=6", "ckpt_every=2", "log_every=1"]
    fams = {
        "track": lambda o: ["train", "track", "--preset", "tiny-tramoe", "--data", str(mw), "--out", str(o), *common,
                            "batch_size=4", "progress=false", "warmup_steps=1"],
        "policy": lambda o: ["train", "policy", "--preset", "tiny", "--conditioning", "none", "--data", str(mw), "--out",
                             str(o), *common, "batch_size=2", "progress=false"],
        "planner": lambda o: ["drive", "train", "--preset", "tiny-moe", "--data", str(scenes), "--out", str(o),
                              "--no-progress", *common, "model.vocab_size=8", "batch_size=2", "data.vocab_iters=3"],
        "planner GRPO": lambda o: ["drive", "finetune", "--run", str(work / "planner-ref"), "--out", str(o), "--no-progress",
                                   *common],
    }
    for name, args_for in fams.items():
        kill_family(name, args_for, work / f"{name.replace(' ', '-')}-ref", work)
    bad_inputs(work, mw, scenes)
    n_ok = sum(ok for _, ok, _ in RESULTS)
    print(f"summary: {n_ok}/{len(RESULTS)} cases pass" + ("" if n_ok == len(RESULTS) else
          f"; failing: {', '.join(n for n, ok, _ in RESULTS if not ok)}"))
    return 0 if n_ok == len(RESULTS) else 1


if __name__ == "__main__":
    sys.exit(main_())
