#!/usr/bin/env bash
# Enforces idem's rule 5: worker code reaches an external service only through an adapter.
#
#   bash .ci/lint.sh            (from the repository root; CI sets CI=true)
#
# 1. Stable gates, always run; any misbehaviour fails the script:
#    - dependency-graph gate (.ci/dep_gate.py) over the workspace;
#    - both gates on the fixtures in examples/ci_lint: `worker-direct` (calls reqwest itself) must
#      be rejected with a message naming the adapter, `worker-adapter` must pass, and every
#      `disallowed-methods`/`disallowed-types` entry of clippy.toml must fire on `worker-direct`.
# 2. The dylint step (lint/, pinned nightly), run only when the nightly components and the
#    dylint tools can be had within a bounded time; otherwise one line
#    `dylint step skipped: <reason>` and the script goes on. When it runs: the lint's unit and ui
#    tests, `cargo dylint --all --workspace`, and the two fixtures again.
#
# Build output goes to a cache outside the clone (IDEM_LINT_CACHE, default ~/.cache/idem-lint), so
# CI runs in fresh clones on the same machine stay warm. Safe to share: the crates under check are
# path packages of the fresh clone and are always re-checked; only dependencies are reused.
#
# Knobs (environment): IDEM_LINT_INSTALL_TIMEOUT (s, default 600) bounds installing
# cargo-dylint/dylint-link; IDEM_LINT_STEP_TIMEOUT (s, default 900) bounds each dylint build/check;
# IDEM_LINT_DYLINT_BUDGET (s, default 1200) bounds the whole dylint step (a step that would start
# with less than a minute left is skipped with the one-line message);
# IDEM_LINT_SKIP_DYLINT=1 skips the dylint step on purpose.

set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 2
ROOT=$PWD

export RUSTUP_AUTO_INSTALL=0   # never let a rust-toolchain.toml replace the machine's toolchains
export RUST_BACKTRACE=0 CARGO_TERM_COLOR=never
FIXTURES=$ROOT/examples/ci_lint
CACHE=${IDEM_LINT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/idem-lint}
FIXTURE_TARGET=$CACHE/fixtures     # stable clippy runs on the fixtures
LINT_TARGET=$CACHE/lint            # lint/ workspace: unit and ui tests
WS_TARGET=$CACHE/workspace         # every cargo dylint run (nightly checks + the lint library)
mkdir -p "$CACHE" || exit 2
INSTALL_TIMEOUT=${IDEM_LINT_INSTALL_TIMEOUT:-600}
STEP_TIMEOUT=${IDEM_LINT_STEP_TIMEOUT:-900}
DYLINT_BUDGET=${IDEM_LINT_DYLINT_BUDGET:-1200}
DYLINT_VERSION=6.3.2
LOGS=$(mktemp -d)
trap 'rm -rf "$LOGS"' EXIT

failures=0
t0=$SECONDS
say() { echo "lint.sh: $*"; }
fail() { echo "lint.sh: FAIL: $*"; failures=$((failures + 1)); }
ok() { echo "lint.sh: ok: $* ($((SECONDS - t0))s)"; }
show() { sed 's/^/    | /' "$1" | head -n "${2:-40}"; }

# --- 1. stable gates ------------------------------------------------------------------------

# No exemptions: every workspace member other than core and the adapters is checked. To let a
# member through, add --exempt "pkg=reason" here (printed on every run) and say why in review.
GATE_EXEMPT=()

say "dependency gate: workspace"
if python3 .ci/dep_gate.py ${GATE_EXEMPT[@]+"${GATE_EXEMPT[@]}"} >"$LOGS/dep-ws" 2>&1; then
    show "$LOGS/dep-ws"; ok "dependency gate: workspace"
else
    show "$LOGS/dep-ws"; fail "dependency gate: the workspace has a crate that reaches reqwest outside the adapters"
fi

say "dependency gate: fixtures"
python3 .ci/dep_gate.py --manifest-path "$FIXTURES/worker-direct/Cargo.toml" >"$LOGS/dep-direct" 2>&1
rc=$?
if [[ $rc -eq 1 ]] && grep -q 'worker-direct.*reqwest.*idem-stripe' "$LOGS/dep-direct"; then
    ok "dependency gate rejects worker-direct and names the adapter"
else
    show "$LOGS/dep-direct"; fail "dependency gate did not reject worker-direct as expected (exit $rc)"
fi
if python3 .ci/dep_gate.py --manifest-path "$FIXTURES/worker-adapter/Cargo.toml" >"$LOGS/dep-adapter" 2>&1; then
    ok "dependency gate accepts worker-adapter"
else
    show "$LOGS/dep-adapter"; fail "dependency gate rejected worker-adapter"
fi

say "lint decision logic: unit tests on stable (lint/policy)"
if CARGO_TARGET_DIR=$FIXTURE_TARGET cargo +stable test --quiet \
    --manifest-path lint/Cargo.toml -p idem_lint_policy >"$LOGS/policy" 2>&1; then
    ok "idem_lint_policy tests on stable: $(grep -o '[0-9]* passed' "$LOGS/policy" | awk '{n += $1} END {print n}') passed"
