#!/usr/bin/env bash
# Starts the S3-compatible object store the backup tests write to, and writes WORK_DIR/s3.env
# for them to source.
#
# SeaweedFS (Apache-2.0; MinIO is AGPL and not used here), built once from its Go module by
# build-seaweedfs.sh into a cache outside the checkout, run as one `weed server -s3` process:
# a master, a volume server, a filer (its metadata in leveldb) and the S3 gateway, all on
# 127.0.0.1 with free ports (each gRPC port named too: weed's default, HTTP port + 10000, can
# collide or overflow with free ports). The optional listeners `weed server` would otherwise
# open on fixed ports (Iceberg 8181, Lance 9101) are off, and so are the master's telemetry and
# the embedded IAM API (not needed: it only logs that it has no STS signing key). The volume
# server's 10 s drain before it stops (-volume.preStopSeconds) is 0: SIGTERM ends weed at once.
#
# Authentication is on: one identity with a fresh access key and secret key, given by weed's
# S3 config JSON (-s3.config), allowed Admin, Read, Write, List and Tagging; there is no
# anonymous identity, so an unsigned or badly signed request gets 403. One bucket is created
# through S3 itself (a signed PUT), which also proves the identity works.
#
# Everything the process writes is in WORK_DIR/s3: data, leveldb, logs (-logdir), the S3
# config, the curl config holding the keys (kept off command lines), and weed.pid. weed's gRPC
# fast-path Unix sockets are fixed by weed at /tmp/seaweedfs-<service>-grpc-<port>.sock: their
# ports are listed in WORK_DIR/s3/grpc-ports so that stop-s3.sh removes any it leaves behind.
#
# s3.env exports COUCHSHARE_S3_ENDPOINT (http://127.0.0.1:PORT, path-style), _ACCESS_KEY,
# _SECRET_KEY, _BUCKET and _REGION (weed accepts any region in the signature; us-east-1 is
# what the tests sign with). tools/testbin/stop-s3.sh WORK_DIR stops what this started.
# Usage: start-s3.sh WORK_DIR
set -euo pipefail
WORK_DIR=${1:?usage: start-s3.sh WORK_DIR}
mkdir -p "$WORK_DIR"
WORK_DIR=$(cd "$WORK_DIR" && pwd)
ENV_FILE="$WORK_DIR/s3.env"
BUCKET=${COUCHSHARE_S3_BUCKET:-couchshare-test}
REGION=${COUCHSHARE_S3_REGION:-us-east-1}
log() { echo "start-s3: $*" >&2; }
q() { printf '%q' "$1"; }

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
WEED="$("$ROOT/tools/testbin/build-seaweedfs.sh")/weed"
STATE="$WORK_DIR/s3"
if [ -d "$STATE" ]; then
  # A leftover of an earlier start in this WORK_DIR: stop whatever it recorded first.
  "$ROOT/tools/testbin/stop-s3.sh" "$WORK_DIR"
  rm -rf "$STATE"
fi
mkdir -p "$STATE/data" "$STATE/log" "$STATE/tmp"
chmod 700 "$STATE"

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'; }
hex() { python3 -c 'import secrets, sys; print(secrets.token_hex(int(sys.argv[1])))' "$1"; }
ACCESS_KEY=$(hex 10 | tr a-f A-F)   # 20 characters, the shape of an AWS access key id
SECRET_KEY=$(hex 20)                # 40 characters
MASTER=$(port) MASTER_GRPC=$(port) VOLUME=$(port) VOLUME_GRPC=$(port)
FILER=$(port) FILER_GRPC=$(port) S3=$(port) S3_GRPC=$(port)
echo "$MASTER_GRPC $VOLUME_GRPC $FILER_GRPC $S3_GRPC" >"$STATE/grpc-ports"
ENDPOINT="http://127.0.0.1:$S3"

