#!/usr/bin/env bash
# DNN benchmark (docs/benchmarks.md, "DNN"): the example MLP and CNN on
# MNIST, petuum (embedded; 1 worker with 1 and 2 torch threads, 2 workers;
# wait-free backprop off and on) against a plain PyTorch loop (1 and 2
# threads) with torch from the same 2.13.0 wheel, CPU.
# Then sufficient factors against the server for the MLP with one
# mini-batch per clock (bytes each worker pushed to the tables).
#   DNN_BENCH=sfb ./bench/dnn.sh   (only that part)
#   ./bench/dnn.sh [mlp_epochs] [cnn_epochs]   (default 2 1, 0 skips; needs
#     ./scripts/setup.sh; installs torch into $PETUUM_CACHE/venv if
#     missing: a few GB of CUDA wheels come with PyPI's torch)
# On a GPU machine: DNN_DEVICE=cuda runs both sides on the GPU (the job
# says device = "cuda", so a CPU-only build fails instead of running on
# the CPU); PETUUMD=<binary> and PYTHON=<python with torch> use a
# prebuilt petuumd and an installed torch (docs/poseidon.md, "GPU").
set -euo pipefail
cd "$(dirname "$0")/.."
dev=${DNN_DEVICE:-cpu}
if [[ -z ${PETUUMD:-} ]]; then
  source scripts/env.sh
  PETUUMD="$CARGO_TARGET_DIR/release/petuumd"
  cargo build --quiet --release -p petuumd
fi
if [[ -z ${PYTHON:-} ]]; then
  venv="${PETUUM_CACHE:-$HOME/.cache/petuum}/venv"
  [[ -x $venv/bin/python ]] || python3 -m venv "$venv"
  "$venv/bin/python" -c "import torch" 2>/dev/null || "$venv/bin/pip" install -q "torch==2.13.0"
  PYTHON="$venv/bin/python"
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# s/epoch: training time per epoch (petuum: the last clock's elapsed time,
# PyTorch: its training loop), images/s likewise; job s: petuum's whole
# run (data loading, setup, export and test evaluation included).
printf '%-44s %9s %10s %9s %8s %7s\n' "run" "s/epoch" "images/s" "test acc" "hidden" "job s"
petuum() { # net epochs workers threads wait_free
  local net=$1 epochs=$2 w=$3 th=$4 wf=$5
  # 4 mini-batches of 64 per worker per clock.
  local clocks=$(( epochs * 60000 / (256 * w) ))
  sed -e "s/^clocks = .*/clocks = $clocks/" -e "s#\.\./\.\./#$PWD/#g" \
    -e "s#^path = .*#path = \"$tmp/m.safetensors\"#" \
    -e "s/^batches_per_clock = 4/batches_per_clock = 4\nthreads = $th\nwait_free = $wf\ndevice = \"$dev\"/" \
    "examples/jobs/mnist-$net.toml" > "$tmp/job.toml"
  rm -rf "$tmp/d"
  local line
  # The last two lines: the last clock (training time, as the PyTorch
  # loop times it: no data loading, no test evaluation) and the summary.
  line=$(PETUUM_LOG=petuum_poseidon=info "$PETUUMD" run "$tmp/job.toml" \
    --workers "$w" --json --data-dir "$tmp/d" 2>"$tmp/log" | tail -2 | paste -sd'|')
  local hidden
  hidden=$(sed 's/\x1b\[[0-9;]*m//g' "$tmp/log" | grep -o 'hidden_fraction=[0-9.]*' \
    | cut -d= -f2 | awk '{s+=$1; n++} END {if (n) printf "%.0f%%", 100*s/n; else print "-"}')
  python3 - "$line" "$net, $w worker(s), $th thread(s), wait-free $wf, $dev" "$clocks" "$epochs" "$w" "$hidden" <<'PY'
import json, sys
last, v = (json.loads(x) for x in sys.argv[1].split("|"))
name = sys.argv[2]; clocks, epochs, w = map(int, sys.argv[3:6])
s = last["elapsed_s"]; imgs = clocks * w * 256
print(f"{'petuum ' + name:<44} {s / epochs:>9.2f} {imgs / s:>10.0f} {v['test_accuracy']:>9.4f} {sys.argv[6]:>8} {v['seconds']:>7.1f}")
PY
}
pytorch() { # net epochs threads
  local line
  line=$("$PYTHON" bench/dnn_pytorch.py "$2" "$3" "$1" "$dev")
  python3 - "$line" <<'PY'
import json, sys
v = json.loads(sys.argv[1])
name = "pytorch %s, %d thread(s), %s" % (v["net"], v["threads"], v["device"])
print(f"{name:<44} {v['seconds_per_epoch']:>9.2f} {v['images_per_s']:>10.0f} {v['test_accuracy']:>9.4f} {'-':>8}")
PY
}
sfb_run() { # mode: the MLP, 2 workers, one mini-batch of 64 per clock, 2 epochs
  local clocks=$(( 2 * 60000 / (64 * 2) ))
  sed -e "s/^clocks = .*/clocks = $clocks/" -e "s#\.\./\.\./#$PWD/#g" \
    -e "s#^path = .*#path = \"$tmp/m.safetensors\"#" \
    -e "s/^batches_per_clock = 4/batches_per_clock = 1\nsfb = \"$1\"\ndevice = \"$dev\"/" \
    -e 's/^consistency = "ssp"/consistency = "bsp"/' -e '/^staleness/d' \
    examples/jobs/mnist-mlp.toml > "$tmp/job.toml"
  rm -rf "$tmp/d"
  local line bytes
  line=$(PETUUM_LOG=petuum_poseidon=info "$PETUUMD" run "$tmp/job.toml" \
    --json --data-dir "$tmp/d" 2>"$tmp/log" | tail -1)
  bytes=$(sed 's/\x1b\[[0-9;]*m//g' "$tmp/log" | grep -o 'bytes_pushed=[0-9]*' | cut -d= -f2 | head -1)
  python3 - "$line" "$1" "$bytes" <<'PY'
import json, sys
v = json.loads(sys.argv[1])
print(f"{'petuum mlp, 2 workers, 1 batch/clock, sfb ' + sys.argv[2]:<44} {v['seconds'] / 2:>9.2f} {v['test_accuracy']:>10.4f} {int(sys.argv[3]) / 2**20:>12.1f}")
PY
}
if [[ ${DNN_BENCH:-all} == sfb ]]; then
  printf '%-44s %9s %10s %12s\n' "run" "s/epoch" "test acc" "MiB pushed"
  sfb_run off
  sfb_run auto
  exit 0
fi
for spec in "mlp ${1:-2}" "cnn ${2:-1}"; do
  set -- $spec
  net=$1 epochs=$2
  if [[ $epochs == 0 ]]; then continue; fi
  petuum "$net" "$epochs" 1 1 false
  if [[ $dev == cpu ]]; then petuum "$net" "$epochs" 1 2 false; fi
  petuum "$net" "$epochs" 1 1 true
  petuum "$net" "$epochs" 2 1 false
  petuum "$net" "$epochs" 2 1 true
  pytorch "$net" "$epochs" 1
  if [[ $dev == cpu ]]; then pytorch "$net" "$epochs" 2; fi
done
echo
printf '%-44s %9s %10s %12s\n' "run" "s/epoch" "test acc" "MiB pushed"
sfb_run off
sfb_run auto
