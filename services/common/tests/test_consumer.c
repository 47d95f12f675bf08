/*  test_consumer.c - the event consumer against a real PostgreSQL, the real broker and a real source: exactly once, in order. */
#include "crm_config.h"
#include "crm_consumer.h"
#include "crm_events.h"
#include "crm_log.h"
#include "crm_migrate.h"
#include "crm_pg.h"
#include "crm_proto.h"
#include "crm_service.h"
#include "crm_util.h"
#include "crm_test.h"
#include "crm_test_broker.h"
#include "crm_test_kit.h"

//  The broker is compiled into this test: GetEvents and the live wake-ups go
//  through a real one
#include "../../broker/broker.c"
#include "../../broker/zap.c"

#include <ev.h>
#include <libpq-fe.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define SOURCE     "testsrc"           //  The source service, and its topics' prefix
#define SRC_SCHEMA "test_consumer_src" //  Its schema: the event log
#define DST_SCHEMA "test_consumer_dst" //  The consuming service's schema
#define TOPIC      SOURCE ".Money"     //  Events carry a crm.v1.Money
#define APPLY_SQL  "SELECT test_apply ($1::bigint, $2, $3::jsonb)"

static const char *s_dsn; //  Superuser DSN from CRM_TEST_DSN
static PGconn *s_src;     //  Blocking connection to the source's schema
static PGconn *s_dst;     //  Blocking connection to the consumer's schema
static struct ev_loop *s_loop;
static FILE *s_log;         //  Where crm_log writes, read back by some checks
static long long s_emitted; //  Events emitted so far; event i carries minorUnits i

//  --------------------------------------------------------------------------
//  Blocking SQL

//  Emits n events in one transaction of the source, minorUnits counting on.
static void
s_emit (int n)
{
    char sql[256];
    snprintf (sql, sizeof sql,
              "SELECT crm_event_emit ('" TOPIC "', jsonb_build_object ('minorUnits', i, "
              "'currency', 'EUR'), 'e-' || i) FROM generate_series (%lld, %lld) i",
              s_emitted + 1, s_emitted + n);
    crm_test_exec (s_src, sql);
    s_emitted += n;
}

//  The position stored for the source in the consumer's schema.
static long long
s_stored (void)
{
    return crm_test_value (s_dst, "SELECT coalesce ((SELECT position FROM crm_consumer_position "
                                  "WHERE source = '" SOURCE "'), 0)");
}

//  True when events 1..n were each applied exactly once, in order, with
//  their own payloads, and the stored position is n.
static bool
s_applied_once_in_order (long long n)
{
    long long count = crm_test_value (s_dst, "SELECT count(*) FROM applied");
    long long distinct = crm_test_value (s_dst, "SELECT count(DISTINCT position) FROM applied");
    long long out_of_order =
        crm_test_value (s_dst, "SELECT count(*) FROM (SELECT position, lag (position) OVER "
                               "(ORDER BY id) AS prev FROM applied) x "
                               "WHERE position <> coalesce (prev, 0) + 1");
    long long wrong =
        crm_test_value (s_dst, "SELECT count(*) FROM applied "
                               "WHERE units IS DISTINCT FROM position OR topic <> '" TOPIC "'");
    long long stored = s_stored ();
    bool ok = count == n && distinct == n && out_of_order == 0 && wrong == 0 && stored == n;
    if (!ok)
        fprintf (stderr,
                 "applied: %lld rows, %lld positions, %lld out of order, %lld wrong, stored "
                 "%lld; wanted %lld\n",
                 count, distinct, out_of_order, wrong, stored, n);
    return ok;
}

//  --------------------------------------------------------------------------
//  The loop

typedef struct {
    crm_consumer_t *consumer;
    int64_t want;
} s_at_t;

static bool
s_at (void *arg)
{
    s_at_t *at = arg;
    return crm_consumer_position (at->consumer) >= at->want;
}

static bool
s_at_exactly (void *arg)
{
    s_at_t *at = arg;
    return crm_consumer_position (at->consumer) == at->want;
}

