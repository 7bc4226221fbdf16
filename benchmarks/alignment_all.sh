#!/usr/bin/env bash
# The full alignment benchmark: baselines, the default and its ablations, 3 seeds, 30 rounds.
#   bash benchmarks/alignment_all.sh [--device cuda] [--out DIR]
# The exact-sum presets get max_batch 1000 (one chunk per image): chunking changes speed, not the maths.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m benchmarks.alignment --methods default liked_only dpo "$@" \
  --variant reference reference '{"objective": {"max_batch": 1000}}' \
  --variant epapa epapa '{"objective": {"max_batch": 1000}}' \
  --variant default_all_t default '{"objective": {"k": 0}}' \
  --variant default_linear default '{"objective": {"loss": "linear"}}' \
  --variant default_no_replay default '{"replay": "none"}' \
  --variant default_no_model_term default '{"objective": {"model_term": "none"}}' \
  --variant default_lr3e-3 default '{"lr": 3e-3}' \
  --variant default_beta30 default '{"objective": {"beta": 30.0}}' \
  --variant default_k200 default '{"objective": {"k": 200}}' \
  --variant default_model_coef_1 default '{"objective": {"model_coef": 1.0}}' \
  --variant default_constant_lr default '{"lr_decay_rounds": 0}' \
  --variant default_liked_weight_1 default '{"objective": {"liked_weight": 1.0}}' \
  --variant default_newest_every_step default '{"newest_every_step": true}' \
  --variant default_m16 default '{"objective": {"timesteps_per_image": 16}}' \
  --variant default_fp32 default '{"autocast": "none"}'
