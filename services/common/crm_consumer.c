/*  crm_consumer.c - applies another service's event log in this service's database, each event exactly once, in order.
 *
 *  One cycle: read the stored position, GetEvents after it, submit one apply
 *  write per event, and once every write is answered either go on at once
 *  (the source has more) or wait for a wake-up or the poll timer. Only one
 *  stage is ever in flight, so the events of a batch are submitted together
 *  in order, and crm_pg commits them in that order, grouped.
 *
 *  The position that counts is the one in the database. The apply function
 *  moves it with crm_consumer_advance in the transaction of the effect and
 *  does nothing for an event that is not next, so a resend, a second
 *  instance consuming the same source, or a batch whose writes crm_pg retried
 *  one by one after a failure can never apply an event twice or out of
 *  order. The position held here only says where to ask from: it is read
 *  again from the database at start, after every failure, and before each
 *  fetch that follows a wait, and believed only as long as every apply of a
 *  batch committed. An apply that failed is not skipped: after a backoff the
 *  position is read again and the same events are asked for again.
 *
 *  The MDP side is a plain 7/MDP client on a DEALER socket watched on the
 *  loop. Each GetEvents carries a request id of its own; a reply with another
 *  id (an answer to a request given up on) is dropped. A request unanswered
 *  within the timeout is given up with its socket (the Lazy Pirate way), so
 *  requests queued for a broker that is away do not pile up.
 *
 *  Statements in flight point at this object, so when it is destroyed while
 *  some are, it stays allocated, inert, until crm_pg has answered them all.
 */
#include "crm_consumer.h"
#include "crm_json.h"
#include "crm_log.h"
#include "crm_mdp.h"
#include "crm_proto.h"
#include "crm_util.h"
#include "crm_zwatch.h"

#include <assert.h>
#include <czmq.h>
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BACKOFF_MIN_S  0.1   //  First wait after a failure
#define BACKOFF_MAX_S  5.0   //  Longest wait between attempts
#define ERROR_EVERY_MS 60000 //  The same trouble is logged as an error at most this often
#define READ_BURST     256   //  Messages read from a socket before the loop runs others
#define WAKE_HWM       1000  //  Live messages queued for us before SUB drops (a wake-up is enough)
#define TYPE_NAME_MAX  128   //  Longest "crm.v1.<EventName>"
#define STATEMENT_MAX  128   //  Longest name of the position statement

typedef enum {
    STATE_POSITION, //  Reading the stored position
    STATE_FETCH,    //  GetEvents in flight
    STATE_APPLY,    //  Apply writes in flight
    STATE_IDLE,     //  Caught up: waiting for a wake-up or the poll
    STATE_BACKOFF,  //  Waiting after a failure
} state_t;

//  Trouble worth an error line, each kind rate-limited on its own
typedef enum {
    TROUBLE_FETCH,
    TROUBLE_RANGE,
    TROUBLE_APPLY,
    TROUBLE_POSITION,
    TROUBLE_KINDS,
} trouble_t;

//  One apply write in flight.
typedef struct {
    crm_consumer_t *owner; //  The consumer
    int64_t position;      //  Its event's position
} apply_t;

struct _crm_consumer_t {
    struct ev_loop *loop;                   //  Borrowed
    crm_pg_t *pg;                           //  Borrowed
    char *broker;                           //  Broker endpoint for GetEvents
    char *source;                           //  Source service name
    char *apply_statement;                  //  The service's apply statement
    char position_statement[STATEMENT_MAX]; //  Ours, reading the stored position
    int batch;                              //  Events per GetEvents
    int timeout_ms;                         //  Wait for a reply
    double poll_s;                          //  Period of the poll while idle
    state_t state;                          //  Where the cycle is
    zsock_t *dealer;                        //  MDP client socket; NULL until made
    crm_zwatch_t *dealer_watch;             //  Reads it on the loop
    zsock_t *sub;                           //  Live wake-ups; NULL when polling only
    crm_zwatch_t *sub_watch;                //  Reads it on the loop
    ev_timer poll;                          //  While idle: fetch anyway
    ev_timer timeout;                       //  While fetching: give the request up
    ev_timer backoff;                       //  While backing off
    double backoff_s;                       //  Next backoff
    bool wake_pending;                      //  A wake-up came while busy: fetch again after
    char request_id[37];                    //  Of the GetEvents in flight
    int64_t position;                       //  Last position applied, as far as we know
    apply_t *applies;                       //  The writes of the batch in flight
    int apply_count;                        //  How many were submitted
    int apply_pending;                      //  How many are not answered yet
    int64_t apply_failed_at;                //  First position that failed in the batch; 0: none
    bool apply_unavailable;                 //  The database went away during the batch
    int64_t source_last;                    //  The source's last position, last we heard
    int outstanding;                        //  Statements submitted and not answered
    bool doomed;                            //  Destroyed: free when outstanding is 0
    int64_t error_logged[TROUBLE_KINDS];    //  When each kind was last logged as an error
    crm_consumer_stats_t stats;             //  Figures for tests and metrics
    char type_name[TYPE_NAME_MAX];          //  Last payload type looked up
    const ProtobufCMessageDescriptor *type; //  Its descriptor, or NULL if unknown
};

static void s_read_position (crm_consumer_t *self);
static void s_fetch (crm_consumer_t *self);
static void s_on_dealer (void *socket, void *arg);

//  --------------------------------------------------------------------------
//  Lifetime and helpers

static void
s_free (crm_consumer_t *self)
{
    free (self->applies);
    free (self->broker);
    free (self->source);
    free (self->apply_statement);
    free (self);
}

//  A statement of ours was answered: frees a destroyed object once none is left.
//  True when self is gone or inert.
static bool
s_release (crm_consumer_t *self)
{
    assert (self->outstanding > 0);
    self->outstanding--;
    if (self->doomed) {
        if (self->outstanding == 0)
            s_free (self);
        return true;
    }
    return false;
}

//  The level for a line about trouble: an error the first time in a while, debug otherwise,
//  so a source that stays away does not fill the log.
static crm_log_level_t
s_trouble_level (crm_consumer_t *self, trouble_t kind)
{
    int64_t now = crm_mono_ms ();
    if (self->error_logged[kind] == 0 || now - self->error_logged[kind] >= ERROR_EVERY_MS) {
        self->error_logged[kind] = now;
        return CRM_LOG_ERROR;
    }
    return CRM_LOG_DEBUG;
}

//  Trouble of this kind is over: the next one is an error again.
static void
s_trouble_over (crm_consumer_t *self, trouble_t kind)
{
    if (self->error_logged[kind] != 0)
        crm_info ("consumer of %s at position %" PRId64 " works again", self->source,
                  self->position);
    self->error_logged[kind] = 0;
}

//  Waits, longer each time, then reads the position again and carries on.
static void
s_backoff (crm_consumer_t *self)
{
    ev_timer_stop (self->loop, &self->timeout);
    ev_timer_stop (self->loop, &self->poll);
    self->state = STATE_BACKOFF;
    ev_timer_set (&self->backoff, self->backoff_s, 0);
    ev_timer_start (self->loop, &self->backoff);
    self->backoff_s *= 2;
    if (self->backoff_s > BACKOFF_MAX_S)
        self->backoff_s = BACKOFF_MAX_S;
}

static void
s_on_backoff (struct ev_loop *loop, ev_timer *watcher, int revents)
{
    (void) loop;
    (void) revents;
    s_read_position ((crm_consumer_t *) watcher->data);
}

//  Caught up: wait for a wake-up or the poll.
static void
s_idle (crm_consumer_t *self)
{
    self->state = STATE_IDLE;
    self->backoff_s = BACKOFF_MIN_S;
    ev_timer_set (&self->poll, self->poll_s, 0);
    ev_timer_start (self->loop, &self->poll);
}

//  Something may be new: go and look, unless a cycle is running already.
static void
s_wake (crm_consumer_t *self)
{
    if (self->state == STATE_IDLE) {
        ev_timer_stop (self->loop, &self->poll);
        self->wake_pending = false;
        s_read_position (self);
    }
    else if (self->state != STATE_BACKOFF)
        self->wake_pending = true;
}

