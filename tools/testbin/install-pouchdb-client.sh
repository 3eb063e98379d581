#!/usr/bin/env bash
# Installs the PouchDB client the end-to-end tests sync with (pinned by
# tools/pouchdb-client/package-lock.json) into a cache outside the checkout keyed by the
# lockfile's hash, and prints its node_modules folder (for NODE_PATH).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
SRC="$ROOT/tools/pouchdb-client"
HASH=$(sha256sum "$SRC/package-lock.json" | cut -c1-16)
CACHE=${COUCHSHARE_TESTBIN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/couchshare-testbin}/pouchdb-client-$HASH
if [ ! -f "$CACHE/.installed" ]; then
  echo "install-pouchdb-client: installing into $CACHE" >&2
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
echo "$CACHE/node_modules"
