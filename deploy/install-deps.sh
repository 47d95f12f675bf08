#!/usr/bin/env bash
# Installs the Debian packages the suite needs to build, test and run locally.
set -euo pipefail

packages=(
    build-essential pkg-config git ca-certificates
    libzmq3-dev libczmq-dev libprotobuf-c-dev protobuf-c-compiler
    libpq-dev libev-dev libjansson-dev
    postgresql-15 postgresql-contrib-15 postgresql-client-15
    protobuf-compiler python3 python3-zmq python3-protobuf python3-pytest
    clang-format
)

missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
    echo "install-deps: all packages present"
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    SUDO=sudo
else
    SUDO=
fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
