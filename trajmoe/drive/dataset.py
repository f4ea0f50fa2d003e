"""Scene -> fixed-size model inputs, and the training dataset (Trainer protocol: len + get(i, rng)).

Token features (ego frame, scaled to O(1)):
  agents (MAX_AGENTS, 9): x/50, y/50, cos h, sin h, vx/20, vy/20, length/5, width/2, static
  lanes  (MAX_LANES, 42): 20 centreline points /50 (40), width/4, junction
  ego    (72,): speed/20, vx/20, vy/20, ax/5, ay/5, command one-hot (4), 2 s history (21 x (x/20, y/20, h))
  route  (40,): route centreline resampled every 5 m over the next 100 m, /50
Legend: S scenes, V vocabulary trajectories, M scored metrics (`metrics.TARGET_METRICS`).
"""

from __future__ import annotations

import numpy as np
import torch

from trajmoe.drive import geometry as geo
from trajmoe.drive.scenes import LANE_CHUNK, MAX_AGENTS, MAX_LANES

AGENT_FEATS = 9
LANE_FEATS = 2 * LANE_CHUNK + 2
EGO_FEATS = 5 + 4 + 21 * 3
ROUTE_POINTS = 20
ROUTE_FEATS = 2 * ROUTE_POINTS
PLAN_STEPS = 8  # output poses at 0.5 s
PLAN_STRIDE = 5  # of the 40 scoring poses at 0.1 s


def scene_features(scene: dict) -> dict[str, np.ndarray]:
    """One scene -> fixed-size float32 model inputs (layout in the module docstring).

    Returns agents (MAX_AGENTS, 9), agents_mask (MAX_AGENTS,) bool, lanes (MAX_LANES, 42),
    lanes_mask (MAX_LANES,) bool, ego (72,), route (40,), domain () int64 and expert8 (8, 2): the
    expert's positions (m) at 0.5 s steps, the imitation target.
    """
    agents = np.zeros((MAX_AGENTS, AGENT_FEATS), np.float32)
    a = scene["agents"][:MAX_AGENTS]
    n = len(a)
    if n:
        agents[:n] = np.stack([a[:, 0] / 50, a[:, 1] / 50, np.cos(a[:, 2]), np.sin(a[:, 2]), a[:, 3] / 20, a[:, 4] / 20,
                               a[:, 5] / 5, a[:, 6] / 2, scene["agents_static"][:n].astype(np.float32)], -1)
    agents_mask = np.arange(MAX_AGENTS) < n
    lanes = np.zeros((MAX_LANES, LANE_FEATS), np.float32)
    lt, lm = scene["lanes"][:MAX_LANES], scene["lanes_meta"][:MAX_LANES]
    m = len(lt)
    if m:
        lanes[:m, : 2 * LANE_CHUNK] = lt.reshape(m, -1) / 50
        lanes[:m, -2] = lm[:, 0] / 4
        lanes[:m, -1] = lm[:, 1]
    lanes_mask = np.arange(MAX_LANES) < m
    es = scene["ego_state"]
    cmd = np.zeros(4, np.float32)
    cmd[int(scene["command"])] = 1
    hist = scene["ego_hist"].astype(np.float32) * np.array([1 / 20, 1 / 20, 1], np.float32)
    ego = np.concatenate([[es[0] / 20, es[1] / 20, es[2] / 20, es[3] / 5, es[4] / 5], cmd, hist.reshape(-1)]).astype(np.float32)
    route = scene["route"].astype(np.float64)
    s = geo.polyline_arclength(route)
    s0 = geo.project_on_polyline(np.zeros(2), route)
    q = s0 + np.linspace(5.0, 100.0, ROUTE_POINTS)
    rxy = np.stack([np.interp(q, s, route[:, 0]), np.interp(q, s, route[:, 1])], -1)
    return {
        "agents": agents,
        "agents_mask": agents_mask,
        "lanes": lanes,
        "lanes_mask": lanes_mask,
        "ego": ego,
        "route": (rxy.reshape(-1) / 50).astype(np.float32),
        "domain": np.int64(scene["domain"]),
        "expert8": scene["expert"][PLAN_STRIDE - 1 :: PLAN_STRIDE, :2].astype(np.float32),  # (8, 2) at 0.5 s
    }


class DriveDataset:
    """Precomputed features of S scenes + their (S, V, M) vocabulary score targets (Trainer protocol).

    Raises:
        ValueError: no scenes, or targets for a different number of scenes.
    """

    def __init__(self, scenes: list[dict], targets: np.ndarray | None = None):
        if not scenes:
            raise ValueError("no scenes to train on")
        if targets is not None and len(targets) != len(scenes):
            raise ValueError(f"targets hold {len(targets)} scenes, expected {len(scenes)}")
        self.features = [scene_features(s) for s in scenes]
        self.targets = targets
        self.domains = np.array([s["domain"] for s in scenes])

    def __len__(self) -> int:
        return len(self.features)

    def get(self, index: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """Sample `index`: `scene_features` plus "targets" (V, M) float32 when targets were given
        (`rng` is unused: no augmentation)."""
        out = dict(self.features[index])
        if self.targets is not None:
            out["targets"] = self.targets[index].astype(np.float32)
        return out


def collate(items: list[dict]) -> dict:
    """Stack samples key by key into tensors with a leading batch dim B = len(items)."""
    return {k: torch.as_tensor(np.stack([it[k] for it in items])) for k in items[0]}
