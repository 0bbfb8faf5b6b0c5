#!/usr/bin/env bash
# End-to-end on kind: build the image, load it, install CRDs + operator + node agent, apply the samples, and
# wait until the operator has planned both and says why they wait. Needs docker, kind and kubectl on PATH.
# KEEP_CLUSTER=1 keeps the cluster afterwards; CLUSTER=name picks the cluster name.
#
# What the operator does on kind (no GPU, no NVML, no model volume): the node agent declares one 24 GiB GPU per
# worker (--declared-gpus/--declared-memory-bytes: kind has no NVML) and advertises it as the node's
# swarm.ai/gpu-memory-mib resource; only nodes that advertise it count, so the pool's capacity comes from those
# readings (capacitySource "declared"; a pool's fallbackCapacity never makes a node without the resource count).
# The pool admits and places its warm specialists (Deployments scaled to 1, each with a PodDisruptionBudget), but
# their pods mount the swarm-models claim, which kind lacks: the scheduler leaves them Pending and the pool's Ready
# condition says so (WarmSetNotReady, with the scheduler's message). The sample job is granted its specialists
# and stays Pending (SpecialistsReady False): the trainer pod is created only once every specialist it is given is
# ready, so it has none. That is the expected end state. The planner keeps within each node's allocatable CPU and
# memory (the specialist template requests 1 CPU and 4 GiB): the host needs at least 2 CPUs and 8 GiB for the warm
# pair (kind's nodes report the host's).
set -euo pipefail
cd "$(dirname "$0")/../.."
CLUSTER="${CLUSTER:-swarm-e2e}"
NS=swarm
KUBECTL="${KUBECTL:-kubectl}"
ROOT="$(pwd)"
GPU_BYTES=25757220864  # what the node agents declare per worker: an RTX 4090's total (kind has no NVML)

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
    patch: |-
      - op: remove
        path: /spec/template/spec/runtimeClassName
      - op: replace
        path: /spec/template/spec/containers/0/command
        value: [swarm, node-agent, --interval, "10", --declared-gpus, "1", --declared-memory-bytes, "$GPU_BYTES"]
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

# wait_until SECONDS WHAT COMMAND...: run COMMAND every 2 s until it succeeds; fail after SECONDS.
wait_until() {
  local deadline=$((SECONDS + $1)) what=$2
  shift 2
  until "$@"; do
    ((SECONDS < deadline)) || { echo "e2e: timed out waiting for $what" >&2; return 1; }
    sleep 2
  done
}
has_pods() { [[ -n "$("$KUBECTL" -n "$NS" get pods -l "$1" -o name)" ]]; }
job_condition() {
  "$KUBECTL" -n "$NS" get swarmjob/sotab-train -o jsonpath="{.status.conditions[?(@.type==\"$1\")].status}"
}
job_waits() { [[ "$(job_condition SpecialistsReady)" == False || "$(job_condition SpecialistsGranted)" == False ]]; }

"$KUBECTL" -n "$NS" apply -f manifests/samples/specialistpool.yaml
"$KUBECTL" -n "$NS" apply -f manifests/samples/swarmjob.yaml

# Capacity from the node agents' (declared) readings; the warm pair admitted and scaled up.
"$KUBECTL" -n "$NS" wait specialistpool/sotab --for=jsonpath='{.status.capacitySource}'=declared --timeout=180s
"$KUBECTL" -n "$NS" wait specialistpool/sotab --for=jsonpath='{.status.gpus}'=2 --timeout=60s
"$KUBECTL" -n "$NS" wait specialistpool/sotab --for=jsonpath='{.status.warmCount}'=2 --timeout=60s
for warm in geographic temporal; do
  "$KUBECTL" -n "$NS" wait "deployment/sotab--$warm" --for=jsonpath='{.spec.replicas}'=1 --timeout=60s
  # Their pods wait for the swarm-models claim (not on kind): Pending, and the scheduler says why. (`kubectl wait
  # -l` fails at once while nothing matches: wait for the ReplicaSet to create the pod first.)
  selector="swarm.ai/pool=sotab,swarm.ai/specialist=$warm"
  wait_until 60 "a pod of $warm" has_pods "$selector"
  "$KUBECTL" -n "$NS" wait pod -l "$selector" --for=condition=PodScheduled=False --timeout=120s
done
"$KUBECTL" -n "$NS" wait specialistpool/sotab \
  --for=jsonpath='{.status.conditions[?(@.type=="Ready")].reason}'=WarmSetNotReady --timeout=60s
# The warm specialists' PodDisruptionBudgets (owned by the pool); the cold ones have none.
"$KUBECTL" -n "$NS" get poddisruptionbudget/sotab--geographic poddisruptionbudget/sotab--temporal
if "$KUBECTL" -n "$NS" get poddisruptionbudget/sotab--media >/dev/null 2>&1; then
  echo "e2e: a cold specialist has a PodDisruptionBudget" >&2
  exit 1
fi
# The job waits, Pending, with a condition saying why: granted, for its specialists to be ready (SpecialistsReady
# False), or, where a kind node has less allocatable CPU or memory than the trainer template requests (4 CPUs,
# 16 GiB), for room (SpecialistsGranted False, BudgetExceeded). Either way no trainer pod: it is created only once
# every specialist it is given is ready.
wait_until 120 "the job to say why it waits" job_waits
"$KUBECTL" -n "$NS" get swarmjob/sotab-train -o jsonpath='{range .status.conditions[*]}{.type}={.status} {.reason}: {.message}{"\n"}{end}'
"$KUBECTL" -n "$NS" wait swarmjob/sotab-train --for=jsonpath='{.status.phase}'=Pending --timeout=60s
if "$KUBECTL" -n "$NS" get pod/sotab-train-primary >/dev/null 2>&1; then
  echo "e2e: a trainer pod exists although the job's specialists are not ready" >&2
  exit 1
fi
"$KUBECTL" -n "$NS" get deployment/sotab--geographic deployment/sotab--temporal deployment/sotab--people service/sotab--people
"$KUBECTL" -n "$NS" get networkpolicy/swarm-specialists networkpolicy/swarm-trainers secret/swarm-specialist-tls
"$KUBECTL" -n "$NS" get specialistpools,swarmjobs,poddisruptionbudgets
"$KUBECTL" -n "$NS" delete swarmjob/sotab-train --wait --timeout=60s
"$KUBECTL" -n "$NS" delete specialistpool/sotab --wait --timeout=60s
# Owner references: the pool's Deployments, Services and PodDisruptionBudgets go with it (garbage collector).
"$KUBECTL" -n "$NS" wait deployment/sotab--geographic poddisruptionbudget/sotab--geographic --for=delete --timeout=120s
echo "kind e2e: OK"
