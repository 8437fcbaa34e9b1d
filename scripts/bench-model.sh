#!/usr/bin/env bash
# Side by side in one run: model-cache (candle) and PyTorch + transformers on the same
# full-size fixture with the same thread count. Writes bench/results/model-cache.md.
#
#   scripts/bench-model.sh            # 2 threads
#   THREADS=1 scripts/bench-model.sh
#
# PyTorch lives in .venv-bench only (PyPI's torch wheel is the CUDA build with ~3 GB of
# nvidia packages; it runs on CPU). It is never a test dependency.
set -euo pipefail
cd "$(dirname "$0")/.."
threads=${THREADS:-2}
fixture=${FULL_FIXTURE:-$PWD/.cache/fixtures/full-f32}
make --no-print-directory fixture-full FULL_FIXTURE="$fixture"

if [ ! -x .venv-bench/bin/python ] || ! .venv-bench/bin/python -c 'import torch, transformers' 2>/dev/null; then
  python3 -m venv .venv-bench
  .venv-bench/bin/pip install --quiet --disable-pip-version-check torch transformers safetensors
fi

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
MODEL_BENCH_DIR="$fixture" MODEL_BENCH_THREADS="$threads" MODEL_BENCH_JSON="$out/candle.json" \
  cargo bench -p model-cache --bench classifier
OMP_NUM_THREADS="$threads" .venv-bench/bin/python model-cache/bench/pytorch_reference.py "$fixture" "$threads" > "$out/torch.json"

mkdir -p bench/results
python3 - "$out/candle.json" "$out/torch.json" "$threads" > bench/results/model-cache.md <<'PY'
import json, platform, subprocess, sys, datetime
candle, torch = (json.load(open(p)) for p in sys.argv[1:3])
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
rows = [
    ("load, warm page cache (ms)", "load_ms", "lower"),
    ("RSS after load (MiB)", "rss_after_load_mib", "lower"),
    ("batch 1, 16 tokens, p50 (ms)", "batch1_16_p50_ms", "lower"),
    ("batch 1, 128 tokens, p50 (ms)", "batch1_128_p50_ms", "lower"),
    ("batch 8 x 16 tokens (seq/s)", "batch8_seq_per_s", "higher"),
    ("batch 32 x 16 tokens (seq/s)", "batch32_seq_per_s", "higher"),
]
print(f"# model-cache vs PyTorch, full-size DistilBERT fixture\n")
print(f"{datetime.date.today()} · {cpu} · {sys.argv[3]} threads · {torch['engine']}\n")
print("| measure | candle (model-cache) | PyTorch | candle / PyTorch |")
print("|---|---:|---:|---:|")
for name, key, better in rows:
    a, b = candle[key], torch[key]
    print(f"| {name} | {a:.1f} | {b:.1f} | {a / b:.2f} ({better} is better) |")
print(f"\nf32 weights: {candle['weights_mib']:.0f} MiB. Command: `scripts/bench-model.sh`.")
PY
cat bench/results/model-cache.md
