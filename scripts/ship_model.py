"""Ship a converged track model, policy or planner: copy RUN/best into trajmoe/configs/pretrained/NAME with a
manifest (the training command, data, seed, held-out figures, convergence verdict, CPU-hours; a policy's
closed-loop success and a planner's test-set EPDMS from RUN.eval.json) and a check that anyone can reproduce
in seconds: one held-out episode (a planner: one held-out scene per scenario) regenerated with the simulator
and the model's figures on it (tests/test_pretrained.py reruns it).
Usage: python scripts/ship_model.py RUN NAME "COMMAND" [DATA_DIR]   (DATA_DIR: the shared cpu data; a
planner's: the folder of its training / val / test scene folders, default runs/data)"""

import json
import shutil
import sys
import tempfile
from pathlib import Path

from trajmoe.data.specs import GENERATOR_VERSION
from trajmoe.pretrained import MANIFEST, PRETRAINED, check_pretrained, regenerate_check_episode

run, name, command = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
best = run / "best"
cfg = json.loads((best / "config.json").read_text())
family = {"trajmoe-drive-planner": "planner"}.get(cfg["kind"], cfg["kind"])  # trajmoe.config.RUN_KINDS
if family not in ("track", "policy", "planner"):
    sys.exit(f"{best}/config.json: kind {cfg['kind']!r} cannot be shipped by this script (track, policy, planner)")
data = Path(sys.argv[4] if len(sys.argv) > 4 else "runs/data" if family == "planner" else "runs/shared-data/metaworld-cpu")
if family != "planner":
    gen = json.loads((data / "id-val" / "generation.json").read_text())
    episode = {k: gen[k] for k in ("name", "camera", "views", "action_free", "variation_seed", "visual_variation",
                                   "image_size", "max_steps", "track")}
    episode.update(tasks=[gen["tasks"][0]], episodes=1)
train_recs = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if '"samples_per_s"' in x]
cpu_s = train_recs[-1].get("cpu_s") if train_recs else None
if cpu_s is None and train_recs:  # runs from before `cpu_s` was logged: training time from the throughput (1 thread)
    cpu_s = sum((b["step"] - a["step"]) * cfg["train"]["batch_size"] / b["samples_per_s"]
                for a, b in zip([{"step": 0}] + train_recs[:-1], train_recs))
if family == "policy" and cfg.get("track_run"):
    sys.exit("a track-conditioned policy needs its track model shipped beside it: not handled yet (plain BC / oracle only)")
dst = PRETRAINED / name
dst.mkdir(parents=True, exist_ok=True)
for f in ("config.json", "model.safetensors", "task_emb.safetensors"):
    if (best / f).is_file():
        shutil.copyfile(best / f, dst / f)
train_dirs = cfg.get("data_dirs") or [cfg.get("data_dir")]
check_metrics = {"track": ("overall.skill_mse", "overall.skill_ade", "view:agentview.skill_mse", "view:agentview.skill_ade",
                            "view:eye_in_hand.skill_mse"),
                 "policy": ("action_mse", "action_mse_last"),
                 "planner": ("EPDMS", "NC", "DAC", "EP", "TTC", "LK")}[family]
man = {
    "name": name, "family": family, "command": command, "seed": cfg["train"]["seed"],
    "data": ({"benchmark": "metaworld-cpu", "generator_version": GENERATOR_VERSION,
              "train": [Path(d).name for d in train_dirs], "heldout": "id-val"} if family != "planner" else
             {"generator": "trajmoe data scenes (highway-env)", "train": json.loads((data / "train" / "generation.json").read_text()),
              "val": json.loads((data / "val" / "generation.json").read_text()),
              "test": json.loads((data / "test" / "generation.json").read_text())}),
    "heldout": json.loads((best / "eval.json").read_text()),
    "validation": json.loads((run / "validation.json").read_text()) if (run / "validation.json").is_file() else None,
    "cpu_hours": None if cpu_s is None else round(cpu_s / 3600, 3),
    "check": ({"episode": episode, "max_samples": 64, "metrics": {k: None for k in check_metrics}} if family != "planner"
              else {"scenes": {"scenarios": ["highway", "merge", "roundabout", "intersection"], "scenes": 4, "seed": 100000},
                    "metrics": {k: None for k in check_metrics}}),
}
if family == "policy" and Path(f"{run}.eval.json").is_file():
    ev = json.loads(Path(f"{run}.eval.json").read_text())
    man["closed_loop"] = {"successes": ev["successes"], "episodes": ev["episodes"], "ci95": ev["ci95"],
                          "per_task": {t: v["successes"] for t, v in ev["tasks"].items()},
                          "episodes_per_task": ev["episodes_per_task"], "max_steps": 150}
if family == "planner" and Path(f"{run}.eval.json").is_file():
    ev = json.loads(Path(f"{run}.eval.json").read_text())
    man["test"] = {k: ev[k] for k in ev if k != "routing"}
(dst / MANIFEST).write_text(json.dumps(man, indent=1) + "\n")
with tempfile.TemporaryDirectory() as tmp:
    regenerate_check_episode(name, Path(tmp) / "check")
    measured = check_pretrained(name, Path(tmp) / "check")["measured"]
man["check"]["metrics"] = measured
(dst / MANIFEST).write_text(json.dumps(man, indent=1) + "\n")
print(json.dumps({"shipped": str(dst), "check": measured, "cpu_hours": man["cpu_hours"]}))
