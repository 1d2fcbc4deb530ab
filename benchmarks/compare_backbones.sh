#!/usr/bin/env bash
# EfficientNet-Lite0/1/2 on hymenoptera, each at its native size (224/240/260 px):
#   1. the frozen probe (head on cached features, one seed): a ranking in about a minute;
#   2. the default schedule (frozen head, then the top 2 blocks) with 3 seeds each.
# Results (compare.md/json and plots) are copied to benchmarks/results/compare_backbones/{probe,transfer}/.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
OUT=${OUT:-runs/compare_backbones}
BACKBONES=efficientnet-lite0,efficientnet-lite1,efficientnet-lite2
"$BIN/transferkit" compare benchmarks/configs/hymenoptera.yaml --backbones "$BACKBONES" --native-size \
    --recipes frozen --fractions 1 --seeds 1 --output "$OUT/probe"
"$BIN/transferkit" compare benchmarks/configs/hymenoptera.yaml --backbones "$BACKBONES" --native-size \
    --recipes transfer --fractions 1 --seeds 3 --output "$OUT/transfer"
for part in probe transfer; do
    mkdir -p "benchmarks/results/compare_backbones/$part"
    cp "$OUT/$part"/compare.md "$OUT/$part"/compare.json "$OUT/$part"/*.png "benchmarks/results/compare_backbones/$part/"
done
echo "results in benchmarks/results/compare_backbones/"
