"""Verdicts: one claim, two measured quantities, and a one-word answer decided by an interval.

A spec's `verdicts:` list turns its results into the plain-language lines a reader wants first
("did the model beat the trivial baseline?", "did MoE beat dense?"). Each entry:

    - claim: "MoE + OOD beats dense + OOD (Tra-MoE paper, Tab. 1f)"
      paper: "success 62.4 vs 56.8 %"            # optional: the paper's figure
      a: {variant: moe-ID+OOD, step: track_eval, path: metrics.overall.track_mse, label: MoE,
          ci: metrics.overall.track_mse_ci95}     # optional per-seed 95 % half-width
      b: {variant: dense-ID+OOD, step: track_eval, path: metrics.overall.track_mse, label: dense}
      better: lower                               # or higher
      words: [reproduced, contradicted, inconclusive]   # optional (this is the default)

`b` may instead be a constant: `{value: 0, label: "no motion"}`. An operand with `kind: success`
reads success records (`successes`, `episodes`, as `trajmoe eval policy --json` writes; `path` to
a sub-record, empty for the root) and is compared by pooled Wilson 95 % intervals.

Decision (difference D = mean(a) - mean(b), signed so that > 0 favours the claim):
- success operands: the claim holds if the two Wilson intervals do not overlap in its favour, is
  contradicted if they do not overlap against it, else inconclusive;
- numbers: half-width H from the per-seed intervals given (`ci`; combined as independent:
  sqrt(sum of squared half-widths) / seeds) and, with >= 3 seeds, from Student's t over the
  per-seed paired differences; the larger H is used. |D| > H decides; otherwise inconclusive. With
  no interval at all (one or two seeds, no `ci`) the verdict is inconclusive and says why.
"""

from __future__ import annotations

import math
from typing import Any

from .values import finite_number, lookup, success_records

DEFAULT_WORDS = ("reproduced", "contradicted", "inconclusive")


