#!/usr/bin/env bash
# End-to-end test of an installed jobsched release (`make kind-up image kind-load helm-install`,
# then `make e2e`). Needs kubectl, curl and the API reachable through the ingress.
#
#   1. the API, worker and controller Deployments are rolled out, the CRD is established;
#   2. a SchedulerConfig (policy priority) is applied and reported Ready by the controller;
#   3. the API answers through the ingress and reports that policy as managed by Kubernetes;
#   4. a job submitted through the ingress reaches COMPLETED.
# The release's SchedulerConfig is put back as it was on exit.
#
# Environment (defaults in brackets): K8S_NAMESPACE [jobsched], HELM_RELEASE [jobsched],
# E2E_HOST [jobsched.localhost], E2E_INGRESS_ADDR [127.0.0.1], E2E_INGRESS_PORT [80],
# E2E_TIMEOUT seconds per wait [180], E2E_TOKEN (bearer token; read from the release's auth
# Secret when it exists).
set -euo pipefail

NS=${K8S_NAMESPACE:-jobsched}
RELEASE=${HELM_RELEASE:-jobsched}
case "$RELEASE" in
  *jobsched*) FULLNAME=${JOBSCHED_FULLNAME:-$RELEASE} ;;
  *) FULLNAME=${JOBSCHED_FULLNAME:-$RELEASE-jobsched} ;;
esac
HOST=${E2E_HOST:-jobsched.localhost}
ADDR=${E2E_INGRESS_ADDR:-127.0.0.1}
PORT=${E2E_INGRESS_PORT:-80}
TIMEOUT=${E2E_TIMEOUT:-180}
BASE="http://$HOST:$PORT"
K=(kubectl -n "$NS")

step() { printf '\n== %s\n' "$*"; }
die() { printf 'e2e FAILED: %s\n' "$*" >&2; exit 1; }

for tool in kubectl curl; do
  command -v "$tool" >/dev/null || die "$tool is not installed"
done

TOKEN=${E2E_TOKEN:-}
if [ -z "$TOKEN" ] && "${K[@]}" get secret "$FULLNAME-auth" >/dev/null 2>&1; then
  TOKEN=$("${K[@]}" get secret "$FULLNAME-auth" -o jsonpath='{.data.api-token}' | base64 -d)
fi
api() { # api METHOD PATH [JSON]
  local args=(-sS --fail-with-body --max-time 10 --resolve "$HOST:$PORT:$ADDR" -X "$1" "$BASE$2")
  [ -n "$TOKEN" ] && args+=(-H "Authorization: Bearer $TOKEN")
  [ $# -ge 3 ] && args+=(-H 'Content-Type: application/json' -d "$3")
  curl "${args[@]}"
}
# wait_for DESCRIPTION COMMAND...: retry COMMAND every 2 s until it succeeds or TIMEOUT passes.
wait_for() {
  local what=$1; shift
  local deadline=$((SECONDS + TIMEOUT))
  until "$@"; do
    [ "$SECONDS" -lt "$deadline" ] || die "timed out after ${TIMEOUT}s waiting for $what"
    sleep 2
  done
}

step "release $RELEASE (objects $FULLNAME-*) in namespace $NS is rolled out"
for d in api worker controller; do
  "${K[@]}" rollout status "deployment/$FULLNAME-$d" --timeout="${TIMEOUT}s"
done
kubectl wait crd/schedulerconfigs.jobsched.io --for=condition=Established --timeout="${TIMEOUT}s"

step "apply SchedulerConfig $FULLNAME with policy priority"
ORIGINAL=$("${K[@]}" get schedulerconfig "$FULLNAME" -o jsonpath='{.spec.policy} {.spec.roundRobin.quantumSeconds} {.spec.paused}' 2>/dev/null || true)
apply_config() { # apply_config POLICY QUANTUM PAUSED (roundRobin only with round_robin: CEL)
  local rr=""
  if [ "$1" = round_robin ]; then rr=$'\n  roundRobin:\n    quantumSeconds: '"$2"; fi
  "${K[@]}" apply -f - <<YAML
apiVersion: jobsched.io/v1alpha1
kind: SchedulerConfig
metadata:
  name: $FULLNAME
spec:
  policy: $1$rr
  paused: $3
YAML
}
restore() {
  if [ -n "$ORIGINAL" ]; then
    read -r p q z <<<"$ORIGINAL"
    echo "restoring SchedulerConfig $FULLNAME to policy=$p quantumSeconds=${q:-5} paused=${z:-false}"
    apply_config "$p" "${q:-5}" "${z:-false}" >/dev/null || true
  fi
}
trap restore EXIT
apply_config priority 1 false
GENERATION=$("${K[@]}" get schedulerconfig "$FULLNAME" -o jsonpath='{.metadata.generation}')

config_ready() {
  local got
  got=$("${K[@]}" get schedulerconfig "$FULLNAME" \
    -o jsonpath='{.status.conditions[?(@.type=="Ready")].status} {.status.observedGeneration}')
  read -r ready observed <<<"$got"
  [ "$ready" = True ] && { [ -z "${observed:-}" ] || [ "$observed" -ge "$GENERATION" ]; }
}
wait_for "SchedulerConfig $FULLNAME Ready (generation $GENERATION)" config_ready
"${K[@]}" get schedulerconfig "$FULLNAME" -o wide

step "API through the ingress at $BASE (resolved to $ADDR)"
healthy() { api GET /health | grep -q '"status":"healthy"'; }
wait_for "GET $BASE/health to report healthy" healthy
api GET /health; echo
policy_applied() { api GET /scheduler/status | grep -q '"current_policy":"priority"'; }
wait_for "the API to report current_policy priority" policy_applied
api GET /scheduler/status; echo

step "submit a job and wait for COMPLETED"
RESPONSE=$(api POST /jobs/ '{"name": "e2e sleep", "job_type": "sleep", "payload": {"duration": 1}, "priority": 1}')
echo "$RESPONSE"
JOB_ID=$(printf '%s' "$RESPONSE" | grep -o '"id":"[0-9a-f-]*"' | head -n 1 | cut -d'"' -f4)
[ -n "$JOB_ID" ] || die "no job id in the response"
completed() {
  local body status
  body=$(api GET "/jobs/$JOB_ID") || return 1
  status=$(printf '%s' "$body" | grep -o '"status":"[A-Z_]*"' | head -n 1 | cut -d'"' -f4)
  case "$status" in
    COMPLETED) return 0 ;;
    FAILED | CANCELLED) die "job $JOB_ID ended $status: $body" ;;
    *) return 1 ;;
  esac
}
wait_for "job $JOB_ID to complete" completed
api GET "/jobs/$JOB_ID"; echo

printf '\ne2e passed: SchedulerConfig Ready, API reachable through the ingress, job %s COMPLETED\n' "$JOB_ID"
