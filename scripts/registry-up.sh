#!/usr/bin/env bash
# Starts a local OCI registry (Debian's docker-registry) on loopback for the local
# default, idempotently. Images pushed by `stack up` live under .stack/registry-PORT/.
#   REGISTRY_PORT (default 5001).
set -euo pipefail
cd "$(dirname "$0")/.."
PORT=${REGISTRY_PORT:-5001}
command -v docker-registry >/dev/null 2>&1 || scripts/test-deps.sh
DIR=.stack/registry-${PORT}
mkdir -p "$DIR"
cat >"$DIR/config.yml" <<YAML
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $PWD/$DIR/data
  delete:
    enabled: true
http:
  addr: 127.0.0.1:${PORT}
YAML
exec scripts/start-once.sh "registry-${PORT}" "http://127.0.0.1:${PORT}/v2/" \
  docker-registry serve "$DIR/config.yml"
