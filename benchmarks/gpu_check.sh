#!/usr/bin/env bash
# Issue 6's GPU figures in one go, for a session that is lent a GPU (each step has its own time limit,
# so one slow step cannot eat the machine's time; the logs go to ${OUT:-gpu_check}/):
#   1. SD1.5 at 512 px (64×64 latent): (a) the reference, (b) the default (real rounds), (c), (d);
#      and (e) through ComfyUI's model when COMFYUI_DIR is set
#   2. SDXL at 1024 px: (b) and (e) — peak memory against the 16 GB target
#   3. PAPA Generate Batch against KSampler + LoraLoaderModelOnly on the GPU (needs COMFYUI_DIR)
# Usage: bash benchmarks/gpu_check.sh            (GPU)
#        DEVICE=cpu ARCH=tiny LATENT=8 bash benchmarks/gpu_check.sh   (plumbing check on a CPU)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu_check}
DEVICE=${DEVICE:-cuda}
ARCH=${ARCH:-sd15}
LATENT=${LATENT:-64}
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
parts=abcd; [ -n "${COMFYUI_DIR:-}" ] && parts=abcde
step sd15 200 "$py" benchmarks/update_speed.py --device "$DEVICE" --arch "$ARCH" --latent "$LATENT" --parts "$parts" \
  --draws "${DRAWS:-10}"
xl_arch=sdxl; [ "$ARCH" = tiny ] && xl_arch=tiny
xl_parts=b; [ -n "${COMFYUI_DIR:-}" ] && xl_parts=be
step sdxl 240 "$py" benchmarks/update_speed.py --device "$DEVICE" --arch "$xl_arch" --latent "$LATENT" --parts "$xl_parts"
if [ -n "${COMFYUI_DIR:-}" ]; then
  gpu_flag=(); [ "$DEVICE" = cuda ] && gpu_flag=(--gpu)
  step generation 120 "$py" benchmarks/generation_overhead.py "${gpu_flag[@]}" --repeats "${REPEATS:-4}"
fi
