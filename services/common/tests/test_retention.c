/*  test_retention.c - old request ids forgotten and the event log trimmed, in bounded batches, on a timer. */
#include "crm_migrate.h"
#include "crm_retention.h"
#include "crm_test_kit.h"

#include <ev.h>
#include <stdlib.h>

#define SCHEMA "test_retention"

static const char *s_dsn;
static PGconn *s_admin;
static struct ev_loop *s_loop;
static FILE *s_log;

static const crm_config_var_t s_vars[] = {CRM_RETENTION_CONFIG_VARS, {NULL, NULL, NULL}};

//  A configuration whose windows are a day, with the interval given.
static crm_config_t *
s_config (const char *idem_keep_s, const char *events_keep_s, const char *interval_s)
{
    setenv ("CRM_IDEMPOTENCY_KEEP_S", idem_keep_s, 1);
    setenv ("CRM_EVENTS_KEEP_S", events_keep_s, 1);
    setenv ("CRM_RETENTION_INTERVAL_S", interval_s, 1);
    return crm_config_new ("test_retention", "test", s_vars);
}

//  old request ids created two days ago and young ones now; old events
//  two days ago, then young ones, all positioned; the counter at the last.
static void
s_fill (int old_ids, int young_ids, int old_events, int young_events)
{
    crm_test_exec (s_admin, "TRUNCATE crm_idempotency, crm_outbox");
    char sql[512];
    snprintf (sql, sizeof sql,
              "INSERT INTO crm_idempotency (request_id, method, fingerprint, reply, created_at) "
              "SELECT 'old-' || i, 'M', 'f', '{}', now() - interval '2 days' "
              "FROM generate_series (1, %d) i",
              old_ids);
    crm_test_exec (s_admin, sql);
    snprintf (sql, sizeof sql,
              "INSERT INTO crm_idempotency (request_id, method, fingerprint, reply) "
              "SELECT 'young-' || i, 'M', 'f', '{}' FROM generate_series (1, %d) i",
              young_ids);
    crm_test_exec (s_admin, sql);
    snprintf (sql, sizeof sql,
              "INSERT INTO crm_outbox (topic, payload, position, created_at) "
              "SELECT 'test.Thing', '{}', i, "
              "       CASE WHEN i <= %d THEN now() - interval '2 days' ELSE now() END "
              "FROM generate_series (1, %d) i",
              old_events, old_events + young_events);
    crm_test_exec (s_admin, sql);
    snprintf (sql, sizeof sql, "UPDATE crm_event_counter SET last_position = %d",
              old_events + young_events);
    crm_test_exec (s_admin, sql);
}

static bool
s_idle (void *retention)
{
    return !crm_retention_busy (retention);
}

//  One run, to its end; false when it did not end within 10 s.
static bool
s_run (crm_retention_t *retention)
{
    crm_retention_run (retention);
    return crm_test_run_until (s_loop, s_idle, retention, 10);
}

static bool
s_forgot_some (void *retention)
{
    return crm_retention_forgotten (retention) > 0 && !crm_retention_busy (retention);
}

static bool
s_forgot_five (void *retention)
{
    return crm_retention_forgotten (retention) >= 5;
}

static bool
s_chores_done (void *retention)
{
    return crm_retention_count (retention, "chore") >= 2345 && !crm_retention_busy (retention);
}

