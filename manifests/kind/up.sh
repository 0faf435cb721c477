#!/usr/bin/env bash
# The kind cluster `kws` and its local registry (localhost:5001), idempotent:
#   1. a registry:2 container `kind-registry` on localhost:5001,
#   2. the cluster of manifests/kind/cluster.yaml, each node's containerd mirroring the
#      registry (images pushed to localhost:5001/... are pulled by the pods as such),
#   3. the registry joined to the `kind` network and announced (KEP-1755 ConfigMap).
# Needs docker and kind (>= 0.20). Used by `make kind-up` and pipelines/stacks/kind/setup.sh.
# KIND_CONFIG: another cluster config (CI: manifests/kind/cluster-dind.yaml). KIND_API_HOST:
# the name this shell reaches the Docker daemon by when it is not local (CI's docker:dind
# service: `docker`); the kubeconfig then points there instead of 0.0.0.0.
set -euo pipefail
cd "$(dirname "$0")/../.."

CLUSTER=${KIND_CLUSTER:-kws}
CONFIG=${KIND_CONFIG:-manifests/kind/cluster.yaml}
API_HOST=${KIND_API_HOST:-}
REGISTRY=kind-registry
REGISTRY_PORT=5001

for tool in docker kind kubectl; do
  command -v "$tool" >/dev/null || { echo "error: $tool is not installed" >&2; exit 1; }
done

echo "== local registry localhost:$REGISTRY_PORT"
if [ "$(docker inspect -f '{{.State.Running}}' "$REGISTRY" 2>/dev/null || true)" != true ]; then
  docker rm -f "$REGISTRY" >/dev/null 2>&1 || true
  docker run -d --restart=always -p "127.0.0.1:$REGISTRY_PORT:5000" --network bridge \
    --name "$REGISTRY" registry:2
fi

echo "== kind cluster $CLUSTER"
kind get clusters | grep -qx "$CLUSTER" || kind create cluster --name "$CLUSTER" --config "$CONFIG"
if [ -n "$API_HOST" ]; then
  # the API server listens on the Docker host's port; its certificate names $API_HOST
  # (cluster-dind.yaml's certSANs)
  port=$(docker port "$CLUSTER-control-plane" 6443/tcp | head -n1 | sed 's/.*://')
  kubectl config set-cluster "kind-$CLUSTER" --server "https://$API_HOST:$port"
fi
for node in $(kind get nodes --name "$CLUSTER"); do
  dir="/etc/containerd/certs.d/localhost:$REGISTRY_PORT"
  docker exec "$node" mkdir -p "$dir"
  printf '[host."http://%s:5000"]\n' "$REGISTRY" | docker exec -i "$node" cp /dev/stdin "$dir/hosts.toml"
done
if [ "$(docker inspect -f '{{json .NetworkSettings.Networks.kind}}' "$REGISTRY")" = null ]; then
  docker network connect kind "$REGISTRY"
fi
kubectl --context "kind-$CLUSTER" apply -f manifests/kind/local-registry-hosting.yaml
