/*  test_branch.c - the branch publisher against the real broker and a worker that misbehaves on request. */
#include "crm_branch.h"
#include "crm_log.h"
#include "crm_mdp.h"
#include "crm_proto.h"
#include "crm_util.h"
#include "crm_test.h"
#include "crm_test_broker.h"

//  The broker is compiled into this test so the publisher meets the real one
//  in-process, and can watch it restart
#include "../../broker/broker.c"
#include "../../broker/zap.c"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define HEARTBEAT_MS 100
#define SLOW_MS      30 //  How long the worker holds a "slow-" request
#define OUTCOMES_MAX 1024

static crm_test_broker_t s_broker;

//  --------------------------------------------------------------------------
//  The "ledger" worker: stores each request id once and replays its answer,
//  like a service of the suite, and misbehaves by request id prefix:
//    ok-       stored and answered
//    drop-     the first attempt is dropped unseen, then as ok-
//    lost-     the first attempt is stored but its answer lost, then as ok-
//    unavail-  the first attempt is answered UNAVAILABLE, then as ok-
//    busy-     the first two are answered RESOURCE_EXHAUSTED, then as ok-
//    bad-      always INVALID_ARGUMENT, nothing stored
//    never-    always UNAVAILABLE
//    silent-   never answered
//    slow-     as ok-, answered SLOW_MS later

typedef struct {
    int64_t due_ms;   //  When to answer
    zframe_t *client; //  The request's client
    zmsg_t *reply;    //  The answer
} s_held_t;

typedef struct {
    crm_test_worker_t base; //  The worker, its thread and loop
    ev_timer tick;          //  Releases held answers
    pthread_mutex_t lock;   //  Guards what follows, read by the test thread
    zhashx_t *seen;         //  Request id -> attempts seen (as a pointer-sized count)
    zhashx_t *stored;       //  Request ids stored
    zlist_t *held;          //  s_held_t, answers not yet sent
    int holding;            //  Slow requests held now
    int holding_max;        //  The most held at once
} s_ledger_t;

static s_ledger_t *s_ledger;

static bool
s_prefix (const char *s, const char *prefix)
{
    return strncmp (s, prefix, strlen (prefix)) == 0;
}

static zmsg_t *
s_answer (int code, const char *rid, bool replayed, zframe_t *payload)
{
    Crm__V1__Status status = CRM__V1__STATUS__INIT;
    status.code = (Crm__V1__StatusCode) code;
    status.message = code ? (char *) "refused by the ledger" : (char *) "";
    status.request_id = (char *) (uintptr_t) rid;
    status.replayed = replayed;
    zmsg_t *reply = zmsg_new ();
    zframe_t *frame = crm_proto_pack (&status.base);
    zmsg_append (reply, &frame);
    frame = payload && code == 0 ? zframe_dup (payload) : zframe_new_empty ();
    zmsg_append (reply, &frame);
    return reply;
}

static void
s_ledger_request (crm_mdp_worker_t *worker, zframe_t *client, zmsg_t *body, void *arg)
{
    s_ledger_t *ledger = arg;
    char rid[CRM_BRANCH_REQUEST_ID_MAX + 1] = "";
    zmsg_first (body);
    zframe_t *meta_frame = zmsg_next (body);
    zframe_t *payload = zmsg_next (body);
    Crm__V1__RequestMeta *meta =
        meta_frame ? crm__v1__request_meta__unpack (NULL, zframe_size (meta_frame),
                                                    zframe_data (meta_frame))
                   : NULL;
    if (meta) {
        snprintf (rid, sizeof rid, "%s", meta->request_id);
        crm__v1__request_meta__free_unpacked (meta, NULL);
    }
    pthread_mutex_lock (&ledger->lock);
    uintptr_t attempt = (uintptr_t) zhashx_lookup (ledger->seen, rid) + 1;
    zhashx_update (ledger->seen, rid, (void *) attempt);
    bool stored = zhashx_lookup (ledger->stored, rid) != NULL;
    zmsg_t *reply = NULL;
    bool store = false, slow = false;
    if (s_prefix (rid, "bad-"))
        reply = s_answer (CRM__V1__STATUS_CODE__STATUS_INVALID_ARGUMENT, rid, false, NULL);
    else if (s_prefix (rid, "never-") || (s_prefix (rid, "unavail-") && attempt == 1))
        reply = s_answer (CRM__V1__STATUS_CODE__STATUS_UNAVAILABLE, rid, false, NULL);
    else if (s_prefix (rid, "busy-") && attempt <= 2)
        reply = s_answer (CRM__V1__STATUS_CODE__STATUS_RESOURCE_EXHAUSTED, rid, false, NULL);
    else if (s_prefix (rid, "silent-") || (s_prefix (rid, "drop-") && attempt == 1))
        ;
    else if (s_prefix (rid, "lost-") && attempt == 1)
        store = true;
    else {
        store = !stored;
        slow = s_prefix (rid, "slow-");
        reply = s_answer (0, rid, stored, payload);
    }
    if (store)
        zhashx_update (ledger->stored, rid, (void *) 1);
    if (reply && slow) {
        s_held_t *held = calloc (1, sizeof *held);
        held->due_ms = crm_mono_ms () + SLOW_MS;
        held->client = client;
        held->reply = reply;
        zlist_append (ledger->held, held);
        if (++ledger->holding > ledger->holding_max)
            ledger->holding_max = ledger->holding;
        client = NULL;
        reply = NULL;
    }
    pthread_mutex_unlock (&ledger->lock);
    zmsg_destroy (&body);
    if (reply)
        crm_mdp_worker_reply (worker, &client, &reply);
    zframe_destroy (&client);
}

