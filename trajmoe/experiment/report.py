"""DIR/report.md: tables (mean +- std over seeds) and figures from an experiment's results.

A column `{kind: success, step: S, path: P}` reads a success record (`successes`, `episodes`, as
`trajmoe eval policy --json` writes at its root and per task under `tasks.<task>`; P empty = the
root) from every seed and shows the pooled success % over all seeds' episodes with its Wilson 95 %
interval (trajmoe.eval.stats; episodes treated as independent Bernoulli trials), the number of
episodes, and the per-seed mean +- sample std.
"""

from __future__ import annotations

import glob
import json
import os
import math
from pathlib import Path

from ..eval.stats import wilson_interval
from ..io import atomic_path, atomic_write_text
from .spec import Spec
from .values import finite_number, lookup, success_records
from .verdict import verdict_lines


def table_values(spec: Spec, results: dict, table: dict) -> dict[str, dict[str, list[float]]]:
    """{variant: {column name: [value per seed]}} for one table."""
    out: dict[str, dict[str, list[float]]] = {}
    for variant, seeds in results["runs"].items():
        if table.get("variants") and variant not in table["variants"]:
            continue
        row = out.setdefault(variant, {})
        for col in table["columns"]:
            if col.get("kind") == "success":
                row[col["name"]] = success_records(seeds, col)
                continue
            vals = []
            for _seed, steps in sorted(seeds.items()):
                rec = steps.get(col["step"])
                v = lookup(rec.get("json") if rec else None, col["path"])
                if isinstance(v, list) and v and all(finite_number(x) for x in v):  # a `*` path: one value per item
                    vals.append([float(x) * float(col.get("scale", 1.0)) for x in v])
                elif finite_number(v):
                    vals.append(float(v) * float(col.get("scale", 1.0)))
            row[col["name"]] = vals
    return out


def _fmt_success(recs: list[tuple[int, int]]) -> str:
    """'45.0 [36.2, 54.1] n=60 (seeds 45.0 ± 5.0)': pooled %, Wilson 95 % CI, episodes, per-seed spread."""
    if not recs:
        return "n/a"
    k, n = sum(r[0] for r in recs), sum(r[1] for r in recs)
    lo, hi = wilson_interval(k, n)
    cell = f"{100 * k / n:.1f} [{100 * lo:.1f}, {100 * hi:.1f}] n={n}"
    if len(recs) > 1:
        cell += f" (seeds {_fmt([100 * a / b for a, b in recs], '.1f')})"
    return cell


def _fmt(vals: list, fmt: str) -> str:
    """'mean ± std' over seeds; for per-item values (a `*` path, e.g. one per MoE layer) each item's mean over
    the seeds, joined by ' / ' (seeds with another item count are left out)."""
    if not vals:
        return "n/a"
    if isinstance(vals[0], list):
        same = [v for v in vals if isinstance(v, list) and len(v) == len(vals[0])]
        return " / ".join(format(sum(col) / len(col), fmt) for col in zip(*same))
    mean = sum(vals) / len(vals)
    if len(vals) == 1:
        return format(mean, fmt)
    std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1))
    return f"{format(mean, fmt)} ± {format(std, fmt.replace('+', ''))}"  # a spread has no sign


