/*  broker.c - the 7/MDP broker: one ROUTER for clients and workers, capacity-aware dispatch, event fan-out.
 *
 *  Messages are handled as raw zmq_msg_t frames: a request's body frames move
 *  from the client's message to the worker's (and back) without a copy, and
 *  the hot path allocates nothing. Per-request state lives in a slot taken
 *  from a pool; the worker gets the slot's number and a token as the MDP
 *  "client address", so a reply finds its request in O(1) and a reply to a
 *  request the broker has already answered (the worker was presumed dead) is
 *  recognised and dropped. Workers with free capacity wait in a per-service
 *  ring, least recently used first; dispatching takes the head, so a request
 *  costs O(1) whatever the number of workers.
 *
 *  Requests read in one burst go to the same worker while it has room, and
 *  the next burst starts with the next worker. A service instance then gets
 *  together what arrived together, and sends it to its database together:
 *  one group of reads under one Sync, one write transaction. Handing them out
 *  one by one in turn cut GetContact throughput in half with two instances,
 *  each getting every other request and sending each alone. Requests that
 *  arrive one at a time still go round the workers in turn.
 */
#include "broker.h"
#include "zap.h"

#include "crm_curve.h"
#include "crm_log.h"
#include "crm_mdp.h"
#include "crm_proto.h"
#include "crm_util.h"

#include <assert.h>
#include <czmq.h>
#include <errno.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#define BROKER_FRAMES_MAX     64   //  Frames in one message, envelope included
#define BROKER_NAME_MAX       255  //  Longest service name
#define BROKER_RID_MAX        128  //  Longest request id echoed in broker error replies
#define BROKER_CAPACITY_MAX   1000 //  Stays below the socket's high-water mark
#define BROKER_BURST          512  //  Messages read from one socket before the others
#define BROKER_TICK_MS        50   //  Granularity of the no-worker timeout
#define BROKER_SLOT_CHUNK     1024 //  Slots allocated at once
#define BROKER_MAXMSG_MARGIN  4096 //  Room above CRM_MAX_MESSAGE_BYTES (see s_client_message)
#define BROKER_LINGER_MS      500  //  Time to flush last replies when closing
#define BROKER_WARN_PER_SEC   20   //  Malformed-message warnings logged per second
#define BROKER_REQUEST_POOL   1024 //  Spare queued-request records kept for reuse
#define BROKER_REQUEST_INLINE 4    //  Body frames a queued request holds without malloc
#define SLOT_NONE             UINT32_MAX

typedef struct _s_worker_t s_worker_t;
typedef struct _s_service_t s_service_t;
typedef struct _s_request_t s_request_t;

//  Key of the hash tables: a routing id or a service name, not NUL-terminated
typedef struct {
    size_t size;      //  Bytes at data
    const byte *data; //  The key
} s_key_t;

struct _s_worker_t {
    byte id[256];                      //  ROUTER routing id of the worker's connection
    size_t id_size;                    //  Its length
    char label[24];                    //  Id in hex, for log lines
    s_service_t *service;              //  Service it serves
    int capacity;                      //  Requests it takes at once (1 = plain MDP)
    int in_flight;                     //  Requests sent to it and not yet answered
    bool draining;                     //  Said DISCONNECT, still answering what it holds
    bool ready;                        //  In its service's ring of workers with room
    uint64_t burst;                    //  The read burst that last gave it a request; 0: none
    int64_t expiry;                    //  Dead unless heard from before this (mono ms)
    s_worker_t *ring_prev, *ring_next; //  Ring of workers with room
    s_worker_t *prev, *next;           //  All workers
    uint32_t slots;                    //  Head of its list of requests in flight
    void *socket;                      //  The ROUTER it came in on
};

struct _s_service_t {
    char name[BROKER_NAME_MAX + 1];       //  Service name, NUL-terminated
    size_t name_size;                     //  Its length
    s_worker_t *ring_head, *ring_tail;    //  Workers with room, least recently used first
    int workers;                          //  Workers taking requests (not draining)
    int attached;                         //  Workers pointing here, draining ones included
    s_request_t *queue_head, *queue_tail; //  Requests waiting for a worker, oldest first
    size_t queued;                        //  Their number
    int64_t no_worker_since;              //  When workers last dropped to zero (mono ms)
    s_service_t *prev, *next;             //  All services
};

struct _s_request_t {
    s_request_t *next;                            //  Queue or free-pool link
    int64_t queued_at;                            //  When it was queued (mono ms)
    zmq_msg_t client;                             //  Client routing id
    int nbody;                                    //  Body frames
    zmq_msg_t *body;                              //  Points at inline_body or a heap array
    zmq_msg_t inline_body[BROKER_REQUEST_INLINE]; //  Room for a usual body
};

typedef struct {
    s_worker_t *worker;       //  Worker holding the request; NULL when free
    uint32_t token;           //  Second half of the address the worker echoes
    uint32_t prev, next;      //  Worker's in-flight list, or the free list (next)
    zmq_msg_t client;         //  Client routing id, to send the reply to
    uint8_t rid_size;         //  Request id length, 0 if none was found
    char rid[BROKER_RID_MAX]; //  Request id, for an UNAVAILABLE if the worker dies
} s_slot_t;

struct _broker_t {
    broker_config_t config; //  Settings (strings owned below)
    char *config_endpoint;  //  Owned copies of the configured endpoints
    char *config_events_in;
    char *config_events_out;
    char *config_worker_endpoint;
    broker_zap_t *zap;  //  Admits CURVE clients; NULL when CURVE is off
    char endpoint[256]; //  Endpoints as bound
    char worker_endpoint[256];
    char events_in[256];
    char events_out[256];
    void *ctx;                          //  Own libzmq context
    void *router;                       //  Clients, and workers unless they have their own
    void *wrouter;                      //  Workers only; NULL when they use router
    void *from;                         //  The ROUTER of the message being handled
    void *xsub;                         //  Event publishers; NULL when off
    void *xpub;                         //  Event subscribers; NULL when off
    zhashx_t *workers;                  //  s_worker_t by routing id
    zhashx_t *services;                 //  s_service_t by name
    s_worker_t *worker_list;            //  All workers
    s_service_t *service_list;          //  All services
    s_slot_t **chunks;                  //  Slot pool, in chunks that never move
    uint32_t nchunks;                   //  Chunks allocated
    uint32_t free_slot;                 //  Head of the free slot list
    uint32_t next_token;                //  Tokens for slot addresses
    s_request_t *spare_requests;        //  Pool of queued-request records
    size_t nspare;                      //  Its size
    zmq_msg_t parts[BROKER_FRAMES_MAX]; //  The message being handled
    int nparts;                         //  Its frames (may be fewer than received)
    bool truncated;                     //  It had more than BROKER_FRAMES_MAX frames
    int64_t now;                        //  Monotonic ms, refreshed once per pass
    uint64_t burst;                     //  Number of the current read burst of the ROUTER
    int64_t heartbeat_at;               //  Next heartbeat to workers
    int64_t tick_at;                    //  Next no-worker timeout check
    size_t queued;                      //  Requests waiting in all queues
    atomic_int stopping;                //  Set by broker_stop
    bool shut;                          //  Hand-back done
    uint64_t requests;                  //  Requests received from clients
    uint64_t replies;                   //  Replies routed from workers
    uint64_t refused;                   //  Malformed messages dropped
    uint64_t unavailable;               //  Requests answered UNAVAILABLE by the broker
    int64_t warn_window;                //  Start of the current rate-limit second
    int warn_count;                     //  Warnings logged in it
    int warn_suppressed;                //  Warnings not logged in it
};

