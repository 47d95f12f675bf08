/*  test_events.c - the event log against a real PostgreSQL and the real broker: order, gaps, catch-up, fan-out. */
#include "crm_config.h"
#include "crm_events.h"
#include "crm_log.h"
#include "crm_mdp.h"
#include "crm_migrate.h"
#include "crm_pg.h"
#include "crm_proto.h"
#include "crm_service.h"
#include "crm_util.h"
#include "crm_test.h"
#include "crm_test_broker.h"
#include "crm_test_kit.h"

//  The broker is compiled into this test: GetEvents goes through a real one
//  to a real crm_service, and the live fan-out through its XSUB/XPUB
#include "../../broker/broker.c"
#include "../../broker/zap.c"

#include <ev.h>
#include <libpq-fe.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#define SCHEMA  "test_events"
#define SERVICE "test_events"

static const char *s_dsn; //  Superuser DSN from CRM_TEST_DSN
static PGconn *s_admin;   //  Blocking connection for set-up and checks
static struct ev_loop *s_loop;
static FILE *s_log; //  Where crm_log writes, read back by some checks

//  --------------------------------------------------------------------------
//  Blocking SQL

//  Position of the event of request_id; -1 when it has none (or is not there).
static long long
s_position_of (const char *request_id)
{
    const char *values[] = {request_id};
    PGresult *res = PQexecParams (s_admin, "SELECT position FROM crm_outbox WHERE request_id = $1",
                                  1, NULL, values, NULL, NULL, 0);
    long long n = -1;
    if (PQresultStatus (res) == PGRES_TUPLES_OK && PQntuples (res) == 1 && !PQgetisnull (res, 0, 0))
        n = atoll (PQgetvalue (res, 0, 0));
    PQclear (res);
    return n;
}

static void
s_emit (PGconn *conn, const char *topic, const char *json, const char *request_id)
{
    const char *values[] = {topic, json, request_id};
    PGresult *res = PQexecParams (conn, "SELECT crm_event_emit ($1, $2::jsonb, $3)", 3, NULL,
                                  values, NULL, NULL, 0);
    if (PQresultStatus (res) != PGRES_TUPLES_OK)
        fprintf (stderr, "emit failed: %s", PQerrorMessage (conn));
    CHECK (PQresultStatus (res) == PGRES_TUPLES_OK);
    PQclear (res);
}

//  An empty log, counting from 1 again.
static void
s_reset (void)
{
    crm_test_exec (s_admin, "TRUNCATE crm_outbox RESTART IDENTITY");
    crm_test_exec (s_admin, "UPDATE crm_event_counter SET last_position = 0");
}

//  True when positions 1..n are each held by exactly one event, the counter
//  is n, and no event is without a position.
static bool
s_gapless (long long n)
{
    return crm_test_value (s_admin, "SELECT count(*) FROM crm_outbox") == n &&
           crm_test_value (s_admin, "SELECT count(DISTINCT position) FROM crm_outbox") == n &&
           crm_test_value (s_admin, "SELECT coalesce (min(position), 0) FROM crm_outbox") ==
               (n > 0 ? 1 : 0) &&
           crm_test_value (s_admin, "SELECT coalesce (max(position), 0) FROM crm_outbox") == n &&
           crm_test_value (s_admin, "SELECT last_position FROM crm_event_counter") == n;
}

//  --------------------------------------------------------------------------
//  The loop

static crm_pg_t *
s_pg_new (void)
{
    return crm_test_pg_new (s_loop, s_dsn, SCHEMA);
}

typedef struct {
    crm_events_t *events;
    int64_t want;
} s_positioned_t;

static bool
s_positioned (void *arg)
{
    s_positioned_t *p = arg;
    return crm_events_positioned (p->events) >= p->want;
}

//  Runs the loop until events has positioned want events in all.
static bool
s_wait_positioned (crm_events_t *events, int64_t want)
{
    s_positioned_t p = {events, want};
    return crm_test_run_until (s_loop, s_positioned, &p, 10);
}

//  --------------------------------------------------------------------------
//  Positions follow commits, not inserts; aborted events never appear