//  Runs the loop until consumer knows it applied up to want.
static bool
s_wait_position (crm_consumer_t *consumer, int64_t want, double timeout)
{
    s_at_t at = {consumer, want};
    return crm_test_run_until (s_loop, s_at, &at, timeout);
}

//  --------------------------------------------------------------------------
//  The source: a service of its own answering GetEvents, and a broker

static crm_test_broker_t s_broker;

typedef struct {
    crm_pg_t *pg;
    crm_events_t *events;
    crm_config_t *config;
    crm_service_t *service;
} s_source_t;

static s_source_t s_source;

static void
s_handle_get (crm_call_t *call, ProtobufCMessage *request, void *ctx)
{
    s_source_t *source = ctx;
    crm_events_handle_get (source->events, call, (Crm__V1__GetEventsRequest *) request);
}

//  Starts the source; live fan-out on the broker unless live is false.
static void
s_source_start (bool live)
{
    s_source.pg = crm_test_pg_new (s_loop, s_dsn, SRC_SCHEMA);
    s_source.events = crm_events_new (s_loop, s_source.pg, SOURCE,
                                      live ? broker_events_in (s_broker.broker) : NULL);
    CHECK (s_source.events != NULL);
    crm_events_set_interval (s_source.events, 50);
    s_source.service =
        crm_test_events_service_new (s_loop, SOURCE, s_handle_get, &s_source, &s_source.config);
}

static void
s_source_stop (void)
{
    crm_events_destroy (&s_source.events);
    crm_pg_destroy (&s_source.pg);
    crm_service_destroy (&s_source.service);
    crm_config_destroy (&s_source.config);
}

//  The consuming side: its own connection, the apply statement, a consumer.
typedef struct {
    crm_pg_t *pg;
    crm_consumer_t *consumer;
} s_sink_t;

static void
s_sink_start (s_sink_t *sink, bool live, int batch)
{
    sink->pg = crm_pg_new (s_loop, s_dsn, DST_SCHEMA);
    CHECK (sink->pg != NULL);
    crm_pg_prepare (sink->pg, "test_apply", APPLY_SQL, 3);
    sink->consumer = crm_consumer_new (s_loop, sink->pg, s_broker.endpoint,
                                       live ? broker_events_out (s_broker.broker) : NULL, SOURCE,
                                       "test_apply", batch);
    CHECK (sink->consumer != NULL);
}

//  The consumer first, then its connection (see crm_consumer_destroy).
static void
s_sink_stop (s_sink_t *sink)
{
    crm_consumer_destroy (&sink->consumer);
    crm_consumer_destroy (&sink->consumer);
    CHECK (sink->consumer == NULL);
    crm_pg_destroy (&sink->pg);
}

static crm_consumer_stats_t
s_stats (s_sink_t *sink)
{
    crm_consumer_stats_t stats;
    crm_consumer_stats (sink->consumer, &stats);
    return stats;
}

//  Nothing applied, positions from 1 again on both sides.
static void
s_reset (void)
{
    crm_test_exec (s_src, "TRUNCATE crm_outbox RESTART IDENTITY");
    crm_test_exec (s_src, "UPDATE crm_event_counter SET last_position = 0");
    crm_test_exec (s_dst, "TRUNCATE applied RESTART IDENTITY");
    crm_test_exec (s_dst, "DELETE FROM crm_consumer_position");
    crm_test_exec (s_dst, "UPDATE control SET fail_at = 0, fail_times = 0");
    s_emitted = 0;
}

//  --------------------------------------------------------------------------
//  The SQL side: crm_consumer_advance

