/*  crm_test_kit.h - what the unit tests that need PostgreSQL share: blocking SQL, a libev loop run until a condition, the log read back, a GetEvents service.
 *
 *  Functions are static inline, as the harness's counters in crm_test.h are
 *  static: the checks made here count in the test that includes it.
 */
#ifndef CRM_TEST_KIT_H_INCLUDED
#define CRM_TEST_KIT_H_INCLUDED

#include "crm_config.h"
#include "crm_log.h"
#include "crm_pg.h"
#include "crm_proto.h"
#include "crm_service.h"
#include "crm_test.h"

#include <ev.h>
#include <libpq-fe.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

//  --------------------------------------------------------------------------
//  Blocking SQL

//  The superuser DSN from CRM_TEST_DSN; NULL, having said "<name>: ...
//  skipping" on stdout, when it is not set (the test then exits 77).
static inline const char *
crm_test_dsn (const char *name)
{
    const char *dsn = getenv ("CRM_TEST_DSN");
    if (dsn && *dsn)
        return dsn;
    printf ("%s: CRM_TEST_DSN not set, skipping (needs PostgreSQL)\n", name);
    return NULL;
}

//  A blocking connection with notices off, on schema unless it is NULL;
//  exits the test when the server cannot be reached. Caller finishes it.
static inline PGconn *
crm_test_connect (const char *dsn, const char *schema)
{
    PGconn *conn = PQconnectdb (dsn);
    if (PQstatus (conn) != CONNECTION_OK) {
        fprintf (stderr, "could not connect: %s", PQerrorMessage (conn));
        exit (EXIT_FAILURE);
    }
    PQclear (PQexec (conn, "SET client_min_messages = warning"));
    if (schema) {
        char *quoted = PQescapeIdentifier (conn, schema, strlen (schema));
        char sql[256];
        snprintf (sql, sizeof sql, "SET search_path = %s", quoted);
        PQfreemem (quoted);
        PQclear (PQexec (conn, sql));
    }
    return conn;
}

//  Runs sql on conn: one check that it succeeded.
static inline void
crm_test_exec (PGconn *conn, const char *sql)
{
    PGresult *res = PQexec (conn, sql);
    bool ok = PQresultStatus (res) == PGRES_COMMAND_OK || PQresultStatus (res) == PGRES_TUPLES_OK;
    if (!ok)
        fprintf (stderr, "failed: %s: %s", sql, PQerrorMessage (conn));
    CHECK (ok);
    PQclear (res);
}

//  The single value sql returns on conn, as a number; -1 when it fails or is NULL.
static inline long long
crm_test_value (PGconn *conn, const char *sql)
{
    PGresult *res = PQexec (conn, sql);
    long long n = -1;
    if (PQresultStatus (res) == PGRES_TUPLES_OK && PQntuples (res) == 1 && !PQgetisnull (res, 0, 0))
        n = atoll (PQgetvalue (res, 0, 0));
    else if (PQresultStatus (res) != PGRES_TUPLES_OK)
        fprintf (stderr, "query failed: %s: %s", sql, PQerrorMessage (conn));
    PQclear (res);
    return n;
}

//  Drops a test's scratch schema and all it holds, if it is there.
static inline void
crm_test_schema_drop (PGconn *conn, const char *schema)
{
    char *quoted = PQescapeIdentifier (conn, schema, strlen (schema));
    char sql[256];
    snprintf (sql, sizeof sql, "DROP SCHEMA IF EXISTS %s CASCADE", quoted);
    PQfreemem (quoted);
    PQclear (PQexec (conn, sql));
}

//  --------------------------------------------------------------------------
//  The loop

static inline void
crm_test_tick_cb (struct ev_loop *loop, ev_timer *watcher, int revents)
{
    (void) loop;
    (void) watcher;
    (void) revents;
}

