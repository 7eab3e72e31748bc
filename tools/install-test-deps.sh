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
# The C agent (c_agent/, `make c-agent`): CMake, pkg-config and libsodium's headers.
command -v cmake >/dev/null 2>&1 || missing+=(cmake)
command -v pkg-config >/dev/null 2>&1 || missing+=(pkg-config)
[ -f /usr/include/sodium.h ] || missing+=(libsodium-dev)
# The browser tests (tests/integration/test_listeners_browser.py): headless Chromium running
# MQTT.js, which comes from npm into build/browser (see below); the dashboard's test
# (tests/integration/test_dashboard.py) drives the same chromium with Playwright (a Python
# test dependency, pointed at this executable: it downloads no browser).
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v npm >/dev/null 2>&1 || missing+=(npm)
# The Prometheus test (tests/integration/test_admin_prometheus.py): a real Prometheus server
# scraping the admin listener's /metrics, queried through its HTTP API.
command -v prometheus >/dev/null 2>&1 || missing+=(prometheus)
bash "$(dirname "$0")/apt-install.sh" "${missing[@]}"
BROWSER_DEPS="$(dirname "$0")/../build/browser"
if [ ! -f "$BROWSER_DEPS/node_modules/mqtt/dist/mqtt.min.js" ]; then
    echo "installing from npm: mqtt (MQTT.js) into build/browser"
    mkdir -p "$BROWSER_DEPS"
    npm install --prefix "$BROWSER_DEPS" --no-save --no-audit --no-fund --silent "mqtt@^5.10"
fi
