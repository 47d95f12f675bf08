/*  crm_events.c - a service's event log: transactional outbox, gapless positions, catch-up, live fan-out.
 *
 *  The sequencer is crm_events_sequence() run through crm_pg_read, not
 *  crm_pg_write. As a write it would join a group-committed batch of the
 *  service's writes: the counter's row lock would then be held until that
 *  whole batch commits, so every instance's write batches would queue behind
 *  one another, and one failing write would roll the sequencing back with
 *  its batch and have it repeated by the batch's retries. As a read it is
 *  sent outside any write transaction, holds the lock only for its own short
 *  transaction, and runs at most once at a time per instance (a kick during
 *  a run asks for one more run right after it).
 *
 *  But crm_pg sends the reads queued together as one segment between two
 *  Syncs, which the server runs as one implicit transaction, and it hands a
 *  read's result over before the segment's Sync. So a read failing later in
 *  the sequencer's segment rolls the sequencing back after its result was
 *  delivered: the rows are positioned again by a later run, possibly in
 *  another order. Two things follow, both handled here:
 *  - GetEvents reads are never sent behind the sequencer while it is in
 *    flight: they would see its positions before they are committed, in the
 *    same transaction. They wait and go out when its result has arrived,
 *    which puts them in a later segment, after its commit or rollback.
 *  - A run's events are published live only once pg_xact_status says its
 *    transaction committed; the query for that is sent after the run's
 *    result arrived, so it runs after the run's segment ended. Runs are
 *    published in the order they ran.
 *
 *  The live fan-out is a PUB socket connected to the broker's XSUB: PUB never
 *  blocks and drops at its high-water mark, which PUB/SUB allows; consumers
 *  that must see every event catch up with GetEvents.
 *
 *  Statements in flight point at this object, so when it is destroyed while
 *  some are, it stays allocated, inert, until crm_pg has answered them all.
 */
#include "crm_events.h"
#include "crm_json.h"
#include "crm_log.h"
#include "crm_mdp.h"

#include <assert.h>
#include <czmq.h>
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BUSY_RETRY_S  0.01 //  Wait before trying again when another instance holds the counter
#define LINGER_S      0.01 //  Wait after a soon kick, for the commits of that while to share a run
#define SNDHWM        100000 //  Live events queued for the broker before PUB drops
#define TYPE_NAME_MAX 128    //  Longest "crm.v1.<EventName>"
//  Room left in a GetEvents reply for the status frame and framing
#define REPLY_BUDGET (CRM_MAX_MESSAGE_BYTES - 16 * 1024)

typedef enum {
    LIVE_PENDING,   //  Waiting for pg_xact_status
    LIVE_COMMITTED, //  To publish
    LIVE_DROPPED,   //  Rolled back, or its fate unknown: not published
} live_state_t;

//  One event as it goes out live.
typedef struct {
    int64_t position;   //  Its position
    char *topic;        //  "<service>.<EventName>"
    uint8_t *payload;   //  Packed crm.v1.<EventName>; NULL when empty
    size_t payload_len; //  Bytes in payload
    char *request_id;   //  The request that caused it
} live_event_t;

typedef struct _live_t live_t;
typedef struct _get_t get_t;

//  The events of one sequencer run, held until its commit is confirmed.
struct _live_t {
    crm_events_t *owner;  //  The log it belongs to
    live_t *next;         //  Next run, in the order they ran
    live_state_t state;   //  Whether to publish
    int count;            //  Events
    live_event_t *events; //  count of them, in position order
};

//  One GetEvents call waiting for the database.
struct _get_t {
    crm_events_t *events; //  Owner
    crm_call_t *call;     //  To answer
    int64_t after;        //  after_position asked for
    int limit;            //  Events wanted, capped
    get_t *next;          //  Next deferred call
};

