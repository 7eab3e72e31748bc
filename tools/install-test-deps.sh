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
[ ${#missing[@]} -eq 0 ] && exit 0
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "installing test dependencies: ${missing[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