( umask 077
  python3 -c '
import json, sys
print(json.dumps({"identities": [{"name": "couchshare",
    "credentials": [{"accessKey": sys.argv[1], "secretKey": sys.argv[2]}],
    "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}, indent=2))' \
    "$ACCESS_KEY" "$SECRET_KEY" >"$STATE/s3.json"
  # curl signs with SigV4 from this file: the keys stay off command lines (ps shows those).
  printf 'user = "%s:%s"\naws-sigv4 = "aws:amz:%s:s3"\n' "$ACCESS_KEY" "$SECRET_KEY" "$REGION" >"$STATE/curl.cfg" )
# The HTTP status of a signed request (000 when nothing answers).
s3() { curl -sS -o /dev/null -w '%{http_code}' --max-time 5 -K "$STATE/curl.cfg" "$@" 2>/dev/null || true; }

stop_started() { "$ROOT/tools/testbin/stop-s3.sh" "$WORK_DIR" >/dev/null 2>&1 || true; }
fail() {
  log "$*"
  log "last lines of $STATE/weed.log:"
  tail -n 30 "$STATE/weed.log" >&2 || true
  stop_started
  exit 1
}

# In its own process group (setsid), led by the recorded pid, so stop-s3.sh stops exactly it.
# The working directory is STATE: weed looks for master.toml/filer.toml/security.toml in ./
# (then ~/.seaweedfs and /etc/seaweedfs), and TMPDIR keeps its other temporary files here.
( cd "$STATE" && TMPDIR="$STATE/tmp" exec setsid "$WEED" -logdir="$STATE/log" server \
    -ip=127.0.0.1 -ip.bind=127.0.0.1 -dir="$STATE/data" \
    -master.port="$MASTER" -master.port.grpc="$MASTER_GRPC" -master.telemetry=false \
    -master.volumeSizeLimitMB=64 -volume.max=64 \
    -volume.port="$VOLUME" -volume.port.grpc="$VOLUME_GRPC" -volume.preStopSeconds=0 \
    -filer -filer.port="$FILER" -filer.port.grpc="$FILER_GRPC" \
    -filer.localSocket="$STATE/filer.sock" \
    -s3 -s3.port="$S3" -s3.port.grpc="$S3_GRPC" -s3.port.iceberg=0 -s3.port.lance=0 -s3.iam=false \
    -s3.localSocket="$STATE/s3.sock" -s3.config="$STATE/s3.json" \
    </dev/null >"$STATE/weed.log" 2>&1 ) &
echo $! >"$STATE/weed.pid"

# Ready: a signed ListBuckets answers 200 (the S3 gateway starts seconds after the master,
# and answers 5xx until the filer is up).
deadline=$((SECONDS + 90))
code=000
while [ "$SECONDS" -lt "$deadline" ]; do
  kill -0 "$(cat "$STATE/weed.pid")" 2>/dev/null || fail "weed exited during start-up"
  code=$(s3 "$ENDPOINT/")
  [ "$code" = 200 ] && break
  sleep 0.5
done
[ "$code" = 200 ] || fail "S3 at $ENDPOINT did not answer a signed ListBuckets with 200 within 90 s (last: $code)"

# The bucket, then a HEAD on it. Right after start the master may still be growing volumes,
# so a 5xx is retried for a while.
deadline=$((SECONDS + 60))
while :; do
  code=$(s3 -X PUT "$ENDPOINT/$BUCKET")
  [ "$code" = 200 ] && code=$(s3 -I "$ENDPOINT/$BUCKET")
  [ "$code" = 200 ] && break
  [ "$SECONDS" -lt "$deadline" ] || fail "could not create bucket $BUCKET (last: $code)"
  sleep 0.5
done

# Then one object written and deleted. An object write takes the filer's distributed lock,
# and the master hands the filer its lock ring some 10 s after start: until then each PUT
# waits, retrying the lock once a second. Ready means a test's first PUT does not wait.
probe="$STATE/tmp/probe"
echo "start-s3 probe" >"$probe"
deadline=$((SECONDS + 60))
while :; do
  code=$(s3 --max-time 30 -T "$probe" "$ENDPOINT/$BUCKET/.start-s3-probe")
  [ "$code" = 200 ] && code=$(s3 -X DELETE "$ENDPOINT/$BUCKET/.start-s3-probe")
  [ "$code" = 204 ] && break
  [ "$SECONDS" -lt "$deadline" ] || fail "could not write an object into $BUCKET (last: $code)"
  sleep 0.5
done
rm -f "$probe"

{ echo "export COUCHSHARE_S3_ENDPOINT=$(q "$ENDPOINT")"
  echo "export COUCHSHARE_S3_ACCESS_KEY=$(q "$ACCESS_KEY")"
  echo "export COUCHSHARE_S3_SECRET_KEY=$(q "$SECRET_KEY")"
  echo "export COUCHSHARE_S3_BUCKET=$(q "$BUCKET")"
  echo "export COUCHSHARE_S3_REGION=$(q "$REGION")"; } >"$ENV_FILE"
chmod 600 "$ENV_FILE"
log "SeaweedFS $("$WEED" version 2>/dev/null | head -n 1 | sed 's/^version //') S3 answers at $ENDPOINT (bucket $BUCKET, master $MASTER, filer $FILER); source $ENV_FILE"
