# Kefu: one command to run the product, one to test it. Every target sets up what it needs.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8000
STAGE ?= dev
export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION := 20
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: fuzz run test lint typecheck unit synth layer ingest-deps tune-deps eval bench load clean help

help:
	@echo "make run [PORT=8000]  serve the whole product locally on http://127.0.0.1:$(PORT)"
	@echo "make test             lint, type-check and run every test suite (offline)"
	@echo "make synth            synthesize the CDK app into cdk.out (no credentials needed)"
	@echo "make eval             retrieval evaluation on the sample knowledge base (and the datasets)"
	@echo "make fuzz             the fuzz tests with over a thousand cases each, and their tally"
	@echo "make bench            benchmarks"
	@echo "make load             the local stack under 100 conversations at once, 20 turns each"

# --- environments -------------------------------------------------------------
$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip==25.3

# The .pth file puts the layer's `kefu` package and the repo's own packages on the venv's path.
$(VENV)/.run-deps: requirements.txt | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements.txt
	$(BIN)/python -c "import site, pathlib; pathlib.Path(site.getsitepackages()[0], 'kefu-dev.pth').write_text('$(CURDIR)/layers/kefu/python\n$(CURDIR)\n')"
	touch $@

$(VENV)/.dev-deps: requirements-dev.txt requirements-tune.txt requirements.txt $(VENV)/.run-deps
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $@

# PyTorch (CPU) for tuning the local encoder on a KB: python -m kb_ingest.tuning.
$(VENV)/.tune-deps: requirements-tune.txt requirements.txt $(VENV)/.run-deps
	$(BIN)/pip install --quiet -r requirements-tune.txt
	touch $@
tune-deps: $(VENV)/.tune-deps

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

# --- product ------------------------------------------------------------------
run: $(VENV)/.run-deps
	$(BIN)/python -m local --port $(PORT) $(if $(KB),--kb $(KB))

DATASETS ?= ../shared/datasets
HAS_DATASETS := $(wildcard $(DATASETS)/*/kb.jsonl)
eval: $(VENV)/.run-deps $(if $(HAS_DATASETS),$(VENV)/.tune-deps)
	$(BIN)/python -m kb_ingest.evaluate --sample $(if $(HAS_DATASETS),--datasets $(DATASETS) --tune-encoder)

# --- infrastructure -----------------------------------------------------------
# The Lambda layer for arm64 / Python 3.12, built with pip alone (no Docker); a no-op when unchanged.
layer: | $(BIN)/python
	$(BIN)/python layers/build_layer.py

# The ingest function's parsers for arm64 / Python 3.12 (cached in .build/ingest-deps).
ingest-deps: $(VENV)/.dev-deps
	$(BIN)/python -m infra_cdk.bundling

synth: $(VENV)/.dev-deps layer ingest-deps node_modules/.installed
	./node_modules/.bin/cdk synth -q -c stage=$(STAGE)

# --- checks -------------------------------------------------------------------
lint: $(VENV)/.dev-deps
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(VENV)/.dev-deps
	$(BIN)/mypy

test: lint typecheck layer ingest-deps node_modules/.installed
	$(BIN)/pytest -n 2 --dist loadgroup

# The fuzz tests with more cases: generated Lambda events against the chat handler and
# schemathesis against the local server's OpenAPI document; ends with the tally.
fuzz: $(VENV)/.dev-deps
	HYPOTHESIS_PROFILE=fuzz $(BIN)/pytest -p no:randomly -q tests/functional/test_chat_api_properties.py tests/functional/test_openapi_fuzz.py

bench: $(VENV)/.dev-deps
	$(BIN)/pytest tests/bench -p no:randomly -q -s

# Starts its own local stack in a temporary data folder (the index is kept in .build/load).
load: $(VENV)/.run-deps
	$(BIN)/python -m local.load

clean:
	rm -rf $(VENV) node_modules cdk.out .build .kefu .mypy_cache .pytest_cache .ruff_cache
