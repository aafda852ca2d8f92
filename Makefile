# Everything installs into .venv; nothing by hand, no tokens.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

# Where `make demo` writes the two designs' reports (report.json, report.md, latency.png).
DEMO_OUT ?= out/demo

# The suite runs on this many pytest-xdist workers (one test directory per worker at a time: tests/conftest.py).
TEST_WORKERS ?= 2

.PHONY: install demo sandbox test lint format clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "Python 3.11+ is needed (found: $$($(PYTHON) --version))"; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV) || \
		{ echo "could not create $(VENV): on Debian/Ubuntu, apt-get install python3-venv"; exit 1; }
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $@

demo: install sandbox
	$(BIN)/cruscible demo --out '$(DEMO_OUT)'

# The sandbox for submitted code: bubblewrap, installed from the distribution when we are root.
sandbox:
	@if command -v bwrap >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing bubblewrap (the sandbox for submitted code)"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get install -y -qq bubblewrap >/dev/null 2>&1 || \
	  { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq bubblewrap >/dev/null 2>&1; } || \
	  echo "could not install bubblewrap: the demo runs its design unsandboxed"; \
	else echo "bubblewrap is not installed: the demo runs its design unsandboxed (apt-get install bubblewrap)"; fi

test: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pytest -n $(TEST_WORKERS) --no-loadscope-reorder

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) out .pytest_cache .ruff_cache
