"""The track model's skill on the POLICY's query points: predicted tracks of the fixed grid the policy asks about
(16 points per view) against the exact grid tracks stored with the in-domain demos (`oracle_points`), per camera,
for moving (> 2 px in the window) and static grid points, every 4th frame of demos 0-1 of each training task
and, with HELDOUT_DIR, of every held-out episode there (e.g. the id-val episodes regenerated with their grid
tracks: trajmoe data metaworld --tasks <id-val tasks> --episodes 2 --variation-seed 500 --max-steps 200
--oracle-points 16 --domain id-val --out runs/shared-data/id-val-grid, bit-identical to id-val otherwise).
With PER_TASK=1 the held-out figures are also split by task (e.g. which task's tracks mislead the policy).
Usage: [PER_TASK=1] python scripts/grid_track_skill.py TRACK_RUN [HELDOUT_DIR]"""
import os
import sys

import numpy as np
import torch
from pathlib import Path
from trajmoe.data.atm_hdf5 import open_episode
from trajmoe.track.io import load_track_model
torch.set_num_threads(1)
if len(sys.argv) not in (2, 3) or sys.argv[1] in ("-h", "--help"):
    sys.exit("usage: [PER_TASK=1] python scripts/grid_track_skill.py TRACK_RUN [HELDOUT_DIR] (train rows: demos 0-1 of "
             "runs/shared-data/metaworld-cpu/id; see the module docstring)")
try:
    m = load_track_model(sys.argv[1])
except (FileNotFoundError, ValueError) as e:
    sys.exit(f"grid_track_skill.py: {e}")
sets = {"train": sorted(Path("runs/shared-data/metaworld-cpu/id").rglob("demo_[01].hdf5"))}
if len(sys.argv) > 2:
    sets["held-out"] = sorted(Path(sys.argv[2]).rglob("demo_*.hdf5"))
    if not sets["held-out"]:
        sys.exit(f"{sys.argv[2]}: no demo_*.hdf5 episode below it")
acc = {}


def measure(name: str, p: Path) -> None:
    """Accumulate one episode's predicted vs exact grid tracks into acc[(name, view, kind)]."""
    with open_episode(p) as ep:
        emb = torch.as_tensor(ep.task_emb().astype(np.float32))
        for v in ("agentview", "eye_in_hand"):
            o = ep.oracle_tracks(v, 16)  # (L, T, N, 2) exact grid tracks
            fr = ep.frames(v)
            idx = np.arange(0, len(o), 4)
            img = torch.as_tensor(fr[idx]).float() / 255.0
            q = torch.as_tensor(o[idx, 0]).float()
            pred = m.predict(img, q, emb.expand(len(idx), -1)).numpy()
            gt = o[idx]
            d_m = np.linalg.norm(pred - gt, axis=-1) * 128; d_s = np.linalg.norm(gt[:, :1] - gt, axis=-1) * 128
            moving = (d_s.max(1) > 2)  # (B, N)
            for kind, sel in (("all", np.ones_like(moving)), ("moving>2px", moving), ("static", ~moving)):
                a = acc.setdefault((name, v, kind), [0, 0, 0, 0, 0])
                w = sel[:, None, :].repeat(d_m.shape[1], 1)
                a[0] += (d_m * w).sum(); a[1] += (d_s * w).sum(); a[2] += w.sum()
                a[3] += (((pred - gt) ** 2).sum(-1) * w).sum(); a[4] += (((gt[:, :1] - gt) ** 2).sum(-1) * w).sum()


for name, eps in sets.items():
    for p in eps:
        measure(name, p)
        if name == "held-out" and os.environ.get("PER_TASK") == "1":
            measure(p.parent.name.removesuffix("-v3"), p)
for (name, v, kind), (dm, ds, n, mm, ms) in sorted(acc.items(), key=lambda kv: (kv[0][0] != "train", kv[0][1:])):
    skill = (f"skill ADE {1-dm/ds:+.3f}  skill MSE {1-mm/ms:+.3f}" if ds > 0 and ms > 0
             else "skill n/a (the points do not move)")
    print(f"{name:20s} {v:12s} {kind:11s} points-steps {int(n):7d}  ADE {dm/n:.2f} px (no motion {ds/n:.2f})  {skill}")