def write_report(spec: Spec, results: dict, out: Path, seeds: int) -> Path:
    """Write OUT/report.md (verdicts, one table per spec table, figures, step wall times) and OUT/results.json.

    Args:
        spec: the experiment spec. results: the runner's results ({"data", "runs", "wall_s"}).
        out: experiment folder. seeds: number of seeds run (for the table captions).

    Returns:
        The path of report.md.

    Raises:
        ValueError: a figure of unknown type (names the spec file).
    """
    lines = [f"# {spec.title}", "", f"Spec: `{spec.path}` · scale: `{spec.vars.get('scale')}` · seeds: {seeds} · "
             f"wall time of this invocation: {results.get('wall_s', 0) / 60:.1f} min", ""]
    if spec.overrides:
        shown = {k: str(v).lower() if isinstance(v, bool) else v for k, v in spec.overrides.items()}
        lines += ["Overrides: " + " ".join(f"`--var {k}={v}`" for k, v in shown.items()), ""]
    verdict = verdict_lines(spec.verdicts, results)
    if verdict:
        smoke = spec.vars.get("scale") == "smoke"
        lines += ["## Verdict", "",
                  *(["**Scale `smoke`: a plumbing check on a handful of samples and steps; its numbers and verdicts "
                     "mean nothing. Use `--scale cpu`.**", ""] if smoke else []), *verdict, "",
                  "(each verdict compares the two quantities with their 95 % intervals: see trajmoe/experiment/verdict.py)", ""]
    if spec.notes:
        lines += [spec.notes.strip(), ""]
    fig_dir = out / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    all_tables = []
    for ti, table in enumerate(spec.tables):
        all_tables.append(table_values(spec, results, table))
        lines += _table_lines(table, all_tables[-1], ti, seeds)
    for fi, fig in enumerate(spec.figures):
        made = _figure(fig, fi, spec, results, all_tables, out, fig_dir)
        if made:
            lines += [f"## {fig.get('title', f'Figure {fi + 1}')}", ""]
            lines += [f"![{Path(p).stem}]({os.path.relpath(p, out)})" for p in made] + [""]
    lines += ["## Steps", "", "| step | wall s |", "|---|---|"]
    for name, rec in results["data"].items():
        lines.append(f"| data/{name} | {rec.get('wall_s', 0):.1f} |")
    for variant, seeds_d in results["runs"].items():
        for seed, steps in seeds_d.items():
            for name, rec in steps.items():
                lines.append(f"| {variant}/seed{seed}/{name} | {rec.get('wall_s', 0):.1f} |")
    path = out / "report.md"
    atomic_write_text(path, "\n".join(lines) + "\n")
    atomic_write_text(out / "results.json", json.dumps(results, indent=1, default=str))
    return path