static void
test_run (void)
{
    crm_config_t *config = s_config ("86400", "86400", "3600");
    crm_pg_t *pg = crm_test_pg_new (s_loop, s_dsn, SCHEMA);
    crm_retention_t *retention = crm_retention_new (s_loop, pg, config);
    CHECK (retention != NULL);

    //  A backlog of more than two batches of each goes in one run
    s_fill (2500, 10, 2300, 10);
    crm_retention_run (retention);
    CHECK (crm_retention_busy (retention));
    crm_retention_run (retention); //  a run is going on: nothing more
    CHECK (crm_test_run_until (s_loop, s_idle, retention, 20));
    CHECK_INT (crm_retention_forgotten (retention), 2500);
    CHECK_INT (crm_retention_trimmed (retention), 2300);
    CHECK_INT (crm_test_value (s_admin, "SELECT count(*) FROM crm_idempotency"), 10);
    CHECK_INT (crm_test_value (s_admin, "SELECT count(*) FROM crm_idempotency "
                                        "WHERE request_id LIKE 'young-%'"),
               10);
    CHECK_INT (crm_test_value (s_admin, "SELECT min(position) FROM crm_outbox"), 2301);
    CHECK_INT (crm_test_value (s_admin, "SELECT count(*) FROM crm_outbox"), 10);
    char *text = crm_test_file_text (s_log);
    CHECK (strstr (text, "retention: 2500 request ids forgotten, 2300 events trimmed") != NULL);
    free (text);

    //  Nothing old: a run deletes nothing
    CHECK (s_run (retention));
    CHECK_INT (crm_retention_forgotten (retention), 2500);
    CHECK_INT (crm_retention_trimmed (retention), 2300);

    //  Every event old: the newest stays, so positions go on from it
    s_fill (0, 0, 1500, 0);
    CHECK (s_run (retention));
    CHECK_INT (crm_retention_trimmed (retention), 2300 + 1499);
    CHECK_INT (crm_test_value (s_admin, "SELECT position FROM crm_outbox"), 1500);

    //  An event log with no positioned event yet: nothing to do
    s_fill (0, 0, 0, 0);
    crm_test_exec (s_admin, "INSERT INTO crm_outbox (topic, payload, created_at) "
                            "VALUES ('test.Thing', '{}', now() - interval '2 days')");
    CHECK (s_run (retention));
    CHECK_INT (crm_test_value (s_admin, "SELECT count(*) FROM crm_outbox"), 1);

    crm_retention_destroy (&retention);
    crm_retention_destroy (&retention);
    CHECK (retention == NULL);
    crm_pg_destroy (&pg);
    crm_config_destroy (&config);
}

//  0 keeps for ever, one window each
static void
test_windows (void)
{
    crm_pg_t *pg = crm_test_pg_new (s_loop, s_dsn, SCHEMA);
    crm_config_t *config = s_config ("0", "86400", "3600");
    crm_retention_t *retention = crm_retention_new (s_loop, pg, config);
    s_fill (5, 1, 5, 1);
    CHECK (s_run (retention));
    CHECK_INT (crm_retention_forgotten (retention), 0);
    CHECK_INT (crm_retention_trimmed (retention), 5);
    CHECK_INT (crm_test_value (s_admin, "SELECT count(*) FROM crm_idempotency"), 6);
    crm_retention_destroy (&retention);
    crm_config_destroy (&config);
    crm_pg_destroy (&pg);

    //  The windows are whole seconds: an id a minute old outlives a 2-minute window
    pg = crm_test_pg_new (s_loop, s_dsn, SCHEMA);
    config = s_config ("120", "0", "3600");
    retention = crm_retention_new (s_loop, pg, config);
    s_fill (5, 0, 5, 1);
    crm_test_exec (s_admin, "UPDATE crm_idempotency SET created_at = now() - interval '1 minute' "
                            "WHERE request_id = 'old-1'");
    CHECK (s_run (retention));
    CHECK_INT (crm_retention_forgotten (retention), 4);
    CHECK_INT (crm_retention_trimmed (retention), 0);
    CHECK_INT (crm_test_value (s_admin, "SELECT count(*) FROM crm_outbox"), 6);
    crm_retention_destroy (&retention);
    crm_config_destroy (&config);

    //  Both for ever: a run does nothing at all
    config = s_config ("0", "0", "3600");
    retention = crm_retention_new (s_loop, pg, config);
    crm_retention_run (retention);
    CHECK (!crm_retention_busy (retention));
    CHECK_INT (crm_pg_pending (pg), 0);
    crm_retention_destroy (&retention);
    crm_config_destroy (&config);

    //  Settings out of range: no retention, an error line each
    const char *bad[][3] = {{"-1", "0", "600"}, {"0", "x", "600"}, {"0", "0", "0"}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        config = s_config (bad[i][0], bad[i][1], bad[i][2]);
        CHECK (crm_retention_new (s_loop, pg, config) == NULL);
        crm_config_destroy (&config);
    }
    crm_pg_destroy (&pg);
}

