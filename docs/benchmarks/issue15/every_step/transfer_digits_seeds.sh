#!/usr/bin/env bash
# digits-only transfer, 3 rounds, six update seeds: the hold below k (m) against the cap on the step scale
for cap in 2 3; do for m in 0 1; do for seed in 0 1 2 3 4 5; do
  echo -n "cap=$cap below_k_timesteps=$m seed=$seed: "
  PAPA_CAP=$cap PAPA_TR_OVR="{\"seed\": $seed, \"objective\": {\"below_k_timesteps\": $m}}" OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE \
    python -m benchmarks.transfer --models digits --rounds 3 --out /tmp/tr_seeds/c${cap}_m${m}_s$seed 2>&1 \
    | grep -E 'digits default' | sed -E 's/.*round ([0-9]): ρ held-out ([0-9.]+), fitted [0-9.]+ \(τ ([0-9.]+), s ([0-9.]+)\).*/r\1 \2\/\3 s=\4/' | tr '\n' ' '
  echo
done; done; done