//  --------------------------------------------------------------------------
//  Keys

static size_t
s_key_hash (const void *key)
{
    const s_key_t *k = key;
    //  FNV-1a: the keys are short and not chosen to collide by honest peers;
    //  a chained table degrades gracefully if they are
    uint64_t hash = 14695981039346656037ULL;
    for (size_t i = 0; i < k->size; i++) {
        hash ^= k->data[i];
        hash *= 1099511628211ULL;
    }
    return (size_t) hash;
}

static int
s_key_compare (const void *a, const void *b)
{
    const s_key_t *ka = a, *kb = b;
    if (ka->size != kb->size)
        return ka->size < kb->size ? -1 : 1;
    return memcmp (ka->data, kb->data, ka->size);
}

static void *
s_key_dup (const void *key)
{
    const s_key_t *k = key;
    s_key_t *copy = malloc (sizeof *copy + k->size + 1);
    if (!copy)
        return NULL;
    byte *data = (byte *) (copy + 1);
    memcpy (data, k->data, k->size);
    copy->size = k->size;
    copy->data = data;
    return copy;
}

static void
s_key_free (void **key_p)
{
    free (*key_p);
    *key_p = NULL;
}

static zhashx_t *
s_table_new (void)
{
    zhashx_t *table = zhashx_new ();
    if (!table)
        return NULL;
    zhashx_set_key_hasher (table, s_key_hash);
    zhashx_set_key_comparator (table, s_key_compare);
    zhashx_set_key_duplicator (table, s_key_dup);
    zhashx_set_key_destructor (table, s_key_free);
    return table;
}

//  --------------------------------------------------------------------------
//  Small helpers

//  Logs a warning about a peer's message, at most BROKER_WARN_PER_SEC a
//  second, so a peer sending garbage or a flood cannot flood the logs
static void
s_warn (broker_t *self, const char *fmt, va_list args)
{
    if (self->now - self->warn_window >= 1000) {
        if (self->warn_suppressed)
            crm_warn ("%d more warnings about messages suppressed", self->warn_suppressed);
        self->warn_window = self->now;
        self->warn_count = 0;
        self->warn_suppressed = 0;
    }
    if (self->warn_count >= BROKER_WARN_PER_SEC) {
        self->warn_suppressed++;
        return;
    }
    self->warn_count++;
    crm_log_vwrite (CRM_LOG_WARN, NULL, NULL, fmt, args);
}

static void s_warn_limited (broker_t *self, const char *fmt, ...)
    __attribute__ ((format (printf, 2, 3)));

static void
s_warn_limited (broker_t *self, const char *fmt, ...)
{
    va_list args;
    va_start (args, fmt);
    s_warn (self, fmt, args);
    va_end (args);
}

//  Counts and logs a malformed message being dropped
static void s_refuse (broker_t *self, const char *fmt, ...) __attribute__ ((format (printf, 2, 3)));

static void
s_refuse (broker_t *self, const char *fmt, ...)
{
    self->refused++;
    va_list args;
    va_start (args, fmt);
    s_warn (self, fmt, args);
    va_end (args);
}

static void
s_label (const byte *id, size_t size, char *out, size_t out_size)
{
    size_t n = size;
    if (n * 2 + 1 > out_size)
        n = (out_size - 1) / 2;
    crm_hex (id, n, out);
}

static bool
s_frame_is (zmq_msg_t *msg, const char *text, size_t size)
{
    return zmq_msg_size (msg) == size && memcmp (zmq_msg_data (msg), text, size) == 0;
}

//  Reads a protobuf varint; 0 / -1 when it runs past the end
static int
s_varint (const byte *data, size_t size, size_t *pos, uint64_t *value)
{
    uint64_t result = 0;
    for (int shift = 0; shift < 64 && *pos < size; shift += 7) {
        byte b = data[(*pos)++];
        result |= (uint64_t) (b & 0x7F) << shift;
        if (!(b & 0x80)) {
            *value = result;
            return 0;
        }
    }
    return -1;
}

//  Finds field 1 (request_id) of a RequestMeta frame without unpacking it,
//  so a request costs no allocation; copies it to out when it is valid UTF-8
//  and fits. Returns its length, 0 when there is none.
static size_t
s_request_id (const byte *data, size_t size, char *out, size_t out_size)
{
    size_t pos = 0;
    while (pos < size) {
        uint64_t key, value;
        if (s_varint (data, size, &pos, &key) != 0)
            return 0;
        switch (key & 7) {
            case 0:
                if (s_varint (data, size, &pos, &value) != 0)
                    return 0;
                break;
            case 1:
                pos += 8;
                break;
            case 5:
                pos += 4;
                break;
            case 2:
                if (s_varint (data, size, &pos, &value) != 0 || value > size - pos)
                    return 0;
                if (key >> 3 == 1) {
                    if (value == 0 || value > out_size ||
                        !crm_utf8_valid ((const char *) data + pos, (size_t) value))
                        return 0;
                    memcpy (out, data + pos, (size_t) value);
                    return (size_t) value;
                }
                pos += (size_t) value;
                break;
            default:
                return 0;
        }
    }
    return 0;
}

static void
s_msg_set (zmq_msg_t *msg, const void *data, size_t size)
{
    //  Frames this small live inside zmq_msg_t: no allocation
    int rc = zmq_msg_init_size (msg, size);
    assert (rc == 0);
    if (size)
        memcpy (zmq_msg_data (msg), data, size);
}

static void
s_msgs_close (zmq_msg_t *msgs, int n)
{
    for (int i = 0; i < n; i++) {
        zmq_msg_close (&msgs[i]);
        zmq_msg_init (&msgs[i]);
    }
}

//  Sends head frames (built here) then body frames (moved) as one message
//  through the ROUTER. Every frame is consumed whatever happens. Returns 0,
//  or -1 with errno when the peer is gone (EHOSTUNREACH) or full (EAGAIN);
//  nothing is sent then.
static int
s_send (void *socket, zmq_msg_t *head, int nhead, zmq_msg_t *body, int nbody)
{
    int total = nhead + nbody;
    int rc = 0;
    for (int i = 0; i < total; i++) {
        zmq_msg_t *msg = i < nhead ? &head[i] : &body[i - nhead];
        int flags = ZMQ_DONTWAIT | (i + 1 < total ? ZMQ_SNDMORE : 0);
        if (zmq_msg_send (msg, socket, flags) < 0) {
            //  With ROUTER_MANDATORY only the routing-id frame can fail; a
            //  later frame would be taken as a new routing id, so stop
            int err = errno;
            assert (i == 0 || err == ETERM);
            for (int j = i; j < total; j++)
                zmq_msg_close (j < nhead ? &head[j] : &body[j - nhead]);
            errno = err;
            rc = -1;
            break;
        }
    }
    //  Leave every frame initialised and empty for reuse
    for (int i = 0; i < nhead; i++)
        zmq_msg_init (&head[i]);
    for (int i = 0; i < nbody; i++)
        zmq_msg_init (&body[i]);
    return rc;
}

