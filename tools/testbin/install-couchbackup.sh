#!/usr/bin/env bash
# Installs IBM's couchbackup/couchrestore CLI (@cloudant/couchbackup, Apache-2.0, pinned by
# tools/couchbackup/package-lock.json) into the cache outside the checkout, and prints the
# folder that holds the `couchbackup` and `couchrestore` commands (node_modules/.bin).
# The backup tests check that couchrestore reads couchshare's backup files and that couchshare
# restores files couchbackup wrote (docs/backup-format.md).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BIN="$("$ROOT/tools/testbin/npm-install-cached.sh" "$ROOT/tools/couchbackup" couchbackup)/node_modules/.bin"
for c in couchbackup couchrestore; do
  [ -x "$BIN/$c" ] || { echo "install-couchbackup: $BIN/$c is missing" >&2; exit 1; }
done
echo "$BIN"
