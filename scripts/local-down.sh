#!/usr/bin/env bash
# Stops what `make up` started for the local default and is not owned by the stack
# state: the registry and moto on REGISTRY_PORT and MOTO_PORT, by their pid files
# under .stack/. A process that is not ours (a moto someone else started) has no pid
# file here and is left alone.
set -euo pipefail
cd "$(dirname "$0")/.."

stop() {
  local name=$1 pidfile=.stack/$1.pid
  [ -f "$pidfile" ] || return 0
  local pid; pid=$(cat "$pidfile")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    echo "$name: stopped (pid $pid)"
  fi
  rm -f "$pidfile"
}
stop "registry-${REGISTRY_PORT:-5001}"
stop "moto-${MOTO_PORT:-5000}"