//  --------------------------------------------------------------------------
//  Replies to clients

//  Sends [client]["" ][MDPC01][service][body...]; the client frame and body
//  frames are consumed
static void
s_client_send (broker_t *self, zmq_msg_t *client, const char *service, size_t service_size,
               zmq_msg_t *body, int nbody)
{
    zmq_msg_t head[4];
    int rc = zmq_msg_init (&head[0]);
    assert (rc == 0);
    zmq_msg_move (&head[0], client);
    s_msg_set (&head[1], "", 0);
    s_msg_set (&head[2], CRM_MDPC, 6);
    s_msg_set (&head[3], service, service_size);
    if (s_send (self->router, head, 4, body, nbody) != 0 && crm_log_enabled (CRM_LOG_DEBUG))
        crm_debug ("could not reply to a client of %.*s: %s", (int) service_size, service,
                   zmq_strerror (errno));
}

//  Answers a client with a broker-made error: body [Status][empty]
static void
s_client_error (broker_t *self, zmq_msg_t *client, const char *service, size_t service_size,
                int code, const char *message, const char *rid, size_t rid_size)
{
    char rid_text[BROKER_RID_MAX + 1];
    memcpy (rid_text, rid, rid_size);
    rid_text[rid_size] = '\0';
    zmsg_t *reply = crm_proto_reply_new (code, message, rid_text, NULL);
    zmq_msg_t body[2];
    int nbody = 0;
    for (zframe_t *frame = zmsg_first (reply); frame && nbody < 2; frame = zmsg_next (reply))
        s_msg_set (&body[nbody++], zframe_data (frame), zframe_size (frame));
    zmsg_destroy (&reply);
    if (code == CRM__V1__STATUS_CODE__STATUS_UNAVAILABLE)
        self->unavailable++;
    s_client_send (self, client, service, service_size, body, nbody);
}

//  --------------------------------------------------------------------------
//  Slots: one per request in flight at a worker

static s_slot_t *
s_slot (broker_t *self, uint32_t index)
{
    return &self->chunks[index / BROKER_SLOT_CHUNK][index % BROKER_SLOT_CHUNK];
}

static uint32_t
s_slot_take (broker_t *self, s_worker_t *worker)
{
    if (self->free_slot == SLOT_NONE) {
        s_slot_t **chunks = realloc (self->chunks, (self->nchunks + 1) * sizeof *chunks);
        assert (chunks);
        self->chunks = chunks;
        s_slot_t *chunk = calloc (BROKER_SLOT_CHUNK, sizeof *chunk);
        assert (chunk);
        chunks[self->nchunks] = chunk;
        uint32_t base = self->nchunks * BROKER_SLOT_CHUNK;
        for (uint32_t i = 0; i < BROKER_SLOT_CHUNK; i++) {
            zmq_msg_init (&chunk[i].client);
            chunk[i].next = i + 1 < BROKER_SLOT_CHUNK ? base + i + 1 : SLOT_NONE;
        }
        self->nchunks++;
        self->free_slot = base;
    }
    uint32_t index = self->free_slot;
    s_slot_t *slot = s_slot (self, index);
    self->free_slot = slot->next;
    slot->worker = worker;
    slot->token = ++self->next_token;
    slot->rid_size = 0;
    slot->prev = SLOT_NONE;
    slot->next = worker->slots;
    if (worker->slots != SLOT_NONE)
        s_slot (self, worker->slots)->prev = index;
    worker->slots = index;
    return index;
}

static void
s_slot_give (broker_t *self, uint32_t index)
{
    s_slot_t *slot = s_slot (self, index);
    s_worker_t *worker = slot->worker;
    if (slot->prev != SLOT_NONE)
        s_slot (self, slot->prev)->next = slot->next;
    else
        worker->slots = slot->next;
    if (slot->next != SLOT_NONE)
        s_slot (self, slot->next)->prev = slot->prev;
    zmq_msg_close (&slot->client);
    zmq_msg_init (&slot->client);
    slot->worker = NULL;
    slot->next = self->free_slot;
    self->free_slot = index;
}

//  --------------------------------------------------------------------------
//  Queued requests

static s_request_t *
s_request_new (broker_t *self, zmq_msg_t *client, zmq_msg_t *body, int nbody)
{
    s_request_t *request = self->spare_requests;
    if (request) {
        self->spare_requests = request->next;
        self->nspare--;
    }
    else {
        request = calloc (1, sizeof *request);
        assert (request);
        zmq_msg_init (&request->client);
        for (int i = 0; i < BROKER_REQUEST_INLINE; i++)
            zmq_msg_init (&request->inline_body[i]);
    }
    request->next = NULL;
    request->queued_at = self->now;
    request->nbody = nbody;
    if (nbody <= BROKER_REQUEST_INLINE)
        request->body = request->inline_body;
    else {
        request->body = malloc (nbody * sizeof *request->body);
        assert (request->body);
        for (int i = 0; i < nbody; i++)
            zmq_msg_init (&request->body[i]);
    }
    zmq_msg_move (&request->client, client);
    for (int i = 0; i < nbody; i++)
        zmq_msg_move (&request->body[i], &body[i]);
    return request;
}

static void
s_request_free (broker_t *self, s_request_t *request)
{
    zmq_msg_close (&request->client);
    zmq_msg_init (&request->client);
    for (int i = 0; i < request->nbody; i++)
        zmq_msg_close (&request->body[i]);
    if (request->body != request->inline_body)
        free (request->body);
    else
        for (int i = 0; i < request->nbody; i++)
            zmq_msg_init (&request->body[i]);
    request->body = NULL;
    request->nbody = 0;
    if (self->nspare < BROKER_REQUEST_POOL) {
        request->next = self->spare_requests;
        self->spare_requests = request;
        self->nspare++;
    }
    else
        free (request);
}

static size_t
s_request_rid (zmq_msg_t *body, int nbody, char *out)
{
    if (nbody < 2)
        return 0;
    return s_request_id (zmq_msg_data (&body[1]), zmq_msg_size (&body[1]), out, BROKER_RID_MAX);
}

//  Answers a request the broker holds with an error and frees it
static void
s_request_fail (broker_t *self, s_service_t *service, s_request_t *request, int code,
                const char *message)
{
    char rid[BROKER_RID_MAX];
    size_t rid_size = s_request_rid (request->body, request->nbody, rid);
    s_client_error (self, &request->client, service->name, service->name_size, code, message, rid,
                    rid_size);
    s_request_free (self, request);
}

//  --------------------------------------------------------------------------
//  Services

static s_service_t *
s_service_lookup (broker_t *self, const byte *name, size_t size)
{
    s_key_t key = {size, name};
    return zhashx_lookup (self->services, &key);
}

static s_service_t *
s_service_require (broker_t *self, const byte *name, size_t size)
{
    s_service_t *service = s_service_lookup (self, name, size);
    if (service)
        return service;
    service = calloc (1, sizeof *service);
    assert (service);
    memcpy (service->name, name, size);
    service->name[size] = '\0';
    service->name_size = size;
    service->no_worker_since = self->now;
    s_key_t key = {size, (const byte *) service->name};
    zhashx_insert (self->services, &key, service);
    service->next = self->service_list;
    if (self->service_list)
        self->service_list->prev = service;
    self->service_list = service;
    return service;
}

