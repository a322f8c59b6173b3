#!/usr/bin/env bash
# Training throughput of vil_tiny at 224² on an NVIDIA GPU: vilab (CUDA backend) in f32 and bf16
# on one device (and on all devices when there are several), next to the same model trained by
# PyTorch (scripts/torch_throughput.py), as one table.
#
# Needs: a vilab built with `cargo build --release --features cuda`, an NVIDIA GPU (nvidia-smi),
# and python3 with torch. The data is synthetic: random 224² images written as IDX files with
# the Python standard library and converted by `vilab data import-idx`.
#
# Usage: scripts/gpu-check.sh [VILAB_BINARY]   (default: target/release/vilab)
# Environment: BATCH (64), STEPS per epoch (20), EPOCHS (3; the last one is reported).
set -euo pipefail

VILAB=$(realpath "${1:-target/release/vilab}")
BATCH=${BATCH:-64}
STEPS=${STEPS:-20}
EPOCHS=${EPOCHS:-3}
HERE=$(cd "$(dirname "$0")" && pwd)
WORK=$(mktemp -d -t vilab-gpu-check.XXXXXX)
trap 'rm -rf "$WORK"' EXIT

command -v nvidia-smi >/dev/null || { echo "gpu-check: nvidia-smi not found" >&2; exit 1; }
[ -x "$VILAB" ] || { echo "gpu-check: $VILAB is not an executable" >&2; exit 1; }
# Built with `--features cuda`, the version names the backend with fusion and autotune.
BUILT=$("$VILAB" --version)
echo "vilab: $BUILT"
[[ "$BUILT" == *"cuda"*"(fusion, autotune)"* ]] \
    || { echo "gpu-check: $VILAB was built without --features cuda" >&2; exit 1; }
GPUS=$(nvidia-smi --query-gpu=index --format=csv,noheader | wc -l)
nvidia-smi --query-gpu=index,name,memory.total --format=csv,noheader | sed 's/^/gpu: /'

# Two classes; 5% held out for validation, so the training split gives STEPS full batches.
IMAGES=$(( (BATCH * STEPS * 100 + 94) / 95 + 2 * BATCH ))
python3 - "$WORK" "$IMAGES" <<'EOF'
import os, random, struct, sys
work, count, side = sys.argv[1], int(sys.argv[2]), 224
random.seed(0)
with open(os.path.join(work, "images.idx"), "wb") as images:
    images.write(struct.pack(">IIII", 0x803, count, side, side))
    for _ in range(count):
        images.write(random.randbytes(side * side))
with open(os.path.join(work, "labels.idx"), "wb") as labels:
    labels.write(struct.pack(">II", 0x801, count))
    labels.write(bytes(index % 2 for index in range(count)))
EOF
"$VILAB" -q data import-idx --images "$WORK/images.idx" --labels "$WORK/labels.idx" \
    --classes noise_a,noise_b --out "$WORK/data"

# One experiment; each configuration is a set of --set overrides.
cat > "$WORK/gpu_check.yaml" <<EOF
name: gpu_check
seed: 0
backend: cuda
data: {root: data, image_size: 224}
split: {val_fraction: 0.05, seed: 0}
model: {name: vil_tiny}
train:
  epochs: $EPOCHS
  batch_size: $BATCH
  drop_last: true
  optimizer: {name: adamw, lr: 0.001, weight_decay: 0.05}
  schedule: {cosine: {warmup_epochs: 1}}
  clip_grad: {norm: 5.0}
  ema: {enabled: false}
  workers: 4
EOF

ALL_DEVICES="[$(seq -s, 0 $((GPUS - 1)))]"
RESULTS=()
run_vilab() { # name, precision, devices
    local name=$1 precision=$2 devices=$3
    local log="$WORK/$name.log"
    if ! "$VILAB" run "$WORK/gpu_check.yaml" --out "$WORK/out-$name" \
        --set train.precision="$precision" --set "train.devices=$devices" >"$log" 2>&1; then
        echo "gpu-check: vilab $name failed; last lines of its log:" >&2
        tail -n 20 "$log" >&2
        RESULTS+=("vilab|$precision|$devices|failed")
        return
    fi
    local history="$WORK/out-$name/gpu_check/latest/train/history.csv"
    # The last epoch: kernels are compiled and caches warm by then.
    local rate
    rate=$(tail -n 1 "$history" | awk -F, '{printf "%.1f", $12}')
    RESULTS+=("vilab|$precision|$devices|$rate")
}
run_torch() { # precision
    local precision=$1 line
    if line=$(python3 "$HERE/torch_throughput.py" --batch "$BATCH" --steps "$STEPS" \
        --precision "$precision" 2>"$WORK/torch-$precision.log"); then
        RESULTS+=("pytorch|$precision|[0]|$(echo "$line" | sed -E 's/.*: ([0-9.]+) img\/s.*/\1/')")
    else
        echo "gpu-check: pytorch $precision failed:" >&2
        tail -n 20 "$WORK/torch-$precision.log" >&2
        RESULTS+=("pytorch|$precision|[0]|failed")
    fi
}

run_vilab f32-1 f32 "[0]"
run_vilab bf16-1 bf16 "[0]"
if [ "$GPUS" -gt 1 ]; then
    run_vilab "f32-$GPUS" f32 "$ALL_DEVICES"
fi
run_torch f32
run_torch bf16

echo
echo "vil_tiny, 224², batch $BATCH, $STEPS steps per epoch (training images/s, higher is better)"
echo
echo "| trainer | precision | devices | images/s |"
echo "|---|---|---|---|"
for row in "${RESULTS[@]}"; do
    IFS='|' read -r trainer precision devices rate <<<"$row"
    echo "| $trainer | $precision | $devices | $rate |"
done
