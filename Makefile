# The two set-up commands: `make run` and `make test`. Both work on a fresh Debian machine
# with only python3 and make.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: run test lint typecheck pytest sysdeps bench clean

$(BIN)/activate:
	PYTHON=$(PYTHON) bash scripts/sysdeps.sh build
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# The edge's data plane is compiled (Cython + llhttp): a change to its sources rebuilds it.
# (and the modules compiled from their .py sources, listed in setup.py's COMPILED_PYTHON)
DATAPLANE := setup.py $(wildcard src/backhaul/*/*.pyx src/backhaul/*/*.pxd) \
	$(addprefix src/,$(addsuffix .py,$(shell sed -n 's/^    "\(backhaul\..*\)",$$/\1/p' setup.py | tr . /)))

$(VENV)/.installed: pyproject.toml $(DATAPLANE) | $(BIN)/activate
	PYTHON=$(PYTHON) bash scripts/sysdeps.sh build
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml $(DATAPLANE) | $(BIN)/activate
	PYTHON=$(PYTHON) bash scripts/sysdeps.sh build
	$(BIN)/pip install -q -e '.[test]'
	touch $@

# Bytecode written ahead (an editable install has none): where PYTHONDONTWRITEBYTECODE is
# set, each process of the edge would otherwise compile every module it imports from
# source at each start, which costs CPU and ~2 MB of RSS per process (issue 7).
BYTECODE := $(BIN)/python -m compileall -q src/backhaul

## make run: the edge on its embedded default (listener 127.0.0.1:8080, demo cluster)
run: $(VENV)/.installed
	$(BYTECODE)
	$(BIN)/backhaul serve

## make test: everything the tests need, then lint, type checks and the tests
test: $(VENV)/.installed-test sysdeps
	$(BIN)/ruff check src tests bench setup.py
	$(BIN)/ruff format --check src tests bench setup.py
	$(BIN)/mypy
	$(BIN)/pytest -q

sysdeps:
	bash scripts/sysdeps.sh test

## make bench: backhaul side by side with nginx, and its DNS server with dnsmasq
## (installs nginx, wrk, dnsperf and dnsmasq when missing)
bench: $(VENV)/.installed-test
	bash scripts/sysdeps.sh bench
	$(BYTECODE)
	$(BIN)/python -m bench.proxy
	$(BIN)/python -m bench.tls
	$(BIN)/python -m bench.dns

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache
