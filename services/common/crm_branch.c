/*  crm_branch.c - the branch publisher: a window of requests on a DEALER, resent with the same id until answered.
 *
 *  Each request in flight is on one of two lists, both kept in order of due
 *  time: sent (awaiting an answer until its deadline) and waiting (to be
 *  resent after a backoff). The timeout is the same for every attempt, so a
 *  new deadline nearly always goes at the tail and the lists cost O(1) per
 *  send; the earliest due time is always a list head.
 *
 *  The socket is never replaced: an answer to an earlier attempt of the same
 *  request id is as good as the answer to the latest one, since the service
 *  answers every attempt of an id the same way once it has stored it. So a
 *  late OK settles the request whichever attempt it answers, and answers to
 *  ids no longer in flight are dropped.
 */
#include "crm_branch.h"

#include "crm_log.h"
#include "crm_mdp.h"
#include "crm_proto.h"
#include "crm_util.h"

#include <assert.h>
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zmq.h>

#define BRANCH_BURST    1024 //  Answers read before timers are looked at again
#define BRANCH_ENVELOPE 4096 //  Room kept for method, RequestMeta and MDP frames

typedef struct _s_request_t s_request_t;

typedef struct {
    s_request_t *head; //  Earliest due
    s_request_t *tail; //  Latest due
} s_list_t;

struct _s_request_t {
    char *service;        //  MDP service name
    char *method;         //  Method name, the body's first frame
    char *request_id;     //  Idempotency key, the same on every attempt
    char *branch;         //  RequestMeta.branch, or NULL
    zframe_t *payload;    //  The packed request message
    void *tag;            //  The caller's, handed back with the outcome
    int attempts;         //  Times sent
    int64_t published_us; //  When crm_branch_publish took it
    int64_t due_ms;       //  On sent: answer deadline; on waiting: resend time
    s_list_t *list;       //  The list it is on
    s_request_t *prev;    //  Neighbours on that list
    s_request_t *next;
};

struct _crm_branch_t {
    zsock_t *socket;                //  DEALER to the broker
    char *broker;                   //  Its endpoint, for log lines
    char *caller;                   //  RequestMeta.caller
    crm_branch_fn *fn;              //  Outcome handler, or NULL
    void *arg;                      //  Its argument
    int window;                     //  Most requests in flight
    int timeout_ms;                 //  Wait for one attempt's answer
    int retries;                    //  Resends allowed per request
    int backoff_ms;                 //  First wait before a resend
    int backoff_max_ms;             //  Longest wait before a resend
    zhashx_t *requests;             //  Request id -> s_request_t, every one in flight
    s_list_t sent;                  //  Awaiting an answer
    s_list_t waiting;               //  Waiting to be resent
    crm_branch_counters_t counters; //  Running totals
    uint64_t random;                //  xorshift64 state, for backoff jitter
};

//  --------------------------------------------------------------------------
//  Helpers

