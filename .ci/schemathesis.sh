#!/usr/bin/env bash
# The example inbound server's OpenAPI document as a contract: Schemathesis
# (from PyPI) runs every check with its examples, coverage, fuzzing and
# stateful phases against the running server, once on SQLite and once on
# PostgreSQL (IDEM_TEST_DATABASE_URL; required when CI is set). Prints each
# run's case count and fails on any failure. Bounded to about 5 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."

ST_VERSION="4.32.5"
MAX_EXAMPLES="${SCHEMATHESIS_MAX_EXAMPLES:-100}"
RUN_TIMEOUT="${SCHEMATHESIS_RUN_TIMEOUT:-120}"

# --- Schemathesis, in its own virtualenv (kept between runs) ----------------
venv="${XDG_CACHE_HOME:-$HOME/.cache}/idem-schemathesis-$ST_VERSION"
if [ ! -x "$venv/bin/st" ]; then
  echo "installing schemathesis $ST_VERSION from PyPI"
  rm -rf "$venv"
  python3 -m venv "$venv"
  timeout 240 "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$ST_VERSION"
fi
"$venv/bin/st" --version

# --- the server -------------------------------------------------------------
timeout 600 cargo build --quiet -p idem-examples --bin inbound_server
target_dir="${CARGO_TARGET_DIR:-target}"
server="$target_dir/debug/inbound_server"

work=$(mktemp -d)
pids=()
pg_db=""
cleanup() {
  for pid in "${pids[@]}"; do
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  if [ -n "$pg_db" ]; then
    psql -q "$IDEM_TEST_DATABASE_URL" -c "DROP DATABASE IF EXISTS \"$pg_db\" WITH (FORCE)" >/dev/null 2>&1 || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

# Starts the server on a free loopback port (it binds port 0 and prints the
# address); sets $addr.
start_server() {
  local log="$1"
  shift
  # The log exists before the server starts: the background job opens its
  # redirect in the child, so without this the first read below can race it
  # (and, under set -e with pipefail, a failed read ends the whole script).
  : >"$log"
  env "$@" "$server" --addr 127.0.0.1:0 >"$log" 2>&1 &
  pids+=("$!")
  addr=""
  for _ in $(seq 1 100); do
    addr=$(sed -n 's|^listening on http://||p' "$log" | head -n 1) || addr=""
    [ -n "$addr" ] && return 0
    if ! kill -0 "${pids[-1]}" 2>/dev/null; then break; fi
    sleep 0.1
  done
  echo "inbound_server did not start:" >&2
  cat "$log" >&2
  return 1
}

failed=0
total_cases=0
run_store() {
  local store="$1"
  shift
  local log="$work/server-$store.log" out="$work/st-$store.log"
  start_server "$log" "$@"
  echo "--- schemathesis against the example server on $store (http://$addr)"
  local rc=0
  timeout "$RUN_TIMEOUT" "$venv/bin/st" run "http://$addr/openapi.json" \
    --url "http://$addr" \
    --checks all \
    --phases examples,coverage,fuzzing,stateful \
    --max-examples "$MAX_EXAMPLES" \
    --continue-on-failure \
    --header "Authorization: Bearer schemathesis" \
    --no-color >"$out" 2>&1 || rc=$?
  # The summary: phases, failures, case count and seed.
  sed -n '/^=* SUMMARY =*$/,$p' "$out"
  local cases
  cases=$(sed -n 's/^ *\([0-9][0-9]*\) generated.*/\1/p' "$out" | tail -n 1)
  local failures
  failures=$(sed -n 's/.* found \([0-9][0-9]*\) unique failure.*/\1/p' "$out" | tail -n 1)
  if [ "$rc" -ne 0 ] || [ -z "$cases" ]; then
    echo "schemathesis on $store: exit $rc; the full output:"
    cat "$out"
    failed=1
  fi
  echo "schemathesis $store: ${cases:-0} cases, ${failures:-0} failures (exit $rc)"
  total_cases=$(( total_cases + ${cases:-0} ))
  kill "${pids[-1]}" 2>/dev/null || true
  wait "${pids[-1]}" 2>/dev/null || true
}

run_store sqlite INBOUND_SQLITE="$work/inbound.db" DATABASE_URL=

if [ -n "${IDEM_TEST_DATABASE_URL:-}" ]; then
  pg_db="idem_test_schemathesis_$$"
  psql -q "$IDEM_TEST_DATABASE_URL" -c "CREATE DATABASE \"$pg_db\""
  run_store postgres DATABASE_URL="${IDEM_TEST_DATABASE_URL%/*}/$pg_db"
elif [ -n "${CI:-}" ]; then
  echo "IDEM_TEST_DATABASE_URL is not set; CI must run the PostgreSQL pass" >&2
  exit 1
else
  echo "SKIPPED: schemathesis on PostgreSQL (IDEM_TEST_DATABASE_URL is not set; CI sets it)"
fi

echo "schemathesis: $total_cases cases in all"
if [ "$failed" -ne 0 ]; then
  echo "schemathesis: FAILED" >&2
  exit 1
fi
echo "schemathesis: 0 failures"
