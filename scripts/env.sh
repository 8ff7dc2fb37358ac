# Sourced by the scripts: one place for the build environment, so every
# build (setup, run, tests, CI) shares one target directory and one set of
# variables and nothing is compiled twice.
# rustup's default location (scripts/setup.sh installs Rust there if missing).
[[ -d $HOME/.cargo/bin && ":$PATH:" != *":$HOME/.cargo/bin:"* ]] && export PATH="$HOME/.cargo/bin:$PATH"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/petuum/target}"
export PETUUM_CACHE="${PETUUM_CACHE:-$HOME/.cache/petuum}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
mkdir -p "$CARGO_TARGET_DIR" "$PETUUM_CACHE"
# libtorch for tch (scripts/libtorch.sh installs it). Every build and test
# must see the same LIBTORCH* variables, or torch-sys rebuilds.
export LIBTORCH="${LIBTORCH:-$PETUUM_CACHE/libtorch-2.13.0/torch}"
unset LIBTORCH_USE_PYTORCH LIBTORCH_INCLUDE LIBTORCH_LIB
# RocksDB checks every WAL record with CRC32C; compiled without SSE4.2 and
# PCLMUL (the C++ build's default here) it falls back to a table-driven
# software CRC, ~5% of a node's CPU under petuum-cluster-bench
# (docs/performance.md, "Entry cache"). Enable them for the C/C++ of the
# dependencies where the build machine has them (every x86-64 server CPU
# of the last decade); the binaries then need them too.
if [[ $(uname -m) == x86_64 ]] && grep -qw sse4_2 /proc/cpuinfo 2>/dev/null && grep -qw pclmulqdq /proc/cpuinfo 2>/dev/null; then
  export CXXFLAGS_x86_64_unknown_linux_gnu="${CXXFLAGS_x86_64_unknown_linux_gnu:--msse4.2 -mpclmul}"
fi
