"""Markdown table of track runs trained with a held-out curve (`trajmoe train track --val`): the best
held-out evaluation (overall and per camera), where it was reached, the convergence verdict and the
CPU time (the Trainer's logged `cpu_s`; for older runs the training time from the logged throughput).
Usage: python scripts/curve_table.py RUN [RUN ...]"""

import json
import sys
from pathlib import Path

COLS = [("skill_mse", "skill MSE"), ("skill_ade", "skill ADE"), ("agentview/skill_mse", "scene MSE"),
        ("agentview/skill_ade", "scene ADE"), ("eye_in_hand/skill_mse", "gripper MSE"), ("eye_in_hand/skill_ade", "gripper ADE")]


def row(run: Path) -> str:
    if not (run / "metrics.jsonl").is_file():
        return f"| {run.name} | (not started) |"
    recs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    batch = json.loads((run / "config.json").read_text())["train"]["batch_size"]
    train = [r for r in recs if "samples_per_s" in r]
    secs, prev = 0.0, 0
    for r in train:  # runs before `cpu_s` was logged: time from the logged throughput (1 thread)
        secs += (r["step"] - prev) * batch / max(r["samples_per_s"], 1e-9)
        prev = r["step"]
    if train and "cpu_s" in train[-1]:
        secs = train[-1]["cpu_s"]
    evals = [r for r in recs if "eval/skill_mse" in r]
    if not evals:
        return f"| {run.name} | (no evaluation yet) |"
    best = max(evals, key=lambda r: r["eval/skill_mse"])
    v = json.loads((run / "validation.json").read_text()) if (run / "validation.json").is_file() else {}
    conv = {True: "yes", False: "no"}.get(v.get("converged"), f"running ({evals[-1]['step']} steps)")
    cells = " | ".join(f"{best['eval/' + k]:+.3f}" for k, _ in COLS)
    return (f"| {run.name} | {cells} | {best['step']} ({best['step'] * batch / 1000:.0f}k) | {conv} | "
            f"{secs / 3600:.2f} |")


if len(sys.argv) < 2 or sys.argv[1] in ("-h", "--help"):
    sys.exit("usage: python scripts/curve_table.py RUN [RUN ...] (track runs trained with --val; see the module docstring)")
for r in sys.argv[1:]:
    if not (Path(r) / "config.json").is_file():  # a queued run not started yet has its folder and config.json
        sys.exit(f"{r}: not a run folder (no config.json)")
print("| run | " + " | ".join(n for _, n in COLS) + " | best at step (samples) | converged | training CPU-h |")
print("|---" * (len(COLS) + 4) + "|")
for r in sys.argv[1:]:
    print(row(Path(r)))
