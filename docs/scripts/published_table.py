"""Our per-task MetaWorld success beside the published Diffusion Policy and 3D Diffusion Policy figures.

    python docs/scripts/published_table.py EXPERIMENT_DIR [VARIANT ...]

EXPERIMENT_DIR is a `trajmoe experiment tab3 ...` folder (default variants: none, atm, adaptive_mask,
oracle). For each task, each variant's held-out episodes are pooled over every finished seed
(`runs/<variant>/seed*/policy_eval.done.json`) and printed as "% [Wilson 95 %] k/n"; the last rows
pool the easy and medium tasks. Published columns: 3D Diffusion Policy paper (Ze, Zhang, Zhang, Hu,
Wang, Xu, RSS 2024, arXiv 2403.03954v7), appendix Table XVIII, MetaWorld with 10 demonstrations:
mean +- std over 3 seeds of the average of each seed's 5 best evaluations (20 episodes every 200
epochs). Prints a markdown table.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from trajmoe.eval.stats import wilson_interval

# task: (difficulty group, Diffusion Policy %, DP3 %) from Table XVIII of the 3D Diffusion Policy paper
PUBLISHED = {
    "drawer-open-v3": ("easy", "93±3", "100±0"),
    "button-press-topdown-v3": ("easy", "98±1", "100±0"),
    "handle-press-v3": ("easy", "81±4", "100±0"),
    "door-open-v3": ("easy", "98±3", "99±1"),
    "hammer-v3": ("medium", "15±6", "76±4"),
    "sweep-v3": ("medium", "18±8", "96±3"),
    "coffee-pull-v3": ("medium", "34±7", "87±3"),
    "peg-insert-side-v3": ("medium", "34±7", "69±7"),
}


def pooled(exp: Path, variant: str) -> tuple[dict[str, list[int]], int]:
    """{task: [successes, episodes]} over every finished seed of `variant`, and the number of seeds."""
    counts: dict[str, list[int]] = {}
    seeds = 0
    run_dirs = json.loads((exp / "results.json").read_text()).get("run_dirs", {}) if (exp / "results.json").is_file() else {}
    for marker in sorted(Path(run_dirs.get(variant, exp / "runs" / variant)).glob("seed*/policy_eval.done.json")):
        rec = json.loads(marker.read_text())["json"]
        seeds += 1
        for task, r in rec["tasks"].items():
            c = counts.setdefault(task, [0, 0])
            c[0] += r["successes"]
            c[1] += r["episodes"]
    return counts, seeds


def cell(k: int, n: int) -> str:
    """'p % [lo, hi] k/n' with the Wilson 95 % interval; '-' without episodes."""
    if n == 0:
        return "-"
    lo, hi = wilson_interval(k, n)
    return f"{100 * k / n:.0f} [{100 * lo:.0f}, {100 * hi:.0f}] {k}/{n}"


def main(argv: list[str]) -> None:
    if not argv:
        raise SystemExit(__doc__)
    exp = Path(argv[0])
    variants = argv[1:] or ["none", "atm", "adaptive_mask", "oracle"]
    data = {v: pooled(exp, v) for v in variants}
    tasks = [t for t in PUBLISHED if any(t in data[v][0] for v in variants)]
    head = ["task", "group", "Diffusion Policy", "DP3"] + [f"{v} ({data[v][1]} seed{'s' * (data[v][1] != 1)})" for v in variants]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for t in tasks:
        g, dp, dp3 = PUBLISHED[t]
        print("| " + " | ".join([t, g, dp, dp3] + [cell(*data[v][0].get(t, [0, 0])) for v in variants]) + " |")
    for g in ("easy", "medium"):
        members = [t for t in tasks if PUBLISHED[t][0] == g]
        if not members:
            continue
        mean = [sum(float(PUBLISHED[t][i].split("±")[0]) for t in members) / len(members) for i in (1, 2)]
        row = [f"**{g} tasks pooled**", g, f"{mean[0]:.1f} (mean)", f"{mean[1]:.1f} (mean)"]
        for v in variants:
            k = sum(data[v][0].get(t, [0, 0])[0] for t in members)
            n = sum(data[v][0].get(t, [0, 0])[1] for t in members)
            row.append(cell(k, n))
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main(sys.argv[1:])
