#!/usr/bin/env bash
# Stops what start-couchdb.sh started for WORK_DIR, and only that: each CouchDB node and the
# private epmd. Each was started as the leader of its own process group (setsid), with its pid
# recorded in WORK_DIR/couchdb/*.pid; the whole group is signalled, so the Erlang VM's helpers
# (erl_child_setup, QuickJS query servers) go with it. SIGTERM first (the VM shuts down
# cleanly), SIGKILL for anything left after 10 s. The nodes go before epmd.
# Usage: stop-couchdb.sh WORK_DIR
set -euo pipefail
WORK_DIR=${1:?usage: stop-couchdb.sh WORK_DIR}
STATE="$WORK_DIR/couchdb"
[ -d "$STATE" ] || exit 0   # nothing started (COUCHDB_URL given, or already stopped)

# Whether any process of group $1 is still alive.
group_alive() { pgrep -g "$1" >/dev/null 2>&1; }

stop_groups() {
  local pids=() f pid
  for f in "$@"; do
    [ -f "$f" ] || continue
    pid=$(cat "$f")
    rm -f "$f"
    # A recorded pid that no longer leads a group of ours is left alone.
    if ! [[ "$pid" =~ ^[0-9]+$ ]] || ! group_alive "$pid"; then continue; fi
    kill -TERM -- "-$pid" 2>/dev/null || true
    pids+=("$pid")
  done
  [ "${#pids[@]}" -gt 0 ] || return 0
  for _ in $(seq 1 100); do
    local left=0
    for pid in "${pids[@]}"; do group_alive "$pid" && left=1; done
    [ "$left" = 0 ] && return 0
    sleep 0.1
  done
  for pid in "${pids[@]}"; do kill -KILL -- "-$pid" 2>/dev/null || true; done
}

stop_groups "$STATE"/node*.pid
stop_groups "$STATE"/epmd.pid