static void
test_commit_order (void)
{
    s_reset ();
    crm_pg_t *pg = s_pg_new ();
    crm_events_t *events = crm_events_new (s_loop, pg, SERVICE, NULL);
    CHECK (events != NULL);
    crm_events_set_interval (events, 60000); //  Only kicks run it here
    PGconn *t1 = crm_test_connect (s_dsn, SCHEMA);
    PGconn *t2 = crm_test_connect (s_dsn, SCHEMA);

    //  T1 emits first but commits last
    crm_test_exec (t1, "BEGIN");
    s_emit (t1, "test.Money", "{\"minorUnits\": 1}", "t1");
    crm_test_exec (t2, "BEGIN");
    s_emit (t2, "test.Money", "{\"minorUnits\": 2}", "t2");
    crm_test_exec (t2, "COMMIT");
    //  T1 took id 1, T2 id 2; only T2's is visible so far
    CHECK_INT (crm_test_value (s_admin, "SELECT id FROM crm_outbox WHERE request_id = 't2'"), 2);
    CHECK_INT (crm_test_value (s_admin, "SELECT count(*) FROM crm_outbox"), 1);

    crm_events_kick (events);
    CHECK (s_wait_positioned (events, 1));
    CHECK_INT (s_position_of ("t2"), 1);
    CHECK_INT (crm_test_value (s_admin, "SELECT last_position FROM crm_event_counter"), 1);

    //  Sequencing again while T1 is open changes nothing: it is invisible
    crm_events_kick (events);
    crm_test_run_until (s_loop, crm_test_pg_idle, pg, 5);
    CHECK_INT (crm_events_positioned (events), 1);

    crm_test_exec (t1, "COMMIT");
    crm_events_kick (events);
    CHECK (s_wait_positioned (events, 2));
    CHECK_INT (s_position_of ("t1"), 2);
    CHECK_INT (crm_test_value (s_admin, "SELECT id FROM crm_outbox WHERE request_id = 't1'"), 1);
    CHECK (s_gapless (2));

    //  Rolled-back events never get a position, and leave no gap
    crm_test_exec (t1, "BEGIN");
    s_emit (t1, "test.Money", "{}", "aborted-1");
    crm_test_exec (t2, "BEGIN");
    s_emit (t2, "test.Money", "{}", "aborted-2");
    s_emit (t2, "test.Money", "{}", "t2-later");
    crm_events_kick (events); //  While both are open
    crm_test_run_until (s_loop, crm_test_pg_idle, pg, 5);
    crm_test_exec (t1, "ROLLBACK");
    crm_test_exec (t2, "ROLLBACK");
    crm_test_exec (t2, "BEGIN");
    s_emit (t2, "test.Money", "{}", "t3");
    crm_test_exec (t2, "COMMIT");
    crm_events_kick (events);
    CHECK (s_wait_positioned (events, 3));
    crm_test_run_until (s_loop, crm_test_pg_idle, pg, 5);
    CHECK_INT (crm_test_value (s_admin,
                               "SELECT count(*) FROM crm_outbox WHERE request_id LIKE 'aborted%'"),
               0);
    CHECK_INT (
        crm_test_value (s_admin, "SELECT count(*) FROM crm_outbox WHERE request_id = 't2-later'"),
        0);
    CHECK_INT (s_position_of ("t3"), 3);
    CHECK_INT (crm_events_positioned (events), 3);
    CHECK (s_gapless (3));

    //  A malformed topic or payload is refused when emitted, in the writer's transaction
    PGresult *res = PQexec (t1, "SELECT crm_event_emit ('NoService', '{}', 'x')");
    CHECK (PQresultStatus (res) == PGRES_FATAL_ERROR);
    PQclear (res);
    res = PQexec (t1, "SELECT crm_event_emit ('test.Money', '[1]', 'x')");
    CHECK (PQresultStatus (res) == PGRES_FATAL_ERROR);
    PQclear (res);

    //  Soon kicks: the commits of the linger share one run, one transaction
    s_emit (t1, "test.Money", "{}", "soon-1");
    crm_events_kick_soon (events);
    s_emit (t2, "test.Money", "{}", "soon-2");
    crm_events_kick_soon (events);
    s_emit (t1, "test.Money", "{}", "soon-3");
    crm_events_kick_soon (events);
    CHECK (s_wait_positioned (events, 6));
    CHECK_INT (crm_test_value (s_admin, "SELECT count(DISTINCT xmin::text) FROM crm_outbox "
                                        "WHERE request_id LIKE 'soon-%'"),
               1);
    CHECK_INT (s_position_of ("soon-3"), 6);
    CHECK (s_gapless (6));

    //  The timer runs it too, without a kick
    s_emit (t1, "test.Money", "{}", "by-timer");
    crm_events_set_interval (events, 20);
    CHECK (s_wait_positioned (events, 7));
    CHECK_INT (s_position_of ("by-timer"), 7);

    //  Destroyed with a run in flight: the run completes, the object goes with it
    s_emit (t1, "test.Money", "{}", "in-flight");
    crm_events_kick (events);
    crm_events_destroy (&events);
    crm_events_destroy (&events);
    CHECK (events == NULL);
    crm_test_run_until (s_loop, crm_test_pg_idle, pg, 5);
    CHECK_INT (s_position_of ("in-flight"), 8);

    PQfinish (t1);
    PQfinish (t2);
    crm_pg_destroy (&pg);
}

//  --------------------------------------------------------------------------
//  Two instances sequencing at once while writers commit in any order

#define WRITERS          3
#define EVENTS_PER_WRITE 1700 //  Events each writer emits

typedef struct {
    int index;        //  Writer number, in its request ids
    volatile int *go; //  Set to stop early on failure
    int failures;     //  Statements that failed
} s_writer_t;

