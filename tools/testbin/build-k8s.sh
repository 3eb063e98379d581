#!/usr/bin/env bash
# Builds kube-apiserver, kubectl (from k8s.io/kubernetes), etcd (from go.etcd.io/etcd/server/v3)
# and helm into a version-keyed cache outside the checkout, and prints that folder.
# Why from Go modules: no release downloads are reachable here, only the Go module proxy.
# Needs Go >= the release's go directive. Reuses the cache when every binary is present.
set -euo pipefail
K8S_VERSION=${K8S_VERSION:-v1.36.3}
ETCD_VERSION=${ETCD_VERSION:-v3.6.16}
HELM_VERSION=${HELM_VERSION:-v4.3.1}
OUT=${COUCHSHARE_TESTBIN:-${XDG_CACHE_HOME:-$HOME/.cache}/couchshare-testbin/k8s-$K8S_VERSION-etcd-$ETCD_VERSION-helm-$HELM_VERSION}
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-buildvcs=false
have() { [ -x "$OUT/$1" ]; }
if have kube-apiserver && have kubectl && have etcd && have helm; then echo "$OUT"; exit 0; fi
mkdir -p "$OUT"
log() { echo "build-k8s: $*" >&2; }
# shellcheck source=tools/testbin/k8s-module.sh
source "$(dirname "${BASH_SOURCE[0]}")/k8s-module.sh"
WORK=$(mktemp -d); trap 'rm -rf "$WORK"' EXIT
mkdir "$WORK/out"   # binaries land here, apart from the module folders

if ! have kube-apiserver || ! have kubectl; then
  log "building kube-apiserver and kubectl $K8S_VERSION (cold: 10-20 minutes)"
  k8s_build "$WORK/k8s" "$WORK/out" kube-apiserver kubectl
  mv "$WORK/out/kube-apiserver" "$WORK/out/kubectl" "$OUT/"
fi

if ! have etcd; then
  log "building etcd $ETCD_VERSION"
  # A module of its own, so etcd's dependency versions stay apart from Kubernetes'.
  mkdir "$WORK/etcd"; cd "$WORK/etcd"
  go mod init local.invalid/etcd-testbin >/dev/null 2>&1
  go get -tool "go.etcd.io/etcd/server/v3@$ETCD_VERSION" >&2
  go build -mod=mod -trimpath -ldflags "-s -w" -o "$WORK/out/etcd" go.etcd.io/etcd/server/v3
  mv "$WORK/out/etcd" "$OUT/"
fi

if ! have helm; then
  log "building helm $HELM_VERSION"
  HELM_MAJOR=$(cut -d. -f1 <<<"$HELM_VERSION")
  GOBIN="$WORK/out" go install -trimpath \
    -ldflags "-s -w -X helm.sh/helm/$HELM_MAJOR/internal/version.version=$HELM_VERSION" \
    "helm.sh/helm/$HELM_MAJOR/cmd/helm@$HELM_VERSION" >&2
  mv "$WORK/out/helm" "$OUT/"
fi

"$OUT/kube-apiserver" --version >&2 && "$OUT/kubectl" version --client >&2 \
  && "$OUT/etcd" --version >&2 && "$OUT/helm" version >&2
echo "$OUT"
