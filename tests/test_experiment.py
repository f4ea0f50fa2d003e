"""Experiment specs: substitution, validation, resume, and the demo spec end to end at smoke scale."""

import json
import re
from pathlib import Path

import pytest

from trajmoe.cli import main
from trajmoe.configs import PACKAGED, find_config
from trajmoe.experiment.values import lookup
from trajmoe.experiment.spec import load_spec, substitute

SPECS = sorted((PACKAGED / "experiments").glob("*.yaml"))


def test_specs_ship_in_the_package_and_are_found_by_path_or_name(tmp_path, monkeypatch):
    assert {"demo", "tab1f"} <= {p.stem for p in SPECS}
    monkeypatch.chdir(tmp_path)  # no configs/ folder here: the packaged files answer
    demo = PACKAGED / "experiments" / "demo.yaml"
    for name in ("configs/experiments/demo.yaml", "trajmoe/configs/experiments/demo.yaml", "demo", "demo.yaml"):
        assert find_config(name, "experiments") == demo
    assert load_spec("demo", "smoke").path == demo
    assert find_config("configs/benchmarks/metaworld.yaml") == PACKAGED / "benchmarks" / "metaworld.yaml"
    (tmp_path / "demo.yaml").write_text("name: mine\n")  # a user's own file wins over the packaged one
    assert find_config("demo.yaml", "experiments") == Path("demo.yaml")
    assert find_config("nope", "experiments") == Path("nope")  # the caller's missing-file error names it
    (tmp_path / "tab1f").mkdir()  # an experiment's --out folder named like its spec does not hide the spec
    assert find_config("tab1f", "experiments") == PACKAGED / "experiments" / "tab1f.yaml"
    with pytest.raises(FileNotFoundError, match="nope"):
        load_spec("nope", "smoke")


def test_substitute_nested_and_list_expansion():
    env = {"dir": "/x", "run": "{dir}/runs/a", "sets": ["steps=3", "lr=1"], "data": ["{dir}/id", "{dir}/ood"]}
    out = substitute(["--out", "{run}/t", "--set", "{sets}", "--data", "{data}"], env, "t")
    assert out == ["--out", "/x/runs/a/t", "--set", "steps=3", "lr=1", "--data", "/x/id", "/x/ood"]
    with pytest.raises(ValueError, match=r"unknown variable \{nope\}"):
        substitute(["{nope}"], env, "t")


@pytest.mark.parametrize("spec", SPECS, ids=lambda p: p.stem)
@pytest.mark.parametrize("scale", ["smoke", "cpu", "gpu"])
def test_every_spec_resolves_every_command(spec, scale):
    s = load_spec(spec, scale)
    env = {"configs": str(PACKAGED), **s.vars, "dir": "/exp"}
    for step in s.data:
        substitute(step.cmd, env, step.name)
    for v, vars_ in s.variants.items():
        e = {**env, **vars_, "variant": v, "seed": 0, "run": f"/exp/runs/{v}/seed0"}
        for step in s.steps:
            if (step.when and not e.get(step.when)) or (step.unless and e.get(step.unless)):
                continue
            argv = substitute(step.cmd, e, step.name)
            assert not any(re.search(r"\{[A-Za-z_]\w*\}", a) for a in argv), argv  # YAML braces ({id: 1}) may stay
    assert s.tables


def test_bad_specs(tmp_path):
    p = tmp_path / "s.yaml"
    p.write_text("name: x\nscales: {cpu: {}}\nvariants: {a: {}}\nsteps: [{name: s, cmd: [demo]}]\nbogus: 1\n")
    with pytest.raises(ValueError, match="bogus"):
        load_spec(p, "cpu")
    p.write_text("name: x\nscales: {cpu: {}}\nvariants: {a: {}}\nsteps: [{name: s, cmd: [demo]}]\n")
    with pytest.raises(ValueError, match="no scale 'gpu'"):
        load_spec(p, "gpu")


def test_lookup_paths():
    assert lookup({"a": {"b": [1, {"c": 2}]}}, "a.b.1.c") == 2
    assert lookup({"a": 1}, "a.b") is None
    layers = {"routing": {"layer0": {"s": {"id": 0.5}}, "layer2": {"s": {"id": 0.9}}, "layer3": {"s": {}}}}
    assert lookup(layers, "routing.*.s.id") == [0.5, 0.9]  # '*' maps over values; missing entries dropped
    assert lookup(layers, "routing.*.s.ood") is None and lookup({"a": [1, 2]}, "a.*") == [1, 2]