//  The timer starts runs by itself, the first within the interval
static void
test_timer (void)
{
    crm_pg_t *pg = crm_test_pg_new (s_loop, s_dsn, SCHEMA);
    crm_config_t *config = s_config ("86400", "86400", "1");
    crm_retention_t *retention = crm_retention_new (s_loop, pg, config);
    s_fill (3, 0, 0, 0);
    CHECK (crm_test_run_until (s_loop, s_forgot_some, retention, 3));
    CHECK_INT (crm_retention_forgotten (retention), 3);
    //  And again, an interval later
    s_fill (2, 0, 0, 0);
    CHECK (crm_test_run_until (s_loop, s_forgot_five, retention, 3));
    CHECK_INT (crm_retention_forgotten (retention), 5);
    crm_retention_destroy (&retention);
    crm_config_destroy (&config);
    crm_pg_destroy (&pg);
}

//  A statement of the service's own, in every run after the built-in ones,
//  called again while it deals with a full batch; it starts the timer the
//  windows left off
static void
test_added (void)
{
    crm_test_exec (s_admin, "CREATE TABLE IF NOT EXISTS chore (n int)");
    crm_test_exec (s_admin, "TRUNCATE chore");
    crm_test_exec (s_admin, "INSERT INTO chore SELECT generate_series (1, 2345)");
    crm_test_exec (s_admin, "CREATE OR REPLACE FUNCTION chore_do (p_limit int) RETURNS bigint "
                            "LANGUAGE sql AS $$ WITH gone AS (DELETE FROM chore WHERE n IN "
                            "(SELECT n FROM chore ORDER BY n LIMIT p_limit) RETURNING 1) "
                            "SELECT count(*) FROM gone $$");
    crm_pg_t *pg = crm_test_pg_new (s_loop, s_dsn, SCHEMA);
    crm_config_t *config = s_config ("0", "0", "1");
    crm_retention_t *retention = crm_retention_new (s_loop, pg, config);
    CHECK_INT (crm_retention_count (retention, "chore"), -1);
    crm_retention_add (retention, "chore", "SELECT chore_do ($1::int)", "chores done");
    CHECK_INT (crm_retention_count (retention, "chore"), 0);
    //  The timer's first run comes within the interval, 1 s
    CHECK (crm_test_run_until (s_loop, s_chores_done, retention, 3));
    CHECK_INT (crm_retention_count (retention, "chore"), 2345);
    CHECK_INT (crm_test_value (s_admin, "SELECT count(*) FROM chore"), 0);
    CHECK_INT (crm_retention_forgotten (retention), 0);
    char *text = crm_test_file_text (s_log);
    CHECK (strstr (text, "retention: 2345 chores done") != NULL);
    free (text);

    //  A failing statement: an error line, and the statements after it still run;
    //  the next run tries it again
    crm_test_exec (s_admin, "CREATE OR REPLACE FUNCTION chore_count (p_limit int) RETURNS bigint "
                            "LANGUAGE sql AS $$ SELECT 1::bigint WHERE p_limit > 0 $$");
    crm_retention_add (retention, "counted", "SELECT chore_count ($1::int)", "runs counted");
    crm_test_exec (s_admin, "ALTER TABLE chore RENAME TO chore_away");
    CHECK (s_run (retention));
    text = crm_test_file_text (s_log);
    CHECK (strstr (text, "retention: chore failed") != NULL);
    free (text);
    CHECK_INT (crm_retention_count (retention, "counted"), 1);
    crm_test_exec (s_admin, "ALTER TABLE chore_away RENAME TO chore");
    crm_test_exec (s_admin, "INSERT INTO chore VALUES (1)");
    CHECK (s_run (retention));
    CHECK_INT (crm_retention_count (retention, "chore"), 2346);
    crm_retention_destroy (&retention);
    crm_config_destroy (&config);
    crm_pg_destroy (&pg);
    crm_test_exec (s_admin, "DROP TABLE chore");
    crm_test_exec (s_admin, "DROP FUNCTION chore_count (int)");
}

