#!/usr/bin/env bash
# vilab vs PyTorch eager training throughput on this machine's CPU, in one run, as one table:
# vil_micro at 28² (batch 64) and vil_tiny at 224² (batch 16), the same layout, batch and thread
# count on both sides, plus each side's peak memory.
#
# Usage: scripts/cpu-compare.sh [THREADS]   (default: all cores; needs python3 with torch)
# The vilab binary is target/release/vilab (`cargo build --release` first) or $VILAB.
set -euo pipefail
cd "$(dirname "$0")/.."

THREADS=${1:-$(nproc)}
VILAB=${VILAB:-target/release/vilab}
[ -x "$VILAB" ] || { echo "cpu-compare: $VILAB not found; run cargo build --release" >&2; exit 1; }
python3 -c "import torch" 2>/dev/null || { echo "cpu-compare: python3 cannot import torch" >&2; exit 1; }

# name|vilab args|torch args
CASES=(
  "vil_micro 28² b64|--model vil_micro --batch 64 --steps 20 --warmup 2 --classes 10|--dim 96 --depth 6 --image-size 28 --patch 4 --classes 10 --batch 64 --steps 20 --warmup-steps 2"
  "vil_tiny 224² b16|--model vil_tiny --batch 16 --steps 3 --warmup 1 --classes 1000|--dim 192 --depth 24 --image-size 224 --patch 16 --classes 1000 --batch 16 --steps 3 --warmup-steps 1"
)

printf '| model | threads | vilab img/s | PyTorch img/s | ratio | vilab peak MiB | PyTorch peak MiB |\n'
printf '|---|---|---|---|---|---|---|\n'
for case in "${CASES[@]}"; do
  IFS='|' read -r name vilab_args torch_args <<<"$case"
  # shellcheck disable=SC2086
  vilab_out=$(RAYON_NUM_THREADS=$THREADS "$VILAB" bench $vilab_args)
  vilab_rate=$(awk '/^train step/ {print $3}' <<<"$vilab_out")
  vilab_peak=$(awk '/^peak memory/ {print $3}' <<<"$vilab_out")
  # shellcheck disable=SC2086
  torch_out=$(python3 scripts/torch_throughput.py --device cpu --threads "$THREADS" $torch_args | tail -n 1)
  torch_rate=$(sed -E 's/.*: ([0-9.]+) img\/s.*/\1/' <<<"$torch_out")
  torch_peak=$(sed -E 's/.*peak ([0-9.]+) MiB.*/\1/' <<<"$torch_out")
  ratio=$(awk -v a="$vilab_rate" -v b="$torch_rate" 'BEGIN {printf "%.2f×", a / b}')
  printf '| %s | %s | %s | %s | %s | %s | %s |\n' \
    "$name" "$THREADS" "$vilab_rate" "$torch_rate" "$ratio" "$vilab_peak" "$torch_peak"
done
