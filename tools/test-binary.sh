#!/usr/bin/env bash
# `make test-binary`: build dist/hbroker from a clean copy of this tree, as a user would from a
# fresh clone (its own virtualenv, the extensions compiled anew, `make binary`), then run
# tests/binary against that binary with the copy's own test environment. Arguments go to pytest.
# The copy is removed afterwards, or kept for a look when something failed.
set -euo pipefail
cd "$(dirname "$0")/.."

work=$(mktemp -d "${TMPDIR:-/tmp}/hbroker-binary-XXXXXX")
keep=1
finish() {
    if [ "$keep" = 1 ]; then echo "test-binary: kept $work for inspection"; else rm -rf "$work"; fi
}
trap finish EXIT

# What a clone holds, as it is in the work tree (committed or not); nothing that git ignores:
# no .venv, no compiled extensions, no build/ or dist/.
git ls-files -z --cached --others --exclude-standard \
    | tar --null --files-from=- --ignore-failed-read -cf - 2>/dev/null \
    | tar -xf - -C "$work"

start=$(date +%s)
make -C "$work" --no-print-directory binary PYTHON="${PYTHON:-python3}"
echo "test-binary: clean build (virtualenv, extensions, binary) in $(( $(date +%s) - start )) s"

# pytest's own summary line ("N passed in S s") closes the output.
keep=0
cd "$work"
HBROKER_BINARY="$work/dist/hbroker" .venv/bin/python -m pytest -q -p no:cacheprovider -rA \
    tests/binary "$@" || { keep=1; exit 1; }
