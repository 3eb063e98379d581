#!/usr/bin/env bash
# Starts the CouchDB the tests talk to, and writes WORK_DIR/couchdb.env for them to source.
#
# With COUCHDB_URL (plus COUCHDB_USER/COUCHDB_PASSWORD) set, uses that server and starts nothing.
# Otherwise starts Apache CouchDB, built once from source by build-couchdb.sh into a cache
# outside the checkout, on loopback with a fresh admin password, in one of two topologies:
#   single  (default)  one node, `single_node = true` (it creates _users and _replicator itself)
#   cluster            three nodes joined by a `[cluster] seedlist`, n = 3, q = 2, and nothing
#                      else: no _cluster_setup, no system databases, a different uuid and auth
#                      secret on each node. Finishing it is the operator's job (a CouchServer),
#                      exactly as on a cluster the Helm chart starts.
# The topology is `--cluster` / `--single` after WORK_DIR, or COUCHSHARE_COUCHDB_TOPOLOGY.
#
# Each node runs the cached release in place (nothing is written into it): its own local.ini,
# vm.args and data directory live in WORK_DIR/couchdb/nodeN, handed over through the
# COUCHDB_INI_FILES and COUCHDB_ARGS_FILE variables that the release's bin/couchdb reads.
# Erlang distribution (which the cluster's nodes talk over, and which a single node starts too)
# needs an epmd name server: each start runs a private one on a free port (ERL_EPMD_PORT), so
# that two runs on one machine, each with its node1@127.0.0.1, never see each other's nodes,
# and the nodes are told not to start the shared one on 4369 themselves (-start_epmd false).
#
# couchdb.env holds COUCHDB_URL (node 1), COUCHDB_USER, COUCHDB_PASSWORD, COUCHDB_TOPOLOGY and
# COUCHDB_NODE_URLS (every node, space-separated). tools/testbin/stop-couchdb.sh WORK_DIR stops
# every process this started (each node's process group, and the epmd).
# Usage: start-couchdb.sh WORK_DIR [--single|--cluster]
set -euo pipefail
WORK_DIR=${1:?usage: start-couchdb.sh WORK_DIR [--single|--cluster]}
TOPOLOGY=${COUCHSHARE_COUCHDB_TOPOLOGY:-single}
case "${2:-}" in
  --cluster) TOPOLOGY=cluster ;;
  --single) TOPOLOGY=single ;;
  "") ;;
  *) echo "usage: start-couchdb.sh WORK_DIR [--single|--cluster]" >&2; exit 2 ;;
esac
case "$TOPOLOGY" in
  single) NODES=1 ;;
  cluster) NODES=3 ;;
  *) echo "start-couchdb: COUCHSHARE_COUCHDB_TOPOLOGY is single or cluster, not $TOPOLOGY" >&2; exit 2 ;;
esac
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
    echo "export COUCHDB_PASSWORD=$(q "$COUCHDB_PASSWORD")"
    echo "export COUCHDB_TOPOLOGY=given"
    echo "export COUCHDB_NODE_URLS=$(q "$COUCHDB_URL")"; } >"$ENV_FILE"
  chmod 600 "$ENV_FILE"
  log "using the CouchDB at COUCHDB_URL; nothing started"
  exit 0
fi

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
REL=$("$ROOT/tools/testbin/build-couchdb.sh")
STATE="$WORK_DIR/couchdb"
if [ -d "$STATE" ]; then
  # A leftover of an earlier start in this WORK_DIR: stop whatever it recorded first.
  "$ROOT/tools/testbin/stop-couchdb.sh" "$WORK_DIR"
  rm -rf "$STATE"
fi
mkdir -p "$STATE"
chmod 700 "$STATE"

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'; }
hex() { python3 -c 'import secrets, sys; print(secrets.token_hex(int(sys.argv[1])))' "$1"; }
PASSWORD=$(hex 16)
COOKIE=$(hex 16)

# Admin credentials for curl, kept off command lines (ps shows those to every user).
CURL_CFG="$STATE/curl.cfg"
( umask 077; printf 'user = "admin:%s"\n' "$PASSWORD" >"$CURL_CFG" )
get() { curl -fsS --max-time 5 -K "$CURL_CFG" "$@" 2>/dev/null; }

