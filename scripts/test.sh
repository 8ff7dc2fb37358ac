#!/usr/bin/env bash
# The whole test suite, as CI runs it: formatting, lints, then every test
# of every crate in release mode (one profile, so dependencies' C++ is
# compiled once and reused from $CARGO_TARGET_DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
# Full setup, data included (the examples test validates the README's
# job), and the tools the tests run (Prometheus, Chromium).
./scripts/setup.sh --test
# Again: on a fresh machine setup.sh has just installed Rust under
# ~/.cargo/bin, which this shell's PATH did not have yet.
source scripts/env.sh

export PETUUM_DATASETS="${PETUUM_DATASETS:-$(cd .. && pwd)/shared/datasets}"
echo "test: datasets from $PETUUM_DATASETS, target dir $CARGO_TARGET_DIR" >&2

cargo fmt --all -- --check
cargo clippy --release --workspace --all-targets --quiet -- -D warnings
# The end-to-end tests run the real binaries: build them first.
cargo build --release --workspace --bins --quiet
# The systemd unit, checked against the binary just built.
if command -v systemd-analyze >/dev/null 2>&1; then
  unit="$(mktemp -d)/petuumd.service"
  sed "s#/usr/local/bin/petuumd#$CARGO_TARGET_DIR/release/petuumd#" systemd/petuumd.service > "$unit"
  systemd-analyze verify "$unit"
fi
cargo test --release --workspace --no-fail-fast
