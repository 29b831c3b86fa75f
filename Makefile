# Colony — the two commands are `make demo` and `make test`; both bootstrap .venv first.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
EXTRAS ?= dev,local-llm
PYTEST_ARGS ?=

.PHONY: install system-deps demo up test test-all lint typecheck bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml requirements/no-deps.txt tests/mcp/servers/package-lock.json
	$(BIN)/pip install -q -e ".[$(EXTRAS)]"
	$(BIN)/pip install -q --no-deps -r requirements/no-deps.txt
	@# A third-party MCP server over streamable HTTP for tests/mcp (pinned by the lock file).
	@if command -v npm >/dev/null 2>&1; then \
	  npm ci --prefix tests/mcp/servers --no-audit --no-fund --loglevel=error; \
	else echo "warning: npm missing; the MCP HTTP tests will skip"; fi
	@touch $(STAMP)

install: system-deps $(STAMP)

# bubblewrap is the default sandbox; installed through apt when missing and we may.
system-deps:
	@command -v bwrap >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing bubblewrap (sandbox)"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap) >/dev/null \
	      || echo "warning: could not install bubblewrap; sandboxed tools will refuse to run"; \
	  else echo "warning: bubblewrap (bwrap) missing: apt-get install bubblewrap"; fi; }

demo: install
	$(BIN)/colony demo

up: install
	$(BIN)/colony up

test: install lint typecheck
	$(BIN)/pytest -m "not slow and not chaos and not live_llm and not docker" $(PYTEST_ARGS)

test-all: install lint typecheck
	$(BIN)/pytest -m "not live_llm" $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy

bench: install
	$(BIN)/python -m tests.bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache
