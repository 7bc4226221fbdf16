#!/usr/bin/env bash
# Installs what the demo and the tests need into the current Python, idempotently.
# torch is installed only when missing, and then as the CPU build torch==2.13.0: a bare `torch`
# requirement would pull a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if ! "$PY" -c "import torch" >/dev/null 2>&1; then
  echo "setup: torch missing, installing torch==2.13.0" >&2
  "$PY" -m pip install -q torch==2.13.0
fi
if ! "$PY" -c "import diffusers, peft, safetensors, sklearn, tqdm, pytest, PIL" >/dev/null 2>&1; then
  echo "setup: installing requirements.txt and requirements-dev.txt" >&2
  # the constraint keeps pip from replacing the torch that is there
  "$PY" -m pip install -q -r requirements.txt -r requirements-dev.txt \
    -c <(echo "torch==$("$PY" -c 'import torch; print(torch.__version__.split("+")[0])')")
fi
