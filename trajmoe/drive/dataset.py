"""Scene -> fixed-size model inputs, and the training dataset (Trainer protocol: len + get(i, rng)).

Token features (ego frame, scaled to O(1)):
  agents (MAX_AGENTS, 9): x/50, y/50, cos h, sin h, vx/20, vy/20, length/5, width/2, static
  lanes  (MAX_LANES, 42): 20 centreline points /50 (40), width/4, junction
  ego    (72,): speed/20, vx/20, vy/20, ax/5, ay/5, command one-hot (4), 2 s history (21 x (x/20, y/20, h))
  route  (40,): route centreline resampled every 5 m over the next 100 m, /50
  drivable (64, 128) uint8: share of drivable area per 1 m cell x 255 over x in [-16, 112) m, y in [-32, 32) m
         (from the scene's `dir_bits` raster; only when the scene has it)
Legend: S scenes, V vocabulary trajectories, M scored metrics (`metrics.TARGET_METRICS`).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch

from trajmoe.drive import geometry as geo
from trajmoe.drive.scenes import FUTURE_STEPS, LANE_CHUNK, MAX_AGENTS, MAX_LANES

AGENT_FEATS = 9
LANE_FEATS = 2 * LANE_CHUNK + 2
EGO_FEATS = 5 + 4 + 21 * 3
ROUTE_POINTS = 20
ROUTE_FEATS = 2 * ROUTE_POINTS
PLAN_STRIDE = 5  # output poses every 0.5 s, of the FUTURE_STEPS scoring poses at 0.1 s
PLAN_STEPS = FUTURE_STEPS // PLAN_STRIDE  # 8 output poses (NAVSIM: 4 s at 0.5 s)


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
    out = {
        "agents": agents,
        "agents_mask": agents_mask,
        "lanes": lanes,
        "lanes_mask": lanes_mask,
        "ego": ego,
        "route": (rxy.reshape(-1) / 50).astype(np.float32),
        "domain": np.int64(scene["domain"]),
        "expert8": scene["expert"][PLAN_STRIDE - 1 :: PLAN_STRIDE, :2].astype(np.float32),  # (8, 2) at 0.5 s
    }
    if "dir_bits" in scene:
        out["drivable"] = drivable_bev(scene["dir_bits"])
    return out


BEV_RES = 1.0  # m per cell of the coarse drivable-area map the planner's queries read
BEV_X = (-16.0, 112.0)  # m, ego frame: holds a 4 s plan up to 28 m/s (faster vocabulary poses read 0)
BEV_Y = (-32.0, 32.0)


def drivable_bev(dir_bits: np.ndarray) -> np.ndarray:
    """The scorer's drivable-area raster (`geometry` layout: (H_CELLS, W_CELLS), nonzero = drivable, RES m
    cells over X_RANGE x Y_RANGE) -> (64, 128) uint8: the drivable share of each BEV_RES cell over BEV_X x
    BEV_Y, x 255 (rows along y, columns along x, as the scorer's raster)."""
    k = int(round(BEV_RES / geo.RES))
    r0 = int(round((BEV_Y[0] - geo.Y_RANGE[0]) / geo.RES))
    c0 = int(round((BEV_X[0] - geo.X_RANGE[0]) / geo.RES))
    rows, cols = int(round((BEV_Y[1] - BEV_Y[0]) / BEV_RES)), int(round((BEV_X[1] - BEV_X[0]) / BEV_RES))
    crop = np.asarray(dir_bits)[r0 : r0 + rows * k, c0 : c0 + cols * k] != 0
    share = crop.reshape(rows, k, cols, k).mean((1, 3))
    return np.round(share * 255).astype(np.uint8)


MAP_DIST_SCALE = 4.0  # m: distances / 4, clipped at 3 (12 m)


def _dist_to_segments(p_BQ2: torch.Tensor, a_BK2: torch.Tensor, b_BK2: torch.Tensor) -> torch.Tensor:
    """Distance (B, Q) from each point to the nearest of K segments a->b (all in metres)."""
    ab = (b_BK2 - a_BK2)[:, None]  # (B, 1, K, 2)
    ap = p_BQ2[:, :, None] - a_BK2[:, None]  # (B, Q, K, 2)
    t = ((ap * ab).sum(-1) / (ab * ab).sum(-1).clamp_min(1e-9)).clamp(0, 1)
    return (ap - t[..., None] * ab).norm(dim=-1).min(-1).values


def vocab_map_features(vocab_V403: torch.Tensor, batch: dict) -> torch.Tensor:
    """Map seen at each vocabulary trajectory's 8 poses (0.5 s apart) -> (B, V, 16) features.

    Per pose: distance to the nearest lane-centreline point of the scene's lane tokens (points 1 m
    apart; masked tokens ignored) and distance to the route polyline (`route` feature, 20 points 5 m
    apart, as segments), each / 4 m and clipped at 3. Units: metres before scaling. Built from the
    model inputs alone, so training, open-loop and closed-loop evaluation compute it identically.
    Our addition to the GTRS / TrajMoE query (their queries see the map only through attention):
    on CPU-size data the attention alone did not learn where the road is in curved scenes.
    """
    B = batch["lanes"].shape[0]
    V = vocab_V403.shape[0]
    poses = vocab_V403[:, PLAN_STRIDE - 1 :: PLAN_STRIDE, :2].reshape(1, V * PLAN_STEPS, 2).expand(B, -1, -1)
    lanes = batch["lanes"][..., : 2 * LANE_CHUNK].reshape(B, -1, LANE_CHUNK, 2) * 50.0  # (B, L, P, 2) m
    far = torch.where(batch["lanes_mask"].bool()[..., None, None], lanes, torch.full_like(lanes, 1e4))
    d_lane = torch.cdist(poses, far.reshape(B, -1, 2)).min(-1).values  # (B, V*8)
    route = batch["route"].reshape(B, ROUTE_POINTS, 2) * 50.0
    d_route = _dist_to_segments(poses, route[:, :-1], route[:, 1:])
    f = torch.stack([d_lane, d_route], -1).reshape(B, V, PLAN_STEPS * 2)
    return (f / MAP_DIST_SCALE).clamp(max=3.0)


AGENT_DIST_SCALE = 4.0  # m: gaps / 4, clipped at 3 (12 m)


def vocab_agent_features(vocab_V403: torch.Tensor, batch: dict) -> torch.Tensor:
    """Agents seen at each vocabulary trajectory's 8 poses (0.5 s apart) -> (B, V, 8) features.

    Per pose at time t_k = 0.5 k s: the smallest gap (m) between the ego centre there and any agent
    extrapolated at constant velocity to t_k (x + vx t, y + vy t, from the `agents` feature: ego frame
    at t0; static objects stay), minus half the agent's length, / 4 m, clipped to [0, 3]; masked
    agents ignored (3 when the scene has none). Built from the model inputs alone, like
    `vocab_map_features`. Our addition to the GTRS / TrajMoE query (queries see agents only through
    attention there): the planner's NC / TTC heads ranked the vocabulary poorly where traffic crosses
    the ego's path (within-scene AUC ~0.72 in intersections, scripts/planner_diagnosis.py).
    """
    B = batch["agents"].shape[0]
    V = vocab_V403.shape[0]
    poses = vocab_V403[:, PLAN_STRIDE - 1 :: PLAN_STRIDE, :2]  # (V, 8, 2) m
    a = batch["agents"]
    t = torch.arange(1, PLAN_STEPS + 1, dtype=a.dtype, device=a.device) * (PLAN_STRIDE * 0.1)  # (8,) s
    pos = a[..., None, 0:2] * 50.0 + a[..., None, 4:6] * 20.0 * t[:, None]  # (B, A, 8, 2) m
    d = (poses[None, :, None] - pos[:, None]).norm(dim=-1) - (a[..., 6] * 2.5)[:, None, :, None]  # (B, V, A, 8)
    d = torch.where(batch["agents_mask"].bool()[:, None, :, None], d, torch.full_like(d, 1e4))
    if d.shape[2] == 0:
        return torch.full((B, V, PLAN_STEPS), 3.0, dtype=a.dtype, device=a.device)
    return (d.min(2).values / AGENT_DIST_SCALE).clamp(0.0, 3.0)


def vocab_drivable_features(vocab_V403: torch.Tensor, batch: dict) -> torch.Tensor:
    """Drivable area under each vocabulary trajectory's ego box at its 8 poses (0.5 s apart) -> (B, V, 8).

    Per pose: the smallest drivable share (0..1, bilinear in the `drivable` feature map, `drivable_bev`)
    at the 4 corners of the NAVSIM ego box (`geometry.PACIFICA_LENGTH` x `PACIFICA_WIDTH`, centred on the
    pose, along its heading); outside the map counts as not drivable, as in the scorer. A corner off the
    road reads ~0, so a query sees directly what the DAC sub-score (NAVSIM's drivable-area compliance: every
    corner on the drivable area) tests. Our addition to the GTRS / TrajMoE query (see
    `vocab_map_features`): the planner's chosen plans left the road in roundabouts, where the lane
    centrelines alone did not tell where the road edge is (scripts/planner_diagnosis.py).

    Raises:
        KeyError: the batch has no "drivable" map (scenes without the scorer's rasters).
    """
    if "drivable" not in batch:
        raise KeyError("model.vocab_drivable_features needs the scenes' drivable-area raster ('dir_bits'), "
                       "which these scenes lack")
    bev = batch["drivable"].float()[:, None] / 255.0  # (B, 1, 64, 128)
    B, V = bev.shape[0], vocab_V403.shape[0]
    pose = vocab_V403[:, PLAN_STRIDE - 1 :: PLAN_STRIDE].to(bev.dtype)  # (V, 8, 3)
    c, s = torch.cos(pose[..., 2:3]), torch.sin(pose[..., 2:3])
    lx = torch.tensor([1.0, 1.0, -1.0, -1.0], dtype=bev.dtype) * (geo.PACIFICA_LENGTH / 2)
    ly = torch.tensor([1.0, -1.0, -1.0, 1.0], dtype=bev.dtype) * (geo.PACIFICA_WIDTH / 2)
    cx = pose[..., 0:1] + c * lx - s * ly  # (V, 8, 4) m
    cy = pose[..., 1:2] + s * lx + c * ly
    gx = (cx - BEV_X[0]) / (BEV_X[1] - BEV_X[0]) * 2 - 1  # grid_sample coordinates (align_corners=False)
    gy = (cy - BEV_Y[0]) / (BEV_Y[1] - BEV_Y[0]) * 2 - 1
    grid = torch.stack([gx, gy], -1).reshape(1, 1, -1, 2).expand(B, -1, -1, -1)
    val = torch.nn.functional.grid_sample(bev, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return val.reshape(B, V, PLAN_STEPS, 4).min(-1).values


class DriveDataset:
    """Precomputed features of S scenes + their (S, V, M) vocabulary score targets (Trainer protocol).

    `scenes` may be any iterable (a generator loading one scene file at a time): only each scene's
    `scene_features` are kept, never the scene itself (its rasters are ~4 MB; the features ~40 KB).
    `from_features` builds the dataset from features made elsewhere.
    vocab (V, 40, 3), optional: also precompute `vocab_map_features` ("vocab_map", (V, 16)),
    `vocab_agent_features` ("vocab_agents", (V, 8)) and, for scenes with rasters, `vocab_drivable_features`
    ("vocab_drivable", (V, 8)) per scene, for a model with those options on (it computes them itself when
    they are absent).

    Raises:
        ValueError: no scenes, or targets for a different number of scenes.
    """

    def __init__(self, scenes: Iterable[dict], targets: np.ndarray | None = None, vocab: np.ndarray | None = None):
        self._setup([scene_features(s) for s in scenes], targets, vocab)

    @classmethod
    def from_features(cls, features: list[dict], targets: np.ndarray | None = None,
                      vocab: np.ndarray | None = None) -> "DriveDataset":
        """The dataset of `scene_features` dicts (as `__init__`, without the scenes)."""
        ds = cls.__new__(cls)
        ds._setup(list(features), targets, vocab)
        return ds

    def _setup(self, features: list[dict], targets: np.ndarray | None, vocab: np.ndarray | None) -> None:
        if not features:
            raise ValueError("no scenes to train on")
        if targets is not None and len(targets) != len(features):
            raise ValueError(f"targets hold {len(targets)} scenes, expected {len(features)}")
        self.features = features
        if vocab is not None:  # the model's per-query map / agent features, once per scene (they never change)
            v = torch.as_tensor(np.asarray(vocab, np.float32))
            for i in range(0, len(self.features), 16):
                chunk = self.features[i : i + 16]
                b = collate(chunk)
                f, g = vocab_map_features(v, b).numpy(), vocab_agent_features(v, b).numpy()
                h = vocab_drivable_features(v, b).numpy() if "drivable" in b else [None] * len(chunk)
                for feat, fm, fa, fd in zip(chunk, f, g, h):
                    feat["vocab_map"], feat["vocab_agents"] = fm, fa
                    if fd is not None:
                        feat["vocab_drivable"] = fd
        self.targets = targets
        self.domains = np.array([int(f["domain"]) for f in features])

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
