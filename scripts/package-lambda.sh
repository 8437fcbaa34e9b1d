#!/usr/bin/env bash
# Builds the Lambda deployment zip: `bootstrap` (cargo lambda build --release) plus the
# checkpoint as model/ beside it when it fits Lambda's 250 MB unzipped limit.
#
#   scripts/package-lambda.sh [MODEL_DIR|none]
#
# MODEL_DIR defaults to .cache/fixtures/full-f16. `none` packages bootstrap alone, for
# the S3 route (MODEL_S3_URI) or a container image with the model in it (MODEL_DIR).
# CARGO_LAMBDA_COMPILER=cargo builds with the host toolchain instead of zig;
# LAMBDA_BUILD=cargo skips cargo lambda for a plain `cargo build --release`;
# LAMBDA_BUILD=none packages an already built LAMBDA_BOOTSTRAP=path (the tests do).
set -euo pipefail
cd "$(dirname "$0")/.."

MODEL=${1:-.cache/fixtures/full-f16}
TARGET_DIR=${CARGO_TARGET_DIR:-target}
OUT=${LAMBDA_OUT:-$TARGET_DIR/lambda/sentiment.zip}
# Lambda's limit is 250 MB unzipped (262,144,000 bytes), bootstrap included.
LIMIT=262144000

# cargo lambda from PyPI: a prebuilt binary plus zig (the ziglang package), in seconds;
# `cargo install cargo-lambda` would compile for about 45 minutes on 2 cores.
if [ "${LAMBDA_BUILD:-cargo-lambda}" = cargo-lambda ] && ! command -v cargo-lambda >/dev/null 2>&1; then
  PY=${PYTHON:-python3}
  echo "package-lambda: cargo-lambda is missing; $PY -m pip install cargo-lambda" >&2
  $PY -m pip install --quiet --disable-pip-version-check cargo-lambda >&2 || {
    echo "package-lambda: could not install cargo-lambda; install it (pip install cargo-lambda)" >&2
    echo "  or build with the host toolchain: LAMBDA_BUILD=cargo make lambda" >&2
    exit 1
  }
  # pip may put the script in a directory that is not on PATH (e.g. ~/.local/bin).
  PATH="$($PY -c 'import sysconfig; print(sysconfig.get_path("scripts"))'):$($PY -m site --user-base)/bin:$PATH"
  hash -r
  command -v cargo-lambda >/dev/null 2>&1 || { echo "package-lambda: cargo-lambda installed but not on PATH" >&2; exit 1; }
fi

model_bytes=0
if [ "$MODEL" != none ]; then
  if [ ! -f "$MODEL/model.safetensors" ] || [ ! -f "$MODEL/config.json" ]; then
    echo "package-lambda: $MODEL is not a checkpoint (config.json + model.safetensors)." >&2
    echo "  Make one: cargo run --release -p model-cache -- fixture --size full --dtype f16 --out $MODEL" >&2
    echo "  or package bootstrap alone: scripts/package-lambda.sh none" >&2
    exit 1
  fi
  model_bytes=$(du -cb "$MODEL"/config.json "$MODEL"/model.safetensors \
    $(ls "$MODEL"/tokenizer.json "$MODEL"/vocab.txt "$MODEL"/tokenizer_config.json 2>/dev/null) | tail -1 | cut -f1)
  # Refuse before the (long) release build: the weights alone decide.
  if [ "$model_bytes" -gt "$LIMIT" ]; then
    echo "package-lambda: $MODEL holds $((model_bytes / 1000000)) MB of model files; a zip package may hold" >&2
    echo "  at most 250 MB unzipped (bootstrap included), so this checkpoint cannot ship in the zip." >&2
    echo "  Options:" >&2
    echo "    - the f16 checkpoint (about half the size; computed in f32 after loading):" >&2
    echo "        cargo run --release -p model-cache -- fixture --size full --dtype f16 --out .cache/fixtures/full-f16" >&2
    echo "        make lambda LAMBDA_MODEL=.cache/fixtures/full-f16" >&2
    echo "    - a container image (up to 10 GB) with the model in it and MODEL_DIR pointing there" >&2
    echo "    - S3: make lambda LAMBDA_MODEL=none, upload the checkpoint, set MODEL_S3_URI=s3://bucket/prefix" >&2
    exit 2
  fi
