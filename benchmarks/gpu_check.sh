#!/usr/bin/env bash
# Issue 14's GPU figures in one go (≤ 8 minutes of step limits), for a session that is lent a GPU. Each step
# has its own time limit, so one slow step cannot eat the machine's time; logs go to ${OUT:-gpu_check}/:
#   1. the ComfyUI integration tests on the GPU at 512 px, the fidelity test among them (PAPA Generate
#      Batch = LoraLoaderModelOnly(export) → KSampler, images and latents byte for byte)
#   2. SD1.5 at 512 px (64×64 latent), 4 images per round: (a) the reference, (b) the default in real
#      rounds with memory 'auto', (e) the same through ComfyUI's model — speed and peak memory
#   3. the same (e) with the GPU capped at 6 GiB (an 8 GB card with room for the desktop)
#   4. SDXL at 1024 px (128×128 latent): (b) and (e), then (e) capped at 12 GiB
#   5. PAPA Generate Batch against LoraLoaderModelOnly + KSampler: 512 px, batch 4, 20 steps
# Usage: COMFYUI_DIR=/path/to/ComfyUI bash benchmarks/gpu_check.sh
#        DEVICE=cpu ARCH=tiny LATENT=8 LATENT_XL=8 SIZE=64 STEPS=2 bash benchmarks/gpu_check.sh  (plumbing, CPU)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu_check}
DEVICE=${DEVICE:-cuda}
ARCH=${ARCH:-sd15}
LATENT=${LATENT:-64}
LATENT_XL=${LATENT_XL:-128}
SIZE=${SIZE:-512}
STEPS=${STEPS:-20}
mkdir -p "$OUT"
export OMP_WAIT_POLICY=PASSIVE PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
[ "$DEVICE" = cuda ] && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/gpu.txt" 2>&1
step() {  # step NAME SECONDS COMMAND...: run with a time limit, keep going on failure
  local name=$1 limit=$2; shift 2
  echo "== $name (limit ${limit}s)"
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
  echo "   exit $?; last line: $(tail -n 1 "$OUT/$name.log")"
}
gpu=(); [ "$DEVICE" = cuda ] && gpu=(--gpu)
xl_arch=sdxl; [ "$ARCH" = tiny ] && xl_arch=tiny
speed=("$py" -m benchmarks.update_speed --device "$DEVICE" --b-mode round --memory auto)
if [ -n "${COMFYUI_DIR:-}" ]; then
  step integration 90 env PAPA_TEST_DEVICE=$([ "$DEVICE" = cuda ] && echo gpu || echo cpu) PAPA_TEST_SIZE="$SIZE" \
    "$py" -m pytest -q -p no:cacheprovider tests/comfyui/test_server.py -k "loop_twice or timed_out"
  step sd15 120 "${speed[@]}" --arch "$ARCH" --latent "$LATENT" --parts abe --draws "${DRAWS:-10}"
  step sd15_cap6 45 "${speed[@]}" --arch "$ARCH" --latent "$LATENT" --parts e --memory-cap 6
  step sdxl 100 "${speed[@]}" --arch "$xl_arch" --latent "$LATENT_XL" --parts be
  step sdxl_cap12 60 "${speed[@]}" --arch "$xl_arch" --latent "$LATENT_XL" --parts e --memory-cap 12
  step generation 65 "$py" -m benchmarks.generation_overhead "${gpu[@]}" --size "$SIZE" --batch 4 --steps "$STEPS" \
    --repeats "${REPEATS:-3}"
else  # without ComfyUI: the diffusers path only
  step sd15 120 "${speed[@]}" --arch "$ARCH" --latent "$LATENT" --parts ab --draws "${DRAWS:-10}"
  step sdxl 100 "${speed[@]}" --arch "$xl_arch" --latent "$LATENT_XL" --parts b
fi
