#!/usr/bin/env bash
# Builds what a one-machine Kubernetes node needs besides the control plane that
# build-k8s.sh builds, into a version-keyed cache outside the checkout, and prints that folder:
#   kubelet, kube-controller-manager, kube-scheduler, kube-proxy  (the same k8s.io/kubernetes
#     module and replace list as build-k8s.sh's kube-apiserver, so the Go cache is shared),
#   coredns  (github.com/coredns/coredns as a library, with only the plugins a cluster DNS
#     needs, `bind` among them so it listens on one address: the full set pulls every cloud SDK),
#   pause  (the pod sandbox's process: sleeps until SIGTERM/SIGINT, reaps orphans).
# Why from Go modules: no release download or image registry is reachable here.
set -euo pipefail
K8S_VERSION=${K8S_VERSION:-v1.36.3}
COREDNS_VERSION=${COREDNS_VERSION:-v1.15.0}
OUT=${COUCHSHARE_NODEBIN:-${XDG_CACHE_HOME:-$HOME/.cache}/couchshare-testbin/node-k8s-$K8S_VERSION-coredns-$COREDNS_VERSION}
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-buildvcs=false
K8S_CMDS=(kubelet kube-controller-manager kube-scheduler kube-proxy)
have() { [ -x "$OUT/$1" ]; }
all=1; for b in "${K8S_CMDS[@]}" coredns pause; do have "$b" || all=0; done
if [ $all = 1 ]; then echo "$OUT"; exit 0; fi
mkdir -p "$OUT"
log() { echo "build-node: $*" >&2; }
# shellcheck source=tools/testbin/k8s-module.sh
source "$(dirname "${BASH_SOURCE[0]}")/k8s-module.sh"
WORK=$(mktemp -d); trap 'rm -rf "$WORK"' EXIT
mkdir "$WORK/out"

missing=(); for b in "${K8S_CMDS[@]}"; do have "$b" || missing+=("$b"); done
if [ ${#missing[@]} -gt 0 ]; then
  log "building ${missing[*]} $K8S_VERSION"
  k8s_build "$WORK/k8s" "$WORK/out" "${missing[@]}"
  for b in "${missing[@]}"; do mv "$WORK/out/$b" "$OUT/"; done
fi

if ! have coredns; then
  log "building coredns $COREDNS_VERSION (cluster-DNS plugins only)"
  mkdir "$WORK/coredns"; cd "$WORK/coredns"
  go mod init local.invalid/coredns-testbin >/dev/null 2>&1
  # CoreDNS's documented way to build with a chosen plugin set: set dnsserver.Directives (the
  # order plugins run in, as in plugin.cfg) and import just those plugins.
  cat >main.go <<'GO'
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/forward"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/loadbalance"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/loop"
	_ "github.com/coredns/coredns/plugin/ready"
)

func init() {
	dnsserver.Directives = []string{"bind", "errors", "log", "health", "ready", "loadbalance", "cache", "loop", "kubernetes", "forward"}
}

func main() { coremain.Run() }
GO
  go get "github.com/coredns/coredns@$COREDNS_VERSION" >&2
  go mod tidy >&2
  go build -mod=mod -trimpath -ldflags "-s -w" -o "$WORK/out/coredns" .
  mv "$WORK/out/coredns" "$OUT/"
fi

if ! have pause; then
  log "building pause"
  mkdir "$WORK/pause"; cd "$WORK/pause"
  go mod init local.invalid/pause >/dev/null 2>&1
  # What registry.k8s.io/pause does: hold the pod's namespaces, exit on SIGINT/SIGTERM,
  # and reap the zombies of a shared PID namespace.
  cat >main.go <<'GO'
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for s := range sigs {
		if s == syscall.SIGCHLD {
			for {
				var ws syscall.WaitStatus
				pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
				if pid <= 0 || err != nil {
					break
				}
			}
			continue
		}
		os.Exit(0)
	}
}
GO
  go build -trimpath -ldflags "-s -w" -o "$WORK/out/pause" .
  mv "$WORK/out/pause" "$OUT/"
fi

for b in "${K8S_CMDS[@]}"; do "$OUT/$b" --version >&2; done
"$OUT/coredns" -version >&2
echo "$OUT"