struct _crm_events_t {
    struct ev_loop *loop;                   //  Borrowed
    crm_pg_t *pg;                           //  Borrowed
    char *service;                          //  Service name, for log lines
    zsock_t *pub;                           //  Live fan-out; NULL when off
    ev_timer timer;                         //  Runs the sequencer every interval
    ev_timer retry;                         //  Runs it soon: after a kick, or a busy counter
    int batch;                              //  Most events per sequencer run
    bool running;                           //  A sequencer statement is in flight
    bool again;                             //  Kicked while it was: run once more
    bool again_soon;                        //  Kicked soon while it was: run once more, soon
    bool failing;                           //  The last run failed: log the next at debug
    int64_t positioned;                     //  Events positioned by this instance
    get_t *deferred;                        //  GetEvents held back while the sequencer runs
    get_t *deferred_tail;                   //  Its last
    live_t *live;                           //  Runs waiting to be published, oldest first
    live_t *live_tail;                      //  Its last
    int outstanding;                        //  Statements submitted and not answered
    bool doomed;                            //  Destroyed: free when outstanding is 0
    char type_name[TYPE_NAME_MAX];          //  Last payload type looked up
    const ProtobufCMessageDescriptor *type; //  Its descriptor, or NULL if unknown
};

static void s_sequence (crm_events_t *self);

//  --------------------------------------------------------------------------
//  Lifetime

static void
s_live_free (live_t *live)
{
    for (int i = 0; i < live->count; i++) {
        free (live->events[i].topic);
        free (live->events[i].payload);
        free (live->events[i].request_id);
    }
    free (live->events);
    free (live);
}

static void
s_free (crm_events_t *self)
{
    while (self->live) {
        live_t *live = self->live;
        self->live = live->next;
        s_live_free (live);
    }
    free (self->service);
    free (self);
}

//  A statement of ours was answered: frees a destroyed object once none is left.
//  True when self is gone.
static bool
s_release (crm_events_t *self)
{
    assert (self->outstanding > 0);
    self->outstanding--;
    if (self->doomed && self->outstanding == 0) {
        s_free (self);
        return true;
    }
    return false;
}

static int
s_submit (crm_events_t *self, const char *statement, int nparams, const char *const *values,
          crm_pg_fn *fn, void *arg)
{
    if (crm_pg_read (self->pg, statement, nparams, values, fn, arg) != 0)
        return -1;
    self->outstanding++;
    return 0;
}

//  --------------------------------------------------------------------------
//  Payloads

//  The packed crm.v1.<EventName> of an event from its stored JSON, into
//  *data_p (caller frees; NULL when empty). An event whose type is unknown or
//  whose JSON does not convert gets an empty payload and an error log line:
//  one bad event must not hold up the log behind it.
static void
s_payload (crm_events_t *self, int64_t position, const char *topic, const char *json_text,
           const char *request_id, uint8_t **data_p, size_t *len_p)
{
    *data_p = NULL;
    *len_p = 0;
    const char *dot = strchr (topic, '.');
    const char *event_name = dot ? dot + 1 : topic;
    char type_name[TYPE_NAME_MAX];
    int n = snprintf (type_name, sizeof type_name, "crm.v1.%s", event_name);
    if (n < 0 || (size_t) n >= sizeof type_name || !dot) {
        crm_log_write (CRM_LOG_ERROR, request_id, NULL,
                       "event %" PRId64 " has topic \"%.64s\", not \"<service>.<EventName>\": "
                       "sent with an empty payload",
                       position, topic);
        return;
    }
    if (strcmp (type_name, self->type_name) != 0) {
        memcpy (self->type_name, type_name, (size_t) n + 1);
        self->type = crm_proto_find_message (type_name);
    }
    if (!self->type) {
        crm_log_write (CRM_LOG_ERROR, request_id, NULL,
                       "event %" PRId64 " of topic \"%s\": no message type %s: sent with an "
                       "empty payload",
                       position, topic, type_name);
        return;
    }
    char err[256] = "";
    json_error_t jerr;
    json_t *json = json_loads (json_text, 0, &jerr);
    ProtobufCMessage *msg = json ? crm_json_to_message (self->type, json, err, sizeof err) : NULL;
    json_decref (json);
    if (!msg) {
        crm_log_write (CRM_LOG_ERROR, request_id, NULL,
                       "could not convert event %" PRId64 " of topic \"%s\" to %s: %s: sent with "
                       "an empty payload",
                       position, topic, type_name, json ? err : jerr.text);
        return;
    }
    size_t len = protobuf_c_message_get_packed_size (msg);
    if (len > 0) {
        *data_p = malloc (len);
        assert (*data_p);
        *len_p = protobuf_c_message_pack (msg, *data_p);
    }
    protobuf_c_message_free_unpacked (msg, NULL);
}