static void
s_service_destroy (broker_t *self, s_service_t *service)
{
    assert (service->attached == 0 && service->queued == 0);
    s_key_t key = {service->name_size, (const byte *) service->name};
    zhashx_delete (self->services, &key);
    if (service->prev)
        service->prev->next = service->next;
    else
        self->service_list = service->next;
    if (service->next)
        service->next->prev = service->prev;
    free (service);
}

static void
s_ring_append (s_service_t *service, s_worker_t *worker)
{
    assert (!worker->ready);
    worker->ready = true;
    worker->burst = 0; //  Behind the others now, as least recently used goes
    worker->ring_next = NULL;
    worker->ring_prev = service->ring_tail;
    if (service->ring_tail)
        service->ring_tail->ring_next = worker;
    else
        service->ring_head = worker;
    service->ring_tail = worker;
}

static void
s_ring_remove (s_service_t *service, s_worker_t *worker)
{
    if (!worker->ready)
        return;
    if (worker->ring_prev)
        worker->ring_prev->ring_next = worker->ring_next;
    else
        service->ring_head = worker->ring_next;
    if (worker->ring_next)
        worker->ring_next->ring_prev = worker->ring_prev;
    else
        service->ring_tail = worker->ring_prev;
    worker->ring_prev = worker->ring_next = NULL;
    worker->ready = false;
}

//  --------------------------------------------------------------------------
//  Workers

static void
s_worker_command (s_worker_t *worker, byte command)
{
    zmq_msg_t head[4];
    s_msg_set (&head[0], worker->id, worker->id_size);
    s_msg_set (&head[1], "", 0);
    s_msg_set (&head[2], CRM_MDPW, 6);
    s_msg_set (&head[3], &command, 1);
    s_send (worker->socket, head, 4, NULL, 0);
}

static s_worker_t *
s_worker_lookup (broker_t *self, zmq_msg_t *id)
{
    s_key_t key = {zmq_msg_size (id), zmq_msg_data (id)};
    return zhashx_lookup (self->workers, &key);
}

//  Forgets a worker: its requests in flight are answered UNAVAILABLE so their
//  clients can resend, and it is told DISCONNECT when it may still listen
static void
s_worker_delete (broker_t *self, s_worker_t *worker, bool disconnect)
{
    s_service_t *service = worker->service;
    if (disconnect)
        s_worker_command (worker, CRM_MDPW_DISCONNECT);
    while (worker->slots != SLOT_NONE) {
        uint32_t index = worker->slots;
        s_slot_t *slot = s_slot (self, index);
        s_client_error (self, &slot->client, service->name, service->name_size,
                        CRM__V1__STATUS_CODE__STATUS_UNAVAILABLE,
                        "the worker holding the request was lost; resend it", slot->rid,
                        slot->rid_size);
        s_slot_give (self, index);
    }
    s_ring_remove (service, worker);
    if (!worker->draining && --service->workers == 0)
        service->no_worker_since = self->now;
    service->attached--;
    s_key_t key = {worker->id_size, worker->id};
    zhashx_delete (self->workers, &key);
    if (worker->prev)
        worker->prev->next = worker->next;
    else
        self->worker_list = worker->next;
    if (worker->next)
        worker->next->prev = worker->prev;
    free (worker);
}

//  Sends one request to a worker: [worker]["" ][MDPW01][0x02][address][""][body...].
//  The client frame and body frames are consumed on success; on failure (the
//  worker is gone) they are left as they were and -1 is returned.
static int
s_worker_send_request (broker_t *self, s_worker_t *worker, zmq_msg_t *client, zmq_msg_t *body,
                       int nbody, const char *rid, size_t rid_size)
{
    uint32_t index = s_slot_take (self, worker);
    s_slot_t *slot = s_slot (self, index);
    byte address[8];
    for (int i = 0; i < 4; i++) {
        address[i] = (byte) (index >> (24 - 8 * i));
        address[4 + i] = (byte) (slot->token >> (24 - 8 * i));
    }
    zmq_msg_t head[6];
    byte command = CRM_MDPW_REQUEST;
    s_msg_set (&head[0], worker->id, worker->id_size);
    s_msg_set (&head[1], "", 0);
    s_msg_set (&head[2], CRM_MDPW, 6);
    s_msg_set (&head[3], &command, 1);
    s_msg_set (&head[4], address, sizeof address);
    s_msg_set (&head[5], "", 0);
    //  The routing-id frame goes alone first so a failure leaves the body intact
    if (zmq_msg_send (&head[0], worker->socket, ZMQ_DONTWAIT | ZMQ_SNDMORE) < 0) {
        int err = errno;
        s_msgs_close (head, 6);
        s_slot_give (self, index);
        errno = err;
        return -1;
    }
    for (int i = 1; i < 6; i++) {
        int more = i < 5 || nbody > 0 ? ZMQ_SNDMORE : 0;
        int rc = zmq_msg_send (&head[i], worker->socket, ZMQ_DONTWAIT | more);
        assert (rc >= 0 || errno == ETERM);
    }
    for (int i = 0; i < nbody; i++) {
        int more = i + 1 < nbody ? ZMQ_SNDMORE : 0;
        int rc = zmq_msg_send (&body[i], worker->socket, ZMQ_DONTWAIT | more);
        assert (rc >= 0 || errno == ETERM);
    }
    zmq_msg_move (&slot->client, client);
    slot->rid_size = (uint8_t) rid_size;
    memcpy (slot->rid, rid, rid_size);
    worker->in_flight++;
    //  It stays where it is while it has room: the rest of this burst comes here too
    worker->burst = self->burst;
    if (worker->in_flight >= worker->capacity)
        s_ring_remove (worker->service, worker);
    return 0;
}

//  Gives a request to the least recently used worker with room, trying the
//  next one when a worker turns out to be gone. Returns 0, or -1 when no
//  worker could take it (it is left untouched).
static int
s_dispatch (broker_t *self, s_service_t *service, zmq_msg_t *client, zmq_msg_t *body, int nbody)
{
    if (!service->ring_head)
        return -1;
    //  The worker that took an earlier burst and still has room goes behind the others
    s_worker_t *head = service->ring_head;
    if (head->burst && head->burst != self->burst && head->ring_next) {
        s_ring_remove (service, head);
        s_ring_append (service, head);
    }
    char rid[BROKER_RID_MAX];
    size_t rid_size = s_request_rid (body, nbody, rid);
    while (service->ring_head) {
        s_worker_t *worker = service->ring_head;
        if (s_worker_send_request (self, worker, client, body, nbody, rid, rid_size) == 0)
            return 0;
        crm_warn ("worker %s of %s is unreachable (%s), dropping it", worker->label, service->name,
                  zmq_strerror (errno));
        s_worker_delete (self, worker, false);
    }
    return -1;
}

//  Moves queued requests to workers while both exist
static void
s_service_drain_queue (broker_t *self, s_service_t *service)
{
    while (service->queue_head && service->ring_head) {
        s_request_t *request = service->queue_head;
        if (s_dispatch (self, service, &request->client, request->body, request->nbody) != 0)
            break;
        service->queue_head = request->next;
        if (!service->queue_head)
            service->queue_tail = NULL;
        service->queued--;
        self->queued--;
        s_request_free (self, request);
    }
}