static int64_t
s_mono_us (void)
{
    struct timespec ts;
    clock_gettime (CLOCK_MONOTONIC, &ts);
    return (int64_t) ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void
s_list_remove (s_request_t *req)
{
    s_list_t *list = req->list;
    if (!list)
        return;
    if (req->prev)
        req->prev->next = req->next;
    else
        list->head = req->next;
    if (req->next)
        req->next->prev = req->prev;
    else
        list->tail = req->prev;
    req->prev = req->next = NULL;
    req->list = NULL;
}

//  Inserts by due time, searching from the tail where new times belong
static void
s_list_insert (s_list_t *list, s_request_t *req)
{
    assert (!req->list);
    s_request_t *after = list->tail;
    while (after && after->due_ms > req->due_ms)
        after = after->prev;
    req->prev = after;
    req->next = after ? after->next : list->head;
    if (req->next)
        req->next->prev = req;
    else
        list->tail = req;
    if (after)
        after->next = req;
    else
        list->head = req;
    req->list = list;
}

static void
s_request_destroy (s_request_t **req_p)
{
    s_request_t *req = *req_p;
    if (!req)
        return;
    free (req->service);
    free (req->method);
    free (req->request_id);
    free (req->branch);
    zframe_destroy (&req->payload);
    free (req);
    *req_p = NULL;
}

static bool
s_retryable (int code)
{
    return code == CRM__V1__STATUS_CODE__STATUS_UNAVAILABLE ||
           code == CRM__V1__STATUS_CODE__STATUS_RESOURCE_EXHAUSTED ||
           code == CRM__V1__STATUS_CODE__STATUS_DEADLINE_EXCEEDED ||
           code == CRM__V1__STATUS_CODE__STATUS_ABORTED;
}

static uint64_t
s_random (crm_branch_t *self)
{
    uint64_t x = self->random;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    self->random = x;
    return x;
}

//  Wait before resend number attempts: doubling from backoff_ms, capped,
//  drawn in [half, all] so that publishers cut off together do not come
//  back together
static int64_t
s_backoff (crm_branch_t *self, int attempts)
{
    int64_t delay = self->backoff_ms;
    for (int i = 1; i < attempts && delay < self->backoff_max_ms; i++)
        delay *= 2;
    if (delay > self->backoff_max_ms)
        delay = self->backoff_max_ms;
    int64_t half = delay / 2;
    return half + (int64_t) (s_random (self) % (uint64_t) (delay - half + 1));
}

//  --------------------------------------------------------------------------
//  The life of a request

//  Reports the outcome and forgets the request
static void
s_settle (crm_branch_t *self, s_request_t *req, crm_branch_outcome_t outcome, int code,
          const char *message, zframe_t *response, bool replayed)
{
    s_list_remove (req);
    zhashx_delete (self->requests, req->request_id);
    if (outcome == CRM_BRANCH_ACKNOWLEDGED)
        self->counters.acknowledged++;
    else if (outcome == CRM_BRANCH_DUPLICATE)
        self->counters.duplicates++;
    else {
        self->counters.failed++;
        crm_log_write (CRM_LOG_DEBUG, req->request_id, req->branch,
                       "%s %s failed after %d attempts: %s: %s", req->service, req->method,
                       req->attempts, crm_status_name (code), message);
    }
    if (self->fn) {
        crm_branch_result_t result = {
            .outcome = outcome,
            .service = req->service,
            .method = req->method,
            .request_id = req->request_id,
            .code = code,
            .message = message ? message : "",
            .response = response,
            .replayed = replayed,
            .attempts = req->attempts,
            .latency_us = s_mono_us () - req->published_us,
            .tag = req->tag,
        };
        self->fn (&result, self->arg);
    }
    s_request_destroy (&req);
}

//  Sends one attempt. A send the socket refuses is an attempt whose answer
//  never comes: its timeout resends it.
static void
s_send (crm_branch_t *self, s_request_t *req)
{
    Crm__V1__RequestMeta meta = CRM__V1__REQUEST_META__INIT;
    meta.request_id = req->request_id;
    meta.branch = req->branch;
    meta.caller = self->caller;
    meta.deadline_unix_ms = crm_now_ms () + self->timeout_ms;
    zmsg_t *msg = zmsg_new ();
    zmsg_addmem (msg, "", 0);
    zmsg_addstr (msg, CRM_MDPC);
    zmsg_addstr (msg, req->service);
    zmsg_addstr (msg, req->method);
    zframe_t *meta_frame = crm_proto_pack (&meta.base);
    zmsg_append (msg, &meta_frame);
    zframe_t *payload = zframe_dup (req->payload);
    zmsg_append (msg, &payload);
    if (zmsg_send (&msg, self->socket) != 0) {
        crm_log_write (CRM_LOG_DEBUG, req->request_id, req->branch,
                       "could not send a request for %s to \"%s\": %s", req->service, self->broker,
                       zmq_strerror (errno));
        zmsg_destroy (&msg);
    }
    req->attempts++;
    self->counters.sent++;
    if (req->attempts > 1)
        self->counters.resent++;
    req->due_ms = crm_mono_ms () + self->timeout_ms;
    s_list_insert (&self->sent, req);
}

//  After a timeout or a retryable answer: wait and resend, or fail when the
//  retries are spent
static void
s_retry (crm_branch_t *self, s_request_t *req, int code, const char *message)
{
    if (req->attempts > self->retries) {
        s_settle (self, req, CRM_BRANCH_FAILED, code, message, NULL, false);
        return;
    }
    s_list_remove (req);
    req->due_ms = crm_mono_ms () + s_backoff (self, req->attempts);
    s_list_insert (&self->waiting, req);
}

//  Times out attempts past their deadline and resends what is due
static void
s_fire_due (crm_branch_t *self)
{
    int64_t now = crm_mono_ms ();
    while (self->sent.head && self->sent.head->due_ms <= now) {
        self->counters.timeouts++;
        char message[64];
        snprintf (message, sizeof message, "no answer within %d ms", self->timeout_ms);
        s_retry (self, self->sent.head, CRM__V1__STATUS_CODE__STATUS_DEADLINE_EXCEEDED, message);
    }
    while (self->waiting.head && self->waiting.head->due_ms <= now) {
        s_request_t *req = self->waiting.head;
        s_list_remove (req);
        s_send (self, req);
    }
}

//  One message from the broker: [""][MDPC01][service][Status][payload]
static void
s_on_answer (crm_branch_t *self, zmsg_t *msg)
{
    zframe_t *empty = zmsg_pop (msg);
    zframe_t *header = zmsg_pop (msg);
    char *service = zmsg_popstr (msg);
    Crm__V1__Status *status = NULL;
    zframe_t *payload = NULL;
    bool valid = empty && zframe_size (empty) == 0 && header && zframe_streq (header, CRM_MDPC) &&
                 service && crm_proto_reply_parse (msg, &status, &payload) == 0;
    zframe_destroy (&empty);
    zframe_destroy (&header);
    if (!valid) {
        crm_warn ("dropped a malformed answer from \"%s\"", self->broker);
        goto done;
    }
    s_request_t *req = zhashx_lookup (self->requests, status->request_id);
    if (!req || strcmp (req->service, service) != 0) {
        //  An answer to an attempt of a request already settled
        crm_log_write (CRM_LOG_DEBUG, status->request_id, NULL,
                       "dropped an answer from %s to a request no longer in flight", service);
        goto done;
    }
    int code = status->code;
    if (code == CRM__V1__STATUS_CODE__STATUS_OK)
        s_settle (self, req, status->replayed ? CRM_BRANCH_DUPLICATE : CRM_BRANCH_ACKNOWLEDGED,
                  code, status->message, payload, status->replayed);
    else if (!s_retryable (code))
        s_settle (self, req, CRM_BRANCH_FAILED, code, status->message, payload, status->replayed);
    else if (req->list == &self->sent)
        //  Possibly the answer to an earlier attempt than the one in flight;
        //  resending early costs one duplicate request, never a wrong outcome
        s_retry (self, req, code, status->message);
    //  else it is already waiting to be resent: nothing new

done:
    if (status)
        crm__v1__status__free_unpacked (status, NULL);
    zstr_free (&service);
}

//  Works until until_ms (mono; -1: until an outcome, or at once when
//  nothing is in flight), until nothing is left in flight (with no limit),
//  or, with stop_on_outcome, until an outcome was reported. Always looks at
//  the socket at least once. Returns the outcomes reported.
static int
s_work (crm_branch_t *self, int64_t until_ms, bool stop_on_outcome)
{
    uint64_t before =
        self->counters.acknowledged + self->counters.duplicates + self->counters.failed;
    uint64_t settled = before;
    void *socket = zsock_resolve (self->socket);
    for (bool first = true;; first = false) {
        s_fire_due (self);
        settled = self->counters.acknowledged + self->counters.duplicates + self->counters.failed;
        if (stop_on_outcome && settled > before)
            break;
        if (until_ms < 0 && zhashx_size (self->requests) == 0)
            break;
        int64_t now = crm_mono_ms ();
        if (!first && until_ms >= 0 && now >= until_ms)
            break;
        //  Sleep until the first due time or the limit, whichever comes first
        int64_t wake = until_ms;
        if (self->sent.head && (wake < 0 || self->sent.head->due_ms < wake))
            wake = self->sent.head->due_ms;
        if (self->waiting.head && (wake < 0 || self->waiting.head->due_ms < wake))
            wake = self->waiting.head->due_ms;
        long timeout = wake < 0 ? -1 : (long) (wake > now ? wake - now : 0);
        zmq_pollitem_t item = {socket, 0, ZMQ_POLLIN, 0};
        if (zmq_poll (&item, 1, timeout) < 0 && errno != EINTR)
            break; //  The context is gone
        for (int i = 0; i < BRANCH_BURST && (zsock_events (self->socket) & ZMQ_POLLIN); i++) {
            zmsg_t *msg = zmsg_recv (self->socket);
            if (!msg)
                break;
            s_on_answer (self, msg);
            zmsg_destroy (&msg);
        }
    }
    return (int) (settled - before);
}

//  --------------------------------------------------------------------------
//  Public API

crm_branch_t *
crm_branch_new (const char *broker)
{
    assert (broker);
    crm_branch_t *self = calloc (1, sizeof *self);
    if (!self)
        return NULL;
    self->broker = strdup (broker);
    self->caller = strdup ("crm_branch");
    self->window = CRM_BRANCH_WINDOW_DEFAULT;
    self->timeout_ms = CRM_BRANCH_TIMEOUT_MS_DEFAULT;
    self->retries = CRM_BRANCH_RETRIES_DEFAULT;
    self->backoff_ms = CRM_BRANCH_BACKOFF_MS_DEFAULT;
    self->backoff_max_ms = CRM_BRANCH_BACKOFF_MAX_MS;
    self->requests = zhashx_new ();
    if (crm_random_bytes (&self->random, sizeof self->random) != 0 || !self->random)
        self->random = (uint64_t) s_mono_us () | 1;
    self->socket = crm_broker_socket (ZMQ_DEALER);
    if (!self->broker || !self->caller || !self->requests || !self->socket) {
        crm_branch_destroy (&self);
        return NULL;
    }
    //  The window bounds what can queue; a high-water mark would only turn a
    //  full pipe into lost attempts. Never block: a send that cannot go is
    //  resent by its timeout.
    zsock_set_sndhwm (self->socket, 0);
    zsock_set_rcvhwm (self->socket, 0);
    zsock_set_sndtimeo (self->socket, 0);
    zsock_set_linger (self->socket, 0);
    if (zsock_connect (self->socket, "%s", broker) != 0) {
        crm_error ("could not connect to \"%s\": %s", broker, zmq_strerror (errno));
        crm_branch_destroy (&self);
        return NULL;
    }
    return self;
}

void
crm_branch_destroy (crm_branch_t **self_p)
{
    assert (self_p);
    crm_branch_t *self = *self_p;
    if (!self)
        return;
    if (self->requests) {
        for (s_request_t *req = zhashx_first (self->requests); req;
             req = zhashx_next (self->requests))
            s_request_destroy (&req);
        zhashx_destroy (&self->requests);
    }
    zsock_destroy (&self->socket);
    free (self->broker);
    free (self->caller);
    free (self);
    *self_p = NULL;
}

void
crm_branch_set_handler (crm_branch_t *self, crm_branch_fn *fn, void *arg)
{
    assert (self);
    self->fn = fn;
    self->arg = arg;
}

void
crm_branch_set_window (crm_branch_t *self, int window)
{
    assert (self && window >= 1);
    self->window = window;
}

void
crm_branch_set_timeout (crm_branch_t *self, int timeout_ms)
{
    assert (self && timeout_ms >= 1);
    self->timeout_ms = timeout_ms;
}

void
crm_branch_set_retries (crm_branch_t *self, int retries)
{
    assert (self && retries >= 0);
    self->retries = retries;
}

void
crm_branch_set_backoff (crm_branch_t *self, int initial_ms, int max_ms)
{
    assert (self && initial_ms >= 0 && max_ms >= initial_ms);
    self->backoff_ms = initial_ms;
    self->backoff_max_ms = max_ms;
}

void
crm_branch_set_caller (crm_branch_t *self, const char *caller)
{
    assert (self && caller);
    char *copy = strdup (caller);
    if (!copy)
        return;
    free (self->caller);
    self->caller = copy;
}

int
crm_branch_publish (crm_branch_t *self, const char *service, const char *method,
                    const char *request_id, const char *branch, const ProtobufCMessage *payload,
                    void *tag)
{
    assert (self && service && method && request_id && payload);
    size_t id_len = strlen (request_id);
    if (id_len == 0 || id_len > CRM_BRANCH_REQUEST_ID_MAX) {
        errno = EINVAL;
        return -1;
    }
    size_t size = protobuf_c_message_get_packed_size (payload);
    if (size + strlen (method) + id_len + (branch ? strlen (branch) : 0) + BRANCH_ENVELOPE >
        CRM_MAX_MESSAGE_BYTES) {
        errno = EMSGSIZE;
        return -1;
    }
    //  One attempt of an id at a time: the second publication of an event is
    //  sent once the first is settled, and is then answered as a duplicate
    while (zhashx_size (self->requests) >= (size_t) self->window ||
           zhashx_lookup (self->requests, request_id))
        s_work (self, -1, true);

    s_request_t *req = calloc (1, sizeof *req);
    if (!req)
        return -1;
    req->service = strdup (service);
    req->method = strdup (method);
    req->request_id = strdup (request_id);
    req->branch = branch ? strdup (branch) : NULL;
    req->payload = crm_proto_pack (payload);
    req->tag = tag;
    req->published_us = s_mono_us ();
    if (!req->service || !req->method || !req->request_id || (branch && !req->branch) ||
        !req->payload) {
        s_request_destroy (&req);
        errno = ENOMEM;
        return -1;
    }
    zhashx_insert (self->requests, req->request_id, req);
    self->counters.published++;
    s_send (self, req);
    return 0;
}

int
crm_branch_poll (crm_branch_t *self, int timeout_ms)
{
    assert (self);
    int64_t until = timeout_ms < 0 ? -1 : crm_mono_ms () + timeout_ms;
    return s_work (self, until, true);
}

int
crm_branch_flush (crm_branch_t *self, int timeout_ms)
{
    assert (self);
    int64_t until = timeout_ms < 0 ? -1 : crm_mono_ms () + timeout_ms;
    while (zhashx_size (self->requests) > 0) {
        if (until >= 0 && crm_mono_ms () >= until)
            return -1;
        s_work (self, until, true);
    }
    return 0;
}

size_t
crm_branch_in_flight (crm_branch_t *self)
{
    assert (self);
    return zhashx_size (self->requests);
}

void
crm_branch_counters (crm_branch_t *self, crm_branch_counters_t *counters)
{
    assert (self && counters);
    *counters = self->counters;
    counters->in_flight = zhashx_size (self->requests);
}

const char *
crm_branch_outcome_name (crm_branch_outcome_t outcome)
{
    switch (outcome) {
        case CRM_BRANCH_ACKNOWLEDGED:
            return "acknowledged";
        case CRM_BRANCH_DUPLICATE:
            return "duplicate";
        case CRM_BRANCH_FAILED:
            return "failed";
    }
    return "failed";
}
