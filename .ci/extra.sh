#!/usr/bin/env bash
# Chaos, crash-loop, many-workers and inbound-storm suites, then a short fuzz run.
#
#   bash .ci/extra.sh        (from .ci/run, after the main tests; CI=true, PostgreSQL up,
#                             IDEM_TEST_DATABASE_URL set)
#
# 1. The suites of the idem-tests package (tests/tests/*.rs) already run once, with their
#    default seeds, inside `cargo test --workspace`. Here they run again with a second fixed
#    seed set (more schedules, other kill points; printed, so any failure can be repeated) and
#    with --nocapture, so their figures appear in the CI log:
#      sim/             the deterministic simulator: 100,000 operations, second seed (issue 13)
#      chaos.rs         600 fault schedules over the Stripe and Twilio adapters (fault proxy)
#      crash_loop.rs    a worker SIGKILLed 120 times over a shared SQLite ledger
#      many_workers.rs  8 worker processes racing over 1,000 jobs on PostgreSQL
#      inbound_storm.rs 500 concurrent duplicate POSTs against the example server on PostgreSQL
#    Any failure fails the script.
# 2. Fuzzing (core/fuzz, cargo-fuzz, nightly): each target runs for IDEM_FUZZ_SECONDS (default
#    60). When the nightly toolchain is missing, or cargo-fuzz cannot be installed or the targets
#    built within their time bounds, one line `fuzz step skipped: <reason>` is printed and the
#    script goes on. A crash found by the fuzzer fails the script (its input is printed).
#
# Knobs: IDEM_EXTRA_SEED (second seed set, default 0x5eed0002), IDEM_FUZZ_SECONDS,
# IDEM_FUZZ_INSTALL_TIMEOUT (s, default 600), IDEM_FUZZ_BUILD_TIMEOUT (s, default 900),
# IDEM_SKIP_FUZZ=1, IDEM_SKIP_SUITES=1.

set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 2
ROOT=$PWD

export RUSTUP_AUTO_INSTALL=0   # never install or update a toolchain
export RUST_BACKTRACE=0 CARGO_TERM_COLOR=never
SEED=${IDEM_EXTRA_SEED:-0x5eed0002}
FUZZ_SECONDS=${IDEM_FUZZ_SECONDS:-60}
INSTALL_TIMEOUT=${IDEM_FUZZ_INSTALL_TIMEOUT:-600}
BUILD_TIMEOUT=${IDEM_FUZZ_BUILD_TIMEOUT:-900}
FUZZ_TARGETS=(key_parse inbound_headers)
LOGS=$(mktemp -d)
trap 'rm -rf "$LOGS"' EXIT

failures=0
t0=$SECONDS
say() { echo "extra.sh: $*"; }
fail() { echo "extra.sh: FAIL: $*"; failures=$((failures + 1)); }
ok() { echo "extra.sh: ok: $* ($((SECONDS - t0))s)"; }

# --- 1. suites ---------------------------------------------------------------------------------

suite() {
    local name=$1
    shift
    local t=$SECONDS
    say "suite $name${*:+ ($*)}"
    if env "$@" cargo test -q -p idem-tests --test "$name" -- --nocapture >"$LOGS/$name" 2>&1; then
        grep -E '^\.*(seed:|simulation:|  [^ ].* [0-9]+$|stripe chaos:|twilio chaos:|crash loop:|many workers:|worker [0-9]+:|orders:|deployments:|test result:)' \
            "$LOGS/$name" | sed 's/^/    | /'
        ok "suite $name in $((SECONDS - t))s"
    else
        grep -vE '^\s+[0-9]+: |^\s+at ' "$LOGS/$name" | tail -n 60 | sed 's/^/    | /'
        fail "suite $name (repeat: $* cargo test -p idem-tests --test $name)"
    fi
}

if [[ ${IDEM_SKIP_SUITES:-0} != 1 ]]; then
    say "building the idem-tests suites"
    if cargo test -q -p idem-tests --no-run >"$LOGS/build" 2>&1; then
        ok "built"
        suite sim IDEM_SIM_SEED="$SEED" IDEM_SIM_OPS=100000
        suite chaos IDEM_CHAOS_SEED="$SEED"
        suite crash_loop IDEM_CRASH_SEED="$SEED"
        suite many_workers
        suite inbound_storm
    else
        tail -n 40 "$LOGS/build" | sed 's/^/    | /'
        fail "the idem-tests suites do not build"
    fi