static void
s_on_poll (struct ev_loop *loop, ev_timer *watcher, int revents)
{
    (void) loop;
    (void) revents;
    crm_consumer_t *self = watcher->data;
    self->stats.polls++;
    s_wake (self);
}

//  --------------------------------------------------------------------------
//  The stored position

static void
s_on_position (crm_pg_status_t status, const PGresult *result, const char *error, void *arg)
{
    crm_consumer_t *self = arg;
    if (s_release (self))
        return;
    assert (self->state == STATE_POSITION);
    if (status != CRM_PG_OK || PQntuples (result) != 1 || PQgetisnull (result, 0, 0)) {
        if (status == CRM_PG_ESQL || status == CRM_PG_OK)
            crm_log_write (s_trouble_level (self, TROUBLE_POSITION), NULL, NULL,
                           "could not read the position of %s: %s", self->source,
                           error ? error : "no result");
        s_backoff (self); //  EUNAVAILABLE: crm_pg said so already
        return;
    }
    s_trouble_over (self, TROUBLE_POSITION);
    int64_t stored = strtoll (PQgetvalue (result, 0, 0), NULL, 10);
    if (stored < self->position)
        //  Committed applies only ever move it on
        crm_warn ("stored position of %s went back from %" PRId64 " to %" PRId64
                  ": reset by an operator, or the apply statement %s does not call "
                  "crm_consumer_advance ('%s', position)",
                  self->source, self->position, stored, self->apply_statement, self->source);
    else if (stored > self->position)
        crm_debug ("consumer of %s: stored position %" PRId64 ", was at %" PRId64, self->source,
                   stored, self->position);
    self->position = stored;
    s_fetch (self);
}

//  Reads the stored position, then fetches from it.
static void
s_read_position (crm_consumer_t *self)
{
    self->state = STATE_POSITION;
    const char *values[] = {self->source};
    if (crm_pg_read (self->pg, self->position_statement, 1, values, s_on_position, self) != 0) {
        s_backoff (self); //  Not connected; crm_pg reconnects
        return;
    }
    self->outstanding++;
}

//  --------------------------------------------------------------------------
//  Applying

//  The event's payload as proto3 JSON text (caller frees). An empty payload is
//  "{}"; so is one of a type this build does not know (a newer source), and
//  one that does not decode, with an error line: the source sends an empty
//  payload for events it cannot convert too, rather than hold up its log.
static char *
s_payload_json (crm_consumer_t *self, const Crm__V1__Event *event)
{
    const char *dot = strchr (event->topic, '.');
    char type_name[TYPE_NAME_MAX];
    int n = snprintf (type_name, sizeof type_name, "crm.v1.%s", dot ? dot + 1 : "");
    if (!dot || n < 0 || (size_t) n >= sizeof type_name) {
        crm_log_write (CRM_LOG_ERROR, event->request_id, NULL,
                       "event %" PRId64 " of %s has topic \"%.64s\", not "
                       "\"<service>.<EventName>\": applied with an empty payload",
                       event->position, self->source, event->topic);
        return strdup ("{}");
    }
    if (strcmp (type_name, self->type_name) != 0) {
        memcpy (self->type_name, type_name, (size_t) n + 1);
        self->type = crm_proto_find_message (type_name);
    }
    if (!self->type) {
        crm_log_write (CRM_LOG_DEBUG, event->request_id, NULL,
                       "event %" PRId64 " of %s: no message type %s: applied with an empty "
                       "payload",
                       event->position, self->source, type_name);
        return strdup ("{}");
    }
    ProtobufCMessage *msg =
        protobuf_c_message_unpack (self->type, NULL, event->payload.len, event->payload.data);
    if (!msg) {
        crm_log_write (CRM_LOG_ERROR, event->request_id, NULL,
                       "event %" PRId64 " of %s: payload is not a valid %s: applied with an "
                       "empty payload",
                       event->position, self->source, type_name);
        return strdup ("{}");
    }
    json_t *json = crm_json_from_message (msg);
    protobuf_c_message_free_unpacked (msg, NULL);
    char *text = json ? json_dumps (json, JSON_COMPACT) : NULL;
    json_decref (json);
    return text ? text : strdup ("{}");
}