def test_per_layer_columns_show_each_layer_mean_over_seeds(tmp_path):
    from trajmoe.experiment.report import table_values, write_report
    from trajmoe.experiment.spec import Spec

    def rt(*shares):
        return {"rt": {"json": {"routing": {f"layer{i}": {"busiest_share": {"id": s}} for i, s in enumerate(shares)}}}}

    results = {"runs": {"moe": {0: rt(0.5, 0.9), 1: rt(0.7, 1.0)}, "dense": {0: {}}}, "data": {}}
    table = {"columns": [{"name": "busiest", "step": "rt", "path": "routing.*.busiest_share.id", "fmt": ".2f"}]}
    assert table_values(None, results, table)["moe"]["busiest"] == [[0.5, 0.9], [0.7, 1.0]]
    spec = Spec(path=tmp_path / "s.yaml", name="s", title="t", vars={}, data=[], variants={"moe": {}, "dense": {}},
                steps=[], tables=[table])
    text = write_report(spec, results, tmp_path, seeds=2).read_text()
    assert "| moe | 0.60 / 0.95 |" in text and "| dense |" not in text and "Not measured (no finished step feeds this table): dense." in text
    spec.figures = [{"type": "bars", "column": "busiest"}]
    with pytest.raises(ValueError, match="'busiest'.*one value per item"):
        write_report(spec, results, tmp_path, seeds=2)


