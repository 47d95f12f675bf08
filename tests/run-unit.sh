#!/usr/bin/env bash
# tests/run-unit.sh - runs unit test binaries against one throwaway PostgreSQL and sums their results.
# Usage: tests/run-unit.sh TEST_BINARY...   (BUILD=build-san, or binaries under build-san/: sanitizer run)
# Each binary ends with "<name>: N passed, N failed"; exit 77 means skipped.
set -u

here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib/pg.sh"

if [ $# -eq 0 ]; then
    echo "usage: $0 TEST_BINARY..." >&2
    exit 2
fi

sanitized=0
case "${BUILD:-}" in *-san | *-san/) sanitized=1 ;; esac
for bin in "$@"; do
    case "$bin" in *build-san/*) sanitized=1 ;; esac
done
if [ "$sanitized" -eq 1 ]; then
    export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0
    export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
fi

pgdir=$(mktemp -d "${TMPDIR:-/tmp}/crm-unit.XXXXXX")
cleanup() {
    pg_stop "$pgdir"
    rm -rf "$pgdir"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

passed=0
failed=0
skipped=0
# Without a server the tests needing one would only skip: count that as a failure
if ! pg_start "$pgdir" off; then
    echo "run-unit: could not start PostgreSQL; tests that need it will skip" >&2
    unset CRM_TEST_DSN
    failed=1
fi
out="$pgdir/test.out"
for bin in "$@"; do
    name=$(basename "$bin")
    echo "--- $name"
    if [ ! -x "$bin" ]; then
        echo "$name: not built"
        failed=$((failed + 1))
        continue
    fi
    "$bin" >"$out" 2>&1
    rc=$?
    cat "$out"
    if [ "$rc" -eq 77 ]; then
        skipped=$((skipped + 1))
        continue
    fi
    line=$(grep -E "^$name: [0-9]+ passed, [0-9]+ failed\$" "$out" | tail -n 1)
    if [ -n "$line" ]; then
        p=$(echo "$line" | sed -E 's/^.*: ([0-9]+) passed, ([0-9]+) failed$/\1/')
        f=$(echo "$line" | sed -E 's/^.*: ([0-9]+) passed, ([0-9]+) failed$/\2/')
        passed=$((passed + p))
        failed=$((failed + f))
        # A non-zero exit with no failed check: it crashed or leaked after its summary
        if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
            echo "$name: exited with status $rc"
            failed=$((failed + 1))
        fi
    else
        echo "$name: crashed or ended early (exit status $rc, no summary line)"
        failed=$((failed + 1))
    fi
done

if [ "$skipped" -gt 0 ]; then
    echo "run-unit: $skipped test binaries skipped"
fi
echo "unit: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