else
    show "$LOGS/policy" 40; fail "idem_lint_policy unit tests failed on stable"
fi

say "clippy gate: fixtures (disallowed-methods/-types from clippy.toml)"
(cd "$FIXTURES/worker-direct" && CARGO_TARGET_DIR=$FIXTURE_TARGET \
    cargo clippy --quiet -- -D warnings) >"$LOGS/clippy-direct" 2>&1
rc=$?
if [[ $rc -ne 0 ]] && python3 - "$ROOT/clippy.toml" "$LOGS/clippy-direct" <<'PY'
import re, sys, tomllib
conf = tomllib.load(open(sys.argv[1], "rb"))
log = open(sys.argv[2]).read()
fired = set(re.findall(r"use of a disallowed (?:method|type) `([^`]+)`", log))
problems = []
for key in ("disallowed-methods", "disallowed-types"):
    for entry in conf[key]:
        if "idem-stripe" not in entry.get("reason", ""):
            problems.append(f"{entry['path']}: reason does not name the adapters")
        if not entry.get("allow-invalid") and entry["path"] not in fired:
            problems.append(f"{entry['path']}: did not fire on worker-direct")
for must in ("reqwest::Client::post", "reqwest::RequestBuilder::send", "reqwest::Client::new"):
    if must not in fired:
        problems.append(f"{must}: not reported at the fixture's direct call")
if "does not refer to" in log or "expected a function" in log:
    problems.append("clippy warned about an entry that does not resolve")
if "idem-stripe" not in log:
    problems.append("the diagnostics do not name the adapter")
for p in problems:
    print(f"    | {p}")
sys.exit(1 if problems else 0)
PY
then
    ok "clippy gate rejects worker-direct: $(grep -c '^error: use of a disallowed' "$LOGS/clippy-direct") diagnostics, every entry fired, adapter named"
else
    show "$LOGS/clippy-direct" 60; fail "clippy gate did not reject worker-direct as expected (exit $rc)"
fi
(cd "$FIXTURES/worker-adapter" && CARGO_TARGET_DIR=$FIXTURE_TARGET \
    cargo clippy --quiet -- -D warnings) >"$LOGS/clippy-adapter" 2>&1
rc=$?
if [[ $rc -eq 0 ]]; then
    ok "clippy gate accepts worker-adapter"
else
    show "$LOGS/clippy-adapter" 60; fail "clippy gate rejected worker-adapter (exit $rc)"
fi

# --- 2. dylint step ---------------------------------------------------------------------------

skip() { echo "dylint step skipped: $*"; }

# Seconds left of the dylint step's overall budget, and a per-step bound within it.
dylint_t0=$SECONDS
left() { echo $((DYLINT_BUDGET - (SECONDS - dylint_t0))); }
bound() { local l; l=$(left); if ((l < $1)); then echo "$l"; else echo "$1"; fi; }
# Skips the rest of the dylint step (returns 1) when under a minute of budget is left.
budget_for() {
    if (($(left) < 60)); then
        skip "its ${DYLINT_BUDGET}s budget ran out before $1 (IDEM_LINT_DYLINT_BUDGET)"
        return 1
    fi
}

