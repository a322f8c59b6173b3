#!/usr/bin/env bash
# A sweep at scale through Slurm: N tiny trials (a grid over the learning rate and weight decay,
# vil_micro at 16², one epoch on a copy of data1/) submitted as one job array with
# --array-parallelism K; prints the wall time until every task ended, then how long
# `vilab status` takes on the finished sweep (best of R, after one warm-up run).
#
# `status` plans every trial (its spec, stage keys and cache entries, the data folder scanned once
# for all), reads each trial's record and asks Slurm about the array's tasks.
#
# Usage: scripts/sweep-scale.sh [N] [K] [R]     (default N=200, K=8, R=5; N a multiple of 10)
# Needs a Slurm cluster (scripts/slurm-localhost.sh starts one here) and a release build of
# vilab (target/release/vilab; built here if missing). Works in a scratch folder, removed at the
# end.
set -euo pipefail
count="${1:-200}"
parallelism="${2:-8}"
runs="${3:-5}"
cd "$(dirname "$0")/.."
[[ -x target/release/vilab ]] || cargo build --release
vilab="$PWD/target/release/vilab"
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
cp -r data1 "$scratch/data"
python3 - "$scratch/sweep.yaml" "$count" <<'PY'
import sys
path, count = sys.argv[1], int(sys.argv[2])
rates = ", ".join(f"{1e-3 * (1 + i * 0.05):.5e}" for i in range(count // 10))
decays = ", ".join(f"{0.01 * i:.2f}" for i in range(10))
with open(path, "w") as spec:
    spec.write(f"""name: scale
seed: 42
data:
  root: data
  image_size: 16
model:
  name: vil_micro
  dim: 16
  depth: 2
train:
  epochs: 1
  batch_size: 50
  workers: 0
plot:
  formats: [png]
sweep:
  grid:
    train.optimizer.lr: [{rates}]
    train.optimizer.weight_decay: [{decays}]
""")
PY
cd "$scratch"
start=$(date +%s.%N)
"$vilab" -q run sweep.yaml --out out --launcher slurm --array-parallelism "$parallelism" >/dev/null
job=$(python3 -c 'import glob, json; print(json.load(open(glob.glob("out/scale/sweep-*/slurm.json")[0]))["submissions"][0]["job_id"])')
# (Not `squeue | grep -q`: grep quitting early fails the pipeline under pipefail.)
while [[ -n "$(squeue --noheader --array --jobs="$job" 2>/dev/null)" ]]; do sleep 1; done
end=$(date +%s.%N)
"$vilab" status sweep.yaml --out out >status.txt || true
head -1 status.txt
best=""
for _ in $(seq "$runs"); do
    t0=$(date +%s.%N)
    "$vilab" status sweep.yaml --out out >/dev/null || true
    t1=$(date +%s.%N)
    seconds=$(echo "$t1 - $t0" | bc -l)
    if [[ -z "$best" ]] || (( $(echo "$seconds < $best" | bc -l) )); then best=$seconds; fi
done
printf 'trials %d  parallelism %d  cores %d  array done in %.0f s  status best of %d: %.2f s\n' \
    "$count" "$parallelism" "$(nproc)" "$(echo "$end - $start" | bc -l)" "$runs" "$best"
