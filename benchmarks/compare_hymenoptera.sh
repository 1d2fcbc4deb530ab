#!/usr/bin/env bash
# The four transfer-learning promises measured on hymenoptera (ants vs bees) with EfficientNet-Lite0 at 224 px:
# all four recipes, training fractions 0.1/0.25/0.5/1.0, 3 seeds, at most 2 minutes of wall time per cell.
# Cells are ordinary run folders under runs/compare_hymenoptera (rerunning resumes: finished cells are skipped);
# the table, JSON and plots are copied to benchmarks/results/compare_hymenoptera/.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
OUT=${OUT:-runs/compare_hymenoptera}
"$BIN/transferkit" compare benchmarks/configs/hymenoptera.yaml \
    --recipes transfer,frozen,finetune_all,scratch --fractions 0.1,0.25,0.5,1.0 --seeds 3 \
    --budget 2 --output "$OUT" "$@"
mkdir -p benchmarks/results/compare_hymenoptera
cp "$OUT"/compare.md "$OUT"/compare.json "$OUT"/*.png benchmarks/results/compare_hymenoptera/
echo "results in benchmarks/results/compare_hymenoptera/"
