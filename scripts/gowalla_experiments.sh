#!/usr/bin/env bash
# Gowalla, regime (b) mixed: mined hard negatives vs the --no-hard control, sharing one round 0.
set -u
cd "$(dirname "$0")/.." && mkdir -p runs
export OMP_WAIT_POLICY=PASSIVE
D=/work/shared/datasets/gowalla
common="--positives $D/train.txt --test $D/test.txt --iterations 2 --epochs 5 --refine-epochs 3 --regime mixed --num-sample 1024 --threads 1"
.venv/bin/hnmine run $common --iterations 1 --out runs/gowalla-mixed > runs/gowalla-mixed.log 2>&1
# the control reuses round 0 (same options but --no-hard; round 0 never uses hard negatives)
mkdir -p runs/gowalla-mixed-control
cp -r runs/gowalla-mixed/data runs/gowalla-mixed/round_00 runs/gowalla-mixed-control/
sed 's/"hard": true/"hard": false/' runs/gowalla-mixed/run.json > runs/gowalla-mixed-control/run.json
.venv/bin/hnmine run $common --out runs/gowalla-mixed > runs/gowalla-mixed-r1.log 2>&1 &
.venv/bin/hnmine run $common --no-hard --out runs/gowalla-mixed-control > runs/gowalla-mixed-control.log 2>&1 &
wait