//  Runs loop until cond (arg) holds or timeout seconds pass; true if it held.
//  A tick every millisecond wakes the loop to look at the clock.
static inline bool
crm_test_run_until (struct ev_loop *loop, bool (*cond) (void *), void *arg, double timeout)
{
    ev_timer tick;
    ev_timer_init (&tick, crm_test_tick_cb, 0.001, 0.001);
    ev_timer_start (loop, &tick);
    ev_now_update (loop);
    double deadline = ev_now (loop) + timeout;
    bool held;
    while (!(held = cond (arg)) && ev_now (loop) < deadline)
        ev_run (loop, EVRUN_ONCE);
    ev_timer_stop (loop, &tick);
    return held;
}

static inline bool
crm_test_never (void *arg)
{
    (void) arg;
    return false;
}

//  Runs loop for seconds.
static inline void
crm_test_run_for (struct ev_loop *loop, double seconds)
{
    crm_test_run_until (loop, crm_test_never, NULL, seconds);
}

//  Conditions on a crm_pg_t, for crm_test_run_until.
static inline bool
crm_test_pg_connected (void *pg)
{
    return crm_pg_connected ((crm_pg_t *) pg);
}

static inline bool
crm_test_pg_disconnected (void *pg)
{
    return !crm_pg_connected ((crm_pg_t *) pg);
}

static inline bool
crm_test_pg_idle (void *pg)
{
    return crm_pg_pending ((crm_pg_t *) pg) == 0;
}

//  A crm_pg on schema, run until connected; both checked. Caller destroys.
static inline crm_pg_t *
crm_test_pg_new (struct ev_loop *loop, const char *dsn, const char *schema)
{
    crm_pg_t *pg = crm_pg_new (loop, dsn, schema);
    CHECK (pg != NULL);
    CHECK (crm_test_run_until (loop, crm_test_pg_connected, pg, 10));
    return pg;
}

//  --------------------------------------------------------------------------
//  A service answering GetEvents, as every service with an event log does

//  The proto service of one rpc, GetEvents
static const ProtobufCMethodDescriptor crm_test_events_methods[] = {
    {"GetEvents", &crm__v1__get_events_request__descriptor,
     &crm__v1__get_events_response__descriptor},
};
static const unsigned crm_test_events_method_index[] = {0};
static const ProtobufCServiceDescriptor crm_test_events_service = {
    PROTOBUF_C__SERVICE_DESCRIPTOR_MAGIC,
    "crm.v1.EventsTest",
    "EventsTest",
    "Crm__V1__EventsTest",
    "crm.v1",
    1,
    crm_test_events_methods,
    crm_test_events_method_index,
};

//  A crm_service called name on loop that answers GetEvents with get, given
//  ctx; a check that it could be made. Its configuration, read from the
//  environment (CRM_BROKER_ENDPOINT), goes to *config_p. Caller destroys the
//  service, then the configuration.
static inline crm_service_t *
crm_test_events_service_new (struct ev_loop *loop, const char *name, crm_handler_fn *get, void *ctx,
                             crm_config_t **config_p)
{
    static const crm_config_var_t vars[] = {CRM_SERVICE_CONFIG_VARS, {NULL, NULL, NULL}};
    *config_p = crm_config_new (name, "test", vars);
    const crm_method_t methods[] = {{"GetEvents", get}, {NULL, NULL}};
    crm_service_t *service =
        crm_service_new (loop, *config_p, name, &crm_test_events_service, methods, ctx);
    CHECK (service != NULL);
    return service;
}

//  --------------------------------------------------------------------------
//  The log, kept in a temporary file so that checks can read it back

//  Initialises crm_log for the test called name at level, in text, into a
//  temporary file, for crm_test_file_text. Caller ends it with crm_test_log_end.
static inline FILE *
crm_test_log_capture (const char *name, const char *level)
{
    FILE *log = tmpfile ();
    crm_log_init (name, NULL, level, "text");
    crm_log_set_stream (log);
    return log;
}

//  Stops writing into *log_p and closes it, first copying what it holds to
//  stderr when show is true.
static inline void
crm_test_log_end (FILE **log_p, bool show)
{
    crm_log_set_stream (NULL);
    if (show) {
        char *text = crm_test_file_text (*log_p);
        fputs (text, stderr);
        free (text);
    }
    fclose (*log_p);
    *log_p = NULL;
}

#endif