static void
s_on_applied (crm_pg_status_t status, const PGresult *result, const char *error, void *arg)
{
    (void) result;
    apply_t *apply = arg;
    crm_consumer_t *self = apply->owner;
    if (s_release (self))
        return;
    assert (self->state == STATE_APPLY && self->apply_pending > 0);
    self->apply_pending--;
    if (status == CRM_PG_OK)
        self->stats.applied++;
    else if (status == CRM_PG_ESQL) {
        self->stats.apply_errors++;
        //  The first failure of a batch is the one that holds the log up
        if (self->apply_failed_at == 0 || apply->position < self->apply_failed_at) {
            self->apply_failed_at = apply->position;
            crm_log_write (s_trouble_level (self, TROUBLE_APPLY), NULL, NULL,
                           "could not apply event %" PRId64 " of %s: %s (retrying)",
                           apply->position, self->source, error ? error : "no result");
        }
    }
    else
        self->apply_unavailable = true;
    if (self->apply_pending > 0)
        return;

    //  The whole batch is answered
    int count = self->apply_count;
    int64_t last = count > 0 ? self->applies[count - 1].position : self->position;
    bool failed = self->apply_failed_at != 0 || self->apply_unavailable || count == 0;
    free (self->applies);
    self->applies = NULL;
    self->apply_count = 0;
    if (failed) {
        //  Some of the batch may have committed: the database knows where we are
        s_backoff (self);
        return;
    }
    s_trouble_over (self, TROUBLE_APPLY);
    self->position = last;
    self->backoff_s = BACKOFF_MIN_S;
    if (self->source_last > last)
        s_fetch (self); //  A backlog: keep going
    else if (self->wake_pending) {
        self->wake_pending = false;
        s_read_position (self);
    }
    else
        s_idle (self);
}

//  Submits the apply writes of a GetEvents answer, all in one loop iteration
//  so crm_pg groups them.
static void
s_apply (crm_consumer_t *self, const Crm__V1__GetEventsResponse *response)
{
    int count = (int) response->n_events;
    self->state = STATE_APPLY;
    self->applies = calloc ((size_t) count, sizeof *self->applies);
    assert (self->applies);
    self->apply_count = 0;
    self->apply_pending = 0;
    self->apply_failed_at = 0;
    self->apply_unavailable = false;
    for (int i = 0; i < count; i++) {
        const Crm__V1__Event *event = response->events[i];
        apply_t *apply = &self->applies[i];
        apply->owner = self;
        apply->position = event->position;
        char position[24];
        snprintf (position, sizeof position, "%" PRId64, event->position);
        char *payload = s_payload_json (self, event);
        assert (payload);
        const char *values[] = {position, event->topic, payload};
        int rc = crm_pg_write (self->pg, self->apply_statement, 3, values, s_on_applied, apply);
        free (payload);
        if (rc != 0) {
            self->apply_unavailable = true;
            break; //  Not connected: what was queued still gets its answer
        }
        self->apply_count++;
        self->apply_pending++;
        self->outstanding++;
    }
    if (self->apply_pending == 0) {
        free (self->applies);
        self->applies = NULL;
        self->apply_count = 0;
        s_backoff (self);
    }
}

//  --------------------------------------------------------------------------
//  GetEvents through the broker

//  A fresh DEALER to the broker; the old one, with whatever it still held, goes.
static int
s_dealer_connect (crm_consumer_t *self)
{
    crm_zwatch_destroy (&self->dealer_watch);
    zsock_destroy (&self->dealer);
    self->dealer = crm_broker_socket (ZMQ_DEALER);
    if (!self->dealer)
        return -1;
    zsock_set_linger (self->dealer, 0);
    zsock_set_sndtimeo (self->dealer, 0);
    if (zsock_connect (self->dealer, "%s", self->broker) != 0) {
        crm_error ("could not connect to \"%s\": %s", self->broker, zmq_strerror (errno));
        zsock_destroy (&self->dealer);
        return -1;
    }
    self->dealer_watch =
        crm_zwatch_new (self->loop, zsock_resolve (self->dealer), s_on_dealer, self);
    if (!self->dealer_watch) {
        zsock_destroy (&self->dealer);
        return -1;
    }
    return 0;
}

