#!/usr/bin/env bash
# Starts a moto server (local AWS APIs) on loopback for `--target local`, idempotently.
#   MOTO_PORT (default 5000).
set -euo pipefail
cd "$(dirname "$0")/.."
PORT=${MOTO_PORT:-5000}
command -v moto_server >/dev/null 2>&1 || scripts/test-deps.sh
# AWS managed policies (AWSLambdaBasicExecutionRole, AmazonEKS*) exist in real AWS.
MOTO_IAM_LOAD_MANAGED_POLICIES=true exec scripts/start-once.sh "moto-${PORT}" "http://127.0.0.1:${PORT}/moto-api/" \
  moto_server -H 127.0.0.1 -p "$PORT"
