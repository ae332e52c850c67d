#!/usr/bin/env bash
# Sets up a fresh machine (scripts/setup.sh) and runs the main job: the simulated demo.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
PY=${PYTHON:-python3}
exec "$PY" -m testbed.cli demo "$@"
