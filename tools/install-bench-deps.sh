#!/usr/bin/env bash
# Installs what bench/compare.py runs beside hbroker, when absent:
# - Mosquitto, from Debian's package (the broker hbroker is compared with);
# - the C load generator and the C relay (bench/loadgen, bench/relay);
# - amqtt, the best-known Python broker, into its own virtualenv bench/.venv-amqtt (never
#   into .venv: its pins must not touch the project's). amqtt is optional: if it cannot be
#   installed the script says so and the benchmark records it as not run.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}

missing=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || missing+=(mosquitto)
bash tools/apt-install.sh "${missing[@]}"

make -s -C bench/loadgen
make -s -C bench/relay

AMQTT_VENV=bench/.venv-amqtt
AMQTT_SPEC=${AMQTT_SPEC:-amqtt>=0.11}
if [ ! -x "$AMQTT_VENV/bin/amqtt" ]; then
    echo "installing $AMQTT_SPEC into $AMQTT_VENV"
    if ! { "$PYTHON" -m venv "$AMQTT_VENV" &&
           "$AMQTT_VENV/bin/python" -m pip install -q --upgrade pip &&
           "$AMQTT_VENV/bin/python" -m pip install -q "$AMQTT_SPEC"; }; then
        echo "amqtt could not be installed; bench/compare.py will report it as not run" >&2
    fi
fi
exit 0
