# The two commands: `make demo` and `make test` each create .venv if missing and install meshlm into it.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint test-torch clean

$(PY):
	$(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)

$(STAMP): $(PY) setup.cfg pyproject.toml
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

# The research loop in small: a scaling sweep on the embedded corpus (finished runs are reused), few-shot evaluation
# of every swept model, then the fit and the report (runs/demo/report.md).
demo: $(STAMP)
	$(VENV)/bin/meshlm sweep run experiments/sweeps/demo.yaml --out runs/demo
	$(VENV)/bin/meshlm eval --sweep runs/demo --tasks icl,label_mapping,arithmetic_2da --shots 0,1,4,16 --seeds 3 --limit 48
	$(VENV)/bin/meshlm sweep fit runs/demo

# The PyTorch comparisons need the optional torch extra (several GB from PyPI): they run in test-torch.
test: $(STAMP) lint
	$(PY) -m pytest -q -m "not torch"

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test-torch: $(STAMP)
	$(PY) -m pip install --quiet -e '.[test,torch]'
	$(PY) -m pytest -q -m torch

clean:
	rm -rf $(VENV) runs