static void
test_advance (void)
{
    s_reset ();
    //  Only the next position moves it, from a source never seen at 0
    CHECK_INT (crm_test_value (s_dst, "SELECT crm_consumer_advance ('other', 2)::int"), 0);
    CHECK_INT (crm_test_value (s_dst, "SELECT crm_consumer_advance ('other', 1)::int"), 1);
    CHECK_INT (crm_test_value (s_dst, "SELECT crm_consumer_advance ('other', 1)::int"), 0);
    CHECK_INT (crm_test_value (s_dst, "SELECT crm_consumer_advance ('other', 3)::int"), 0);
    CHECK_INT (crm_test_value (s_dst, "SELECT crm_consumer_advance ('other', 2)::int"), 1);
    CHECK_INT (
        crm_test_value (s_dst, "SELECT position FROM crm_consumer_position WHERE source = 'other'"),
        2);
    //  Rolled back with its transaction
    crm_test_exec (s_dst, "BEGIN");
    CHECK_INT (crm_test_value (s_dst, "SELECT crm_consumer_advance ('other', 3)::int"), 1);
    crm_test_exec (s_dst, "ROLLBACK");
    CHECK_INT (
        crm_test_value (s_dst, "SELECT position FROM crm_consumer_position WHERE source = 'other'"),
        2);

    //  A second transaction applying the same position waits for the first,
    //  then finds it taken
    PGconn *other = crm_test_connect (s_dsn, DST_SCHEMA);
    crm_test_exec (s_dst, "BEGIN");
    CHECK_INT (crm_test_value (s_dst, "SELECT crm_consumer_advance ('other', 3)::int"), 1);
    CHECK (PQsendQuery (other, "SELECT crm_consumer_advance ('other', 3)::int") == 1);
    usleep (100 * 1000);
    PQconsumeInput (other);
    CHECK (PQisBusy (other) == 1); //  Waiting for the row
    crm_test_exec (s_dst, "COMMIT");
    PGresult *res = PQgetResult (other);
    CHECK (PQresultStatus (res) == PGRES_TUPLES_OK);
    if (PQresultStatus (res) == PGRES_TUPLES_OK)
        CHECK_STR (PQgetvalue (res, 0, 0), "0");
    PQclear (res);
    while ((res = PQgetResult (other)))
        PQclear (res);
    //  The same for a source's very first event
    crm_test_exec (s_dst, "BEGIN");
    CHECK_INT (crm_test_value (s_dst, "SELECT crm_consumer_advance ('new', 1)::int"), 1);
    CHECK (PQsendQuery (other, "SELECT crm_consumer_advance ('new', 1)::int") == 1);
    usleep (100 * 1000);
    crm_test_exec (s_dst, "COMMIT");
    res = PQgetResult (other);
    CHECK (PQresultStatus (res) == PGRES_TUPLES_OK);
    if (PQresultStatus (res) == PGRES_TUPLES_OK)
        CHECK_STR (PQgetvalue (res, 0, 0), "0");
    PQclear (res);
    while ((res = PQgetResult (other)))
        PQclear (res);
    PQfinish (other);

    //  An operator's resync
    crm_test_exec (s_dst, "SELECT crm_consumer_reset ('other', 100)");
    CHECK_INT (crm_test_value (s_dst, "SELECT crm_consumer_advance ('other', 101)::int"), 1);
    crm_test_exec (s_dst, "DELETE FROM crm_consumer_position");
}

//  --------------------------------------------------------------------------
//  Catching up on a backlog, restarts in the middle of it

#define BACKLOG 20000