static void
s_ledger_tick (struct ev_loop *loop, ev_timer *w, int revents)
{
    (void) loop, (void) revents;
    s_ledger_t *ledger = w->data;
    int64_t now = crm_mono_ms ();
    pthread_mutex_lock (&ledger->lock);
    s_held_t *held = zlist_first (ledger->held);
    while (held && held->due_ms <= now) {
        zlist_pop (ledger->held);
        ledger->holding--;
        crm_mdp_worker_reply (ledger->base.worker, &held->client, &held->reply);
        free (held);
        held = zlist_first (ledger->held);
    }
    pthread_mutex_unlock (&ledger->lock);
}

static void
s_ledger_on_quit (struct ev_loop *loop, void *arg)
{
    s_ledger_t *ledger = arg;
    ev_timer_stop (loop, &ledger->tick);
}

static void
s_ledger_start (void)
{
    s_ledger_t *ledger = calloc (1, sizeof *ledger);
    pthread_mutex_init (&ledger->lock, NULL);
    ledger->seen = zhashx_new ();
    ledger->stored = zhashx_new ();
    ledger->held = zlist_new ();
    crm_test_worker_init (&ledger->base, s_broker.endpoint, "ledger", 256, s_ledger_request, ledger,
                          HEARTBEAT_MS);
    ev_timer_init (&ledger->tick, s_ledger_tick, 0.002, 0.002);
    ledger->tick.data = ledger;
    ev_timer_start (ledger->base.loop, &ledger->tick);
    crm_test_worker_start (&ledger->base, s_ledger_on_quit, ledger);
    s_ledger = ledger;
}

static void
s_ledger_stop (void)
{
    s_ledger_t *ledger = s_ledger;
    crm_test_worker_stop (&ledger->base);
    s_held_t *held;
    while ((held = zlist_pop (ledger->held))) {
        zframe_destroy (&held->client);
        zmsg_destroy (&held->reply);
        free (held);
    }
    zlist_destroy (&ledger->held);
    zhashx_destroy (&ledger->seen);
    zhashx_destroy (&ledger->stored);
    pthread_mutex_destroy (&ledger->lock);
    free (ledger);
    s_ledger = NULL;
}

//  Attempts the ledger saw of a request id
static int
s_seen (const char *rid)
{
    pthread_mutex_lock (&s_ledger->lock);
    int n = (int) (uintptr_t) zhashx_lookup (s_ledger->seen, rid);
    pthread_mutex_unlock (&s_ledger->lock);
    return n;
}

static bool
s_stored (const char *rid)
{
    pthread_mutex_lock (&s_ledger->lock);
    bool stored = zhashx_lookup (s_ledger->stored, rid) != NULL;
    pthread_mutex_unlock (&s_ledger->lock);
    return stored;
}

//  --------------------------------------------------------------------------
//  The publisher's side: outcomes as reported

typedef struct {
    char rid[64];
    crm_branch_outcome_t outcome;
    int code;
    int attempts;
    int replayed;
    size_t response_size; //  -1 as size_t when there was no response
    int64_t latency_us;
    void *tag;
} s_outcome_t;