//  Emits EVENTS_PER_WRITE events in transactions of 1 to 25 events, with
//  request ids "w<index>-<seq>" in emission order.
static void *
s_writer_run (void *arg)
{
    s_writer_t *writer = arg;
    PGconn *conn = PQconnectdb (s_dsn);
    PQclear (PQexec (conn, "SET search_path = " SCHEMA));
    unsigned seed = (unsigned) writer->index * 7919u + 1;
    int seq = 0;
    while (seq < EVENTS_PER_WRITE && *writer->go) {
        int size = 1 + (int) (rand_r (&seed) % 25);
        PQclear (PQexec (conn, "BEGIN"));
        for (int i = 0; i < size && seq < EVENTS_PER_WRITE; i++, seq++) {
            char rid[32];
            snprintf (rid, sizeof rid, "w%d-%06d", writer->index, seq);
            const char *values[] = {rid};
            PGresult *res = PQexecParams (conn, "SELECT crm_event_emit ('test.Money', '{}', $1)", 1,
                                          NULL, values, NULL, NULL, 0);
            if (PQresultStatus (res) != PGRES_TUPLES_OK)
                writer->failures++;
            PQclear (res);
        }
        PGresult *res = PQexec (conn, "COMMIT");
        if (PQresultStatus (res) != PGRES_COMMAND_OK)
            writer->failures++;
        PQclear (res);
    }
    PQfinish (conn);
    return NULL;
}

typedef struct {
    crm_events_t *a, *b;
    int64_t want;
} s_pair_t;

static bool
s_pair_done (void *arg)
{
    s_pair_t *pair = arg;
    return crm_events_positioned (pair->a) + crm_events_positioned (pair->b) >= pair->want;
}

static void
test_concurrent_sequencers (void)
{
    s_reset ();
    crm_pg_t *pg_a = s_pg_new ();
    crm_pg_t *pg_b = s_pg_new ();
    crm_events_t *a = crm_events_new (s_loop, pg_a, SERVICE, NULL);
    crm_events_t *b = crm_events_new (s_loop, pg_b, SERVICE, NULL);
    //  Small batches and a short period: many runs, often at the same time
    crm_events_set_batch (a, 40);
    crm_events_set_batch (b, 40);
    crm_events_set_interval (a, 2);
    crm_events_set_interval (b, 3);

    volatile int go = 1;
    s_writer_t writers[WRITERS];
    pthread_t threads[WRITERS];
    for (int i = 0; i < WRITERS; i++) {
        writers[i] = (s_writer_t){.index = i, .go = &go};
        pthread_create (&threads[i], NULL, s_writer_run, &writers[i]);
    }
    s_pair_t pair = {a, b, (int64_t) WRITERS * EVENTS_PER_WRITE};
    bool done = crm_test_run_until (s_loop, s_pair_done, &pair, 60);
    go = 0;
    for (int i = 0; i < WRITERS; i++) {
        pthread_join (threads[i], NULL);
        CHECK_INT (writers[i].failures, 0);
    }
    CHECK (done);
    crm_test_run_until (s_loop, crm_test_pg_idle, pg_a, 5);
    crm_test_run_until (s_loop, crm_test_pg_idle, pg_b, 5);

    long long n = (long long) WRITERS * EVENTS_PER_WRITE;
    printf ("  two sequencers positioned %lld + %lld of %lld events\n",
            (long long) crm_events_positioned (a), (long long) crm_events_positioned (b), n);
    CHECK_INT (crm_events_positioned (a) + crm_events_positioned (b), n);
    CHECK (s_gapless (n));
    //  One writer's events are in the order it emitted them: its transactions
    //  committed one after the other
    CHECK_INT (crm_test_value (
                   s_admin,
                   "SELECT count(*) FROM (SELECT position, lag (position) OVER "
                   "(PARTITION BY split_part (request_id, '-', 1) ORDER BY request_id) AS prev "
                   "FROM crm_outbox) x WHERE prev > position"),
               0);

    crm_events_destroy (&a);
    crm_events_destroy (&b);
    crm_pg_destroy (&pg_a);
    crm_pg_destroy (&pg_b);
}

//  --------------------------------------------------------------------------
//  GetEvents through a real broker and crm_service; the live fan-out

static crm_test_broker_t s_broker;

typedef struct {
    crm_events_t *events; //  Answers GetEvents
    crm_pg_t *pg;         //  Its connection
    bool hazard;          //  Sequence and fail a read around the next GetEvents
    bool destroy;         //  Sequence, then destroy events while the next GetEvents waits
} s_server_t;

static int s_failed_reads; //  Answers of the "fail" statement that did fail

static void
s_on_fail (crm_pg_status_t status, const PGresult *result, const char *error, void *arg)
{
    (void) result;
    (void) error;
    (void) arg;
    if (status == CRM_PG_ESQL)
        s_failed_reads++;
}

