"""Why do the adaptive-mask values barely move? Train an adaptive_mask policy (cpu preset) with the
Trainer's optimiser recipe (AdamW, param_groups, cosine, clip) and record, per step, the 16 values,
their gradients, and which track timestep wins the mask pixels (latest-wins rasterisation).

    python docs/scripts/mask_value_dynamics.py DATA TRACK_RUN OUT.json [steps] [batch] [set=value ...]

Prints, per value: total movement, |mean grad| / rms grad (Adam's step is ~ lr times that ratio),
and the share of mask pixels each timestep wins.
"""

from __future__ import annotations

import dataclasses
import json
import sys

import numpy as np
import torch

from trajmoe.policy.dataset import PolicyDataset, build_track_cache, data_fields, scan_data
from trajmoe.policy.io import load_track_for_policy
from trajmoe.policy.model import TrajectoryPolicy
from trajmoe.policy.train import resolve
from trajmoe.train.schedule import lr_at
from trajmoe.train.trainer import param_groups


def pixel_share(pol: TrajectoryPolicy, tracks: torch.Tensor) -> np.ndarray:
    """Fraction of mask pixels won by each timestep (values replaced by one-hot indicators)."""
    cfg = pol.cfg
    from trajmoe.policy.conditioning import rasterize_tracks

    H = cfg.encoder_size
    tr = tracks.flatten(0, 2)  # (B*F*V, T, N, 2)
    idx = torch.arange(1, cfg.track_len + 1, dtype=torch.float32)
    m = rasterize_tracks(tr, idx, H, H, cfg.mask_interp)
    counts = torch.bincount(m[m > 0].long() - 1, minlength=cfg.track_len).float()
    return (counts / counts.sum()).numpy()


def main() -> None:
    data_dir, track_run, out = sys.argv[1:4]
    steps = int(sys.argv[4]) if len(sys.argv) > 4 else 150
    batch = int(sys.argv[5]) if len(sys.argv) > 5 else 16
    sets = dict(a.split("=", 1) for a in sys.argv[6:])
    torch.manual_seed(0)
    res = resolve("cpu", conditioning="adaptive_mask", track_run=track_run)
    tm = load_track_for_policy(track_run)
    metas = scan_data(data_dir)
    cfg = dataclasses.replace(res["model"], **data_fields(metas), **{k: float(v) for k, v in sets.items()})
    ds = PolicyDataset(metas, cfg, res["data"], augment=True)
    pol = TrajectoryPolicy(cfg, tm)
    build_track_cache(pol, ds, None, "diag")
    tc = dataclasses.replace(res["train"], steps=steps, batch_size=batch)
    opt = torch.optim.AdamW(param_groups(pol, tc.weight_decay), lr=tc.lr, betas=tc.betas)
    rng = np.random.default_rng(0)
    rec = {"values": [], "grads": [], "share": np.zeros(cfg.track_len)}
    pol.train()
    for step in range(1, steps + 1):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, tc)
        items = [ds.get(int(i), rng) for i in rng.integers(len(ds), size=batch)]
        b = {k: torch.from_numpy(np.stack([it[k] for it in items])) for k in items[0] if k != "source"}
        loss, _ = pol(b)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(pol.parameters(), tc.grad_clip)
        rec["grads"].append((pol.mask_delta.grad / cfg.mask_value_scale).numpy().tolist())  # dL/dvalue
        rec["share"] += pixel_share(pol, b["tracks"].float()) / steps
        opt.step()
        rec["values"].append(pol.mask_values.detach().clone().numpy().tolist())
    g = np.array(rec["grads"])
    v = np.array(rec["values"])
    moved = np.abs(v[-1] - pol.mask_init.numpy())
    ratio = np.abs(g.mean(0)) / np.sqrt((g ** 2).mean(0) + 1e-30)
    res = {"steps": steps, "batch": batch, "sets": sets, "final_values": v[-1].tolist(),
           "moved": moved.tolist(), "grad_sign_consistency": ratio.tolist(),
           "grad_rms": np.sqrt((g ** 2).mean(0)).tolist(), "pixel_share": rec["share"].tolist(),
           "sum_lr": float(sum(lr_at(s, tc) for s in range(1, steps + 1))), "values": rec["values"]}
    json.dump(res, open(out, "w"))
    np.set_printoptions(precision=4, suppress=True, linewidth=150)
    print("final values  ", v[-1])
    print("max |move|    ", float(moved.max()), " sum of lr over steps", res["sum_lr"])
    print("|mean g|/rms g", ratio)
    print("grad rms      ", np.sqrt((g ** 2).mean(0)))
    print("pixel share   ", rec["share"])


if __name__ == "__main__":
    main()
