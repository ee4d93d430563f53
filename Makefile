# Two commands do all set-up on a fresh machine:
#   make demo   runs every registered experiment (quick mode) and writes reports/index.html
#   make test   runs the default test suite
# Each creates .venv when missing and installs torch==2.13.0 FIRST (the CPU wheel; a bare
# `torch` requirement would pull a multi-GB CUDA build), then kernelens with its extras.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.kernelens-installed
REPORT_DIR ?= reports

.PHONY: demo test test-all lint bench venv clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(PY) -m kernelens.cli report --quick --out $(REPORT_DIR)

test: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider

test-all: $(STAMP)
	$(PY) -m pytest -q -m "slow or not slow"

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

clean:
	rm -rf $(VENV) $(REPORT_DIR) build *.egg-info src/*.egg-info
