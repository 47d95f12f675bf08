#!/usr/bin/env bash
# deploy/initdb/10-service-roles.sh - one login role per service in the suite's database, run by the
# postgres image on its first start (from /docker-entrypoint-initdb.d).
#
# Every variable CRM_<NAME>_DB_PASSWORD in the environment makes (or updates) the role <name>,
# lower case, with that password, allowed to create its own schema in $POSTGRES_DB: each
# service creates and migrates its schema itself. Safe to run again, for instance after adding
# a service to a database that already exists:
#   docker compose exec postgres bash /docker-entrypoint-initdb.d/10-service-roles.sh

crm_service_roles() {
    local var role count=0
    for var in $(compgen -e); do
        case $var in
        CRM_*_DB_PASSWORD) ;;
        *) continue ;;
        esac
        role=${var#CRM_}
        role=${role%_DB_PASSWORD}
        role=${role,,}
        if [ -z "${!var}" ]; then
            echo "10-service-roles: $var is empty: no role $role" >&2
            continue
        fi
        psql -v ON_ERROR_STOP=1 --no-psqlrc --no-password -q \
            --username "${POSTGRES_USER:-postgres}" --dbname "${POSTGRES_DB:-postgres}" \
            --set role="$role" --set password="${!var}" <<'SQL' || return 1
SELECT format('CREATE ROLE %I LOGIN', :'role')
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'role') \gexec
ALTER ROLE :"role" WITH LOGIN PASSWORD :'password';
SELECT format('GRANT CREATE ON DATABASE %I TO %I', current_database(), :'role') \gexec
SQL
        echo "10-service-roles: role $role may create its schema in ${POSTGRES_DB:-postgres}" >&2
        count=$((count + 1))
    done
    if [ $count -eq 0 ]; then
        echo "10-service-roles: no CRM_<NAME>_DB_PASSWORD variable set: no service role made" >&2
    fi
}

# Sourced by the entrypoint or run on its own: either way a failure must show
if ! crm_service_roles; then
    echo "10-service-roles: could not make the service roles" >&2
    exit 1
fi
unset -f crm_service_roles
