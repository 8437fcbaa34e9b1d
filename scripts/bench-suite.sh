#!/usr/bin/env bash
# `make bench`: the default profile suite against what the stack deployed, each
# profile in its own folder with results.json and its report, and one line per run.
#   steady: constant BENCH_RATE req/s for BENCH_DURATION
#   step:   4 steps up to 2 x BENCH_RATE
#   spike:  idle, then 2 x BENCH_RATE for the last fifth of the time
# Every backend (lambda, k8s, router) gets the same schedule and texts in each run.
set -euo pipefail
cd "$(dirname "$0")/.."

BENCH=${BENCH_BIN:-target/debug/bench}
RATE=${BENCH_RATE:-4}
DURATION=${BENCH_DURATION:-60s}
SUITE=${BENCH_SUITE_OUT:-bench/results/suite-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$SUITE"

secs=${DURATION%s}
burst=$(( secs / 5 > 0 ? secs / 5 : 1 ))s
double=$(python3 -c "print($RATE * 2)")

run() {
  local name=$1; shift
  echo "== $name: bench run $*"
  "$BENCH" run --out "$SUITE/$name" "$@"
}

run steady --profile constant --rate "$RATE" --duration "$DURATION"
run step --profile step --rate "$double" --duration "$DURATION" --steps 4
run spike --profile spike --rate "$double" --duration "$DURATION" --burst "$burst"

echo
echo "suite in $SUITE:"
for name in steady step spike; do
  [ -f "$SUITE/$name/report.md" ] && echo "  $SUITE/$name/report.md"
done