static s_outcome_t s_outcomes[OUTCOMES_MAX];
static int s_noutcomes;
static int s_max_in_flight; //  crm_branch_in_flight seen from inside the handler, plus one
static crm_branch_t *s_watched;

static void
s_on_outcome (const crm_branch_result_t *result, void *arg)
{
    (void) arg;
    if (s_noutcomes >= OUTCOMES_MAX)
        return;
    s_outcome_t *o = &s_outcomes[s_noutcomes++];
    snprintf (o->rid, sizeof o->rid, "%s", result->request_id);
    o->outcome = result->outcome;
    o->code = result->code;
    o->attempts = result->attempts;
    o->replayed = result->replayed;
    o->response_size = result->response ? zframe_size (result->response) : (size_t) -1;
    o->latency_us = result->latency_us;
    o->tag = result->tag;
    CHECK (result->message != NULL);
    if (s_watched) {
        int in_flight = (int) crm_branch_in_flight (s_watched) + 1;
        if (in_flight > s_max_in_flight)
            s_max_in_flight = in_flight;
    }
}

//  The last outcome reported for rid, or NULL
static s_outcome_t *
s_outcome (const char *rid)
{
    for (int i = s_noutcomes - 1; i >= 0; i--)
        if (strcmp (s_outcomes[i].rid, rid) == 0)
            return &s_outcomes[i];
    return NULL;
}

static int
s_count (const char *rid)
{
    int n = 0;
    for (int i = 0; i < s_noutcomes; i++)
        n += strcmp (s_outcomes[i].rid, rid) == 0;
    return n;
}

static void
s_reset (void)
{
    s_noutcomes = 0;
    s_max_in_flight = 0;
    s_watched = NULL;
}

//  A publisher with short timings and the recording handler
static crm_branch_t *
s_publisher (int window, int timeout_ms, int retries)
{
    crm_branch_t *pub = crm_branch_new (s_broker.endpoint);
    CHECK (pub != NULL);
    crm_branch_set_handler (pub, s_on_outcome, NULL);
    crm_branch_set_window (pub, window);
    crm_branch_set_timeout (pub, timeout_ms);
    crm_branch_set_retries (pub, retries);
    crm_branch_set_backoff (pub, 20, 80);
    crm_branch_set_caller (pub, "test_branch");
    return pub;
}

static int
s_publish (crm_branch_t *pub, const char *rid, const char *text)
{
    Crm__V1__Status payload = CRM__V1__STATUS__INIT;
    payload.message = (char *) (uintptr_t) text;
    return crm_branch_publish (pub, "ledger", "Record", rid, "test-branch", &payload.base,
                               (void *) (uintptr_t) strlen (rid));
}

//  Waits until the broker knows a ledger worker
static bool
s_ledger_ready (int ms)
{
    crm_mdp_client_t *client = crm_mdp_client_new (s_broker.endpoint);
    crm_mdp_client_set_timeout (client, 500);
    bool ready = crm_test_mmi_wait (client, "ledger", ms);
    crm_mdp_client_destroy (&client);
    return ready;
}

//  --------------------------------------------------------------------------
//  Tests

