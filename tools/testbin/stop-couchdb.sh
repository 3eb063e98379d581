#!/usr/bin/env bash
# Stops the pouchdb-server that start-couchdb.sh started for WORK_DIR (exactly the pid it recorded).
# Usage: stop-couchdb.sh WORK_DIR
set -euo pipefail
WORK_DIR=${1:?usage: stop-couchdb.sh WORK_DIR}
PID_FILE="$WORK_DIR/couchdb.pid"
[ -f "$PID_FILE" ] || exit 0   # nothing started (COUCHDB_URL given, or already stopped)
PID=$(cat "$PID_FILE")
if kill -0 "$PID" 2>/dev/null; then
  kill "$PID"
  for _ in $(seq 1 50); do kill -0 "$PID" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$PID" 2>/dev/null && kill -9 "$PID" 2>/dev/null || true
fi
rm -f "$PID_FILE"
