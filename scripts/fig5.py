"""The Tra-MoE paper's Fig. 5 analogue: closed-loop success against the quality of the tracks the policy is
given, with Wilson 95 % intervals. Points: oracle tracks blended toward no motion (skill ADE of the given
tracks = the blend a, exactly), adaptive-mask policies on track models (their held-out skill ADE on id-val),
plain BC (no tracks) as a horizontal band. Prints a markdown table; writes the figure.
Usage: python scripts/fig5.py OUT.png POLICY_RUN[=LABEL] ...  (each POLICY_RUN has POLICY_RUN.eval.json)"""

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from trajmoe.eval.stats import wilson_interval  # noqa: E402


def point(run: Path) -> dict:
    ev = json.loads(Path(f"{run}.eval.json").read_text())
    cfg = json.loads((run / "config.json").read_text())
    model = cfg["model"]
    k, n = ev["successes"], ev["episodes"]
    lo, hi = wilson_interval(k, n)
    x, kind = None, model["conditioning"]
    if kind == "oracle":
        x = float(model.get("oracle_blend", 1.0))
    elif cfg.get("track_run"):
        tr = Path(cfg["track_run"])
        ev_t = json.loads((tr / "eval.json").read_text()) if (tr / "eval.json").is_file() else None
        x = ev_t["metrics"]["skill_ade"] if ev_t else None
    return {"run": run.name, "kind": kind, "x": x, "k": k, "n": n, "rate": k / n, "lo": lo, "hi": hi,
            "per_task": {t: v["successes"] for t, v in ev["tasks"].items()}}


def per_task(p: dict) -> str:
    return ", ".join(f"{t.removesuffix('-v3')} {v}" for t, v in p["per_task"].items())


out = Path(sys.argv[1])
pts = [point(Path(a)) for a in sys.argv[2:] if Path(f"{a}.eval.json").is_file()]
fig, ax = plt.subplots(figsize=(6, 4))
for p in pts:
    if p["kind"] == "none":
        ax.axhspan(100 * p["lo"], 100 * p["hi"], color="0.85", label=f"plain BC {100 * p['rate']:.0f} % (Wilson 95 %)")
        ax.axhline(100 * p["rate"], color="0.4", lw=1)
for kind, color, label in (("oracle", "C0", "oracle tracks blended toward no motion"),
                           ("adaptive_mask", "C3", "adaptive mask on a track model")):
    sel = sorted((p for p in pts if p["kind"] == kind and p["x"] is not None), key=lambda p: p["x"])
    if sel:
        ax.errorbar([p["x"] for p in sel], [100 * p["rate"] for p in sel],
                    yerr=[[100 * (p["rate"] - p["lo"]) for p in sel], [100 * (p["hi"] - p["rate"]) for p in sel]],
                    fmt="o-" if kind == "oracle" else "s", color=color, capsize=3, label=label)
ax.set_xlim(-0.05, 1.05)
ax.set_xlabel("skill ADE of the tracks given (0 = no motion, 1 = exact)")
ax.set_ylabel("success % (held-out variations)")
ax.grid(alpha=0.3)
ax.legend(fontsize=7)
fig.tight_layout()
fig.savefig(out, dpi=110)
print("| policy | tracks given (skill ADE) | success | Wilson 95 % | per task |")
print("|---|---|---|---|---|")
for p in sorted(pts, key=lambda p: (p["kind"], p["x"] if p["x"] is not None else -1)):
    x = "no tracks" if p["kind"] == "none" else (f"{p['x']:.2f}" if p["x"] is not None else "?")
    print(f"| {p['run']} | {x} | {p['k']}/{p['n']} ({100 * p['rate']:.1f} %) | [{100 * p['lo']:.1f}, {100 * p['hi']:.1f}] | "
          f"{per_task(p)} |")
