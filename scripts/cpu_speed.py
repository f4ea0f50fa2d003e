"""CPU seconds per training step on one thread (robust to other processes sharing the cores): tiny presets before/after the small-budget recipe. Usage: python scripts/cpu_speed.py"""
import statistics
import time

import torch

from trajmoe.track import TrackConfig, TrackModel
from trajmoe.bench.train import synthetic_batch, track_train_flops
from trajmoe.train.trainer import param_groups
torch.set_num_threads(1)
res = {}
for label, preset, kw in [("before", "tiny-dense", dict(dropout=0.1, img_mask_ratio=0.5, w_img=1.0)), ("after", "tiny-dense", {}),
                          ("before", "tiny-tramoe", dict(dropout=0.1, img_mask_ratio=0.5, w_img=1.0)), ("after", "tiny-tramoe", {})]:
    cfg = TrackConfig.preset(preset).replace(**kw)
    torch.manual_seed(0); m = TrackModel(cfg); m.train()
    opt = torch.optim.AdamW(param_groups(m, 1e-4), lr=1e-4)
    data = synthetic_batch(cfg, 32, torch.device("cpu"), torch.float32)
    def step():
        loss, _ = m(data); loss.backward(); torch.nn.utils.clip_grad_norm_(m.parameters(), 10); opt.step(); opt.zero_grad(set_to_none=True)
    for _ in range(3): step()
    ts = []
    for _ in range(10):
        t0 = time.process_time(); step(); ts.append(time.process_time() - t0)
    s = statistics.median(ts)
    gflops = track_train_flops(cfg) * 32 / s / 1e9
    print(f"{preset:12s} {label:6s} {s*1e3:6.0f} CPU-ms/step  {32/s:5.1f} samples per CPU-second  {gflops:5.1f} GFLOP/s per core", flush=True)
