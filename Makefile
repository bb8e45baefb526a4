# Two commands on a fresh machine: `make run` and `make test`. Each creates the virtualenv and
# installs the pinned requirements and CommPro itself (editable, with its `commpro` command)
# when they are missing or have changed.
# `make test PYTHON=python3.13` uses another interpreter, in a virtualenv of its own (.venv-3.13).
PYTHON ?= python3
PY := $(shell .ci/find-python $(PYTHON))
ifeq ($(PY),)
$(error $(PYTHON) does not run on this machine: install it, or pass PYTHON=/path/to/python3.X)
endif
VENV ?= $(if $(filter python3,$(PYTHON)),.venv,.venv-$(shell $(PY) -c 'import sys; print("%d.%d" % sys.version_info[:2])'))
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PIP := $(BIN)/python -m pip --disable-pip-version-check
# The lock files' format; `make lock` writes them the same way every time.
PIP_COMPILE := $(BIN)/pip-compile --quiet --no-emit-index-url --no-emit-find-links --strip-extras \
	--allow-unsafe --no-header --annotation-style=line

.PHONY: run test bench ab harden lint migrate lock clean chromium

$(STAMP): requirements.txt requirements-dev.txt setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	@echo "Installing the pinned requirements into $(VENV): a minute or so the first time..."
	$(PIP) install --progress-bar on -r requirements.txt -r requirements-dev.txt
	$(PIP) install --quiet --no-deps --editable .
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/commpro serve

test: $(STAMP) chromium
	$(BIN)/python -m pytest

# The browser tests drive Debian's chromium: installed here when missing and we may (root, apt);
# elsewhere they skip and say why.
chromium:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 \
	  && echo "installing Debian's chromium for the browser tests" \
	  && apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
	  || echo "no chromium and no way to install it here: the browser tests will skip"

bench: $(STAMP)
	$(BIN)/python -m tests.bench

# Two revisions in paired rounds: `make ab AB="main"` (main against the working tree), or
# AB="abc123 def456 --kind sms --rounds 8". See README "Benchmarks".
ab: $(STAMP)
	$(BIN)/python -m tests.bench.ab $(AB)

# Fault scenarios against real processes (PostgreSQL stopped, SIGKILL, duplicates, the full
# schemathesis run, hostile traffic): one table of figures. See README "Hardening".
harden: $(STAMP)
	$(BIN)/python -m tests.harden

lint: $(STAMP)
	# Nested `async with` for a session and its request reads better than one long line.
	$(BIN)/ruff check --line-length 120 --ignore SIM117 commpro tests

migrate: $(STAMP)
	$(BIN)/commpro migrate

# Re-pin after editing requirements.in or requirements-dev.in. UPGRADE="-P aiohttp" raises one
# pin to its newest release, UPGRADE=--upgrade every pin. Lock with the oldest supported Python
# (PYTHON=python3.11), so that a dependency only older Pythons need is pinned too.
lock: $(STAMP)
	$(PIP_COMPILE) $(UPGRADE) requirements.in -o requirements.txt
	$(PIP_COMPILE) $(UPGRADE) requirements-dev.in -o requirements-dev.txt

clean:
	rm -rf .venv .venv-3.* .pytest_cache .ruff_cache build *.egg-info
