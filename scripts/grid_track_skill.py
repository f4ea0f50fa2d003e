"""The track model's skill on the POLICY's query points: predicted tracks of the fixed grid the policy asks about
(16 points per view) against the exact grid tracks stored with the in-domain demos (`oracle_points`), per camera,
for moving (> 2 px in the window) and static grid points, every 4th frame of demos 0-1 of each task.
Usage: python scripts/grid_track_skill.py TRACK_RUN"""
import sys

import numpy as np
import torch
from pathlib import Path
from trajmoe.data.atm_hdf5 import open_episode
from trajmoe.track.io import load_track_model
torch.set_num_threads(1)
m = load_track_model(sys.argv[1])
eps = sorted(Path("runs/shared-data/metaworld-cpu/id").rglob("demo_[01].hdf5"))
acc = {}
for p in eps:
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
                a = acc.setdefault((v, kind), [0, 0, 0, 0, 0])
                w = sel[:, None, :].repeat(d_m.shape[1], 1)
                a[0] += (d_m * w).sum(); a[1] += (d_s * w).sum(); a[2] += w.sum()
                a[3] += (((pred - gt) ** 2).sum(-1) * w).sum(); a[4] += (((gt[:, :1] - gt) ** 2).sum(-1) * w).sum()
for (v, kind), (dm, ds, n, mm, ms) in sorted(acc.items()):
    print(f"{v:12s} {kind:11s} points-steps {int(n):7d}  ADE {dm/n:.2f} px (no motion {ds/n:.2f})  skill ADE {1-dm/ds:+.3f}  skill MSE {1-mm/ms:+.3f}")