//  --------------------------------------------------------------------------
//  Live fan-out

static void
s_send_frame (void *socket, const void *data, size_t len, bool more)
{
    //  PUB drops rather than blocks; DONTWAIT makes sure of it
    zmq_send (socket, data, len, ZMQ_DONTWAIT | (more ? ZMQ_SNDMORE : 0));
}

//  Publishes the runs at the head whose fate is known, in the order they ran.
static void
s_live_publish (crm_events_t *self)
{
    void *socket = self->pub ? zsock_resolve (self->pub) : NULL;
    while (self->live && self->live->state != LIVE_PENDING) {
        live_t *live = self->live;
        self->live = live->next;
        if (!self->live)
            self->live_tail = NULL;
        for (int i = 0; socket && live->state == LIVE_COMMITTED && i < live->count; i++) {
            live_event_t *event = &live->events[i];
            char position[24];
            int len = snprintf (position, sizeof position, "%" PRId64, event->position);
            s_send_frame (socket, event->topic, strlen (event->topic), true);
            s_send_frame (socket, event->payload, event->payload_len, true);
            s_send_frame (socket, position, (size_t) len, true);
            s_send_frame (socket, event->request_id, strlen (event->request_id), false);
        }
        s_live_free (live);
    }
}

//  pg_xact_status of a run's transaction: publish it if it committed.
static void
s_on_confirmed (crm_pg_status_t status, const PGresult *result, const char *error, void *arg)
{
    live_t *live = arg;
    crm_events_t *self = live->owner;
    if (s_release (self))
        return;
    if (self->doomed)
        return;
    const char *state =
        status == CRM_PG_OK && PQntuples (result) == 1 && !PQgetisnull (result, 0, 0)
            ? PQgetvalue (result, 0, 0)
            : NULL;
    if (state && strcmp (state, "committed") == 0)
        live->state = LIVE_COMMITTED;
    else {
        live->state = LIVE_DROPPED;
        if (state && strcmp (state, "aborted") == 0)
            crm_debug ("sequencing of events %" PRId64 "..%" PRId64
                       " was rolled back with its transaction: not published",
                       live->events[0].position, live->events[live->count - 1].position);
        else
            crm_debug ("could not tell whether events %" PRId64 "..%" PRId64
                       " were committed (%s): not published",
                       live->events[0].position, live->events[live->count - 1].position,
                       state   ? state
                       : error ? error
                               : "no result");
    }
    s_live_publish (self);
}

//  Holds the events a run positioned until its commit is confirmed, and asks
//  for that confirmation.
static void
s_live_queue (crm_events_t *self, const PGresult *result, int count)
{
    if (PQgetisnull (result, 0, 5)) {
        //  Positions given without a transaction id cannot be; publish nothing
        crm_error ("sequencer returned events without a transaction id");
        return;
    }
    live_t *live = calloc (1, sizeof *live);
    assert (live);
    live->owner = self;
    live->state = LIVE_PENDING;
    live->events = calloc ((size_t) count, sizeof *live->events);
    assert (live->events);
    for (int i = 0; i < count; i++) {
        live_event_t *event = &live->events[i];
        event->position = strtoll (PQgetvalue (result, i, 0), NULL, 10);
        event->topic = strdup (PQgetvalue (result, i, 1));
        event->request_id = strdup (PQgetvalue (result, i, 3));
        assert (event->topic && event->request_id);
        live->count++;
        s_payload (self, event->position, event->topic, PQgetvalue (result, i, 2),
                   event->request_id, &event->payload, &event->payload_len);
    }
    if (self->live_tail)
        self->live_tail->next = live;
    else
        self->live = live;
    self->live_tail = live;

    const char *values[] = {PQgetvalue (result, 0, 5)};
    if (s_submit (self, "crm_events_committed", 1, values, s_on_confirmed, live) != 0) {
        live->state = LIVE_DROPPED;
        s_live_publish (self);
    }
}

