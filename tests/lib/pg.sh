# tests/lib/pg.sh - start and stop a throwaway PostgreSQL cluster for tests, benchmarks and `make run`; free ports.
# Source it, then: pg_start DIR [fsync on|off]; ... ; pg_stop DIR
# pg_start exports PGHOST, PGPORT, PGUSER and CRM_TEST_DSN (a superuser DSN).

PG_BINDIR=${PG_BINDIR:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)}

# Runs a PostgreSQL program as the cluster's owner: the server refuses to run as root.
pg_as_owner() {
    if [ "$(id -u)" -eq 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

# free_ports N: N distinct free TCP ports on the loopback, bound together so none repeats
free_ports() {
    python3 - "$1" <<'PY'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
PY
}

pg_free_port() {
    free_ports 1
}

# pg_start DIR [on|off]: initialise DIR/data if missing, start on a free port (or $PGPORT_WANTED).
# Sorting stays bytewise (C) but character classes are Unicode (C.UTF-8): lower() and pg_trgm
# must see Cyrillic and accented letters as letters, as they do in the Docker image.
pg_start() {
    local dir=$1 fsync=${2:-off}
    mkdir -p "$dir"
    if [ "$(id -u)" -eq 0 ]; then chown postgres: "$dir"; fi
    if [ ! -f "$dir/data/PG_VERSION" ]; then
        pg_as_owner "$PG_BINDIR/initdb" --nosync --auth=trust --username=postgres \
            --encoding=UTF8 --locale=C --lc-ctype=C.UTF-8 -D "$dir/data" >"$dir/initdb.log" 2>&1 || {
            cat "$dir/initdb.log" >&2
            return 1
        }
    fi
    local port=${PGPORT_WANTED:-$(pg_free_port)}
    pg_as_owner "$PG_BINDIR/pg_ctl" -w -t 60 -D "$dir/data" -l "$dir/server.log" \
        -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=$fsync -c synchronous_commit=on -c max_connections=200" \
        start >/dev/null || {
        cat "$dir/server.log" >&2
        return 1
    }
    export PGHOST=127.0.0.1 PGPORT=$port PGUSER=postgres
    export CRM_TEST_DSN="host=127.0.0.1 port=$port user=postgres dbname=postgres"
}

pg_stop() {
    local dir=$1
    [ -f "$dir/data/postmaster.pid" ] || return 0
    pg_as_owner "$PG_BINDIR/pg_ctl" -w -D "$dir/data" -m fast stop >/dev/null 2>&1 || true
}

# pg_service_db SCHEMA: creates the database "crm" and the role and schema of one service
# (idempotent), and prints the service's DSN.
pg_service_db() {
    local name=$1
    psql -q -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = 'crm'" | grep -q 1 ||
        { psql -q -d postgres -c "CREATE DATABASE crm" >/dev/null || return 1; }
    psql -q -v ON_ERROR_STOP=1 -d crm >/dev/null <<SQL || return 1
DO \$\$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$name') THEN
    CREATE ROLE $name LOGIN;
  END IF;
END \$\$;
CREATE SCHEMA IF NOT EXISTS $name AUTHORIZATION $name;
GRANT CREATE ON DATABASE crm TO $name;
SQL
    echo "host=$PGHOST port=$PGPORT user=$name dbname=crm"
}
