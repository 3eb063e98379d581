#!/usr/bin/env bash
# Stops the node start-node.sh started in WORK_DIR and leaves nothing of it behind: no
# process (every process in the cgroups `couchshare-node` and `kubepods`), no mount under
# WORK_DIR or in /run/netns made since the start, no iptables rule or chain of Kubernetes or
# CNI, the bridge gone, the sysctls as they were. Then it checks: it prints what is left and
# exits 1 if anything is.
# Pods are stopped by the kubelet first (so CNI tears their network down), when the API server
# still answers; whatever is left is killed.
set -uo pipefail
W=${1:?work dir}
[ -d "$W" ] || exit 0
W=$(cd "$W" && pwd)
TB=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CG=couchshare-node; BR=couchshare0
log() { echo "stop-node: $(date +%T) $*" >&2; }
pidof_() { [ -f "$W/pids/$1.pid" ] && cat "$W/pids/$1.pid"; }
alive() { local p; p=$(pidof_ "$1") && kill -0 "$p" 2>/dev/null; }
stop() {  # stop NAME [SECONDS]: SIGTERM, wait, SIGKILL
  local p; p=$(pidof_ "$1") || return 0
  kill "$p" 2>/dev/null
  for _ in $(seq $((${2:-10} * 10))); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$p" 2>/dev/null
  rm -f "$W/pids/$1.pid"
}
# The rules and chains of every table (built-in chains that are empty and accept are left out:
# iptables-nft lists a table once anything touched it).
rules() {
  "$1-save" 2>/dev/null | awk '/^\*/ { t = $0 } /^(-A|:)/ && !/^:(INPUT|OUTPUT|FORWARD|PREROUTING|POSTROUTING) ACCEPT/ { print t " " $0 }' \
    | sed 's/\[[0-9]*:[0-9]*\]//'
}
procs() {  # every process in the node's cgroups
  cat "/sys/fs/cgroup/pids/$CG/cgroup.procs" 2>/dev/null
  find /sys/fs/cgroup/pids/kubepods -name cgroup.procs -exec cat {} + 2>/dev/null
}

# 1. Nothing schedules or replaces pods any more; the kubelet stops the ones there are.
stop kube-controller-manager; stop kube-scheduler
if alive kubelet && [ -f "$W/kubeconfig" ] && [ -f "$W/node.env" ]; then
  # shellcheck disable=SC1091
  source "$W/node.env"
  K() { timeout 20 "$COUCHSHARE_KUBECTL" --kubeconfig "$W/kubeconfig" "$@"; }
  if K get --raw /readyz >/dev/null 2>&1; then
    log "deleting every pod (the kubelet stops its containers and sandboxes)"
    K delete pods --all-namespaces --all --grace-period 5 --wait=false >/dev/null 2>&1
    for _ in $(seq 60); do
      [ -z "$(K get pods -A -o name 2>/dev/null)" ] && break; sleep 1
    done
  fi
fi
# 2. The node's daemons.
stop kubelet; stop kube-proxy; stop coredns
CTR=(ctr --address "$W/run/containerd.sock" -n k8s.io)
if alive containerd; then
  # Anything the kubelet did not stop: kill its task, remove its container (sandboxes too).
  for t in $("${CTR[@]}" tasks ls -q 2>/dev/null); do
    "${CTR[@]}" tasks kill -s SIGKILL "$t" >/dev/null 2>&1
    "${CTR[@]}" tasks rm -f "$t" >/dev/null 2>&1
  done
  for c in $("${CTR[@]}" containers ls -q 2>/dev/null); do "${CTR[@]}" containers rm "$c" >/dev/null 2>&1; done
fi
stop containerd
# Shims and container processes still in the node's cgroups.
for _ in 1 2 3; do
  left=$(procs | sort -u)
  [ -z "$left" ] && break
  # shellcheck disable=SC2086
  kill -9 $left 2>/dev/null; sleep 0.5
done
"$TB/stop-k8s.sh" "$W"

# 3. Kubernetes' and CNI's iptables rules. kube-proxy removes its own; the kubelet's canaries
# and what CNI set up for pods that never got a DEL go with every KUBE-*/CNI-* chain.
for t in iptables ip6tables; do
  command -v "$t" >/dev/null || continue
  for table in filter nat mangle raw; do
    "$t" -t "$table" -S 2>/dev/null | grep -E '^-A [A-Z]+ .*-j (KUBE|CNI)-' | grep -vE '^-A (KUBE|CNI)-' \
      | sed 's/^-A /-D /' | while read -r rule; do eval "$t -t $table $rule" 2>/dev/null; done
    chains=$("$t" -t "$table" -S 2>/dev/null | sed -n 's/^-N \(\(KUBE\|CNI\)-[^ ]*\)$/\1/p')
    for c in $chains; do "$t" -t "$table" -F "$c" 2>/dev/null; done
    for c in $chains; do "$t" -t "$table" -X "$c" 2>/dev/null; done
  done
done
command -v nft >/dev/null && nft list tables 2>/dev/null | grep -q 'kube-proxy' \
  && { nft delete table ip kube-proxy 2>/dev/null; nft delete table ip6 kube-proxy 2>/dev/null; }

# 4. Mounts: pod volumes, container root filesystems and shm, network namespaces.
for _ in 1 2 3; do
  ms=$(awk -v w="$W/" 'index($5, w) == 1 { print $5 }' /proc/self/mountinfo | sort -r)
  [ -z "$ms" ] && break
  for m in $ms; do umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null; done
done
if [ -f "$W/netns.before" ]; then
  for ns in $(ls /run/netns 2>/dev/null | sort | comm -13 "$W/netns.before" -); do
    case $ns in cni-*) umount "/run/netns/$ns" 2>/dev/null; rm -f "/run/netns/$ns";; esac
  done
fi

# 5. The bridge (its route goes with it), the sysctls, the cgroups.
ip link del "$BR" 2>/dev/null
if [ -f "$W/saved.env" ]; then
  # shellcheck disable=SC1091
  source "$W/saved.env"
  [ -n "${IP_FORWARD:-}" ] && echo "$IP_FORWARD" >/proc/sys/net/ipv4/ip_forward
  [ -n "${BR_NF:-}" ] && echo "$BR_NF" >/proc/sys/net/bridge/bridge-nf-call-iptables
fi
for ctl in /sys/fs/cgroup/*/; do
  for d in "$ctl$CG" "${ctl}kubepods"; do
    [ -d "$d" ] && find "$d" -depth -type d -exec rmdir {} \; 2>/dev/null
  done
done

# 6. The check.
bad=0
left=$(procs | sort -u)
[ -n "$left" ] && { log "processes left: $left"; bad=1; }
ms=$(awk -v w="$W/" 'index($5, w) == 1 { print $5 }' /proc/self/mountinfo)
[ -n "$ms" ] && { log "mounts left: $ms"; bad=1; }
ip link show "$BR" >/dev/null 2>&1 && { log "bridge $BR left"; bad=1; }
for t in iptables ip6tables; do
  [ -f "$W/$t.before" ] || continue
  if ! diff <(rules "$t") "$W/$t.before" >"$W/$t.diff"; then
    log "$t rules differ from before the node started:"; cat "$W/$t.diff" >&2; bad=1
  fi
done
[ $bad = 0 ] && log "stopped: no process, mount, bridge or iptables rule of the node left"
exit $bad
