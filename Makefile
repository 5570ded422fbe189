# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip --quiet --disable-pip-version-check
# the first `make demo` installs the runtime: it says so, and pip shows each package as it comes
PIP_SHOWN := $(BIN)/python -m pip --disable-pip-version-check
RUNTIME := $(VENV)/.runtime-installed
DEV := $(VENV)/.dev-installed
AZURITE := node_modules/.bin/azurite
CHECKOV := .venv-checkov/.installed

.PHONY: demo test lint unit bench bench-soak bench-tables screenshots clean

demo: $(RUNTIME)  ## replay the bundled samples/ on the embedded default (SQLite) and summarize
	$(BIN)/aegis demo

test: $(DEV) $(AZURITE) $(CHECKOV)  ## lint, type-check, scan infra/, and run the whole suite with Azurite and headless Chromium
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports
	.venv-checkov/bin/checkov -d infra --framework bicep --skip-download --compact --quiet
	scripts/ensure-chromium.sh
	scripts/with-azurite.sh $(BIN)/pytest $(PYTEST_ARGS)

lint: $(DEV)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

bench: $(DEV)  ## events/s: ingest, and end to end against a naive baseline and a DuckDB peer
	$(BIN)/python -m bench.ingest
	$(BIN)/python -m bench.e2e

screenshots: $(DEV)  ## a PNG of every console page, from the bundled samples, into docs/screenshots/ (for the README)
	scripts/ensure-chromium.sh
	$(BIN)/python scripts/screenshots.py

bench-soak: $(DEV)  ## a long live-like stream through one pipeline: events/s and resident memory as it goes
	$(BIN)/python -m bench.soak $(SOAK_ARGS)

bench-tables: $(DEV) $(AZURITE)  ## the Table store on Azurite: CPU a batch and a bucket transaction, and two layouts with fewer
	scripts/with-azurite.sh $(BIN)/python -m bench.tables $(TABLES_ARGS)

$(RUNTIME): requirements.txt pyproject.toml
	@echo "==> Installing Aegis and its runtime dependencies into $(VENV) (first run only: about two minutes)"
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP_SHOWN) install --progress-bar on -r requirements.txt
	$(PIP) install --no-deps -e .
	@echo "==> Runtime installed"
	touch $@

$(DEV): $(RUNTIME) requirements-dev.txt
	@echo "==> Installing the test and lint tools into $(VENV)"
	$(PIP_SHOWN) install --progress-bar on -r requirements-dev.txt
	touch $@

$(CHECKOV): requirements-infra.txt  # its own environment: checkov pins an older pycep-parser than the tests use
	test -x .venv-checkov/bin/python || $(PYTHON) -m venv .venv-checkov
	.venv-checkov/bin/python -m pip --quiet --disable-pip-version-check install -r requirements-infra.txt
	touch $@

$(AZURITE): package.json
	npm install --no-audit --no-fund --loglevel=error
	touch $@

clean:
	rm -rf $(VENV) .venv-checkov node_modules .pytest_cache .mypy_cache .ruff_cache .hypothesis aegis.egg-info
