#!/usr/bin/env bash
# Starts a one-machine Kubernetes that runs pods, on this machine only:
#   a bridge `couchshare0` (10.85.0.1/24) that everything of the node listens on, besides
#   loopback; etcd and kube-apiserver (start-k8s.sh, in its node mode: on the bridge address,
#   service account tokens on); containerd (Debian's, with runc and the CNI bridge plugin from
#   Debian's containernetworking-plugins) with the images of build-images.sh imported;
#   kubelet, kube-controller-manager, kube-scheduler, kube-proxy (iptables) and CoreDNS on the
#   host as the cluster DNS (build-node.sh).
# Usage: start-node.sh K8S_BIN NODE_BIN IMAGES_DIR WORK_DIR
# Writes WORK_DIR/kubeconfig (admin), WORK_DIR/node.env, and what stop-node.sh needs. Every
# process it starts runs in the cgroup `couchshare-node` (pods in `kubepods`), so that
# stop-node.sh ends exactly those. Needs root. Installs the Debian packages it needs when missing.
# On failure it stops what it started.
set -Eeuo pipefail
K8S_BIN=${1:?dir with kube-apiserver, etcd, kubectl}; NODE_BIN=${2:?dir from build-node.sh}
IMAGES=${3:?dir from build-images.sh}; W=${4:?work dir}
TB=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
W=$(mkdir -p "$W" && cd "$W" && pwd)
NODE=couchshare-node
BR=couchshare0; ADDR=10.85.0.1; POD_CIDR=10.85.0.0/24; SVC_CIDR=10.0.0.0/24
CG=couchshare-node
log() { echo "start-node: $(date +%T) $*" >&2; }

[ "$(id -u)" = 0 ] || { echo "start-node.sh needs root (network, mounts, cgroups)" >&2; exit 1; }
need=()
for p in containerd:containerd runc:runc iptables:iptables conntrack:conntrack; do
  command -v "${p%%:*}" >/dev/null || need+=("${p#*:}")
