#!/usr/bin/env bash
# Runs the whole suite. Two workers: CI has two cores and most tests wait on sockets.
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/python -m pytest -n 2 -q -p no:cacheprovider "$@"
