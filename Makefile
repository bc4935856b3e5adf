# cni-bridge-dhcp: developer and operator entry points. Run as root for demo/test/bench.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DESTDIR ?=
PREFIX ?= /usr/local
CNI_BIN_DIR ?= /opt/cni/bin
BUILD := build
PYTEST_ARGS ?=

.PHONY: all venv deps lint typecheck unit netns e2e runtimes test test-reliability docs-reliability cnitool demo bench soak binary install clean

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
	# the layering contracts of docs/ARCHITECTURE.md ([tool.importlinter] in pyproject.toml)
	$(VENV)/bin/lint-imports --no-cache

typecheck: venv
	$(VENV)/bin/mypy

unit: venv
	$(PY) -m pytest -q tests/unit $(PYTEST_ARGS)

netns: venv cnitool
	$(PY) -m pytest -q tests/netns tests/e2e $(PYTEST_ARGS)

# Real container runtimes (containerd's CRI, podman's CNI backend) drive the plugin inside
# the test's own namespaces, with private state (issue 13); images are built offline.
runtimes: venv
	$(PY) -m pytest -q tests/runtimes $(PYTEST_ARGS)

# Every test: the unit/netns/e2e layers, the runtimes layer, then the reliability layer
# (~4 min, own report).
test: deps venv lint typecheck cnitool
	$(PY) -m pytest -q tests --ignore=tests/reliability --ignore=tests/runtimes $(PYTEST_ARGS)
	$(PY) -m pytest -q tests/runtimes $(PYTEST_ARGS)
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

# The DaemonSet image (deploy/Containerfile) with podman: wheels and zipapp built here;
# IMAGE_BASE=local makes the base from Debian packages (mmdebstrap) when no registry is
# reachable. PODMAN may carry global options, e.g. PODMAN="podman --root DIR".
IMAGE ?= localhost/cni-bridge-dhcp:0.1.0
IMAGE_BASE ?= registry
PODMAN ?= podman

.PHONY: image
image: venv
	PODMAN="$(PODMAN)" $(PY) scripts/build-image.py --image $(IMAGE) --base $(IMAGE_BASE)

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

# One run, one report: bench.py measures both plugins (exec floor, sequential, concurrency
# 1-50, 250 leases, cProfile, containerd CRI) and rewrites docs/BENCH.md and its pictures
# (docs/bench-*.png); BENCH_ARGS=--quick for a ~3 min smoke run (results/ only).
BENCH_ARGS ?=
bench: deps venv cnitool
	$(PY) scripts/bench.py $(BENCH_ARGS)

# The agent's RSS over 20,000 ADD/DEL cycles (issue 16, target 7; about an hour on 2 cores,
# ~7 cycles/s with 4 in flight):
# results/soak-<time>.json, which the next `make bench` reports. SOAK_ARGS="--cycles 2000"
# for a shorter run, "--probe"/"--tracemalloc" to see inside the agent.
SOAK_ARGS ?=
soak: deps venv cnitool
	$(PY) scripts/soak.py $(SOAK_ARGS)

clean:
	rm -rf $(BUILD) .mypy_cache .ruff_cache .pytest_cache
