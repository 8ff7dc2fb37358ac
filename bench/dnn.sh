#!/usr/bin/env bash
# DNN benchmark (docs/benchmarks.md, "DNN"): the example MLP on MNIST,
# petuum (embedded, 1 and 2 workers) against a plain PyTorch loop (1 and 2
# threads) with torch from the same 2.13.0 wheel, 2 epochs each, CPU.
#   ./bench/dnn.sh          (needs ./scripts/setup.sh; installs torch into
#                            $PETUUM_CACHE/venv if missing: a few GB of
#                            CUDA wheels come with PyPI's torch)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
venv="$PETUUM_CACHE/venv"
[[ -x $venv/bin/python ]] || python3 -m venv "$venv"
"$venv/bin/python" -c "import torch" 2>/dev/null || "$venv/bin/pip" install -q "torch==2.13.0"
cargo build --quiet --release -p petuumd
epochs=2
tmp=$(mktemp -d)
printf '%-34s %12s %12s %10s\n' "run" "s/epoch" "images/s" "test acc"
for w in 1 2; do
  # 4 mini-batches of 64 per worker per clock.
  clocks=$(( epochs * 60000 / (256 * w) ))
  sed -e "s/^clocks = .*/clocks = $clocks/" -e "s#\.\./\.\./#$PWD/#g" \
    examples/jobs/mnist-mlp.toml > "$tmp/mlp.toml"
  sed -i "s#^path = .*#path = \"$tmp/m$w.safetensors\"#" "$tmp/mlp.toml"
  line=$("$CARGO_TARGET_DIR/release/petuumd" run "$tmp/mlp.toml" --workers "$w" --json \
    --data-dir "$tmp/d$w" | tail -1)
  python3 - "$line" "$w" "$clocks" "$epochs" <<'PY'
import json, sys
v = json.loads(sys.argv[1]); w, clocks, epochs = map(int, sys.argv[2:5])
s = v["seconds"]; imgs = clocks * w * 256
print(f"{'petuum, ' + str(w) + ' worker(s)':<34} {s / epochs:>12.2f} {imgs / s:>12.0f} {v['test_accuracy']:>10.4f}")
PY
done
for t in 1 2; do
  line=$("$venv/bin/python" bench/dnn_pytorch.py "$epochs" "$t")
  python3 - "$line" <<'PY'
import json, sys
v = json.loads(sys.argv[1])
name = "pytorch, %d thread(s)" % v["threads"]
print(f"{name:<34} {v['seconds_per_epoch']:>12.2f} {v['images_per_s']:>12.0f} {v['test_accuracy']:>10.4f}")
PY
done
rm -rf "$tmp"