//  Asks the source for the events after our position.
static void
s_fetch (crm_consumer_t *self)
{
    self->state = STATE_FETCH;
    crm_uuid (self->request_id);
    Crm__V1__RequestMeta meta = CRM__V1__REQUEST_META__INIT;
    meta.request_id = self->request_id;
    meta.deadline_unix_ms = crm_now_ms () + self->timeout_ms;
    meta.caller = (char *) "crm_consumer";
    Crm__V1__GetEventsRequest request = CRM__V1__GET_EVENTS_REQUEST__INIT;
    request.after_position = self->position;
    request.limit = (uint32_t) self->batch;
    zmsg_t *msg = crm_proto_request_new ("GetEvents", &meta, &request.base);
    zmsg_pushstr (msg, self->source);
    zmsg_pushstr (msg, CRM_MDPC);
    zmsg_pushmem (msg, "", 0);
    int rc = zmsg_send (&msg, self->dealer);
    int err = errno;
    zmsg_destroy (&msg); //  czmq keeps a message it could not send
    if (rc != 0) {
        self->stats.fetch_errors++;
        crm_log_write (s_trouble_level (self, TROUBLE_FETCH), self->request_id, NULL,
                       "could not ask %s for events: %s", self->source, zmq_strerror (err));
        s_dealer_connect (self);
        s_backoff (self);
        return;
    }
    ev_timer_set (&self->timeout, self->timeout_ms / 1000.0, 0);
    ev_timer_start (self->loop, &self->timeout);
}

static void
s_on_timeout (struct ev_loop *loop, ev_timer *watcher, int revents)
{
    (void) loop;
    (void) revents;
    crm_consumer_t *self = watcher->data;
    if (self->state != STATE_FETCH)
        return;
    self->stats.fetch_errors++;
    crm_log_write (s_trouble_level (self, TROUBLE_FETCH), self->request_id, NULL,
                   "no answer from %s to GetEvents within %d ms", self->source, self->timeout_ms);
    //  A late answer must not be taken for the next one's, and queued
    //  requests must not reach a broker that comes back
    if (s_dealer_connect (self) != 0)
        crm_error ("could not make a new socket for %s: retrying", self->source);
    s_backoff (self);
}

//  Handles the answer to the GetEvents in flight.
static void
s_on_answer (crm_consumer_t *self, const Crm__V1__Status *status, zframe_t *payload)
{
    ev_timer_stop (self->loop, &self->timeout);
    //  An empty frame is a valid, empty response (an empty log at position 0)
    Crm__V1__GetEventsResponse *response =
        payload ? crm__v1__get_events_response__unpack (NULL, zframe_size (payload),
                                                        zframe_data (payload))
                : NULL;
    if (status->code == CRM__V1__STATUS_CODE__STATUS_OUT_OF_RANGE) {
        self->stats.fetch_errors++;
        crm_log_write (s_trouble_level (self, TROUBLE_RANGE), self->request_id, NULL,
                       "consumer of %s must be resynced: GetEvents after position %" PRId64
                       " answered OUT_OF_RANGE (the source's last position is %" PRId64 ")",
                       self->source, self->position, response ? response->last_position : -1);
        if (response)
            crm__v1__get_events_response__free_unpacked (response, NULL);
        s_backoff (self);
        return;
    }
    if (status->code != CRM__V1__STATUS_CODE__STATUS_OK || !response) {
        self->stats.fetch_errors++;
        //  UNAVAILABLE (no worker, or its database is away) is expected now and then
        crm_log_write (status->code == CRM__V1__STATUS_CODE__STATUS_UNAVAILABLE
                           ? CRM_LOG_DEBUG
                           : s_trouble_level (self, TROUBLE_FETCH),
                       self->request_id, NULL, "GetEvents from %s: %s: %s", self->source,
                       crm_status_name (status->code),
                       status->message && *status->message ? status->message
                       : !response                         ? "no response"
                                                           : "failed");
        if (response)
            crm__v1__get_events_response__free_unpacked (response, NULL);
        s_backoff (self);
        return;
    }
    s_trouble_over (self, TROUBLE_FETCH);
    s_trouble_over (self, TROUBLE_RANGE);
    self->stats.fetches++;
    self->source_last = response->last_position;
    //  The source promises a gapless run after our position; check before applying
    for (size_t i = 0; i < response->n_events; i++) {
        if (response->events[i]->position != self->position + (int64_t) i + 1) {
            self->stats.fetch_errors++;
            crm_log_write (s_trouble_level (self, TROUBLE_FETCH), self->request_id, NULL,
                           "GetEvents from %s after %" PRId64 " answered position %" PRId64
                           " in place of %" PRId64 ": not applied",
                           self->source, self->position, response->events[i]->position,
                           self->position + (int64_t) i + 1);
            crm__v1__get_events_response__free_unpacked (response, NULL);
            s_backoff (self);
            return;
        }
    }
    if (response->n_events == 0) {
        crm__v1__get_events_response__free_unpacked (response, NULL);
        if (self->wake_pending) {
            //  The wake-up may be for an event sequenced after this answer was read
            self->wake_pending = false;
            s_fetch (self);
        }
        else
            s_idle (self);
        return;
    }
    s_apply (self, response);
    crm__v1__get_events_response__free_unpacked (response, NULL);
}

