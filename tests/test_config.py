"""Config helpers: --set parsing, strict keys, section routing."""

import dataclasses

import pytest

from trajmoe.config import load_yaml, parse_overrides, resolve_sections


@dataclasses.dataclass(frozen=True)
class A:
    lr: float = 0.1
    steps: int = 1


@dataclasses.dataclass(frozen=True)
class B:
    dim: int = 8
    layers: tuple[int, ...] = (0,)


def test_parse_overrides_reads_scientific_floats_and_yaml():
    got = parse_overrides(["lr=1e-3", "x=5E+2", "l=[1, 2]", "t=true", "s=abc", "n=-2e-4"])
    assert got == {"lr": 0.001, "x": 500.0, "l": [1, 2], "t": True, "s": "abc", "n": -0.0002}
    with pytest.raises(ValueError, match="key=value"):
        parse_overrides(["novalue"])


def test_yaml_files_read_scientific_floats(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("train:\n  lr: 3e-4\n")
    assert load_yaml(p) == {"train": {"lr": 3e-4}}
    p.write_text("train: [unclosed\n")
    with pytest.raises(ValueError, match="c.yaml"):
        load_yaml(p)


def test_resolve_sections_routes_bare_and_dotted_keys():
    out = resolve_sections({"train": A(), "model": B()}, {"train": {"lr": 0.5}}, {"steps": 3, "model.layers": [1, 2]})
    assert out["train"] == A(lr=0.5, steps=3) and out["model"] == B(layers=(1, 2))
    with pytest.raises(ValueError, match="valid keys: model.dim, model.layers, train.lr, train.steps"):
        resolve_sections({"train": A(), "model": B()}, None, {"nope": 1})
    with pytest.raises(ValueError, match="unknown config section 'x'"):
        resolve_sections({"train": A()}, {"x": {}}, {})
