"""Dataset folders of episode files: which episodes a directory holds (from its manifest.json, a
benchmark's domain folders, or ATM-style `<task>/demo_<i>.hdf5` files) and their metadata."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

from ..io import read_json, safe_relative
from .atm_hdf5 import MANIFEST, EpisodeMeta, open_episode



def list_episodes(directory: str | Path, success_only: bool = True) -> list[Path]:
    """Episode files of a dataset directory, from its manifest.json.

    A benchmark directory's manifest names domain sub-directories (`"domains": {name: subdir}`),
    each with its own manifest; a dataset manifest lists `"episodes": [{"path": ..., "success": ...}]`
    (paths relative to the directory). A directory without a manifest (e.g. ATM's preprocessed
    LIBERO folders, `<task>/demo_<i>.hdf5`) falls back to the `*.hdf5` files at most one folder
    down, sorted (not a recursive search: pointing at a parent folder must not mix datasets).
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"missing dataset directory: {directory}")
    mpath = directory / MANIFEST
    if not mpath.is_file():  # hidden files and folders (.ipynb_checkpoints/, temporaries) are skipped
        found = [*directory.glob("*.hdf5"), *directory.glob("*/*.hdf5")]
        return sorted(p for p in found if not any(part.startswith(".") for part in p.relative_to(directory).parts))
    manifest = read_json(mpath)
    if not isinstance(manifest, dict):
        raise ValueError(f"{mpath}: expected a JSON object")
    out: list[Path] = []
    for name, sub in (manifest.get("domains") or {}).items():
        out.extend(list_episodes(safe_relative(directory, sub, f"{mpath}: key 'domains.{name}'"), success_only=success_only))
    for i, rec in enumerate(manifest.get("episodes") or []):
        if not isinstance(rec, dict) or "path" not in rec:
            raise ValueError(f"{mpath}: key 'episodes[{i}].path' is missing")
        if success_only and not rec.get("success", True):
            continue
        out.append(safe_relative(directory, rec["path"], f"{mpath}: key 'episodes[{i}].path'"))
    return out


def iter_metas(paths: list[Path]) -> Iterator[EpisodeMeta]:
    """EpisodeMeta of each path, in order (each file opened, checked and closed); ValueError on a bad file."""
    for p in paths:
        with open_episode(p) as ep:
            yield ep.meta
