#!/usr/bin/env bash
# The test command (see README): the Rust unit + integration suites, then the official Python
# and JS SDKs against the built sidecar. Assumes `bash .ci/run` has set things up once
# (servers, .venv, tests/sdk/js/node_modules). Runs every suite even when one fails; exits
# non-zero if any failed.
set -uo pipefail

cd "$(dirname "$0")/.."
ROOT="$(pwd)"
RAPR_BIN="${RAPR_BIN:-target/debug/rapr}"
case "$RAPR_BIN" in /*) ;; *) RAPR_BIN="$ROOT/$RAPR_BIN" ;; esac
export RAPR_BIN

section() { printf '\n=== [%s] %s ===\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*"; }

declare -a NAMES=() RESULTS=()
record() { NAMES+=("$1"); RESULTS+=("$2"); }

# The failpoints feature adds crash points that only act when FAILPOINTS is set; the fault tests
# need it, and building once with it keeps nextest and the SDK suites on the same binary.
FEATURES="--features failpoints"

section "cargo build --locked $FEATURES"
if ! cargo build --locked $FEATURES; then
    echo "build failed: nothing to test" >&2
    printf '\nSUMMARY: build FAILED\n'
    exit 1
fi

section "Rust: cargo nextest run --locked --no-fail-fast $FEATURES"
cargo nextest run --locked --no-fail-fast $FEATURES
rc=$?
record "rust (nextest)" "$rc"

section "Python SDK: pytest tests/sdk/python"
if [ -x .venv/bin/pytest ]; then
    .venv/bin/pytest -q -rfE tests/sdk/python
    rc=$?
    # pytest's 5 means no test was collected: a failure here.
else
    echo ".venv/bin/pytest not found: run bash .ci/run once" >&2
    rc=1
fi
record "python sdk (pytest)" "$rc"

section "JS SDK: node --test (tests/sdk/js)"
if [ -d tests/sdk/js/node_modules ]; then
    (cd tests/sdk/js && node --test)
    rc=$?
else
    echo "tests/sdk/js/node_modules not found: run bash .ci/run once" >&2
    rc=1
fi
record "js sdk (node --test)" "$rc"

section "summary"
failed=0
for i in "${!NAMES[@]}"; do
    if [ "${RESULTS[$i]}" = 0 ]; then
        printf '  PASS  %s\n' "${NAMES[$i]}"
    else
        printf '  FAIL  %s (exit %s)\n' "${NAMES[$i]}" "${RESULTS[$i]}"
        failed=$((failed + 1))
    fi
done
if [ "$failed" = 0 ]; then echo "all test suites passed"; else echo "$failed test suite(s) failed"; fi
echo "suites: $(( ${#NAMES[@]} - failed )) passed, $failed failed"
[ "$failed" = 0 ]
