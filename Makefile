# Two commands on a fresh machine: `make run` and `make test`. Each creates the virtualenv and
# installs the pinned requirements when they are missing or have changed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test bench harden lint migrate clean

$(STAMP): requirements.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
	@# The repository itself on the venv's path, so `commpro` works from any directory.
	$(BIN)/python -c "import site, sys; open(site.getsitepackages()[0] + '/commpro.pth', 'w').write(sys.argv[1] + '\n')" "$(CURDIR)"
	printf '#!/bin/sh\nexec "%s/python" -m commpro "$$@"\n' "$(abspath $(BIN))" > $(BIN)/commpro
	chmod +x $(BIN)/commpro
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/python -m commpro serve

test: $(STAMP)
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python -m tests.bench

# Fault scenarios against real processes (PostgreSQL stopped, SIGKILL, duplicates, the full
# schemathesis run, hostile traffic): one table of figures. See README "Hardening".
harden: $(STAMP)
	$(BIN)/python -m tests.harden

lint: $(STAMP)
	# Nested `async with` for a session and its request reads better than one long line.
	$(BIN)/ruff check --line-length 120 --ignore SIM117 commpro tests

migrate: $(STAMP)
	$(BIN)/python -m commpro migrate

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
