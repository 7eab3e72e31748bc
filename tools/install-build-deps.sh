#!/usr/bin/env bash
# Installs what compiling the Cython extensions needs beyond a C compiler and Python's headers,
# from Debian's packages, when absent: SQLite's header (hbroker_ext/sqlite_writer.pyx calls
# libsqlite3 directly).
set -euo pipefail
missing=()
echo '#include <sqlite3.h>' | ${CC:-cc} -E -x c - >/dev/null 2>&1 || missing+=(libsqlite3-dev)
bash "$(dirname "$0")/apt-install.sh" "${missing[@]}"
