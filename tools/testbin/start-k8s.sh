#!/usr/bin/env bash
# Starts etcd and kube-apiserver on loopback with a fresh PKI, and writes an admin kubeconfig.
# Usage: start-k8s.sh BIN_DIR WORK_DIR   (BIN_DIR from build-k8s.sh)
# Writes WORK_DIR/kubeconfig, WORK_DIR/k8s.env, WORK_DIR/etcd.pid, WORK_DIR/apiserver.pid and
# the PKI (CA key included, so tests can mint client certificates) in WORK_DIR/pki.
# Run again on the same WORK_DIR after stop-k8s.sh, it restarts both on the same ports with the
# same PKI and etcd data: what a control-plane restart looks like to a client.
# COUCHSHARE_K8S_NODE_ADDRESS=IP (start-node.sh sets it): an API server that a node's pods can
# use — it listens on that address (a bridge's, not loopback) instead of 127.0.0.1, publishes it
# in the `kubernetes` Service's endpoints, has the ServiceAccount admission plugin on (service
# account tokens for pods), a serving certificate for that address and the Service's IP, and
# reaches kubelets by their InternalIP with the admin client certificate.
set -euo pipefail
BIN=${1:?dir with kube-apiserver and etcd}; W=${2:?work dir}
mkdir -p "$W/pki" "$W/etcd"
NODE_ADDR=${COUCHSHARE_K8S_NODE_ADDRESS:-}
ADDR=${NODE_ADDR:-127.0.0.1}
SANS="DNS:localhost,IP:127.0.0.1"
[ -n "$NODE_ADDR" ] && SANS+=",IP:$NODE_ADDR,IP:10.0.0.1,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
if [ -f "$W/ports.env" ]; then
  # shellcheck disable=SC1091
  source "$W/ports.env"
else
  ETCD_PORT=$(port); PEER_PORT=$(port); API_PORT=$(port)
  printf 'ETCD_PORT=%s\nPEER_PORT=%s\nAPI_PORT=%s\n' "$ETCD_PORT" "$PEER_PORT" "$API_PORT" >"$W/ports.env"
fi

# RSA keys: rustls (kube-rs) and every client accept them.
[ -f "$W/pki/admin.crt" ] || ( cd "$W/pki"
  openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 7 -subj "/CN=couchshare-test-ca" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature"
  openssl req -newkey rsa:2048 -nodes -keyout apiserver.key -out apiserver.csr -subj "/CN=kube-apiserver"
  printf 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\nsubjectAltName=%s\n' "$SANS" >server.ext
  openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out apiserver.crt -days 7 -extfile server.ext
  openssl req -newkey rsa:2048 -nodes -keyout admin.key -out admin.csr -subj "/O=system:masters/CN=couchshare-test-admin"
  printf 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n' >client.ext
  openssl x509 -req -in admin.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out admin.crt -days 7 -extfile client.ext
  openssl genrsa -out sa.key 2048 && openssl rsa -in sa.key -pubout -out sa.pub ) >"$W/pki.log" 2>&1 \
  || { cat "$W/pki.log" >&2; exit 1; }

"$BIN/etcd" --name default --data-dir "$W/etcd" \
  --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
  --listen-peer-urls "http://127.0.0.1:$PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$PEER_PORT" \
  --initial-cluster "default=http://127.0.0.1:$PEER_PORT" --unsafe-no-fsync=true --log-level=warn \
  >"$W/etcd.log" 2>&1 &
echo $! >"$W/etcd.pid"
for _ in $(seq 150); do curl -fsS "http://127.0.0.1:$ETCD_PORT/health" >/dev/null 2>&1 && break; sleep 0.2; done
curl -fsS "http://127.0.0.1:$ETCD_PORT/health" >/dev/null \
  || { echo "etcd not healthy" >&2; tail -n 40 "$W/etcd.log" >&2; exit 1; }

# --advertise-address on loopback with the endpoint reconciler off: hermetic, and accepted
# by every release (a loopback address breaks the kubernetes Endpoints write otherwise).
if [ -n "$NODE_ADDR" ]; then
  MODE=(--endpoint-reconciler-type=lease --kubelet-preferred-address-types=InternalIP
        --kubelet-client-certificate="$W/pki/admin.crt" --kubelet-client-key="$W/pki/admin.key")
else
  MODE=(--endpoint-reconciler-type=none --disable-admission-plugins=ServiceAccount)
fi
"$BIN/kube-apiserver" \
  --etcd-servers="http://127.0.0.1:$ETCD_PORT" \
  --bind-address="$ADDR" --secure-port="$API_PORT" \
  --advertise-address="$ADDR" "${MODE[@]}" \
  --cert-dir="$W/pki" --tls-cert-file="$W/pki/apiserver.crt" --tls-private-key-file="$W/pki/apiserver.key" \
  --client-ca-file="$W/pki/ca.crt" \
  --authorization-mode=RBAC \
  --service-account-issuer="https://$ADDR:$API_PORT" \
  --service-account-key-file="$W/pki/sa.pub" --service-account-signing-key-file="$W/pki/sa.key" \
  --service-cluster-ip-range=10.0.0.0/24 --allow-privileged=true \
  >"$W/kube-apiserver.log" 2>&1 &
echo $! >"$W/apiserver.pid"

C=(--cacert "$W/pki/ca.crt" --cert "$W/pki/admin.crt" --key "$W/pki/admin.key")
for _ in $(seq 240); do curl -fsS "${C[@]}" "https://$ADDR:$API_PORT/readyz" >/dev/null 2>&1 && break; sleep 0.5; done
curl -fsS "${C[@]}" "https://$ADDR:$API_PORT/readyz" >/dev/null \
  || { echo "kube-apiserver not ready" >&2; tail -n 40 "$W/kube-apiserver.log" >&2; exit 1; }

b64() { base64 -w0 "$1"; }
cat >"$W/kubeconfig" <<KUBECONFIG
apiVersion: v1
kind: Config
clusters:
- name: couchshare-test
  cluster:
    server: https://$ADDR:$API_PORT
    certificate-authority-data: $(b64 "$W/pki/ca.crt")
users:
- name: couchshare-test-admin
  user:
    client-certificate-data: $(b64 "$W/pki/admin.crt")
    client-key-data: $(b64 "$W/pki/admin.key")
contexts:
- name: couchshare-test
  context: {cluster: couchshare-test, user: couchshare-test-admin}
current-context: couchshare-test
KUBECONFIG
cat >"$W/k8s.env" <<ENV
export KUBECONFIG=$W/kubeconfig
export COUCHSHARE_TEST_PKI=$W/pki
export COUCHSHARE_KUBECTL=$BIN/kubectl
export COUCHSHARE_HELM=$BIN/helm
ENV
echo "kube-apiserver ready on https://$ADDR:$API_PORT" >&2
