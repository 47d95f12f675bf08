#!/usr/bin/env bash
# docker-entrypoint.sh - starts PostgreSQL as the official postgres image does: on the first start
# a new cluster in $PGDATA (superuser POSTGRES_USER with POSTGRES_PASSWORD, database POSTGRES_DB,
# then /docker-entrypoint-initdb.d/*.sql and *.sh), then the server itself as user postgres,
# exec'd so that the engine's signals reach it.
set -Eeuo pipefail

say() { echo "docker-entrypoint: $*" >&2; }

# VAR_FILE names a file holding VAR's value (Docker secrets)
file_env() {
    local var=$1 file_var=${1}_FILE default=${2:-}
    if [ -n "${!var:-}" ] && [ -n "${!file_var:-}" ]; then
        say "both $var and $file_var are set; set one of them"
        exit 1
    fi
    local value=$default
    if [ -n "${!var:-}" ]; then
        value=${!var}
    elif [ -n "${!file_var:-}" ]; then
        value=$(<"${!file_var}")
    fi
    export "$var"="$value"
    unset "$file_var"
}

# psql as the superuser over the local socket, stopping at the first error
psql_init() {
    psql -v ON_ERROR_STOP=1 --no-psqlrc --no-password --username "$POSTGRES_USER" "$@"
}

init_cluster() {
    if [ -z "$POSTGRES_PASSWORD" ] && [ "${POSTGRES_HOST_AUTH_METHOD:-}" != trust ]; then
        say "the database is not initialised and POSTGRES_PASSWORD is not set: set it, or set"
        say "POSTGRES_HOST_AUTH_METHOD=trust to let everyone in without a password (unsafe)"
        exit 1
    fi
    trap 'say "initialisation failed: remove the contents of $PGDATA (the volume) before trying again"' ERR

    say "initialising a new cluster in $PGDATA"
    # shellcheck disable=SC2086 # POSTGRES_INITDB_ARGS is a list of arguments
    if [ -n "$POSTGRES_PASSWORD" ]; then
        initdb --username="$POSTGRES_USER" --pwfile=<(printf '%s\n' "$POSTGRES_PASSWORD") \
            ${POSTGRES_INITDB_ARGS:-}
    else
        initdb --username="$POSTGRES_USER" ${POSTGRES_INITDB_ARGS:-}
    fi
    # Local socket connections stay trusted, as initdb made them; the network needs the password
    printf '\nhost all all all %s\n' "${POSTGRES_HOST_AUTH_METHOD:-scram-sha-256}" >>"$PGDATA/pg_hba.conf"

    # A server only for the init scripts, reachable on the socket alone: nobody connects
    # over the network to a half-made database, and pg_isready -h says "no" until it is done
    pg_ctl -D "$PGDATA" -w -t 120 -o "-c listen_addresses='' -p ${PGPORT:-5432}" start
    export PGPASSWORD=${PGPASSWORD:-$POSTGRES_PASSWORD}
    if [ "$POSTGRES_DB" != postgres ]; then
        psql_init --dbname postgres --set db="$POSTGRES_DB" <<<'CREATE DATABASE :"db";'
    fi
    local f
    for f in /docker-entrypoint-initdb.d/*; do
        case $f in
        *.sh)
            if [ -x "$f" ]; then
                say "running $f"
                "$f"
            else
                say "sourcing $f"
                # shellcheck disable=SC1090
                . "$f"
            fi
            ;;
        *.sql)
            say "running $f"
            psql_init --dbname "$POSTGRES_DB" -f "$f"
            ;;
        *.sql.gz)
            say "running $f"
            gzip -dc "$f" | psql_init --dbname "$POSTGRES_DB"
            ;;
        *'/*') ;; # the folder is empty
        *) say "ignoring $f" ;;
        esac
    done
    unset PGPASSWORD
    pg_ctl -D "$PGDATA" -m fast -w stop
    trap - ERR
    say "initialisation done; starting the server"
}

if [ $# -eq 0 ] || [ "${1:0:1}" = - ]; then
    # "docker run postgres:15 -c work_mem=64MB": options of the server
    set -- postgres "$@"
fi
if [ "$1" != postgres ]; then
    # psql, bash, ...: run as given
    exec "$@"
fi

if [ "$(id -u)" = 0 ]; then
    # The data folder may be a new volume owned by root: give it to postgres, then run this
    # script again as postgres (the server refuses to run as root)
    mkdir -p "$PGDATA" /var/run/postgresql
    find "$PGDATA" \! -user postgres -exec chown postgres:postgres '{}' +
    chmod 700 "$PGDATA"
    chown postgres:postgres /var/run/postgresql
    chmod 3777 /var/run/postgresql
    export HOME=/var/lib/postgresql
    exec setpriv --reuid=postgres --regid=postgres --init-groups "${BASH_SOURCE[0]}" "$@"
fi

file_env POSTGRES_PASSWORD
file_env POSTGRES_USER postgres
file_env POSTGRES_DB "$POSTGRES_USER"
file_env POSTGRES_INITDB_ARGS

if [ ! -s "$PGDATA/PG_VERSION" ]; then
    init_cluster
fi
exec "$@"
