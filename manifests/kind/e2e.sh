#!/usr/bin/env bash
# End-to-end on kind: build the image, load it, install CRDs + operator + node agent, apply the samples, and
# wait until the operator has reported status for both. Needs docker, kind and kubectl on PATH.
# KEEP_CLUSTER=1 keeps the cluster afterwards; CLUSTER=name picks the cluster name.
set -euo pipefail
cd "$(dirname "$0")/../.."
CLUSTER="${CLUSTER:-swarm-e2e}"
NS=swarm
KUBECTL="${KUBECTL:-kubectl}"
ROOT="$(pwd)"

# The kind overlay (the local image, no nvidia RuntimeClass: kind has none). It lives in a temporary directory
# under .cache/ (git-ignored) because kustomize refuses an overlay nested inside its base and absolute paths.
render_overlay() {
  local dir="$ROOT/.cache/kind-overlay"
  mkdir -p "$dir"
  cat >"$dir/kustomization.yaml" <<YAML
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - ../../manifests
images:
  - name: ghcr.io/swarm-cta/swarm
    newName: swarm
    newTag: e2e
patches:
  - target: {kind: DaemonSet, name: swarm-node-agent}
    patch: '[{"op": "remove", "path": "/spec/template/spec/runtimeClassName"}]'
  - target: {kind: Deployment, name: swarm-operator}
    patch: |-
      - op: replace
        path: /spec/template/spec/containers/0/env/2/value
        value: swarm:e2e
      - op: replace
        path: /spec/template/spec/containers/0/env/3/value
        value: "5"
YAML
  "$KUBECTL" kustomize "$dir"
}
if [[ "${1:-}" == render ]]; then
  command -v "$KUBECTL" >/dev/null || KUBECTL="$ROOT/.venv/bin/kubectl"
  render_overlay
  exit 0
fi

command -v docker >/dev/null || { echo "e2e: docker not found" >&2; exit 2; }
command -v kind >/dev/null || { echo "e2e: kind not found" >&2; exit 2; }
command -v openssl >/dev/null || { echo "e2e: openssl not found" >&2; exit 2; }
command -v "$KUBECTL" >/dev/null || KUBECTL=.venv/bin/kubectl

cleanup() { [[ "${KEEP_CLUSTER:-0}" == 1 ]] || kind delete cluster --name "$CLUSTER" >/dev/null 2>&1 || true; }
trap cleanup EXIT

if ! kind get clusters | grep -qx "$CLUSTER"; then
  kind create cluster --name "$CLUSTER" --config manifests/kind/kind-config.yaml --wait 120s
fi
docker build -f manifests/docker/Dockerfile -t swarm:e2e .
kind load docker-image swarm:e2e --name "$CLUSTER"

"$KUBECTL" apply -k crds/
"$KUBECTL" wait --for=condition=Established crd/specialistpools.swarm.ai crd/swarmjobs.swarm.ai --timeout=60s
render_overlay | "$KUBECTL" apply -f -
# Not `rollout status`: the standby replica is never ready (leader election), so wait for Available.
"$KUBECTL" -n "$NS" wait deployment/swarm-operator --for=condition=Available --timeout=180s
"$KUBECTL" -n "$NS" rollout status daemonset/swarm-node-agent --timeout=180s

# The TLS Secrets the specialist and trainer pod templates mount (mTLS between them). A cluster with cert-manager
# would `kubectl apply -k manifests/tls/`; here a throwaway CA from openssl does.
create_tls_secrets() {
  local dir
  dir="$(mktemp -d)"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 -subj "/CN=swarm-e2e-ca" \
    -keyout "$dir/ca.key" -out "$dir/ca.crt" 2>/dev/null
  for who in specialist primary; do
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=swarm-$who" \
      -keyout "$dir/$who.key" -out "$dir/$who.csr" 2>/dev/null
    printf 'subjectAltName=DNS:*.%s.svc,DNS:*.%s.svc.cluster.local\nextendedKeyUsage=serverAuth,clientAuth\n' \
      "$NS" "$NS" >"$dir/$who.ext"
    openssl x509 -req -in "$dir/$who.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" -CAcreateserial -days 2 \
      -extfile "$dir/$who.ext" -out "$dir/$who.crt" 2>/dev/null
    "$KUBECTL" -n "$NS" create secret generic "swarm-$who-tls" --from-file=tls.crt="$dir/$who.crt" \
      --from-file=tls.key="$dir/$who.key" --from-file=ca.crt="$dir/ca.crt" --dry-run=client -o yaml \
      | "$KUBECTL" apply -f -
  done
  rm -rf "$dir"
}
create_tls_secrets
# GPU pods run under the nvidia RuntimeClass (the NVIDIA GPU operator makes it); on kind it is plain runc.
"$KUBECTL" apply -f - <<'YAML'
apiVersion: node.k8s.io/v1
kind: RuntimeClass
metadata:
  name: nvidia
handler: runc
YAML

"$KUBECTL" -n "$NS" apply -f manifests/samples/specialistpool.yaml
"$KUBECTL" -n "$NS" apply -f manifests/samples/swarmjob.yaml

# The pool budget comes from fallbackCapacity (kind nodes have no NVML); specialist and trainer pods request the
# swarm.ai/gpu-memory-mib resource, which no kind node advertises (no NVML, nothing declared), so they stay Pending
# with the scheduler's reason: phase Pending with pods set is the expected end state.
"$KUBECTL" -n "$NS" wait specialistpool/sotab --for=jsonpath='{.status.capacitySource}'=fallback --timeout=120s
"$KUBECTL" -n "$NS" wait specialistpool/sotab --for=condition=Ready --timeout=60s
"$KUBECTL" -n "$NS" wait swarmjob/sotab-train --for=jsonpath='{.status.pods[0]}'=sotab-train-primary --timeout=120s
"$KUBECTL" -n "$NS" get deployment/sotab--geographic deployment/sotab--temporal deployment/sotab--people service/sotab--people
"$KUBECTL" -n "$NS" get networkpolicy/swarm-specialists networkpolicy/swarm-trainers secret/swarm-specialist-tls
"$KUBECTL" -n "$NS" get pod/sotab-train-primary
"$KUBECTL" -n "$NS" get specialistpools,swarmjobs
"$KUBECTL" -n "$NS" delete swarmjob/sotab-train --wait --timeout=60s
if "$KUBECTL" -n "$NS" get pod/sotab-train-primary >/dev/null 2>&1; then
  "$KUBECTL" -n "$NS" wait pod/sotab-train-primary --for=delete --timeout=60s
fi
echo "kind e2e: OK"
