#!/usr/bin/env bash
# Starts the CouchDB the tests talk to, and writes WORK_DIR/couchdb.env for them to source.
# With COUCHDB_URL (plus COUCHDB_USER/COUCHDB_PASSWORD) set, uses that server and starts nothing.
# Otherwise starts pouchdb-server (pinned by tools/pouchdb-server/package-lock.json) in memory on
# a free loopback port with a fresh admin password; it is installed once into a cache outside the
# checkout keyed by the lockfile's sha256. tools/testbin/stop-couchdb.sh WORK_DIR stops it.
# Usage: start-couchdb.sh WORK_DIR
set -euo pipefail
WORK_DIR=${1:?usage: start-couchdb.sh WORK_DIR}
mkdir -p "$WORK_DIR"
WORK_DIR=$(cd "$WORK_DIR" && pwd)
ENV_FILE="$WORK_DIR/couchdb.env"
log() { echo "start-couchdb: $*" >&2; }
q() { printf '%q' "$1"; }

if [ -n "${COUCHDB_URL:-}" ]; then
  : "${COUCHDB_USER:?COUCHDB_URL is set: COUCHDB_USER must be too}"
  : "${COUCHDB_PASSWORD:?COUCHDB_URL is set: COUCHDB_PASSWORD must be too}"
  { echo "export COUCHDB_URL=$(q "$COUCHDB_URL")"
    echo "export COUCHDB_USER=$(q "$COUCHDB_USER")"
    echo "export COUCHDB_PASSWORD=$(q "$COUCHDB_PASSWORD")"; } >"$ENV_FILE"
  chmod 600 "$ENV_FILE"
  log "using the CouchDB at COUCHDB_URL; nothing started"
  exit 0
fi

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
CACHE=$("$ROOT/tools/testbin/npm-install-cached.sh" "$ROOT/tools/pouchdb-server" pouchdb-server)
ENTRY="$CACHE/node_modules/pouchdb-server/lib/index.js"

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')
PASSWORD=$(python3 -c 'import secrets; print(secrets.token_hex(16))')
URL="http://127.0.0.1:$PORT"
rm -rf "$WORK_DIR/couch"
mkdir -p "$WORK_DIR/couch"
# pouchdb-server rewrites this file with a hash at start: it is written fresh every time.
printf '{"admins":{"admin":"%s"}}\n' "$PASSWORD" >"$WORK_DIR/couch/config.json"
chmod 600 "$WORK_DIR/couch/config.json"

# --unhandled-rejections=warn: under Node 20 several ordinary operations otherwise kill the process.
# Run from WORK_DIR/couch: pouchdb-server writes its own log.txt into the current directory.
cd "$WORK_DIR/couch"
nohup node --unhandled-rejections=warn "$ENTRY" --in-memory --host 127.0.0.1 --port "$PORT" \
  --dir "$WORK_DIR/couch" --config "$WORK_DIR/couch/config.json" \
  >"$WORK_DIR/couchdb.log" 2>&1 </dev/null &
PID=$!
echo "$PID" >"$WORK_DIR/couchdb.pid"

for _ in $(seq 1 120); do
  if ! kill -0 "$PID" 2>/dev/null; then
    log "pouchdb-server exited during start-up; last lines of $WORK_DIR/couchdb.log:"
    tail -n 30 "$WORK_DIR/couchdb.log" >&2
    exit 1
  fi
  if python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)' "$URL/" 2>/dev/null; then
    { echo "export COUCHDB_URL=$(q "$URL")"
      echo "export COUCHDB_USER=admin"
      echo "export COUCHDB_PASSWORD=$(q "$PASSWORD")"; } >"$ENV_FILE"
    chmod 600 "$ENV_FILE"
    log "pouchdb-server (pid $PID) answers at $URL; source $ENV_FILE"
    exit 0
  fi
  sleep 0.5
done
log "pouchdb-server did not answer at $URL within 60 s; last lines of $WORK_DIR/couchdb.log:"
tail -n 30 "$WORK_DIR/couchdb.log" >&2
kill "$PID" 2>/dev/null || true
exit 1
