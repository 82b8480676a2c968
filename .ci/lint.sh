#!/usr/bin/env bash
# Enforces idem's rule 5: worker code reaches an external service only through an adapter.
#
#   bash .ci/lint.sh            (from the repository root; CI sets CI=true)
#
# One deny list of HTTP clients and provider SDKs (dylint.toml, [idem_lint] deny) feeds three
# layers; this script proves each layer still fires on the fixtures in examples/ci_lint
# (FIXTURE_CASES below says which layer must reject or accept which fixture).
#
# 1. Stable gates, always run; any misbehaviour fails the script:
#    - the lists agree: .ci/dep_gate.py's built-in copy equals dylint.toml, and clippy.toml bans
#      only crates on the deny list; the adapters (packages with `[package.metadata.idem]
#      adapter = true`, no list) all live under adapters/;
#    - dependency-graph gate (.ci/dep_gate.py) over the workspace and every fixture, and its
#      self-test: adapters are found by `[package.metadata.idem] adapter = true`, and a crate
#      with a ban-lifting clippy.toml of its own that is not an adapter (or core) fails;
#    - the lint's decision logic (lint/policy) on stable;
#    - clippy with the root clippy.toml, all targets, on every fixture: each rejection must come
#      from disallowed-methods/-types naming the adapter, and every entry that must resolve
#      fires on `worker-direct`.
# 2. The dylint step (lint/, the machine's nightly), run only when the nightly components and
#    the dylint tools can be had within a bounded time; otherwise one line
#    `dylint step skipped: <reason>` and the script goes on. When it runs: the lint's unit and
#    ui tests, `cargo dylint --all --workspace -- --all-targets`, and every fixture, all targets.
#
# Build output goes to a cache outside the clone (IDEM_LINT_CACHE, default ~/.cache/idem-lint), so
# CI runs in fresh clones on the same machine stay warm. Safe to share: the crates under check are
# path packages of the fresh clone and are always re-checked; only dependencies are reused.
#
# Knobs (environment): IDEM_LINT_DYLINT_BUDGET (s, default 1500) bounds the whole dylint step,
# installing the tools included (a step that would start with less than a minute left is skipped
# with the one-line message); IDEM_LINT_INSTALL_TIMEOUT (s, default 1500, and never more than
# the budget left) bounds installing cargo-dylint/dylint-link: measured at 21m40s cold on this
# project's busy 2-core machine, so a cold machine spends most of the budget installing and
# skips the rest; IDEM_LINT_STEP_TIMEOUT (s, default 900) bounds each dylint build/check;
# IDEM_LINT_SKIP_DYLINT=1 skips the dylint step on purpose. With the rest of CI at about 20
# minutes, a cold run stays under 50 minutes.

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
INSTALL_TIMEOUT=${IDEM_LINT_INSTALL_TIMEOUT:-1500}
STEP_TIMEOUT=${IDEM_LINT_STEP_TIMEOUT:-900}
DYLINT_BUDGET=${IDEM_LINT_DYLINT_BUDGET:-1500}
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

