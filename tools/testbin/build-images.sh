#!/usr/bin/env bash
# Builds the three images the node test runs, as OCI archives in a cache outside the checkout,
# each keyed by its inputs (the same inputs give the same file and digest), and prints the
# folder. Its `images.tsv` lists `NAME<TAB>ARCHIVE`, the names the chart and containerd use:
#   registry.k8s.io/pause:3.6        the pod sandbox (build-node.sh's pause);
#   ghcr.io/couchshare/couchshare:0.1.0   the operator, following the Dockerfile's contract:
#       the release binary (`cargo build --release --locked --bin couchshare`, as the Dockerfile
#       runs it) on what distroless/cc gives it (glibc, libgcc, CA certificates, a `nonroot`
#       user), USER 65532:65532, ENTRYPOINT ["/couchshare"], CMD ["run"], EXPOSE 8080;
#   docker.io/library/couchdb:3.5.0  (the chart's `couchdb:3.5.0`): a Debian 12 minbase root
#       made by debootstrap, the CouchDB release build-couchdb.sh builds in /opt/couchdb, and
#       the entrypoint in couchdb-image/ (the official image's environment contract).
# Why not a container builder: no registry is reachable for base images. A user builds the
# operator image with `docker build -t ghcr.io/couchshare/couchshare:0.1.0 .` instead.
# Needs root (debootstrap, file owners). Installs debootstrap when it is missing.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
TB=$ROOT/tools/testbin
CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/couchshare-testbin
OUT=$CACHE/images
SUITE=${COUCHSHARE_IMAGE_SUITE:-bookworm}
MIRROR=${COUCHSHARE_DEBIAN_MIRROR:-http://deb.debian.org/debian}
APP_VERSION=$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' "$ROOT/charts/couchshare/Chart.yaml")
COUCHDB_TAG=$(sed -n '/^couchdb:/,/^[^ ]/ s/^    tag: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' "$ROOT/charts/couchshare/values.yaml")
export SOURCE_DATE_EPOCH=0
log() { echo "build-images: $*" >&2; }
mkdir -p "$OUT"
key() { cat "$@" | sha256sum | cut -c1-16; }
WORK=$(mktemp -d)
cleanup() {
  # a debootstrap that failed half-way may have left proc/sys mounted inside its target
  { grep -o " $WORK/[^ ]*" /proc/mounts || true; } | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

image() {  # image ARCHIVE NAME ARGS...: write the archive unless it is there; print its line
  local archive=$1 name=$2; shift 2
  if [ ! -f "$archive" ]; then
    python3 "$TB/oci-image.py" --out "$archive" --name "$name" "$@" >"$archive.json"
  fi
  python3 - "$archive.json" <<'PY' >&2
import json, sys
d = json.load(open(sys.argv[1]))
print(f"build-images: {d['name']}: {d['digest'][:19]}…, {d['compressed_bytes']/1e6:.1f} MB compressed, {d['uncompressed_bytes']/1e6:.1f} MB unpacked")
PY
  printf '%s\t%s\n' "$name" "$archive" >>"$WORK/images.tsv"
}

WANT=${*:-pause operator couchdb}   # arguments: build only these
want() { [[ " $WANT " == *" $1 "* ]]; }

# ---- pause -------------------------------------------------------------------------------
if want pause; then
NODEBIN=$("$TB/build-node.sh")
mkdir -p "$WORK/pause"; install -m 0755 "$NODEBIN/pause" "$WORK/pause/pause"
image "$OUT/pause-$(key "$NODEBIN/pause" "$TB/oci-image.py").tar" registry.k8s.io/pause:3.6 \
  --layer "$WORK/pause" --entrypoint '["/pause"]' --user 65535:65535
fi

# ---- operator ----------------------------------------------------------------------------
if want operator; then
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/couchshare-target}
log "cargo build --release --locked --bin couchshare"
(cd "$ROOT" && cargo build --quiet --release --locked --bin couchshare >&2)
BIN=$CARGO_TARGET_DIR/release/couchshare
R=$WORK/operator
mkdir -p "$R/etc/ssl/certs" "$R/tmp" "$R/home/nonroot"
install -m 0755 "$BIN" "$R/couchshare"
# The shared libraries the binary links, at the paths the loader looks for them (distroless/cc
# carries the same Debian 12 glibc and libgcc).
ldd "$BIN" | awk '/=> \//{print $3} /^[[:space:]]*\/lib/{print $1}' | sort -u | while read -r lib; do
  mkdir -p "$R$(dirname "$lib")"; cp -L "$lib" "$R$lib"
done
ls "$R"/lib*/ld-linux* >/dev/null 2>&1 || { log "no dynamic loader found for $BIN"; exit 1; }
cp -L /etc/ssl/certs/ca-certificates.crt "$R/etc/ssl/certs/" 2>/dev/null || true
printf 'root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$R/etc/passwd"
printf 'root:x:0:\nnobody:x:65534:\nnonroot:x:65532:\n' >"$R/etc/group"
chmod 1777 "$R/tmp"; chown 65532:65532 "$R/home/nonroot"
opkey=$( (cd "$R" && find . -type f -exec sha256sum {} + | sort -k2; cat "$TB/oci-image.py") | key)
image "$OUT/operator-$opkey.tar" "ghcr.io/couchshare/couchshare:$APP_VERSION" \
  --layer "$R" --entrypoint '["/couchshare"]' --cmd '["run"]' --user 65532:65532 \
  --port 8080/tcp --env PATH=/usr/local/bin:/usr/bin:/bin --env SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
fi

# ---- CouchDB -----------------------------------------------------------------------------
if want couchdb; then
# The runtime libraries of the Erlang VM and CouchDB's NIFs (ICU, OpenSSL), and what the
# entrypoint uses (bash, awk, find, setpriv: all in minbase).
PKGS=libicu72,libssl3,libstdc++6,libgcc-s1,libtinfo6,zlib1g,libsystemd0,libcap2,libgcrypt20,liblz4-1,liblzma5,libzstd1
ROOTFS=$CACHE/rootfs-debian-$SUITE-$(printf '%s %s couchdb-5984 v1' "$SUITE" "$PKGS" | sha256sum | cut -c1-12)
if [ ! -f "$ROOTFS.done" ]; then
  command -v debootstrap >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >&2; }
  log "debootstrap --variant=minbase $SUITE (once)"
  rm -rf "$ROOTFS"; mkdir -p "$WORK/rootfs"
  debootstrap --variant=minbase --include="$PKGS" "$SUITE" "$WORK/rootfs" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 \
    || { tail -n 30 "$WORK/debootstrap.log" >&2; exit 1; }
  chroot "$WORK/rootfs" groupadd -g 5984 couchdb
  chroot "$WORK/rootfs" useradd -u 5984 -g 5984 -d /opt/couchdb -M -s /bin/bash couchdb
  # What a container gets from its runtime, and what is only a record of this build.
  rm -rf "$WORK"/rootfs/dev/* "$WORK"/rootfs/proc/* "$WORK"/rootfs/sys/* "$WORK"/rootfs/run/* \
         "$WORK"/rootfs/var/cache/apt/* "$WORK"/rootfs/var/lib/apt/lists/* "$WORK"/rootfs/var/log/* \
         "$WORK"/rootfs/tmp/* "$WORK"/rootfs/etc/hostname "$WORK"/rootfs/etc/resolv.conf \
         "$WORK"/rootfs/etc/machine-id "$WORK"/rootfs/var/cache/ldconfig/aux-cache
  mv "$WORK/rootfs" "$ROOTFS"; touch "$ROOTFS.done"
fi
REL=$("$TB/build-couchdb.sh")
C=$WORK/couchdb
mkdir -p "$C/opt"
cp -a "$REL" "$C/opt/couchdb"
rm -rf "$C/opt/couchdb/data" "$C/opt/couchdb/var"
mkdir -p "$C/opt/couchdb/data" "$C/opt/couchdb/etc/local.d" "$C/opt/couchdb/etc/default.d"
install -m 0644 "$TB/couchdb-image/vm.args" "$C/opt/couchdb/etc/vm.args"
install -m 0644 "$TB/couchdb-image/10-docker-default.ini" "$C/opt/couchdb/etc/default.d/10-docker-default.ini"
install -m 0755 "$TB/couchdb-image/docker-entrypoint.sh" "$C/docker-entrypoint.sh"
chown -R 5984:5984 "$C/opt/couchdb"; chmod 0755 "$C/opt/couchdb"
ckey=$( (echo "$ROOTFS"; cd "$C" && find . -type f -exec sha256sum {} + | sort -k2; cat "$TB/oci-image.py") | key)
image "$OUT/couchdb-$COUCHDB_TAG-$ckey.tar" "docker.io/library/couchdb:$COUCHDB_TAG" \
  --layer "$ROOTFS" --layer "$C" --entrypoint '["/docker-entrypoint.sh"]' --cmd '["/opt/couchdb/bin/couchdb"]' \
  --workdir /opt/couchdb --port 5984/tcp --port 4369/tcp --port 9100/tcp \
  --env PATH=/opt/couchdb/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
fi

# images.tsv lists every image built so far, the latest archive of each name
touch "$OUT/images.tsv"
awk -F'\t' 'NR == FNR { new[$1] = $2; next } !($1 in new) { print } END { for (n in new) print n "\t" new[n] }' \
  "$WORK/images.tsv" "$OUT/images.tsv" | sort >"$WORK/all.tsv"
mv "$WORK/all.tsv" "$OUT/images.tsv"
for f in "$OUT"/*.tar; do   # archives of earlier inputs
  grep -qF "$f" "$OUT/images.tsv" || rm -f "$f" "$f.json"
done
echo "$OUT"
