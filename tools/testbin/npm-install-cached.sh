#!/usr/bin/env bash
# Installs the npm package folder SRC (its package.json and package-lock.json) into a cache
# outside the checkout keyed by the lockfile's hash, and prints that cache folder. The install
# goes to a temporary sibling and is renamed when complete, so an interrupted install is never
# taken for a good one. --ignore-scripts: nothing here needs a native build.
# Usage: npm-install-cached.sh SRC NAME
set -euo pipefail
SRC=${1:?package folder}; NAME=${2:?cache name}
HASH=$(sha256sum "$SRC/package-lock.json" | cut -c1-16)
CACHE=${COUCHSHARE_TESTBIN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/couchshare-testbin}/$NAME-$HASH
if [ ! -f "$CACHE/.installed" ]; then
  echo "npm-install-cached: installing $NAME into $CACHE" >&2
  mkdir -p "$(dirname "$CACHE")"
  TMP=$(mktemp -d "$CACHE.tmp.XXXXXX")
  trap 'rm -rf "$TMP"' EXIT
  cp "$SRC/package.json" "$SRC/package-lock.json" "$TMP/"
  (cd "$TMP" && npm ci --ignore-scripts --prefer-offline --no-audit --no-fund >&2)
  touch "$TMP/.installed"
  rm -rf "$CACHE"
  mv "$TMP" "$CACHE"
  trap - EXIT
fi
echo "$CACHE"
