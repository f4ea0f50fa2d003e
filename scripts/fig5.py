"""The Tra-MoE paper's Fig. 5 analogue: closed-loop success against the quality of the tracks the policy is
given, with Wilson 95 % intervals, one point per group of policy runs (seeds pooled). x: for oracle runs the blend
a of q + a (oracle - q) (the skill ADE of the given tracks, exactly); for runs on a track model that model's held-out
skill ADE (its best checkpoint's `eval.json`, or `results/*/<track run>/best_eval.json` once collected); plain BC
(no tracks) is a horizontal band. Prints a markdown table; writes the figure.

Usage: python scripts/fig5.py OUT.png LABEL=GLOB [LABEL=GLOB ...]
  e.g. python scripts/fig5.py docs/img/fig5.png "plain BC=results/issue23-policies/bc-s*/rollouts.json" \\
           "mask, grid model=results/issue23-s8/mask-grid16-fix-s*/rollouts.json"
Each GLOB matches closed-loop records: `RUN.eval.json` beside a policy run folder (scripts/policy_run.sh) or
`results/GROUP/RUN/rollouts.json` (scripts/collect_results.sh), whose run folder holds the run's config.json.
All runs of a group must share the conditioning, the blend and the track model."""

import glob
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from trajmoe.eval.stats import wilson_interval  # noqa: E402


def run_config(record: Path) -> dict:
    """The policy run's config.json for a `RUN.eval.json` or `RUN/rollouts.json` record."""
    folder = record.parent if record.name == "rollouts.json" else Path(str(record).removesuffix(".eval.json"))
    cfg = folder / "config.json"
    if not cfg.is_file():
        raise SystemExit(f"{record}: no config.json in {folder}")
    return json.loads(cfg.read_text())


def track_skill_ade(track_run: str) -> float | None:
    """Held-out skill ADE of a track run's best checkpoint, from the run or from its collected record."""
    tr = Path(track_run)
    if (tr / "eval.json").is_file():
        return json.loads((tr / "eval.json").read_text())["metrics"]["skill_ade"]
    name = tr.parent.name if tr.name == "best" else tr.name
    found = sorted(glob.glob(f"results/*/{name}/best_eval.json"))
    return json.loads(Path(found[0]).read_text())["metrics"]["skill_ade"] if found else None


def group(spec: str) -> dict:
    if "=" not in spec:
        raise SystemExit(f"{spec}: expected LABEL=GLOB")
    label, pattern = spec.rsplit("=", 1)  # a label may hold "=" (a = 0.5); a path does not
    records = [Path(p) for p in sorted(glob.glob(pattern))]
    for rec in records:
        if not rec.is_file():
            raise SystemExit(f"{rec}: not a record file (RUN.eval.json or RUN/rollouts.json)")
    if not records:
        raise SystemExit(f"{pattern}: matches no record")
    k = n = 0
    keys, tasks = set(), {}
    for rec in records:
        ev, cfg = json.loads(rec.read_text()), run_config(rec)
        model = cfg["model"]
        k, n = k + ev["successes"], n + ev["episodes"]
        keys.add((model["conditioning"], float(model.get("oracle_blend", 1.0)), cfg.get("track_run") or ""))
        for t, v in ev["tasks"].items():
            tasks[t] = tasks.get(t, 0) + v["successes"]
    if len(keys) > 1:
        raise SystemExit(f"{label}: runs differ in conditioning, blend or track model: {sorted(keys)}")
    kind, blend, track = keys.pop()
    x = blend if kind == "oracle" else (track_skill_ade(track) if track else None)
    lo, hi = wilson_interval(k, n)
    return {"label": label, "kind": kind, "x": x, "k": k, "n": n, "rate": k / n, "lo": lo, "hi": hi,
            "seeds": len(records), "tasks": tasks}


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[0] in ("-h", "--help"):
        raise SystemExit("usage: python scripts/fig5.py OUT.png LABEL=GLOB [LABEL=GLOB ...] (see the module docstring)")
    out, pts = Path(argv[0]), [group(a) for a in argv[1:]]
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for i, p in enumerate(pts):
        if p["kind"] == "none":
            ax.axhspan(100 * p["lo"], 100 * p["hi"], color="0.85", label=f"{p['label']} {100 * p['rate']:.0f} % (Wilson 95 %)")
            ax.axhline(100 * p["rate"], color="0.4", lw=1)
        elif p["x"] is not None:
            ax.errorbar([p["x"]], [100 * p["rate"]], yerr=[[100 * (p["rate"] - p["lo"])], [100 * (p["hi"] - p["rate"])]],
                        fmt="o" if p["kind"] == "oracle" else "s", color=f"C{i}", capsize=3,
                        label=f"{p['label']} ({p['seeds']} seed{'s' * (p['seeds'] > 1)})")
    ax.set_xlim(-0.05, 1.05)
    ax.set_xlabel("skill ADE of the tracks given (0 = no motion, 1 = exact)")
    ax.set_ylabel("success % (held-out variations)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print("| policy | tracks given (skill ADE) | success | Wilson 95 % | seeds | per task |")
    print("|---|---|---|---|---|---|")
    for p in pts:
        x = "no tracks" if p["kind"] == "none" else (f"{p['x']:.2f}" if p["x"] is not None else "?")
        per = ", ".join(f"{t.removesuffix('-v3')} {v}" for t, v in p["tasks"].items())
        print(f"| {p['label']} | {x} | {p['k']}/{p['n']} ({100 * p['rate']:.1f} %) | [{100 * p['lo']:.1f}, "
              f"{100 * p['hi']:.1f}] | {p['seeds']} | {per} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
