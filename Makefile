# The two commands: `make demo` and `make test` each create .venv if missing and install meshlm into it.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint test-torch golden clean

$(PY):
	$(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)

$(STAMP): $(PY) setup.cfg pyproject.toml
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/meshlm train --preset tiny --run-dir runs/demo
	$(VENV)/bin/meshlm generate --run-dir runs/demo --prompt "KING." --prompt "To be, or not to be" --max-new-tokens 48

# The PyTorch comparisons need the optional torch extra (several GB from PyPI): they run in test-torch.
test: $(STAMP) lint
	$(PY) -m pytest -q -m "not torch"

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test-torch: $(STAMP)
	$(PY) -m pip install --quiet -e '.[test,torch]'
	$(PY) -m pytest -q -m torch

# Rewrite tests/parallel/golden/*.json after an intended sharding change; review the diff before committing.
golden: $(STAMP)
	$(PY) -m tests.parallel.regen_golden

clean:
	rm -rf $(VENV) runs
