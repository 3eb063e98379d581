#!/usr/bin/env bash
# Builds SeaweedFS's `weed` (the S3-compatible object store the backup tests write to;
# Apache-2.0) from its Go module into a version-keyed cache outside the checkout, and prints
# that folder (it holds `weed`). Reuses the cache when the binary is present.
# Why from the Go module: no release downloads are reachable here, only the Go module proxy.
# The module has no semver tags: SEAWEEDFS_VERSION is a pseudo-version (what @latest resolved
# to when this was pinned). Its go.mod carries a replace directive, which `go install mod@v`
# refuses, so the build goes through a throwaway module that copies the replace, as
# build-k8s.sh does for k8s.io/kubernetes. Needs Go >= the module's go directive.
set -euo pipefail
SEAWEEDFS_VERSION=${SEAWEEDFS_VERSION:-v0.0.0-20261109003541-7506e5f91cd6}
MOD=github.com/seaweedfs/seaweedfs
OUT=${COUCHSHARE_S3BIN:-${XDG_CACHE_HOME:-$HOME/.cache}/couchshare-testbin/seaweedfs-$SEAWEEDFS_VERSION}
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-buildvcs=false
if [ -x "$OUT/weed" ]; then echo "$OUT"; exit 0; fi
mkdir -p "$OUT"
log() { echo "build-seaweedfs: $*" >&2; }
WORK=$(mktemp -d); trap 'rm -rf "$WORK"' EXIT
mkdir "$WORK/out" "$WORK/mod"; cd "$WORK/mod"

log "building weed from $MOD@$SEAWEEDFS_VERSION (cold: several minutes)"
go mod init local.invalid/seaweedfs-testbin >/dev/null 2>&1
# Copy the module's own replace directives that point at another module (not a local path).
SW_GOMOD=$(go mod download -json "$MOD@$SEAWEEDFS_VERSION" \
           | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')
go mod edit -json "$SW_GOMOD" | python3 -c '
import json, sys
for r in json.load(sys.stdin).get("Replace") or []:
    new = r["New"]
    if "Version" not in new:
        continue  # a local path: only meaningful in the upstream checkout
    old = r["Old"]["Path"] + ("@" + r["Old"]["Version"] if r["Old"].get("Version") else "")
    print(old + "=" + new["Path"] + "@" + new["Version"])' | while read -r rep; do
  go mod edit -replace="$rep"
done
# nice: the build takes every core for minutes, and must not disturb what else runs here.
nice -n 19 go get -tool "$MOD/weed@$SEAWEEDFS_VERSION" >&2
nice -n 19 go build -mod=mod -trimpath -ldflags "-s -w" -o "$WORK/out/weed" "$MOD/weed"
mv "$WORK/out/weed" "$OUT/"
"$OUT/weed" version >&2
echo "$OUT"
