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