static void
test_catch_up_and_restarts (void)
{
    s_reset ();
    s_source_start (true);
    s_emit (3000);
    crm_events_kick (s_source.events);

    //  Stopped three times mid-backlog, applies in flight
    s_sink_t sink;
    int64_t stops[] = {400, 1300, 2200};
    for (int i = 0; i < 3; i++) {
        s_sink_start (&sink, true, 150);
        CHECK (s_wait_position (sink.consumer, stops[i], 20));
        s_sink_stop (&sink);
    }
    long long stored = s_stored ();
    CHECK (stored >= stops[2] && stored < 3000);

    //  And on to the end, at full speed
    int64_t start = crm_mono_ms ();
    s_sink_start (&sink, true, 0);
    CHECK (s_wait_position (sink.consumer, 3000, 30));
    int64_t elapsed = crm_mono_ms () - start;
    printf ("  a consumer started anew (connecting included) applied %lld events in %lld ms "
            "(%.0f events/s, batches of %d)\n",
            3000 - stored, (long long) elapsed,
            elapsed > 0 ? (double) (3000 - stored) * 1000.0 / (double) elapsed : 0,
            CRM_CONSUMER_BATCH_DEFAULT);
    CHECK (s_applied_once_in_order (3000));
    crm_consumer_stats_t stats = s_stats (&sink);
    CHECK_INT (stats.position, 3000);
    CHECK_INT (stats.last_position, 3000);
    CHECK_INT (stats.apply_errors, 0);

    //  Caught up, it stays put
    crm_test_run_for (s_loop, 0.3);
    CHECK_INT (crm_consumer_position (sink.consumer), 3000);
    CHECK (s_applied_once_in_order (3000));

    //  A backlog arriving at once, the consumer connected and waiting
    s_emit (BACKLOG);
    start = crm_mono_ms ();
    crm_events_kick (s_source.events);
    CHECK (s_wait_position (sink.consumer, 3000 + BACKLOG, 60));
    elapsed = crm_mono_ms () - start;
    printf ("  a backlog of %d events sequenced and applied in %lld ms (%.0f events/s)\n", BACKLOG,
            (long long) elapsed, elapsed > 0 ? (double) BACKLOG * 1000.0 / (double) elapsed : 0);
    CHECK (s_applied_once_in_order (3000 + BACKLOG));
    s_sink_stop (&sink);
    s_source_stop ();
}

//  --------------------------------------------------------------------------
//  The consumer's own database connection breaks while it applies

//  Ends the consumer's database sessions: those that ran its apply statement.
static void
s_kill_consumer_sessions (void)
{
    crm_test_exec (s_src, "SELECT pg_terminate_backend (pid) FROM pg_stat_activity "
                          "WHERE pid <> pg_backend_pid () AND query LIKE '%test_apply%'");
}

static void
test_connection_breaks (void)
{
    s_reset ();
    s_source_start (true);
    s_emit (6000);
    crm_events_kick (s_source.events);
    s_sink_t sink;
    s_sink_start (&sink, true, 200);
    int64_t stops[] = {1000, 3000, 5000};
    for (int i = 0; i < 3; i++) {
        CHECK (s_wait_position (sink.consumer, stops[i], 20));
        s_kill_consumer_sessions ();
    }
    CHECK (s_wait_position (sink.consumer, 6000, 30));
    CHECK (s_applied_once_in_order (6000));
    s_sink_stop (&sink);
    s_source_stop ();
}

//  --------------------------------------------------------------------------
//  Live wake-ups make it fast; the poll catches up when they are lost

//  Waits up to timeout for one new event to be applied after emitting it;
//  its latency in ms, or -1.
static double
s_one_event_latency (s_sink_t *sink, double timeout)
{
    int64_t want = (int64_t) s_emitted + 1;
    int64_t start = crm_mono_ms ();
    s_emit (1);
    crm_events_kick (s_source.events);
    if (!s_wait_position (sink->consumer, want, timeout))
        return -1;
    return (double) (crm_mono_ms () - start);
}

static int
s_compare (const void *a, const void *b)
{
    double x = *(const double *) a, y = *(const double *) b;
    return x < y ? -1 : x > y;
}

