#!/usr/bin/env bash
# Stops what start-s3.sh started for WORK_DIR, and only that: the `weed server` process group
# recorded in WORK_DIR/s3/weed.pid. SIGTERM first, SIGKILL for anything left after 3 s: with this
# SeaweedFS, `weed server` never ends by itself after SIGTERM (its filer's shutdown waits for a
# metadata-log flush that cannot happen once the volume server in the same process has stopped;
# seen in a goroutine dump, LogBuffer.WaitForShutdown), and the data is a test's, thrown away
# by the next start-s3.sh. Then removes the gRPC Unix sockets weed keeps at fixed paths in
# /tmp for the ports listed in WORK_DIR/s3/grpc-ports, if it left any.
# Usage: stop-s3.sh WORK_DIR
set -euo pipefail
WORK_DIR=${1:?usage: stop-s3.sh WORK_DIR}
STATE="$WORK_DIR/s3"
[ -d "$STATE" ] || exit 0   # nothing started, or already stopped

group_alive() { pgrep -g "$1" >/dev/null 2>&1; }

if [ -f "$STATE/weed.pid" ]; then
  pid=$(cat "$STATE/weed.pid")
  rm -f "$STATE/weed.pid"
  # A recorded pid that no longer leads a group of ours is left alone.
  if [[ "$pid" =~ ^[0-9]+$ ]] && group_alive "$pid"; then
    kill -TERM -- "-$pid" 2>/dev/null || true
    for _ in $(seq 1 30); do
      group_alive "$pid" || break
      sleep 0.1
    done
    if group_alive "$pid"; then kill -KILL -- "-$pid" 2>/dev/null || true; fi
  fi
fi

if [ -f "$STATE/grpc-ports" ]; then
  read -r -a ports <"$STATE/grpc-ports" || true
  for p in "${ports[@]}"; do
    for s in /tmp/seaweedfs-*-grpc-"$p".sock; do
      if [ -S "$s" ]; then rm -f "$s"; fi
    done
  done
  rm -f "$STATE/grpc-ports"
fi
