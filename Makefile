# Perceiver AR reproduction suite. `make setup` then `make test`.
PY ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
export JAX_PLATFORMS ?= cpu

.PHONY: setup test test-e2e test-all lint smoke run-copy reproduce-all clean

setup:  ## create the virtualenv and install the suite with its test tools
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install -e '.[dev]'
	bash scripts/fetch_demo_sources.sh "$(VENV)/share/repro-demo"

test:  ## the default test run: everything but tests marked slow or e2e (<= 10 minutes on 2 cores)
	$(BIN)/python -m pytest -q

test-e2e:  ## end-to-end CLI runs in subprocesses (CI runs them after `make test`)
	$(BIN)/python -m pytest -q -m 'e2e and not slow'

test-all:  ## every test, slow and e2e ones included
	$(BIN)/python -m pytest -q -m ''

lint:
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

smoke:  ## every discovered section's smoke presets (and the smoke studies), end to end, then their report in runs/smoke/report (demo corpora built on first use)
	$(BIN)/repro reproduce --scale smoke --runs runs/smoke --out runs/smoke/report

run-copy:  ## the copy task's CPU preset (a few minutes)
	$(BIN)/repro run copy

SCALE ?= cpu
OUT ?= results
reproduce-all:  ## every section's presets at SCALE (smoke | cpu | paper), then repro report into OUT
	$(BIN)/repro reproduce --scale $(SCALE) --runs runs/$(SCALE) --out $(OUT) $(if $(FORCE),--force,)

clean:
	rm -rf runs .pytest_cache
