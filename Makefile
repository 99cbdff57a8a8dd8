# The two commands of the README. Both create .venv on first use and install into it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# An editable install that puts the clone on sys.path (a .pth line) instead of setuptools'
# import hook: a script run from the folder above a clone named `memvault` then imports the
# package, not the clone's folder as an empty namespace package (a regular package found
# anywhere on sys.path beats a namespace folder; the hook is only asked after that folder).
EDITABLE := --config-settings editable_mode=compat -e

.PHONY: run test lint bench install-dev

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

run: $(BIN)/python
	$(BIN)/pip install --quiet $(EDITABLE) .
	$(BIN)/memvault serve

install-dev: $(BIN)/python
	$(BIN)/pip install --quiet $(EDITABLE) '.[dev]'

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
