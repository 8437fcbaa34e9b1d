#!/usr/bin/env bash
# Lambda function under the local emulator with full-size checkpoints from local disk:
# init duration (median of 5 cold starts), cold request end to end, warm p50/p99 at
# concurrency 1. Prints a Markdown table; writes the fixtures it needs once.
set -euo pipefail
cd "$(dirname "$0")/.."

TARGET_DIR=${CARGO_TARGET_DIR:-target}
FIXTURES=${FIXTURES:-.cache/fixtures}
MEMORY_MB=${MEMORY_MB:-3538}
WARM=${WARM:-200}
# PROFILE=dev reuses a test build (the numeric crates are optimized in dev too).
PROFILE=${PROFILE:-release}
BIN_DIR=$TARGET_DIR/$([ "$PROFILE" = dev ] && echo debug || echo "$PROFILE")

cargo build --profile "$PROFILE" -p sentiment-lambda -p lambda-emulator --bins --example lambda_bench >&2
cargo build --profile "$PROFILE" -p sentiment-server >&2
for dtype in f32 f16; do
  dir=$FIXTURES/full-$dtype
  if [ ! -f "$dir/model.safetensors" ]; then
    cargo run --release -p model-cache -- fixture --size full --dtype "$dtype" --out "$dir" >&2
  fi
done

echo "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg), $(date -u +%FT%TZ); function memory ${MEMORY_MB} MB; build profile $PROFILE"
echo
echo "| checkpoint | init ms, median (runs) | cold request ms, median | warm p50 ms | warm p99 ms | warm function ms p50 | max memory MB |"
echo "|---|---|---|---|---|---|---|"
for dtype in f32 f16; do
  "$BIN_DIR/examples/lambda_bench" --bootstrap "$BIN_DIR/bootstrap" \
    --model-dir "$FIXTURES/full-$dtype" --memory-mb "$MEMORY_MB" --warm "$WARM"
done
# The Kubernetes server with the same client, text and thread count: the target is a
# warm p50 within 10% of its single-request latency.
"$BIN_DIR/examples/lambda_bench" --server "$BIN_DIR/sentiment-server" \
  --model-dir "$FIXTURES/full-f32" --memory-mb "$MEMORY_MB" --warm "$WARM"
echo
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
