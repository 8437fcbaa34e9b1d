#!/usr/bin/env bash
# Starts a local service in the background unless something already answers its URL:
#   scripts/start-once.sh NAME CHECK_URL COMMAND [ARGS...]
# Its pid goes to .stack/NAME.pid (what scripts/local-down.sh stops) and its output to
# .stack/NAME.log; waits up to 20 s for CHECK_URL to answer.
set -euo pipefail
cd "$(dirname "$0")/.."
NAME=$1 URL=$2
shift 2

answers() { curl -fsS -o /dev/null --max-time 2 "$URL" 2>/dev/null; }

if answers; then
  echo "$NAME: already running at $URL"
  exit 0
fi
mkdir -p .stack
nohup "$@" >".stack/$NAME.log" 2>&1 &
echo $! >".stack/$NAME.pid"
for _ in $(seq 1 100); do
  if answers; then
    echo "$NAME: started at $URL (pid $(cat ".stack/$NAME.pid"), log .stack/$NAME.log)"
    exit 0
  fi
  sleep 0.2
done
echo "$NAME: did not answer at $URL within 20s (port taken?); see .stack/$NAME.log" >&2
exit 1
