#!/usr/bin/env bash
# The test suite (CPU). Tests that need ComfyUI (COMFYUI_DIR) or a GPU skip with a reason.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
export OMP_WAIT_POLICY=PASSIVE
exec "${PYTHON:-python3}" -m pytest -q -rs tests "$@"
