# The two commands of the README. Both create .venv on first use and install into it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test lint bench install-dev

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

run: $(BIN)/python
	$(BIN)/pip install --quiet -e .
	$(BIN)/memvault serve

install-dev: $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'

lint: install-dev
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/vulture

test: install-dev
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/vulture
	$(BIN)/python -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

bench: install-dev
	$(BIN)/python -m bench.bench_core
	$(BIN)/python -m bench.bench_embed
	$(BIN)/python -m bench.bench_server
	$(BIN)/python -m bench.bench_postgres
	$(BIN)/python -m bench.bench_backup
	$(BIN)/python -m bench.bench_guard
