/*  crm_migrate.c - numbered SQL migrations embedded in a binary, applied once under an advisory lock.
 *
 *  Blocking libpq: this runs at start-up, before the loop. The advisory lock
 *  is taken before CREATE SCHEMA IF NOT EXISTS, not after: two sessions
 *  creating the same schema at once can both pass the IF NOT EXISTS check and
 *  one then fails on the catalog's unique index.
 */
#include "crm_migrate.h"
#include "crm_log.h"
#include "crm_pg.h"
#include "crm_util.h"

#include <libpq-fe.h>

#include <assert.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

//  The first line of a failed result's message, without libpq's severity prefix.
static const char *
s_message (const PGresult *res, PGconn *conn, char *out, size_t size)
{
    const char *msg = res ? PQresultErrorField (res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    if (!msg)
        msg = res ? PQresultErrorMessage (res) : PQerrorMessage (conn);
    if (!msg || !*msg)
        msg = PQerrorMessage (conn);
    crm_pg_message (out, size, msg);
    return out;
}

//  Runs sql with text parameters; 0 when it succeeded. what names the step
//  in the error log line.
static int
s_exec (PGconn *conn, const char *what, const char *sql, int nparams, const char *const *values)
{
    PGresult *res = nparams ? PQexecParams (conn, sql, nparams, NULL, values, NULL, NULL, 0)
                            : PQexec (conn, sql);
    ExecStatusType status = PQresultStatus (res);
    int rc = 0;
    if (status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK) {
        char msg[512];
        crm_error ("could not %s: %s", what, s_message (res, conn, msg, sizeof msg));
        rc = -1;
    }
    PQclear (res);
    return rc;
}

static void
s_notice_cb (void *arg, const PGresult *res)
{
    (void) arg;
    char msg[512];
    crm_debug ("database: %s", s_message (res, NULL, msg, sizeof msg));
}

//  Refuses a table whose versions are not strictly increasing (or not
//  positive, or without text).
static int
s_check (const char *component, const crm_migration_t *migrations, size_t count)
{
    int last = 0;
    for (size_t i = 0; i < count; i++) {
        const crm_migration_t *m = &migrations[i];
        if (!m->name || !m->sql || m->version <= last) {
            crm_error ("migrations of \"%s\" are not in strictly increasing version order at "
                       "\"%s\"",
                       component, m->name ? m->name : "(unnamed)");
            return -1;
        }
        last = m->version;
    }
    return 0;
}

//  Applies the migrations of one component that schema's crm_migrations does
//  not list yet, each in its own transaction.
static int
s_apply (PGconn *conn, const char *schema, const char *component, const crm_migration_t *migrations,
         size_t count)
{
    const char *params[] = {component};
    PGresult *res = PQexecParams (conn, "SELECT version FROM crm_migrations WHERE component = $1",
                                  1, NULL, params, NULL, NULL, 0);
    if (PQresultStatus (res) != PGRES_TUPLES_OK) {
        char msg[512];
        crm_error ("could not read applied migrations of \"%s\": %s", component,
                   s_message (res, conn, msg, sizeof msg));
        PQclear (res);
        return -1;
    }
    int applied_count = PQntuples (res);
    int *applied = calloc ((size_t) applied_count + 1, sizeof (int));
    if (!applied) {
        PQclear (res);
        return -1;
    }
    for (int i = 0; i < applied_count; i++)
        applied[i] = atoi (PQgetvalue (res, i, 0));
    PQclear (res);

    int rc = 0;
    for (size_t i = 0; i < count && rc == 0; i++) {
        const crm_migration_t *m = &migrations[i];
        bool done = false;
        for (int j = 0; j < applied_count && !done; j++)
            done = applied[j] == m->version;
        if (done)
            continue;

        char version[16];
        snprintf (version, sizeof version, "%d", m->version);
        const char *values[] = {component, version, m->name};
        if (s_exec (conn, "begin a migration", "BEGIN", 0, NULL)) {
            rc = -1;
            break;
        }
        //  PQexec: a migration may hold several statements
        res = PQexec (conn, m->sql);
        if (PQresultStatus (res) != PGRES_COMMAND_OK && PQresultStatus (res) != PGRES_TUPLES_OK) {
            char msg[512];
            crm_error ("could not apply migration \"%s\" to schema \"%s\": %s", m->name, schema,
                       s_message (res, conn, msg, sizeof msg));
            rc = -1;
        }
        PQclear (res);
        if (rc == 0 && s_exec (conn, "record a migration",
                               "INSERT INTO crm_migrations (component, version, name, applied_at) "
                               "VALUES ($1, $2::int, $3, now())",
                               3, values))
            rc = -1;
        if (rc == 0 && s_exec (conn, "commit a migration", "COMMIT", 0, NULL))
            rc = -1;
        if (rc == 0)
            crm_info ("applied migration \"%s\" to schema \"%s\"", m->name, schema);
        else {
            PQclear (PQexec (conn, "ROLLBACK"));
            crm_error ("migration \"%s\" of schema \"%s\" failed; nothing of it was applied",
                       m->name, schema);
        }
    }
    free (applied);
    return rc;
}

int
crm_migrate (const char *dsn, const char *schema, const crm_migration_t *migrations, size_t count)
{
    assert (dsn);
    assert (schema && *schema);
    assert (migrations || count == 0);
    //  "crm" names libcrm's own migrations in crm_migrations
    if (strcmp (schema, "crm") == 0 && count > 0) {
        crm_error ("schema \"crm\" is reserved for libcrm's own migrations");
        return -1;
    }
    if (s_check ("crm", crm_common_migrations, crm_common_migrations_count) ||
        s_check (schema, migrations, count))
        return -1;

    PGconn *conn = PQconnectdb (dsn);
    if (PQstatus (conn) != CONNECTION_OK) {
        char msg[512];
        crm_error ("could not connect to database: %s", s_message (NULL, conn, msg, sizeof msg));
        PQfinish (conn);
        return -1;
    }
    PQsetNoticeReceiver (conn, s_notice_cb, NULL);

    int rc = -1;
    bool locked = false;
    char *quoted = PQescapeIdentifier (conn, schema, strlen (schema));
    char *create = NULL;
    const char *params[] = {schema, quoted};
    if (!quoted)
        goto done;
    if (s_exec (conn, "take the migration lock", "SELECT pg_advisory_lock(hashtext($1))", 1,
                params))
        goto done;
    locked = true;

    create = malloc (strlen (quoted) + 32);
    if (!create)
        goto done;
    sprintf (create, "CREATE SCHEMA IF NOT EXISTS %s", quoted);
    if (s_exec (conn, "create the schema", create, 0, NULL) ||
        s_exec (conn, "set search_path", "SELECT pg_catalog.set_config('search_path', $1, false)",
                1, params + 1) ||
        s_exec (conn, "create crm_migrations",
                "CREATE TABLE IF NOT EXISTS crm_migrations ("
                "component text NOT NULL, version int NOT NULL, name text NOT NULL, "
                "applied_at timestamptz NOT NULL DEFAULT now(), "
                "PRIMARY KEY (component, version))",
                0, NULL))
        goto done;

    if (s_apply (conn, schema, "crm", crm_common_migrations, crm_common_migrations_count) ||
        s_apply (conn, schema, schema, migrations, count))
        goto done;
    rc = 0;

done:
    if (locked)
        s_exec (conn, "release the migration lock", "SELECT pg_advisory_unlock(hashtext($1))", 1,
                params);
    free (create);
    PQfreemem (quoted);
    PQfinish (conn);
    return rc;
}

int
crm_migrate_wait (const char *dsn, const char *schema, const crm_migration_t *migrations,
                  size_t count, long wait_s)
{
    int64_t give_up = crm_mono_ms () + wait_s * 1000;
    while (crm_migrate (dsn, schema, migrations, count) != 0) {
        if (crm_mono_ms () >= give_up) {
            crm_error ("database not ready after %ld s, giving up", wait_s);
            return -1;
        }
        sleep (1);
    }
    return 0;
}
