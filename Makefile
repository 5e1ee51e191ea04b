# quantwarehouse: `make demo` sets up and runs the main job on synthetic data; `make test` runs the tests.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PRESET ?= demo

.PHONY: setup demo run test lint bench bars returns daily-refresh dry-run clean-runtime

$(STAMP): pyproject.toml scripts/setup_venv.sh
	bash scripts/setup_venv.sh $(PYTHON)
	touch $(STAMP)

setup: $(STAMP)

## The main job on the embedded synthetic data: ingest, then refresh every layer.
demo: setup run

run: setup
	$(BIN)/python orchestrate.py ingest --source synthetic --preset $(PRESET)
	$(BIN)/python orchestrate.py daily-refresh --all

## Set up and run the whole test suite (what CI runs), then the linters.
test: setup
	bash scripts/setup_test_deps.sh
	$(BIN)/python -m pytest -q -n 2 --dist loadfile
	$(MAKE) lint

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/sqlfluff lint models macros

bench: setup
	$(BIN)/python -m benchmarks.run

bars: setup
	$(BIN)/python orchestrate.py daily-refresh --bars

returns: setup
	$(BIN)/python orchestrate.py daily-refresh --returns

daily-refresh: setup
	$(BIN)/python orchestrate.py daily-refresh --all

dry-run: setup
	$(BIN)/python orchestrate.py daily-refresh --all --dry-run

clean-runtime:
	rm -rf data/runs data/export data/lakehouse .logs dbt_project/target dbt_project/logs
