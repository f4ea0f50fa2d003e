"""Driving scenes from highway-env, in NAVSIM's conventions (ego frame, 2 s history, 4 s future).

One scene = one time t0 of a simulated episode (`trajmoe.envs.highway.HighwaySim`, 10 Hz):
  ego_hist (21, 3)     ego poses (x, y, heading) from t0-2 s to t0, ego frame at t0 (last = 0)
  ego_state (5,)       speed, vx, vy, ax, ay at t0 (ego frame; acceleration by finite difference)
  command ()           0 left, 1 straight, 2 right (route heading 30-45 m ahead), 3 unknown
  expert (40, 3)       the IDM/MOBIL ego's poses at t0+0.1 .. t0+4.0 s
  agents (A, 7)        x, y, heading, vx, vy, length, width at t0, nearest first (A <= MAX_AGENTS)
  agents_static (A,)   static objects (highway-env Obstacle) rather than vehicles
  agents_future (A, 40, 3), agents_future_valid (A, 40): simulated futures (non-reactive log)
  lanes (L, 20, 2)     lane centreline chunks, 20 points 1 m apart (model tokens)
  lanes_meta (L, 3)    width, junction flag, number of valid points
  route (R, 2)         route centreline (1 m spacing) from 30 m behind to 250 m ahead
  dir_bits, centre_dm, junction: drivable-area rasters (see trajmoe.drive.geometry)
  route_idx            raster: nearest dense route point per cell (`geometry.rasterise_route`)
  prev_*               the frame 0.5 s earlier (what the planner saw then, with its rasters; no
                       futures), for EC (`prev_scene`); absent when t0 - 0.5 s has < 2 s of history
Attributes: scenario, domain (index in SCENARIOS), seed, t0 (step).
Files: `<out>/scenes/<scenario>_<seed>_<t0>.npz` (compressed); one JSON record per finished episode
in `<out>/episodes/` makes generation resumable; `<out>/manifest.json` lists the scenes.
Units: m, rad, m/s, m/s^2; steps of DT = 0.1 s. Legend: A agents, L lane tokens, R route points.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from trajmoe.drive import geometry as geo
from trajmoe.envs.highway import DT, SCENARIOS, HighwaySim
from trajmoe.io import DirLock, check_settings, remove_stale_temps, safe_relative
from trajmoe.io import DAMAGED_FILE_ERRORS, atomic_path, atomic_write_json, read_json
from trajmoe.parallel import worker_pool

HIST_STEPS = 20  # 2 s of history at 0.1 s
PREV_STEPS = 5  # the previous frame (EC: two plans 0.5 s apart) is this many steps before t0
FUTURE_STEPS = 40  # 4 s at 0.1 s (NAVSIM scoring resolution)
MAX_AGENTS = 32
AGENT_RADIUS = 100.0  # m
LANE_CHUNK = 20  # points per lane token (1 m apart)
MAX_LANES = 96
MAP_RADIUS = 200.0
COMMANDS = ("left", "straight", "right", "unknown")


@dataclass(frozen=True)
class SceneGenConfig:
    """Which scenes an episode yields: episode length, first scene step, stride (steps of 0.1 s)
    and the first episode seed. Raises ValueError on a first_t0 below 2 s of history, a stride
    < 1, or episodes too short for one 4 s future."""

    episode_steps: int = 120  # 12 s episodes
    first_t0: int = HIST_STEPS + PREV_STEPS
    stride: int = 20  # one scene every 2 s
    seed: int = 0

    def __post_init__(self):
        if self.first_t0 < HIST_STEPS:
            raise ValueError(f"first_t0 must be >= {HIST_STEPS} (2 s of history), got {self.first_t0}")
        if self.stride < 1:
            raise ValueError(f"stride must be >= 1, got {self.stride}")
        if self.episode_steps < self.first_t0 + FUTURE_STEPS:
            raise ValueError(f"episode_steps must be >= first_t0 + {FUTURE_STEPS}, got {self.episode_steps}")

    def t0s(self) -> list[int]:
        """Scene times (steps) of an episode: first_t0, first_t0 + stride, ... with 4 s of future left."""
        return list(range(self.first_t0, self.episode_steps - FUTURE_STEPS + 1, self.stride))


def driving_command(route_ego: np.ndarray) -> int:
    """NAVSIM-style command from the route ahead: heading of the route 30-45 m past the ego.

    route_ego: (R, 2) route centreline in the ego frame (m). Returns 0 left (> 0.5 rad), 1 straight,
    2 right (< -0.5 rad), 3 unknown (fewer than 3 route points); indices into COMMANDS.
    """
    if len(route_ego) < 3:
        return 3
    s = geo.polyline_arclength(route_ego)
    s0 = geo.project_on_polyline(np.zeros(2), route_ego)
    a = np.searchsorted(s, s0 + 30.0)
    b = np.searchsorted(s, s0 + 45.0)
    if b >= len(route_ego) or b <= a:
        a, b = max(0, len(route_ego) - 6), len(route_ego) - 1
    d = route_ego[b] - route_ego[a]
    ang = np.arctan2(d[1], d[0])
    if ang > 0.5:
        return 0
    if ang < -0.5:
        return 2
    return 1


def _lane_tokens(lanes_ego: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """Dense lanes (0.2 m) -> (L, LANE_CHUNK, 2) chunks 1 m apart, (L, 3) meta; nearest chunks first."""
    chunks, meta, dist = [], [], []
    for lane in lanes_ego:
        pts = lane["xy"][::5]
        w = lane["width"][::5]
        for i in range(0, max(len(pts) - 1, 1), LANE_CHUNK - 1):
            c = pts[i : i + LANE_CHUNK]
            if len(c) < 2:
                continue
            inside = (c[:, 0] > geo.X_RANGE[0] - 20) & (c[:, 0] < geo.X_RANGE[1] + 20) & (np.abs(c[:, 1]) < geo.Y_RANGE[1] + 20)
            if not inside.any():
                continue
            pad = np.zeros((LANE_CHUNK, 2))
            pad[: len(c)] = c
            pad[len(c) :] = c[-1]
            chunks.append(pad)
            meta.append([float(w[i]), float(lane["junction"]), float(len(c))])
            dist.append(np.linalg.norm(c, axis=-1).min())
    if not chunks:
        return np.zeros((0, LANE_CHUNK, 2), np.float32), np.zeros((0, 3), np.float32)
    order = np.argsort(dist)[:MAX_LANES]
    return np.asarray(chunks, np.float32)[order], np.asarray(meta, np.float32)[order]


def simulate_episode(scenario: str, seed: int, cfg: SceneGenConfig) -> list[dict]:
    """Run one episode with the expert ego and cut it into scenes (dicts of arrays, module docstring).

    Args:
        scenario: one of SCENARIOS; seed: highway-env seed; cfg: episode length and scene times.

    Returns:
        Scenes at cfg.t0s() in time order, without those where the expert crashed within the
        window t0 - 2 s .. t0 + 4 s.
    """
    sim = HighwaySim(scenario, seed)
    t0s = set(cfg.t0s())
    states, snaps = [], {}
    for t in range(cfg.episode_steps + 1):
        st = sim.state()
        states.append(st)
        if t in t0s or t + PREV_STEPS in t0s:
            origin = np.array([st["xy"][0, 0], st["xy"][0, 1], st["heading"][0]])
            lanes = sim.lanes(st["xy"][0], MAP_RADIUS, step=0.2)
            snaps[t] = {"origin": origin, "lanes": lanes, "route": sim.route_polyline()}
        if t < cfg.episode_steps:
            sim.step()
    scenes = []
    for t0 in sorted(t0s):  # futures are known only now
        sc = _cut_scene(states, t0, snaps[t0])
        if sc is not None and t0 - PREV_STEPS >= HIST_STEPS:
            sc.update(previous_frame(states, t0 - PREV_STEPS, snaps[t0 - PREV_STEPS]))
        if sc is not None:
            sc.update(scenario=scenario, domain=SCENARIOS.index(scenario), seed=seed, t0=t0)
            scenes.append(sc)
    return scenes


def _track(states: list[dict], tid: int, steps: range) -> tuple[np.ndarray, np.ndarray]:
    """(len(steps), 4) x, y, heading, speed of track `tid`, and (len(steps),) validity."""
    out = np.zeros((len(steps), 4))
    valid = np.zeros(len(steps), bool)
    for i, t in enumerate(steps):
        hit = np.nonzero(states[t]["ids"] == tid)[0]
        if len(hit):
            j = hit[0]
            out[i] = [*states[t]["xy"][j], states[t]["heading"][j], states[t]["speed"][j]]
            valid[i] = True
    return out, valid


def _cut_scene(states: list[dict], t0: int, snap: dict) -> dict | None:
    window = range(t0 - HIST_STEPS, t0 + FUTURE_STEPS + 1)
    if any(states[t]["crashed"][0] for t in window):
        return None  # the expert crashed: not a demonstration
    scene, cand = current_fields(states, t0, snap)
    origin = snap["origin"]
    ego, ok = _track(states, states[t0]["ids"][0], range(t0 + 1, t0 + FUTURE_STEPS + 1))
    assert ok.all()
    xy, h = geo.to_frame(ego[:, :2], ego[:, 2], origin)
    st = states[t0]
    fut_a = np.zeros((len(cand), FUTURE_STEPS, 3))
    fut_v = np.zeros((len(cand), FUTURE_STEPS), bool)
    for i, j in enumerate(cand):
        tr, val = _track(states, st["ids"][j], range(t0 + 1, t0 + FUTURE_STEPS + 1))
        if st["static"][j]:
            tr[:] = [*st["xy"][j], st["heading"][j], 0.0]
            val[:] = True
        txy, th = geo.to_frame(tr[:, :2], tr[:, 2], origin)
        fut_a[i] = np.concatenate([txy, th[:, None]], -1)
        fut_v[i] = val
    lanes_ego = _lanes_to_frame(snap["lanes"], origin)
    scene.update(
        expert=np.concatenate([xy, h[:, None]], -1).astype(np.float32),
        agents_future=fut_a.astype(np.float32),
        agents_future_valid=fut_v,
        route_idx=geo.rasterise_route(scene["route"]),
        **geo.rasterise_lanes(lanes_ego),
    )
    return scene


def previous_frame(states: list[dict], t: int, snap: dict) -> dict:
    """The frame 0.5 s before t0 as 'prev_*' fields: what the planner saw then (`current_fields`)
    and its rasters, in that frame's own ego frame (NAVSIM's EC compares the plans of two frames)."""
    prev, _ = current_fields(states, t, snap)
    prev.update(geo.rasterise_lanes(_lanes_to_frame(snap["lanes"], snap["origin"])),
                route_idx=geo.rasterise_route(prev["route"]))
    return {f"prev_{k}": v for k, v in prev.items()}


def prev_scene(scene: dict) -> dict | None:
    """The previous frame of `scene` as a scene dict (no futures), or None when it has none."""
    if "prev_ego_state" not in scene:
        return None
    out = {k[5:]: v for k, v in scene.items() if k.startswith("prev_")}
    out.update(scenario=scene["scenario"], domain=scene["domain"], expert=np.zeros((FUTURE_STEPS, 3), np.float32))
    return out


def _lanes_to_frame(lanes, origin: np.ndarray) -> list[dict]:
    out = []
    for lane in lanes:
        lxy, lh = geo.to_frame(lane.xy, lane.heading, origin)
        out.append({"xy": lxy, "heading": lh, "width": lane.width, "junction": lane.junction})
    return out


def current_fields(states: list[dict], t0: int, snap: dict) -> tuple[dict, list[int]]:
    """What is known at t0 (no futures): ego history/state, command, agents, lane tokens, route.

    `states` needs steps t0-20 .. t0 (the closed loop builds the same fields live)."""
    origin = snap["origin"]
    ego_id = states[t0]["ids"][0]
    ego, ok = _track(states, ego_id, range(t0 - HIST_STEPS, t0 + 1))
    assert ok.all()
    xy, h = geo.to_frame(ego[:, :2], ego[:, 2], origin)
    hist = np.concatenate([xy, h[:, None]], -1)  # (21, 3)
    vel = (hist[-1] - hist[-2])[:2] / DT
    vel_prev = (hist[-2] - hist[-3])[:2] / DT
    acc = (vel - vel_prev) / DT
    ego_state = np.array([ego[-1, 3], *vel, *acc])
    st = states[t0]
    d = np.linalg.norm(st["xy"] - st["xy"][0], axis=-1)
    cand = [int(j) for j in np.argsort(d) if j != 0 and d[j] < AGENT_RADIUS][:MAX_AGENTS]
    agents = np.zeros((len(cand), 7))
    for i, j in enumerate(cand):
        axy, ah = geo.to_frame(st["xy"][j], st["heading"][j], origin)
        v = st["speed"][j] * np.array([np.cos(ah), np.sin(ah)])
        agents[i] = [*axy, ah, *v, st["length"][j], st["width"][j]]
    lane_tok, lane_meta = _lane_tokens(_lanes_to_frame(snap["lanes"], origin))
    route = geo.to_frame(snap["route"], None, origin)
    scene = {
        "ego_hist": hist.astype(np.float32),
        "ego_state": ego_state.astype(np.float32),
        "command": np.int64(driving_command(route)),
        "agents": agents.astype(np.float32),
        "agents_static": st["static"][cand].astype(bool) if cand else np.zeros(0, bool),
        "lanes": lane_tok,
        "lanes_meta": lane_meta,
        "route": route.astype(np.float32),
    }
    return scene, cand


# ---- files -----------------------------------------------------------------------------------
def scene_name(scene: dict) -> str:
    """File stem of a scene: `<scenario>_<seed:06d>_<t0:03d>`."""
    return f"{scene['scenario']}_{int(scene['seed']):06d}_{int(scene['t0']):03d}"


def save_scene(path: str | os.PathLike, scene: dict) -> None:
    """Write a scene as a compressed .npz, atomically; keys starting with '_' (caches) are skipped."""
    arrays = {k: np.asarray(v) for k, v in scene.items() if not k.startswith("_")}  # '_' = scorer caches
    with atomic_path(path, suffix=".tmp.npz") as tmp:
        np.savez_compressed(tmp, **arrays)


def scene_path(data_dir: str | os.PathLike, item: dict) -> Path:
    """`data_dir/scenes/<name>.npz` for a manifest entry; a name that leaves the folder is refused
    (ValueError naming the manifest)."""
    name = item.get("name") if isinstance(item, dict) else None
    if not isinstance(name, str) or "/" in name:
        raise ValueError(f"{Path(data_dir) / 'manifest.json'}: scene name {name!r} must be a plain file name")
    return safe_relative(Path(data_dir) / "scenes", f"{name}.npz", f"{Path(data_dir) / 'manifest.json'}")


def load_scene(path: str | os.PathLike) -> dict:
    """A scene file -> dict of arrays; a missing, truncated or damaged file is a one-line error naming it.

    Raises:
        FileNotFoundError: no such file; ValueError: a damaged file, a missing key or NaN/inf values.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"missing scene file: {path}")
    try:
        with np.load(path, allow_pickle=False) as z:
            out = {k: z[k] for k in z.files}
    except DAMAGED_FILE_ERRORS as e:
        first = (str(e).splitlines() or [type(e).__name__])[0]
        raise ValueError(f"corrupt scene file {path} (truncated or damaged): {first}") from None
    missing = [k for k in ("scenario", "domain", "seed", "t0", "command") if k not in out]
    if missing:
        raise ValueError(f"scene file {path}: key {missing[0]!r} is missing")
    bad = [k for k, v in out.items() if v.dtype.kind == "f" and not np.isfinite(v).all()]
    if bad:
        raise ValueError(f"scene file {path}: key {bad[0]!r} contains NaN or inf")
    out["scenario"] = str(out["scenario"])
    for k in ("domain", "seed", "t0", "command", "prev_command"):
        if k in out:
            out[k] = int(out[k])
    return out


