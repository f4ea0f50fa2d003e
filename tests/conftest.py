"""Test-session settings shared by every test file.

pytest-xdist runs two workers on the two CI cores; each worker must use ONE intra-op thread:
with 2 workers x 2 OpenMP threads on 2 cores, OpenMP's spin-waiting made a tiny training step
~100x slower (measured 6 s vs 0.044 s).
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

torch.set_num_threads(1)

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def mw_data(tmp_path_factory):
    """Two tiny real MetaWorld domains (generated once per test worker): in-domain reach-v3 from the
    corner camera with actions, out-of-domain action-free reach-v3 from corner2 with visual variation."""
    from trajmoe.data.generate import generate
    from trajmoe.data.specs import DomainSpec

    root = tmp_path_factory.mktemp("mw")
    specs = [
        (DomainSpec("id", ("reach-v3",), 1, camera="corner", max_steps=120), str(root / "id")),
        (DomainSpec("ood", ("reach-v3",), 1, camera="corner2", action_free=True, visual_variation=True,
                    variation_seed=7, max_steps=120), str(root / "ood")),
    ]
    summary = generate(specs, workers=1, progress=False)
    assert summary.done == 2, summary
    return {"id": root / "id", "ood": root / "ood", "root": root}


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Some code under test sets torch's thread count (benchmarks, rollout workers run in-process);
    reset it before every test so a later test's in-process run matches its 1-thread subprocess bit for bit."""
    torch.set_num_threads(1)
    yield
