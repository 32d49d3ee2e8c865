#!/usr/bin/env bash
# One comparison: round 0, then round(s) >= 1 with mined hard negatives and, from the same round 0,
# the --no-hard control (same schedule, no mined negatives).
#   scripts/mining_vs_control.sh NAME TRAIN TEST ITERATIONS "other hnmine run options"
set -eu
cd "$(dirname "$0")/.." && mkdir -p runs
export OMP_WAIT_POLICY=PASSIVE
name=$1; train=$2; test=$3; iterations=$4; opts=$5
common="--positives $train --test $test $opts --threads 1"
.venv/bin/hnmine run $common --iterations 1 --out runs/$name > runs/$name.log 2>&1
rm -rf runs/$name-control && mkdir -p runs/$name-control
cp -r runs/$name/data runs/$name/round_00 runs/$name-control/
sed 's/"hard": true/"hard": false/' runs/$name/run.json > runs/$name-control/run.json
.venv/bin/hnmine run $common --iterations $iterations --out runs/$name >> runs/$name.log 2>&1 &
.venv/bin/hnmine run $common --iterations $iterations --no-hard --out runs/$name-control > runs/$name-control.log 2>&1 &
wait
