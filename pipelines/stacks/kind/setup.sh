#!/usr/bin/env bash
# The `kind` ZenML stack, end to end and idempotent (re-run it after a reboot):
#   1. a local registry (localhost:5001) and the kind cluster `kws` mirroring it,
#   2. MinIO, MLflow, a ZenML server, pipeline RBAC and workspace (manifests/stack),
#   3. the ZenML client pointed at that server and the stack `kind` applied and active.
# Needs docker, kind (>= 0.20), kubectl, openssl, and a venv WITHOUT the serve extra:
#   python3 -m venv .venv-kind
#   .venv-kind/bin/pip install -c requirements/lock-kind.txt -e ".[train,pipeline,kind]"
# Then:
#   pipelines/stacks/kind/setup.sh
#   source .cache/kind/zenml.env && .venv-kind/bin/kws pipeline run --config smoke
set -euo pipefail
cd "$(dirname "$0")/../../.."

CLUSTER=kws
NAMESPACE=kws
VENV=${KWS_VENV:-.venv-kind}
STATE=.cache/kind
KUBECTL=(kubectl --context "kind-$CLUSTER")

for tool in docker kind kubectl openssl; do
  command -v "$tool" >/dev/null || { echo "error: $tool is not installed" >&2; exit 1; }
done
[ -x "$VENV/bin/kws" ] || { echo "error: no kws in $VENV (see the header of $0)" >&2; exit 1; }
mkdir -p "$STATE"

KIND_CLUSTER="$CLUSTER" manifests/kind/up.sh  # local registry + cluster (idempotent)

echo "== credentials ($STATE/credentials.env, generated once)"
if [ ! -f "$STATE/credentials.env" ]; then
  (umask 077 && cat >"$STATE/credentials.env" <<CREDENTIALS
MINIO_ACCESS_KEY=kws-$(openssl rand -hex 4)
MINIO_SECRET_KEY=$(openssl rand -hex 20)
ZENML_PASSWORD=$(openssl rand -hex 16)
MLFLOW_USERNAME=kws
MLFLOW_PASSWORD=$(openssl rand -hex 16)
ZENML_JWT_SECRET=$(openssl rand -hex 32)
CREDENTIALS
  )
fi
# shellcheck disable=SC1091
source "$STATE/credentials.env"
"${KUBECTL[@]}" apply -f manifests/stack/namespace.yaml
"${KUBECTL[@]}" -n "$NAMESPACE" create secret generic minio-credentials \
  --from-literal=access-key="$MINIO_ACCESS_KEY" --from-literal=secret-key="$MINIO_SECRET_KEY" \
  --dry-run=client -o yaml | "${KUBECTL[@]}" apply -f -
"${KUBECTL[@]}" -n "$NAMESPACE" create secret generic zenml-credentials \
  --from-literal=password="$ZENML_PASSWORD" --from-literal=jwt-secret="$ZENML_JWT_SECRET" \
  --dry-run=client -o yaml | "${KUBECTL[@]}" apply -f -

echo "== MinIO, MLflow, ZenML server"
"${KUBECTL[@]}" apply -k manifests/stack
for deployment in minio mlflow zenml-server; do
  "${KUBECTL[@]}" -n "$NAMESPACE" rollout status "deployment/$deployment" --timeout=600s
done
"${KUBECTL[@]}" -n "$NAMESPACE" wait --for=condition=complete job/minio-buckets --timeout=300s

# The node address: the host and the pods both reach its NodePorts (Linux Docker).
NODE_IP=$(docker inspect -f '{{.NetworkSettings.Networks.kind.IPAddress}}' "$CLUSTER-control-plane")
cat >"$STATE/zenml.env" <<ZENML
# source this file before running pipelines on the kind stack
export ZENML_STORE_URL=http://$NODE_IP:30237
export ZENML_STORE_USERNAME=default
export ZENML_STORE_PASSWORD=$ZENML_PASSWORD
export ZENML_ANALYTICS_OPT_IN=false
ZENML
chmod 600 "$STATE/zenml.env"
# shellcheck disable=SC1091
source "$STATE/zenml.env"

echo "== ZenML stack kind (server $ZENML_STORE_URL)"
"$VENV/bin/kws" pipeline stack kind \
  --var NODE_IP="$NODE_IP" \
  --var MINIO_ACCESS_KEY="$MINIO_ACCESS_KEY" \
  --var MINIO_SECRET_KEY="$MINIO_SECRET_KEY" \
  --var MLFLOW_USERNAME="$MLFLOW_USERNAME" \
  --var MLFLOW_PASSWORD="$MLFLOW_PASSWORD"
cat <<DONE

kind stack ready. ZenML dashboard http://localhost:8237 (user default, password in
$STATE/credentials.env), MLflow http://localhost:5000, MinIO console http://localhost:9001.
Run:  source $STATE/zenml.env && $VENV/bin/kws pipeline run --config smoke
DONE
