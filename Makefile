# The table of contents of the project: `make help` lists every target.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# Every target reads GPT-2's tokenizer from this cache; `make setup` guarantees it (tokenizer.py).
export TIKTOKEN_CACHE_DIR ?= $(CURDIR)/.cache/tiktoken

.PHONY: help setup setup-dev test

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-26s %s\n", $$1, $$2}'

$(VENV)/.runtime: requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -r requirements.txt
	$(PY) tokenizer.py
	touch $@

$(VENV)/.dev: $(VENV)/.runtime requirements-dev.txt
	$(PY) -m pip install -r requirements-dev.txt
	touch $@

setup: $(VENV)/.runtime ## create .venv with the runtime dependencies and GPT-2's tokenizer (offline-ready)

setup-dev: $(VENV)/.dev ## setup, plus the test-only dependencies (pytest, transformers)

test: setup-dev ## run the test suite (CPU, no network)
	$(PY) -m pytest -q tests
