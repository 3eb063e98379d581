#!/usr/bin/env bash
# Stops the kube-apiserver and etcd that start-k8s.sh started in WORK_DIR (only those PIDs).
W=${1:?work dir}
stop() {
  local f="$W/$1"; [ -f "$f" ] || return 0
  local pid; pid=$(cat "$f")
  kill "$pid" 2>/dev/null || { rm -f "$f"; return 0; }
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$f"
}
stop apiserver.pid
stop etcd.pid
