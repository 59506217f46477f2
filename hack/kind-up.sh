#!/usr/bin/env bash
# Bring kafka-sidecar up on a kind cluster (needs Docker, kind and kubectl; not runnable on our
# build machines, which have no Docker engine — there the manifests are validated against a
# real kube-apiserver with server-side dry-run instead, see tests/integration/test_manifests.py).
#
#   hack/kind-up.sh                 # with cert-manager (manifests/default)
#   CERT_MANAGER=0 hack/kind-up.sh  # the operator manages its own webhook certificate
set -euo pipefail
cd "$(dirname "$0")/.."
CLUSTER=${CLUSTER:-kafka-sidecar}
VERSION=${VERSION:-0.1.0}
CERT_MANAGER=${CERT_MANAGER:-1}
CERT_MANAGER_VERSION=${CERT_MANAGER_VERSION:-v1.16.2}

for tool in docker kind kubectl; do
  command -v "$tool" >/dev/null || { echo "kind-up: $tool is required" >&2; exit 1; }
done

kind get clusters | grep -qx "$CLUSTER" || kind create cluster --name "$CLUSTER"
docker build -f Dockerfile.sidecar -t "ghcr.io/kafka-sidecar/kafka-sidecar:$VERSION" .
docker build -f Dockerfile.operator -t "ghcr.io/kafka-sidecar/kafka-sidecar-operator:$VERSION" .
kind load docker-image --name "$CLUSTER" \
  "ghcr.io/kafka-sidecar/kafka-sidecar:$VERSION" "ghcr.io/kafka-sidecar/kafka-sidecar-operator:$VERSION"

if [ "$CERT_MANAGER" = 1 ]; then
  kubectl apply -f "https://github.com/cert-manager/cert-manager/releases/download/$CERT_MANAGER_VERSION/cert-manager.yaml"
  kubectl -n cert-manager wait --for=condition=Available deployment --all --timeout=180s
  OVERLAY=manifests/default
else
  OVERLAY=manifests/selfsigned
fi
kubectl apply -k manifests/crd
kubectl wait --for=condition=Established crd/kafkasidecarpolicies.kafka-sidecar.io --timeout=60s
kubectl apply -k "$OVERLAY"
kubectl -n kafka-sidecar-system rollout status deployment/kafka-sidecar-operator --timeout=180s

# The sample app's namespace (labelled for injection), a policy, and the opted-in Deployment.
kubectl apply -f manifests/samples/opted-in-deployment.yaml
kubectl apply -n checkout -f manifests/samples/kafkasidecarpolicy-minimal.yaml
kubectl -n checkout get pods -l kafka-sidecar.io/injected=true
kubectl get ksp -A
