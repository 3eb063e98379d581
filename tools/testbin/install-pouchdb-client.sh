#!/usr/bin/env bash
# Installs the PouchDB client the end-to-end tests sync with (pinned by
# tools/pouchdb-client/package-lock.json) into the cache outside the checkout, and prints its
# node_modules folder (for NODE_PATH).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
echo "$("$ROOT/tools/testbin/npm-install-cached.sh" "$ROOT/tools/pouchdb-client" pouchdb-client)/node_modules"
