#!/usr/bin/env bash
# The main job: PAPA on the embedded digits model with a simulated user (under 2 minutes on 2 CPU cores once installed).
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
export OMP_WAIT_POLICY=PASSIVE
exec "${PYTHON:-python3}" -m papa_core demo "$@"
