"""Reading measured values out of an experiment's results (shared by tables and verdicts)."""

from __future__ import annotations

import math
from typing import Any


def finite_number(v: Any) -> bool:
    """True for a finite int / float (not a bool): a measured value a table or verdict can use."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def lookup(obj: Any, path: str) -> Any:
    """'metrics.overall.track_mse' -> obj['metrics']['overall']['track_mse'] (None if absent).

    A `*` part maps the rest of the path over a dict's values in their order (a list's items), e.g.
    'routing.*.busiest_share.id' -> [share of layer0, layer2, ...]; entries without the rest are dropped
    (None if none has it)."""
    parts = path.split(".")
    for i, part in enumerate(parts):
        if part == "*":
            items = obj.values() if isinstance(obj, dict) else obj if isinstance(obj, list) else []
            rest = ".".join(parts[i + 1:])
            found = [v for v in (lookup(x, rest) if rest else x for x in items) if v is not None]
            return found or None
        if isinstance(obj, dict) and part in obj:
            obj = obj[part]
        elif isinstance(obj, list) and part.isdigit() and int(part) < len(obj):
            obj = obj[int(part)]
        else:
            return None
    return obj


def success_records(seeds: dict, col: dict) -> list[tuple[int, int]]:
    """[(successes, episodes) per seed] for a `kind: success` column."""
    out = []
    for _seed, steps in sorted(seeds.items()):
        rec = steps.get(col["step"])
        obj = rec.get("json") if rec else None
        if col.get("path"):
            obj = lookup(obj, col["path"])
        if not isinstance(obj, dict) or not isinstance(obj.get("episodes"), int) or obj["episodes"] < 1:
            continue
        k = obj.get("successes")
        if not isinstance(k, int):  # results written before `successes` existed
            k = round(float(obj.get("success_rate", 0.0)) * obj["episodes"])
        out.append((int(k), int(obj["episodes"])))
    return out
