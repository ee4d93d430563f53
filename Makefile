# Two commands do all set-up on a fresh machine:
#   make demo   runs every registered experiment (quick mode) and writes reports/index.html
#   make test   runs the default test suite
# Each creates .venv when missing and installs torch==2.13.0 FIRST (the CPU wheel; a bare
# `torch` requirement would pull a multi-GB CUDA build), then kernelens with its extras.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.kernelens-installed
DEMO_STAMP := $(VENV)/.kernelens-demo-installed
REPORT_DIR ?= reports
SUDO ?= $(shell [ "$$(id -u)" = 0 ] || echo sudo)

BENCH_VENV ?= .venv-bench
BENCH_PY := $(BENCH_VENV)/bin/python
BENCH_STAMP := $(BENCH_VENV)/.kernelens-installed
NT_VENV ?= .venv-nt

.PHONY: demo test test-all lint bench bench-env venv clean docs report-check plain-check

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev,experiments]"
	touch $(STAMP)

$(DEMO_STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[experiments,fast]"
	touch $(DEMO_STAMP)

venv: $(STAMP)

demo: $(DEMO_STAMP)
	$(PY) -m kernelens.cli report --quick --out $(REPORT_DIR)

test: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider

test-all: $(STAMP)
	$(PY) -m pytest -q -m "slow or not slow"

# Benchmarks run kernelens and its peers (xrfm, explaind, neural-tangents) in one process, in a
# separate venv so the peers never become dependencies. Results are appended to BENCHMARKS.md.
# neural-tangents (numpy < 2, jax 0.4.23) gets its own venv, timed as a subprocess.
$(BENCH_STAMP): pyproject.toml benchmarks/requirements-peers.txt benchmarks/requirements-nt.txt benchmarks/constraints.txt
	test -x $(BENCH_PY) || $(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_PY) -m pip install -q torch==2.13.0
	$(BENCH_PY) -m pip install -q -c benchmarks/constraints.txt -e ".[dev]"
	$(BENCH_PY) -m pip install -q -c benchmarks/constraints.txt -r benchmarks/requirements-peers.txt
	$(BENCH_PY) -m pip install -q -c benchmarks/constraints.txt --ignore-requires-python explaind==0.1.0
	test -x $(NT_VENV)/bin/python || $(PYTHON) -m venv $(NT_VENV)
	$(NT_VENV)/bin/python -m pip install -q -r benchmarks/requirements-nt.txt
	touch $(BENCH_STAMP)

bench-env: $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	for b in kernels linalg ntk epk rfm sparse; do \
	  if [ -f benchmarks/$$b.py ]; then KERNELENS_NT_PYTHON=$(NT_VENV)/bin/python $(BENCH_PY) -m benchmarks.$$b --record || exit 1; fi; \
	done

# The documentation site (mkdocs + material + mkdocstrings), strict: a warning (a broken link or
# API reference) fails the build. Output in site/.
docs: $(STAMP)
	$(PY) -m mkdocs build --strict --site-dir site

# The report as a reader's browser sees it: headless Chromium (Debian packages, installed when
# missing) opens it and checks images, anchors and the console, then takes a screenshot.
report-check: $(STAMP)
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  ($(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q --no-install-recommends chromium chromium-driver)
	$(PY) -m pip install -q "selenium>=4.15"
	$(PY) -m kernelens.cli report --quick --out $(REPORT_DIR)
	$(PY) scripts/report_check.py $(REPORT_DIR)

# A plain, non-editable install with the core dependencies only, in a fresh venv (minutes):
# kernelens --version, list, and run kernel_baselines --quick must work.
plain-check: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider -m slow tests/test_cli_plain_install.py

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks scripts docs/examples
	$(VENV)/bin/ruff format --check src tests benchmarks scripts docs/examples

clean:
	rm -rf $(VENV) $(REPORT_DIR) site build *.egg-info src/*.egg-info