dylint_step() {
    dylint_t0=$SECONDS
    if [[ ${IDEM_LINT_SKIP_DYLINT:-0} == 1 ]]; then
        skip "IDEM_LINT_SKIP_DYLINT=1"; return
    fi
    if ! command -v rustup >/dev/null; then
        skip "rustup not found"; return
    fi
    if ! rustup toolchain list 2>/dev/null | grep -q '^nightly-'; then
        skip "no \`nightly\` toolchain installed (RUSTUP_AUTO_INSTALL=0: not installing one)"; return
    fi
    local installed
    installed=$(rustup component list --toolchain nightly --installed 2>/dev/null)
    if ! grep -q '^rustc-dev' <<<"$installed" || ! grep -q '^llvm-tools' <<<"$installed"; then
        say "adding rustc-dev and llvm-tools-preview to nightly"
        if ! timeout 180 rustup component add rustc-dev llvm-tools-preview --toolchain nightly \
            >"$LOGS/components" 2>&1; then
            skip "could not add rustc-dev/llvm-tools-preview to nightly within 180s ($(tail -n 1 "$LOGS/components"))"
            return
        fi
    fi
    if ! cargo dylint --version 2>/dev/null | grep -q " $DYLINT_VERSION\$" \
        || ! command -v dylint-link >/dev/null; then
        budget_for "installing cargo-dylint" || return
        local install_timeout
        install_timeout=$(bound "$INSTALL_TIMEOUT")
        say "installing cargo-dylint and dylint-link $DYLINT_VERSION (bounded to ${install_timeout}s)"
        if ! timeout "$install_timeout" cargo +nightly install --locked \
            "cargo-dylint@$DYLINT_VERSION" "dylint-link@$DYLINT_VERSION" >"$LOGS/install" 2>&1; then
            skip "could not install cargo-dylint/dylint-link $DYLINT_VERSION within ${install_timeout}s ($(tail -n 1 "$LOGS/install"))"
            return
        fi
    fi
    local nightly
    nightly=$(rustc +nightly -V 2>/dev/null)
    say "dylint tools ready: $(cargo dylint --version), $nightly"

    # Unit tests of the decision logic and the ui tests (they set DYLINT_TOML: one thread).
    budget_for "the lint's tests" || return
    (cd lint && CARGO_TARGET_DIR=$LINT_TARGET timeout "$(bound "$STEP_TIMEOUT")" \
        cargo test --workspace -- --test-threads=1) >"$LOGS/ui" 2>&1
    local rc=$?
    if [[ $rc -eq 124 ]]; then
        skip "building and running the lint's tests ran out of time (step bound ${STEP_TIMEOUT}s, budget ${DYLINT_BUDGET}s)"; return
    elif [[ $rc -ne 0 ]]; then
        if grep -q 'could not compile `dylint' "$LOGS/ui" || grep -q 'failed to build driver\|Could not build driver' "$LOGS/ui"; then
            skip "dylint ${DYLINT_VERSION} does not build with $nightly ($(grep -m1 '^error' "$LOGS/ui"))"; return
        fi
        grep -E '^(test |error|---- )|panicked' "$LOGS/ui" | head -40 | sed 's/^/    | /'
        fail "idem_lint unit/ui tests failed (exit $rc)"; return
    fi
    ok "idem_lint unit and ui tests: $(grep -c '^test .* ok$' "$LOGS/ui") passed"

    # The project's own crates.
    budget_for "cargo dylint --all --workspace" || return
    CARGO_TARGET_DIR=$WS_TARGET timeout "$(bound "$STEP_TIMEOUT")" cargo dylint --all --workspace >"$LOGS/ws" 2>&1
    rc=$?
    if [[ $rc -eq 124 ]]; then
        skip "cargo dylint --all --workspace ran out of time (step bound ${STEP_TIMEOUT}s, budget ${DYLINT_BUDGET}s)"; return
    elif [[ $rc -ne 0 ]]; then
        grep -E -A8 '^error' "$LOGS/ws" | head -60 | sed 's/^/    | /'
        fail "cargo dylint --all --workspace (exit $rc)"
    else
        ok "cargo dylint --all --workspace"
    fi

    # The fixtures, with the library just built for the workspace.
    local lib
    lib=$(ls -t "$WS_TARGET"/dylint/libraries/*/release/libidem_lint@*.so 2>/dev/null | head -n 1)
    if [[ -z $lib ]]; then
        fail "cannot find the idem_lint library cargo dylint built under $WS_TARGET/dylint"; return
    fi
    budget_for "the dylint fixture checks" || return
    CARGO_TARGET_DIR=$WS_TARGET timeout "$(bound "$STEP_TIMEOUT")" cargo dylint --lib-path "$lib" \
        --manifest-path "$FIXTURES/worker-direct/Cargo.toml" >"$LOGS/dy-direct" 2>&1
    rc=$?
    if [[ $rc -eq 124 ]]; then
        skip "checking the worker-direct fixture ran out of time (budget ${DYLINT_BUDGET}s)"; return
    elif [[ $rc -ne 0 ]] \
        && grep -q '^error: direct HTTP call `reqwest::Client::post` outside an idem adapter: Stripe writes go through `idem-stripe`' "$LOGS/dy-direct" \
        && grep -q 'http_call_outside_adapter' "$LOGS/dy-direct"; then
        ok "dylint rejects worker-direct: $(grep -c '^error: direct HTTP call' "$LOGS/dy-direct") diagnostics, adapter named"
    else
        grep -E -A8 '^error' "$LOGS/dy-direct" | head -40 | sed 's/^/    | /'
        fail "dylint did not reject worker-direct as expected (exit $rc)"
    fi
    budget_for "the worker-adapter fixture" || return
    CARGO_TARGET_DIR=$WS_TARGET timeout "$(bound "$STEP_TIMEOUT")" cargo dylint --lib-path "$lib" \
        --manifest-path "$FIXTURES/worker-adapter/Cargo.toml" >"$LOGS/dy-adapter" 2>&1
    rc=$?
    if [[ $rc -eq 124 ]]; then
        skip "checking the worker-adapter fixture ran out of time (budget ${DYLINT_BUDGET}s)"; return
    elif [[ $rc -eq 0 ]]; then
        ok "dylint accepts worker-adapter"
    else
        grep -E -A8 '^error' "$LOGS/dy-adapter" | head -40 | sed 's/^/    | /'
        fail "dylint rejected worker-adapter (exit $rc)"
    fi
}
dylint_step

if [[ $failures -ne 0 ]]; then
    say "$failures check(s) failed ($((SECONDS - t0))s)"
    exit 1
fi
say "all checks passed ($((SECONDS - t0))s)"