def _episode_job(args: tuple) -> dict:
    scenario, seed, cfg_dict, out = args
    cfg = SceneGenConfig(**cfg_dict)
    t = time.perf_counter()
    scenes = simulate_episode(scenario, seed, cfg)
    names = []
    for sc in scenes:
        name = scene_name(sc)
        save_scene(Path(out) / "scenes" / f"{name}.npz", sc)
        names.append(name)
    rec = {"scenario": scenario, "seed": seed, "scenes": names, "seconds": time.perf_counter() - t}
    atomic_write_json(Path(out) / "episodes" / f"{scenario}_{seed:06d}.json", rec)
    return rec


def generate(out: str | os.PathLike, scenarios: list[str], n_scenes: int, cfg: SceneGenConfig,
             workers: int = 1, progress: bool = True, verify: bool = False) -> dict:
    """Generate about `n_scenes` scenes split evenly over `scenarios`; resumable; writes the manifest.

    Episode seeds are cfg.seed, cfg.seed+1, ... per scenario, so results do not depend on `workers`;
    the manifest keeps exactly the first ceil(n / len(scenarios)) scenes of each scenario in seed order.
    The folder is locked (one generator at a time), records its settings in generation.json (a rerun
    with another stride / seed / episode length is refused naming the keys), and loses the
    temporaries of a killed run. `verify` reads every scene of the finished episodes; an episode
    with a damaged scene is simulated again. Returns the manifest written.

    Raises:
        ValueError: an unknown scenario, n_scenes or workers < 1, or settings that differ from the
            folder's earlier run (naming the keys).
    """
    for s in scenarios:
        if s not in SCENARIOS:
            raise ValueError(f"unknown scenario {s!r}; choose from {', '.join(SCENARIOS)}")
    if n_scenes < 1:
        raise ValueError(f"--scenes must be >= 1, got {n_scenes}")
    if workers < 1:
        raise ValueError(f"--workers must be >= 1, got {workers}")
    out = Path(out)
    (out / "episodes").mkdir(parents=True, exist_ok=True)
    per = -(-n_scenes // len(scenarios))
    per_ep = len(cfg.t0s())
    cfg_dict = {"episode_steps": cfg.episode_steps, "first_t0": cfg.first_t0, "stride": cfg.stride, "seed": cfg.seed}
    with DirLock.acquire(out, what="scene folder"):
        for d in (out, out / "scenes", out / "episodes"):
            remove_stale_temps(d)
        old = out / "manifest.json"
        fallback = {"config": read_json(old).get("config")} if old.is_file() else None
        check_settings(out / "generation.json", {"config": cfg_dict}, "scene set", fallback=fallback)
        return _generate_locked(out, scenarios, per, per_ep, cfg_dict, workers, progress, verify)


def _episode_ok(out: Path, rec: dict) -> bool:
    """Every scene of an episode record reads back (used by --verify)."""
    try:
        for name in rec["scenes"]:
            load_scene(out / "scenes" / f"{name}.npz")
    except (ValueError, FileNotFoundError, KeyError, TypeError):
        return False
    return True


def _have(records: list[dict]) -> int:
    return sum(len(r["scenes"]) for r in records)


def _schedule(out: Path, records: dict[str, list[dict]], next_seed: dict[str, int], per: int, per_ep: int,
              cfg_dict: dict, verify: bool) -> list[tuple]:
    """Episodes still to simulate for every scenario short of `per` scenes (finished episode
    records found on disk are taken into `records` instead; with `verify` only if they read back)."""
    jobs = []
    for s, recs in records.items():
        need = per - _have(recs)
        # Schedule enough episodes for the remaining scenes (some scenes get dropped).
        for _ in range(0 if need <= 0 else max(1, -(-need // max(per_ep, 1)))):
            seed = next_seed[s]
            next_seed[s] += 1
            rec_path = out / "episodes" / f"{s}_{seed:06d}.json"
            rec = read_json(rec_path) if rec_path.is_file() else None
            if rec is not None and (not verify or _episode_ok(out, rec)):
                recs.append(rec)
            else:
                jobs.append((s, seed, cfg_dict, str(out)))
    return jobs


def _generate_locked(out: Path, scenarios: list[str], per: int, per_ep: int, cfg_dict: dict, workers: int,
                     progress: bool, verify: bool) -> dict:
    from rich.progress import Progress

    records: dict[str, list[dict]] = {s: [] for s in scenarios}
    next_seed = {s: cfg_dict["seed"] for s in scenarios}
    t_start = time.perf_counter()
    n_new = 0
    with worker_pool(workers) as imap, Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task("scenes", total=per * len(scenarios))
        while True:
            jobs = _schedule(out, records, next_seed, per, per_ep, cfg_dict, verify)
            if not jobs and all(_have(records[s]) >= per for s in scenarios):
                break
            for rec in imap(_episode_job, jobs, ordered=False):
                records[rec["scenario"]].append(rec)
                n_new += len(rec["scenes"])
                bar.update(task, completed=sum(min(per, _have(records[s])) for s in scenarios))
    return _write_manifest(out, records, per, cfg_dict, n_new, time.perf_counter() - t_start)


def _write_manifest(out: Path, records: dict[str, list[dict]], per: int, cfg_dict: dict, n_new: int,
                    seconds: float) -> dict:
    """The first `per` scenes of each scenario in seed order -> out/manifest.json (returned)."""
    listed = []
    for s, recs in records.items():
        names = [n for r in sorted(recs, key=lambda r: r["seed"]) for n in r["scenes"]]
        listed += [{"name": n, "scenario": s, "domain": SCENARIOS.index(s)} for n in names[:per]]
    manifest = {
        "format": "trajmoe-drive-scenes/1",
        "scenarios": list(records),
        "n_scenes": len(listed),
        "config": cfg_dict,
        "conventions": {"dt": DT, "history_steps": HIST_STEPS, "future_steps": FUTURE_STEPS,
                        "frame": "ego at t0: x forward, y left, heading counter-clockwise",
                        "raster": {"res": geo.RES, "x_range": geo.X_RANGE, "y_range": geo.Y_RANGE}},
        "scenes": listed,
        "generated_now": n_new,
        "seconds_now": seconds,
        "scenes_per_second_now": n_new / seconds if seconds > 0 and n_new else None,
    }
    atomic_write_json(out / "manifest.json", manifest)
    return manifest


def read_manifest(data_dir: str | os.PathLike) -> dict:
    """`data_dir/manifest.json` of a scene folder.

    Raises:
        FileNotFoundError: no such folder (or manifest); ValueError: not a trajmoe drive scene manifest.
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise FileNotFoundError(f"missing scene directory: {data_dir}")
    m = read_json(data_dir / "manifest.json")
    if m.get("format") != "trajmoe-drive-scenes/1":
        raise ValueError(f"{data_dir / 'manifest.json'} is not a trajmoe drive scene manifest")
    return m


def load_scenes(data_dir: str | os.PathLike, limit: int | None = None) -> list[dict]:
    """The folder's scenes, loaded (`load_scene`): the files of `select_scene_paths(data_dir, limit)`."""
    return [load_scene(p) for p in select_scene_paths(data_dir, limit)]


def select_scene_paths(data_dir: str | os.PathLike, limit: int | None = None) -> list[Path]:
    """The folder's scene files: all when `limit` is None or 0, else `limit` of them taken round-robin
    over the scenarios (the manifest lists scenarios in blocks, so a plain prefix would hold one
    scenario only), each scenario's in manifest order. ValueError on a negative limit."""
    if limit is not None and limit < 0:
        raise ValueError(f"scene limit must be >= 0 (0 = all), got {limit}")
    m = read_manifest(data_dir)
    items = m["scenes"]
    if limit:  # rank each scene by its place within its scenario, then keep the `limit` lowest ranks
        seen: dict[str, int] = {}
        rank = []
        for i, it in enumerate(items):
            sc = it.get("scenario", "")
            rank.append((seen.get(sc, 0), i))
            seen[sc] = seen.get(sc, 0) + 1
        items = [items[i] for _, i in sorted(sorted(rank)[:limit], key=lambda r: r[1])]
    return [scene_path(data_dir, it) for it in items]
