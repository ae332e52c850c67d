#!/usr/bin/env bash
# Installs everything the project needs on a fresh Debian bookworm machine (run as root):
# Debian's GNU Radio and libiio, then the project and its Python dependencies, torch pinned to
# the CPU build. Safe to run again; skips apt when the packages are already there.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

debs=(gnuradio python3-zmq python3-numpy libiio0 libiio-utils iproute2 util-linux g++)  # the flowgraph runs under
# /usr/bin/python3; iproute2 and util-linux (ip, unshare): the Ray cluster test runs in its own network namespace;
# g++: torch.compile's CPU kernels (env.compile)
missing=()
for d in "${debs[@]}"; do dpkg -s "$d" >/dev/null 2>&1 || missing+=("$d"); done
if ((${#missing[@]})); then
  echo "setup: installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

echo "setup: installing Python packages"
"$PY" -m pip install -q --disable-pip-version-check -c constraints.txt torch
"$PY" -m pip install -q --disable-pip-version-check -c constraints.txt -e ".[dev,radio,track,examples,cluster,record]"
