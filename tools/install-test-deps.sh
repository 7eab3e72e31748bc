#!/usr/bin/env bash
# Installs the real peers the integration tests talk to, from Debian's packages, when absent.
set -euo pipefail
missing=()
command -v mosquitto_pub >/dev/null 2>&1 || missing+=(mosquitto-clients)
# The PostgreSQL storage tests start a throwaway server (tests/pg_server.py) with initdb/pg_ctl,
# found on PATH or in Debian's /usr/lib/postgresql/*/bin.
if ! command -v initdb >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    missing+=(postgresql)
fi
bash "$(dirname "$0")/apt-install.sh" "${missing[@]}"
