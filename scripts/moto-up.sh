#!/usr/bin/env bash
# Starts a moto server (local AWS APIs) on loopback for `--target local`, idempotently:
# if something already answers on the port, it is left alone.
#   MOTO_PORT (default 5000). Logs and pid under .stack/.
set -euo pipefail
cd "$(dirname "$0")/.."

PORT=${MOTO_PORT:-5000}
URL="http://127.0.0.1:${PORT}"

answers() { curl -fsS -o /dev/null --max-time 2 "$URL/moto-api/" 2>/dev/null; }

if answers; then
  echo "moto: already running at $URL"
  exit 0
fi
command -v moto_server >/dev/null 2>&1 || scripts/test-deps.sh
mkdir -p .stack
# AWS managed policies (AWSLambdaBasicExecutionRole, AmazonEKS*) exist in real AWS.
MOTO_IAM_LOAD_MANAGED_POLICIES=true nohup moto_server -H 127.0.0.1 -p "$PORT" >.stack/moto.log 2>&1 &
echo $! >.stack/moto.pid
for _ in $(seq 1 100); do
  if answers; then
    echo "moto: started at $URL (pid $(cat .stack/moto.pid), log .stack/moto.log)"
    exit 0
  fi
  sleep 0.2
done
echo "moto: did not answer at $URL within 20s; see .stack/moto.log" >&2
exit 1
