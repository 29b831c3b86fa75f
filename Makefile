# Colony — the two commands are `make demo` and `make test`; both bootstrap .venv first.
# Python dependencies are installed exactly as locked: uv.lock (uv sync --frozen) for the
# project, requirements/no-deps.txt (hashes, --no-deps) for the model-file wheels, and
# requirements/uv.txt (hashes) for uv itself. `make lock` re-resolves them on purpose.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
TOOLS := .venv-tools
UV := $(TOOLS)/bin/uv
STAMP := $(VENV)/.installed
EXTRAS ?= dev,local-llm
PYTEST_ARGS ?=
# uv uses the interpreter above and never downloads one; the project venv is .venv.
export UV_PYTHON := $(PYTHON)
export UV_PYTHON_DOWNLOADS := never
export UV_PROJECT_ENVIRONMENT := $(VENV)
comma := ,
UV_EXTRAS := $(foreach e,$(subst $(comma), ,$(EXTRAS)),--extra $(e))
# The build group holds llama-cpp-python's build requirements (it builds without isolation).
SYNC := $(UV) sync --frozen --group build $(UV_EXTRAS)

.PHONY: install system-deps demo up test test-all lint typecheck bench bench-peers lock clean

$(UV): requirements/uv.txt
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install -q --disable-pip-version-check --require-hashes -r requirements/uv.txt
	@touch $(UV)

$(STAMP): $(UV) uv.lock pyproject.toml requirements/no-deps.txt tests/mcp/servers/package-lock.json
	@# Build requirements first: llama-cpp-python compiles against them in the second pass.
	$(SYNC) --no-install-package llama-cpp-python
	$(SYNC)
	$(UV) pip install -q --python $(BIN)/python --no-deps --require-hashes -r requirements/no-deps.txt
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

# The container image without a Docker engine (buildah, as root): build, then start it.
# IMAGE_ARGS=build|check|base; see docs/deploy.md, "The image".
.PHONY: image
image:
	deploy/build-image.sh $(IMAGE_ARGS)

# The peer frameworks (the `bench` extra) live in a venv of their own, never in .venv:
# `make bench-peers` builds it from the same lock and runs Colony and the peers side by side
# (tests/bench/peers; BENCH_ARGS=--quick is a smoke run).
BENCH_VENV := .venv-bench
BENCH_STAMP := $(BENCH_VENV)/.installed

$(BENCH_STAMP): $(UV) uv.lock pyproject.toml requirements/no-deps.txt
	UV_PROJECT_ENVIRONMENT=$(BENCH_VENV) $(UV) sync --frozen --extra dev --extra bench
	$(UV) pip install -q --python $(BENCH_VENV)/bin/python --no-deps --require-hashes -r requirements/no-deps.txt
	@touch $(BENCH_STAMP)

bench-peers: system-deps $(BENCH_STAMP)
	$(BENCH_VENV)/bin/python -m tests.bench.peers $(BENCH_ARGS)

# Deliberate upgrade: re-resolve every lock to the newest allowed versions, install them,
# run the suite, and leave the lock diffs for review (nothing is committed).
# `make lock UPGRADE=` re-locks after a pyproject change and keeps every other pin.
UPGRADE ?= --upgrade
lock: $(UV)
	$(UV) pip compile -q $(UPGRADE) --generate-hashes --universal --python-version 3.11 \
	  requirements/uv.in -o requirements/uv.txt
	$(UV) pip compile -q $(UPGRADE) --no-deps --generate-hashes --universal --python-version 3.11 \
	  requirements/no-deps.in -o requirements/no-deps.txt
	$(UV) lock $(UPGRADE)
	$(MAKE) test
	@git diff --stat -- uv.lock requirements/
	@echo "review the lock diff above, then commit it with the change that needed it"

clean:
	rm -rf $(VENV) $(BENCH_VENV) $(TOOLS) .pytest_cache .ruff_cache .mypy_cache
