"""Track-dataset sample cost, with and without the in-memory episode cache (CPU seconds, 1 thread).

Usage: python scripts/data_speed.py EPISODE_DIR [EPISODE_DIR ...]   (e.g. runs/demo/data/mw/id runs/demo/data/mw/ood)
"""
import sys
import time

import numpy as np

from trajmoe.track.dataset import TrackDataset

for cache in (False, True):
    ds = TrackDataset(sys.argv[1:], 16, 32, 128, augment=True, cache=cache)
    idx = np.random.default_rng(0).integers(0, len(ds), 640)
    for i in idx[:320]:
        ds.get(int(i), np.random.default_rng(int(i)))  # warm-up (fills the cache)
    t0 = time.process_time()
    for i in idx[320:]:
        ds.get(int(i), np.random.default_rng(int(i)))
    dt = time.process_time() - t0
    print(f"cache={cache}: {320 / dt:.0f} samples per CPU-second ({dt / 320 * 1e3:.2f} ms/sample)")