fi

# --- 2. fuzzing --------------------------------------------------------------------------------

skip() { echo "fuzz step skipped: $*"; }
FUZZ_CACHE=${IDEM_FUZZ_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/idem-fuzz}
mkdir -p "$FUZZ_CACHE"

fuzz_step() {
    if [[ ${IDEM_SKIP_FUZZ:-0} == 1 ]]; then
        skip "IDEM_SKIP_FUZZ=1"; return
    fi
    if ! command -v rustup >/dev/null || ! rustup toolchain list 2>/dev/null | grep -q '^nightly-'; then
        skip "no \`nightly\` toolchain installed (cargo-fuzz needs one; RUSTUP_AUTO_INSTALL=0: not installing it)"
        return
    fi
    if ! cargo fuzz --version >/dev/null 2>&1; then
        say "installing cargo-fuzz (bounded to ${INSTALL_TIMEOUT}s)"
        if ! timeout "$INSTALL_TIMEOUT" cargo install cargo-fuzz --locked >"$LOGS/install" 2>&1; then
            skip "could not install cargo-fuzz within ${INSTALL_TIMEOUT}s ($(tail -n 1 "$LOGS/install"))"
            return
        fi
    fi
    say "$(cargo fuzz --version), $(rustc +nightly -V)"
    # No sanitizer: idem forbids unsafe code; the targets look for panics and broken
    # round trips. Build once, bounded; the fuzz workspace has its own target dir.
    # The build output lives outside the clone (IDEM_FUZZ_CACHE), so CI runs in fresh clones on
    # the same machine reuse the dependencies; idem's own crates are always rebuilt.
    (cd core && timeout "$BUILD_TIMEOUT" cargo +nightly fuzz build -s none --target-dir "$FUZZ_CACHE") \
        >"$LOGS/fuzz-build" 2>&1
    local rc=$?
    if [[ $rc -eq 124 ]]; then
        skip "building the fuzz targets took over ${BUILD_TIMEOUT}s"; return
    elif [[ $rc -ne 0 ]]; then
        if grep -q 'could not compile `idem' "$LOGS/fuzz-build"; then
            grep -E -A8 '^error' "$LOGS/fuzz-build" | head -40 | sed 's/^/    | /'
            fail "the fuzz targets do not compile"; return
        fi
        skip "cargo fuzz build failed outside idem's code ($(grep -m1 '^error' "$LOGS/fuzz-build"))"; return
    fi
    ok "fuzz targets built"
    local target corpus
    for target in "${FUZZ_TARGETS[@]}"; do
        corpus=core/fuzz/corpus/$target
        mkdir -p "$corpus"
        cp core/fuzz/seeds/"$target"/* "$corpus"/ 2>/dev/null || true
        (cd core && timeout $((FUZZ_SECONDS + 300)) cargo +nightly fuzz run -s none --target-dir "$FUZZ_CACHE" "$target" \
            "fuzz/corpus/$target" -- -max_total_time="$FUZZ_SECONDS" -seed=1 -print_final_stats=1) \
            >"$LOGS/fuzz-$target" 2>&1
        rc=$?
        if [[ $rc -eq 0 ]]; then
            ok "fuzz $target: $(grep -m1 -E '^Done [0-9]+ runs' "$LOGS/fuzz-$target" || echo 'no summary') \
corpus $(ls "$corpus" | wc -l) inputs"
        else
            grep -E -B2 -A20 'panicked|ERROR|Test unit written|SUMMARY' "$LOGS/fuzz-$target" | head -60 | sed 's/^/    | /'
            fail "fuzz $target found a failing input (exit $rc; the input is under core/fuzz/artifacts/$target/)"
        fi
    done
}
fuzz_step

if [[ $failures -ne 0 ]]; then
    say "$failures check(s) failed ($((SECONDS - t0))s)"
    exit 1
fi
say "all checks passed ($((SECONDS - t0))s)"
