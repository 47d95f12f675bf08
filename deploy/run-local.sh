#!/usr/bin/env bash
# deploy/run-local.sh - `make run`: the whole suite on this machine, no Docker.
# A private PostgreSQL cluster lives in var/pg of the checkout (kept between runs), then the
# broker and every service start as local processes. Ctrl-C stops everything cleanly.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
VAR=${CRM_RUN_DIR:-$PWD/var}
export PGPORT_WANTED=${CRM_RUN_PG_PORT:-55432}
export CRM_LOG_FORMAT=${CRM_LOG_FORMAT:-text}
export CRM_BROKER_ENDPOINT=${CRM_BROKER_ENDPOINT:-tcp://127.0.0.1:5555}
export CRM_BROKER_EVENTS_IN=${CRM_BROKER_EVENTS_IN:-tcp://127.0.0.1:5556}
export CRM_BROKER_EVENTS_OUT=${CRM_BROKER_EVENTS_OUT:-tcp://127.0.0.1:5557}

. tests/lib/pg.sh

mkdir -p "$VAR/log"
pids=()
stop() {
    trap - INT TERM EXIT
    echo
    echo "stopping..."
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    pg_stop "$VAR/pg"
    echo "stopped; data kept in $VAR (remove it for a fresh start)"
    exit 0
}
trap stop INT TERM EXIT

echo "starting PostgreSQL in $VAR/pg on port $PGPORT_WANTED"
pg_start "$VAR/pg" on
contacts_dsn=$(pg_service_db contacts)
orders_dsn=$(pg_service_db orders)

"$BUILD/bin/crm-broker" &
pids+=($!)
CRM_CONTACTS_DSN=$contacts_dsn "$BUILD/bin/crm-contacts" &
pids+=($!)
CRM_ORDERS_DSN=$orders_dsn "$BUILD/bin/crm-orders" &
pids+=($!)

cat <<TEXT

The suite is running: broker on $CRM_BROKER_ENDPOINT, events on $CRM_BROKER_EVENTS_OUT.
Try, from another terminal:

  $BUILD/bin/crmctl call --branch riga-1 contacts CreateContact \\
      '{"contact": {"givenName": "Anna", "familyName": "Ivanova", "phones": [{"number": "+371 2000 0001"}]}}'
  $BUILD/bin/crmctl call contacts FindContacts '{"phone": "+37120000001"}'
  $BUILD/bin/crmctl call --branch riga-1 orders PlaceOrder \\
      '{"order": {"externalId": "A-1", "currency": "EUR", "items": [{"name": "Latte", "quantity": "2", "unitPriceMinor": "350"}]}}'
  $BUILD/bin/crmctl describe orders
  psql "host=127.0.0.1 port=$PGPORT_WANTED user=postgres dbname=crm"

Press Ctrl-C to stop.
TEXT
wait -n "${pids[@]}" || true
echo "a process exited; stopping the rest"
