#!/usr/bin/env bash
# Keeps idem's cargo features honest: each store feature builds alone, without warnings, and
# pulls in its own database driver only.
#
#   bash .ci/features.sh        (from the repository root; .ci/run calls it after clippy)
#
# 1. `cargo check -p idem --no-default-features` with `sqlite`, with `postgres` and with neither
#    (the executor and MemoryStore), each with `-D warnings`.
# 2. `cargo tree -e features,no-dev` (what a user's build compiles) and the literal
#    `cargo tree -e features` (dev-dependencies included: idem's own tests, which take their
#    stores from the build's features; `testing` turns no store on) of the first two must not
#    name the other store's driver: no sqlx-postgres in the SQLite build; no sqlx-sqlite,
#    rusqlite or libsqlite3-sys in the PostgreSQL build. The build without features names
#    neither, in both forms, and no default build of the workspace reaches native-tls.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 2
export CARGO_TERM_COLOR=never

failures=0
fail() { echo "features.sh: FAIL: $*"; failures=$((failures + 1)); }
ok() { echo "features.sh: ok: $*"; }

# Warnings are read from the output (cargo replays them for crates already built) rather than
# set with RUSTFLAGS, which would rebuild every dependency.
LOG=$(mktemp)
trap 'rm -f "$LOG"' EXIT
for features in "sqlite" "postgres" ""; do
    label="cargo check -p idem --no-default-features${features:+ --features $features}"
    cargo check -p idem --no-default-features ${features:+--features "$features"} \
        --message-format short >"$LOG" 2>&1
    rc=$?
    if [[ $rc -eq 0 ]] && ! grep -q '^warning\|: warning' "$LOG"; then
        ok "$label: no warnings"
    else
        grep -E 'warning|error' "$LOG" | sed 's/^/    | /' | head -40
        fail "$label (exit $rc)"
    fi
done

# absent <features> <label> <pattern>: the graph of idem with only <features> has no package
# line matching <pattern>, both without dev-dependencies (normal + build) and with them (the
# literal `cargo tree -e features` form). Fails closed: a `cargo tree` that fails, or prints
# no idem line, is a failure, not a pass.
absent() {
    local edges found tree
    for edges in features,no-dev features; do
        if ! tree=$(cargo tree -p idem --no-default-features ${1:+--features "$1"} -e "$edges" \
            --prefix none 2>"$LOG"); then
            sed 's/^/    | /' "$LOG" | head -20
            fail "cargo tree -e $edges --features ${1:-(none)} failed"
            continue
        fi
        if ! grep -q '^idem v' <<<"$tree"; then
            sed 's/^/    | /' <<<"$tree" | head -20
            fail "cargo tree -e $edges --features ${1:-(none)} printed no idem package"
            continue
        fi
        found=$(grep -E "$3" <<<"$tree" | sort -u)
        if [[ -z $found ]]; then
            ok "-e $edges --features ${1:-(none)}: no $2"
        else
            echo "$found" | sed 's/^/    | /'
            fail "-e $edges --features ${1:-(none)} pulls in $2"
        fi
    done
}
absent sqlite "PostgreSQL driver" '^sqlx-postgres |postgres'
absent postgres "SQLite driver" '^(sqlx-sqlite|rusqlite|libsqlite3-sys) |sqlite'
absent "" "database driver" '^(sqlx-postgres|sqlx-sqlite|rusqlite|libsqlite3-sys) '

# The user picks TLS: idem's default is rustls, and nothing in the workspace (dev-dependencies
# left out) turns native-tls on by default.
# (`cargo tree -i` prints nothing, or fails, when the package is not in the graph.)
tls=$(cargo tree --workspace -e features,no-dev -i native-tls 2>/dev/null)
if grep -q 'native-tls' <<<"$tls"; then
    sed 's/^/    | /' <<<"$tls" | head -20
    fail "a default build of the workspace reaches native-tls"
else
    ok "no default build in the workspace reaches native-tls"
fi

if [[ $failures -ne 0 ]]; then
    echo "features.sh: $failures check(s) failed"
    exit 1
fi
echo "features.sh: all checks passed"
