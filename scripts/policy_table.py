"""Closed-loop success of policy groups over seeds, with Wilson intervals and the paired difference to a
reference group (issue 23's converged policy table).

Usage: python scripts/policy_table.py REF=GLOB NAME=GLOB ...
  e.g. python scripts/policy_table.py "BC=results/issue23-policies/bc-s*/rollouts.json" \\
                                      "mask-grid16=results/issue23-policies/mask-on-grid16-s*/rollouts.json"

Each GLOB matches `trajmoe eval policy --json` records (RUN.eval.json / rollouts.json) of one condition, one
per seed; the seed is read from the run folder name's `-s<N>` suffix. Per group: pooled successes / episodes
with the Wilson 95 % interval (trajmoe.eval.stats), and per seed. Against the first group (REF), on the
seeds both have: the paired per-(seed, task) difference of success rates (the same held-out variations),
mean +- t(0.975, n-1) sd / sqrt(n), and the verdict "better" / "worse" only when that interval excludes 0.
"""

from __future__ import annotations

import glob
import json
import re
import sys

import numpy as np
from scipy.stats import t as student_t

from trajmoe.eval.stats import wilson_interval


def load(pattern: str) -> dict[int, dict]:
    out = {}
    for f in sorted(glob.glob(pattern)):
        try:
            r = json.load(open(f))
            r["successes"], r["tasks"]
        except (OSError, ValueError, KeyError) as e:
            sys.exit(f"{f}: not a closed-loop record (trajmoe eval policy --json): {e!r}")
        m = re.search(r"-s(\d+)", r.get("run", f)) or re.search(r"-s(\d+)", f)
        out[int(m.group(1)) if m else len(out)] = r
    return out


def main(argv: list[str]) -> int:
    if not argv or any("=" not in a for a in argv):
        sys.exit("usage: python scripts/policy_table.py REF=GLOB NAME=GLOB ... (see the module docstring)")
    groups = [(a.split("=", 1)[0], load(a.split("=", 1)[1])) for a in argv]
    if any(not g for _, g in groups):
        sys.exit("no records for: " + ", ".join(a for a, (_, g) in zip(argv, groups) if not g))
    ref_name, ref = groups[0]
    print(f"{'group':22s} {'success':>20s}  per seed")
    for name, g in groups:
        k = sum(r["successes"] for r in g.values())
        n = sum(r["episodes"] for r in g.values())
        lo, hi = wilson_interval(k, n)
        seeds = " ".join(f"s{s}:{r['successes']}/{r['episodes']}" for s, r in sorted(g.items()))
        line = f"{name:22s} {k:3d}/{n:3d} {100 * k / n:5.1f}% [{100 * lo:.1f}, {100 * hi:.1f}]  {seeds}"
        if name != ref_name:
            d = [g[s]["tasks"][t]["success_rate"] - ref[s]["tasks"][t]["success_rate"]
                 for s in sorted(set(g) & set(ref)) for t in g[s]["tasks"] if t in ref[s]["tasks"]]
            if len(d) >= 2:
                h = student_t.ppf(0.975, len(d) - 1) * np.std(d, ddof=1) / np.sqrt(len(d))
                word = "better" if np.mean(d) - h > 0 else "worse" if np.mean(d) + h < 0 else "inconclusive"
                line += f"   vs {ref_name}: {100 * np.mean(d):+.1f} +- {100 * h:.1f} points ({len(d)} seed-task pairs): {word}"
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