static bool
s_both_idle (void *arg)
{
    crm_retention_t **pair = arg;
    return !crm_retention_busy (pair[0]) && !crm_retention_busy (pair[1]);
}

//  Two instances at once share the work and delete each row once; one
//  destroyed with its statement in flight frees itself when it is answered;
//  the database away: no run, and the next one works
static void
test_instances (void)
{
    crm_config_t *config = s_config ("86400", "86400", "3600");
    crm_pg_t *pg1 = crm_test_pg_new (s_loop, s_dsn, SCHEMA);
    crm_pg_t *pg2 = crm_test_pg_new (s_loop, s_dsn, SCHEMA);
    crm_retention_t *pair[2] = {crm_retention_new (s_loop, pg1, config),
                                crm_retention_new (s_loop, pg2, config)};
    s_fill (5000, 3, 4000, 3);
    crm_retention_run (pair[0]);
    crm_retention_run (pair[1]);
    CHECK (crm_test_run_until (s_loop, s_both_idle, pair, 30));
    CHECK_INT (crm_retention_forgotten (pair[0]) + crm_retention_forgotten (pair[1]), 5000);
    CHECK_INT (crm_retention_trimmed (pair[0]) + crm_retention_trimmed (pair[1]), 4000);
    CHECK_INT (crm_test_value (s_admin, "SELECT count(*) FROM crm_idempotency"), 3);
    CHECK_INT (crm_test_value (s_admin, "SELECT min(position) FROM crm_outbox"), 4001);

    s_fill (10, 0, 0, 0);
    crm_retention_run (pair[0]);
    crm_retention_destroy (&pair[0]);
    CHECK (crm_test_run_until (s_loop, crm_test_pg_idle, pg1, 10));
    CHECK_INT (crm_test_value (s_admin, "SELECT count(*) FROM crm_idempotency"), 0);

    //  Destroyed in flight, then its connection destroyed: answered UNAVAILABLE, freed
    s_fill (10, 0, 0, 0);
    crm_retention_run (pair[1]);
    crm_retention_destroy (&pair[1]);
    crm_pg_destroy (&pg2);
    crm_pg_destroy (&pg1);

    crm_pg_t *down = crm_pg_new (s_loop, "host=127.0.0.1 port=1 connect_timeout=1", SCHEMA);
    crm_retention_t *retention = crm_retention_new (s_loop, down, config);
    crm_retention_run (retention);
    CHECK (!crm_retention_busy (retention));
    CHECK_INT (crm_retention_forgotten (retention), 0);
    crm_retention_destroy (&retention);
    crm_pg_destroy (&down);
    crm_config_destroy (&config);
}

int
main (void)
{
    s_dsn = crm_test_dsn ("test_retention");
    if (!s_dsn)
        return 77;
    s_log = crm_test_log_capture ("test_retention", "info");
    s_admin = crm_test_connect (s_dsn, NULL);
    crm_test_schema_drop (s_admin, SCHEMA);
    CHECK_INT (crm_migrate (s_dsn, SCHEMA, NULL, 0), 0);
    crm_test_exec (s_admin, "SET search_path = " SCHEMA);
    s_loop = ev_loop_new (EVFLAG_AUTO);

    RUN (test_run);
    RUN (test_windows);
    RUN (test_timer);
    RUN (test_added);
    RUN (test_instances);

    ev_loop_destroy (s_loop);
    crm_test_schema_drop (s_admin, SCHEMA);
    PQfinish (s_admin);
    crm_test_log_end (&s_log, false);
    return TEST_DONE ("test_retention");
}
