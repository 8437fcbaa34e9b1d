#!/usr/bin/env bash
# Starts a local OCI registry (Debian's docker-registry) on loopback for the local
# default, idempotently: if something already answers /v2/ on the port, it is left
# alone. Images pushed by `stack up` live under .stack/registry/.
#   REGISTRY_PORT (default 5001). Logs and pid under .stack/.
set -euo pipefail
cd "$(dirname "$0")/.."

PORT=${REGISTRY_PORT:-5001}
URL="http://127.0.0.1:${PORT}"

answers() { curl -fsS -o /dev/null --max-time 2 "$URL/v2/" 2>/dev/null; }

if answers; then
  echo "registry: already running at $URL"
  exit 0
fi
command -v docker-registry >/dev/null 2>&1 || scripts/test-deps.sh
mkdir -p .stack/registry
cat >.stack/registry/config.yml <<YAML
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $PWD/.stack/registry/data
  delete:
    enabled: true
http:
  addr: 127.0.0.1:${PORT}
YAML
nohup docker-registry serve .stack/registry/config.yml >.stack/registry.log 2>&1 &
echo $! >.stack/registry.pid
for _ in $(seq 1 100); do
  if answers; then
    echo "registry: started at $URL (pid $(cat .stack/registry.pid), log .stack/registry.log)"
    exit 0
  fi
  sleep 0.2
done
echo "registry: did not answer at $URL within 20s; see .stack/registry.log (port taken? set REGISTRY_PORT)" >&2
exit 1
