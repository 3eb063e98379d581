#!/usr/bin/env bash
# Makes sure the monitoring tests' tools are installed, and prints three lines for `source`:
# COUCHSHARE_PROMETHEUS, COUCHSHARE_PROMTOOL (Debian's `prometheus` package, 2.42 on Debian 12,
# which brings promtool) and COUCHSHARE_CHROMIUM (Debian's `chromium`, for pictures of
# Prometheus's graph page). Idempotent: installs only what is missing (as root, or with sudo),
# and never starts the packaged Prometheus service (there is no init system to start it here;
# tests run their own on loopback). Caches: apt's own, outside the checkout.
set -euo pipefail
need=()
command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1 || need+=(prometheus)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
if [ "${#need[@]}" -gt 0 ]; then
  sudo=()
  [ "$(id -u)" = 0 ] || sudo=(sudo)
  echo "install-monitoring: installing ${need[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  "${sudo[@]}" apt-get update -qq >&2
  "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${need[@]}" >&2
fi
echo "export COUCHSHARE_PROMETHEUS=$(command -v prometheus)"
echo "export COUCHSHARE_PROMTOOL=$(command -v promtool)"
echo "export COUCHSHARE_CHROMIUM=$(command -v chromium)"
