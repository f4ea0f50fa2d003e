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