//  --------------------------------------------------------------------------
//  Client messages: [client]["" ][MDPC01][service][body...]

static void
s_mmi (broker_t *self, zmq_msg_t *client, zmq_msg_t *service_frame, zmq_msg_t *body, int nbody)
{
    const char *code = "501";
    if (s_frame_is (service_frame, "mmi.service", 11)) {
        s_service_t *service = NULL;
        if (nbody >= 1)
            service = s_service_lookup (self, zmq_msg_data (&body[0]), zmq_msg_size (&body[0]));
        code = service && service->workers > 0 ? "200" : "404";
    }
    zmq_msg_t reply;
    s_msg_set (&reply, code, 3);
    s_client_send (self, client, zmq_msg_data (service_frame), zmq_msg_size (service_frame), &reply,
                   1);
}

static void
s_client_message (broker_t *self)
{
    zmq_msg_t *client = &self->parts[0];
    if (self->nparts < 4) {
        s_refuse (self, "dropped a client request without a service name");
        return;
    }
    zmq_msg_t *service_frame = &self->parts[3];
    zmq_msg_t *body = &self->parts[4];
    int nbody = self->nparts - 4;
    size_t name_size = zmq_msg_size (service_frame);
    const byte *name = zmq_msg_data (service_frame);
    self->requests++;
    if (name_size == 0 || name_size > BROKER_NAME_MAX) {
        s_refuse (self, "refused a client request for a service name of %zu bytes", name_size);
        s_client_error (self, client, (const char *) name, name_size,
                        CRM__V1__STATUS_CODE__STATUS_INVALID_ARGUMENT,
                        "service name must have 1 to 255 bytes", "", 0);
        return;
    }
    if (name_size > 4 && memcmp (name, "mmi.", 4) == 0) {
        s_mmi (self, client, service_frame, body, nbody);
        return;
    }
    //  ZMQ_MAXMSGSIZE limits each frame, with a margin; a frame between the
    //  limit and the margin would cost the worker its connection, so it stops here
    for (int i = 0; i < nbody; i++)
        if (zmq_msg_size (&body[i]) > CRM_MAX_MESSAGE_BYTES) {
            s_refuse (self, "dropped a request for %.*s with a frame of %zu bytes, over %d",
                      (int) name_size, (const char *) name, zmq_msg_size (&body[i]),
                      CRM_MAX_MESSAGE_BYTES);
            return;
        }
    s_service_t *service = s_service_require (self, name, name_size);
    if (!service->queue_head && s_dispatch (self, service, client, body, nbody) == 0)
        return;
    if (service->queued >= (size_t) self->config.queue_max) {
        char rid[BROKER_RID_MAX];
        size_t rid_size = s_request_rid (body, nbody, rid);
        s_warn_limited (self, "queue of %s is full (%zu requests), refusing a request",
                        service->name, service->queued);
        s_client_error (self, client, service->name, service->name_size,
                        CRM__V1__STATUS_CODE__STATUS_RESOURCE_EXHAUSTED,
                        "too many requests waiting for this service", rid, rid_size);
        return;
    }
    s_request_t *request = s_request_new (self, client, body, nbody);
    if (service->queue_tail)
        service->queue_tail->next = request;
    else
        service->queue_head = request;
    service->queue_tail = request;
    service->queued++;
    self->queued++;
}

//  --------------------------------------------------------------------------
//  Worker messages: [worker]["" ][MDPW01][command][...]

static void
s_worker_ready (broker_t *self, s_worker_t *known)
{
    zmq_msg_t *id = &self->parts[0];
    char label[24];
    s_label (zmq_msg_data (id), zmq_msg_size (id), label, sizeof label);
    if (known) {
        //  READY twice on one connection: the worker lost track; start over
        s_refuse (self, "worker %s sent READY again, disconnecting it", label);
        s_worker_delete (self, known, true);
        return;
    }
    if (self->nparts < 5 || zmq_msg_size (&self->parts[4]) == 0 ||
        zmq_msg_size (&self->parts[4]) > BROKER_NAME_MAX) {
        s_refuse (self, "worker %s sent READY without a valid service name", label);
        return;
    }
    zmq_msg_t *name = &self->parts[4];
    if (zmq_msg_size (name) >= 4 && memcmp (zmq_msg_data (name), "mmi.", 4) == 0) {
        s_refuse (self, "worker %s offered reserved service %.*s", label, (int) zmq_msg_size (name),
                  (const char *) zmq_msg_data (name));
        return;
    }
    long capacity = 1;
    if (self->nparts >= 6) {
        zmq_msg_t *frame = &self->parts[5];
        char text[32];
        size_t size = zmq_msg_size (frame);
        char *end = NULL;
        if (size > 9 && size < sizeof text && memcmp (zmq_msg_data (frame), "capacity=", 9) == 0) {
            memcpy (text, (const char *) zmq_msg_data (frame) + 9, size - 9);
            text[size - 9] = '\0';
            errno = 0;
            capacity = strtol (text, &end, 10);
        }
        if (!end || *end || errno || capacity < 1) {
            s_refuse (self, "worker %s sent an unreadable capacity frame, using capacity 1", label);
            capacity = 1;
        }
        else if (capacity > BROKER_CAPACITY_MAX) {
            crm_warn ("worker %s asked for capacity %ld, limited to %d", label, capacity,
                      BROKER_CAPACITY_MAX);
            capacity = BROKER_CAPACITY_MAX;
        }
    }
    s_service_t *service = s_service_require (self, zmq_msg_data (name), zmq_msg_size (name));
    s_worker_t *worker = calloc (1, sizeof *worker);
    assert (worker);
    worker->id_size = zmq_msg_size (id);
    memcpy (worker->id, zmq_msg_data (id), worker->id_size);
    memcpy (worker->label, label, sizeof label);
    worker->service = service;
    worker->capacity = (int) capacity;
    worker->slots = SLOT_NONE;
    worker->socket = self->from;
    worker->expiry = self->now + (int64_t) self->config.heartbeat_ms * self->config.liveness;
    s_key_t key = {worker->id_size, worker->id};
    zhashx_insert (self->workers, &key, worker);
    worker->next = self->worker_list;
    if (self->worker_list)
        self->worker_list->prev = worker;
    self->worker_list = worker;
    service->workers++;
    service->attached++;
    s_ring_append (service, worker);
    crm_info ("worker %s ready for %s with capacity %d", worker->label, service->name,
              worker->capacity);
    s_service_drain_queue (self, service);
}

static void
s_worker_reply (broker_t *self, s_worker_t *worker)
{
    if (self->nparts < 6 || zmq_msg_size (&self->parts[4]) != 8 ||
        zmq_msg_size (&self->parts[5]) != 0) {
        s_refuse (self, "dropped a REPLY from worker %s without a valid client address",
                  worker->label);
        return;
    }
    const byte *address = zmq_msg_data (&self->parts[4]);
    uint32_t index = 0, token = 0;
    for (int i = 0; i < 4; i++) {
        index = index << 8 | address[i];
        token = token << 8 | address[4 + i];
    }
    s_slot_t *slot = NULL;
    if (index < self->nchunks * BROKER_SLOT_CHUNK)
        slot = s_slot (self, index);
    if (!slot || slot->worker != worker || slot->token != token) {
        //  Usually a reply to a request already answered UNAVAILABLE
        crm_debug ("dropped a REPLY from worker %s for no request of its own", worker->label);
        return;
    }
    s_service_t *service = worker->service;
    self->replies++;
    s_client_send (self, &slot->client, service->name, service->name_size, &self->parts[6],
                   self->nparts - 6);
    s_slot_give (self, index);
    worker->in_flight--;
    if (worker->draining) {
        if (worker->in_flight == 0) {
            crm_info ("worker %s of %s finished and left", worker->label, service->name);
            s_worker_delete (self, worker, false);
        }
        return;
    }
    if (!worker->ready)
        s_ring_append (service, worker);
    if (service->queue_head)
        s_service_drain_queue (self, service);
}