# Fixtures (examples/ci_lint/*, none a workspace member) and what each layer must say about them:
# R = reject, A = accept, - = not asserted. Columns: dependency gate, clippy, dylint.
#   the dependency gate's extra arguments follow after `|`.
FIXTURE_CASES=(
    "worker-direct        R R R |"
    "worker-adapter       A A A |"
    "worker-ureq          R R R |"
    "worker-hyper-client  R R R |"
    "worker-stripe-sdk    R R R |"
    "worker-oneshot       R - R |"
    "worker-test-module   R R R |"
    "leaky-adapter        A A R | --allow leaky-adapter"
    "worker-wiring        A A A |"
)
# Patterns the rejecting layer's output must contain (a rejection for the wrong reason fails).
declare -A DEP_PATTERN=(
    [worker-direct]='`worker-direct` depends on `reqwest`.*idem-stripe'
    [worker-ureq]='`worker-ureq` depends on `ureq`'
    [worker-hyper-client]='`worker-hyper-client` depends on `hyper'
    [worker-stripe-sdk]='`worker-stripe-sdk` depends on `async-stripe`'
    [worker-oneshot]='`worker-oneshot` depends on `reqwest`'
    [worker-test-module]='`worker-test-module` depends on `reqwest`'
)
declare -A CLIPPY_FIRES=(
    [worker-ureq]='ureq::post ureq::Agent::new_with_defaults ureq::Agent'
    [worker-hyper-client]='hyper_util::client::legacy::Client::builder hyper::client::conn::http1::handshake'
    [worker-stripe-sdk]='stripe::Client::new'
    [worker-test-module]='reqwest::Client::new reqwest::Client::post reqwest::RequestBuilder::send'
)
declare -A DYLINT_PATTERN=(
    [worker-direct]='^error: direct HTTP call `reqwest::Client::post` outside an idem adapter: Stripe writes go through `idem-stripe`'
    [worker-ureq]='^error: direct HTTP call `ureq::.*outside an idem adapter'
    [worker-hyper-client]='^error: direct HTTP call `hyper_util::client::legacy::.*outside an idem adapter'
    [worker-stripe-sdk]='^error: direct HTTP call `stripe::.*outside an idem adapter'
    [worker-oneshot]='^error: HTTP client value of type `reqwest::.*outside an idem adapter'
    [worker-test-module]='^error: direct HTTP call `reqwest::Client::post`'
    [leaky-adapter]='^error: `leaky_adapter::http_client` hands out `reqwest::Client`'
)
# Lines that must each appear in a fixture's dylint output (several findings in one fixture).
declare -A DYLINT_ALSO=(
    [worker-hyper-client]='direct HTTP call `hyper::client::conn::http1::handshake'
    [worker-oneshot]='src/lib.rs:18:|src/lib.rs:28:'
    [leaky-adapter]='`pub use` re-exports `reqwest`|`leaky_adapter::Adapter::client` hands out|`leaky_adapter::Http` hands out'
)

fixture_manifest() { echo "$FIXTURES/$1/Cargo.toml"; }

say "one deny list: dylint.toml, the dependency gate's built-in copy, clippy.toml"
if python3 - "$ROOT" >"$LOGS/lists" 2>&1 <<'PY'
import importlib.util, re, sys, tomllib
root = sys.argv[1]
conf = tomllib.load(open(f"{root}/dylint.toml", "rb"))["idem_lint"]
spec = importlib.util.spec_from_file_location("dep_gate", f"{root}/.ci/dep_gate.py")
gate = importlib.util.module_from_spec(spec); spec.loader.exec_module(gate)
problems = []
for key in ("allowed", "deny", "vetted"):
    if conf.get(key) != gate.BUILTIN[key]:
        problems.append(f"dep_gate.py BUILTIN[{key!r}] differs from dylint.toml [idem_lint].{key}")
libs = {}
for e in conf["deny"]:
    lib = e.get("lib", e["package"].replace("-", "_"))
    libs[lib] = e
clippy = tomllib.load(open(f"{root}/clippy.toml", "rb"))
named = set()
for key in ("disallowed-methods", "disallowed-types"):
    for entry in clippy[key]:
        krate = entry["path"].split("::")[0]
        named.add(krate)
        if krate not in libs and not any(l.endswith("*") and krate.startswith(l[:-1]) for l in libs):
            problems.append(f"clippy.toml bans `{entry['path']}`, but `{krate}` is not on dylint.toml's deny list")
        if "idem-stripe" not in entry.get("reason", ""):
            problems.append(f"clippy.toml `{entry['path']}`: reason does not name the adapters")
uncovered = sorted(e["package"] for lib, e in libs.items() if not lib.endswith("*") and lib not in named)
# Adapters are whatever says `[package.metadata.idem] adapter = true`; in idem's own workspace
# that is only a crate under adapters/ (a worker cannot declare itself one in passing).
import json, os, subprocess
meta = subprocess.run(["cargo", "metadata", "--format-version", "1", "--no-deps", "--manifest-path",
                       f"{root}/Cargo.toml"], capture_output=True, text=True)