static void
s_handle_get (crm_call_t *call, ProtobufCMessage *request, void *ctx)
{
    s_server_t *server = ctx;
    if (server->hazard) {
        //  The sequencer, this GetEvents and a failing read all queued in one
        //  loop iteration: the failing read rolls the sequencing back
        server->hazard = false;
        crm_events_kick (server->events);
        crm_events_handle_get (server->events, call, (Crm__V1__GetEventsRequest *) request);
        crm_pg_read (server->pg, "fail", 0, NULL, s_on_fail, NULL);
        return;
    }
    if (server->destroy) {
        server->destroy = false;
        crm_events_kick (server->events);
        crm_events_handle_get (server->events, call, (Crm__V1__GetEventsRequest *) request);
        crm_events_destroy (&server->events);
        return;
    }
    crm_events_handle_get (server->events, call, (Crm__V1__GetEventsRequest *) request);
}

typedef struct {
    crm_mdp_client_t *client;
    zmsg_t *reply;
} s_waiting_t;

static bool
s_reply_came (void *arg)
{
    s_waiting_t *waiting = arg;
    waiting->reply = crm_mdp_client_recv (waiting->client, NULL, 0);
    return waiting->reply != NULL;
}

//  Calls GetEvents through the broker while running the loop. Returns the
//  status code (-1: no reply) and sets *response_p (caller frees) when the
//  reply has a payload.
static int
s_get_events (crm_mdp_client_t *client, int64_t after, uint32_t limit,
              Crm__V1__GetEventsResponse **response_p)
{
    static int counter;
    char rid[32];
    snprintf (rid, sizeof rid, "get-%d", ++counter);
    Crm__V1__RequestMeta meta = CRM__V1__REQUEST_META__INIT;
    meta.request_id = rid;
    Crm__V1__GetEventsRequest request = CRM__V1__GET_EVENTS_REQUEST__INIT;
    request.after_position = after;
    request.limit = limit;
    zmsg_t *body = crm_proto_request_new ("GetEvents", &meta, &request.base);
    *response_p = NULL;
    if (crm_mdp_client_send (client, SERVICE, &body) != 0)
        return -1;
    s_waiting_t waiting = {client, NULL};
    if (!crm_test_run_until (s_loop, s_reply_came, &waiting, 10))
        return -1;
    Crm__V1__Status *status;
    zframe_t *payload;
    int code = -1;
    if (crm_proto_reply_parse (waiting.reply, &status, &payload) == 0) {
        code = status->code;
        crm__v1__status__free_unpacked (status, NULL);
        *response_p = crm__v1__get_events_response__unpack (NULL, zframe_size (payload),
                                                            zframe_data (payload));
    }
    zmsg_destroy (&waiting.reply);
    return code;
}

//  minor_units of an event's crm.v1.Money payload; -1 when it does not decode
static long long
s_money (const ProtobufCBinaryData *payload)
{
    Crm__V1__Money *money = crm__v1__money__unpack (NULL, payload->len, payload->data);
    long long units = money ? money->minor_units : -1;
    if (money)
        crm__v1__money__free_unpacked (money, NULL);
    return units;
}

//  One live event as received from the broker's XPUB.
typedef struct {
    char topic[64];
    long long units; //  minor_units of its Money payload; -1: not Money; -2: empty
    long long position;
    char request_id[64];
} s_live_t;

//  Receives one live event without waiting; 0, or -1 when none is there.
static int
s_live_recv (void *sub, s_live_t *live)
{
    zmsg_t *msg = zmsg_recv_nowait (sub);
    if (!msg)
        return -1;
    int rc = -1;
    if (zmsg_size (msg) == 4) {
        zframe_t *topic = zmsg_first (msg);
        zframe_t *payload = zmsg_next (msg);
        zframe_t *position = zmsg_next (msg);
        zframe_t *request_id = zmsg_next (msg);
        snprintf (live->topic, sizeof live->topic, "%.*s", (int) zframe_size (topic),
                  (char *) zframe_data (topic));
        ProtobufCBinaryData data = {zframe_size (payload), zframe_data (payload)};
        live->units = data.len == 0 ? -2 : s_money (&data);
        char text[32];
        snprintf (text, sizeof text, "%.*s", (int) zframe_size (position),
                  (char *) zframe_data (position));
        live->position = atoll (text);
        snprintf (live->request_id, sizeof live->request_id, "%.*s", (int) zframe_size (request_id),
                  (char *) zframe_data (request_id));
        rc = 0;
    }
    zmsg_destroy (&msg);
    return rc;
}

#define LIVE_MAX 64

typedef struct {
    void *sub;
    s_live_t got[LIVE_MAX];
    int count;
    const char *prefix; //  Only events whose request id starts with this are kept
    int want;
} s_collect_t;