fi

if [ "${LAMBDA_BUILD:-cargo-lambda}" = none ]; then
  BOOTSTRAP=${LAMBDA_BOOTSTRAP:?LAMBDA_BUILD=none needs LAMBDA_BOOTSTRAP=path/to/bootstrap}
elif [ "${LAMBDA_BUILD:-cargo-lambda}" = cargo ]; then
  # Plain host release build: shares compiled dependencies with the other release
  # builds of the workspace. Only for an x86_64 Linux host whose glibc is not newer
  # than AL2023's (2.34) where it matters; cargo lambda with zig pins that for you.
  echo "package-lambda: cargo build --release (host toolchain, LAMBDA_BUILD=cargo)" >&2
  CARGO_TARGET_DIR=$TARGET_DIR cargo build --release -p sentiment-lambda --bin bootstrap >&2
  BOOTSTRAP=$TARGET_DIR/release/bootstrap
else
  echo "package-lambda: cargo lambda build --release (compiler: ${CARGO_LAMBDA_COMPILER:-zig})" >&2
  CARGO_TARGET_DIR=$TARGET_DIR cargo lambda build --release -p sentiment-lambda --bin bootstrap >&2
  BOOTSTRAP=$TARGET_DIR/lambda/bootstrap/bootstrap
fi
[ -x "$BOOTSTRAP" ] || { echo "package-lambda: $BOOTSTRAP was not built" >&2; exit 1; }

bootstrap_bytes=$(stat -c %s "$BOOTSTRAP")
unzipped=$((bootstrap_bytes + model_bytes))
if [ "$unzipped" -gt "$LIMIT" ]; then
  echo "package-lambda: bootstrap ($((bootstrap_bytes / 1000000)) MB) + model ($((model_bytes / 1000000)) MB) is over the 250 MB unzipped limit; use the f16 checkpoint, S3 or an image (see above)" >&2
  exit 2
fi

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
cp "$BOOTSTRAP" "$stage/bootstrap"
if [ "$MODEL" != none ]; then
  mkdir "$stage/model"
  for f in config.json model.safetensors tokenizer.json vocab.txt tokenizer_config.json; do
    [ -f "$MODEL/$f" ] && cp "$MODEL/$f" "$stage/model/$f"
  done
fi
mkdir -p "$(dirname "$OUT")"
rm -f "$OUT"
OUT_ABS=$(cd "$(dirname "$OUT")" && pwd)/$(basename "$OUT")
# Stored, not deflated: random-looking weights do not compress, and Lambda unzips faster.
# Reproducible: sorted entries and a fixed timestamp, so the same bootstrap and model
# give the same CodeSha256 and a second `make up` deploys nothing.
(cd "$stage" && python3 - "$OUT_ABS" <<'PY'
import os, sys, zipfile
with zipfile.ZipFile(sys.argv[1], "w") as z:
    for root, dirs, files in os.walk("."):
        dirs.sort()
        for f in sorted(files):
            path = os.path.join(root, f)
            info = zipfile.ZipInfo(os.path.relpath(path, "."), date_time=(1980, 1, 1, 0, 0, 0))
            # bootstrap must stay executable inside the zip.
            info.external_attr = (0o755 if f == "bootstrap" else 0o644) << 16
            info.compress_type = zipfile.ZIP_DEFLATED if f == "bootstrap" else zipfile.ZIP_STORED
            with open(path, "rb") as src:
                z.writestr(info, src.read())
PY
)
zipped=$(stat -c %s "$OUT")
echo "package-lambda: $OUT"
echo "  zip: $((zipped / 1000000)) MB; unzipped: $((unzipped / 1000000)) MB of 250 MB (bootstrap $((bootstrap_bytes / 1000000)) MB, model $((model_bytes / 1000000)) MB)"
if [ "$zipped" -gt 52428800 ]; then
  echo "  over 50 MB zipped: upload it through S3 (update-function-code --s3-bucket/--s3-key), not directly"
fi
