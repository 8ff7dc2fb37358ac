#!/usr/bin/env bash
# Runs one test of a built test binary N times in a row and stops at the
# first failure: how a test suspected of failing now and then is checked.
#
#   scripts/repeat-test.sh <test-binary-name> <test-name> [N=20]
#   e.g. scripts/repeat-test.sh jobs whole_cluster_restart_resumes_from_checkpoint 20
#
# Build first (`cargo build --release --workspace --bins --tests`); put load
# beside it (`for i in 1 2; do (while :; do :; done) & done`) to check it
# with both cores busy.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
source "$root/scripts/env.sh"
[[ $# -ge 2 ]] || { echo "usage: $0 <test-binary-name> <test-name> [N]" >&2; exit 2; }
name=$1 test=$2 n=${3:-20}
bin=$(ls -t "$CARGO_TARGET_DIR/release/deps/$name"-* 2>/dev/null | grep -v '\.d$' | head -1 || true)
[[ -n $bin ]] || { echo "no test binary '$name' in $CARGO_TARGET_DIR/release/deps: build first" >&2; exit 2; }
export PETUUM_DATASETS="${PETUUM_DATASETS:-$root/../shared/datasets}"
log=$(mktemp)
cd "$root/tests"
for i in $(seq 1 "$n"); do
  start=$(date +%s)
  if ! "$bin" --exact "$test" --test-threads 1 >"$log" 2>&1; then
    echo "$name::$test: run $i FAILED after $(( $(date +%s) - start )) s; output in $log"
    exit 1
  fi
  echo "$name::$test: run $i ok in $(( $(date +%s) - start )) s"
done
rm -f "$log"
echo "$name::$test: $n in a row passed"
