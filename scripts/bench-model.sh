#!/usr/bin/env bash
# Side by side in one run: model-cache (candle) and PyTorch + transformers on the same
# full-size fixture with the same thread count. Writes bench/results/model-cache.md.
#
#   scripts/bench-model.sh            # 2 threads
#   THREADS=1 scripts/bench-model.sh
#   ROUNDS=5 scripts/bench-model.sh   # more alternations (default 3)
#
# The two processes take turns ROUNDS times and each figure is the median over the
# rounds: this host's speed drifts by 2-3x over minutes (other tenants on the same
# cores), more than the differences measured.
#
# PyTorch lives in .venv-bench only (PyPI's torch wheel is the CUDA build with ~3 GB of
# nvidia packages; it runs on CPU). It is never a test dependency.
set -euo pipefail
cd "$(dirname "$0")/.."
threads=${THREADS:-2}
rounds=${ROUNDS:-3}
fixture=${FULL_FIXTURE:-$PWD/.cache/fixtures/full-f32}
make --no-print-directory fixture-full FULL_FIXTURE="$fixture"

if [ ! -x .venv-bench/bin/python ] || ! .venv-bench/bin/python -c 'import torch, transformers' 2>/dev/null; then
  python3 -m venv .venv-bench
  .venv-bench/bin/pip install --quiet --disable-pip-version-check torch transformers safetensors
fi

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
precisions=(f32)
if grep -qw amx_bf16 /proc/cpuinfo; then precisions+=(bf16x3 bf16); fi
cargo bench -p model-cache --bench classifier --no-run
for round in $(seq "$rounds"); do
  for precision in "${precisions[@]}"; do
    MODEL_BENCH_DIR="$fixture" MODEL_BENCH_THREADS="$threads" MODEL_BENCH_PRECISION="$precision" \
      MODEL_BENCH_JSON="$out/candle-$precision-$round.json" cargo bench -p model-cache --bench classifier
    # bf16x3 answers like f32, so PyTorch f32 is what it is measured against.
    torch_precision=$precision
    if [ "$precision" = bf16x3 ]; then torch_precision=f32; fi
    OMP_NUM_THREADS="$threads" .venv-bench/bin/python model-cache/bench/pytorch_reference.py \
      "$fixture" "$threads" "$torch_precision" > "$out/torch-$precision-$round.json"
  done
done

mkdir -p bench/results
python3 - "$out" "$threads" "${precisions[@]}" > bench/results/model-cache.md <<'PY'
import glob, json, os, statistics, sys, datetime
out, threads, precisions = sys.argv[1], sys.argv[2], sys.argv[3:]


def load(name):
    """The rounds of one side, merged: numbers as their median, anything else from the
    first round."""
    stem = os.path.join(out, name.removesuffix(".json"))
    runs = [json.load(open(path)) for path in sorted(glob.glob(f"{stem}-*.json"))]
    merged = dict(runs[0])
    for key, value in runs[0].items():
        values = [run.get(key) for run in runs]
        if isinstance(value, (int, float)) and not isinstance(value, bool) and None not in values:
            merged[key] = statistics.median(values)
    merged["rounds"] = len(runs)
    return merged


cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
rows = [
    ("load, warm page cache (ms)", "load_ms", "lower"),
    ("RSS after load (MiB)", "rss_after_load_mib", "lower"),
    ("batch 1, 16 tokens, p50 (ms)", "batch1_16_p50_ms", "lower"),
    ("batch 1, 128 tokens, p50 (ms)", "batch1_128_p50_ms", "lower"),
    ("batch 8 x 16 tokens (seq/s)", "batch8_seq_per_s", "higher"),
    ("batch 32 x 16 tokens (seq/s)", "batch32_seq_per_s", "higher"),
]
print("# model-cache vs PyTorch, full-size DistilBERT fixture\n")
torch_engine = load("torch-f32.json")["engine"]
print(f"{datetime.date.today()} · {cpu} · {threads} threads · {torch_engine} · "
      f"median of {load('torch-f32.json')['rounds']} alternating rounds\n")
for precision in precisions:
    candle, torch = load(f"candle-{precision}.json"), load(f"torch-{precision}.json")
    how = {
        "f32": "",
        "bf16x3": " (model-cache `--precision bf16x3`; PyTorch f32)",
        "bf16": " (model-cache `--precision bf16`; PyTorch `torch.autocast(\"cpu\", torch.bfloat16)`)",
    }[precision]
    print(f"## {precision}{how}\n")
    print(f"model-cache kernel: `{candle.get('kernel', '?')}`\n")
    print("| measure | model-cache | PyTorch | model-cache / PyTorch |")
    print("|---|---:|---:|---:|")
    for name, key, better in rows:
        a, b = candle[key], torch[key]
        print(f"| {name} | {a:.1f} | {b:.1f} | {a / b:.2f} ({better} is better) |")
    if candle.get("max_score_drift_from_f32") is not None:
        print(f"\nmodel-cache {precision} drift from its f32 scores over 64 texts: max |score diff| "
              f"{candle['max_score_drift_from_f32']:.2g}, same label {candle['same_label_as_f32']}.")
    print()
print(f"f32 weights: {load('candle-f32.json')['weights_mib']:.0f} MiB. Command: `scripts/bench-model.sh`.")
PY
cat bench/results/model-cache.md
