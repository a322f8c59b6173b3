#!/usr/bin/env bash
# vilab against PyTorch on this machine's CPU, in one sitting, as one table: vil_micro at 28²
# (batch 64) and vil_tiny at 224² (batch 16), the forward pass (vilab's inner backend; PyTorch
# in eval mode under inference_mode) and the whole training step (forward, backward, clipping,
# AdamW), on 1 thread and on all cores, beside this machine's f32 SGEMM ceiling (torch, 2048³)
# measured in the same run.
#
# Each case runs ROUNDS times, the peers interleaved (vilab, PyTorch eager, torch.compile, then
# again), and the table keeps each one's best round: shared machines swing by ±30%, and the
# best of interleaved rounds is the least disturbed figure of each.
#
# Usage: scripts/cpu-compare.sh            (ROUNDS=3 COMPILE=1 THREADS="1 $(nproc)")
#   ROUNDS=N       rounds per case
#   COMPILE=0      leave torch.compile out (its first round compiles for minutes)
#   THREADS="1 2"  thread counts
#   PYTHON=...     an interpreter with torch (default python3)
#   VILAB=...      the binary (default target/release/vilab; `cargo build --release` first)
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
COMPILE=${COMPILE:-1}
THREADS=${THREADS:-"1 $(nproc)"}
PYTHON=${PYTHON:-python3}
VILAB=${VILAB:-target/release/vilab}
[ -x "$VILAB" ] || { echo "cpu-compare: $VILAB not found; run cargo build --release" >&2; exit 1; }
"$PYTHON" -c "import torch" 2>/dev/null || { echo "cpu-compare: $PYTHON cannot import torch (set PYTHON)" >&2; exit 1; }

# name|vilab args|torch args
CASES=(
  "vil_micro 28² b64|--model vil_micro --batch 64 --steps 20 --warmup 2 --classes 10|--dim 96 --depth 6 --image-size 28 --patch 4 --classes 10 --batch 64 --steps 20 --warmup-steps 2"
  "vil_tiny 224² b16|--model vil_tiny --batch 16 --steps 4 --warmup 1 --classes 1000|--dim 192 --depth 24 --image-size 224 --patch 16 --classes 1000 --batch 16 --steps 4 --warmup-steps 1"
)

best() { # current candidate -> the larger (empty or "failed" loses)
  awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || a == "failed") print b; else if (b == "" || b == "failed") print a; else print (b + 0 > a + 0 ? b : a) }'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a + 0 > 0 && b + 0 > 0) printf "%.2f×", a / b; else print "–" }'; }
torch_rate() { # threads mode compile? torch-args...
  local threads=$1 mode=$2 compile=$3; shift 3
  local flag=()
  [ "$compile" = 1 ] && flag=(--compile)
  # shellcheck disable=SC2068
  "$PYTHON" scripts/torch_throughput.py --device cpu --threads "$threads" --mode "$mode" "${flag[@]}" $@ 2>/dev/null \
    | tail -n 1 | sed -nE 's/.*: ([0-9.]+) img\/s.*/\1/p' || true
}

declare -A CEILING
for threads in $THREADS; do
  CEILING[$threads]=$("$PYTHON" - "$threads" <<'EOF'
import sys, time, torch
torch.set_num_threads(int(sys.argv[1]))
a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
a @ b
times = []
for _ in range(7):
    start = time.perf_counter()
    a @ b
    times.append(time.perf_counter() - start)
best = min(times)
print(f"{2 * 2048 ** 3 / best / 1e9:.1f}")
EOF
)
done

declare -A RESULT
for case in "${CASES[@]}"; do
  IFS='|' read -r name vilab_args torch_args <<<"$case"
  for threads in $THREADS; do
    for round in $(seq "$ROUNDS"); do
      # shellcheck disable=SC2086
      out=$(RAYON_NUM_THREADS=$threads "$VILAB" bench -q $vilab_args)
      forward=$(awk '/^forward/ {print $2}' <<<"$out")
      train=$(awk '/^train step/ {print $3}' <<<"$out")
      train_gflops=$(awk '/^train step/ {print $5}' <<<"$out")
      forward_gflops=$(awk '/^forward/ {print $4}' <<<"$out")
      key="$name|$threads"
      RESULT[$key|vilab|forward]=$(best "${RESULT[$key|vilab|forward]:-}" "$forward")
      RESULT[$key|vilab|train]=$(best "${RESULT[$key|vilab|train]:-}" "$train")
      RESULT[$key|gflops|forward]=$(best "${RESULT[$key|gflops|forward]:-}" "$forward_gflops")
      RESULT[$key|gflops|train]=$(best "${RESULT[$key|gflops|train]:-}" "$train_gflops")
      for mode in eval train; do
        RESULT[$key|eager|$mode]=$(best "${RESULT[$key|eager|$mode]:-}" "$(torch_rate "$threads" "$mode" 0 "$torch_args")")
        if [ "$COMPILE" = 1 ]; then
          RESULT[$key|compile|$mode]=$(best "${RESULT[$key|compile|$mode]:-}" "$(torch_rate "$threads" "$mode" 1 "$torch_args")")
        fi
      done
      echo "cpu-compare: $name, $threads thread(s), round $round done" >&2
    done
  done
done

echo
echo "f32 SGEMM ceiling (torch, 2048³):$(for t in $THREADS; do printf ' %s GFLOP/s on %s thread(s);' "${CEILING[$t]}" "$t"; done)"
echo "best of $ROUNDS interleaved rounds; images/s, higher is better"
echo
printf '| model | threads | pass | vilab img/s | PyTorch eager | vilab ÷ eager | torch.compile | vilab ÷ compile | vilab GFLOP/s | share of SGEMM ceiling |\n'
printf '|---|---|---|---|---|---|---|---|---|---|\n'
for case in "${CASES[@]}"; do
  IFS='|' read -r name _ _ <<<"$case"
  for pass in forward train; do
    mode=$([ "$pass" = forward ] && echo eval || echo train)
    for threads in $THREADS; do
      key="$name|$threads"
      vilab=${RESULT[$key|vilab|$pass]}
      eager=${RESULT[$key|eager|$mode]:-}
      compiled=${RESULT[$key|compile|$mode]:-}
      gflops=${RESULT[$key|gflops|$pass]}
      share=$(awk -v g="$gflops" -v c="${CEILING[$threads]}" 'BEGIN { printf "%.0f%%", 100 * g / c }')
      printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$name" "$threads" \
        "$([ "$pass" = forward ] && echo "forward (eval)" || echo "train step")" "$vilab" \
        "${eager:-–}" "$(ratio "$vilab" "$eager")" "${compiled:-–}" "$(ratio "$vilab" "$compiled")" \
        "$gflops" "$share"
    done
  done
done
echo
set -- $THREADS
if [ $# -ge 2 ]; then
  for case in "${CASES[@]}"; do
    IFS='|' read -r name _ _ <<<"$case"
    for pass in forward train; do
      echo "vilab $name $pass, $1 → ${!#} threads: $(ratio "${RESULT[$name|${!#}|vilab|$pass]}" "${RESULT[$name|$1|vilab|$pass]}")"
    done
  done
fi