static bool
s_collected (void *arg)
{
    s_collect_t *collect = arg;
    s_live_t live;
    while (s_live_recv (collect->sub, &live) == 0)
        if (strncmp (live.request_id, collect->prefix, strlen (collect->prefix)) == 0 &&
            collect->count < LIVE_MAX)
            collect->got[collect->count++] = live;
    return collect->count >= collect->want;
}

//  Runs the loop for up to seconds, keeping the live events of prefix.
static void
s_collect (s_collect_t *collect, void *sub, const char *prefix, int want, double seconds)
{
    collect->sub = sub;
    collect->count = 0;
    collect->prefix = prefix;
    collect->want = want;
    crm_test_run_until (s_loop, s_collected, collect, seconds);
}

//  A broker on its own thread, a crm_service answering GetEvents on the
//  test's loop, and a client
typedef struct {
    s_server_t server;
    crm_config_t *config;
    crm_service_t *service;
    crm_mdp_client_t *client;
} s_stack_t;

static int
s_stack_start (s_stack_t *stack)
{
    memset (stack, 0, sizeof *stack);
    crm_test_broker_init (&s_broker, true);
    s_broker.config.no_worker_ms = 5000;
    if (crm_test_broker_start (&s_broker) != 0)
        return -1;

    stack->server.pg = s_pg_new ();
    crm_pg_prepare (stack->server.pg, "fail", "SELECT 1 / 0", 0);
    stack->server.events =
        crm_events_new (s_loop, stack->server.pg, SERVICE, broker_events_in (s_broker.broker));
    CHECK (stack->server.events != NULL);
    crm_events_set_interval (stack->server.events, 60000); //  Only kicks run it here

    setenv ("CRM_BROKER_ENDPOINT", s_broker.endpoint, 1);
    stack->service =
        crm_test_events_service_new (s_loop, SERVICE, s_handle_get, &stack->server, &stack->config);
    stack->client = crm_mdp_client_new (s_broker.endpoint);
    CHECK (stack->client != NULL);
    return stack->service && stack->client ? 0 : -1;
}

//  Events first, then the connection and the service (see crm_events_destroy)
static void
s_stack_stop (s_stack_t *stack)
{
    crm_mdp_client_destroy (&stack->client);
    crm_events_destroy (&stack->server.events);
    crm_pg_destroy (&stack->server.pg);
    crm_service_destroy (&stack->service);
    crm_config_destroy (&stack->config);
    crm_test_broker_stop (&s_broker);
}

