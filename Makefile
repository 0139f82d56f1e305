# The two commands: `make demo` and `make test` each create .venv if missing and install meshlm into it.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TORCH_STAMP := $(VENV)/.installed-torch
# The PyTorch comparisons need torch. This version's CPU build (a 190 MB wheel) lies on the project's machines, where pip
# finds it before PyPI's CUDA build (several GB); elsewhere pip takes PyPI's build of the same version.
TORCH ?= torch==2.13.0

.PHONY: demo test test-fast lint golden clean bench-gpu bench-gpu-installed

$(PY):
	$(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)

$(STAMP): $(PY) setup.cfg pyproject.toml setup.py
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

# The torch extra (torch, transformers, accelerate, lm-eval) for the comparisons against PyTorch and lm-eval.
$(TORCH_STAMP): $(STAMP)
	$(PY) -m pip install --quiet '$(TORCH)' -e '.[test,torch]'
	touch $(TORCH_STAMP)

# The research loop in small: a scaling sweep on the embedded corpus (finished runs are reused), few-shot evaluation
# of every swept model, then the fit and the report (runs/demo/report.md). The fit skips the leave-one-budget-out
# refit: without the largest budget the demo keeps 6 runs, as many as the law needs, so its prediction says little.
demo: $(STAMP)
	$(VENV)/bin/meshlm sweep run experiments/sweeps/demo.yaml --out runs/demo
	$(VENV)/bin/meshlm eval --sweep runs/demo --tasks icl,label_mapping,arithmetic_2da --shots 0,1,4,16 --seeds 3 --limit 48
	$(VENV)/bin/meshlm sweep fit runs/demo --no-validate

# Every test, the PyTorch, transformers and lm-eval comparisons included; two workers (pytest-xdist), since most
# tests wait on single-threaded tracing and compilation. PYTEST_WORKERS=0 runs them in this process.
PYTEST_WORKERS ?= 2
test: $(TORCH_STAMP) lint
	$(PY) -m pytest -q -n $(PYTEST_WORKERS) --dist worksteal --durations=25 -m "not gpu and not published_data"

# While iterating: no slow tests and no PyTorch comparisons (the torch extra is not needed).
test-fast: $(STAMP)
	$(PY) -m pytest -q -n $(PYTEST_WORKERS) --dist worksteal -m "not slow and not torch and not gpu and not published_data"

# On a machine with one NVIDIA GPU: JAX's CUDA build (the version of the JAX installed), the GPU tests, then GPT-3 XL
# bf16 training MFU, decode and scoring throughput in one table (docs/performance.md). Offline, point WHEELS at a
# folder of wheels (pip download 'jax[cuda12]==VERSION' -d DIR on a connected machine).
GPU_JAX ?= jax[cuda12]
WHEELS ?=
bench-gpu: $(STAMP)
	$(PY) -m pip install --quiet $(if $(WHEELS),--no-index --find-links $(WHEELS)) \
		"$(GPU_JAX)==$$($(PY) -c 'import jax; print(jax.__version__)')"
	JAX_PLATFORMS=cuda $(PY) -m meshlm.experiments.bench.gpu_check

# The same check with a Python that already has a CUDA JAX, flax, optax, orbax, sentencepiece, tokenizers, pyyaml and
# pytest (a GPU image, no network): meshlm itself is installed without fetching anything.
GPU_PYTHON ?= python3
bench-gpu-installed:
	$(GPU_PYTHON) -m pip install --quiet --no-deps --no-index --no-build-isolation -e .
	JAX_PLATFORMS=cuda $(GPU_PYTHON) -m meshlm.experiments.bench.gpu_check

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# Rewrite tests/parallel/golden/*.json after an intended sharding change; review the diff before committing.
golden: $(STAMP)
	$(PY) -m tests.parallel.regen_golden

clean:
	rm -rf $(VENV) runs