def _table_lines(table: dict, vals: dict, ti: int, seeds: int) -> list[str]:
    """The markdown of one spec table (`table_values` rows; variants with nothing measured listed below it)."""
    cols = [c["name"] for c in table["columns"]]
    lines = [f"## {table.get('title', f'Table {ti + 1}')}", "",
             "| variant | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    empty = [v for v, row in vals.items() if not any(row.values())]  # nothing measured (yet, or skipped by a var)
    for variant, row in vals.items():
        if variant in empty:
            continue
        cells = [_fmt_success(row[c["name"]]) if c.get("kind") == "success" else _fmt(row[c["name"]], c.get("fmt", ".4g"))
                 for c in table["columns"]]
        lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    lines.append("")
    if empty:
        lines += ["Not measured (no finished step feeds this table): " + ", ".join(empty) + ".", ""]
    if seeds > 1:
        lines += [f"(mean ± sample std over the seeds each cell has, up to {seeds}; a single value is one seed)", ""]
    if any(c.get("kind") == "success" for c in table["columns"]):
        lines += ["(success: pooled % over every seed's episodes [Wilson 95 % interval], n episodes)", ""]
    return lines


def _figure(fig: dict, fi: int, spec: Spec, results: dict, tables: list, out: Path, fig_dir: Path) -> list[str]:
    """Draw figure `fi` of the spec ("curves", "bars" or "images"); the image paths to show in the report.

    Raises:
        ValueError: the figure's `type` is not one of curves, bars, images (names the spec file).
    """
    import matplotlib  # optional and slow to import: only when a report draws figures

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # lazy, as above; after the Agg backend is chosen

    kind = fig.get("type")
    if kind == "images":
        return _images(fig, results, out)[: int(fig.get("limit", 8))]
    path = fig_dir / f"fig{fi}_{kind}.png"
    if kind == "bars" and not any(row[fig["column"]] for row in tables[int(fig.get("table", 0))].values()):
        return []  # the column's step did not run (e.g. --var policy=false): no empty chart that reads as 0
    if kind == "curves":
        f, ax = _curves(plt, fig, results, out)
    elif kind == "bars":
        f, ax = _bars(plt, fig, tables)
    else:
        raise ValueError(f"spec {spec.path}: figure type {kind!r} unknown; valid: curves, bars, images")
    ax.set_title(fig.get("title", ""), fontsize=9)
    f.tight_layout()
    with atomic_path(path) as tmp:
        f.savefig(tmp, dpi=110, format="png")
    plt.close(f)
    return [str(path)]


def _runs_root(results: dict, out: Path, variant: str) -> Path:
    """Where a variant's seed folders are (the runner records it; DIR/runs/<variant> by default)."""
    return Path(results.get("run_dirs", {}).get(variant, out / "runs" / variant))


def _images(fig: dict, results: dict, out: Path) -> list[str]:
    """Files matching the figure's glob; a glob "runs/*/REST" is taken inside each variant's run folder."""
    pattern = fig["glob"]
    if not pattern.startswith("runs/*/"):
        return sorted(glob.glob(str(out / pattern)))
    rest = pattern[len("runs/*/"):]
    return [p for v in results["runs"] for p in sorted(glob.glob(str(_runs_root(results, out, v) / rest)))]


def _read_curve(mfile: Path, key: str, base_key: str | None, base_vals: list) -> tuple[list, list]:
    """(steps, values of `key`) from a metrics.jsonl; appends every `base_key` value to `base_vals`."""
    xs, ys = [], []
    for line in mfile.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if key in rec:
            xs.append(rec["step"])
            ys.append(rec[key])
        if base_key and base_key in rec:
            base_vals.append(rec[base_key])
    return xs, ys


def _curves(plt, fig: dict, results: dict, out: Path):
    """Training curves of `fig["key"]` per variant and seed, with the run's trivial baseline dashed (`baseline_key`:
    a logged metric averaged over the runs; `baseline_value`: a constant); `x: samples` puts training samples
    seen on the x axis instead of steps."""
    f, ax = plt.subplots(figsize=(6, 3.6))
    base_key, base_vals = fig.get("baseline_key"), []
    for variant, seeds_d in results["runs"].items():
        for seed in sorted(seeds_d):
            mfile = _runs_root(results, out, variant) / f"seed{seed}" / fig["step"] / fig.get("file", "metrics.jsonl")
            if not mfile.is_file():
                continue
            xs, ys = _read_curve(mfile, fig["key"], base_key, base_vals)
            if xs and fig.get("x") == "samples":  # training samples seen: step x the run's batch size
                batch = json.loads((mfile.parent / "config.json").read_text())["train"]["batch_size"]
                xs = [x * batch for x in xs]
            if xs:
                ax.plot(xs, ys, label=f"{variant} s{seed}" if seed == 0 else None, alpha=0.9 if seed == 0 else 0.4,
                        color=f"C{list(results['runs']).index(variant) % 10}")
    if base_vals:  # the trivial baseline on the same training batches, averaged over the runs
        ax.axhline(sum(base_vals) / len(base_vals), color="0.3", ls="--", lw=1.2,
                   label=fig.get("baseline_label", f"baseline ({base_key})"))
    if "baseline_value" in fig:  # a fixed reference, e.g. 0 for a skill score (the trivial baseline itself)
        ax.axhline(float(fig["baseline_value"]), color="0.3", ls="--", lw=1.2, label=fig.get("baseline_label", "baseline"))
    ax.set_xlabel("training samples seen" if fig.get("x") == "samples" else "step")
    ax.set_ylabel(fig["key"])
    if fig.get("log", True):
        ax.set_yscale("log")
    if ax.get_legend_handles_labels()[1]:  # no curve yet (e.g. a failed first step): no empty legend
        ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return f, ax


def _bars(plt, fig: dict, tables: list):
    """Bars of one table column per variant: pooled success % with Wilson 95 % error bars, else mean +- std."""
    vals = tables[int(fig.get("table", 0))]
    col = fig["column"]
    names = [n for n in vals if vals[n][col]]  # a row without the value (n/a) gets no bar, not a zero-height one
    if any(isinstance(vals[n][col][0], list) for n in names):
        raise ValueError(f"figure 'bars' of column {col!r}: the column holds one value per item (a '*' path); "
                         "bars need one number per seed")
    if any(isinstance(vals[n][col][0], tuple) for n in names):  # success: pooled + Wilson
        means, lows, highs = [], [], []
        for n in names:
            k, m = sum(r[0] for r in vals[n][col]), sum(r[1] for r in vals[n][col])
            lo, hi = wilson_interval(k, m) if m else (0.0, 0.0)
            means.append(100 * k / m if m else 0.0)
            lows.append(means[-1] - 100 * lo)
            highs.append(100 * hi - means[-1])
        stds = [lows, highs]
    else:
        means = [sum(vals[n][col]) / len(vals[n][col]) for n in names]
        stds = [(_std(vals[n][col])) for n in names]
    f, ax = plt.subplots(figsize=(max(4, 1.1 * len(names)), 3.4))
    ax.bar(range(len(names)), means, yerr=stds, color=[f"C{i}" for i in range(len(names))], capsize=3)
    ax.set_xticks(range(len(names)), names, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel(col)
    ax.grid(axis="y", alpha=0.3)
    return f, ax


def _std(v: list[float]) -> float:
    if len(v) < 2:
        return 0.0
    m = sum(v) / len(v)
    return math.sqrt(sum((x - m) ** 2 for x in v) / (len(v) - 1))