def test_demo_smoke_end_to_end_and_resume(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--scale", "smoke"]) == 0
    report = (out / "report.md").read_text()
    for title in ("Track models on held-out in-domain episodes", "Policies, closed loop",
                  "TrajMoE planner, open loop", "MoE routing"):
        assert title in report, title
    assert "| track-moe |" in report and "| planner-moe |" in report and "| planner-shipped |" in report
    assert "n/a" not in report.split("## Ground-truth")[0], report
    for img in ("figures/ood_tracks.png", "runs/track-moe/seed0/routing.png", "runs/track-moe/seed0/track_pred.png"):
        assert (out / img).stat().st_size > 1000, img
    results = json.loads((out / "results.json").read_text())
    assert results["runs"]["track-moe"]["0"]["policy_eval"]["json"]["episodes"] == 1
    capsys.readouterr()
    # a rerun skips every finished step
    assert main(["demo", "--out", str(out), "--scale", "smoke"]) == 0
    assert "skip" in capsys.readouterr().err


def test_rerun_with_another_command_is_refused(tmp_path, capsys):
    spec = tmp_path / "s.yaml"
    spec.write_text(
        "name: s\nscales: {smoke: {n: 3}, cpu: {n: 4}}\nvariants: {a: {}}\n"
        "steps: [{name: p, cmd: [train, track, --list-presets, --set, 'steps={n}']}]\n"
        "tables: [{title: t, columns: [{name: c, step: p, path: x}]}]\n"
    )
    out = tmp_path / "o"
    assert main(["experiment", str(spec), "--out", str(out), "--scale", "smoke"]) == 0
    assert main(["experiment", str(spec), "--out", str(out), "--scale", "smoke"]) == 0  # same command: skipped
    assert main(["experiment", str(spec), "--out", str(out), "--scale", "cpu"]) == 2
    assert "another command" in capsys.readouterr().err


def test_specs_share_runs_through_runs_dir_and_run_name(tmp_path, capsys):
    # spec 2's variant "m" names spec 1's run "a": with one runs_dir its finished step is skipped, not redone
    cmd = "steps: [{name: p, cmd: [train, track, --list-presets, --set, 'x={run}']}]\n"
    (tmp_path / "one.yaml").write_text("name: one\nscales: {smoke: {}}\nvariants: {a: {}}\n" + cmd)
    (tmp_path / "two.yaml").write_text("name: two\nscales: {smoke: {}}\nvariants: {m: {run_name: a}, z: {}}\n" + cmd)
    shared = tmp_path / "shared-runs"
    for spec, out in (("one", "o1"), ("two", "o2")):
        assert main(["experiment", str(tmp_path / f"{spec}.yaml"), "--out", str(tmp_path / out), "--scale", "smoke",
                     "--var", f"runs_dir={shared}"]) == 0
    err = capsys.readouterr().err
    assert "skip" in err and "m/seed0/p" in err  # reused, not retrained
    assert sorted(p.name for p in shared.iterdir()) == ["a", "z"]
    results = json.loads((tmp_path / "o2" / "results.json").read_text())
    assert results["run_dirs"] == {"m": str(shared / "a"), "z": str(shared / "z")}
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nscales: {smoke: {}}\nvariants: {m: {run_name: ../x}}\n" + cmd)
    assert main(["experiment", str(bad), "--out", str(tmp_path / "o3"), "--scale", "smoke"]) == 2
    assert "run_name" in capsys.readouterr().err


def test_report_only_collects_finished_steps_and_runs_nothing(tmp_path):
    spec = tmp_path / "s.yaml"
    spec.write_text(
        "name: s\nscales: {smoke: {}}\nvariants: {a: {}, b: {}}\n"
        "steps: [{name: p, cmd: [train, track, --list-presets]}]\n"
        "tables: [{title: t, columns: [{name: c, step: p, path: x}]}]\n"
    )
    out = tmp_path / "o"
    assert main(["experiment", str(spec), "--out", str(out), "--scale", "smoke", "--only", "a"]) == 0
    assert main(["experiment", str(spec), "--out", str(out), "--scale", "smoke", "--report-only"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert set(results["runs"]["a"]["0"]) == {"p"} and results["runs"]["b"]["0"] == {}
    assert not (out / "runs" / "b").exists()


def test_success_columns_pool_seeds_with_wilson_intervals(tmp_path):
    from trajmoe.experiment.report import table_values, write_report
    from trajmoe.experiment.spec import Spec

    def ev(k, n, task_k):
        return {"json": {"successes": k, "episodes": n, "success_rate": k / n,
                         "tasks": {"a": {"successes": task_k, "episodes": n // 2}}}}

    results = {"runs": {"none": {0: {"ev": ev(10, 20, 6)}, 1: {"ev": ev(14, 20, 9)}},
                        "old": {0: {"ev": {"json": {"success_rate": 0.25, "episodes": 20}}}}},
               "data": {}}
    table = {"columns": [{"name": "s", "step": "ev", "kind": "success"},
                         {"name": "a", "step": "ev", "kind": "success", "path": "tasks.a"}]}
    vals = table_values(None, results, table)
    assert vals["none"]["s"] == [(10, 20), (14, 20)] and vals["none"]["a"] == [(6, 10), (9, 10)]
    assert vals["old"]["s"] == [(5, 20)]  # results written before `successes` existed
    spec = Spec(path=tmp_path / "s.yaml", name="s", title="t", vars={}, data=[], variants={"none": {}}, steps=[],
                tables=[table])
    text = write_report(spec, results, tmp_path, seeds=2).read_text()
    # 24/40 pooled = 60 %, Wilson 95 % [44.6, 73.7]; per-seed 50 and 70 -> 60.0 ± 14.1
    assert "| none | 60.0 [44.6, 73.7] n=40 (seeds 60.0 ± 14.1) | 75.0 [53.1, 88.8] n=20 (seeds 75.0 ± 21.2) |" in text
    assert "| old | 25.0 [11.2, 46.9] n=20 |" in text


def test_verdicts_decide_by_interval(tmp_path):
    from trajmoe.experiment.spec import Spec
    from trajmoe.experiment.verdict import check_verdicts, decide
    from trajmoe.experiment.report import write_report

    def ev(mse, ci, k=None, n=None):
        j = {"m": {"mse": mse, "ci": ci}}
        if k is not None:
            j.update(successes=k, episodes=n)
        return {"json": j}

    results = {"runs": {"moe": {0: {"e": ev(1.0, 0.1, 18, 20)}, 1: {"e": ev(1.1, 0.1, 19, 20)}, 2: {"e": ev(0.9, 0.1, 17, 20)}},
                        "dense": {0: {"e": ev(2.0, 0.1, 10, 20)}, 1: {"e": ev(2.1, 0.1, 9, 20)}, 2: {"e": ev(1.9, 0.1, 11, 20)}},
                        "one": {0: {"e": ev(1.5, 0.1)}}}, "data": {}}
    a = {"variant": "moe", "step": "e", "path": "m.mse"}
    b = {"variant": "dense", "step": "e", "path": "m.mse"}
    lower = decide({"claim": "c", "a": a, "b": b, "better": "lower"}, results)
    assert lower["verdict"] == "reproduced" and "difference -1.000" in lower["ours"]
    assert "± 0.000" in lower["ours"]  # 3 paired seeds, differences all -1.0: Student's t half-width 0
    # with per-seed intervals (0.1 each, independent): sqrt(6 * 0.01) / 3 = 0.082
    with_ci = decide({"claim": "c", "a": {**a, "ci": "m.ci"}, "b": {**b, "ci": "m.ci"}, "better": "lower"}, results)
    assert "± 0.082" in with_ci["ours"]
    assert decide({"claim": "c", "a": a, "b": b, "better": "higher"}, results)["verdict"] == "contradicted"
    # one seed without an interval: inconclusive, and says why
    one = decide({"claim": "c", "a": {"variant": "one", "step": "e", "path": "m.mse"}, "b": {"value": 0}, "better": "higher"},
                 results)
    assert one["verdict"] == "inconclusive" and "no interval" in one["ours"]
    # with its interval (1.5 +- 0.1 vs the constant 0): decided
    one_ci = {"variant": "one", "step": "e", "path": "m.mse", "ci": "m.ci"}
    assert decide({"claim": "c", "a": one_ci, "b": {"value": 1.45}, "better": "higher"}, results)["verdict"] == "inconclusive"
    assert decide({"claim": "c", "a": one_ci, "b": {"value": 1.3}, "better": "higher",
                   "words": ["learned", "worse", "unclear"]}, results)["verdict"] == "learned"
    # success: 54/60 [79.9, 95.3] vs 30/60 [37.7, 62.3] -> no overlap
    s = decide({"claim": "c", "a": {"variant": "moe", "step": "e", "kind": "success"},
                "b": {"variant": "dense", "step": "e", "kind": "success"}, "better": "higher"}, results)
    assert s["verdict"] == "reproduced" and "90.0 %" in s["ours"] and "50.0 %" in s["ours"]
    assert decide({"claim": "c", "a": {"variant": "absent", "step": "e", "path": "m.mse"}, "b": b, "better": "lower"},
                  results)["verdict"] == "n/a"
    for bad, msg in (([{"a": a, "b": b, "better": "lower"}], "claim"), ([{"claim": "c", "a": a, "b": b, "better": "up"}], "better"),
                     ([{"claim": "c", "a": a, "b": {"variant": "x"}, "better": "lower"}], "b needs"),
                     ([{"claim": "c", "a": a, "b": b, "better": "lower", "x": 1}], "unknown"),
                     ([{"claim": "c", "a": {**a, "kind": "success"}, "b": b, "better": "lower"}], "success rate with")):
        with pytest.raises(ValueError, match=msg):
            check_verdicts(bad, "spec s.yaml")
    spec = Spec(path=tmp_path / "s.yaml", name="s", title="t", vars={}, data=[], variants={"moe": {}}, steps=[],
                verdicts=[{"claim": "MoE beats dense", "paper": "x", "a": a, "b": b, "better": "lower"}])
    text = write_report(spec, results, tmp_path, seeds=3).read_text()
    assert text.index("## Verdict") < text.index("## Steps") and "| MoE beats dense | x |" in text and "**reproduced**" in text
    assert "In short: 1 reproduced (of 1 claims)." in text and "- **reproduced**: MoE beats dense." in text


def test_commands_hand_their_record_back_without_printing_it(capsys):
    # the experiment runner's path: parse, call in-process, take the returned record (stdout is not read)
    from trajmoe.cli import Result, parse_command, run_command

    argv = ["bench", "moe", "--tokens", "32", "--dim", "16", "--repeats", "1", "--json"]
    res = run_command(parse_command(argv))
    assert isinstance(res, Result) and res.rc == 0 and res.record["grouped"]["ratio"] > 0
    assert capsys.readouterr().out == ""  # the handler printed nothing; `main` prints the record for --json
    assert main(argv) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(printed) == set(res.record)


def test_training_commands_declare_themselves_resumable_and_bad_commands_are_usage_errors():
    from trajmoe.cli import UsageError, is_training_error, parse_command
    from trajmoe.train.trainer import TrainingError

    for argv in (["train", "track", "--data", "d", "--out", "o"], ["train", "policy", "--data", "d", "--out", "o"],
                 ["train", "planner", "--preset", "tiny", "--data", "d", "--out", "o"],
                 ["finetune", "planner", "--run", "r", "--out", "o"]):
        assert parse_command(argv).resumable is True, argv
    assert not getattr(parse_command(["eval", "track", "--run", "r", "--data", "d"]), "resumable", False)
    for bad in (["nonsense"], ["train"], ["eval", "track", "--no-such-flag"]):
        with pytest.raises(UsageError):
            parse_command(bad)
    assert is_training_error(TrainingError("non-finite loss")) and not is_training_error(RuntimeError("x"))
    assert not is_training_error(ValueError("x"))


def _run_spec(tmp_path, text: str, *extra: str) -> int:
    """Write spec `text` to tmp_path/s.yaml and run it at smoke scale into tmp_path/o; the exit code."""
    (tmp_path / "s.yaml").write_text(text)
    return main(["experiment", str(tmp_path / "s.yaml"), "--out", str(tmp_path / "o"), "--scale", "smoke", *extra])


def test_var_typos_and_unknown_variants_are_refused_before_anything_runs(tmp_path, capsys):
    text = ("name: s\nvars: {n: 1, flag: true, where: here}\nscales: {smoke: {}}\nvariants: {a: {}}\n"
            "data: [{name: d, cmd: [train, track, --list-presets, --set, 'x={dir}/marker']}]\n"
            "steps: [{name: p, cmd: [train, track, --list-presets]}]\n")
    out = tmp_path / "o"
    assert _run_spec(tmp_path, text, "--var", "runs_dri=/x") == 2
    assert "runs_dri" in capsys.readouterr().err and not out.exists()
    for bad, word in (("flag=flase", "true or false"), ("where=", "empty")):  # values of the wrong kind
        assert _run_spec(tmp_path, text, "--var", bad) == 2
        assert word in capsys.readouterr().err and not out.exists()
    assert _run_spec(tmp_path, text, "--only", "zz") == 2
    assert "zz" in capsys.readouterr().err and not (out / "data").exists()  # refused before the data step ran
    assert _run_spec(tmp_path, text, "--var", "n=2") == 0
    assert "`--var n=2`" in (out / "report.md").read_text()  # the report says which overrides made it


def test_a_failing_step_still_leaves_the_report_of_finished_steps(tmp_path):
    assert _run_spec(tmp_path, "name: s\nscales: {smoke: {}}\nvariants: {a: {}, b: {bad: true}}\n"
                     "steps: [{name: p, cmd: [train, track, --list-presets]},\n"
                     "        {name: q, when: bad, cmd: [eval, track, --run, '{dir}/missing', --data, '{dir}/missing']}]\n"
                     "tables: [{title: t, columns: [{name: c, step: q, path: x}]}]\n"
                     "figures: [{type: bars, table: 0, column: c, title: never drawn}]\n") == 2
    report = (tmp_path / "o" / "report.md").read_text()
    assert "| a/seed0/p |" in report and "never drawn" not in report  # a column no step filled draws no empty chart
    assert "Not measured (no finished step feeds this table): a, b." in report  # no rows of n/a cells


@pytest.mark.parametrize("name", ["tab1f", "tab1d", "tab1e", "tab1abc"])
def test_track_specs_carry_policy_baselines_without_track_models(name):
    s = load_spec(find_config(name, "experiments"), "cpu")
    env = {"configs": str(PACKAGED), **s.vars, "dir": "/exp"}
    for v, conditioning in (("plain-BC", "none"), ("oracle", "oracle")):
        e = {**env, **s.variants[v], "variant": v, "seed": 0, "run": "/exp/runs/x"}
        run = [st for st in s.steps if not (st.when and not e.get(st.when)) and not (st.unless and e.get(st.unless))]
        assert [st.name for st in run] == ["policy", "policy_eval"]
        assert substitute(run[0].cmd, e, "policy")[5] == conditioning
    e = {**env, **s.variants[next(iter(s.variants))], "run": "/exp/runs/x", "seed": 0}
    assert "adaptive_mask" in substitute(next(st for st in s.steps if st.name == "policy").cmd, e, "policy")


def test_spec_variable_typos_are_refused_before_anything_runs(tmp_path, capsys):
    """A copy of tab1e with `model_set:` for `model_sets:` in one variant trained 4 experts in the `experts-1`
    row (issue 28, item 3); a scale-level typo was caught only after the data step had run."""
    from trajmoe.cli import main
    from trajmoe.configs import find_config

    text = find_config("tab1e", "experiments").read_text()
    typo = tmp_path / "variant.yaml"
    typo.write_text(text.replace("model_sets: [model.moe.num_experts=1]", "model_set: [model.moe.num_experts=1]", 1))
    with pytest.raises(ValueError, match=r"variant 'experts-1' sets model_set, which no step"):
        load_spec(typo, "smoke")
    scale_typo = tmp_path / "scale.yaml"
    scale_typo.write_text(text.replace("    track_sets: [steps=3,", "    track_set: [steps=3,", 1))
    with pytest.raises(ValueError, match=r"scale 'smoke' sets track_set"):
        load_spec(scale_typo, "smoke")
    undefined = tmp_path / "undefined.yaml"  # a step names a variable that nothing defines at this scale
    undefined.write_text(text.replace('--data, "{data_dir}/id-val", --max-samples', '--data, "{data_dirr}/id-val", --max-samples', 1))
    with pytest.raises(ValueError, match=r"step 'track_eval' of variant 'experts-1' uses \{data_dirr\}"):
        load_spec(undefined, "smoke")
    out = tmp_path / "out"
    assert main(["experiment", str(typo), "--scale", "smoke", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "model_set" in err and not out.exists()
