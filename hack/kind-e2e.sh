#!/usr/bin/env bash
# End-to-end on a real Kubernetes cluster (kind): helm lint and template, the image built and loaded, the
# chart installed as docs/getting-started/cluster-admin.md says, PostgreSQL and a labelled app deployed, a
# policy applied, then masking, blocking and an approval checked from inside the app pod with kubectl exec.
#
#   make e2e          (or: npm run build && bash hack/kind-e2e.sh)
#
# Needs docker (with a running engine), kind, kubectl, helm and node. Environment:
#   DBGUARD_E2E_CLUSTER  kind cluster name (default dbguard-e2e; reused when it exists)
#   DBGUARD_E2E_KEEP=1   keep the cluster afterwards (default: delete a cluster this script created)
#   KIND_NODE_IMAGE      node image for a new cluster (default: kind's; native sidecars need 1.29+)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

CLUSTER="${DBGUARD_E2E_CLUSTER:-dbguard-e2e}"
KEEP="${DBGUARD_E2E_KEEP:-0}"
NS=e2e
OPERATOR_NS=dbguard-system
VERSION="$(node -p "require('./package.json').version")"
# the chart's default image: the install command below is exactly the documented one
IMAGE="ghcr.io/dbguard/dbguard:v${VERSION}"
CREATED=0
POD=""

step() { printf '\n=== %s\n' "$*"; }
fail() {
  echo "kind-e2e: FAIL: $*" >&2
  exit 1
}
need() { command -v "$1" >/dev/null 2>&1 || fail "$1 is required (see the comment at the top of $0)"; }

# Run one statement with psql inside the app container; prints rows, fails on an SQL error.
sql() {
  kubectl -n "$NS" exec "$POD" -c app -- psql -X -At -v ON_ERROR_STOP=1 -c "$1"
}

# Retry a command until it succeeds: $1 attempts, 2 s apart.
retry() {
  local n="$1"
  shift
  local i
  for ((i = 1; i <= n; i++)); do
    if "$@"; then return 0; fi
    sleep 2
  done
  return 1
}

diagnostics() {
  echo "--- diagnostics" >&2
  kubectl get pods -A -o wide >&2 || true
  kubectl -n "$OPERATOR_NS" logs deploy/dbguard-operator --tail=80 >&2 || true
  if [ -n "$POD" ]; then
    kubectl -n "$NS" describe pod "$POD" >&2 || true
    kubectl -n "$NS" logs "$POD" -c dbguard-proxy --tail=80 >&2 || true
  fi
  kubectl -n "$NS" get databasepolicies,maskingrules,approvalrequests -o yaml >&2 || true
}

cleanup() {
  local rc=$?
  if [ "$rc" -ne 0 ]; then diagnostics; fi
  if [ "$CREATED" = 1 ] && [ "$KEEP" != 1 ]; then
    kind delete cluster --name "$CLUSTER" || true
  elif [ "$rc" -ne 0 ]; then
    echo "kind-e2e: cluster $CLUSTER kept for inspection (kubectl config use-context kind-$CLUSTER)" >&2
  fi
  exit "$rc"
}
trap cleanup EXIT

for tool in docker kind kubectl helm node; do need "$tool"; done
docker info >/dev/null 2>&1 || fail "no Docker engine: docker info failed"
[ -f dist/cli/main.js ] || fail "dist/cli/main.js missing: run npm run build (make e2e does)"

