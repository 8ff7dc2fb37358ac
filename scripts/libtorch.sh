#!/usr/bin/env bash
# Installs libtorch 2.13.0 (what tch 0.26 links) from PyPI's torch wheel,
# the only source of it reachable here, under $PETUUM_CACHE/libtorch-2.13.0,
# and prints nothing on success. Idempotent: a complete install is reused.
#
# CPU: the torch wheel's torch/lib, include and share, plus the two small
# NVIDIA wheels libtorch_cpu.so links against (libcudart.so.13,
# libcupti.so.13). With a GPU (nvidia-smi present, or PETUUM_CUDA=1) the
# CUDA libraries torch needs are added from their wheels as well.
set -euo pipefail
source "$(dirname "$0")/env.sh"
VER=2.13.0
DEST="$PETUUM_CACHE/libtorch-$VER"
WHEELS="$PETUUM_CACHE/wheels"
cuda=0
if [[ "${PETUUM_CUDA:-}" == 1 ]] || command -v nvidia-smi >/dev/null 2>&1; then cuda=1; fi
marker="$DEST/.complete-cpu"
(( cuda )) && marker="$DEST/.complete-cuda"
[[ -f $marker ]] && exit 0

log() { printf 'libtorch: %s\n' "$*" >&2; }
python3 -m pip --version >/dev/null 2>&1 || { log "python3 with pip is needed to fetch the torch wheel (scripts/setup.sh installs it)"; exit 1; }
mkdir -p "$WHEELS"
pins=(nvidia-cuda-runtime==13.0.96 nvidia-cuda-cupti==13.0.85)
if ! ls "$WHEELS"/torch-$VER-cp311-*manylinux_2_28_x86_64.whl >/dev/null 2>&1; then
  log "downloading torch==$VER from PyPI (~530 MB, once)"
  # The cp311 manylinux_2_28 wheel whatever this machine's Python is: only
  # its libtorch is used, and tch 0.26 was checked against this build.
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 311 \
    --platform manylinux_2_28_x86_64 "torch==$VER" -d "$WHEELS"
fi
if (( cuda )); then
  # The CUDA libraries torch needs, as its wheel's dependencies resolve
  # (cuda-toolkit extras, cudnn, nccl, ...): a few GB, once.
  log "downloading torch==$VER's CUDA dependencies"
  python3 -m pip download -q "torch==$VER" -d "$WHEELS"
fi
log "downloading ${pins[*]}"
python3 -m pip download -q --no-deps "${pins[@]}" -d "$WHEELS"

tmp="$DEST.tmp"
rm -rf "$tmp"
mkdir -p "$tmp"
log "unpacking into $DEST"
python3 - "$WHEELS" "$VER" "$tmp" "$cuda" <<'PY'
import sys, zipfile, glob, os, shutil
wheels, ver, out, cuda = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "1"
torch = glob.glob(f"{wheels}/torch-{ver}-cp311-*.whl")[0]
z = zipfile.ZipFile(torch)
for n in z.namelist():
    if n.startswith(("torch/lib/", "torch/include/", "torch/share/")):
        z.extract(n, out)
lib = os.path.join(out, "torch", "lib")
names = ["nvidia_cuda_runtime", "nvidia_cuda_cupti"]
for w in glob.glob(f"{wheels}/nvidia_*.whl") + glob.glob(f"{wheels}/cuda_*.whl"):
    base = os.path.basename(w)
    if not cuda and not any(base.startswith(p + "-") for p in names):
        continue
    zz = zipfile.ZipFile(w)
    for n in zz.namelist():
        if "/lib/" in n and ".so" in n and not n.endswith("/"):
            target = os.path.join(lib, os.path.basename(n))
            with zz.open(n) as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst)
PY
rm -rf "$DEST"
mv "$tmp" "$DEST"
touch "$marker"
log "libtorch $VER ready in $DEST/torch"
