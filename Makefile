# citygate: every target does its own setup on a fresh machine.
#   make demo    run the proxy on the demo configuration (127.0.0.1:8080)
#   make demo-site   an ordinary HTTPS site on 127.0.0.1:8443, to try the demo offline
#   make test    run the whole test suite
#   make lint    ruff

PYTHON ?= $(shell tools/find-python)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo demo-site test lint check clean system-deps

$(STAMP): pyproject.toml
	@test -n "$(PYTHON)" || { echo "no Python 3.12+ found (see the message above)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

# Test-only system packages: curl (a real HTTP client), OpenLDAP's slapd (a real directory)
# and node (runs generated PAC files).
system-deps:
	@tools/system-deps

demo: $(STAMP)
	$(BIN)/citygate run --config config/citygate.yaml

# An ordinary HTTPS site on 127.0.0.1:8443 with its own certificate, to try the demo offline.
demo-site: $(STAMP)
	$(BIN)/python tools/demo_site.py

check: $(STAMP)
	$(BIN)/citygate check --config config/citygate.yaml

test: $(STAMP) system-deps
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) .pytest_cache
