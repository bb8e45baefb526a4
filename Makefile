# Two commands on a fresh machine: `make run` and `make test`. Each creates the virtualenv and
# installs the pinned requirements when they are missing or have changed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test bench lint migrate clean chromium

$(STAMP): requirements.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "Installing the pinned requirements into $(VENV): a minute or so the first time..."
	$(BIN)/python -m pip install --progress-bar on --disable-pip-version-check -r requirements.txt
	@# The repository itself on the venv's path, so `commpro` works from any directory.
	$(BIN)/python -c "import site, sys; open(site.getsitepackages()[0] + '/commpro.pth', 'w').write(sys.argv[1] + '\n')" "$(CURDIR)"
	printf '#!/bin/sh\nexec "%s/python" -m commpro "$$@"\n' "$(abspath $(BIN))" > $(BIN)/commpro
	chmod +x $(BIN)/commpro
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/python -m commpro serve

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

lint: $(STAMP)
	# Nested `async with` for a session and its request reads better than one long line.
	$(BIN)/ruff check --line-length 120 --ignore SIM117 commpro tests

migrate: $(STAMP)
	$(BIN)/python -m commpro migrate

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
