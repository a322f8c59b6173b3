#!/usr/bin/env bash
# The data check at scale: how long `vilab status` takes on a folder of N files (10 class
# folders, sub-folders of 10,000 files each, one byte per file), best of R runs, after one
# warm-up run so the file system's caches are warm, as they are on a re-run.
#
# `status` plans the experiment: it lists and stats every file under the class folders and
# hashes the list into the data fingerprint — the check every cached `vilab run` makes.
#
# Usage: scripts/scan-scale.sh [N] [R]     (default N=1000000, R=5)
# Needs a release build of vilab (target/release/vilab; built here if missing). The files are
# made under $TMPDIR (about 4 GiB of inodes and blocks for a million) and removed at the end.
set -euo pipefail
count="${1:-1000000}"
runs="${2:-5}"
cd "$(dirname "$0")/.."
[[ -x target/release/vilab ]] || cargo build --release
vilab="$PWD/target/release/vilab"
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
python3 - "$scratch/data" "$count" <<'EOF'
import os, sys
root, count = sys.argv[1], int(sys.argv[2])
for i in range(count):
    folder = f"{root}/class{i % 10:02d}/{i // 10 // 10000:03d}"
    if i // 10 % 10000 == 0:
        os.makedirs(folder, exist_ok=True)
    with open(f"{folder}/img{i:07d}.png", "wb") as file:
        file.write(b"x")
EOF
cat > "$scratch/scale.yaml" <<'EOF'
name: scale
data:
  root: data
  image_size: 16
model:
  name: vil_micro
  dim: 16
  depth: 2
  patch_size: 4
EOF
"$vilab" status "$scratch/scale.yaml" --out "$scratch/out" >/dev/null || true
best=""
for _ in $(seq "$runs"); do
    start=$(date +%s.%N)
    "$vilab" status "$scratch/scale.yaml" --out "$scratch/out" >/dev/null || true
    end=$(date +%s.%N)
    seconds=$(echo "$end - $start" | bc -l)
    if [[ -z "$best" ]] || (( $(echo "$seconds < $best" | bc -l) )); then best=$seconds; fi
done
printf 'files %d  cores %d  best of %d: %.2f s  (%.2f µs per file)\n' \
    "$count" "$(nproc)" "$runs" "$best" "$(echo "$best * 1000000 / $count" | bc -l)"