static void
test_live_and_poll (void)
{
    s_reset ();
    s_source_start (true);
    s_sink_t sink;
    s_sink_start (&sink, true, 0);
    crm_consumer_set_interval (sink.consumer, 60000); //  Only wake-ups drive it
    CHECK (s_wait_position (sink.consumer, 0, 5));
    crm_test_run_for (s_loop, 0.2);

    //  The subscription reaches the publisher through the broker in a while:
    //  until then PUB drops, as it may. Wait for the first wake-up.
    bool live = false;
    for (int i = 0; i < 100 && !live; i++)
        live = s_one_event_latency (&sink, 0.1) >= 0;
    CHECK (live);
    s_wait_position (sink.consumer, s_emitted, 65); //  A probe may have waited for the poll

    //  Emitted, sequenced, published, woken, fetched and applied
    enum { ROUNDS = 30 };
    double latency[ROUNDS];
    int got = 0;
    for (int i = 0; i < ROUNDS; i++) {
        double ms = s_one_event_latency (&sink, 5);
        CHECK (ms >= 0);
        if (ms >= 0)
            latency[got++] = ms;
    }
    if (got > 0) {
        qsort (latency, (size_t) got, sizeof *latency, s_compare);
        printf ("  live wake-up: emit to applied, median %.0f ms, max %.0f ms over %d events "
                "(poll every 60 s)\n",
                latency[got / 2], latency[got - 1], got);
        CHECK (latency[got - 1] < 2000);
    }
    crm_consumer_stats_t stats = s_stats (&sink);
    CHECK (stats.wakeups >= ROUNDS);
    CHECK (s_applied_once_in_order (s_emitted));

    //  The source comes back without its fan-out: every wake-up is lost now,
    //  and only the poll finds the events
    s_source_stop ();
    s_source_start (false);
    crm_test_run_for (s_loop, 0.5); //  Whatever the restart disturbed is over
    crm_consumer_set_interval (sink.consumer, 200);
    int64_t wakeups = s_stats (&sink).wakeups;
    int64_t polls = s_stats (&sink).polls;
    s_emit (25);
    crm_events_kick (s_source.events);
    int64_t start = crm_mono_ms ();
    CHECK (s_wait_position (sink.consumer, s_emitted, 5));
    printf ("  no wake-up: the poll (every 200 ms) applied 25 events after %lld ms\n",
            (long long) (crm_mono_ms () - start));
    stats = s_stats (&sink);
    CHECK_INT (stats.wakeups, wakeups);
    CHECK (stats.polls > polls);
    CHECK (s_applied_once_in_order (s_emitted));

    s_sink_stop (&sink);
    s_source_stop ();
}

//  --------------------------------------------------------------------------
//  The source away for a while

static void
test_source_down (void)
{
    s_reset ();
    s_source_start (true);
    s_sink_t sink;
    s_sink_start (&sink, true, 0);
    crm_consumer_set_interval (sink.consumer, 100);
    s_emit (100);
    crm_events_kick (s_source.events);
    CHECK (s_wait_position (sink.consumer, 100, 10));

    //  Gone: the broker answers UNAVAILABLE once nobody serves it; meanwhile
    //  events are committed and wait for the source's sequencer
    s_source_stop ();
    int64_t errors = s_stats (&sink).fetch_errors;
    s_emit (200);
    crm_test_run_for (s_loop, 2.0);
    CHECK (s_stats (&sink).fetch_errors > errors);
    CHECK_INT (crm_consumer_position (sink.consumer), 100);
    CHECK_INT (s_stored (), 100);

    //  Back: everything, once
    s_source_start (true);
    CHECK (s_wait_position (sink.consumer, 300, 15));
    CHECK (s_applied_once_in_order (300));

    //  Gone again, together with the consumer, while events keep coming
    s_source_stop ();
    s_sink_stop (&sink);
    s_emit (50);
    s_sink_start (&sink, true, 0);
    crm_consumer_set_interval (sink.consumer, 100);
    crm_test_run_for (s_loop, 1.0);
    CHECK_INT (crm_consumer_position (sink.consumer), 300);
    s_source_start (true);
    CHECK (s_wait_position (sink.consumer, 350, 15));
    CHECK (s_applied_once_in_order (350));
    s_sink_stop (&sink);
    s_source_stop ();
}

//  --------------------------------------------------------------------------
//  A failing apply is retried, never skipped