//  --------------------------------------------------------------------------
//  GetEvents

static void
s_get_unavailable (crm_call_t *call)
{
    crm_call_reply (call, CRM__V1__STATUS_CODE__STATUS_UNAVAILABLE, NULL,
                    "database unavailable: retry");
}

//  Answers a GetEvents call from the rows of crm_events_after(): events in
//  position order, then a row holding the last position.
static void
s_get_answer (crm_events_t *self, get_t *get, const PGresult *result)
{
    crm_call_t *call = get->call;
    int rows = PQntuples (result);
    if (rows < 1 || !PQgetisnull (result, rows - 1, 1)) {
        crm_log_write (CRM_LOG_ERROR, crm_call_request_id (call), crm_call_branch (call),
                       "GetEvents: malformed result from the database");
        crm_call_reply (call, CRM__V1__STATUS_CODE__STATUS_INTERNAL, NULL,
                        "could not read the event log");
        return;
    }
    int count = rows - 1;
    Crm__V1__GetEventsResponse response = CRM__V1__GET_EVENTS_RESPONSE__INIT;
    response.last_position = strtoll (PQgetvalue (result, rows - 1, 0), NULL, 10);
    int64_t first = count > 0 ? strtoll (PQgetvalue (result, 0, 0), NULL, 10) : 0;
    if (get->after > response.last_position) {
        crm_call_reply (call, CRM__V1__STATUS_CODE__STATUS_OUT_OF_RANGE, &response.base,
                        "position %" PRId64 " is beyond the end of the %s event log (%" PRId64
                        "): resync",
                        get->after, self->service, response.last_position);
        return;
    }
    if (get->after < response.last_position && first != get->after + 1) {
        crm_call_reply (call, CRM__V1__STATUS_CODE__STATUS_OUT_OF_RANGE, &response.base,
                        "events after position %" PRId64 " of the %s event log were trimmed "
                        "(the oldest kept is %" PRId64 "): resync",
                        get->after, self->service, first);
        return;
    }

    Crm__V1__Event *events = calloc ((size_t) count + 1, sizeof *events);
    Crm__V1__Event **pointers = calloc ((size_t) count + 1, sizeof *pointers);
    assert (events && pointers);
    size_t total = 0;
    int n = 0;
    for (; n < count; n++) {
        Crm__V1__Event *event = &events[n];
        crm__v1__event__init (event);
        event->position = strtoll (PQgetvalue (result, n, 0), NULL, 10);
        event->topic = PQgetvalue (result, n, 1);
        event->request_id = PQgetvalue (result, n, 3);
        event->created_unix_ms = strtoll (PQgetvalue (result, n, 4), NULL, 10);
        s_payload (self, event->position, event->topic, PQgetvalue (result, n, 2),
                   event->request_id, &event->payload.data, &event->payload.len);
        //  Field tag and length prefix come on top of the event itself
        size_t size = crm__v1__event__get_packed_size (event) + 11;
        if (total + size > REPLY_BUDGET) {
            if (n > 0) {
                free (event->payload.data);
                break; //  The consumer asks again from the last one it got
            }
            //  One event alone larger than a reply may be: never a consumer stuck on it
            crm_log_write (CRM_LOG_ERROR, event->request_id, NULL,
                           "event %" PRId64 " is larger than a reply may be: sent with an "
                           "empty payload",
                           event->position);
            free (event->payload.data);
            event->payload.data = NULL;
            event->payload.len = 0;
            size = crm__v1__event__get_packed_size (event) + 11;
        }
        total += size;
        pointers[n] = event;
    }
    response.n_events = (size_t) n;
    response.events = pointers;
    crm_call_reply (call, CRM__V1__STATUS_CODE__STATUS_OK, &response.base, NULL);
    for (int i = 0; i < n; i++)
        free (events[i].payload.data);
    free (pointers);
    free (events);
}

