#!/usr/bin/env bash
# Fuzzes experiment loading for a fixed time: the properties of tests/suite/fuzz_spec.rs
# (arbitrary YAML text, mutated quickstart experiments, sweep trials, --set arguments), each
# drawing fresh random cases until the budget is spent, all properties at once. Prints the cases
# run per property and in total; exits non-zero on the first input that panics or yields a
# problem spanning several lines (proptest prints it, shrunk).
#
# Usage: scripts/fuzz.sh [SECONDS]   (default 60; the build comes on top)
# Environment: PROPTEST_CASES, cases per round (default 2000); a round always completes.
set -euo pipefail

SECONDS_BUDGET=${1:-60}
case $SECONDS_BUDGET in
    '' | *[!0-9]*) echo "usage: $0 [SECONDS]" >&2; exit 2 ;;
esac
cd "$(dirname "$0")/.."

cargo test --release --test suite --no-run
LOG=$(mktemp -t vilab-fuzz.XXXXXX)
trap 'rm -f "$LOG"' EXIT
status=0
PROPTEST_CASES=${PROPTEST_CASES:-2000} VILAB_FUZZ_SECONDS=$SECONDS_BUDGET \
    cargo test --release --test suite -- fuzz_spec:: --nocapture --test-threads 8 2>&1 |
    tee "$LOG" ||
    status=$?
echo
grep -E '^fuzz_spec [a-z_]+: [0-9]+ cases$' "$LOG" | sort || true
total=$(grep -E '^fuzz_spec [a-z_]+: [0-9]+ cases$' "$LOG" | awk '{ sum += $3 } END { print sum + 0 }')
echo "fuzz: $total cases in about $SECONDS_BUDGET s per property"
exit "$status"