stop_started() { "$ROOT/tools/testbin/stop-couchdb.sh" "$WORK_DIR" >/dev/null 2>&1 || true; }
fail() {
  log "$*"
  for f in "$STATE"/*.log; do
    [ -f "$f" ] || continue
    log "last lines of $f:"
    tail -n 30 "$f" >&2
  done
  stop_started
  exit 1
}

# A private epmd, in its own process group (setsid) so that stop-couchdb.sh stops exactly it.
# Run in the foreground of that group (no -daemon), so its pid is the one recorded.
EPMD_PORT=$(port)
export ERL_EPMD_PORT=$EPMD_PORT
setsid epmd -address 127.0.0.1 -port "$EPMD_PORT" </dev/null >"$STATE/epmd.log" 2>&1 &
echo $! >"$STATE/epmd.pid"
for _ in $(seq 1 50); do
  epmd -port "$EPMD_PORT" -names >/dev/null 2>&1 && break
  sleep 0.1
done
epmd -port "$EPMD_PORT" -names >/dev/null 2>&1 || fail "epmd did not start on port $EPMD_PORT"

# Every node: an HTTP port and one Erlang distribution port (inet_dist_listen_min = max).
names=() urls=()
for i in $(seq 1 "$NODES"); do
  names+=("node$i@127.0.0.1")
  eval "HTTP_$i=$(port)" "DIST_$i=$(port)"
  eval "urls+=(\"http://127.0.0.1:\$HTTP_$i\")"
done
SEEDLIST=$(IFS=,; echo "${names[*]}")

for i in $(seq 1 "$NODES"); do
  dir="$STATE/node$i"
  mkdir -p "$dir/data"
  http=$(eval echo "\$HTTP_$i"); dist=$(eval echo "\$DIST_$i")
  # The release's vm.args with this node's name, the run's cookie and a fixed distribution port.
  grep -v -e '^-name ' -e '^-sname ' -e '^-setcookie ' "$REL/etc/vm.args" >"$dir/vm.args"
  { echo "-name node$i@127.0.0.1"
    echo "-setcookie $COOKIE"
    echo "-kernel inet_dist_listen_min $dist"
    echo "-kernel inet_dist_listen_max $dist"
    echo "-start_epmd false"; } >>"$dir/vm.args"
  {
    echo "[couchdb]"
    echo "uuid = $(hex 16)"
    echo "database_dir = $dir/data"
    echo "view_index_dir = $dir/data"
    echo "js_engine = quickjs"
    [ "$TOPOLOGY" = single ] && echo "single_node = true"
    echo "[chttpd]"
    echo "bind_address = 127.0.0.1"
    echo "port = $http"
    echo "[chttpd_auth]"
    echo "secret = $(hex 16)"
    echo "[cluster]"
    if [ "$TOPOLOGY" = single ]; then
      echo "n = 1"
    else
      echo "n = 3"
      echo "q = 2"
      echo "seedlist = $SEEDLIST"
    fi
    # CouchDB replaces the plain password with a pbkdf2 hash in this file at start.
    echo "[admins]"
    echo "admin = $PASSWORD"
  } >"$dir/local.ini"
  chmod 600 "$dir/local.ini" "$dir/vm.args"
  # The release's defaults, then this node's file: the last file is where CouchDB writes
  # configuration changes, so nothing is written into the cached release.
  inis="$REL/etc/default.ini"
  for f in "$REL"/etc/default.d/*.ini; do [ -f "$f" ] && inis="$inis $f"; done
  # bin/couchdb execs the Erlang VM, which starts helpers (erl_child_setup, the QuickJS
  # query servers): setsid puts them all in one process group, led by the recorded pid.
  COUCHDB_ARGS_FILE="$dir/vm.args" COUCHDB_INI_FILES="$inis $dir/local.ini" \
    setsid "$REL/bin/couchdb" </dev/null >"$STATE/node$i.log" 2>&1 &
  echo $! >"$STATE/node$i.pid"
done

# Ready: every node answers /_up (a cluster node answers 404 "seeding" there until it has
# joined its peers), and node 1's _membership lists every node as a cluster node.
deadline=$((SECONDS + 120))
ready=0
while [ "$SECONDS" -lt "$deadline" ]; do
  for i in $(seq 1 "$NODES"); do
    kill -0 "$(cat "$STATE/node$i.pid")" 2>/dev/null || fail "node$i exited during start-up"
  done
  up=1
  for url in "${urls[@]}"; do get "$url/_up" >/dev/null || { up=0; break; }; done
  if [ "$up" = 1 ]; then
    members=$(get "${urls[0]}/_membership" \
      | python3 -c 'import json, sys; print(len(json.load(sys.stdin)["cluster_nodes"]))' 2>/dev/null || echo 0)
    if [ "$members" = "$NODES" ]; then ready=1; break; fi
  fi
  sleep 0.5
done
[ "$ready" = 1 ] || fail "CouchDB ($TOPOLOGY) was not up with $NODES cluster node(s) within 120 s"

{ echo "export COUCHDB_URL=$(q "${urls[0]}")"
  echo "export COUCHDB_USER=admin"
  echo "export COUCHDB_PASSWORD=$(q "$PASSWORD")"
  echo "export COUCHDB_TOPOLOGY=$TOPOLOGY"
  echo "export COUCHDB_NODE_URLS=$(q "${urls[*]}")"; } >"$ENV_FILE"
chmod 600 "$ENV_FILE"
version=$(get "${urls[0]}/" | python3 -c 'import json, sys; print(json.load(sys.stdin)["version"])' 2>/dev/null || echo "?")
log "Apache CouchDB $version, $TOPOLOGY ($NODES node(s), epmd on $EPMD_PORT) answers at ${urls[*]}; source $ENV_FILE"