def check_verdicts(raw: Any, where: str) -> list[dict]:
    """Validate a spec's `verdicts:` list -> list of dicts; ValueError naming the entry and key."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise ValueError(f"{where}: verdicts must be a list, got {type(raw).__name__}")
    for i, v in enumerate(raw):
        w = f"{where}: verdicts[{i}]"
        if not isinstance(v, dict) or not isinstance(v.get("claim"), str):
            raise ValueError(f"{w} needs a 'claim' string")
        unknown = sorted(set(v) - {"claim", "paper", "a", "b", "better", "words"})
        if unknown:
            raise ValueError(f"{w}: unknown key(s) {unknown}")
        if v.get("better") not in ("lower", "higher"):
            raise ValueError(f"{w}.better must be 'lower' or 'higher', got {v.get('better')!r}")
        for side in ("a", "b"):
            op = v.get(side)
            if not isinstance(op, dict):
                raise ValueError(f"{w}.{side} must be a mapping")
            if "value" in op:
                if not isinstance(op["value"], (int, float)):
                    raise ValueError(f"{w}.{side}.value must be a number, got {op['value']!r}")
            elif not all(isinstance(op.get(k), str) for k in ("variant", "step")):
                raise ValueError(f"{w}.{side} needs 'variant' and 'step' (or a constant 'value')")
            elif op.get("kind") != "success" and not isinstance(op.get("path"), str):
                raise ValueError(f"{w}.{side} needs a 'path'")
        if (v["a"].get("kind") == "success") != (v["b"].get("kind") == "success"):
            raise ValueError(f"{w}: compare a success rate with a success rate (both or neither `kind: success`)")
        words = v.get("words", DEFAULT_WORDS)
        if not (isinstance(words, (list, tuple)) and len(words) == 3 and all(isinstance(x, str) for x in words)):
            raise ValueError(f"{w}.words must be a list of 3 strings (holds, contradicted, inconclusive)")
    return raw


def _values(op: dict, results: dict) -> tuple[list[float], list[float]]:
    """Per-seed values and per-seed 95 % half-widths (empty if none) of one operand."""
    if "value" in op:
        return [float(op["value"])], []
    seeds = results["runs"].get(op["variant"], {})
    vals, cis = [], []
    for _seed, steps in sorted(seeds.items()):
        rec = steps.get(op["step"])
        obj = rec.get("json") if rec else None
        v = lookup(obj, op["path"])
        if finite_number(v):
            vals.append(float(v))
            c = lookup(obj, op["ci"]) if op.get("ci") else None
            if finite_number(c):
                cis.append(float(c))
    return vals, cis


def _t975(df: int) -> float:
    from scipy.stats import t

    return float(t.ppf(0.975, df))


def decide(v: dict, results: dict) -> dict:
    """One verdict entry -> {claim, paper, ours, verdict}; see the module doc for the rule."""
    words = tuple(v.get("words", DEFAULT_WORDS))
    sign = 1.0 if v["better"] == "higher" else -1.0
    a, b = v["a"], v["b"]
    la, lb = a.get("label", a.get("variant", "a")), b.get("label", b.get("variant", "b"))
    out = {"claim": v["claim"], "paper": v.get("paper", "")}
    if a.get("kind") == "success" or b.get("kind") == "success":
        return {**out, **_decide_success(a, b, la, lb, sign, results, words)}
    va, ca = _values(a, results)
    vb, cb = _values(b, results)
    if not va or not vb:
        return {**out, "ours": "not run", "verdict": "n/a"}
    ma, mb = sum(va) / len(va), sum(vb) / len(vb)
    d = sign * (ma - mb)
    hs = []
    if (ca and len(ca) == len(va)) or (cb and len(cb) == len(vb)):
        hs.append(math.sqrt(sum(c * c for c in ca) / len(va) ** 2 + sum(c * c for c in cb) / len(vb) ** 2))
    diffs = [x - vb[0] for x in va] if "value" in b else [x - y for x, y in zip(va, vb)]  # paired by seed
    n = len(diffs)
    if n >= 3:
        m = sum(diffs) / n
        sd = math.sqrt(sum((x - m) ** 2 for x in diffs) / (n - 1))
        hs.append(_t975(n - 1) * sd / math.sqrt(n))
    seeds = str(len(va)) if "value" in b or len(va) == len(vb) else f"{len(va)} vs {len(vb)}"
    fmt = _fmt_for(ma, mb)
    ours = f"{la} {ma:{fmt}} vs {lb} {mb:{fmt}}"
    if not hs:
        return {**out, "ours": ours + f" ({seeds} seed(s), no interval)", "verdict": words[2]}
    h = max(hs)
    ours += f" (difference {sign * d:+{fmt}} ± {h:{fmt}}, {seeds} seed(s))"
    word = words[0] if d > h else words[1] if d < -h else words[2]
    return {**out, "ours": ours, "verdict": word}


def _decide_success(a, b, la, lb, sign, results, words) -> dict:
    from ..eval.stats import wilson_interval

    recs = []
    for op in (a, b):  # both `kind: success` (check_verdicts)
        seeds = results["runs"].get(op["variant"], {})
        r = success_records(seeds, {"step": op["step"], "path": op.get("path", "")})
        recs.append((sum(x[0] for x in r), sum(x[1] for x in r)))
    if not recs[0][1] or not recs[1][1]:
        return {"ours": "not run", "verdict": "n/a"}
    (ka, na), (kb, nb) = recs
    (loa, hia), (lob, hib) = wilson_interval(ka, na), wilson_interval(kb, nb)
    ours = (f"{la} {100 * ka / na:.1f} % [{100 * loa:.1f}, {100 * hia:.1f}] vs {lb} {100 * kb / nb:.1f} % "
            f"[{100 * lob:.1f}, {100 * hib:.1f}] (n = {na}, {nb})")
    if sign > 0:
        word = words[0] if loa > hib else words[1] if hia < lob else words[2]
    else:
        word = words[0] if hia < lob else words[1] if loa > hib else words[2]
    return {"ours": ours, "verdict": word}


def _fmt_for(*xs: float) -> str:
    m = max(abs(x) for x in xs)
    return ".3e" if 0 < m < 1e-2 else ".3f"


def verdict_lines(verdicts: list[dict], results: dict) -> list[str]:
    """Markdown table (claim | paper | ours | verdict) of every verdict, for the top of report.md."""
    if not verdicts:
        return []
    rows = [decide(v, results) for v in verdicts]
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["verdict"]] = counts.get(r["verdict"], 0) + 1
    summary = "In short: " + ", ".join(f"{n} {w}" for w, n in counts.items()) + f" (of {len(rows)} claims)."
    # the plain-language version: which claims got which word, before the table's figures
    groups = [f"- **{w}**: " + "; ".join(r["claim"] for r in rows if r["verdict"] == w) + "." for w in counts]
    show_paper = any(r["paper"] for r in rows)
    head = "| claim | " + ("paper | " if show_paper else "") + "ours | verdict |"
    lines = [summary, "", *groups, "", head, "|---" * (4 if show_paper else 3) + "|"]
    for r in rows:
        lines.append(f"| {r['claim']} | " + (f"{r['paper']} | " if show_paper else "") + f"{r['ours']} | **{r['verdict']}** |")
    return lines