static void
test_get_and_live (void)
{
    s_reset ();
    s_stack_t stack;
    if (s_stack_start (&stack) != 0) {
        s_stack_stop (&stack);
        return;
    }
    crm_pg_t *pg = stack.server.pg;
    crm_mdp_client_t *client = stack.client;
    s_server_t *server = &stack.server;
    CHECK (crm_events_new (s_loop, pg, SERVICE, "no-such-transport://x") == NULL);

    //  250 events with Money payloads, one of a type that does not exist, one
    //  whose JSON is not a Money
    PGconn *conn = crm_test_connect (s_dsn, SCHEMA);
    crm_test_exec (conn, "BEGIN");
    for (int i = 1; i <= 252; i++) {
        char rid[32], json[64];
        snprintf (rid, sizeof rid, "r%d", i);
        snprintf (json, sizeof json, "{\"minorUnits\": %d, \"currency\": \"EUR\"}", i);
        if (i == 100)
            s_emit (conn, "test.NoSuchEvent", "{\"x\": 1}", rid);
        else if (i == 101)
            s_emit (conn, "test.Money", "{\"notAField\": 1}", rid);
        else
            s_emit (conn, "test.Money", json, rid);
    }
    crm_test_exec (conn, "COMMIT");
    crm_events_kick (server->events);
    CHECK (s_wait_positioned (server->events, 252));

    //  From the beginning: the default limit, in order, with their payloads
    Crm__V1__GetEventsResponse *response;
    CHECK_INT (s_get_events (client, 0, 0, &response), 0);
    CHECK (response != NULL);
    if (response) {
        CHECK_INT (response->n_events, CRM_EVENTS_LIMIT_DEFAULT);
        CHECK_INT (response->last_position, 252);
        bool ordered = true, payloads = true;
        for (size_t i = 0; i < response->n_events; i++) {
            Crm__V1__Event *event = response->events[i];
            char rid[32];
            snprintf (rid, sizeof rid, "r%zu", i + 1);
            ordered = ordered && event->position == (int64_t) i + 1 &&
                      strcmp (event->request_id, rid) == 0 && event->created_unix_ms > 0;
            if (i + 1 < 100)
                payloads = payloads && s_money (&event->payload) == (long long) i + 1 &&
                           strcmp (event->topic, "test.Money") == 0;
        }
        CHECK (ordered);
        CHECK (payloads);
        //  Not convertible: there, with an empty payload, and logged
        CHECK_STR (response->events[99]->topic, "test.NoSuchEvent");
        CHECK_INT (response->events[99]->payload.len, 0);
        crm__v1__get_events_response__free_unpacked (response, NULL);
    }
    char *log = crm_test_file_text (s_log);
    CHECK (strstr (log, "no message type crm.v1.NoSuchEvent") != NULL);
    CHECK (strstr (log, "could not convert event 101 of topic \"test.Money\"") != NULL);
    free (log);

    //  A limit above the most is capped; the rest of the log
    CHECK_INT (s_get_events (client, 100, 5000, &response), 0);
    if (response) {
        CHECK_INT (response->n_events, 152);
        CHECK_INT (response->events[0]->position, 101);
        CHECK_INT (response->events[0]->payload.len, 0);
        CHECK_INT (response->events[151]->position, 252);
        CHECK_INT (s_money (&response->events[151]->payload), 252);
        crm__v1__get_events_response__free_unpacked (response, NULL);
    }
    CHECK_INT (s_get_events (client, 200, 3, &response), 0);
    if (response) {
        CHECK_INT (response->n_events, 3);
        CHECK_INT (response->events[2]->position, 203);
        crm__v1__get_events_response__free_unpacked (response, NULL);
    }
    //  At the end: nothing, and where the end is
    CHECK_INT (s_get_events (client, 252, 10, &response), 0);
    if (response) {
        CHECK_INT (response->n_events, 0);
        CHECK_INT (response->last_position, 252);
        crm__v1__get_events_response__free_unpacked (response, NULL);
    }
    //  Beyond the end, or negative
    CHECK_INT (s_get_events (client, 253, 10, &response),
               CRM__V1__STATUS_CODE__STATUS_OUT_OF_RANGE);
    if (response) {
        CHECK_INT (response->n_events, 0);
        CHECK_INT (response->last_position, 252);
        crm__v1__get_events_response__free_unpacked (response, NULL);
    }
    CHECK_INT (s_get_events (client, -1, 10, &response),
               CRM__V1__STATUS_CODE__STATUS_INVALID_ARGUMENT);
    if (response)
        crm__v1__get_events_response__free_unpacked (response, NULL);

    //  The live fan-out: subscribe, then wait until the subscription reached
    //  the publisher (until then PUB drops, as it may)
    zsock_t *sub = zsock_new_sub (broker_events_out (s_broker.broker), "test.");
    CHECK (sub != NULL);
    s_collect_t collect = {0};
    for (int i = 0; i < 100 && collect.count == 0; i++) {
        char rid[32];
        snprintf (rid, sizeof rid, "probe-%d", i);
        s_emit (conn, "test.Money", "{}", rid);
        crm_events_kick (server->events);
        s_collect (&collect, sub, "probe-", 1, 0.05);
    }
    CHECK (collect.count > 0);
    crm_test_run_until (s_loop, crm_test_pg_idle, pg, 5);
    crm_test_run_for (s_loop, 0.1);
    while (s_live_recv (zsock_resolve (sub), &collect.got[0]) == 0)
        ;

    //  Newly sequenced events arrive as [topic][payload][position][request_id]
    crm_test_exec (conn, "BEGIN");
    s_emit (conn, "test.Money", "{\"minorUnits\": 7}", "live-1");
    s_emit (conn, "test.Money", "{\"minorUnits\": 8}", "live-2");
    s_emit (conn, "test.NoSuchEvent", "{}", "live-3");
    crm_test_exec (conn, "COMMIT");
    crm_events_kick (server->events);
    s_collect (&collect, zsock_resolve (sub), "live-", 3, 5);
    CHECK_INT (collect.count, 3);
    if (collect.count == 3) {
        CHECK_STR (collect.got[0].topic, "test.Money");
        CHECK_INT (collect.got[0].units, 7);
        CHECK_INT (collect.got[0].position, s_position_of ("live-1"));
        CHECK_STR (collect.got[1].request_id, "live-2");
        CHECK_INT (collect.got[1].units, 8);
        CHECK_INT (collect.got[1].position, collect.got[0].position + 1);
        CHECK_STR (collect.got[2].topic, "test.NoSuchEvent");
        CHECK_INT (collect.got[2].units, -2);
        CHECK_INT (collect.got[2].position, collect.got[0].position + 2);
    }

    //  A read failing in the sequencer's segment rolls its sequencing back
    //  after its result came: GetEvents must not see those positions, and
    //  they must not go out live; sequenced again, they go out once
    long long last = crm_test_value (s_admin, "SELECT last_position FROM crm_event_counter");
    crm_test_exec (conn, "BEGIN");
    s_emit (conn, "test.Money", "{\"minorUnits\": 11}", "hazard-1");
    s_emit (conn, "test.Money", "{\"minorUnits\": 12}", "hazard-2");
    crm_test_exec (conn, "COMMIT");
    int64_t positioned = crm_events_positioned (server->events);
    int failed = s_failed_reads;
    server->hazard = true;
    CHECK_INT (s_get_events (client, last, 10, &response), 0);
    CHECK_INT (s_failed_reads, failed + 1);
    CHECK_INT (crm_events_positioned (server->events), positioned + 2); //  Run, then undone
    if (response) {
        CHECK_INT (response->n_events, 0);
        CHECK_INT (response->last_position, last);
        crm__v1__get_events_response__free_unpacked (response, NULL);
    }
    crm_test_run_until (s_loop, crm_test_pg_idle, pg, 5);
    CHECK_INT (s_position_of ("hazard-1"), -1);
    s_collect (&collect, zsock_resolve (sub), "hazard-", 1, 0.2);
    CHECK_INT (collect.count, 0);
    crm_events_kick (server->events);
    s_collect (&collect, zsock_resolve (sub), "hazard-", 2, 5);
    s_collect_t extra = {0};
    s_collect (&extra, zsock_resolve (sub), "hazard-", 1, 0.2);
    CHECK_INT (collect.count, 2);
    CHECK_INT (extra.count, 0);
    CHECK_INT (s_position_of ("hazard-1"), last + 1);
    if (collect.count == 2) {
        CHECK_INT (collect.got[0].position, last + 1);
        CHECK_STR (collect.got[0].request_id, "hazard-1");
        CHECK_INT (collect.got[1].position, last + 2);
    }
    CHECK_INT (s_get_events (client, last, 10, &response), 0);
    if (response) {
        CHECK_INT (response->n_events, 2);
        CHECK_INT (response->last_position, last + 2);
        crm__v1__get_events_response__free_unpacked (response, NULL);
    }
    CHECK (s_gapless (last + 2));
    last += 2;

    //  Trimming keeps a suffix of the log, always with the newest event;
    //  a consumer behind it is told to resync
    crm_test_exec (s_admin, "UPDATE crm_outbox SET created_at = now() - interval '2 days' "
                            "WHERE position <= 200");
    CHECK_INT (crm_test_value (s_admin, "SELECT crm_events_trim ('1 day')"), 200);
    CHECK_INT (crm_test_value (s_admin, "SELECT min(position) FROM crm_outbox"), 201);
    CHECK_INT (s_get_events (client, 0, 10, &response), CRM__V1__STATUS_CODE__STATUS_OUT_OF_RANGE);
    if (response) {
        CHECK_INT (response->last_position, last);
        CHECK_INT (response->n_events, 0);
        crm__v1__get_events_response__free_unpacked (response, NULL);
    }
    CHECK_INT (s_get_events (client, 199, 10, &response),
               CRM__V1__STATUS_CODE__STATUS_OUT_OF_RANGE);
    if (response)
        crm__v1__get_events_response__free_unpacked (response, NULL);
    CHECK_INT (s_get_events (client, 200, 1, &response), 0);
    if (response) {
        CHECK_INT (response->n_events, 1);
        CHECK_INT (response->events[0]->position, 201);
        crm__v1__get_events_response__free_unpacked (response, NULL);
    }
    crm_test_exec (s_admin, "UPDATE crm_outbox SET created_at = now() - interval '2 days'");
    CHECK_INT (crm_test_value (s_admin, "SELECT crm_events_trim ('1 day')"), last - 201);
    CHECK_INT (crm_test_value (s_admin, "SELECT count(*) FROM crm_outbox"), 1);
    CHECK_INT (crm_test_value (s_admin, "SELECT position FROM crm_outbox"), last);
    CHECK_INT (crm_test_value (s_admin, "SELECT crm_events_trim ('1 day')"), 0);
    CHECK_INT (s_get_events (client, last - 1, 10, &response), 0);
    if (response) {
        CHECK_INT (response->n_events, 1);
        crm__v1__get_events_response__free_unpacked (response, NULL);
    }
    //  Positions go on after a trim
    s_emit (conn, "test.Money", "{}", "after-trim");
    crm_events_kick (server->events);
    CHECK (s_wait_positioned (server->events, crm_events_positioned (server->events) + 1));
    CHECK_INT (s_position_of ("after-trim"), last + 1);

    //  Database down: UNAVAILABLE at once
    crm_pg_t *down = crm_pg_new (s_loop, "host=127.0.0.1 port=1 connect_timeout=1", SCHEMA);
    crm_events_t *up = server->events;
    server->events = crm_events_new (s_loop, down, SERVICE, NULL);
    CHECK_INT (s_get_events (client, 0, 10, &response), CRM__V1__STATUS_CODE__STATUS_UNAVAILABLE);
    if (response)
        crm__v1__get_events_response__free_unpacked (response, NULL);
    crm_events_destroy (&server->events);
    crm_pg_destroy (&down);
    server->events = up;

    //  Destroyed while a GetEvents waits for the sequencer to finish: the call
    //  is answered UNAVAILABLE, and the run in flight still ends cleanly
    s_emit (conn, "test.Money", "{}", "at-destroy");
    server->destroy = true;
    CHECK_INT (s_get_events (client, 0, 10, &response), CRM__V1__STATUS_CODE__STATUS_UNAVAILABLE);
    if (response)
        crm__v1__get_events_response__free_unpacked (response, NULL);
    CHECK (server->events == NULL);
    crm_test_run_until (s_loop, crm_test_pg_idle, pg, 5);
    CHECK_INT (s_position_of ("at-destroy"), last + 2);
    CHECK (crm_test_value (s_admin, "SELECT last_position FROM crm_event_counter") == last + 2);

    zsock_destroy (&sub);
    PQfinish (conn);
    s_stack_stop (&stack);
}

