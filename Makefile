# quantwarehouse: `make demo` sets up and runs the main job on synthetic data; `make test` runs the tests.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PRESET ?= demo

.PHONY: setup demo run test lint bench bars returns emas features daily-refresh validate dry-run clean-runtime

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
	$(BIN)/python -m pytest -q -n 2 --dist loadfile --durations=25
	$(MAKE) lint

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	# The dbt templater connects to a warehouse: give it a throwaway one.
	lint_dir=$$(mktemp -d) && QWH_WAREHOUSE=$$lint_dir/lint.duckdb $(BIN)/sqlfluff lint models macros

bench: setup
	$(BIN)/python -m benchmarks.run

## daily-refresh conveniences (docs/operations.md). ARGS passes more flags, e.g.
## `make emas ARGS="--tfs 1d,7d --periods 10"` or `make daily-refresh ARGS="--quiet"`.
bars: setup
	$(BIN)/python orchestrate.py daily-refresh --bars $(ARGS)

returns: setup
	$(BIN)/python orchestrate.py daily-refresh --returns $(ARGS)

emas: setup
	$(BIN)/python orchestrate.py daily-refresh --emas $(ARGS)

features: setup
	$(BIN)/python orchestrate.py daily-refresh --features $(ARGS)

## The operator's daily job: ingest the configured source (configs/refresh.yml), then every
## layer with its quality gates.
daily-refresh: setup
	$(BIN)/python orchestrate.py daily-refresh --all $(ARGS)

## The quality gates of every layer on whole tables (read-only audit).
validate: setup
	$(BIN)/python orchestrate.py validate $(ARGS)

dry-run: setup
	$(BIN)/python orchestrate.py daily-refresh --all --dry-run $(ARGS)

clean-runtime:
	rm -rf data/runs data/export data/lakehouse .logs dbt_project/target dbt_project/logs
