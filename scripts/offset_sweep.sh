#!/usr/bin/env bash
# sample_data, validation split: hard-negative logit offset 0 / log(400/2)/2 / log(400/2) vs the control,
# all from one round 0 (tuning reads the validation metrics, never test).
set -eu
cd "$(dirname "$0")/.." && mkdir -p runs
export OMP_WAIT_POLICY=PASSIVE
common="--positives sample_data/train.txt --test sample_data/test.txt --valid-fraction 0.1 --epochs 10 --refine-epochs 5 --threads 1"
base=runs/sample-valid
.venv/bin/hnmine run $common --iterations 1 --out $base > $base.log 2>&1
variant() {  # name, sed expression on run.json, extra options
  rm -rf $base-$1 && mkdir -p $base-$1 && cp -r $base/data $base/round_00 $base-$1/
  sed -e "$2" $base/run.json > $base-$1/run.json
  .venv/bin/hnmine run $common --iterations 2 $3 --out $base-$1 > $base-$1.log 2>&1
}
variant offset0 's/"hard_offset": null/"hard_offset": 0.0/' "--hard-offset 0" &
variant offset2.65 's/"hard_offset": null/"hard_offset": 2.65/' "--hard-offset 2.65" &
variant auto 's/"hard_offset": null/"hard_offset": null/' "" &
variant control 's/"hard": true/"hard": false/' "--no-hard" &
wait