if meta.returncode != 0:
    problems.append(f"cargo metadata --no-deps failed: {meta.stderr.strip()[-300:]}")
    adapters = []
else:
    adapters = [p for p in json.loads(meta.stdout)["packages"]
                if ((p.get("metadata") or {}).get("idem") or {}).get("adapter") is True]
    for p in adapters:
        if not os.path.realpath(p["manifest_path"]).startswith(os.path.realpath(f"{root}/adapters") + os.sep):
            problems.append(f"`{p['name']}` says [package.metadata.idem] adapter = true but is not under adapters/")
    if not adapters:
        problems.append("no workspace member has [package.metadata.idem] adapter = true")
for p in problems:
    print(f"    | {p}")
print(f"adapters (by metadata): {', '.join(sorted(p['name'] for p in adapters)) or 'none'}")
print(f"deny list: {len(conf['deny'])} entries; clippy.toml names {len(named)} of their crates"
      + (f"; graph and dylint only (no clippy paths): {', '.join(uncovered)}" if uncovered else ""))
sys.exit(1 if problems else 0)
PY
then
    show "$LOGS/lists"; ok "one deny list: dylint.toml = dep_gate.py built-in copy, clippy.toml bans only listed crates"
else
    show "$LOGS/lists"; fail "the deny lists disagree (dylint.toml, .ci/dep_gate.py BUILTIN, clippy.toml)"
fi

# No exemptions: every workspace member other than core and the adapters is checked. To let a
# member through, add --exempt "pkg=reason" here (printed on every run) and say why in review.
GATE_EXEMPT=(--exempt "idem-tests=the simulator (tests/tests/sim) plays the providers as a reqwest middleware and needs one genuine connection-refused error from a closed loopback port; it reaches no service")

say "dependency gate: workspace"
if python3 .ci/dep_gate.py ${GATE_EXEMPT[@]+"${GATE_EXEMPT[@]}"} >"$LOGS/dep-ws" 2>&1; then
    show "$LOGS/dep-ws"; ok "dependency gate: workspace"
else
    show "$LOGS/dep-ws"; fail "dependency gate: the workspace has a crate that reaches an HTTP client outside the adapters"
fi

say "dependency gate: self-test (adapters by metadata, on throw-away workspaces)"
if python3 .ci/dep_gate.py --self-test >"$LOGS/dep-self" 2>&1; then
    ok "dependency gate self-test: $(tail -n 1 "$LOGS/dep-self" | sed 's/^dependency gate self-test: //')"
else
    show "$LOGS/dep-self" 60; fail "dependency gate self-test"
fi

say "dependency gate: fixtures"
for case in "${FIXTURE_CASES[@]}"; do
    read -r name dep _ _ _ <<<"${case%%|*}"
    read -r -a extra <<<"${case#*|}"
    python3 .ci/dep_gate.py --manifest-path "$(fixture_manifest "$name")" ${extra[@]+"${extra[@]}"} >"$LOGS/dep-$name" 2>&1
    rc=$?
    if [[ $dep == R ]]; then
        if [[ $rc -eq 1 ]] && grep -q -- "${DEP_PATTERN[$name]}" "$LOGS/dep-$name"; then
            ok "dependency gate rejects $name"
        else
            show "$LOGS/dep-$name"; fail "dependency gate did not reject $name as expected (exit $rc)"
        fi
    elif [[ $dep == A ]]; then
        if [[ $rc -eq 0 ]]; then ok "dependency gate accepts $name"; else show "$LOGS/dep-$name"; fail "dependency gate rejected $name (exit $rc)"; fi
    fi
done

say "lint decision logic: unit tests on stable (lint/policy)"
if CARGO_TARGET_DIR=$FIXTURE_TARGET cargo +stable test --quiet \
    --manifest-path lint/Cargo.toml -p idem_lint_policy >"$LOGS/policy" 2>&1; then
    ok "idem_lint_policy tests on stable: $(grep -o '[0-9]* passed' "$LOGS/policy" | awk '{n += $1} END {print n}') passed"
