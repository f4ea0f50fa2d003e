"""Experiment specs: a grid of variants x seeds, each a list of `trajmoe` commands, plus tables.

A spec is YAML (no code runs from it; values are only substituted into command-line arguments):

    name: tab1f
    title: "..."
    scales: {smoke: {vars...}, cpu: {...}, gpu: {...}}    # the --scale picks one
    vars: {...}                                           # defaults for every scale
    data:        # shared steps run once per experiment (dataset generation)
      - {name: id, cmd: [data, metaworld, --tasks, "{id_tasks}", --out, "{dir}/data/id"]}
    variants:    # name -> vars
      dense-id: {preset: tiny-dense, train_data: ["{dir}/data/id"]}
    steps:       # run for every variant and seed, in order
      - {name: track, cmd: [train, track, --preset, "{preset}", --data, "{train_data}", --out, "{run}/track"]}
      - {name: eval, cmd: [eval, track, --run, "{run}/track", --data, "{dir}/data/id-val", --json]}
    tables:
      - title: "..."
        columns: [{name: "track MSE", step: eval, path: metrics.overall.track_mse, fmt: ".3e"}]
    figures:
      - {type: curves, step: track, file: metrics.jsonl, key: loss, title: "..."}
      - {type: bars, table: 0, column: "success", title: "..."}
      - {type: images, glob: "runs/*/seed0/routing.png", title: "..."}

Substitution: "{name}" is replaced by the variable's value; an argument that is exactly "{name}"
and whose value is a list expands into several arguments. Built-ins: dir (the experiment
directory), seed, run ({runs_dir}/{run_name}/seed{seed}), variant, scale. `runs_dir` (a var, default
"{dir}/runs") and `run_name` (a variant var, default the variant's name) let several specs share runs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import load_yaml
from ..configs import find_config
from .verdict import check_verdicts

SCALES = ("smoke", "cpu", "gpu")
_VAR = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass
class Step:
    """One command of an experiment: name, CLI argv (with {var} placeholders), and the variant vars that enable
    (`when`) or skip (`unless`) it.
    """
    name: str
    cmd: list[str]
    when: str | None = None  # run only for variants whose vars have this key truthy
    unless: str | None = None  # skip for variants whose vars have this key truthy


@dataclass
class Spec:
    """A parsed experiment spec: variables, data steps, per-variant run steps, variants, tables, figures,
    verdicts, notes.
    """
    path: Path
    name: str
    title: str
    vars: dict[str, Any]
    data: list[Step]
    variants: dict[str, dict[str, Any]]
    steps: list[Step]
    tables: list[dict[str, Any]] = field(default_factory=list)
    figures: list[dict[str, Any]] = field(default_factory=list)
    notes: str = ""
    verdicts: list[dict[str, Any]] = field(default_factory=list)
    overrides: dict[str, Any] = field(default_factory=dict)  # the --var values given (shown in the report)


_TOP_KEYS = {"name", "title", "scales", "vars", "data", "variants", "steps", "tables", "figures", "notes", "verdicts"}


def load_spec(path: str | Path, scale: str) -> Spec:
    """Read and check the spec at `path` (a file, a `configs/experiments/...` path or a packaged
    spec's name such as `demo`) for `scale`; every mistake is a one-line ValueError naming the spec."""
    path = find_config(path, "experiments")
    raw = load_yaml(path)
    unknown = sorted(set(raw) - _TOP_KEYS)
    if unknown:
        raise ValueError(f"spec {path}: unknown key(s) {unknown}; valid: {sorted(_TOP_KEYS)}")
    if scale not in SCALES:
        raise ValueError(f"--scale must be one of {SCALES}, got {scale!r}")
    scales = raw.get("scales") or {}
    if scale not in scales:
        raise ValueError(f"spec {path} has no scale {scale!r}; it defines {sorted(scales)}")
    for key in ("variants", "steps"):
        if not raw.get(key):
            raise ValueError(f"spec {path}: {key!r} is missing or empty")
    # runs_dir: where variant runs live (a var, so `--var runs_dir=...` lets several specs share runs)
    vars_ = {"runs_dir": "{dir}/runs", **(raw.get("vars") or {}), **(scales[scale] or {}), "scale": scale}
    for v in raw["variants"]:
        plain_name(v, f"spec {path}: variant")
    spec = Spec(
        path=path, name=str(raw.get("name", path.stem)), title=str(raw.get("title", path.stem)), vars=vars_,
        data=[_step(s, path) for s in raw.get("data") or []],
        variants={str(k): dict(v or {}) for k, v in raw["variants"].items()},
        steps=[_step(s, path) for s in raw["steps"]],
        tables=list(raw.get("tables") or []), figures=list(raw.get("figures") or []),
        notes=str(raw.get("notes", "")),
        verdicts=check_verdicts(raw.get("verdicts"), f"spec {path}"),
    )
    _check_variables(spec, raw, scale)
    return spec


# Variables the runner sets itself (`trajmoe.experiment.runner`) or reads by name (runs_dir, run_name).
BUILTIN_VARS = ("dir", "configs", "scale", "variant", "seed", "run", "runs_dir", "run_name")


def _refs(value: Any) -> set[str]:
    """Names of the "{var}" placeholders anywhere in a YAML value (strings in nested lists / dicts)."""
    if isinstance(value, str):
        return set(_VAR.findall(value))
    if isinstance(value, dict):
        return set().union(*map(_refs, value.values())) if value else set()
    if isinstance(value, (list, tuple)):
        return set().union(*map(_refs, value)) if value else set()
    return set()


def _check_variables(spec: Spec, raw: dict, scale: str) -> None:
    """Refuse, before anything runs, a variable that a scale or variant sets but nothing uses (a typo such
    as `model_set:` for `model_sets:` would silently run the default), and a "{var}" that a step of a
    variant (or a variable it uses) names but that nothing defines at this scale."""
    used = _refs(raw) | set(BUILTIN_VARS) | {s.when for s in spec.data + spec.steps} | {s.unless for s in spec.data + spec.steps}
    sets = [(f"scale {name!r}", vals) for name, vals in (raw.get("scales") or {}).items()]
    sets += [(f"variant {name!r}", vals) for name, vals in spec.variants.items()]
    for where, vals in sets:
        unused = sorted(k for k in (vals or {}) if k not in used)
        if unused:
            raise ValueError(f"spec {spec.path}: {where} sets {', '.join(unused)}, which no step, variable, table or "
                             f"condition uses (a typo?); variables in use: {sorted(used - set(BUILTIN_VARS) - {None})}")

    def check(step: Step, env: dict, where: str) -> None:
        todo, seen = list(_refs(step.cmd)), set()
        while todo:  # the step's placeholders, and those of the variables they name
            key = todo.pop()
            if key in seen:
                continue
            seen.add(key)
            if key not in env:
                raise ValueError(f"spec {spec.path}: step {step.name!r} {where}uses {{{key}}}, which no variable defines "
                                 f"at scale {scale!r}; known: {sorted(env)}")
            todo.extend(_refs(env[key]))

    base = {**dict.fromkeys(("dir", "configs")), **spec.vars}
    for step in spec.data:
        check(step, base, "")
    for name, vals in spec.variants.items():
        env = {**base, **vals, **dict.fromkeys(("variant", "seed", "run"))}
        for step in spec.steps:
            if not ((step.when and not env.get(step.when)) or (step.unless and env.get(step.unless))):
                check(step, env, f"of variant {name!r} ")


def _step(raw: Any, path: Path) -> Step:
    if not isinstance(raw, dict) or "name" not in raw or "cmd" not in raw:
        raise ValueError(f"spec {path}: every step needs 'name' and 'cmd', got {raw!r}")
    if not isinstance(raw["cmd"], list) or not raw["cmd"]:
        raise ValueError(f"spec {path}: step {raw['name']!r} cmd must be a non-empty list")
    extra = set(raw) - {"name", "cmd", "when", "unless"}
    if extra:
        raise ValueError(f"spec {path}: step {raw['name']!r} has unknown key(s) {sorted(extra)}")
    plain_name(raw["name"], f"spec {path}: step")
    return Step(str(raw["name"]), [str(a) for a in raw["cmd"]], raw.get("when"), raw.get("unless"))


_PLAIN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+=-]*")


