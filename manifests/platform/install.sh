#!/usr/bin/env bash
# The platform the kws chart runs on, installed into the kind cluster `kws` (idempotent):
#   1. Gateway API CRDs (standard channel, the version KServe implements),
#   2. cert-manager (KServe's webhook certificates),
#   3. Envoy Gateway (the Gateway implementation),
#   4. KServe: the kserve-crd and kserve-resources charts, default deployment mode Standard,
#   5. the GatewayClass `eg` and the Gateway `kws/kws-gateway` (manifests/platform/gateway.yaml),
#   6. with --gitops REPO_URL: Argo CD and the Application `kws` (manifests/gitops/).
# Needs kubectl and helm (v3.8+ or v4: OCI charts) and a cluster: manifests/kind/up.sh.
# Usage: manifests/platform/install.sh [--gitops https://your.git/server/kws-mlops.git]
set -euo pipefail
cd "$(dirname "$0")/../.."

GATEWAY_API_VERSION=v1.2.1
CERT_MANAGER_VERSION=v1.17.2
ENVOY_GATEWAY_VERSION=v1.3.2   # implements Gateway API v1.2.1
KSERVE_VERSION=v0.20.0
ARGOCD_VERSION=v3.5.1
CONTEXT=${KUBE_CONTEXT:-kind-${KIND_CLUSTER:-kws}}
KUBECTL=(kubectl --context "$CONTEXT")
HELM=(helm --kube-context "$CONTEXT")

GITOPS_REPO=""
while [ $# -gt 0 ]; do
  case "$1" in
    --gitops) GITOPS_REPO=${2:?--gitops needs the URL of the Git repository}; shift 2 ;;
    *) echo "error: unknown argument $1 (usage: $0 [--gitops REPO_URL])" >&2; exit 2 ;;
  esac
done
for tool in kubectl helm; do
  command -v "$tool" >/dev/null || { echo "error: $tool is not installed" >&2; exit 1; }
done

echo "== Gateway API $GATEWAY_API_VERSION CRDs"
"${KUBECTL[@]}" apply --server-side -f \
  "https://github.com/kubernetes-sigs/gateway-api/releases/download/$GATEWAY_API_VERSION/standard-install.yaml"

echo "== cert-manager $CERT_MANAGER_VERSION"
"${KUBECTL[@]}" apply --server-side -f \
  "https://github.com/cert-manager/cert-manager/releases/download/$CERT_MANAGER_VERSION/cert-manager.yaml"
"${KUBECTL[@]}" -n cert-manager wait --for=condition=Available deployment --all --timeout=300s

echo "== Envoy Gateway $ENVOY_GATEWAY_VERSION"
# its chart also carries the Gateway API CRDs: Helm skips those that exist (step 1)
"${HELM[@]}" upgrade --install eg oci://docker.io/envoyproxy/gateway-helm \
  --version "$ENVOY_GATEWAY_VERSION" -n envoy-gateway-system --create-namespace --wait --timeout 5m

echo "== KServe $KSERVE_VERSION (Standard mode)"
"${HELM[@]}" upgrade --install kserve-crd oci://ghcr.io/kserve/charts/kserve-crd \
  --version "$KSERVE_VERSION" -n kserve --create-namespace --wait
# Standard (raw Deployment) mode by default; no Ingress of KServe's own: the chart's HTTPRoute
# is the route.
"${HELM[@]}" upgrade --install kserve-resources oci://ghcr.io/kserve/charts/kserve-resources \
  --version "$KSERVE_VERSION" -n kserve --wait --timeout 10m \
  --set kserve.controller.deploymentMode=Standard \
  --set kserve.controller.gateway.disableIngressCreation=true

echo "== Gateway kws/kws-gateway"
"${KUBECTL[@]}" apply -f manifests/stack/namespace.yaml
"${KUBECTL[@]}" apply -f manifests/platform/gateway.yaml
"${KUBECTL[@]}" -n kws wait --for=condition=Programmed gateway/kws-gateway --timeout=300s

if [ -n "$GITOPS_REPO" ]; then
  echo "== Argo CD $ARGOCD_VERSION and the Application kws ($GITOPS_REPO)"
  "${KUBECTL[@]}" create namespace argocd --dry-run=client -o yaml | "${KUBECTL[@]}" apply -f -
  "${KUBECTL[@]}" -n argocd apply --server-side -f \
    "https://raw.githubusercontent.com/argoproj/argo-cd/$ARGOCD_VERSION/manifests/install.yaml"
  "${KUBECTL[@]}" -n argocd wait --for=condition=Available deployment --all --timeout=600s
  sed "s|^\(    repoURL:\).*|\1 $GITOPS_REPO|" manifests/gitops/application.yaml \
    | "${KUBECTL[@]}" apply -f -
fi

cat <<DONE

Platform ready on $CONTEXT. Deploy the predictors (needs MLflow with registered versions in
namespace kws: pipelines/stacks/kind/setup.sh, then a pipeline run on the kind stack):
  make kind-deploy        # or the steps of docs/runbooks/rollout.md
DONE
