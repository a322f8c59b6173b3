#!/usr/bin/env bash
# Runner overhead: how long a fully cached `vilab run` and `vilab status` take on a 5,000-image
# folder (10 classes × 500), next to a no-op `dvc repro` of an equivalent 3-stage pipeline on
# the same folder. Both are timed with hyperfine in the same invocation of this script.
#
# Usage: scripts/overhead.sh [--runs N] [--keep]
#   --runs N   timed runs per command (default 20)
#   --keep     keep the scratch folder (its path is printed)
#
# Needs: a release build of vilab (built here if missing), hyperfine, python3 with venv. DVC is
# installed into a throwaway virtual environment under $TMPDIR (reused by later runs).
# The images come from Fashion-MNIST's IDX files (Debian package dataset-fashion-mnist) when
# present, else from copies of data1/'s images.
#
# The vilab experiment is the smallest full pipeline (split, stats, augment, a zero-epoch train
# of a tiny model, evaluate, plot): the data stages are the work, the model stages cost little,
# and a cached run checks all six against the data folder's fingerprint.
set -euo pipefail

runs=20
keep=false
while [[ $# -gt 0 ]]; do
    case "$1" in
        --runs) runs="$2"; shift 2 ;;
        --keep) keep=true; shift ;;
        -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
        *) echo "overhead.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
vilab="${VILAB:-$repo/target/release/vilab}"
fashion="${FASHION_MNIST:-/usr/share/datasets/fashion-mnist}"
tmp="${TMPDIR:-/tmp}"
venv="$tmp/vilab-overhead-dvc-venv"

for tool in hyperfine python3; do
    command -v "$tool" > /dev/null || { echo "overhead.sh: $tool is not installed" >&2; exit 1; }
done
if [[ ! -x "$vilab" ]]; then
    (cd "$repo" && cargo build --release --bin vilab)
fi

work="$(mktemp -d "$tmp/vilab-overhead.XXXXXX")"
if ! $keep; then
    trap 'rm -rf "$work"' EXIT
fi
echo "scratch folder: $work"

# 1. The 5,000-image folder.
classes="T-shirt_top,Trouser,Pullover,Dress,Coat,Sandal,Shirt,Sneaker,Bag,Ankle_boot"
if [[ -f "$fashion/train-images-idx3-ubyte.gz" ]]; then
    "$vilab" -q data import-idx \
        --images "$fashion/train-images-idx3-ubyte.gz" \
        --labels "$fashion/train-labels-idx1-ubyte.gz" \
        --classes "$classes" --per-class 500 --out "$work/data" > /dev/null
else
    # data1/ holds 100 images per class; five renamed copies of each make 500.
    for class_dir in "$repo"/data1/*/; do
        class="$(basename "$class_dir")"
        mkdir -p "$work/data/$class"
        for copy in 1 2 3 4 5; do
            for image in "$class_dir"*; do
                cp "$image" "$work/data/$class/$copy-$(basename "$image")"
            done
        done
    done
fi
images="$(find "$work/data" -type f | wc -l)"
echo "data: $images images in $(find "$work/data" -mindepth 1 -maxdepth 1 -type d | wc -l) classes"

# 2. vilab: run once, then time the cached run and status.
cat > "$work/experiment.yaml" <<'YAML'
name: overhead
seed: 42
data:
  root: data
  image_size: 28
split:
  val_fraction: 0.2
  seed: 42
model:
  name: vil_micro
  dim: 16
  depth: 2
  patch_size: 4
train:
  epochs: 0
  batch_size: 16
YAML
(cd "$work" && "$vilab" -q run experiment.yaml --out out > /dev/null)
(cd "$work" && "$vilab" -q status experiment.yaml --out out > /dev/null) \
    || { echo "overhead.sh: vilab status reports stages not cached after a run" >&2; exit 1; }

# 3. DVC: the same three data stages as plain scripts hashing and copying files.
if [[ ! -x "$venv/bin/dvc" ]]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet "dvc==3.67.*" || "$venv/bin/pip" install --quiet "dvc>=3,<4"
fi
mkdir -p "$work/dvc"
cat > "$work/dvc/stage.py" <<'PY'
"""The three stand-in stages: split lists and hashes every image, stats and augment read the
split and write a small summary or copy the training files, so each stage depends on real
inputs and produces real outputs."""
import hashlib, os, shutil, sys

stage, data = sys.argv[1], sys.argv[2]
if stage == "split":
    with open("split.txt", "w") as out:
        for index, (folder, _, files) in enumerate(sorted(os.walk(data))):
            for name in sorted(files):
                path = os.path.join(folder, name)
                digest = hashlib.blake2b(open(path, "rb").read(), digest_size=16).hexdigest()
                part = "val" if int(digest[:2], 16) % 5 == 0 else "train"
                out.write(f"{part} {os.path.relpath(path, data)} {digest}\n")
elif stage == "stats":
    lines = open("split.txt").read().splitlines()
    with open("stats.txt", "w") as out:
        out.write(f"{len(lines)} files\n")
elif stage == "augment":
    os.makedirs("augment", exist_ok=True)
    for line in open("split.txt"):
        part, relative, _ = line.split()
        if part == "train":
            target = os.path.join("augment", relative.replace("/", "_"))
            shutil.copyfile(os.path.join(data, relative), target)
PY
cat > "$work/dvc/dvc.yaml" <<'YAML'
stages:
  split:
    cmd: python3 stage.py split ../data
    deps: [stage.py, ../data]
    outs: [split.txt]
  stats:
    cmd: python3 stage.py stats ../data
    deps: [stage.py, split.txt]
    outs: [stats.txt]
  augment:
    cmd: python3 stage.py augment ../data
    deps: [stage.py, split.txt, ../data]
    outs: [augment]
YAML
(
    cd "$work/dvc"
    export PATH="$venv/bin:$PATH" DVC_NO_ANALYTICS=1
    dvc init --no-scm --quiet
    dvc config core.analytics false
    dvc repro --quiet > /dev/null
)

# 4. Timings, all in one hyperfine run.
(
    cd "$work"
    export PATH="$venv/bin:$PATH" DVC_NO_ANALYTICS=1
    hyperfine --style basic --warmup 3 --runs "$runs" --export-json "$work/timings.json" \
        --command-name "vilab run (cached)" "$vilab -q run experiment.yaml --out out" \
        --command-name "vilab status" "$vilab -q status experiment.yaml --out out" \
        --command-name "dvc repro (no-op)" "cd dvc && dvc repro --quiet"
)

python3 - "$work/timings.json" "$images" <<'PY'
import json, sys

results = json.load(open(sys.argv[1]))["results"]
images = sys.argv[2]
dvc = next(r for r in results if r["command"].startswith("dvc"))["mean"]
print(f"\nrunner overhead on {images} images (mean ± σ over {len(results[0]['times'])} runs)")
print(f"{'command':<22} {'mean s':>8} {'σ s':>8} {'dvc / this':>11}")
for result in results:
    ratio = dvc / result["mean"]
    print(f"{result['command']:<22} {result['mean']:>8.3f} {result['stddev']:>8.3f} {ratio:>10.1f}×")
PY
