#!/usr/bin/env bash
# Benchmarks the release sentiment-server against the Python reference server
# (FastAPI + transformers pipeline on PyTorch, one uvicorn worker), all up at once and
# measured in interleaved rounds (see run.py), on the full-size fixture. Needs: hey (Debian), and for the reference
# a virtualenv with torch/transformers/fastapi/uvicorn (created here if missing; the
# default PyPI torch wheel pulls about 3 GB of CUDA libraries but runs on CPU).
#
#   cluster/bench/run.sh                 # full run, report in cluster/bench/results.md
#   NO_PYTHON=1 cluster/bench/run.sh     # Rust server only
#   DURATION=5 C1_REQUESTS=50 cluster/bench/run.sh   # a quicker, rougher run
#   ROUNDS=10 cluster/bench/run.sh       # more, shorter slices per measurement
set -euo pipefail
cd "$(dirname "$0")/../.."

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
FIXTURE=${FIXTURE:-.cache/fixtures/full-f32}
VENV=${VENV:-.venv-bench}
DURATION=${DURATION:-20}
C1_REQUESTS=${C1_REQUESTS:-200}
ROUNDS=${ROUNDS:-5}
OUT=${OUT:-cluster/bench/results.md}

cargo build --release -p sentiment-server -p model-cache
if [ ! -f "$FIXTURE/model.safetensors" ]; then
  scripts/fetch-vocab.sh || echo "bench: real vocabulary unavailable; using a generated one"
  "$CARGO_TARGET_DIR/release/model-cache" fixture --size full --dtype f32 --out "$FIXTURE"
fi
if ! command -v hey >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq hey
fi
venv_args=()
if [ -z "${NO_PYTHON:-}" ]; then
  if [ ! -x "$VENV/bin/uvicorn" ]; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check torch transformers fastapi uvicorn
  fi
  venv_args=(--venv "$VENV")
fi

python3 cluster/bench/run.py \
  --rust "$CARGO_TARGET_DIR/release/sentiment-server" \
  --model-dir "$FIXTURE" --duration "$DURATION" --c1-requests "$C1_REQUESTS" --rounds "$ROUNDS" --out "$OUT" \
  ${RUST_FLAGS:+--rust-flags "$RUST_FLAGS"} "${venv_args[@]}"