def plain_name(name: Any, where: str) -> None:
    """Variant and step names become folder / file names under --out: letters, digits, _ . + = -,
    not starting with a dot, never '..' or a path."""
    text = str(name)
    if not _PLAIN.fullmatch(text) or ".." in text:
        raise ValueError(f"{where} {text!r} must be a plain name (letters, digits, _ . + = -; no '/', no '..')")


def substitute(cmd: list[str], env: dict[str, Any], where: str) -> list[str]:
    """Fill "{var}" placeholders; a whole-argument placeholder with a list value expands."""
    out: list[str] = []
    for arg in cmd:
        m = _VAR.fullmatch(arg)
        if m and isinstance(env.get(m.group(1)), (list, tuple)):
            out += [substitute([str(x)], env, where)[0] for x in env[m.group(1)]]
            continue

        def repl(mm: re.Match) -> str:
            key = mm.group(1)
            if key not in env:
                raise ValueError(f"{where}: unknown variable {{{key}}} in {arg!r}; known: {sorted(env)}")
            val = env[key]
            return " ".join(map(str, val)) if isinstance(val, (list, tuple)) else str(val)

        # two passes so variables may refer to {dir}, {run}, ...
        out.append(_VAR.sub(repl, _VAR.sub(repl, arg)))
    return out