//  Replies from the broker: [""][MDPC01][service][Status][payload].
static void
s_on_dealer (void *socket, void *arg)
{
    crm_consumer_t *self = arg;
    for (int i = 0; i < READ_BURST; i++) {
        zmsg_t *msg = zmsg_recv_nowait (socket);
        if (!msg)
            return;
        zframe_t *empty = zmsg_pop (msg);
        zframe_t *header = zmsg_pop (msg);
        zframe_t *service = zmsg_pop (msg);
        bool valid = empty && zframe_size (empty) == 0 && header &&
                     zframe_streq (header, CRM_MDPC) && service &&
                     zframe_streq (service, self->source);
        zframe_destroy (&empty);
        zframe_destroy (&header);
        zframe_destroy (&service);
        Crm__V1__Status *status = NULL;
        zframe_t *payload = NULL;
        if (!valid || crm_proto_reply_parse (msg, &status, &payload) != 0) {
            crm_warn ("dropped a malformed reply from \"%s\"", self->broker);
            zmsg_destroy (&msg);
            continue;
        }
        bool ours = self->state == STATE_FETCH && status->request_id &&
                    strcmp (status->request_id, self->request_id) == 0;
        if (ours)
            s_on_answer (self, status, payload);
        else
            crm_debug ("consumer of %s dropped a stale reply", self->source);
        crm__v1__status__free_unpacked (status, NULL);
        zmsg_destroy (&msg);
        if (ours)
            return; //  s_on_answer may have replaced the socket
    }
}

//  Live events of the source: only a wake-up; their content is not used.
static void
s_on_sub (void *socket, void *arg)
{
    crm_consumer_t *self = arg;
    bool any = false;
    for (int i = 0; i < READ_BURST; i++) {
        zmsg_t *msg = zmsg_recv_nowait (socket);
        if (!msg)
            break;
        zmsg_destroy (&msg);
        self->stats.wakeups++;
        any = true;
    }
    if (any)
        s_wake (self);
}

//  --------------------------------------------------------------------------
//  Construction

