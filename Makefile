# Quick start: `make run` opens the chat on the shipped config; `make test` runs
# lint, type checks and the whole test suite. Both create .venv on first use.
# The first Python 3.11+ found (override with `make PYTHON=/path/to/python3.12 ...`).
PYTHON ?= $(shell for p in python3 python3.13 python3.12 python3.11; do \
	$$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null && { echo $$p; break; }; \
	done)
VENV   := .venv
BIN    := $(VENV)/bin
# Two stamps: `make run` installs what running needs; `make test` adds the test tools
# and the example third-party plugin on top.
RUN_STAMP  := $(VENV)/.run-stamp
TEST_STAMP := $(VENV)/.test-stamp

.PHONY: run test lint typecheck pytest bench clean system-deps

# The example third-party plugin (tests/support/example_plugin) is installed like any
# pip-installed plugin, so the tests find it through its entry point.
EXAMPLE_PLUGIN := tests/support/example_plugin
EXAMPLE_PLUGIN_FILES := $(EXAMPLE_PLUGIN)/pyproject.toml $(wildcard $(EXAMPLE_PLUGIN)/chatcore_example_plugin/*.py)

$(BIN)/python:
	@test -n "$(PYTHON)" || { echo "chatcore needs Python 3.11 or newer; none found (set PYTHON=...)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(RUN_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $(RUN_STAMP)

$(TEST_STAMP): $(RUN_STAMP) pyproject.toml $(EXAMPLE_PLUGIN_FILES)
	$(BIN)/python -m pip install --quiet -e '.[test]'
	$(BIN)/python -m pip install --quiet --no-deps --force-reinstall ./$(EXAMPLE_PLUGIN)
	rm -rf $(EXAMPLE_PLUGIN)/build $(EXAMPLE_PLUGIN)/*.egg-info
	touch $(TEST_STAMP)

run: $(RUN_STAMP)
	$(BIN)/chatcore

lint: $(TEST_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(TEST_STAMP)
	$(BIN)/mypy

# System programs the tests start: tmux (the terminal smoke test) and redis-server
# (the replication tests run their own servers). Installed when missing and we may
# (root with apt); otherwise the tests say what is missing, and under CI=true fail.
SYSTEM_PROGRAMS := tmux redis-server

system-deps:
	@for program in $(SYSTEM_PROGRAMS); do \
		command -v $$program >/dev/null 2>&1 && continue; \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			echo "installing $$program (the tests start it)"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$program >/dev/null; \
		else echo "$$program not found: install it (the tests start it)"; fi; \
	done

pytest: $(TEST_STAMP) system-deps
	$(BIN)/python -m pytest

test: lint typecheck pytest

bench: $(TEST_STAMP)
	$(BIN)/python bench/pipeline.py

clean:
	rm -rf $(VENV) build *.egg-info
