#!/usr/bin/env bash
# Installs Debian packages (the arguments), as root or through sudo: what the install-*-deps
# scripts call for whatever they found missing.
set -euo pipefail
[ $# -eq 0 ] && exit 0
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "installing from Debian: $*"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "$@"