done
[ -x /usr/lib/cni/bridge ] || need+=(containernetworking-plugins)
if [ ${#need[@]} -gt 0 ]; then
  log "installing ${need[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >&2
fi
if ip link show "$BR" >/dev/null 2>&1; then
  echo "start-node: the bridge $BR exists already: is another node running? (stop-node.sh WORK_DIR)" >&2; exit 1
fi

mkdir -p "$W/pids" "$W/logs" "$W/run" "$W/cni/net.d" "$W/cni/ipam" "$W/kubelet"
# On any failure (a failed command, or an exit on purpose), stop what was started.
UP=0
trap '[ $UP = 1 ] || { log "failed; stopping what was started"; "$TB/stop-node.sh" "$W" >&2 || true; }' EXIT
# What stopping must put back, and what it compares against.
{ echo "IP_FORWARD=$(cat /proc/sys/net/ipv4/ip_forward)"
  echo "BR_NF=$(cat /proc/sys/net/bridge/bridge-nf-call-iptables 2>/dev/null || echo)"; } >"$W/saved.env"
rules() {  # as stop-node.sh compares them
  "$1-save" 2>/dev/null | awk '/^\*/ { t = $0 } /^(-A|:)/ && !/^:(INPUT|OUTPUT|FORWARD|PREROUTING|POSTROUTING) ACCEPT/ { print t " " $0 }' \
    | sed 's/\[[0-9]*:[0-9]*\]//'
}
for t in iptables ip6tables; do rules "$t" >"$W/$t.before"; done
ls /run/netns 2>/dev/null | sort >"$W/netns.before" || true

# ---- network -----------------------------------------------------------------------------
ip link add "$BR" type bridge
ip addr add "$ADDR/24" dev "$BR"
ip link set "$BR" up
ip route add "$SVC_CIDR" dev "$BR" src "$ADDR"      # the host reaches Services through kube-proxy
echo 1 >/proc/sys/net/ipv4/ip_forward
[ -f /proc/sys/net/bridge/bridge-nf-call-iptables ] && echo 1 >/proc/sys/net/bridge/bridge-nf-call-iptables
cat >"$W/cni/net.d/10-couchshare.conflist" <<EOF
{"cniVersion": "1.0.0", "name": "couchshare-node", "plugins": [
  {"type": "bridge", "bridge": "$BR", "isGateway": true, "ipMasq": true, "hairpinMode": true,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": "$POD_CIDR", "gateway": "$ADDR"}]],
            "routes": [{"dst": "0.0.0.0/0"}], "dataDir": "$W/cni/ipam"}},
  {"type": "portmap", "capabilities": {"portMappings": true}}]}
EOF

# ---- the cgroup every node process runs in -------------------------------------------------
for c in pids cpu memory; do mkdir -p "/sys/fs/cgroup/$c/$CG"; done
spawn() {  # spawn NAME CMD...: start it in the node's cgroup, its own session, logs in $W/logs
  local name=$1; shift
  setsid bash -c 'for c in pids cpu memory; do echo $$ >"/sys/fs/cgroup/$c/'"$CG"'/cgroup.procs"; done; exec "$@"' \
    "$name" "$@" >"$W/logs/$name.log" 2>&1 </dev/null &
  echo $! >"$W/pids/$name.pid"
}
wait_for() {  # wait_for WHAT SECONDS CMD...
  local what=$1 secs=$2; shift 2
  for _ in $(seq $((secs * 2))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.5; done
  log "$what did not come up in $secs s"; return 1
}

# ---- control plane -----------------------------------------------------------------------
COUCHSHARE_K8S_NODE_ADDRESS=$ADDR "$TB/start-k8s.sh" "$K8S_BIN" "$W" >&2
KC=$W/kubeconfig
K() { "$K8S_BIN/kubectl" --kubeconfig "$KC" "$@"; }
port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }

# ---- containerd --------------------------------------------------------------------------
SOCK=$W/run/containerd.sock
cat >"$W/containerd.toml" <<EOF
version = 2
root = "$W/containerd"
state = "$W/run/containerd"
oom_score = 0
[grpc]
  address = "$SOCK"
[ttrpc]
  address = "$W/run/containerd.ttrpc.sock"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "registry.k8s.io/pause:3.6"
  # This machine may not lower a process's oom_score_adj (the kubelet asks -998 for sandboxes):
  # never ask for less than containerd's own.
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$W/cni/net.d"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
EOF
log "containerd"
spawn containerd containerd --config "$W/containerd.toml"
CTR=(ctr --address "$SOCK" -n k8s.io)
wait_for containerd 30 "${CTR[@]}" version
while IFS=$'\t' read -r name archive; do
  [ -n "$name" ] || continue
  log "importing $name"
  "${CTR[@]}" images import --no-unpack=false "$archive" >&2
  grep -qxF "$name" <<<"$("${CTR[@]}" images ls -q)" || { log "import did not name $name"; exit 1; }
done <"$IMAGES/images.tsv"

# ---- kubelet -----------------------------------------------------------------------------
cp /etc/resolv.conf "$W/resolv.conf"
cat >"$W/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $ADDR
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
  x509: {clientCAFile: $W/pki/ca.crt}
authorization: {mode: AlwaysAllow}
containerRuntimeEndpoint: unix://$SOCK
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
oomScoreAdj: 0
clusterDNS: [$ADDR]
clusterDomain: cluster.local
resolvConf: $W/resolv.conf
serializeImagePulls: false
evictionHard: {memory.available: 50Mi, nodefs.available: 1%, imagefs.available: 1%, nodefs.inodesFree: 1%}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
maxPods: 60
EOF
log "kubelet"
spawn kubelet "$NODE_BIN/kubelet" --config "$W/kubelet.yaml" --kubeconfig "$KC" \
  --hostname-override "$NODE" --node-ip "$ADDR" --root-dir "$W/kubelet" --cert-dir "$W/kubelet/pki" \
  --v 1

# ---- controllers, scheduler, proxy, DNS --------------------------------------------------
log "kube-controller-manager, kube-scheduler, kube-proxy, coredns"
spawn kube-controller-manager "$NODE_BIN/kube-controller-manager" --kubeconfig "$KC" \
  --bind-address 127.0.0.1 --secure-port "$(port)" --leader-elect=false \
  --service-account-private-key-file "$W/pki/sa.key" --root-ca-file "$W/pki/ca.crt" \
  --use-service-account-credentials=false --service-cluster-ip-range "$SVC_CIDR" \
  --node-monitor-grace-period 20s
spawn kube-scheduler "$NODE_BIN/kube-scheduler" --kubeconfig "$KC" \
  --bind-address 127.0.0.1 --secure-port "$(port)" --leader-elect=false
spawn kube-proxy "$NODE_BIN/kube-proxy" --kubeconfig "$KC" --hostname-override "$NODE" \
  --proxy-mode iptables --cluster-cidr "$POD_CIDR" --bind-address "$ADDR" \
  --healthz-bind-address "127.0.0.1:$(port)" --metrics-bind-address "127.0.0.1:$(port)" \
  --conntrack-max-per-core 0 --oom-score-adj 0 --nodeport-addresses "$ADDR/32"
DNS_HEALTH=$(port); DNS_READY=$(port)
cat >"$W/Corefile" <<EOF
.:53 {
    bind $ADDR
    errors
    health 127.0.0.1:$DNS_HEALTH
    ready 127.0.0.1:$DNS_READY
    kubernetes cluster.local in-addr.arpa ip6.arpa {
        kubeconfig $KC couchshare-test
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl 5
    }
    forward . /etc/resolv.conf
    cache 5
    loadbalance
}
EOF
spawn coredns "$NODE_BIN/coredns" -conf "$W/Corefile"

cat >"$W/node.env" <<EOF
export KUBECONFIG=$KC
export COUCHSHARE_KUBECTL=$K8S_BIN/kubectl
export COUCHSHARE_HELM=$K8S_BIN/helm
export COUCHSHARE_NODE_NAME=$NODE
export COUCHSHARE_NODE_ADDRESS=$ADDR
export COUCHSHARE_NODE_CTR="${CTR[*]}"
EOF

wait_for "kube-controller-manager" 60 grep -q . "$W/pids/kube-controller-manager.pid"
wait_for "the node $NODE (Ready)" 120 \
  bash -c "'$K8S_BIN/kubectl' --kubeconfig '$KC' get node $NODE -o jsonpath='{.status.conditions[?(@.type==\"Ready\")].status}' | grep -cx True >/dev/null"
wait_for "CoreDNS" 60 curl -fsS "http://127.0.0.1:$DNS_READY/ready"
wait_for "the default ServiceAccount" 60 K -n default get serviceaccount default
wait_for "the kube-root-ca.crt ConfigMap" 60 K -n default get configmap kube-root-ca.crt
for f in "$W"/pids/*.pid; do   # every daemon still runs
  kill -0 "$(cat "$f")" 2>/dev/null || { n=$(basename "$f" .pid); log "$n exited:"; tail -n 20 "$W/logs/$n.log" >&2; exit 1; }
done
UP=1
log "node $NODE Ready ($(K get node "$NODE" -o jsonpath='{.status.nodeInfo.containerRuntimeVersion}'), kubelet $(K get node "$NODE" -o jsonpath='{.status.nodeInfo.kubeletVersion}'))"