//  --------------------------------------------------------------------------
//  How fast the sequencer positions a backlog (printed, not checked)

#define BACKLOG 50000

static void
s_measure (const char *what, const char *publish_endpoint)
{
    s_reset ();
    char sql[256];
    snprintf (sql, sizeof sql,
              "SELECT crm_event_emit ('test.Money', jsonb_build_object ('minorUnits', i, "
              "'currency', 'EUR'), 'bench-' || i) FROM generate_series (1, %d) i",
              BACKLOG);
    crm_test_exec (s_admin, sql);
    crm_test_exec (s_admin, "VACUUM ANALYZE crm_outbox");
    crm_pg_t *pg = s_pg_new ();
    crm_events_t *events = crm_events_new (s_loop, pg, SERVICE, publish_endpoint);
    crm_events_set_interval (events, 60000);
    crm_events_set_batch (events, 1000);
    int64_t start = crm_mono_ms ();
    crm_events_kick (events);
    s_positioned_t p = {events, BACKLOG};
    CHECK (crm_test_run_until (s_loop, s_positioned, &p, 120));
    crm_test_run_until (s_loop, crm_test_pg_idle, pg, 10);
    int64_t elapsed = crm_mono_ms () - start;
    CHECK (s_gapless (BACKLOG));
    printf ("  sequencer, batches of 1000, %s: %d events in %lld ms, %.0f events/s\n", what,
            BACKLOG, (long long) elapsed, elapsed > 0 ? BACKLOG * 1000.0 / (double) elapsed : 0);
    crm_events_destroy (&events);
    crm_pg_destroy (&pg);
}

