#!/usr/bin/env bash
# Builds Apache CouchDB from a source tarball into a cache outside the checkout, keyed by the
# tarball's sha256, and prints the release folder (a relocatable `rel/couchdb`). Built once;
# later calls print the cached folder at once.
#
# Where the tarball comes from, in order:
#   1. COUCHDB_SOURCE_TARBALL (a path);
#   2. ../shared/couchdb/apache-couchdb-3.5.0-src.tar.gz beside the checkout, when it is there
#      (the sources with their dependencies already in src/);
#   3. the official release, apache-couchdb-3.5.0.tar.gz, downloaded from the Apache archive
#      and checked against the sha512 Apache publishes beside it. Without network this fails
#      and says what to download and where to put it.
# Installs the Debian packages the build needs when they are missing (needs root or sudo).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
VERSION=${COUCHDB_VERSION:-3.5.0}
CACHE_ROOT=${XDG_CACHE_HOME:-$HOME/.cache}/couchshare-testbin
log() { echo "build-couchdb: $*" >&2; }

tarball=${COUCHDB_SOURCE_TARBALL:-}
if [ -z "$tarball" ] && [ -f "$ROOT/../shared/couchdb/apache-couchdb-$VERSION-src.tar.gz" ]; then
  tarball="$ROOT/../shared/couchdb/apache-couchdb-$VERSION-src.tar.gz"
fi
if [ -z "$tarball" ]; then
  tarball="$CACHE_ROOT/downloads/apache-couchdb-$VERSION.tar.gz"
  if [ ! -f "$tarball" ]; then
    base="https://archive.apache.org/dist/couchdb/source/$VERSION/apache-couchdb-$VERSION.tar.gz"
    mkdir -p "$(dirname "$tarball")"
    log "no COUCHDB_SOURCE_TARBALL and no ../shared/couchdb: downloading $base"
    if ! curl -fsSL --max-time 600 -o "$tarball.part" "$base" \
       || ! curl -fsSL --max-time 60 -o "$tarball.sha512" "$base.sha512"; then
      rm -f "$tarball.part" "$tarball.sha512"
      log "could not download it. Download $base and $base.sha512 by hand,"
      log "check it (sha512sum -c), and run again with COUCHDB_SOURCE_TARBALL=/path/to/apache-couchdb-$VERSION.tar.gz"
      exit 1
    fi
    want=$(awk '{print $1}' "$tarball.sha512")
    got=$(sha512sum "$tarball.part" | awk '{print $1}')
    if [ "$want" != "$got" ]; then
      rm -f "$tarball.part"
      log "sha512 of the download is $got, Apache publishes $want: refusing it"
      exit 1
    fi
    mv "$tarball.part" "$tarball"
  fi
fi
[ -f "$tarball" ] || { log "no such tarball: $tarball"; exit 1; }
sum=$(sha256sum "$tarball" | awk '{print $1}')
OUT="$CACHE_ROOT/couchdb-$VERSION-${sum:0:16}"
if [ -x "$OUT/bin/couchdb" ]; then echo "$OUT"; exit 0; fi

# The build's Debian packages (Debian 12's OTP 25 is accepted by 3.5), installed when missing.
PKGS="erlang erlang-dev erlang-reltool erlang-src build-essential libicu-dev pkg-config python3"
missing=$(for p in $PKGS; do dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q 'ok installed' || echo "$p"; done)
if [ -n "$missing" ]; then
  log "installing Debian packages: $(echo $missing)"
  SUDO=; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >&2
fi

log "building CouchDB $VERSION from $(basename "$tarball") (about 2 minutes on 2 cores)"
WORK=$(mktemp -d); trap 'rm -rf "$WORK"' EXIT
tar -xzf "$tarball" -C "$WORK"
src=$(find "$WORK" -mindepth 1 -maxdepth 1 -type d | head -n 1)
cd "$src"
# No Fauxton, no docs, QuickJS instead of SpiderMonkey; the dependencies are in src/ already
# (--skip-deps), so neither rebar3 nor erlfmt is needed.
REBAR3=/bin/true ERLFMT=/bin/true ./configure --disable-fauxton --disable-docs \
  --disable-spidermonkey --js-engine=quickjs --skip-deps >&2
make release >&2
rm -rf "$OUT.tmp"
mkdir -p "$CACHE_ROOT"
cp -a rel/couchdb "$OUT.tmp"
mv "$OUT.tmp" "$OUT"
log "built into $OUT"
echo "$OUT"
