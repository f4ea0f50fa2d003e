"""Does a MoE planner's routing specialise by scenario? Total-variation distance between the scenarios' expert-share
distributions, per MoE layer, from a test evaluation's `routing` (issue 24's routing table).

Usage: python scripts/planner_routing.py EVAL.json [EVAL.json ...]
  EVAL.json: `trajmoe eval planner --run RUN --data DIR --json` of a MoE planner (its open_loop.routing holds, per
  layer, each scenario's share of the routed tokens per expert). TV(p, q) = 0.5 * sum_e |p_e - q_e|: 0 = the same
  routing, 1 = disjoint experts. Prints, per file and layer, TV for every pair of scenarios and the busiest expert's
  share per scenario (1/E x top-k = balanced, 1 = collapsed).
"""

from __future__ import annotations

import itertools
import json
import sys

import numpy as np


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        raise SystemExit("usage: python scripts/planner_routing.py EVAL.json [EVAL.json ...] (see the module docstring)")
    for path in argv:
        routing = json.load(open(path))["open_loop"].get("routing")
        if not routing:
            raise SystemExit(f"{path}: no open_loop.routing (not a MoE planner's evaluation)")
        print(path)
        for layer, r in routing.items():
            f = {k: np.asarray(v) for k, v in r["domain_fraction"].items()}
            pairs = [f"{a}-{b} {0.5 * np.abs(f[a] - f[b]).sum():.2f}" for a, b in itertools.combinations(f, 2)]
            busiest = ", ".join(f"{k} {v:.2f}" for k, v in r["busiest_share"].items())
            print(f"  {layer}: TV {'  '.join(pairs)} | busiest share {busiest}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
