"""What a MetaWorld dataset holds: domain specs, the sorted (sharded) work list, and benchmark
YAML files (several domains + the held-out evaluation variations). `trajmoe.data.generate` runs them.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from trajmoe.envs.metaworld import (
    EVAL_VARIATION_START,
    TASKS,
    VIEWS,
    assert_train_variation,
    check_camera,
    check_task,
    check_views,
)
from trajmoe.envs.tracks import TrackLabelConfig
from trajmoe.config import check_keys, from_dict, load_yaml, to_dict
from trajmoe.configs import find_config
from trajmoe.data.atm_hdf5 import MANIFEST
from trajmoe.io import atomic_write_json, read_json

GENERATOR_VERSION = "trajmoe-metaworld-1"
ATTEMPT_STRIDE = 100_000  # attempt k of episode i uses variation variation_seed + i + k * STRIDE
MAX_ATTEMPTS = 3


@dataclass(frozen=True)
class DomainSpec:
    """One domain of a dataset: which tasks, how many episodes each, how they look."""

    name: str
    tasks: tuple[str, ...]
    episodes: int
    camera: str = "corner"
    views: tuple[str, ...] = VIEWS
    action_free: bool = False
    variation_seed: int = 0
    visual_variation: bool = False
    image_size: int = 128
    max_steps: int | None = None  # None: the task's episode limit (trajmoe.envs.metaworld.episode_limit)
    keep_failed: bool = False
    attempts: int = MAX_ATTEMPTS
    track: TrackLabelConfig = field(default_factory=TrackLabelConfig)
    # Oracle tracks (trajmoe.envs.oracle): per frame, the exact future tracks of the policy's fixed
    # query grid of each size listed here, over `oracle_horizon` steps of the scripted expert.
    oracle_points: tuple[int, ...] = ()
    oracle_horizon: int = 16

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name or self.name.startswith("."):
            raise ValueError(f"domain name must be a plain folder name, got {self.name!r}")
        tasks = tuple(self.tasks)
        if not tasks:
            raise ValueError(f"domain {self.name!r}: tasks must not be empty")
        for t in tasks:
            check_task(t)
        object.__setattr__(self, "tasks", tasks)
        check_camera(self.camera)
        object.__setattr__(self, "views", check_views(self.views))
        for key in ("episodes", "image_size", "max_steps", "attempts"):
            if getattr(self, key) is not None and getattr(self, key) <= 0:
                raise ValueError(f"domain {self.name!r}: {key} must be positive, got {getattr(self, key)!r}")
        if self.variation_seed < 0:
            raise ValueError(f"domain {self.name!r}: variation_seed must be >= 0, got {self.variation_seed!r}")
        last = self.variation_seed + self.episodes - 1 + (self.attempts - 1) * ATTEMPT_STRIDE
        if last >= EVAL_VARIATION_START:  # held-out evaluation variations never enter training data
            raise ValueError(
                f"domain {self.name!r}: variations up to {last} would reach the held-out evaluation range "
                f"(>= {EVAL_VARIATION_START}); lower variation_seed/episodes"
            )
        object.__setattr__(self, "oracle_points", tuple(self.oracle_points))
        if any(not isinstance(n, int) or not 1 <= n <= 1024 for n in self.oracle_points):
            raise ValueError(f"domain {self.name!r}: oracle_points must be integers in 1..1024, got {list(self.oracle_points)!r}")
        if not isinstance(self.oracle_horizon, int) or not 1 <= self.oracle_horizon <= 64:
            raise ValueError(f"domain {self.name!r}: oracle_horizon must be an integer in 1..64, got {self.oracle_horizon!r}")
        if self.max_steps is not None and self.max_steps > 500:
            raise ValueError(f"domain {self.name!r}: max_steps must be <= 500 (MetaWorld's limit), got {self.max_steps!r}")

    def variation(self, index: int, attempt: int) -> int:
        """Training variation of episode `index` at retry `attempt` (asserted to be a training variation, never a
        held-out one).
        """
        v = self.variation_seed + index + attempt * ATTEMPT_STRIDE
        assert_train_variation(v)
        return v

    def episode_seed(self, task: str, index: int) -> int:
        """Deterministic per-episode seed (track sampling, visual variation)."""
        return zlib.crc32(f"{self.name}/{task}/{index}/{self.variation_seed}".encode()) & 0x7FFFFFFF


@dataclass(frozen=True)
class WorkItem:
    """One episode to generate: its domain spec, task, index, and output folder."""
    spec: DomainSpec
    task: str
    index: int
    out_dir: str

    @property
    def path(self) -> Path:
        """OUT/<task>/demo_<index>.hdf5."""
        return Path(self.out_dir) / self.task / f"demo_{self.index}.hdf5"

    @property
    def failed_path(self) -> Path:
        """OUT/<task>/demo_<index>.failed.json (written when every attempt failed)."""
        return Path(self.out_dir) / self.task / f"demo_{self.index}.failed.json"


def parse_shard(text: str | None) -> tuple[int, int]:
    """'I/N' -> (I, N) with 0 <= I < N; None or '' -> (0, 1).

    Raises:
        ValueError: not of the form I/N, or I out of range (names the --shard value).
    """
    if text in (None, ""):
        return (0, 1)
    try:
        i, n = (int(x) for x in str(text).split("/"))
    except ValueError:
        raise ValueError(f"--shard expects I/N (e.g. 0/4), got {text!r}") from None
    if n <= 0 or not (0 <= i < n):
        raise ValueError(f"--shard I/N needs N > 0 and 0 <= I < N, got {text!r}")
    return (i, n)


def work_items(specs: Iterable[tuple[DomainSpec, str]], shard: tuple[int, int] = (0, 1)) -> list[WorkItem]:
    """Sorted work list (domain, task, index) over (spec, out_dir) pairs, then this shard's part."""
    items = [WorkItem(spec, task, i, out) for spec, out in specs for task in spec.tasks for i in range(spec.episodes)]
    items.sort(key=lambda w: (w.out_dir, w.spec.name, w.task, w.index))
    i, n = shard
    return items[i::n]