static void
test_apply_fails (void)
{
    s_reset ();
    s_source_start (true);
    s_emit (10);
    crm_events_kick (s_source.events);
    //  Event 4 fails twice, in a batch with the events around it (crm_pg
    //  then tries each write of the batch alone: that is the second)
    crm_test_exec (s_dst, "UPDATE control SET fail_at = 4, fail_times = 2");
    crm_test_exec (s_dst, "SELECT setval ('fail_seq', 1, false)");
    s_sink_t sink;
    s_sink_start (&sink, true, 0);
    crm_consumer_set_interval (sink.consumer, 100);
    CHECK (s_wait_position (sink.consumer, 10, 10));
    CHECK (s_applied_once_in_order (10));
    crm_consumer_stats_t stats = s_stats (&sink);
    CHECK (stats.apply_errors >= 1);
    char *log = crm_test_file_text (s_log);
    CHECK (strstr (log, "could not apply event 4 of testsrc") != NULL);
    CHECK (strstr (log, "test failure at 4") != NULL);
    free (log);

    //  Fails for a while: nothing after it is applied meanwhile
    crm_test_exec (s_dst, "UPDATE control SET fail_at = 13, fail_times = 1000000");
    crm_test_exec (s_dst, "SELECT setval ('fail_seq', 1, false)");
    s_emit (10);
    crm_events_kick (s_source.events);
    crm_test_run_for (s_loop, 1.5);
    CHECK_INT (crm_consumer_position (sink.consumer), 12);
    CHECK_INT (s_stored (), 12);
    CHECK (s_applied_once_in_order (12));
    crm_test_exec (s_dst, "UPDATE control SET fail_at = 0");
    CHECK (s_wait_position (sink.consumer, 20, 10));
    CHECK (s_applied_once_in_order (20));
    s_sink_stop (&sink);
    s_source_stop ();
}

//  --------------------------------------------------------------------------
//  Beyond the source's log: told to resync, then an operator resets it

static void
test_out_of_range (void)
{
    s_reset ();
    s_source_start (true);
    s_emit (5);
    crm_events_kick (s_source.events);
    crm_test_exec (s_dst, "SELECT crm_consumer_reset ('" SOURCE "', 50)");
    s_sink_t sink;
    s_sink_start (&sink, true, 0);
    crm_test_run_for (s_loop, 1.0);
    CHECK_INT (crm_test_value (s_dst, "SELECT count(*) FROM applied"), 0);
    CHECK (s_stats (&sink).fetch_errors > 0);
    char *log = crm_test_file_text (s_log);
    CHECK (strstr (log, "consumer of testsrc must be resynced: GetEvents after position 50 "
                        "answered OUT_OF_RANGE (the source's last position is 5)") != NULL);
    free (log);
    //  The operator's way out: the consumer reads the position again and goes on
    crm_test_exec (s_dst, "SELECT crm_consumer_reset ('" SOURCE "', 0)");
    s_at_t at = {sink.consumer, 5};
    CHECK (crm_test_run_until (s_loop, s_at_exactly, &at, 10));
    log = crm_test_file_text (s_log);
    CHECK (strstr (log, "stored position of testsrc went back from 50 to 0") != NULL);
    free (log);
    CHECK (s_applied_once_in_order (5));
    s_sink_stop (&sink);
    s_source_stop ();
}

//  --------------------------------------------------------------------------
//  Two instances consuming the same source into the same schema

typedef struct {
    s_sink_t *a, *b;
    int64_t want;
} s_both_t;

static bool
s_both_at (void *arg)
{
    s_both_t *both = arg;
    return crm_consumer_position (both->a->consumer) >= both->want &&
           crm_consumer_position (both->b->consumer) >= both->want;
}

static void
test_two_instances (void)
{
    s_reset ();
    s_source_start (true);
    s_sink_t a, b;
    s_sink_start (&a, true, 100);
    s_sink_start (&b, true, 70);
    crm_consumer_set_interval (a.consumer, 50);
    crm_consumer_set_interval (b.consumer, 70);
    for (int i = 0; i < 20; i++) {
        s_emit (1 + i * 7);
        crm_events_kick (s_source.events);
        crm_test_run_for (s_loop, 0.02);
    }
    s_both_t both = {&a, &b, (int64_t) s_emitted};
    CHECK (crm_test_run_until (s_loop, s_both_at, &both, 20));
    crm_test_run_until (s_loop, crm_test_pg_idle, a.pg, 5);
    crm_test_run_until (s_loop, crm_test_pg_idle, b.pg, 5);
    printf ("  two instances: %lld events, %lld + %lld apply statements committed\n", s_emitted,
            (long long) s_stats (&a).applied, (long long) s_stats (&b).applied);
    CHECK (s_applied_once_in_order (s_emitted));
    s_sink_stop (&a);
    s_sink_stop (&b);
    s_source_stop ();
}