static void
s_worker_message (broker_t *self)
{
    zmq_msg_t *id = &self->parts[0];
    s_worker_t *worker = s_worker_lookup (self, id);
    if (self->nparts < 4 || zmq_msg_size (&self->parts[3]) != 1) {
        s_refuse (self, "dropped a worker message without a command");
        return;
    }
    byte command = *(const byte *) zmq_msg_data (&self->parts[3]);
    if (worker)
        worker->expiry = self->now + (int64_t) self->config.heartbeat_ms * self->config.liveness;
    switch (command) {
        case CRM_MDPW_READY:
            s_worker_ready (self, worker);
            break;
        case CRM_MDPW_REPLY:
        case CRM_MDPW_HEARTBEAT:
            if (!worker) {
                //  Not registered (e.g. the broker restarted): 7/MDP says disconnect
                char label[24];
                s_label (zmq_msg_data (id), zmq_msg_size (id), label, sizeof label);
                crm_debug ("message from unknown worker %s, disconnecting it", label);
                zmq_msg_t head[4];
                byte disconnect = CRM_MDPW_DISCONNECT;
                zmq_msg_init (&head[0]);
                zmq_msg_move (&head[0], id);
                s_msg_set (&head[1], "", 0);
                s_msg_set (&head[2], CRM_MDPW, 6);
                s_msg_set (&head[3], &disconnect, 1);
                s_send (self->from, head, 4, NULL, 0);
            }
            else if (command == CRM_MDPW_REPLY)
                s_worker_reply (self, worker);
            break;
        case CRM_MDPW_DISCONNECT:
            if (!worker)
                break;
            if (worker->in_flight == 0) {
                crm_info ("worker %s of %s left", worker->label, worker->service->name);
                s_worker_delete (self, worker, false);
            }
            else if (!worker->draining) {
                //  Keep routing its replies; it gets no new request
                crm_info ("worker %s of %s leaving, finishing %d requests", worker->label,
                          worker->service->name, worker->in_flight);
                worker->draining = true;
                s_ring_remove (worker->service, worker);
                if (--worker->service->workers == 0)
                    worker->service->no_worker_since = self->now;
            }
            break;
        default:
            s_refuse (self, "dropped a worker message with unknown command 0x%02x", command);
            break;
    }
}

//  --------------------------------------------------------------------------
//  The loop

//  Receives one message into parts; -1 when none is waiting
static int
s_recv (broker_t *self, void *socket)
{
    self->nparts = 0;
    self->truncated = false;
    zmq_msg_t spill;
    zmq_msg_init (&spill);
    int flags = ZMQ_DONTWAIT;
    while (true) {
        zmq_msg_t *msg = self->nparts < BROKER_FRAMES_MAX ? &self->parts[self->nparts] : &spill;
        if (zmq_msg_recv (msg, socket, flags) < 0) {
            //  Frames of a message arrive together: only the first can fail
            zmq_msg_close (&spill);
            return -1;
        }
        flags = 0;
        if (msg == &spill)
            self->truncated = true;
        else
            self->nparts++;
        if (!zmq_msg_more (msg))
            break;
    }
    zmq_msg_close (&spill);
    return 0;
}

static void
s_handle_router (broker_t *self)
{
    if (self->truncated) {
        s_refuse (self, "dropped a message of more than %d frames", BROKER_FRAMES_MAX);
        return;
    }
    if (self->nparts < 3 || zmq_msg_size (&self->parts[1]) != 0) {
        s_refuse (self, "dropped a message without an empty delimiter and protocol frame");
        return;
    }
    zmq_msg_t *header = &self->parts[2];
    //  With a worker endpoint of their own, workers are heard only there:
    //  whoever may send requests cannot offer to serve them
    if (self->wrouter && s_frame_is (header, self->from == self->wrouter ? CRM_MDPC : CRM_MDPW, 6))
        s_refuse (self, "dropped a %s message on the %s endpoint",
                  self->from == self->wrouter ? "client" : "worker",
                  self->from == self->wrouter ? "worker" : "client");
    else if (s_frame_is (header, CRM_MDPC, 6))
        s_client_message (self);
    else if (s_frame_is (header, CRM_MDPW, 6))
        s_worker_message (self);
    else
        s_refuse (self, "dropped a message with unknown protocol header of %zu bytes",
                  zmq_msg_size (header));
}

static void
s_forward (void *from, void *to)
{
    zmq_msg_t msg;
    zmq_msg_init (&msg);
    for (int n = 0; n < BROKER_BURST; n++) {
        if (zmq_msg_recv (&msg, from, ZMQ_DONTWAIT) < 0)
            break;
        bool sending = true;
        while (true) {
            bool more = zmq_msg_more (&msg);
            if (sending && zmq_msg_send (&msg, to, ZMQ_DONTWAIT | (more ? ZMQ_SNDMORE : 0)) < 0)
                sending = false; //  Drop the rest of it, as PUB/SUB may
            if (!more || zmq_msg_recv (&msg, from, 0) < 0)
                break;
        }
    }
    zmq_msg_close (&msg);
}

static void
s_heartbeat (broker_t *self)
{
    s_worker_t *worker = self->worker_list;
    while (worker) {
        s_worker_t *next = worker->next;
        if (self->now >= worker->expiry) {
            crm_warn ("worker %s of %s expired with %d requests in flight", worker->label,
                      worker->service->name, worker->in_flight);
            s_worker_delete (self, worker, true);
        }
        else {
            zmq_msg_t head[4];
            byte command = CRM_MDPW_HEARTBEAT;
            s_msg_set (&head[0], worker->id, worker->id_size);
            s_msg_set (&head[1], "", 0);
            s_msg_set (&head[2], CRM_MDPW, 6);
            s_msg_set (&head[3], &command, 1);
            if (s_send (worker->socket, head, 4, NULL, 0) != 0 && errno == EHOSTUNREACH) {
                crm_warn ("worker %s of %s disconnected with %d requests in flight", worker->label,
                          worker->service->name, worker->in_flight);
                s_worker_delete (self, worker, false);
            }
        }
        worker = next;
    }
}

static void
s_expire_queues (broker_t *self)
{
    s_service_t *service = self->service_list;
    while (service) {
        s_service_t *next = service->next;
        if (service->workers == 0) {
            int64_t since = service->no_worker_since;
            while (service->queue_head) {
                s_request_t *request = service->queue_head;
                int64_t waited_from = request->queued_at > since ? request->queued_at : since;
                if (self->now - waited_from < self->config.no_worker_ms)
                    break;
                service->queue_head = request->next;
                if (!service->queue_head)
                    service->queue_tail = NULL;
                service->queued--;
                self->queued--;
                s_request_fail (self, service, request, CRM__V1__STATUS_CODE__STATUS_UNAVAILABLE,
                                "no worker for this service; resend later");
            }
            if (service->attached == 0 && service->queued == 0)
                s_service_destroy (self, service);
        }
        service = next;
    }
}