crm_consumer_t *
crm_consumer_new (struct ev_loop *loop, crm_pg_t *pg, const char *broker_endpoint,
                  const char *events_out_endpoint, const char *source, const char *apply_statement,
                  int batch)
{
    assert (loop);
    assert (pg);
    assert (broker_endpoint);
    assert (source && *source);
    assert (apply_statement && *apply_statement);
    assert (batch >= 0);
    crm_consumer_t *self = calloc (1, sizeof *self);
    assert (self);
    self->loop = loop;
    self->pg = pg;
    self->broker = strdup (broker_endpoint);
    self->source = strdup (source);
    self->apply_statement = strdup (apply_statement);
    assert (self->broker && self->source && self->apply_statement);
    self->batch = batch > 0 ? batch : CRM_CONSUMER_BATCH_DEFAULT;
    self->timeout_ms = CRM_CONSUMER_TIMEOUT_MS_DEFAULT;
    self->backoff_s = BACKOFF_MIN_S;
    int n = snprintf (self->position_statement, sizeof self->position_statement,
                      "crm_consumer_position_%s", source);
    assert (n > 0 && (size_t) n < sizeof self->position_statement);

    if (s_dealer_connect (self) != 0) {
        s_free (self);
        return NULL;
    }
    if (events_out_endpoint && *events_out_endpoint) {
        self->sub = crm_broker_socket (ZMQ_SUB);
        if (!self->sub) {
            crm_consumer_destroy (&self);
            return NULL;
        }
        zsock_set_rcvhwm (self->sub, WAKE_HWM);
        zsock_set_linger (self->sub, 0);
        char prefix[TYPE_NAME_MAX];
        snprintf (prefix, sizeof prefix, "%s.", source);
        zsock_set_subscribe (self->sub, prefix);
        if (zsock_connect (self->sub, "%s", events_out_endpoint) != 0) {
            crm_error ("could not connect the wake-ups of %s to \"%s\": %s", source,
                       events_out_endpoint, zmq_strerror (errno));
            crm_consumer_destroy (&self);
            return NULL;
        }
        self->sub_watch = crm_zwatch_new (loop, zsock_resolve (self->sub), s_on_sub, self);
        assert (self->sub_watch);
    }
    //  One consumer per source per pg: crm_pg refuses a second registration of
    //  the name with an error line, and the first one still serves
    crm_pg_prepare (pg, self->position_statement,
                    "SELECT coalesce ((SELECT position FROM crm_consumer_position "
                    "WHERE source = $1), 0)",
                    1);

    self->poll_s = CRM_CONSUMER_POLL_MS_DEFAULT / 1000.0;
    ev_timer_init (&self->poll, s_on_poll, self->poll_s, 0);
    self->poll.data = self;
    ev_timer_init (&self->timeout, s_on_timeout, 0, 0);
    self->timeout.data = self;
    ev_timer_init (&self->backoff, s_on_backoff, 0, 0);
    self->backoff.data = self;
    //  The connection may not be up yet: the first reading waits for it
    self->state = STATE_BACKOFF;
    ev_timer_set (&self->backoff, 0, 0);
    ev_timer_start (loop, &self->backoff);
    return self;
}

void
crm_consumer_destroy (crm_consumer_t **self_p)
{
    assert (self_p);
    crm_consumer_t *self = *self_p;
    if (!self)
        return;
    *self_p = NULL;
    ev_timer_stop (self->loop, &self->poll);
    ev_timer_stop (self->loop, &self->timeout);
    ev_timer_stop (self->loop, &self->backoff);
    crm_zwatch_destroy (&self->dealer_watch);
    crm_zwatch_destroy (&self->sub_watch);
    zsock_destroy (&self->dealer);
    zsock_destroy (&self->sub);
    self->doomed = true;
    if (self->outstanding == 0)
        s_free (self);
}

void
crm_consumer_set_interval (crm_consumer_t *self, int interval_ms)
{
    assert (self);
    assert (interval_ms >= 1);
    self->poll_s = interval_ms / 1000.0;
    if (ev_is_active (&self->poll)) {
        ev_timer_stop (self->loop, &self->poll);
        ev_timer_set (&self->poll, self->poll_s, 0);
        ev_timer_start (self->loop, &self->poll);
    }
}

void
crm_consumer_set_timeout (crm_consumer_t *self, int timeout_ms)
{
    assert (self);
    assert (timeout_ms >= 1);
    self->timeout_ms = timeout_ms;
}

int64_t
crm_consumer_position (crm_consumer_t *self)
{
    assert (self);
    return self->position;
}

void
crm_consumer_stats (crm_consumer_t *self, crm_consumer_stats_t *stats)
{
    assert (self);
    assert (stats);
    *stats = self->stats;
    stats->position = self->position;
    stats->last_position = self->source_last;
}