# ---------------------------------------------------------------------------------------------
# benchmark YAML


@dataclass(frozen=True)
class Benchmark:
    """A benchmark: training domains (task lists, episode counts, variations) and held-out evaluation tasks and
    variations.

    Raises:
        ValueError: repeated domain names, or an evaluation variation that is not held out.
    """
    name: str
    domains: tuple[DomainSpec, ...]
    eval_tasks: tuple[str, ...]
    eval_variations: tuple[int, ...]
    description: str = ""

    def __post_init__(self) -> None:
        names = [d.name for d in self.domains]
        if len(set(names)) != len(names):
            raise ValueError(f"benchmark {self.name!r}: domain names repeat: {names}")
        for v in self.eval_variations:
            if v < EVAL_VARIATION_START:
                raise ValueError(f"benchmark {self.name!r}: eval variation {v} is not held out (must be >= {EVAL_VARIATION_START})")
        train = {d.variation(i, k) for d in self.domains for i in range(d.episodes) for k in range(d.attempts)}
        assert not train & set(self.eval_variations), "evaluation variations overlap training variations"




def load_benchmark(path: str | Path) -> Benchmark:
    """Parse a benchmark YAML (a file, or a packaged one by path `configs/benchmarks/metaworld.yaml`
    or name `metaworld`) with strict keys."""
    path = find_config(path, "benchmarks")
    raw = load_yaml(path)
    allowed = {"name", "description", "defaults", "domains", "evaluation"}
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise ValueError(f"{path}: unknown key(s) {unknown}; valid keys: {sorted(allowed)}")
    defaults = raw.get("defaults") or {}
    if not isinstance(defaults, dict):
        raise ValueError(f"{path}: key 'defaults' must be a mapping")
    domains = []
    for i, d in enumerate(raw.get("domains") or []):
        if not isinstance(d, dict):
            raise ValueError(f"{path}: key 'domains[{i}]' must be a mapping")
        merged = {**defaults, **d}
        if merged.get("tasks") in ("all", ["all"]):
            merged["tasks"] = list(TASKS)
        if isinstance(merged.get("exclude_tasks"), list):
            excl = set(merged.pop("exclude_tasks"))
            merged["tasks"] = [t for t in merged["tasks"] if t not in excl]
        check_keys(DomainSpec, merged, where=f"{path} domains[{i}]")
        try:
            domains.append(from_dict(DomainSpec, merged, where=f"{path} domains[{i}]"))
        except TypeError as e:
            raise ValueError(f"{path}: domains[{i}]: {e}") from None
    if not domains:
        raise ValueError(f"{path}: key 'domains' is missing or empty")
    ev = raw.get("evaluation") or {}
    eval_tasks = tuple(ev.get("tasks") or domains[0].tasks)
    for t in eval_tasks:
        check_task(t)
    start = int(ev.get("variation_start", EVAL_VARIATION_START))
    n = int(ev.get("episodes_per_task", 20))
    if n <= 0:
        raise ValueError(f"{path}: evaluation.episodes_per_task must be positive, got {n}")
    return Benchmark(name=str(raw.get("name", path.stem)), domains=tuple(domains), eval_tasks=eval_tasks,
                     eval_variations=tuple(range(start, start + n)), description=str(raw.get("description", "")))


def write_benchmark_manifest(out: Path, bench: Benchmark) -> dict[str, Any]:
    """Write OUT/manifest.json (benchmark, per-domain episode / step counts from each domain's manifest,
    evaluation split); returns it.
    """
    domains, counts = {}, {}
    for d in bench.domains:
        domains[d.name] = d.name
        mp = out / d.name / MANIFEST
        m = read_json(mp) if mp.is_file() else {"num_episodes": 0, "num_steps": 0}
        counts[d.name] = {"episodes": m["num_episodes"], "steps": m["num_steps"], "action_free": d.action_free, "camera": d.camera,
                          "tasks": len(d.tasks), "visual_variation": d.visual_variation}
    manifest = {
        "format": "trajmoe-benchmark",
        "name": bench.name,
        "description": bench.description,
        "generator_version": GENERATOR_VERSION,
        "domains": domains,
        "counts": counts,
        "evaluation": {"tasks": list(bench.eval_tasks), "variations": list(bench.eval_variations)},
        "spec": [to_dict(d) for d in bench.domains],
    }
    atomic_write_json(out / MANIFEST, manifest)
    return manifest
