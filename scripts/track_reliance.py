"""How much a track-conditioned policy relies on the tracks it is given: its held-out action MSE (the training
validation's figure, the same fixed samples) when the tracks of its query grid are (1) the track model's
predictions it was trained with, (2) no motion (each point's first position repeated: what a track model that
predicts nothing would give), (3) the simulator's exact grid tracks (what a perfect track model would give; the
policy was not trained on them). (1) = (2): the policy ignores its tracks; (3) far below (1): better tracks would
help this very policy.

Usage: python scripts/track_reliance.py POLICY_RUN HELDOUT_DIR
  e.g. python scripts/track_reliance.py runs/policies/mask-videos-fix-s0/best runs/shared-data/id-val-grid
HELDOUT_DIR must store the exact grid tracks of the policy's num_points (`trajmoe data metaworld ... --oracle-points
16`); the id-val episodes regenerated with them are `runs/shared-data/id-val-grid` (see scripts/grid_track_skill.py).
"""

import sys

import numpy as np
import torch

from trajmoe.config import from_dict
from trajmoe.data.atm_hdf5 import open_episode
from trajmoe.policy.config import PolicyDataConfig
from trajmoe.policy.dataset import PolicyDataset, build_track_cache, scan_data
from trajmoe.policy.io import from_run
from trajmoe.policy.train import action_validation_fn


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] in ("-h", "--help"):
        print("usage: python scripts/track_reliance.py POLICY_RUN HELDOUT_DIR (see the module docstring)")
        return 0 if argv[:1] in (["-h"], ["--help"]) else 2
    torch.set_num_threads(1)
    policy, rc = from_run(argv[0])
    cfg = policy.cfg
    if not cfg.uses_track_model:
        raise SystemExit(f"{argv[0]}: conditioning {cfg.conditioning!r} takes no predicted tracks")
    data = from_dict(PolicyDataConfig, rc["data"], f"{argv[0]} data")
    val = PolicyDataset(scan_data(argv[1], rc["tasks"], 0), cfg, data, augment=False)
    build_track_cache(policy, val, None, "reliance")
    evaluate = action_validation_fn(val, data.val_samples)
    predicted = val.tracks
    exact = []
    for e in val.episodes:
        with open_episode(e.path) as ep:
            exact.append(np.stack([ep.oracle_tracks(v, cfg.num_points) for v in cfg.views], axis=1))  # (L, V, T, N, 2)
    rows = {"predicted (as trained)": predicted,
            "no motion": [np.repeat(p[:, :, :1], p.shape[2], axis=2) for p in predicted],
            "exact (simulator)": exact}
    print(f"{argv[0]} on {argv[1]} ({len(val)} frames, {data.val_samples} fixed samples)")
    print("| tracks given | held-out action MSE | at the executed frame |")
    print("|---|---|---|")
    for name, tracks in rows.items():
        val.tracks = tracks
        with torch.no_grad():
            r = evaluate(policy, 0)
        print(f"| {name} | {r['action_mse']:.4f} | {r['action_mse_last']:.4f} |")
    return 0


if __name__ == "__main__":
    try:
        raise SystemExit(main(sys.argv[1:]))
    except (FileNotFoundError, ValueError) as e:  # a bad run or data folder: one line, no traceback
        raise SystemExit(f"track_reliance.py: {e}")