static void
s_on_events (crm_pg_status_t status, const PGresult *result, const char *error, void *arg)
{
    get_t *get = arg;
    crm_events_t *self = get->events;
    if (status == CRM_PG_OK)
        s_get_answer (self, get, result);
    else if (status == CRM_PG_EUNAVAILABLE)
        s_get_unavailable (get->call);
    else {
        crm_log_write (CRM_LOG_ERROR, crm_call_request_id (get->call), crm_call_branch (get->call),
                       "GetEvents failed in the database: %s", error ? error : "no result");
        crm_call_reply (get->call, CRM__V1__STATUS_CODE__STATUS_INTERNAL, NULL,
                        "could not read the event log");
    }
    free (get);
    s_release (self);
}

static void
s_get_submit (crm_events_t *self, get_t *get)
{
    char after[24], limit[16];
    snprintf (after, sizeof after, "%" PRId64, get->after);
    snprintf (limit, sizeof limit, "%d", get->limit);
    const char *values[] = {after, limit};
    if (s_submit (self, "crm_events_after", 2, values, s_on_events, get) != 0) {
        s_get_unavailable (get->call);
        free (get);
    }
}

//  Sends the GetEvents reads held back while the sequencer ran.
static void
s_get_release (crm_events_t *self)
{
    get_t *get = self->deferred;
    self->deferred = self->deferred_tail = NULL;
    while (get) {
        get_t *next = get->next;
        get->next = NULL;
        s_get_submit (self, get);
        get = next;
    }
}

void
crm_events_handle_get (crm_events_t *self, crm_call_t *call,
                       const Crm__V1__GetEventsRequest *request)
{
    assert (self);
    assert (call);
    assert (request);
    if (request->after_position < 0) {
        crm_call_reply (call, CRM__V1__STATUS_CODE__STATUS_INVALID_ARGUMENT, NULL,
                        "after_position must not be negative");
        return;
    }
    if (self->doomed) {
        s_get_unavailable (call);
        return;
    }
    get_t *get = calloc (1, sizeof *get);
    assert (get);
    get->events = self;
    get->call = call;
    get->after = request->after_position;
    get->limit = request->limit == 0                     ? CRM_EVENTS_LIMIT_DEFAULT
                 : request->limit > CRM_EVENTS_LIMIT_MAX ? CRM_EVENTS_LIMIT_MAX
                                                         : (int) request->limit;
    if (self->running) {
        //  Not in the sequencer's transaction: see the file's comment
        if (self->deferred_tail)
            self->deferred_tail->next = get;
        else
            self->deferred = get;
        self->deferred_tail = get;
    }
    else
        s_get_submit (self, get);
}

//  --------------------------------------------------------------------------
//  The sequencer

static void
s_on_sequenced (crm_pg_status_t status, const PGresult *result, const char *error, void *arg)
{
    crm_events_t *self = arg;
    self->running = false;
    if (self->doomed) {
        s_release (self);
        return;
    }
    bool rerun = self->again;
    bool soon = self->again_soon;
    self->again = self->again_soon = false;
    if (status == CRM_PG_OK) {
        int count = PQntuples (result);
        if (count == 1 && PQgetisnull (result, 0, 0)) {
            //  Another instance holds the counter; it may not see our newest rows
            if (!rerun && !ev_is_active (&self->retry)) {
                ev_timer_set (&self->retry, BUSY_RETRY_S, 0);
                ev_timer_start (self->loop, &self->retry);
            }
        }
        else if (count > 0) {
            self->positioned += count;
            if (self->pub)
                s_live_queue (self, result, count);
            if (count >= self->batch)
                rerun = true; //  A backlog: keep going
        }
        if (self->failing)
            crm_info ("event log sequencer of %s works again", self->service);
        self->failing = false;
    }
    else {
        //  EUNAVAILABLE: crm_pg said so already. Either way the timer tries again
        if (status == CRM_PG_ESQL) {
            crm_log_write (self->failing ? CRM_LOG_DEBUG : CRM_LOG_ERROR, NULL, NULL,
                           "could not sequence the %s event log: %s", self->service,
                           error ? error : "no result");
            self->failing = true;
        }
        rerun = soon = false;
    }
    s_get_release (self);
    if (rerun)
        s_sequence (self);
    else if (soon)
        crm_events_kick_soon (self);
    s_release (self);
}

