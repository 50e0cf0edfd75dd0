# The README's two commands: `make demo` and `make test`. Both set up what they need.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
export LUMENSERVE_HOME ?= $(CURDIR)/.lumenserve
# Scratch files (pytest's tmp_path, TorchServe, the JVM) stay inside the work tree.
export TMPDIR ?= $(LUMENSERVE_HOME)/tmp
export ORT_DISABLE_TELEMETRY := 1
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: setup test test-fast lint typecheck pytest demo demo-quick protos clean

setup:
	@mkdir -p "$(TMPDIR)"
	@bash scripts/setup.sh

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports

typecheck: setup
	$(VENV)/bin/mypy

pytest: setup
	$(PY) -m pytest

test: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports
	$(PY) -m pytest

# The same checks without the tests marked slow (real TorchServe, Prometheus, Chromium,
# training runs, soak and drain): the loop to run while changing code.
test-fast: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(PY) -m pytest -m "not slow"

demo: setup
	$(VENV)/bin/lumenserve demo

demo-quick: setup
	$(VENV)/bin/lumenserve demo --quick

protos: setup
	$(PY) scripts/gen_protos.py

clean:
	rm -rf .lumenserve runs model_repository model_store test-artifacts .pytest_cache .mypy_cache .ruff_cache .import_linter_cache