else
    show "$LOGS/policy" 40; fail "idem_lint_policy unit tests failed on stable"
fi

say "clippy gate: fixtures, all targets (disallowed-methods/-types from clippy.toml)"
for case in "${FIXTURE_CASES[@]}"; do
    read -r name _ clip _ _ <<<"${case%%|*}"
    [[ $clip == - ]] && continue
    (cd "$FIXTURES/$name" && CARGO_TARGET_DIR=$FIXTURE_TARGET \
        cargo clippy --quiet --workspace --all-targets -- -D warnings) >"$LOGS/clippy-$name" 2>&1
    rc=$?
    if [[ $clip == A ]]; then
        if [[ $rc -eq 0 ]]; then ok "clippy gate accepts $name"; else show "$LOGS/clippy-$name" 60; fail "clippy gate rejected $name (exit $rc)"; fi
        continue
    fi
    if [[ $rc -ne 0 ]] && python3 - "$ROOT/clippy.toml" "$LOGS/clippy-$name" "$name" "${CLIPPY_FIRES[$name]:-}" <<'PY'
import re, sys, tomllib
conf = tomllib.load(open(sys.argv[1], "rb"))
log = open(sys.argv[2]).read()
name, must = sys.argv[3], sys.argv[4].split()
fired = set(re.findall(r"use of a disallowed (?:method|type) `([^`]+)`", log))
problems = []
if name == "worker-direct":
    # Every entry that must resolve fires on the reqwest fixture.
    for key in ("disallowed-methods", "disallowed-types"):
        for entry in conf[key]:
            if not entry.get("allow-invalid") and entry["path"] not in fired:
                problems.append(f"{entry['path']}: did not fire on worker-direct")
    must += ["reqwest::Client::post", "reqwest::RequestBuilder::send", "reqwest::Client::new"]
for m in must:
    if m not in fired:
        problems.append(f"{m}: not reported on {name}")
if not fired:
    problems.append("no disallowed-methods/-types diagnostic: the crate failed for another reason")
if "does not refer to" in log or "expected a function" in log:
    problems.append("clippy warned about an entry that does not resolve")
if "idem-stripe" not in log:
    problems.append("the diagnostics do not name the adapter")
for p in problems:
    print(f"    | {p}")
sys.exit(1 if problems else 0)
PY
    then
        ok "clippy gate rejects $name: $(grep -c '^error: use of a disallowed' "$LOGS/clippy-$name") diagnostics, adapter named"
    else
        show "$LOGS/clippy-$name" 60; fail "clippy gate did not reject $name as expected (exit $rc)"
    fi