static void
test_throughput (void)
{
    s_measure ("no fan-out", NULL);
    //  A PUB socket with nobody subscribed still converts every payload and
    //  confirms every run
    void *xsub = zmq_socket (zsys_init (), ZMQ_XSUB);
    zmq_bind (xsub, "tcp://127.0.0.1:*");
    char endpoint[256];
    size_t size = sizeof endpoint;
    zmq_getsockopt (xsub, ZMQ_LAST_ENDPOINT, endpoint, &size);
    s_measure ("with fan-out", endpoint);
    zmq_close (xsub);

    //  A consumer catching up on that log through the broker
    s_stack_t stack;
    if (s_stack_start (&stack) == 0) {
        int64_t start = crm_mono_ms ();
        int64_t after = 0;
        int calls = 0;
        while (after < BACKLOG) {
            Crm__V1__GetEventsResponse *response;
            int code = s_get_events (stack.client, after, CRM_EVENTS_LIMIT_MAX, &response);
            calls++;
            if (code != 0 || !response || response->n_events == 0) {
                CHECK (false);
                if (response)
                    crm__v1__get_events_response__free_unpacked (response, NULL);
                break;
            }
            after = response->events[response->n_events - 1]->position;
            crm__v1__get_events_response__free_unpacked (response, NULL);
        }
        int64_t elapsed = crm_mono_ms () - start;
        CHECK_INT (after, BACKLOG);
        printf ("  GetEvents through the broker, limit %d: %lld events in %d calls, %lld ms, "
                "%.0f events/s\n",
                CRM_EVENTS_LIMIT_MAX, (long long) after, calls, (long long) elapsed,
                elapsed > 0 ? (double) after * 1000.0 / (double) elapsed : 0);
    }
    s_stack_stop (&stack);
}

int
main (void)
{
    crm_test_zsys_init ();
    s_dsn = crm_test_dsn ("test_events");
    if (!s_dsn)
        return 77;
    s_log = crm_test_log_capture ("test_events", "info");

    s_admin = crm_test_connect (s_dsn, NULL);
    crm_test_schema_drop (s_admin, SCHEMA);
    CHECK_INT (crm_migrate (s_dsn, SCHEMA, NULL, 0), 0);
    PQclear (PQexec (s_admin, "SET search_path = " SCHEMA));
    s_loop = ev_loop_new (EVFLAG_AUTO);

    RUN (test_commit_order);
    RUN (test_concurrent_sequencers);
    RUN (test_get_and_live);
    RUN (test_throughput);

    ev_loop_destroy (s_loop);
    crm_test_schema_drop (s_admin, SCHEMA);
    PQfinish (s_admin);
    crm_test_log_end (&s_log, false);
    zsys_shutdown ();
    return TEST_DONE ("test_events");
}