static void
s_housekeeping (broker_t *self)
{
    if (self->now >= self->heartbeat_at) {
        s_heartbeat (self);
        self->heartbeat_at = self->now + self->config.heartbeat_ms;
    }
    if (self->now >= self->tick_at) {
        //  Also forgets services left with no worker and no request
        s_expire_queues (self);
        self->tick_at = self->now + (self->queued ? BROKER_TICK_MS : self->config.heartbeat_ms);
    }
}

int
broker_step (broker_t *self, int timeout_ms)
{
    assert (self);
    self->now = crm_mono_ms ();
    //  An idle broker wakes once a heartbeat; queued requests need a finer tick
    if (self->queued && self->tick_at > self->now + BROKER_TICK_MS)
        self->tick_at = self->now + BROKER_TICK_MS;
    int64_t next = self->heartbeat_at < self->tick_at ? self->heartbeat_at : self->tick_at;
    int64_t wait = next - self->now;
    if (wait < 0)
        wait = 0;
    if (timeout_ms >= 0 && wait > timeout_ms)
        wait = timeout_ms;
    //  The ROUTERs first, then the event pair and the ZAP handler when there are. Only
    //  sockets that are there: a socket twice in one zmq_poll, even once with no events
    //  asked, made replies wait milliseconds now and then (p99 of GetContact at half load
    //  30-45 ms rather than 4-6)
    zmq_pollitem_t items[5] = {{self->router, 0, ZMQ_POLLIN, 0}};
    int nitems = 1, at_xsub = -1, at_zap = -1;
    if (self->wrouter)
        items[nitems++] = (zmq_pollitem_t){self->wrouter, 0, ZMQ_POLLIN, 0};
    int nrouters = nitems;
    if (self->xsub) {
        at_xsub = nitems;
        items[nitems++] = (zmq_pollitem_t){self->xsub, 0, ZMQ_POLLIN, 0};
        items[nitems++] = (zmq_pollitem_t){self->xpub, 0, ZMQ_POLLIN, 0};
    }
    if (self->zap) {
        at_zap = nitems;
        items[nitems++] = (zmq_pollitem_t){broker_zap_socket (self->zap), 0, ZMQ_POLLIN, 0};
    }
    if (zmq_poll (items, nitems, (long) wait) < 0) {
        if (errno == EINTR)
            return 0;
        crm_error ("could not poll the broker sockets: %s", zmq_strerror (errno));
        return -1;
    }
    self->now = crm_mono_ms ();
    for (int i = 0; i < nrouters; i++) {
        if (!(items[i].revents & ZMQ_POLLIN))
            continue;
        self->from = items[i].socket;
        self->burst++;
        for (int n = 0; n < BROKER_BURST; n++) {
            if (s_recv (self, self->from) != 0)
                break;
            s_handle_router (self);
            s_msgs_close (self->parts, self->nparts);
        }
    }
    if (at_zap >= 0 && (items[at_zap].revents & ZMQ_POLLIN))
        broker_zap_handle (self->zap);
    if (at_xsub >= 0) {
        if (items[at_xsub].revents & ZMQ_POLLIN)
            s_forward (self->xsub, self->xpub);
        if (items[at_xsub + 1].revents & ZMQ_POLLIN)
            s_forward (self->xpub, self->xsub);
    }
    s_housekeeping (self);
    return 0;
}

//  Hands back everything the broker holds: clients get UNAVAILABLE (they
//  resend later, with the same request id), workers get DISCONNECT
static void
s_shutdown (broker_t *self)
{
    if (self->shut || !self->router)
        return;
    self->shut = true;
    self->now = crm_mono_ms ();
    while (self->worker_list)
        s_worker_delete (self, self->worker_list, true);
    while (self->service_list) {
        s_service_t *service = self->service_list;
        while (service->queue_head) {
            s_request_t *request = service->queue_head;
            service->queue_head = request->next;
            service->queued--;
            self->queued--;
            s_request_fail (self, service, request, CRM__V1__STATUS_CODE__STATUS_UNAVAILABLE,
                            "the broker is shutting down; resend later");
        }
        service->queue_tail = NULL;
        s_service_destroy (self, service);
    }
}

int
broker_run (broker_t *self)
{
    assert (self);
    char security[96] = "in the clear";
    if (self->zap)
        snprintf (security, sizeof security, "through CURVE, %s%zu keys admitted",
                  broker_zap_any (self->zap) ? "any client, " : "", broker_zap_keys (self->zap));
    crm_info ("broker started on %s (workers on %s, events in %s, out %s), heartbeat %d ms, "
              "clients %s",
              self->endpoint, self->wrouter ? self->worker_endpoint : "the same",
              self->xsub ? self->events_in : "off", self->xpub ? self->events_out : "off",
              self->config.heartbeat_ms, security);
    int rc = 0;
    while (!atomic_load (&self->stopping)) {
        if (broker_step (self, BROKER_TICK_MS) != 0) {
            rc = -1;
            break;
        }
    }
    s_shutdown (self);
    crm_info ("broker stopped: %llu requests, %llu replies, %llu answered unavailable, "
              "%llu malformed messages dropped",
              (unsigned long long) self->requests, (unsigned long long) self->replies,
              (unsigned long long) self->unavailable, (unsigned long long) self->refused);
    return rc;
}

void
broker_stop (broker_t *self)
{
    assert (self);
    atomic_store (&self->stopping, 1);
}

//  --------------------------------------------------------------------------
//  Construction

void
broker_config_defaults (broker_config_t *config)
{
    assert (config);
    config->endpoint = "tcp://127.0.0.1:5555";
    config->events_in = "tcp://127.0.0.1:5556";
    config->events_out = "tcp://127.0.0.1:5557";
    config->worker_endpoint = NULL;
    config->heartbeat_ms = CRM_MDP_HEARTBEAT_MS;
    config->liveness = CRM_MDP_LIVENESS;
    config->no_worker_ms = 3000;
    config->queue_max = 10000;
    config->curve_secret_key = NULL;
    config->client_keys = NULL;
    config->client_keys_file = NULL;
}