static void
test_acks_and_duplicates (void)
{
    s_reset ();
    crm_branch_t *pub = s_publisher (16, 2000, 3);
    char rid[64];
    for (int i = 0; i < 50; i++) {
        snprintf (rid, sizeof rid, "ok-%d", i);
        CHECK (s_publish (pub, rid, "an event") == 0);
        CHECK (crm_branch_in_flight (pub) <= 16);
    }
    CHECK_INT (crm_branch_flush (pub, 5000), 0);
    CHECK_INT (s_noutcomes, 50);
    int acked = 0;
    for (int i = 0; i < s_noutcomes; i++) {
        s_outcome_t *o = &s_outcomes[i];
        acked += o->outcome == CRM_BRANCH_ACKNOWLEDGED && o->code == 0 && o->attempts == 1 &&
                 !o->replayed && o->latency_us > 0;
        //  The response is the ledger's echo of the payload; the tag comes back
        CHECK (o->response_size > 0 && o->response_size != (size_t) -1);
        CHECK_INT ((uintptr_t) o->tag, strlen (o->rid));
    }
    CHECK_INT (acked, 50);
    CHECK_INT (s_seen ("ok-0"), 1);

    //  The same events again: each a duplicate, stored once
    s_reset ();
    for (int i = 0; i < 10; i++) {
        snprintf (rid, sizeof rid, "ok-%d", i);
        CHECK (s_publish (pub, rid, "an event") == 0);
    }
    CHECK_INT (crm_branch_flush (pub, 5000), 0);
    int dups = 0;
    for (int i = 0; i < s_noutcomes; i++)
        dups += s_outcomes[i].outcome == CRM_BRANCH_DUPLICATE && s_outcomes[i].replayed &&
                s_outcomes[i].code == 0;
    CHECK_INT (dups, 10);

    //  Published twice in a row: the second waits for the first, so exactly
    //  one is acknowledged and one is a duplicate
    s_reset ();
    CHECK (s_publish (pub, "ok-twice", "an event") == 0);
    CHECK (s_publish (pub, "ok-twice", "an event") == 0);
    CHECK_INT (crm_branch_flush (pub, 5000), 0);
    CHECK_INT (s_noutcomes, 2);
    CHECK (s_outcomes[0].outcome == CRM_BRANCH_ACKNOWLEDGED);
    CHECK (s_outcomes[1].outcome == CRM_BRANCH_DUPLICATE);
    CHECK_INT (s_seen ("ok-twice"), 2);

    crm_branch_counters_t counters;
    crm_branch_counters (pub, &counters);
    CHECK_INT (counters.published, 62);
    CHECK_INT (counters.sent, 62);
    CHECK_INT (counters.resent, 0);
    CHECK_INT (counters.acknowledged, 51);
    CHECK_INT (counters.duplicates, 11);
    CHECK_INT (counters.failed, 0);
    CHECK_INT (counters.in_flight, 0);
    CHECK_STR (crm_branch_outcome_name (CRM_BRANCH_ACKNOWLEDGED), "acknowledged");
    CHECK_STR (crm_branch_outcome_name (CRM_BRANCH_DUPLICATE), "duplicate");
    CHECK_STR (crm_branch_outcome_name (CRM_BRANCH_FAILED), "failed");
    crm_branch_destroy (&pub);
    crm_branch_destroy (&pub);
    CHECK (pub == NULL);
}

static void
test_retries (void)
{
    s_reset ();
    crm_branch_t *pub = s_publisher (32, 250, 4);
    char rid[64];
    //  The first attempt never reached the ledger: resent after the
    //  timeout, stored then, acknowledged
    for (int i = 0; i < 5; i++) {
        snprintf (rid, sizeof rid, "drop-%d", i);
        CHECK (s_publish (pub, rid, "an event") == 0);
    }
    //  Stored, but the answer was lost: the resend is told it is a duplicate
    for (int i = 0; i < 5; i++) {
        snprintf (rid, sizeof rid, "lost-%d", i);
        CHECK (s_publish (pub, rid, "an event") == 0);
    }
    CHECK (s_publish (pub, "unavail-0", "an event") == 0);
    CHECK (s_publish (pub, "busy-0", "an event") == 0);
    CHECK_INT (crm_branch_flush (pub, 10000), 0);
    CHECK_INT (s_noutcomes, 12);
    for (int i = 0; i < 5; i++) {
        snprintf (rid, sizeof rid, "drop-%d", i);
        s_outcome_t *o = s_outcome (rid);
        CHECK (o && o->outcome == CRM_BRANCH_ACKNOWLEDGED && o->attempts == 2);
        CHECK (o && o->latency_us >= 250 * 1000);
        CHECK_INT (s_seen (rid), 2);
        CHECK (s_stored (rid));
        snprintf (rid, sizeof rid, "lost-%d", i);
        o = s_outcome (rid);
        CHECK (o && o->outcome == CRM_BRANCH_DUPLICATE && o->attempts == 2 && o->replayed);
        CHECK_INT (s_seen (rid), 2);
    }
    s_outcome_t *o = s_outcome ("unavail-0");
    CHECK (o && o->outcome == CRM_BRANCH_ACKNOWLEDGED && o->attempts == 2);
    o = s_outcome ("busy-0");
    CHECK (o && o->outcome == CRM_BRANCH_ACKNOWLEDGED && o->attempts == 3);
    crm_branch_counters_t counters;
    crm_branch_counters (pub, &counters);
    CHECK_INT (counters.timeouts, 10);
    CHECK_INT (counters.resent, 13);
    CHECK_INT (counters.sent, 25);
    CHECK_INT (counters.acknowledged, 7);
    CHECK_INT (counters.duplicates, 5);
    CHECK_INT (counters.failed, 0);
    crm_branch_destroy (&pub);
}

