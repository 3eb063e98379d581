#!/bin/bash
# couchshare's entrypoint for its CouchDB image (tools/testbin/build-images.sh). Written for
# this project; it follows the environment contract of the official `couchdb` image, which
# the Helm chart relies on:
#   COUCHDB_USER + COUCHDB_PASSWORD  an admin, added to local.d/docker.ini unless an [admins]
#                                    entry for that user is already configured;
#   COUCHDB_SECRET                   [chttpd_auth] secret, unless one is configured;
#   NODENAME                         the Erlang node is named couchdb@$NODENAME (a cluster);
#   COUCHDB_ERLANG_COOKIE            written to /opt/couchdb/.erlang.cookie;
#   ERL_FLAGS                        read by the Erlang VM itself (e.g. -setcookie).
# Started as root, it fixes ownership and runs CouchDB as the couchdb user (5984); started as
# that user (the chart's runAsUser), it runs as it. Any other command is run as given.
set -euo pipefail
COUCH=/opt/couchdb

ini_has() {  # ini_has SECTION KEY: is KEY set in SECTION of any configuration file?
  local section=$1 key=$2 f
  for f in "$COUCH"/etc/default.d/*.ini "$COUCH"/etc/local.ini "$COUCH"/etc/local.d/*.ini; do
    [ -f "$f" ] || continue
    awk -v s="[$section]" -v k="$key" '
      /^[[:space:]]*\[/ { gsub(/[[:space:]]/, ""); cur = $0; next }
      cur == s { line = $0; sub(/[[:space:]]*=.*/, "", line); gsub(/^[[:space:]]+/, "", line)
                 if (line == k) { found = 1; exit } }
      END { exit found ? 0 : 1 }' "$f" && return 0
  done
  return 1
}

if [ "${1:-}" = "$COUCH/bin/couchdb" ]; then
  # Where CouchDB writes configuration changes made at run time: the last file it reads.
  touch "$COUCH/etc/local.d/docker.ini"

  if [ "$(id -u)" = 0 ]; then
    find "$COUCH" \! \( -user couchdb -group couchdb \) -exec chown -f couchdb:couchdb '{}' + || true
    find "$COUCH/data" -type d ! -perm 0755 -exec chmod -f 0755 '{}' + || true
    find "$COUCH/data" -type f ! -perm 0644 -exec chmod -f 0644 '{}' + || true
  fi

  if [ -n "${NODENAME:-}" ] && ! grep -q '^-name ' "$COUCH/etc/vm.args"; then
    echo "-name couchdb@$NODENAME" >>"$COUCH/etc/vm.args"
  fi

  if [ -n "${COUCHDB_USER:-}" ] && [ -n "${COUCHDB_PASSWORD:-}" ]; then
    if ! ini_has admins "$COUCHDB_USER"; then
      printf '\n[admins]\n%s = %s\n' "$COUCHDB_USER" "$COUCHDB_PASSWORD" >>"$COUCH/etc/local.d/docker.ini"
    fi
  fi

  if [ -n "${COUCHDB_SECRET:-}" ] && ! ini_has chttpd_auth secret; then
    printf '\n[chttpd_auth]\nsecret = %s\n' "$COUCHDB_SECRET" >>"$COUCH/etc/local.d/docker.ini"
  fi

  if [ -n "${COUCHDB_ERLANG_COOKIE:-}" ]; then
    cookie="$COUCH/.erlang.cookie"
    if [ -e "$cookie" ]; then
      [ "$(cat "$cookie" 2>/dev/null)" = "$COUCHDB_ERLANG_COOKIE" ] \
        || echo "warning: $cookie does not match COUCHDB_ERLANG_COOKIE" >&2
    else
      (umask 077; printf '%s' "$COUCHDB_ERLANG_COOKIE" >"$cookie")
    fi
    [ "$(id -u)" = 0 ] && chown couchdb:couchdb "$cookie"
    chmod 600 "$cookie"
  fi

  if ! ini_has admins "${COUCHDB_USER:-admin}" && ! grep -qs '^\[admins\]' "$COUCH"/etc/local.d/*.ini; then
    echo "warning: no admin configured: set COUCHDB_USER and COUCHDB_PASSWORD" >&2
  fi

  export HOME=$COUCH
  if [ "$(id -u)" = 0 ]; then
    chown -f couchdb:couchdb "$COUCH/etc/local.d/docker.ini" || true
    exec setpriv --reuid=couchdb --regid=couchdb --clear-groups "$@"
  fi
fi

exec "$@"
