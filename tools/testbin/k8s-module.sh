# shellcheck shell=bash
# Sourced by build-k8s.sh and build-node.sh: builds commands of k8s.io/kubernetes at
# $K8S_VERSION from the Go module proxy.
#
# k8s_build DIR OUTDIR CMD...  makes a wrapper module in DIR and builds k8s.io/kubernetes/cmd/CMD
# for each CMD into OUTDIR, with the version stamped (helm reads .Capabilities.KubeVersion from
# the server's gitVersion). k/k requires its staging modules at v0.0.0 with ./staging replaces,
# which a dependency's go.mod cannot carry: each is replaced with its published v0.Y.Z tag
# (kubernetes#79384). Needs GOTOOLCHAIN, CGO_ENABLED and GOFLAGS set by the caller.
k8s_build() {
  local dir=$1 out=$2; shift 2
  local minor patch staging gomod mods m p ldf
  minor=$(cut -d. -f2 <<<"$K8S_VERSION"); patch=$(cut -d. -f3 <<<"$K8S_VERSION")
  staging="v0.${minor}.${patch}"
  mkdir -p "$dir"
  (
    cd "$dir" || exit 1
    go mod init local.invalid/k8s-testbin >/dev/null 2>&1
    gomod=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" \
            | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')
    mods=$( { sed -n 's|^[[:space:]]*\(k8s\.io/[A-Za-z0-9._-]*\)[[:space:]]*=>[[:space:]]*\./staging/.*|\1|p' "$gomod"
              sed -n 's|^[[:space:]]*\(k8s\.io/[A-Za-z0-9._-]*\)[[:space:]]\{1,\}v0\.0\.0\([[:space:]].*\)\{0,1\}$|\1|p' "$gomod"; } | sort -u )
    for m in $mods; do go mod edit -replace="$m=$m@$staging"; done
    local pkgs=()
    for m in "$@"; do pkgs+=("k8s.io/kubernetes/cmd/$m@$K8S_VERSION"); done
    go get -tool "${pkgs[@]}" >&2
    ldf="-s -w"
    for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
      ldf+=" -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
      ldf+=" -X $p.buildDate=1970-01-01T00:00:00Z"
    done
    for m in "$@"; do
      go build -mod=mod -trimpath -ldflags "$ldf" -o "$out/$m" "k8s.io/kubernetes/cmd/$m"
    done
  )
}