static void
test_failures (void)
{
    s_reset ();
    crm_branch_t *pub = s_publisher (8, 200, 3);
    //  Refused: failed at once, with the service's status and response
    CHECK (s_publish (pub, "bad-0", "an event") == 0);
    CHECK_INT (crm_branch_flush (pub, 5000), 0);
    s_outcome_t *o = s_outcome ("bad-0");
    CHECK (o && o->outcome == CRM_BRANCH_FAILED && o->code == 3 && o->attempts == 1);
    CHECK (o && o->response_size == 0);

    //  Always UNAVAILABLE: the retries are spent with a growing wait
    //  (at least 10 + 20 + 40 ms with a backoff of 20 ms doubling, jittered
    //  down to half), then it fails with the last status
    int64_t start = crm_mono_ms ();
    CHECK (s_publish (pub, "never-0", "an event") == 0);
    CHECK_INT (crm_branch_flush (pub, 5000), 0);
    int64_t took = crm_mono_ms () - start;
    o = s_outcome ("never-0");
    CHECK (o && o->outcome == CRM_BRANCH_FAILED && o->code == 14 && o->attempts == 4);
    CHECK_INT (s_seen ("never-0"), 4);
    CHECK (took >= 70);
    CHECK (took < 1000);

    //  Never answered: timed out every attempt, failed DEADLINE_EXCEEDED
    CHECK (s_publish (pub, "silent-0", "an event") == 0);
    CHECK_INT (crm_branch_flush (pub, 5000), 0);
    o = s_outcome ("silent-0");
    CHECK (o && o->outcome == CRM_BRANCH_FAILED && o->code == 4 && o->attempts == 4);
    CHECK (o && o->response_size == (size_t) -1);
    CHECK_INT (s_seen ("silent-0"), 4);

    //  Not sendable: refused by publish, no outcome
    int before = s_noutcomes;
    errno = 0;
    CHECK_INT (s_publish (pub, "", "an event"), -1);
    CHECK_INT (errno, EINVAL);
    char long_id[CRM_BRANCH_REQUEST_ID_MAX + 2];
    memset (long_id, 'x', sizeof long_id - 1);
    long_id[sizeof long_id - 1] = '\0';
    CHECK_INT (s_publish (pub, long_id, "an event"), -1);
    char *big = malloc (CRM_MAX_MESSAGE_BYTES + 1);
    memset (big, 'b', CRM_MAX_MESSAGE_BYTES);
    big[CRM_MAX_MESSAGE_BYTES] = '\0';
    errno = 0;
    CHECK_INT (s_publish (pub, "ok-big", big), -1);
    CHECK_INT (errno, EMSGSIZE);
    free (big);
    CHECK_INT (s_noutcomes, before);
    CHECK_INT (s_seen ("ok-big"), 0);

    crm_branch_counters_t counters;
    crm_branch_counters (pub, &counters);
    CHECK_INT (counters.published, 3);
    CHECK_INT (counters.failed, 3);
    CHECK_INT (counters.timeouts, 4);
    crm_branch_destroy (&pub);
}

static void
test_window (void)
{
    s_reset ();
    crm_branch_t *pub = s_publisher (8, 2000, 3);
    s_watched = pub;
    pthread_mutex_lock (&s_ledger->lock);
    s_ledger->holding_max = 0;
    pthread_mutex_unlock (&s_ledger->lock);
    char rid[64];
    int64_t start = crm_mono_ms ();
    bool within = true;
    for (int i = 0; i < 96; i++) {
        snprintf (rid, sizeof rid, "slow-%d", i);
        CHECK (s_publish (pub, rid, "an event") == 0);
        within = within && crm_branch_in_flight (pub) <= 8;
    }
    CHECK (within);
    CHECK_INT (crm_branch_flush (pub, 10000), 0);
    int64_t took = crm_mono_ms () - start;
    CHECK_INT (s_noutcomes, 96);
    //  The ledger never held more than the window, and the window was used
    pthread_mutex_lock (&s_ledger->lock);
    int holding_max = s_ledger->holding_max;
    pthread_mutex_unlock (&s_ledger->lock);
    CHECK (holding_max <= 8);
    CHECK (holding_max >= 6);
    CHECK (s_max_in_flight <= 8);
    //  96 requests 8 at a time, 30 ms each: at least 12 rounds
    CHECK (took >= 12 * SLOW_MS);

    //  A window of one keeps the order of publication
    s_reset ();
    crm_branch_set_window (pub, 1);
    for (int i = 0; i < 5; i++) {
        snprintf (rid, sizeof rid, "slow-order-%d", i);
        CHECK (s_publish (pub, rid, "an event") == 0);
        CHECK_INT (crm_branch_in_flight (pub), 1);
    }
    CHECK_INT (crm_branch_flush (pub, 5000), 0);
    CHECK_INT (s_noutcomes, 5);
    for (int i = 0; i < s_noutcomes; i++) {
        snprintf (rid, sizeof rid, "slow-order-%d", i);
        CHECK_STR (s_outcomes[i].rid, rid);
    }
    crm_branch_destroy (&pub);
}

