# cni-bridge-dhcp: developer and operator entry points. Run as root for demo/test/bench.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DESTDIR ?=
PREFIX ?= /usr/local
CNI_BIN_DIR ?= /opt/cni/bin
BUILD := build
PYTEST_ARGS ?=

.PHONY: all venv deps lint typecheck unit netns e2e test test-reliability docs-reliability cnitool demo bench binary install clean

all: venv cnitool

venv: $(VENV)/.stamp

$(VENV)/.stamp: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[dev]'
	touch $@

# Debian packages the tests, demo and bench need (idempotent; needs root and apt).
deps:
	./scripts/install-deps

lint: venv
	$(VENV)/bin/ruff check cni_bridge_dhcp testbed tests scripts deploy
	$(VENV)/bin/ruff format --check cni_bridge_dhcp testbed tests scripts deploy

typecheck: venv
	$(VENV)/bin/mypy

unit: venv
	$(PY) -m pytest -q tests/unit $(PYTEST_ARGS)

netns: venv cnitool
	$(PY) -m pytest -q tests/netns tests/e2e $(PYTEST_ARGS)

# Every test: the unit/netns/e2e layers, then the reliability layer (~4 min, own report).
test: deps venv lint typecheck cnitool
	$(PY) -m pytest -q tests --ignore=tests/reliability $(PYTEST_ARGS)
	$(PY) -m pytest -q tests/reliability $(PYTEST_ARGS)

# Faults, load and hostile input alone (issue 8); writes results/reliability.md.
test-reliability: deps venv cnitool
	$(PY) -m pytest -q tests/reliability $(PYTEST_ARGS)

# Publish the last complete reliability run as docs/RELIABILITY.md (tests never write docs/).
docs-reliability:
	@test -f results/reliability.complete || { echo "no complete reliability run in results/: run make test-reliability" >&2; exit 1; }
	cp results/reliability.md docs/RELIABILITY.md

cnitool: $(BUILD)/cnitool

$(BUILD)/cnitool: $(wildcard tests/cnitool/*.go)
	mkdir -p $(BUILD)
	cd tests/cnitool && CGO_ENABLED=0 GO111MODULE=off GOPATH=/usr/share/gocode GOCACHE=$(CURDIR)/$(BUILD)/gocache \
		go build -o $(CURDIR)/$(BUILD)/cnitool .

binary: venv
	$(PY) scripts/build-zipapp.py $(BUILD)/cni-bridge-dhcp

# Self-contained plugin for nodes without Python (docs/NATIVE_BUILDS.md): Nuitka standalone,
# a directory installed behind a symlink. Its tools go into build/venv-native, not the venv.
NATIVE_PYTHON ?= /usr/bin/python3

.PHONY: binary-native install-native

binary-native:
	$(PYTHON) scripts/build-native.py --python $(NATIVE_PYTHON) --out $(BUILD)/native

install-native: binary-native
	$(PYTHON) scripts/build-native.py --python $(NATIVE_PYTHON) --out $(BUILD)/native --install-dir $(DESTDIR)$(CNI_BIN_DIR)

install: binary
	install -D -m 0755 $(BUILD)/cni-bridge-dhcp $(DESTDIR)$(CNI_BIN_DIR)/cni-bridge-dhcp

demo: deps venv cnitool
	$(PY) scripts/demo.py

bench: deps venv cnitool
	$(PY) scripts/bench.py

clean:
	rm -rf $(BUILD) .mypy_cache .ruff_cache .pytest_cache
