"""The specs that ship with the package: experiment specs (`experiments/`), MetaWorld benchmarks
(`benchmarks/`) and driving-planner configs (`drive/`), installed with trajmoe as package data so
that a non-editable install runs `trajmoe demo` and every spec.

Users name them by path as before (`configs/experiments/tab1f.yaml`, or
`trajmoe/configs/experiments/tab1f.yaml` from a checkout) or by short name (`tab1f` where the
kind is known); `find_config` turns any of these into the file.
"""

from __future__ import annotations

from pathlib import Path

PACKAGED = Path(__file__).resolve().parent
KINDS = ("experiments", "benchmarks", "drive")


def find_config(path: str | Path, kind: str | None = None) -> Path:
    """The file a spec argument names: `path` itself when it is a file; else the packaged file for
    `configs/<kind>/<file>` (any prefix before `configs/`) or, with `kind`, a bare name such as
    `tab1f` / `tab1f.yaml`. Returns `path` unchanged when nothing matches, so the caller's
    missing-file error names what the user typed. A folder of the same name (e.g. the experiment's
    own --out folder `tab3/` in the working directory) does not hide the packaged spec."""
    p = Path(path)
    if p.is_file() or p.is_absolute():
        return p
    parts = p.parts
    candidates = []
    if "configs" in parts:
        candidates.append(PACKAGED.joinpath(*parts[len(parts) - parts[::-1].index("configs"):]))
    if kind is not None and len(parts) == 1:
        candidates.append(PACKAGED / kind / (p.name if p.suffix == ".yaml" else f"{p.name}.yaml"))
    return next((c for c in candidates if c.is_file()), p)
