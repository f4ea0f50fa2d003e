# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.trajmoe-installed
export MUJOCO_GL ?= egl
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: install test test-libero demo bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)

# torch first, pinned to the local CPU build: a range would pull a multi-GB CUDA wheel.
$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[sim,dev]'
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -n 2 --dist loadfile --durations=15

# LIBERO (optional extra, ~1.6 GB installed: not part of `make test`); see docs/libero.md
LIBERO_STAMP := $(VENV)/.trajmoe-libero-installed
$(LIBERO_STAMP): pyproject.toml | $(STAMP)
	$(PY) -m pip install -q -e '.[sim,libero,dev]'
	touch $(LIBERO_STAMP)

test-libero: $(LIBERO_STAMP)
	OMP_NUM_THREADS=1 $(PY) -m pytest -q tests/test_libero.py tests/test_libero_data.py -rs --durations=5

demo: $(STAMP)
	$(VENV)/bin/trajmoe demo --out runs/demo

bench: $(STAMP)
	$(VENV)/bin/trajmoe bench moe --device cpu --tokens 8192 --dim 384 --experts 4 --top-k 1 --json

clean:
	rm -rf $(VENV) runs .pytest_cache
