#!/usr/bin/env bash
# tests/soak/no_loss.sh - no branch event lost or stored twice while orders is killed and contacts stopped.
#
#   BUILD=build tests/soak/no_loss.sh        (make no-loss)
#
# Starts a throwaway PostgreSQL, the broker, contacts and orders on free ports, creates
# NO_LOSS_CONTACTS contacts (crmctl publish of CreateContact lines), then publishes
# NO_LOSS_EVENTS branch events with the simulator (tests/bench/sim_branches.c: order chains
# PlaceOrder -> CONFIRMED -> IN_PREPARATION -> READY -> COMPLETED, some cancelled or left open,
# one in ten a RecordPurchase; each order's next event sent once the previous one is
# acknowledged) while an orders instance is killed with SIGKILL and restarted every
# NO_LOSS_KILL_EVERY_S seconds and contacts is stopped with SIGTERM for a while and started
# again. Then it waits (bounded) for the event log to be sequenced and contacts to catch up,
# and checks (tests/soak/no_loss_checks.sql): every acknowledged event stored exactly once and
# nothing else stored, no order twice, every completed order completed once, the event log
# gapless with one OrderCompleted per completed order, and contacts' value figures equal to
# a direct SQL computation over orders. Prints the timings; exit 0 only if every check holds.
#
# PostgreSQL runs with fsync off: this tests the protocol, not the disks. A service killed
# with SIGKILL loses nothing PostgreSQL committed whatever fsync says; only a crash of the
# whole machine would need it. Logs are kept in $BUILD/no-loss-logs.
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT" || exit 1
BUILD=${BUILD:-build}
case $BUILD in
/*) ;;
*) BUILD=$ROOT/$BUILD ;;
esac
EVENTS=${NO_LOSS_EVENTS:-100000}
CONTACTS=${NO_LOSS_CONTACTS:-2000}
ORDERS_INSTANCES=${NO_LOSS_ORDERS:-1}
KILL_EVERY_S=${NO_LOSS_KILL_EVERY_S:-5}
# The simulator must be done by then, and contacts caught up within CATCH_UP_S after
PUBLISH_LIMIT_S=${NO_LOSS_PUBLISH_LIMIT_S:-600}
CATCH_UP_S=${NO_LOSS_CATCH_UP_S:-180}
PYTHON=/usr/bin/python3
RUN=nl$$

say() { echo "no-loss: $*" >&2; }
for bin in bin/crm-broker bin/crm-contacts bin/crm-orders bin/crmctl bench/sim_branches; do
    if [ ! -x "$BUILD/$bin" ]; then
        say "$BUILD/$bin is missing: build it first (make all)"
        exit 1
    fi
done

TMP=$(mktemp -d "${TMPDIR:-/tmp}/crm-no-loss.XXXXXX")
chmod 755 "$TMP" # the database server runs as postgres and needs to reach $TMP/pg
LOGS=$TMP/logs
mkdir -p "$LOGS"
. tests/lib/pg.sh

T0=$(date +%s.%N)
elapsed() { echo "$(date +%s.%N) $T0" | awk '{printf "%.1f", $1 - $2}'; }
since() { echo "$(date +%s.%N) $1" | awk '{printf "%.1f", $1 - $2}'; }

BROKER_PID= CONTACTS_PID= SIM_PID=
ORDERS_PIDS=()

stop_pid() { # stop_pid PID SIGNAL: signals one process we started and reaps it
    local pid=$1 sig=${2:-KILL} i
    [ -n "$pid" ] || return 0
    {
        if kill -0 "$pid"; then
            kill -"$sig" "$pid"
            for i in $(seq 1 300); do
                kill -0 "$pid" || break
                sleep 0.1
            done
            kill -0 "$pid" && kill -KILL "$pid"
        fi
        wait "$pid"
    } 2>/dev/null
    return 0
}

cleanup() {
    local pid
    stop_pid "$SIM_PID" KILL
    for pid in "${ORDERS_PIDS[@]}"; do stop_pid "$pid" TERM; done
    stop_pid "$CONTACTS_PID" TERM
    stop_pid "$BROKER_PID" TERM
    pg_stop "$TMP/pg"
    [ -f "$TMP/pg/server.log" ] && cp "$TMP/pg/server.log" "$LOGS/postgres.log" 2>/dev/null
    rm -rf "$BUILD/no-loss-logs"
    cp -r "$LOGS" "$BUILD/no-loss-logs" 2>/dev/null
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- the suite --------------------------------------------------------------------------
pg_start "$TMP/pg" off || {
    say "could not start PostgreSQL"
    exit 1
}
CONTACTS_DSN=$(pg_service_db contacts) && ORDERS_DSN=$(pg_service_db orders) || {
    say "could not create the service roles"
    exit 1
}
read -r P_REQ P_IN P_OUT <<<"$(free_ports 3)"
export CRM_BROKER_ENDPOINT=tcp://127.0.0.1:$P_REQ
export CRM_BROKER_EVENTS_IN=tcp://127.0.0.1:$P_IN CRM_BROKER_EVENTS_OUT=tcp://127.0.0.1:$P_OUT
# Dead workers found within 1.5 s; a request for a service with no worker waits 2 s
export CRM_BROKER_HEARTBEAT_MS=500 CRM_BROKER_NO_WORKER_MS=2000 CRM_LOG_LEVEL=warn CRM_LOG_FORMAT=json

"$BUILD/bin/crm-broker" >>"$LOGS/broker.log" 2>&1 &
BROKER_PID=$!

start_contacts() {
    CRM_CONTACTS_DSN=$CONTACTS_DSN "$BUILD/bin/crm-contacts" >>"$LOGS/contacts.log" 2>&1 &
    CONTACTS_PID=$!
}
start_orders() { # start_orders INDEX
    CRM_ORDERS_DSN=$ORDERS_DSN CRM_INSTANCE="orders-$1" \
        "$BUILD/bin/crm-orders" >>"$LOGS/orders-$1.log" 2>&1 &
    ORDERS_PIDS[$1]=$!
}
wait_ready() { # wait_ready SERVICE SECONDS
    local i
    for i in $(seq 1 $(($2 * 5))); do
        "$BUILD/bin/crmctl" ping "$1" >/dev/null 2>&1 && return 0
        sleep 0.2
    done
    say "$1 did not register with the broker within $2 s"
    return 1
}

start_contacts
for i in $(seq 0 $((ORDERS_INSTANCES - 1))); do start_orders "$i"; done
wait_ready contacts 30 && wait_ready orders 30 || exit 1
say "suite up in $(elapsed) s (broker $CRM_BROKER_ENDPOINT, $ORDERS_INSTANCES orders instance(s))"

# --- the customers ----------------------------------------------------------------------
t=$(date +%s.%N)
"$PYTHON" - "$CONTACTS" "$RUN" >"$TMP/contacts.jsonl" <<'PY'
import json, sys
n, run = int(sys.argv[1]), sys.argv[2]
for i in range(n):
    print(json.dumps({
        "service": "contacts", "method": "CreateContact", "requestId": "%s-contact-%d" % (run, i),
        "branch": "sim-%s-b%02d" % (run, i % 8),
        "request": {"contact": {"givenName": "Anna%d" % i, "familyName": "Soak",
                                "emails": [{"address": "soak-%s-%d@example.org" % (run, i)}]}},
    }))
PY
if ! "$BUILD/bin/crmctl" publish --window 128 "$TMP/contacts.jsonl" >"$LOGS/contacts-publish.txt" \
    2>&1; then
    say "could not create the contacts:"
    tail -n 5 "$LOGS/contacts-publish.txt" >&2
    exit 1
fi
psql -X -q -At -d crm -c "SELECT id FROM contacts.contact ORDER BY id" >"$TMP/contact-ids.txt"
say "$(wc -l <"$TMP/contact-ids.txt") contacts created in $(since "$t") s"

# --- the storm --------------------------------------------------------------------------
before_s=$(elapsed)
t=$(date +%s.%N)
timeout -k 5 "$PUBLISH_LIMIT_S" "$BUILD/bench/sim_branches" --events "$EVENTS" --branches 8 \
    --mix full --contacts "$TMP/contact-ids.txt" --window 256 --timeout-ms 2000 --retries 200 \
    --run "$RUN" --outcomes "$TMP/outcomes.tsv" --quiet >"$LOGS/sim.txt" 2>&1 &
SIM_PID=$!

kills=0 contacts_stops=0 contacts_down_s=0 cycle=0 contacts_stopped_at=
while kill -0 "$SIM_PID" 2>/dev/null; do
    for _ in $(seq 1 $((KILL_EVERY_S * 10))); do
        kill -0 "$SIM_PID" 2>/dev/null || break 2
        sleep 0.1
    done
    cycle=$((cycle + 1))
    victim=$((cycle % ORDERS_INSTANCES))
    stop_pid "${ORDERS_PIDS[$victim]}" KILL
    kills=$((kills + 1))
    sleep 0.5
    start_orders "$victim"
    say "$(since "$t") s: killed orders-$victim (SIGKILL), restarted"
    if [ $cycle -eq 2 ]; then
        stop_pid "$CONTACTS_PID" TERM
        contacts_stopped_at=$(date +%s.%N)
        contacts_stops=$((contacts_stops + 1))
        say "$(since "$t") s: stopped contacts (SIGTERM)"
    elif [ $cycle -eq 5 ] && [ -n "$contacts_stopped_at" ]; then
        start_contacts
        contacts_down_s=$(since "$contacts_stopped_at")
        contacts_stopped_at=
        say "$(since "$t") s: started contacts again after $contacts_down_s s"
    fi
done
wait "$SIM_PID"
sim_rc=$?
SIM_PID=
publish_s=$(since "$t")
if [ -n "$contacts_stopped_at" ]; then
    start_contacts
    contacts_down_s=$(since "$contacts_stopped_at")
fi
cat "$LOGS/sim.txt" | grep '^sim:' >&2
if [ $sim_rc -ne 0 ]; then
    say "the simulator exited with status $sim_rc (124: it did not finish within $PUBLISH_LIMIT_S s)"
fi

# --- catch-up ---------------------------------------------------------------------------
t=$(date +%s.%N)
for i in "${!ORDERS_PIDS[@]}"; do
    kill -0 "${ORDERS_PIDS[$i]}" 2>/dev/null || start_orders "$i"
done
caught_up=0
for _ in $(seq 1 $((CATCH_UP_S * 2))); do
    state=$(psql -X -q -At -d crm -c "
        SELECT (SELECT count(*) FROM orders.crm_outbox WHERE position IS NULL) || ' ' ||
               coalesce ((SELECT max (position) FROM orders.crm_outbox), 0) || ' ' ||
               coalesce ((SELECT position FROM contacts.crm_consumer_position
                          WHERE source = 'orders'), -1)" 2>/dev/null)
    read -r unsequenced last applied <<<"$state"
    if [ "${unsequenced:-1}" = 0 ] && [ "${last:-0}" = "${applied:-x}" ]; then
        caught_up=1
        break
    fi
    sleep 0.5
done
catch_up_s=$(since "$t")
if [ $caught_up -eq 1 ]; then
    say "event log sequenced and contacts caught up (position $last) $catch_up_s s after the last event"
else
    say "not caught up within $CATCH_UP_S s: $unsequenced unsequenced, log at $last, contacts at $applied"
fi

# --- the checks -------------------------------------------------------------------------
t=$(date +%s.%N)
psql -X -q -v ON_ERROR_STOP=1 -d crm -c "CREATE SCHEMA IF NOT EXISTS soak" \
    -c "CREATE TABLE soak.outcomes (request_id text, method text, outcome text, status text)" \
    -c "\\copy soak.outcomes FROM '$TMP/outcomes.tsv'" >/dev/null || {
    say "could not load the simulator's outcomes"
    exit 1
}
read -r n_outcomes n_acked n_dups <<<"$(psql -X -q -At -F ' ' -d crm -c "
    SELECT count(*), count(*) FILTER (WHERE outcome = 'acknowledged'),
           count(*) FILTER (WHERE outcome = 'duplicate') FROM soak.outcomes")"
checks=$(psql -X -q -At -F '|' -v ON_ERROR_STOP=1 -d crm -f tests/soak/no_loss_checks.sql) || {
    say "the checks did not run"
    exit 1
}
failed=0
[ "$n_outcomes" = "$EVENTS" ] || {
    say "FAILED: the simulator reported $n_outcomes outcomes, not $EVENTS"
    failed=1
}
while IFS='|' read -r name bad meaning; do
    if [ "$bad" = 0 ]; then
        say "ok      $name: $meaning"
    else
        say "FAILED  $name ($bad): $meaning"
        failed=1
    fi
done <<<"$checks"
[ $kills -ge 3 ] || {
    say "FAILED: orders was killed only $kills times: the storm was too short to tell"
    failed=1
}
[ $contacts_stops -ge 1 ] || {
    say "FAILED: contacts was never stopped: the storm was too short to tell"
    failed=1
}
[ $sim_rc -eq 0 ] && [ $caught_up -eq 1 ] || failed=1
checks_s=$(since "$t")

say "timings: suite up and contacts created in $before_s s; $EVENTS events in $publish_s s ($(echo "$EVENTS $publish_s" | awk '{printf "%.0f", $1 / $2}')/s) with $kills SIGKILLs of orders and contacts down $contacts_down_s s; caught up in $catch_up_s s; checks $checks_s s; total $(elapsed) s"
say "outcomes: $n_acked acknowledged, $n_dups duplicates (answer lost with a killed worker, replayed on resend)"
if [ $failed -ne 0 ]; then
    say "FAILED; logs in $BUILD/no-loss-logs"
    exit 1
fi
say "passed"