//  Runs the sequencer unless it is running already.
static void
s_sequence (crm_events_t *self)
{
    if (self->running || self->doomed)
        return;
    char batch[16];
    snprintf (batch, sizeof batch, "%d", self->batch);
    const char *values[] = {batch};
    if (s_submit (self, "crm_events_sequence", 1, values, s_on_sequenced, self) != 0)
        return; //  Not connected: the timer tries again
    self->running = true;
    self->again = self->again_soon = false;
    ev_timer_stop (self->loop, &self->retry);
}

static void
s_on_timer (struct ev_loop *loop, ev_timer *watcher, int revents)
{
    (void) loop;
    (void) revents;
    s_sequence ((crm_events_t *) watcher->data);
}

void
crm_events_kick (crm_events_t *self)
{
    assert (self);
    if (self->running)
        self->again = true;
    else
        s_sequence (self);
}

void
crm_events_kick_soon (crm_events_t *self)
{
    assert (self);
    if (self->running)
        self->again_soon = true;
    else if (!ev_is_active (&self->retry)) {
        ev_timer_set (&self->retry, LINGER_S, 0);
        ev_timer_start (self->loop, &self->retry);
    }
}

//  --------------------------------------------------------------------------
//  Construction and settings

crm_events_t *
crm_events_new (struct ev_loop *loop, crm_pg_t *pg, const char *service,
                const char *publish_endpoint)
{
    assert (loop);
    assert (pg);
    assert (service);
    crm_events_t *self = calloc (1, sizeof *self);
    assert (self);
    self->loop = loop;
    self->pg = pg;
    self->service = strdup (service);
    assert (self->service);
    self->batch = CRM_EVENTS_BATCH_DEFAULT;

    if (publish_endpoint && *publish_endpoint) {
        self->pub = crm_broker_socket (ZMQ_PUB);
        if (self->pub) {
            zsock_set_sndhwm (self->pub, SNDHWM);
            zsock_set_linger (self->pub, 0);
        }
        if (!self->pub || zsock_connect (self->pub, "%s", publish_endpoint) != 0) {
            crm_error ("could not connect the event fan-out to \"%s\": %s", publish_endpoint,
                       zmq_strerror (errno));
            zsock_destroy (&self->pub);
            free (self->service);
            free (self);
            return NULL;
        }
    }
    //  Another crm_events on the same pg registered these already; that is fine
    crm_pg_prepare (pg, "crm_events_sequence",
                    "SELECT s.*, pg_current_xact_id_if_assigned ()::text "
                    "FROM crm_events_sequence ($1::int) AS s",
                    1);
    crm_pg_prepare (pg, "crm_events_after", "SELECT * FROM crm_events_after ($1::bigint, $2::int)",
                    2);
    crm_pg_prepare (pg, "crm_events_committed", "SELECT pg_xact_status ($1::xid8)", 1);

    ev_timer_init (&self->timer, s_on_timer, 0, CRM_EVENTS_INTERVAL_MS_DEFAULT / 1000.0);
    self->timer.data = self;
    ev_timer_again (loop, &self->timer);
    ev_timer_init (&self->retry, s_on_timer, BUSY_RETRY_S, 0);
    self->retry.data = self;
    return self;
}

void
crm_events_destroy (crm_events_t **self_p)
{
    assert (self_p);
    crm_events_t *self = *self_p;
    if (!self)
        return;
    *self_p = NULL;
    ev_timer_stop (self->loop, &self->timer);
    ev_timer_stop (self->loop, &self->retry);
    zsock_destroy (&self->pub);
    self->doomed = true;
    get_t *get = self->deferred;
    self->deferred = self->deferred_tail = NULL;
    while (get) {
        get_t *next = get->next;
        s_get_unavailable (get->call);
        free (get);
        get = next;
    }
    if (self->outstanding == 0)
        s_free (self);
}

void
crm_events_set_interval (crm_events_t *self, int interval_ms)
{
    assert (self);
    assert (interval_ms >= 1);
    self->timer.repeat = interval_ms / 1000.0;
    ev_timer_again (self->loop, &self->timer);
}

void
crm_events_set_batch (crm_events_t *self, int batch)
{
    assert (self);
    assert (batch >= 1);
    self->batch = batch;
}

int64_t
crm_events_positioned (crm_events_t *self)
{
    assert (self);
    return self->positioned;
}
