#!/usr/bin/env bash
# Schemathesis over docs/openapi.json against `jobsched dev` (SQLite, no services) and against
# `jobsched api` on Postgres + Redis (a fresh database and key prefix, removed afterwards).
#
# The checks are about responses: none is a server error (>= 500), and every status code,
# content type, header and body is one the document describes for that operation. Requests
# the document would not allow are sent too; the API may be more lenient than the document
# where the original FastAPI contract was (an empty `status=` filter means no filter, status
# names are case-insensitive), so accepting such a request is not a failure here.
#
#   tests/fuzz/run.sh                      # JOBSCHED_BIN (default target/debug/jobsched)
#   FUZZ_EXAMPLES=500 tests/fuzz/run.sh    # longer (make chaos)
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=${JOBSCHED_BIN:-target/debug/jobsched}
examples=${FUZZ_EXAMPLES:-40}
venv=.venv-fuzz
pg=${FUZZ_PG:-postgres://postgres@127.0.0.1:5432}
redis=${FUZZ_REDIS:-redis://127.0.0.1:6379}
checks=not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance

[ -x "$bin" ] || { echo "fuzz: $bin not built (cargo build -p jobsched, or set JOBSCHED_BIN)" >&2; exit 1; }
if [ ! -x "$venv/bin/st" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q 'schemathesis==4.32.5'
fi

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
pids=()
dbs=()
tmp=$(mktemp -d)
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  for d in "${dbs[@]}"; do dropdb --if-exists --force -h 127.0.0.1 -U postgres "$d" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT

wait_up() {
  for _ in $(seq 1 100); do
    curl -fsS "$1/livez" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "fuzz: $1 never answered /livez" >&2
  return 1
}

# A run that found no failure but stopped on an error of schemathesis itself (it has crashed
# inside its own schema walker, "SystemError: AST constructor recursion depth mismatch") is run
# once more; a failure of the API is never retried.
fuzz() { # name base-url
  local out="$tmp/st.out" attempt
  for attempt in 1 2; do
    echo "== schemathesis against $1 ($examples examples per operation, attempt $attempt)"
    if "$venv/bin/st" run docs/openapi.json --url "$2" --checks "$checks" \
        --max-examples "$examples" --workers 2 --max-response-time 10 --no-color 2>&1 | tee "$out"; then
      return 0
    fi
    if grep -q '^Failures:' "$out" || ! grep -q '^Errors:' "$out"; then
      return 1
    fi
    echo "fuzz: schemathesis stopped on an error of its own, not a failure of the API; running it again"
  done
  return 1
}

status=0

port=$(free_port)
RUST_LOG=error "$bin" dev --memory --listen "127.0.0.1:$port" --metrics-listen 127.0.0.1:0 \
  --data-dir "$tmp/dev" >"$tmp/dev.log" 2>&1 &
pids+=($!)
wait_up "http://127.0.0.1:$port"
fuzz "jobsched dev" "http://127.0.0.1:$port" || status=1

db="jobsched_fuzz_$(date +%s)_$$"
createdb -h 127.0.0.1 -U postgres "$db"
dbs+=("$db")
JOBSCHED_DATABASE_URL="$pg/$db" "$bin" migrate >/dev/null
port=$(free_port)
JOBSCHED_DATABASE_URL="$pg/$db" JOBSCHED_REDIS_URL="$redis" JOBSCHED_REDIS_PREFIX="$db" RUST_LOG=error \
  "$bin" api --listen "127.0.0.1:$port" --metrics-listen 127.0.0.1:0 --data-dir "$tmp/api" \
  >"$tmp/api.log" 2>&1 &
pids+=($!)
JOBSCHED_DATABASE_URL="$pg/$db" JOBSCHED_REDIS_URL="$redis" JOBSCHED_REDIS_PREFIX="$db" RUST_LOG=error \
  "$bin" worker --concurrency 2 --metrics-listen 127.0.0.1:0 --data-dir "$tmp/api" \
  >"$tmp/worker.log" 2>&1 &
pids+=($!)
wait_up "http://127.0.0.1:$port"
fuzz "jobsched api on Postgres" "http://127.0.0.1:$port" || status=1
redis-cli -u "$redis" --scan --pattern "$db*" | xargs -r redis-cli -u "$redis" del >/dev/null || true

exit $status