static void
test_poll_and_flush (void)
{
    s_reset ();
    crm_branch_t *pub = s_publisher (4, 300, 0);
    //  Nothing in flight: poll (0) and flush return at once, poll (n) waits n
    int64_t start = crm_mono_ms ();
    CHECK_INT (crm_branch_poll (pub, 0), 0);
    CHECK_INT (crm_branch_flush (pub, -1), 0);
    CHECK (crm_mono_ms () - start < 50);
    start = crm_mono_ms ();
    CHECK_INT (crm_branch_poll (pub, 60), 0);
    CHECK (crm_mono_ms () - start >= 55);
    CHECK_INT (crm_branch_poll (pub, -1), 0);

    //  A flush that runs out of time leaves the request in flight
    CHECK (s_publish (pub, "silent-flush", "an event") == 0);
    CHECK_INT (crm_branch_flush (pub, 50), -1);
    CHECK_INT (crm_branch_in_flight (pub), 1);
    CHECK_INT (s_noutcomes, 0);
    CHECK_INT (crm_branch_flush (pub, -1), 0);
    CHECK_INT (s_count ("silent-flush"), 1);

    //  poll returns as soon as an outcome is reported
    CHECK (s_publish (pub, "ok-poll", "an event") == 0);
    start = crm_mono_ms ();
    int reported = 0;
    while (reported == 0 && crm_mono_ms () - start < 2000)
        reported = crm_branch_poll (pub, 2000);
    CHECK_INT (reported, 1);
    CHECK (crm_mono_ms () - start < 1000);
    CHECK_INT (crm_branch_in_flight (pub), 0);

    //  Destroying with a request in flight drops it quietly
    CHECK (s_publish (pub, "silent-destroyed", "an event") == 0);
    crm_branch_destroy (&pub);
    CHECK_INT (s_count ("silent-destroyed"), 0);
}

static void
test_broker_restart (void)
{
    s_reset ();
    crm_branch_t *pub = s_publisher (16, 400, 20);
    crm_test_broker_stop (&s_broker);
    //  Published while the broker is away: resent until it is back
    char rid[64];
    for (int i = 0; i < 10; i++) {
        snprintf (rid, sizeof rid, "ok-restart-%d", i);
        CHECK (s_publish (pub, rid, "an event") == 0);
    }
    CHECK_INT (crm_branch_poll (pub, 300), 0);
    crm_test_broker_start (&s_broker);
    CHECK_INT (crm_branch_flush (pub, 10000), 0);
    int stored = 0;
    for (int i = 0; i < 10; i++) {
        snprintf (rid, sizeof rid, "ok-restart-%d", i);
        s_outcome_t *o = s_outcome (rid);
        stored += o && o->code == 0 && s_stored (rid) && s_count (rid) == 1;
    }
    CHECK_INT (stored, 10);
    crm_branch_destroy (&pub);
}

int
main (void)
{
    crm_test_mdp_init ("test_branch");
    crm_test_broker_init (&s_broker, false);
    s_broker.config.heartbeat_ms = HEARTBEAT_MS;
    s_broker.config.no_worker_ms = 300;
    if (crm_test_broker_start (&s_broker) != 0)
        return EXIT_FAILURE;
    s_ledger_start ();
    CHECK (s_ledger_ready (3000));
    RUN (test_acks_and_duplicates);
    RUN (test_retries);
    RUN (test_failures);
    RUN (test_window);
    RUN (test_poll_and_flush);
    RUN (test_broker_restart);
    s_ledger_stop ();
    crm_test_broker_stop (&s_broker);
    return TEST_DONE ("test_branch");
}