step "helm lint and helm template (every values file in examples/helm)"
helm lint charts/dbguard
helm template dbguard charts/dbguard --namespace "$OPERATOR_NS" >/dev/null
for values in examples/helm/*.yaml; do
  helm lint charts/dbguard -f "$values"
  helm template dbguard charts/dbguard --namespace "$OPERATOR_NS" -f "$values" >/dev/null
done

step "image $IMAGE"
docker build -t "$IMAGE" .

step "kind cluster $CLUSTER"
if kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
  echo "reusing cluster $CLUSTER"
else
  kind create cluster --name "$CLUSTER" --wait 180s ${KIND_NODE_IMAGE:+--image "$KIND_NODE_IMAGE"}
  CREATED=1
fi
kubectl config use-context "kind-$CLUSTER"
kind load docker-image "$IMAGE" --name "$CLUSTER"

step "install the chart (docs/getting-started/cluster-admin.md)"
helm upgrade --install dbguard charts/dbguard --namespace dbguard-system --create-namespace --wait
kubectl -n dbguard-system rollout status deployment/dbguard-operator --timeout=180s
kubectl get crd databasepolicies.dbguard.io maskingrules.dbguard.io approvalrequests.dbguard.io

step "operator: one leader, webhook caBundle filled"
leader_elected() {
  kubectl -n "$OPERATOR_NS" get lease dbguard-operator-leader -o jsonpath='{.spec.holderIdentity}' | grep -q .
}
ca_bundle_filled() {
  kubectl get mutatingwebhookconfiguration dbguard-sidecar-injector \
    -o jsonpath='{.webhooks[0].clientConfig.caBundle}' | grep -q .
}
retry 30 leader_elected || fail "no replica holds the Lease dbguard-operator-leader"
retry 30 ca_bundle_filled || fail "the operator did not fill the injector's caBundle"

step "examples: server-side dry run of the policies and of dbguard inject output"
for ns in shop analytics; do
  kubectl create namespace "$ns" --dry-run=client -o yaml | kubectl apply -f -
done
kubectl apply --dry-run=server -f examples/policies/
node dist/cli/main.js inject -f examples/app/checkout.yaml --policy-file examples/policies/card-number-masking.yaml |
  kubectl apply --dry-run=server -f -

step "PostgreSQL"
kubectl apply -f hack/e2e-postgres.yaml
kubectl -n "$NS" rollout status deployment/orders-db --timeout=180s

step "policy"
kubectl apply -f hack/e2e-policy.yaml
kubectl -n "$NS" wait databasepolicy/orders --for=condition=Ready --timeout=60s
kubectl -n "$NS" get databasepolicy orders -o jsonpath='{.status.maskingRules}' | grep -qx 1 ||
  fail "the MaskingRule is not bound to the policy"

step "labelled app"
kubectl apply -f hack/e2e-app.yaml
kubectl -n "$NS" rollout status deployment/e2e-app --timeout=180s
POD="$(kubectl -n "$NS" get pod -l app=e2e-app -o jsonpath='{.items[0].metadata.name}')"
[ "$(kubectl -n "$NS" get pod "$POD" -o jsonpath='{.metadata.annotations.dbguard\.io/status}')" = injected ] ||
  fail "pod $POD was not injected"
kubectl -n "$NS" get pod "$POD" -o jsonpath='{.spec.initContainers[*].name} {.spec.containers[*].name}' |
  grep -qw dbguard-proxy || fail "no dbguard-proxy container in $POD"
# the app holds no database password: only the sidecar mounts the credentials Secret
if kubectl -n "$NS" get pod "$POD" -o jsonpath='{.spec.containers[?(@.name=="app")].volumeMounts[*].name}' |
  grep -qw dbguard-credentials; then
  fail "the app container mounts the database credentials"
fi

step "masking"
retry 15 sql "SELECT 1" >/dev/null || fail "cannot reach the database through the sidecar"
got="$(sql "SELECT card_number FROM customers WHERE id = 1")"
[ "$got" = "************1111" ] || fail "masking: expected ************1111, got '$got'"
# a predicate on the masked column sees the masked value too: no inference of the real number
got="$(sql "SELECT count(*) FROM customers WHERE card_number = '4111111111111111'")"
[ "$got" = 0 ] || fail "masking: a predicate saw the real card number (count $got)"

step "blocking"
if out="$(sql "DROP TABLE customers" 2>&1)"; then fail "DROP TABLE ran: $out"; fi
grep -q "rule no-drops" <<<"$out" || fail "blocking: unexpected error: $out"
[ "$(sql "SELECT count(*) FROM customers")" = 2 ] || fail "blocking: the table changed"

step "approval (Reject mode: the first attempt fails and opens a request)"
if out="$(sql "DELETE FROM orders WHERE status = 'stale'" 2>&1)"; then
  fail "the DELETE ran without an approval: $out"
fi
grep -qi "approv" <<<"$out" || fail "approval: unexpected error: $out"
AR=""
for _ in $(seq 1 30); do
  AR="$(kubectl -n "$NS" get approvalrequests -o jsonpath='{.items[?(@.spec.rule=="delete-orders")].metadata.name}' | awk '{print $1}')"
  [ -n "$AR" ] && break
  sleep 2
done
[ -n "$AR" ] || fail "approval: no ApprovalRequest for rule delete-orders"
kubectl -n "$NS" get approvalrequest "$AR" -o jsonpath='{.spec.statement}{"\n"}'
# the cluster admin approves (any identity but the requester's ServiceAccount may, with RBAC on approvalrequests)
kubectl -n "$NS" patch approvalrequest "$AR" --type merge -p '{"spec":{"decision":"Approved","reason":"kind-e2e"}}'
kubectl -n "$NS" wait approvalrequest "$AR" --for=jsonpath='{.status.phase}'=Approved --timeout=60s
kubectl -n "$NS" get approvalrequest "$AR" -o jsonpath='{.status.decidedBy}' | grep -q . ||
  fail "approval: decidedBy was not recorded"
retry 10 sql "DELETE FROM orders WHERE status = 'stale'" >/dev/null || fail "approval: the approved DELETE did not run"
[ "$(sql "SELECT count(*) FROM orders")" = 1 ] || fail "approval: expected 1 order left"

step "audit and metrics"
audit="$(kubectl -n "$NS" logs "$POD" -c dbguard-proxy)"
grep -q '"decision":"deny"' <<<"$audit" || fail "audit: no deny event"
grep -q '"decision":"mask"' <<<"$audit" || fail "audit: no mask event"
if grep -q '4111111111111111' <<<"$audit"; then fail "audit: a literal value reached the log"; fi
metrics="$(kubectl get --raw "/api/v1/namespaces/$NS/pods/$POD:9090/proxy/metrics")"
grep -q 'dbguard_denied_queries_total{.*rule="no-drops"' <<<"$metrics" || fail "metrics: no denied count for no-drops"
grep -q '^dbguard_policy_info{' <<<"$metrics" || fail "metrics: no dbguard_policy_info"

step "ok: masking, blocking and approval work on a real cluster"
