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

test: build test-deps
	bash tools/run-tests.sh $(PYTEST_ARGS)

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
	$(VENV)/bin/ruff check hbroker tests tools

clean:
	rm -rf build dist *.egg-info hbroker_ext/*.c hbroker_ext/*.so hbroker_ext/*.html

# Benchmarks (bench/README.md). `bench` writes bench/results/ and bench/RESULTS.md (8-9
# minutes); `bench-quick` is a one-minute smoke test that leaves them alone.
.PHONY: bench bench-quick

bench: build
	$(PY) bench/storage_qos1.py

bench-quick: build
	$(PY) bench/storage_qos1.py --quick
