#!/usr/bin/env bash
# Gowalla Recall@20 >= 0.19 on CPU (docs/results.md): hnmine train's id two-tower blended
# with hnmine svd's history-pooling low-pass two-tower, the blend weight chosen on a validation split.
#   bash scripts/gowalla_blend.sh [OUT]      (needs ../shared/datasets/gowalla; about 40 CPU-minutes,
#                                            of which step 2, the model itself, is about 16)
set -euo pipefail
G=${G:-../shared/datasets/gowalla}
O=${1:-gowalla-blend}
H=${HNMINE:-hnmine}
WEIGHTS=${WEIGHTS:-"0.05 0.1 0.15 0.2 0.3"}
mkdir -p "$O"
recall20() { "$H" evaluate "$@" --json | python3 -c "import json,sys; print(json.load(sys.stdin)['metrics']['recall@20'])"; }

# 1. Choose the weight on the loop's 10% validation split (round 0 of hnmine run = hnmine train on the rest).
"$H" run --positives "$G/train.txt" --test "$G/test.txt" --iterations 1 --threads 1 --quiet --out "$O/split"
"$H" svd --positives "$O/split/data/train.parquet" --dim 1024 --out-dir "$O/split-lowpass"
best_w=""; best_r=0
for w in $WEIGHTS; do
  "$H" blend "$O/split-lowpass" "$O/split/round_00/embeddings" --weight "$w" --out-dir "$O/split-blend-$w" >/dev/null
  r=$(recall20 --users "$O/split-blend-$w/user.parquet" --items "$O/split-blend-$w/item.parquet" \
               --train "$O/split/data/train.parquet" --test "$O/split/data/valid.parquet")
  echo "weight $w: validation recall@20 $r"
  if python3 -c "import sys; sys.exit(not float('$r') > float('$best_r'))"; then best_w=$w; best_r=$r; fi
done
echo "chosen weight: $best_w"

# 2. The model, on the whole training file: train + export, svd, blend; then the test split.
start=$(date +%s)
"$H" train --positives "$G/train.txt" --out "$O/model.pt" --threads 1 --quiet
"$H" export --model "$O/model.pt" --out-dir "$O/trained"
"$H" svd --positives "$G/train.txt" --dim 1024 --out-dir "$O/lowpass"
"$H" blend "$O/lowpass" "$O/trained" --weight "$best_w" --out-dir "$O/blend"
echo "model built in $(( $(date +%s) - start )) s wall"
for m in trained lowpass blend; do
  echo "$m: test recall@20 $(recall20 --users "$O/$m/user.parquet" --items "$O/$m/item.parquet" \
                                       --train "$G/train.txt" --test "$G/test.txt")"
done
