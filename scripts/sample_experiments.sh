#!/usr/bin/env bash
# sample_data: regime (a) shared and (b) mixed, each with mined hard negatives and the --no-hard control.
set -u
cd "$(dirname "$0")/.." && mkdir -p runs
export OMP_WAIT_POLICY=PASSIVE
common="--positives sample_data/train.txt --test sample_data/test.txt --iterations 3 --epochs 10 --refine-epochs 5 --threads 1"
for regime in mixed shared; do
  extra=""; [ "$regime" = shared ] && extra="--num-sample 4096"
  .venv/bin/hnmine run $common --regime $regime $extra --out runs/sample-$regime > runs/sample-$regime.log 2>&1
  .venv/bin/hnmine run $common --regime $regime $extra --no-hard --out runs/sample-$regime-control > runs/sample-$regime-control.log 2>&1
done