done

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

    # The project's own crates, all targets (tests, examples, benches included).
    budget_for "cargo dylint --all --workspace -- --all-targets" || return
    CARGO_TARGET_DIR=$WS_TARGET timeout "$(bound "$STEP_TIMEOUT")" \
        cargo dylint --all --workspace -- --all-targets >"$LOGS/ws" 2>&1
    rc=$?
    if [[ $rc -eq 124 ]]; then
        skip "cargo dylint --all --workspace -- --all-targets ran out of time (step bound ${STEP_TIMEOUT}s, budget ${DYLINT_BUDGET}s)"; return
    elif [[ $rc -ne 0 ]]; then
        grep -E -A8 '^error' "$LOGS/ws" | head -60 | sed 's/^/    | /'
        fail "cargo dylint --all --workspace -- --all-targets (exit $rc)"
    else
        ok "cargo dylint --all --workspace -- --all-targets"
    fi

    # The fixtures, with the library just built for the workspace.
    local lib
    lib=$(ls -t "$WS_TARGET"/dylint/libraries/*/release/libidem_lint@*.so 2>/dev/null | head -n 1)
    if [[ -z $lib ]]; then
        fail "cannot find the idem_lint library cargo dylint built under $WS_TARGET/dylint"; return
    fi
    local case name dy pattern
    for case in "${FIXTURE_CASES[@]}"; do
        read -r name _ _ dy _ <<<"${case%%|*}"
        [[ $dy == - ]] && continue
        budget_for "the dylint check of $name" || return
        # From the fixture's directory, so its own dylint.toml (if any) is the configuration.
        (cd "$FIXTURES/$name" && CARGO_TARGET_DIR=$WS_TARGET timeout "$(bound "$STEP_TIMEOUT")" \
            cargo dylint --lib-path "$lib" --workspace -- --all-targets) >"$LOGS/dy-$name" 2>&1
        rc=$?
        if [[ $rc -eq 124 ]]; then
            skip "the dylint check of $name ran out of time (budget ${DYLINT_BUDGET}s)"; return
        fi
        if [[ $dy == A ]]; then
            if [[ $rc -eq 0 ]]; then ok "dylint accepts $name"; else
                grep -E -A8 '^error' "$LOGS/dy-$name" | head -40 | sed 's/^/    | /'
                fail "dylint rejected $name (exit $rc)"
            fi
            continue
        fi
        local missing=()
        grep -q -- "${DYLINT_PATTERN[$name]}" "$LOGS/dy-$name" || missing+=("${DYLINT_PATTERN[$name]}")
        if [[ -n ${DYLINT_ALSO[$name]:-} ]]; then
            IFS='|' read -r -a also <<<"${DYLINT_ALSO[$name]}"
            for pattern in "${also[@]}"; do
                grep -q -- "$pattern" "$LOGS/dy-$name" || missing+=("$pattern")
            done
        fi
        if [[ $rc -ne 0 ]] && ((${#missing[@]} == 0)) \
            && grep -q 'http_call_outside_adapter\|http_client_leak' "$LOGS/dy-$name"; then
            ok "dylint rejects $name: $(grep -c '^error: \(direct HTTP call\|HTTP client value\|`.*` hands out\|`pub use` re-exports\)' "$LOGS/dy-$name") diagnostics"
        else
            grep -E -A8 '^error' "$LOGS/dy-$name" | head -40 | sed 's/^/    | /'
            printf '    | missing: %s\n' "${missing[@]}"
            fail "dylint did not reject $name as expected (exit $rc)"
        fi
    done

    # The worker of the leaky fixture, once the adapter compiles: with the leak lint off, the
    # client it got from the adapter is still flagged where the worker gets it (line 13).
    budget_for "the dylint check of leaky-adapter's worker" || return
    (cd "$FIXTURES/leaky-adapter" && DYLINT_RUSTFLAGS="-A http_client_leak" CARGO_TARGET_DIR=$WS_TARGET \
        timeout "$(bound "$STEP_TIMEOUT")" cargo dylint --lib-path "$lib" --workspace -- --all-targets) \
        >"$LOGS/dy-leaky-worker" 2>&1
    rc=$?
    if [[ $rc -eq 124 ]]; then
        skip "the dylint check of leaky-adapter's worker ran out of time (budget ${DYLINT_BUDGET}s)"; return
    elif [[ $rc -ne 0 ]] && grep -q '^error: HTTP client value of type `\([a-z_]*::\)\?reqwest::Client`' "$LOGS/dy-leaky-worker" \
        && grep -q 'worker/src/lib.rs:13:' "$LOGS/dy-leaky-worker" \
        && ! grep -q 'hands out' "$LOGS/dy-leaky-worker"; then
        ok "dylint rejects the leaked client in leaky-adapter's worker (oneshot through an allowed crate)"
    else
        grep -E -A8 '^error' "$LOGS/dy-leaky-worker" | head -40 | sed 's/^/    | /'
        fail "dylint did not reject the leaked client in leaky-adapter's worker (exit $rc)"
    fi
}
dylint_step

if [[ $failures -ne 0 ]]; then
    say "$failures check(s) failed ($((SECONDS - t0))s)"
    exit 1
fi
say "all checks passed ($((SECONDS - t0))s)"
