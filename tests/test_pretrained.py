"""Shipped converged models (trajmoe/configs/pretrained): each loads and reproduces its recorded held-out
figures (a track model's skill scores, a policy's action MSE) on its check episode, regenerated here with
the simulator (bit-identical to the one it was measured on)."""

import pytest

from trajmoe.pretrained import check_pretrained, list_pretrained, manifest, pretrained_run, regenerate_check_episode


def test_shipped_models_are_listed_with_complete_manifests():
    names = list_pretrained()
    assert names, "no shipped model in trajmoe/configs/pretrained"
    for name in names:
        m = manifest(name)
        assert {"command", "seed", "data", "heldout", "check", "validation", "cpu_hours"} <= set(m), name
        assert (pretrained_run(name) / "model.safetensors").is_file()
    with pytest.raises(ValueError, match="no shipped model 'nope'"):
        pretrained_run("nope")


@pytest.mark.parametrize("name", list_pretrained())
def test_shipped_model_reproduces_its_check(name, tmp_path):
    res = check_pretrained(name, regenerate_check_episode(name, tmp_path / "check"))
    for k, v in res["recorded"].items():
        assert res["measured"][k] == pytest.approx(v, abs=1e-5), k
