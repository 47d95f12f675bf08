#!/usr/bin/env bash
# tests/run-e2e.sh - the end-to-end suite (tests/e2e) against a private PostgreSQL and the suite.
#
#   BUILD=build tests/run-e2e.sh [pytest arguments...]
#
# Starts a throwaway PostgreSQL cluster, the broker and the services of $BUILD/bin on free
# ports, runs pytest on tests/e2e, then stops everything with SIGTERM. BUILD=build-san runs
# the sanitizer build; a sanitizer report on any process's stderr then fails the run. Logs are
# copied to $BUILD/e2e-logs/. The exit code is pytest's, or 1 when a process crashed, exited
# non-zero, or reported a sanitizer error.
#
#   CRM_E2E_EXTERNAL_BROKER=tcp://127.0.0.1:5555 tests/run-e2e.sh
#
# runs the suite against a suite already running elsewhere (make compose-test: the docker
# compose deployment) and starts nothing. CRM_E2E_EVENTS_IN/_OUT default to ports 5556/5557
# of the broker's host. Tests that drive the harness's own PostgreSQL are skipped, and so are
# the log tests unless CRM_E2E_LOG_DIR names a folder where the caller keeps broker.log and
# contacts.log up to date.
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT" || exit 1
BUILD=${BUILD:-build}
case $BUILD in
/*) ;;
*) BUILD=$ROOT/$BUILD ;;
esac
PYTHON=/usr/bin/python3
PYTEST_TIMEOUT_S=${CRM_E2E_TIMEOUT_S:-300}

say() { echo "run-e2e: $*" >&2; }

EXTERNAL=${CRM_E2E_EXTERNAL_BROKER:-}
if [ -n "$EXTERNAL" ]; then
    needed_bins=(crmctl) needed_tools=(protoc)
else
    needed_bins=(crm-broker crm-contacts crm-orders) needed_tools=(protoc psql)
fi
for bin in "${needed_bins[@]}"; do
    if [ ! -x "$BUILD/bin/$bin" ]; then
        say "$BUILD/bin/$bin is missing: build it first (make, or make SANITIZER=address,undefined)"
        exit 1
    fi
done
for tool in "${needed_tools[@]}"; do
    command -v "$tool" >/dev/null || {
        say "$tool not found: run deploy/install-deps.sh"
        exit 1
    }
done
"$PYTHON" -c 'import pytest, zmq, google.protobuf' 2>/dev/null || {
    say "$PYTHON lacks pytest, zmq or protobuf: run deploy/install-deps.sh"
    exit 1
}

# --- protobuf classes for the client side ---------------------------------------------------
rm -rf "$BUILD/py"
mkdir -p "$BUILD/py"
protoc --python_out="$BUILD/py" -Iproto proto/crm/v1/*.proto || {
    say "protoc failed"
    exit 1
}

# --- or a suite running elsewhere -----------------------------------------------------------
if [ -n "$EXTERNAL" ]; then
    for service in contacts orders; do
        answer=
        for _ in $(seq 1 60); do
            answer=$("$PYTHON" tests/e2e/mdp.py --endpoint "$EXTERNAL" --timeout 1000 "$service" 2>/dev/null)
            [ "$answer" = 200 ] && break
            sleep 0.5
        done
        if [ "$answer" != 200 ]; then
            say "no $service instance answers through the broker at $EXTERNAL"
            exit 1
        fi
    done
    export CRM_E2E_BROKER=$EXTERNAL
    export CRM_E2E_EVENTS_IN=${CRM_E2E_EVENTS_IN:-${EXTERNAL%:*}:5556}
    export CRM_E2E_EVENTS_OUT=${CRM_E2E_EVENTS_OUT:-${EXTERNAL%:*}:5557}
    export CRM_E2E_NO_WORKER_MS=${CRM_E2E_NO_WORKER_MS:-3000}
    export CRM_E2E_CALLING_CODE=${CRM_E2E_CALLING_CODE:-49}
    export CRM_E2E_PY=$BUILD/py CRM_E2E_BIN=$(cd "$BUILD" && pwd)/bin
    export PYTHONDONTWRITEBYTECODE=1
    timeout -k 10 "$PYTEST_TIMEOUT_S" "$PYTHON" -m pytest -q -p no:cacheprovider tests/e2e "$@"
    rc=$?
    [ $rc -ne 124 ] || say "the suite did not finish within $PYTEST_TIMEOUT_S s"
    exit $rc
fi

# --- processes ------------------------------------------------------------------------------
TMP=$(mktemp -d "${TMPDIR:-/tmp}/crm-e2e.XXXXXX")
chmod 755 "$TMP"   # the database server runs as postgres and needs to reach $TMP/pg
LOGS=$TMP/logs
mkdir -p "$LOGS"
PIDS=()            # name=pid of every process started here
FAILED=0

. tests/lib/pg.sh

print_logs() {
    local f
    for f in "$LOGS"/*.log "$LOGS"/*.err "$TMP/pg/server.log"; do
        [ -s "$f" ] || continue
        echo "----- tail of ${f#"$TMP"/} -----" >&2
        tail -n 40 "$f" >&2
    done
}

cleanup() {
    local entry pid
    for entry in "${PIDS[@]}"; do
        pid=${entry#*=}
        if kill -0 "$pid" 2>/dev/null; then
            kill -KILL "$pid" 2>/dev/null
            wait "$pid" 2>/dev/null
        fi
    done
    pg_stop "$TMP/pg"
    [ -f "$TMP/pg/server.log" ] && cp "$TMP/pg/server.log" "$LOGS/postgres.log" 2>/dev/null
    rm -rf "$BUILD/e2e-logs"
    cp -r "$LOGS" "$BUILD/e2e-logs" 2>/dev/null
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# start NAME COMMAND...: runs COMMAND in the background, stdout to $LOGS/NAME.log and
# stderr to $LOGS/NAME.err, and records its pid
start() {
    local name=$1
    shift
    "$@" >"$LOGS/$name.log" 2>"$LOGS/$name.err" &
    PIDS+=("$name=$!")
}

pg_start "$TMP/pg" || {
    say "could not start PostgreSQL"
    exit 1
}
CONTACTS_DSN=$(pg_service_db contacts) || {
    say "could not create the contacts database role"
    exit 1
}
ORDERS_DSN=$(pg_service_db orders) || {
    say "could not create the orders database role"
    exit 1
}

read -r P_REQ P_IN P_OUT P_WORK <<<"$(free_ports 4)"
BROKER=tcp://127.0.0.1:$P_REQ
# Workers on an endpoint of their own, as deployed: the tests' client endpoint refuses them
WORKERS=tcp://127.0.0.1:$P_WORK

SAN_ENV=()
if [ "$(basename "$BUILD")" = build-san ]; then
    SAN_ENV=(ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1)
fi

start broker env "${SAN_ENV[@]}" \
    CRM_BROKER_ENDPOINT="$BROKER" \
    CRM_BROKER_WORKER_ENDPOINT="$WORKERS" \
    CRM_BROKER_EVENTS_IN="tcp://127.0.0.1:$P_IN" \
    CRM_BROKER_EVENTS_OUT="tcp://127.0.0.1:$P_OUT" \
    CRM_BROKER_HEARTBEAT_MS=500 \
    CRM_BROKER_NO_WORKER_MS=1000 \
    CRM_LOG_FORMAT=json \
    "$BUILD/bin/crm-broker"
start contacts env "${SAN_ENV[@]}" \
    CRM_CONTACTS_DSN="$CONTACTS_DSN" \
    CRM_BROKER_ENDPOINT="$BROKER" \
    CRM_BROKER_WORKER_ENDPOINT="$WORKERS" \
    CRM_DEFAULT_CALLING_CODE=49 \
    CRM_BRANCH_CALLING_CODES="e2e-lv=371" \
    CRM_BROKER_EVENTS_IN="tcp://127.0.0.1:$P_IN" \
    CRM_BROKER_EVENTS_OUT="tcp://127.0.0.1:$P_OUT" \
    CRM_LOG_LEVEL=debug \
    CRM_BROKER_HEARTBEAT_MS=500 \
    CRM_RETENTION_INTERVAL_S=2 \
    "$BUILD/bin/crm-contacts"
start orders env "${SAN_ENV[@]}" \
    CRM_ORDERS_DSN="$ORDERS_DSN" \
    CRM_BROKER_ENDPOINT="$BROKER" \
    CRM_BROKER_WORKER_ENDPOINT="$WORKERS" \
    CRM_BROKER_EVENTS_IN="tcp://127.0.0.1:$P_IN" \
    CRM_ORDERS_SWEEP_S=1 \
    CRM_LOG_LEVEL=debug \
    CRM_BROKER_HEARTBEAT_MS=500 \
    CRM_RETENTION_INTERVAL_S=2 \
    "$BUILD/bin/crm-orders"

# Ready when the broker says contacts and orders have workers (each migrates its schema first)
ready=0
for _ in $(seq 1 60); do
    for entry in "${PIDS[@]}"; do
        if ! kill -0 "${entry#*=}" 2>/dev/null; then
            say "${entry%%=*} exited during start-up"
            print_logs
            exit 1
        fi
    done
    answer=$("$PYTHON" tests/e2e/mdp.py --endpoint "$BROKER" --timeout 1000 contacts 2>/dev/null)
    [ "$answer" = 200 ] &&
        answer=$("$PYTHON" tests/e2e/mdp.py --endpoint "$BROKER" --timeout 1000 orders 2>/dev/null)
    if [ "$answer" = 200 ]; then
        ready=1
        break
    fi
    sleep 0.5
done
if [ $ready -ne 1 ]; then
    say "contacts or orders did not register with the broker in time"
    print_logs
    exit 1
fi

# --- the suite ------------------------------------------------------------------------------
export CRM_E2E_BROKER=$BROKER
export CRM_E2E_EVENTS_IN=tcp://127.0.0.1:$P_IN CRM_E2E_EVENTS_OUT=tcp://127.0.0.1:$P_OUT
export CRM_E2E_NO_WORKER_MS=1000 CRM_E2E_CALLING_CODE=49
export CRM_E2E_PY=$BUILD/py CRM_E2E_LOG_DIR=$LOGS CRM_E2E_BIN=$(cd "$BUILD" && pwd)/bin
export CRM_E2E_PG_DIR=$TMP/pg CRM_E2E_PG_SH=$ROOT/tests/lib/pg.sh CRM_E2E_CONTACTS_DSN=$CONTACTS_DSN
export PYTHONDONTWRITEBYTECODE=1
timeout -k 10 "$PYTEST_TIMEOUT_S" "$PYTHON" -m pytest -q -p no:cacheprovider tests/e2e "$@"
rc=$?
if [ $rc -eq 124 ]; then
    say "the suite did not finish within $PYTEST_TIMEOUT_S s"
fi

# --- stop, and judge the processes ----------------------------------------------------------
# Services first, so they leave the broker before it goes
stop_order=()
for entry in "${PIDS[@]}"; do
    [ "${entry%%=*}" = broker ] || stop_order+=("$entry")
done
for entry in "${PIDS[@]}"; do
    [ "${entry%%=*}" = broker ] && stop_order+=("$entry")
done
for entry in "${stop_order[@]}"; do
    name=${entry%%=*}
    pid=${entry#*=}
    if ! kill -0 "$pid" 2>/dev/null; then
        wait "$pid"
        say "$name had already exited (status $?) before the end of the run"
        FAILED=1
        continue
    fi
    kill -TERM "$pid"
    for _ in $(seq 1 200); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        say "$name did not stop within 20 s of SIGTERM"
        kill -KILL "$pid"
        wait "$pid" 2>/dev/null
        FAILED=1
        continue
    fi
    wait "$pid"
    status=$?
    if [ $status -ne 0 ]; then
        say "$name exited with status $status after SIGTERM"
        FAILED=1
    fi
done

SANITIZER_REPORT='ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:|SUMMARY: [A-Za-z]+Sanitizer'
for f in "$LOGS"/*.err; do
    if grep -qE "$SANITIZER_REPORT" "$f"; then
        say "sanitizer report in ${f#"$TMP"/}"
        FAILED=1
    fi
done

if [ $rc -ne 0 ] || [ $FAILED -ne 0 ]; then
    print_logs
    say "logs kept in $BUILD/e2e-logs"
fi
if [ $rc -ne 0 ]; then
    exit $rc
fi
exit $FAILED
