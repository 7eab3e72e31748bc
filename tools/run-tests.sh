#!/usr/bin/env bash
# Runs the whole suite. Two workers: CI has two cores and most tests wait on sockets.
# `--dist loadgroup`: the tests of one xdist_group run on one worker (tests/cluster shares
# one NATS cluster that way); the others are spread as by the default `load`.
set -euo pipefail
cd "$(dirname "$0")/.."
# tests/binary runs against the single-file binary: `make test-binary` builds it and runs them.
# `fault_loop` tests (random fault loops that do not hold in every run yet) are left to
# `make test-fault-loops`.
exec .venv/bin/python -m pytest -n 2 --dist loadgroup -q -p no:cacheprovider --ignore=tests/binary \
    -m "not fault_loop" "$@"
