#!/usr/bin/env bash
# tests/bench/run.sh - `make bench`: broker forwarding next to zmq_proxy, and contacts through the
# broker next to plain libpq loops, on a throwaway PostgreSQL with fsync and synchronous_commit on.
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
. tests/lib/pg.sh

dir=$(mktemp -d /tmp/crm-bench.XXXXXX)
chmod 755 "$dir" # the database server runs as postgres and needs to reach $dir/pg
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    pg_stop "$dir/pg"
    rm -rf "$dir"
}
trap cleanup EXIT

echo "== broker forwarding"
"$BUILD/bench/bench_broker"

echo "== contacts (PostgreSQL with fsync=on, synchronous_commit=on)"
pg_start "$dir/pg" on
dsn=$(pg_service_db contacts)
read -r port port_in port_out <<<"$(free_ports 3)"
export CRM_BROKER_ENDPOINT=tcp://127.0.0.1:$port
export CRM_BROKER_EVENTS_IN=tcp://127.0.0.1:$port_in
export CRM_BROKER_EVENTS_OUT=tcp://127.0.0.1:$port_out
export CRM_LOG_LEVEL=warn
"$BUILD/bin/crm-broker" >"$dir/broker.log" 2>&1 &
pids+=($!)
# BENCH_CONTACTS_INSTANCES: contacts instances behind the broker (default 2, as for orders: each
# has one connection for its writes, and one backend uses one core)
contacts_pids=()
for i in $(seq 1 "${BENCH_CONTACTS_INSTANCES:-2}"); do
    CRM_CONTACTS_DSN=$dsn "$BUILD/bin/crm-contacts" >"$dir/contacts-$i.log" 2>&1 &
    contacts_pids+=($!)
    pids+=($!)
done
sleep 2
rss_kb=$(awk '/VmRSS/ {print $2}' "/proc/${contacts_pids[0]}/status")
echo "idle contacts instance: $((rss_kb / 1024)) MB resident"
echo "contacts_idle_rss_kb=$rss_kb"
echo "${#contacts_pids[@]} contacts instance(s)"
"$BUILD/bench/bench_contacts" "$CRM_BROKER_ENDPOINT" "$dsn"

# The searches are asked one at a time: one instance answers them (the default deployment); with
# two, each would sit idle between every other request and wake up colder
for pid in "${contacts_pids[@]:1}"; do kill -TERM "$pid" 2>/dev/null || true; done
for pid in "${contacts_pids[@]:1}"; do wait "$pid" 2>/dev/null || true; done
contacts_pids=("${contacts_pids[0]}")
echo "== contacts search on 1,000,000 contacts (generated unless the schema holds them), 1 contacts instance"
"$BUILD/bench/bench_search" "$CRM_BROKER_ENDPOINT" "$dsn"

echo "== orders: branch events (PostgreSQL with fsync=on, synchronous_commit=on)"
# contacts consumes orders' events: its catch-up reads and its writes would be counted
# against the orders figures (and against the event log's share of them), so it stops here
for pid in "${contacts_pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
for pid in "${contacts_pids[@]}"; do wait "$pid" 2>/dev/null || true; done
# The million contacts leave autovacuum and a checkpoint busy for a while: the orders figures
# are taken on a quiet server, as the others were
quiet_start=$(date +%s)
while [ "$(psql -d crm -tAc "SELECT count(*) FROM pg_stat_activity
                              WHERE backend_type = 'autovacuum worker'")" != 0 ] &&
    [ $(($(date +%s) - quiet_start)) -lt 120 ]; do
    sleep 1
done
psql -q -d crm -c CHECKPOINT
echo "waited $(($(date +%s) - quiet_start)) s for autovacuum to finish"
orders_dsn=$(pg_service_db orders)
# BENCH_ORDERS_INSTANCES: orders instances behind the broker (default 2: one database connection
# each, and one instance leaves the second core idle)
for i in $(seq 1 "${BENCH_ORDERS_INSTANCES:-2}"); do
    CRM_ORDERS_DSN=$orders_dsn "$BUILD/bin/crm-orders" >"$dir/orders-$i.log" 2>&1 &
    pids+=($!)
done
for _ in $(seq 1 60); do
    "$BUILD/bin/crmctl" ping orders >/dev/null 2>&1 && break
    sleep 0.5
done
echo "${BENCH_ORDERS_INSTANCES:-2} orders instance(s)"
"$BUILD/bench/bench_orders" "$CRM_BROKER_ENDPOINT" "$orders_dsn"
echo "-- the simulator: 8 branches, order chains through to COMPLETED and sales, as fast as acknowledged"
"$BUILD/bench/sim_branches" --broker "$CRM_BROKER_ENDPOINT" --branches 8 --mix full --duration 5 \
    --quiet
