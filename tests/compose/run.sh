#!/usr/bin/env bash
# tests/compose/run.sh - make compose-test: the suite deployed with docker compose on this machine's
# Docker engine, and tested from outside through the published broker port.
#
#   BUILD=build tests/compose/run.sh
#
# Builds the base images when missing (deploy/build-base-images.sh) and the suite's image,
# brings the suite up and waits for every health check, runs the end-to-end suite against it
# (tests/run-e2e.sh with CRM_E2E_EXTERNAL_BROKER), scales orders to 3 and shows requests
# spread over the three, kills one orders instance with docker kill in the middle of a stream
# of branch events (PlaceOrder) and shows every acknowledged order stored exactly once (and
# again with a crash the engine restarts by itself, when run as root), restarts PostgreSQL and
# shows contacts and every orders instance serve again by themselves, stops everything (each
# program must exit 0), and removes the containers and the volume. Figures (image size, build
# time, time to healthy, recovery times) are printed at the end and kept, with the logs, in
# $BUILD/compose-test/.
# Needs $BUILD/bin/crmctl (the end-to-end suite calls it). The exit code is 0 when all passed.
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT" || exit 1
BUILD=${BUILD:-build}
case $BUILD in
/*) ;;
*) BUILD=$ROOT/$BUILD ;;
esac
OUT=$BUILD/compose-test
PYTHON=/usr/bin/python3
IMAGE=${CRM_IMAGE:-crm-suite:latest}
DEADLINE_S=${CRM_COMPOSE_DEADLINE_S:-120}

say() { echo "compose-test: $*" >&2; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
figure() {
    say "$1 = $2"
    echo "$1=$2" >>"$OUT/figures.txt"
}

docker info >/dev/null 2>&1 || {
    say "no Docker engine answers (docker info failed)"
    exit 1
}
if docker compose version >/dev/null 2>&1; then
    COMPOSE=(docker compose)
elif command -v docker-compose >/dev/null; then
    COMPOSE=(docker-compose)
else
    say "neither docker compose nor docker-compose is installed"
    exit 1
fi
[ -x "$BUILD/bin/crmctl" ] || {
    say "$BUILD/bin/crmctl is missing: run make first"
    exit 1
}
compose() { "${COMPOSE[@]}" "$@"; }

rm -rf "$OUT"
mkdir -p "$OUT/e2e-logs"
: >"$OUT/figures.txt"
FAILED=0
FOLLOWERS=()

# --- settings of this deployment -----------------------------------------------------------
export COMPOSE_PROJECT_NAME=${CRM_COMPOSE_PROJECT:-crmcomposetest}
export CRM_IMAGE=$IMAGE
# The settings the end-to-end suite expects (German national numbers, a Latvian branch), and
# debug lines, in which the scenarios count each instance's answers
export CRM_DEFAULT_CALLING_CODE=49 CRM_BRANCH_CALLING_CODES=e2e-lv=371 CRM_LOG_LEVEL=debug
# The late sweep every second, as the suite's timer test expects
export CRM_ORDERS_SWEEP_S=1
# Passwords of this run only: the roles are made from the environment on the first start
POSTGRES_PASSWORD=$("$PYTHON" -c 'import secrets; print(secrets.token_hex(12))')
CRM_CONTACTS_DB_PASSWORD=$("$PYTHON" -c 'import secrets; print(secrets.token_hex(12))')
CRM_ORDERS_DB_PASSWORD=$("$PYTHON" -c 'import secrets; print(secrets.token_hex(12))')
export POSTGRES_PASSWORD CRM_CONTACTS_DB_PASSWORD CRM_ORDERS_DB_PASSWORD

# The broker's ports on the host: free ones rather than 5555-5557, where make run or a stray
# worker of another checkout may be dialling (any worker that reaches the broker joins it)
. tests/lib/pg.sh # free_ports
read -r -a ports <<<"$(free_ports 3)"
export CRM_BROKER_PORT=${ports[0]} CRM_EVENTS_IN_PORT=${ports[1]} CRM_EVENTS_OUT_PORT=${ports[2]}
BROKER=tcp://127.0.0.1:$CRM_BROKER_PORT

cleanup() {
    local pid
    for pid in "${FOLLOWERS[@]}"; do kill "$pid" 2>/dev/null; done
    compose logs --no-color --timestamps >"$OUT/compose.log" 2>&1
    compose down --volumes --remove-orphans --timeout 30 >"$OUT/down.log" 2>&1 ||
        say "docker compose down failed: see $OUT/down.log"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# healthy_within SECONDS: waits until every container of the project is running and healthy
healthy_within() {
    local end=$((SECONDS + $1)) ids states
    while [ $SECONDS -lt $end ]; do
        ids=$(compose ps -q 2>/dev/null)
        if [ -n "$ids" ]; then
            # shellcheck disable=SC2086
            states=$(docker inspect -f '{{.State.Status}}/{{if .State.Health}}{{.State.Health.Status}}{{end}}' $ids)
            if ! grep -qv '^running/healthy$' <<<"$states"; then
                return 0
            fi
        fi
        sleep 0.5
    done
    say "not every container healthy within $1 s:"
    compose ps >&2
    return 1
}

# follow CONTAINER FILE: keeps FILE up to date with the container's log
follow() {
    docker logs -f "$1" >"$2" 2>&1 &
    FOLLOWERS+=($!)
}

# --- images --------------------------------------------------------------------------------
# Leftovers of an interrupted run of this project go first
compose down --volumes --remove-orphans --timeout 10 >/dev/null 2>&1

if ! docker image inspect debian:bookworm-slim >/dev/null 2>&1 ||
    ! docker image inspect postgres:15 >/dev/null 2>&1; then
    say "base images missing: building them (deploy/build-base-images.sh)"
    started=$(now)
    deploy/build-base-images.sh || exit 1
    figure base_images_build_s "$(since "$started")"
fi

say "building $IMAGE"
started=$(now)
if ! compose build >"$OUT/build.log" 2>&1; then
    tail -n 40 "$OUT/build.log" >&2
    say "the image did not build"
    exit 1
fi
figure build_s "$(since "$started") (docker compose build)"
figure image_size "$IMAGE $(docker image inspect -f '{{.Size}}' "$IMAGE" | awk '{ printf "%.1f MB", $1 / 1e6 }')"

# --- up ------------------------------------------------------------------------------------
say "starting the suite (project $COMPOSE_PROJECT_NAME, broker on $BROKER)"
started=$(now)
if ! compose up -d >"$OUT/up.log" 2>&1; then
    cat "$OUT/up.log" >&2
    say "docker compose up failed"
    exit 1
fi
healthy_within "$DEADLINE_S" || exit 1
figure up_to_healthy_s "$(since "$started")"

POSTGRES_ID=$(compose ps -q postgres)
BROKER_ID=$(compose ps -q broker)
CONTACTS_ID=$(compose ps -q contacts)
ORDERS_ID=$(compose ps -q orders)

# --- the end-to-end suite through the published port --------------------------------------
say "end-to-end suite against the deployment"
follow "$BROKER_ID" "$OUT/e2e-logs/broker.log"
follow "$CONTACTS_ID" "$OUT/e2e-logs/contacts.log"
follow "$ORDERS_ID" "$OUT/e2e-logs/orders.log"
started=$(now)
if CRM_E2E_EXTERNAL_BROKER=$BROKER \
    CRM_E2E_EVENTS_IN=tcp://127.0.0.1:$CRM_EVENTS_IN_PORT \
    CRM_E2E_EVENTS_OUT=tcp://127.0.0.1:$CRM_EVENTS_OUT_PORT \
    CRM_E2E_LOG_DIR=$OUT/e2e-logs CRM_E2E_NO_WORKER_MS=3000 CRM_E2E_CALLING_CODE=49 \
    BUILD=$BUILD tests/run-e2e.sh; then
    figure e2e_s "$(since "$started")"
else
    say "the end-to-end suite failed against the deployment"
    FAILED=1
fi
export CRM_E2E_PY=$BUILD/py # protobuf classes made by run-e2e.sh, for the scenarios

# --- three instances -----------------------------------------------------------------------
say "scaling orders to 3"
started=$(now)
if ! compose up -d --no-recreate --scale orders=3 >>"$OUT/up.log" 2>&1; then
    tail -n 20 "$OUT/up.log" >&2
    say "scaling failed"
    exit 1
fi
healthy_within "$DEADLINE_S" || exit 1
mapfile -t ORDERS < <(compose ps -q orders)
if [ ${#ORDERS[@]} -ne 3 ]; then
    say "expected 3 orders containers, found ${#ORDERS[@]}"
    exit 1
fi
# Registered with the broker: each instance logs "serving" once connected
for cid in "${ORDERS[@]}"; do
    end=$((SECONDS + DEADLINE_S))
    # grep reads it all: with -q, docker logs would die of SIGPIPE and fail the pipeline
    until docker logs "$cid" 2>&1 | grep '"serving orders' >/dev/null; do
        [ $SECONDS -lt $end ] || {
            say "instance $cid never served"
            exit 1
        }
        sleep 0.5
    done
done
figure scale_to_3_healthy_s "$(since "$started")"
instances=$(for cid in "${ORDERS[@]}"; do
    docker logs "$cid" 2>&1 | grep -m 1 -o '"instance":"[^"]*"'
done | sort -u | wc -l)
if [ "$instances" -ne 3 ]; then
    say "the 3 containers do not log 3 distinct instance names"
    FAILED=1
fi
CONTAINERS=$(
    IFS=,
    echo "${ORDERS[*]}"
)
scenario() {
    "$PYTHON" tests/compose/scenarios.py "$1" --broker "$BROKER" --containers "$CONTAINERS" \
        --postgres "$POSTGRES_ID" --figures "$OUT/figures.txt" --deadline "$DEADLINE_S" "${@:2}"
}

say "requests spread over the 3 instances"
scenario spread --count 300 || FAILED=1

# --- instances killed in the middle of a stream -------------------------------------------
say "docker kill of one orders instance in the middle of 1200 PlaceOrder branch events"
scenario kill --how docker-kill --count 1200 --victim 1 || FAILED=1
# The engine counts docker kill as an operator's stop and leaves the instance down (its
# restart policy is for crashes): start it again as an operator would
started=$(now)
compose up -d --no-recreate --scale orders=3 >>"$OUT/up.log" 2>&1
healthy_within "$DEADLINE_S" || exit 1
figure kill_instance_up_again_s "$(since "$started") (docker compose up until healthy)"
mapfile -t ORDERS < <(compose ps -q orders)
CONTAINERS=$(
    IFS=,
    echo "${ORDERS[*]}"
)
if [ "$(id -u)" -eq 0 ]; then
    say "crash (SIGKILL to the process from the host) of one orders instance in the middle of 1200 PlaceOrder"
    scenario kill --how crash --count 1200 --victim 2 || FAILED=1
    healthy_within "$DEADLINE_S" || exit 1
else
    say "not root: the crash of an orders instance (SIGKILL from the host) is left out"
fi

# --- PostgreSQL restarted under load -------------------------------------------------------
say "PostgreSQL restart (contacts and orders)"
scenario pg-restart || FAILED=1
healthy_within "$DEADLINE_S" || FAILED=1

# --- CURVE: the same deployment with the broker's clients known by key ---------------------
say "CURVE on the broker's published ports"
# keypair: a new key pair, "public secret" on one line
keypair() { "$BUILD/bin/crmctl" keygen | awk '{ printf "%s ", $2 }'; }
read -r broker_public broker_secret < <(keypair)
read -r services_public services_secret < <(keypair)
read -r client_public client_secret < <(keypair)
export CRM_BROKER_SECRET_KEY=$broker_secret CRM_BROKER_PUBLIC_KEY=$broker_public
export CRM_SERVICES_SECRET_KEY=$services_secret
export CRM_BROKER_CLIENT_KEYS=$services_public,$client_public
started=$(now)
if ! compose up -d --scale orders=3 >>"$OUT/up.log" 2>&1; then
    tail -n 20 "$OUT/up.log" >&2
    say "docker compose up with CURVE failed"
    FAILED=1
fi
if healthy_within "$DEADLINE_S"; then
    figure curve_up_to_healthy_s "$(since "$started") (every container recreated with keys)"
    # With the client's keys: served; in the clear, or with another key: no answer
    if ! CRM_BROKER_ENDPOINT=$BROKER CRM_TIMEOUT_MS=3000 CRM_CURVE_SECRET_KEY=$client_secret \
        "$BUILD/bin/crmctl" call contacts FindContacts '{"phone": "+4915100000000"}' >/dev/null; then
        say "a client with a known key was not served through CURVE"
        FAILED=1
    fi
    CRM_BROKER_ENDPOINT=$BROKER CRM_TIMEOUT_MS=1000 CRM_RETRIES=0 CRM_CURVE_SECRET_KEY=$client_secret \
        "$BUILD/bin/crmctl" call orders GetOrder '{"orderId": "00000000-0000-4000-8000-000000000000"}' \
        >/dev/null 2>&1
    if [ $? -ne 5 ]; then
        say "orders did not answer NOT_FOUND through CURVE"
        FAILED=1
    fi
    if env -u CRM_BROKER_PUBLIC_KEY CRM_BROKER_ENDPOINT=$BROKER CRM_TIMEOUT_MS=1000 CRM_RETRIES=0 \
        "$BUILD/bin/crmctl" ping contacts >/dev/null 2>&1; then
        say "a client in the clear was served by a broker with CURVE"
        FAILED=1
    fi
    read -r _ stranger < <(keypair)
    if CRM_BROKER_ENDPOINT=$BROKER CRM_TIMEOUT_MS=1000 CRM_RETRIES=0 CRM_CURVE_SECRET_KEY=$stranger \
        "$BUILD/bin/crmctl" ping contacts >/dev/null 2>&1; then
        say "a client with an unknown key was served"
        FAILED=1
    fi
else
    FAILED=1
fi
unset CRM_BROKER_SECRET_KEY CRM_BROKER_PUBLIC_KEY CRM_SERVICES_SECRET_KEY CRM_BROKER_CLIENT_KEYS

# --- stop: every program exits 0 on SIGTERM ------------------------------------------------
say "stopping"
started=$(now)
compose stop --timeout 30 >>"$OUT/down.log" 2>&1
figure stop_s "$(since "$started")"
for cid in $(compose ps -q); do
    read -r name code < <(docker inspect -f '{{.Name}} {{.State.ExitCode}}' "$cid")
    if [ "$code" != 0 ]; then
        say "${name#/} exited with status $code when stopped"
        FAILED=1
    fi
done

echo >&2
say "figures (also in ${OUT#"$ROOT"/}/figures.txt):"
sed 's/^/    /; s/=/: /' "$OUT/figures.txt" >&2
if [ $FAILED -ne 0 ]; then
    say "FAILED; logs of every container in ${OUT#"$ROOT"/}/compose.log"
    exit 1
fi
say "passed"
exit 0
