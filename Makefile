# Set-up and everyday commands. `make dashboard` and `make test` each do all their own installing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: dashboard test lint bench system help

help:
	@echo "make dashboard   install (first time) and start the dashboard on http://127.0.0.1:8501"
	@echo "make test        install (first time), lint (ruff, import-linter's layers) and run the test suite"
	@echo "make bench       print the training-speed benchmark"

PIP := $(PY) -m pip install --quiet --disable-pip-version-check

$(VENV)/.app: pyproject.toml requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) -e .
	touch $@

$(VENV)/.dev: $(VENV)/.app requirements-dev.txt requirements-cluster.txt
	$(PIP) -e '.[cluster,dev]'
	touch $@

system:
	@bash scripts/system-packages.sh

dashboard: $(VENV)/.app system
	$(VENV)/bin/streamlit run dashboard.py

# the style and the architecture: ruff, and the import contracts of pyproject.toml (lab's layers)
lint: $(VENV)/.dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports

# two pytest-xdist workers (one torch thread each), each test file on one worker: a module-scoped fixture (a
# trained net, a Ray cluster) is built once; the costliest files first (tests/conftest.py orders them)
test: $(VENV)/.dev system lint
	$(PY) -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder

bench: $(VENV)/.app
	$(PY) -m lab bench --sweep