//  --------------------------------------------------------------------------

//  The consumer's schema: libcrm's migrations, and a service's apply function
//  recording each event it applies. fail_seq is a sequence so that the count
//  of failures survives the rollbacks they cause.
static const char *s_dst_sql =
    "CREATE TABLE applied (id bigserial PRIMARY KEY, position bigint, topic text, units bigint);"
    "CREATE TABLE control (fail_at bigint NOT NULL, fail_times int NOT NULL);"
    "INSERT INTO control VALUES (0, 0);"
    "CREATE SEQUENCE fail_seq;"
    "CREATE FUNCTION test_apply (p_position bigint, p_topic text, p_payload jsonb) "
    "RETURNS void LANGUAGE plpgsql AS $$ "
    "DECLARE k control; "
    "BEGIN "
    "  IF NOT crm_consumer_advance ('" SOURCE "', p_position) THEN RETURN; END IF; "
    "  SELECT * INTO k FROM control; "
    "  IF p_position = k.fail_at AND nextval ('fail_seq') <= k.fail_times THEN "
    "    RAISE EXCEPTION 'test failure at %', p_position; "
    "  END IF; "
    "  INSERT INTO applied (position, topic, units) "
    "  VALUES (p_position, p_topic, (p_payload->>'minorUnits')::bigint); "
    "END $$;";

int
main (void)
{
    crm_test_zsys_init ();
    s_dsn = crm_test_dsn ("test_consumer");
    if (!s_dsn)
        return 77;
    //  CRM_TEST_DEBUG=1 logs at debug level and prints the log at the end
    s_log = crm_test_log_capture ("test_consumer", getenv ("CRM_TEST_DEBUG") ? "debug" : "info");

    PGconn *admin = crm_test_connect (s_dsn, NULL);
    crm_test_schema_drop (admin, SRC_SCHEMA);
    crm_test_schema_drop (admin, DST_SCHEMA);
    CHECK_INT (crm_migrate (s_dsn, SRC_SCHEMA, NULL, 0), 0);
    CHECK_INT (crm_migrate (s_dsn, DST_SCHEMA, NULL, 0), 0);
    s_src = crm_test_connect (s_dsn, SRC_SCHEMA);
    s_dst = crm_test_connect (s_dsn, DST_SCHEMA);
    crm_test_exec (s_dst, s_dst_sql);
    s_loop = ev_loop_new (EVFLAG_AUTO);

    crm_test_broker_init (&s_broker, true);
    s_broker.config.no_worker_ms = 300; //  A source that is away is soon said to be
    if (crm_test_broker_start (&s_broker) == 0) {
        setenv ("CRM_BROKER_ENDPOINT", s_broker.endpoint, 1);

        RUN (test_advance);
        RUN (test_catch_up_and_restarts);
        RUN (test_connection_breaks);
        RUN (test_live_and_poll);
        RUN (test_source_down);
        RUN (test_apply_fails);
        RUN (test_out_of_range);
        RUN (test_two_instances);

        crm_test_broker_stop (&s_broker);
    }
    ev_loop_destroy (s_loop);
    PQfinish (s_src);
    PQfinish (s_dst);
    crm_test_schema_drop (admin, SRC_SCHEMA);
    crm_test_schema_drop (admin, DST_SCHEMA);
    PQfinish (admin);
    crm_test_log_end (&s_log, getenv ("CRM_TEST_DEBUG") != NULL);
    zsys_shutdown ();
    return TEST_DONE ("test_consumer");
}