//  A bound socket; with curve_secret (32 bytes), a CURVE server with that key.
static void *
s_bind (broker_t *self, int type, const char *endpoint, const uint8_t *curve_secret, char *bound,
        size_t bound_size)
{
    void *socket = zmq_socket (self->ctx, type);
    if (!socket) {
        crm_error ("could not create a socket: %s", zmq_strerror (errno));
        return NULL;
    }
    int64_t maxmsg = CRM_MAX_MESSAGE_BYTES + BROKER_MAXMSG_MARGIN;
    zmq_setsockopt (socket, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg);
    int linger = BROKER_LINGER_MS;
    zmq_setsockopt (socket, ZMQ_LINGER, &linger, sizeof linger);
    if (curve_secret) {
        int on = 1;
        zmq_setsockopt (socket, ZMQ_CURVE_SERVER, &on, sizeof on);
        zmq_setsockopt (socket, ZMQ_CURVE_SECRETKEY, curve_secret, 32);
        zmq_setsockopt (socket, ZMQ_ZAP_DOMAIN, "crm", 3);
    }
    if (type == ZMQ_ROUTER) {
        //  Sending to a vanished peer fails instead of vanishing silently,
        //  which is how a worker that closed its socket is noticed at once
        int mandatory = 1;
        zmq_setsockopt (socket, ZMQ_ROUTER_MANDATORY, &mandatory, sizeof mandatory);
    }
    if (zmq_bind (socket, endpoint) != 0) {
        crm_error ("could not bind to \"%s\": %s", endpoint, zmq_strerror (errno));
        zmq_close (socket);
        return NULL;
    }
    size_t size = bound_size;
    if (zmq_getsockopt (socket, ZMQ_LAST_ENDPOINT, bound, &size) != 0)
        snprintf (bound, bound_size, "%s", endpoint);
    return socket;
}

broker_t *
broker_new (const broker_config_t *config)
{
    assert (config && config->endpoint);
    if (config->heartbeat_ms < 1 || config->liveness < 1 || config->no_worker_ms < 0 ||
        config->queue_max < 0) {
        crm_error ("invalid broker settings: heartbeat %d ms, liveness %d, no-worker %d ms, "
                   "queue %d",
                   config->heartbeat_ms, config->liveness, config->no_worker_ms, config->queue_max);
        return NULL;
    }
    broker_t *self = calloc (1, sizeof *self);
    assert (self);
    self->config = *config;
    self->config_endpoint = strdup (config->endpoint);
    self->config_events_in = config->events_in ? strdup (config->events_in) : NULL;
    self->config_events_out = config->events_out ? strdup (config->events_out) : NULL;
    self->config_worker_endpoint =
        config->worker_endpoint ? strdup (config->worker_endpoint) : NULL;
    self->config.worker_endpoint = self->config_worker_endpoint;
    self->config.endpoint = self->config_endpoint;
    self->config.events_in = self->config_events_in;
    self->config.events_out = self->config_events_out;
    //  Used by broker_new only, and not kept
    self->config.curve_secret_key = self->config.client_keys = self->config.client_keys_file = NULL;
    self->free_slot = SLOT_NONE;
    for (int i = 0; i < BROKER_FRAMES_MAX; i++)
        zmq_msg_init (&self->parts[i]);
    atomic_init (&self->stopping, 0);
    self->now = crm_mono_ms ();
    self->heartbeat_at = self->now + self->config.heartbeat_ms;
    self->tick_at = self->now + BROKER_TICK_MS;
    self->workers = s_table_new ();
    self->services = s_table_new ();
    self->ctx = zmq_ctx_new ();
    if (!self->workers || !self->services || !self->ctx) {
        crm_error ("could not set up the broker: out of memory");
        broker_destroy (&self);
        return NULL;
    }
    bool curve = config->curve_secret_key && *config->curve_secret_key;
    if (curve && !(config->worker_endpoint && *config->worker_endpoint)) {
        crm_error ("CURVE needs an endpoint for workers (CRM_BROKER_WORKER_ENDPOINT): they "
                   "stay inside, in the clear, while clients come through CURVE");
        broker_destroy (&self);
        return NULL;
    }
    if (!curve && ((config->client_keys && *config->client_keys) ||
                   (config->client_keys_file && *config->client_keys_file))) {
        crm_error ("client keys are given but CURVE is off: set CRM_BROKER_SECRET_KEY too");
        broker_destroy (&self);
        return NULL;
    }
    //  The secret key is needed while the sockets clients reach are made, and not kept
    uint8_t secret[CRM_CURVE_KEY_BYTES] = {0};
    const uint8_t *curve_secret = NULL;
    if (curve) {
        if (crm_curve_key_decode (config->curve_secret_key, secret) != 0) {
            crm_error ("CRM_BROKER_SECRET_KEY is not a CURVE key (64 hex digits or 40 characters "
                       "of Z85)");
            broker_destroy (&self);
            return NULL;
        }
        //  Before the CURVE sockets, so that no handshake finds nobody to ask
        self->zap = broker_zap_new (self->ctx, config->client_keys, config->client_keys_file);
        if (!self->zap) {
            explicit_bzero (secret, sizeof secret);
            broker_destroy (&self);
            return NULL;
        }
        curve_secret = secret;
    }
    self->router = s_bind (self, ZMQ_ROUTER, self->config.endpoint, curve_secret, self->endpoint,
                           sizeof self->endpoint);
    bool bound = self->router != NULL;
    if (bound && self->config.worker_endpoint && *self->config.worker_endpoint) {
        self->wrouter = s_bind (self, ZMQ_ROUTER, self->config.worker_endpoint, NULL,
                                self->worker_endpoint, sizeof self->worker_endpoint);
        bound = self->wrouter != NULL;
    }
    bool events = self->config.events_in && *self->config.events_in && self->config.events_out &&
                  *self->config.events_out;
    if (bound && events) {
        self->xsub = s_bind (self, ZMQ_XSUB, self->config.events_in, curve_secret, self->events_in,
                             sizeof self->events_in);
        self->xpub = s_bind (self, ZMQ_XPUB, self->config.events_out, curve_secret,
                             self->events_out, sizeof self->events_out);
        bound = self->xsub && self->xpub;
    }
    explicit_bzero (secret, sizeof secret);
    if (!bound) {
        broker_destroy (&self);
        return NULL;
    }
    return self;
}

void
broker_destroy (broker_t **self_p)
{
    assert (self_p);
    broker_t *self = *self_p;
    if (!self)
        return;
    s_shutdown (self);
    if (self->router)
        zmq_close (self->router);
    if (self->wrouter)
        zmq_close (self->wrouter);
    if (self->xsub)
        zmq_close (self->xsub);
    if (self->xpub)
        zmq_close (self->xpub);
    broker_zap_destroy (&self->zap);
    if (self->ctx)
        zmq_ctx_term (self->ctx);
    for (uint32_t c = 0; c < self->nchunks; c++) {
        for (uint32_t i = 0; i < BROKER_SLOT_CHUNK; i++)
            zmq_msg_close (&self->chunks[c][i].client);
        free (self->chunks[c]);
    }
    free (self->chunks);
    while (self->spare_requests) {
        s_request_t *request = self->spare_requests;
        self->spare_requests = request->next;
        free (request);
    }
    for (int i = 0; i < BROKER_FRAMES_MAX; i++)
        zmq_msg_close (&self->parts[i]);
    zhashx_destroy (&self->workers);
    zhashx_destroy (&self->services);
    free (self->config_endpoint);
    free (self->config_events_in);
    free (self->config_events_out);
    free (self->config_worker_endpoint);
    free (self);
    *self_p = NULL;
}

const char *
broker_endpoint (broker_t *self)
{
    assert (self);
    return self->endpoint;
}

const char *
broker_worker_endpoint (broker_t *self)
{
    assert (self);
    return self->wrouter ? self->worker_endpoint : self->endpoint;
}

const char *
broker_events_in (broker_t *self)
{
    assert (self);
    return self->xsub ? self->events_in : NULL;
}

const char *
broker_events_out (broker_t *self)
{
    assert (self);
    return self->xpub ? self->events_out : NULL;
}
