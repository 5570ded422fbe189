# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip --quiet --disable-pip-version-check
RUNTIME := $(VENV)/.runtime-installed
DEV := $(VENV)/.dev-installed
AZURITE := node_modules/.bin/azurite

.PHONY: demo test lint unit bench clean

demo: $(RUNTIME)  ## replay the bundled samples/ on the embedded default (SQLite) and summarize
	$(BIN)/aegis demo

test: $(DEV) $(AZURITE)  ## lint, type-check, and run the whole suite with Azurite and headless Chromium
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	scripts/ensure-chromium.sh
	scripts/with-azurite.sh $(BIN)/pytest $(PYTEST_ARGS)

lint: $(DEV)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: $(DEV)  ## events/s: ingest, and end to end against a naive baseline and a DuckDB peer
	$(BIN)/python -m bench.ingest
	$(BIN)/python -m bench.e2e

$(RUNTIME): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install -r requirements.txt
	$(PIP) install --no-deps -e .
	touch $@

$(DEV): $(RUNTIME) requirements-dev.txt
	$(PIP) install -r requirements-dev.txt
	touch $@

$(AZURITE): package.json
	npm install --no-audit --no-fund --loglevel=error
	touch $@

clean:
	rm -rf $(VENV) node_modules .pytest_cache .mypy_cache .ruff_cache .hypothesis aegis.egg-info
