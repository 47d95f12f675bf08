/*  crm_test_broker.h - what the unit tests that speak MDP share: the real broker and workers on threads of their own, raw messages, MMI.
 *
 *  Functions are static inline, as the harness's counters in crm_test.h are
 *  static: the checks made here count in the test that includes it. A test
 *  either links the broker's objects or includes broker.c.
 */
#ifndef CRM_TEST_BROKER_H_INCLUDED
#define CRM_TEST_BROKER_H_INCLUDED

#include "../../broker/broker.h"

#include "crm_log.h"
#include "crm_mdp.h"
#include "crm_test.h"
#include "crm_util.h"

#include <czmq.h>
#include <ev.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

//  Sets czmq up before any thread starts, as it sets itself up on the first
//  socket and two threads doing that at once race; its signal handler off.
static inline void
crm_test_zsys_init (void)
{
    zsys_handler_set (NULL);
    zsys_init ();
}

//  The start of a test whose threads speak MDP: czmq set up, and crm_log on
//  stderr for the test called name, at CRM_LOG_LEVEL (error when unset).
static inline void
crm_test_mdp_init (const char *name)
{
    crm_test_zsys_init ();
    const char *level = getenv ("CRM_LOG_LEVEL");
    crm_log_init (name, "test", level ? level : "error", "text");
    crm_log_set_stream (stderr);
}

//  --------------------------------------------------------------------------
//  The broker, on a thread of its own

typedef struct {
    broker_config_t config; //  How it starts; set by crm_test_broker_init, then as the test likes
    broker_t *broker;       //  NULL while stopped
    pthread_t thread;       //  Runs broker_run
    char endpoint[256];     //  Its ROUTER as bound, kept when it stops
} crm_test_broker_t;

//  The suite's defaults, every endpoint on an ephemeral port of 127.0.0.1;
//  without the event fan-out unless events is true.
static inline void
crm_test_broker_init (crm_test_broker_t *self, bool events)
{
    memset (self, 0, sizeof *self);
    broker_config_defaults (&self->config);
    self->config.endpoint = "tcp://127.0.0.1:*";
    self->config.events_in = events ? "tcp://127.0.0.1:*" : NULL;
    self->config.events_out = events ? "tcp://127.0.0.1:*" : NULL;
}

static inline void *
crm_test_broker_run (void *arg)
{
    broker_run (arg);
    return NULL;
}

//  Starts the broker (a check that it could) and runs it on its thread;
//  started again after a stop, it binds the endpoint it had. 0, or -1.
static inline int
crm_test_broker_start (crm_test_broker_t *self)
{
    self->broker = broker_new (&self->config);
    CHECK (self->broker != NULL);
    if (!self->broker)
        return -1;
    snprintf (self->endpoint, sizeof self->endpoint, "%s", broker_endpoint (self->broker));
    self->config.endpoint = self->endpoint;
    pthread_create (&self->thread, NULL, crm_test_broker_run, self->broker);
    return 0;
}

//  Stops the broker, waits for its thread and destroys it; nothing when it
//  is not running.
static inline void
crm_test_broker_stop (crm_test_broker_t *self)
{
    if (!self->broker)
        return;
    broker_stop (self->broker);
    pthread_join (self->thread, NULL);
    broker_destroy (&self->broker);
}

//  --------------------------------------------------------------------------
//  A worker on a thread and loop of its own

typedef struct {
    struct ev_loop *loop;     //  The thread's; the test adds its watchers before the start
    crm_mdp_worker_t *worker; //  Connected to the broker
    pthread_t thread;         //  Runs the loop
    ev_async quit;            //  Sent by crm_test_worker_stop
    void (*on_quit) (struct ev_loop *loop, void *arg); //  Stops the test's watchers
    void *arg;                                         //  For on_quit
} crm_test_worker_t;

//  A worker of service for the broker at endpoint, taking capacity requests
//  at once, each handed to fn with arg, and heartbeating every heartbeat_ms;
//  on a loop of its own, not yet running.
static inline void
crm_test_worker_init (crm_test_worker_t *self, const char *endpoint, const char *service,
                      int capacity, crm_mdp_request_fn *fn, void *arg, int heartbeat_ms)
{
    memset (self, 0, sizeof *self);
    self->loop = ev_loop_new (EVFLAG_AUTO);
    self->worker = crm_mdp_worker_new (self->loop, endpoint, service, capacity, fn, arg);
    crm_mdp_worker_set_heartbeat (self->worker, heartbeat_ms);
}

static inline void
crm_test_worker_on_quit (struct ev_loop *loop, ev_async *watcher, int revents)
{
    (void) revents;
    crm_test_worker_t *self = watcher->data;
    if (self->on_quit)
        self->on_quit (loop, self->arg);
    crm_mdp_worker_destroy (&self->worker);
    ev_async_stop (loop, watcher);
    ev_break (loop, EVBREAK_ALL);
}

static inline void *
crm_test_worker_run (void *arg)
{
    crm_test_worker_t *self = arg;
    ev_run (self->loop, 0);
    return NULL;
}

//  Runs the loop on its thread. At the stop, on the thread, on_quit (loop,
//  arg) is called first when it is not NULL, then the worker is destroyed.
static inline void
crm_test_worker_start (crm_test_worker_t *self, void (*on_quit) (struct ev_loop *, void *),
                       void *arg)
{
    self->on_quit = on_quit;
    self->arg = arg;
    ev_async_init (&self->quit, crm_test_worker_on_quit);
    self->quit.data = self;
    ev_async_start (self->loop, &self->quit);
    pthread_create (&self->thread, NULL, crm_test_worker_run, self);
}

//  Stops the loop (the worker says DISCONNECT), waits for the thread and
//  destroys the loop.
static inline void
crm_test_worker_stop (crm_test_worker_t *self)
{
    ev_async_send (self->loop, &self->quit);
    pthread_join (self->thread, NULL);
    ev_loop_destroy (self->loop);
    self->loop = NULL;
}

//  --------------------------------------------------------------------------
//  Raw messages, frame by frame

#define CRM_TEST_FRAMES_MAX 80 //  More frames than the broker takes

//  A received message; frames past CRM_TEST_FRAMES_MAX are dropped.
typedef struct {
    int n;
    zmq_msg_t parts[CRM_TEST_FRAMES_MAX];
} crm_test_msg_t;

static inline void
crm_test_msg_close (crm_test_msg_t *msg)
{
    for (int i = 0; i < msg->n; i++)
        zmq_msg_close (&msg->parts[i]);
    msg->n = 0;
}

//  Receives one message from socket within timeout_ms; 0, or -1 with msg
//  empty. Caller closes msg.
static inline int
crm_test_msg_recv (void *socket, crm_test_msg_t *msg, int timeout_ms)
{
    msg->n = 0;
    zmq_pollitem_t item = {socket, 0, ZMQ_POLLIN, 0};
    if (zmq_poll (&item, 1, timeout_ms) <= 0)
        return -1;
    while (true) {
        zmq_msg_t part;
        zmq_msg_init (&part);
        if (zmq_msg_recv (&part, socket, 0) < 0) {
            zmq_msg_close (&part);
            crm_test_msg_close (msg);
            return -1;
        }
        bool more = zmq_msg_more (&part);
        if (msg->n < CRM_TEST_FRAMES_MAX) {
            zmq_msg_init (&msg->parts[msg->n]);
            zmq_msg_move (&msg->parts[msg->n++], &part);
        }
        zmq_msg_close (&part);
        if (!more)
            break;
    }
    return 0;
}

//  Whether frame index of msg holds exactly size bytes of data.
static inline bool
crm_test_msg_part_is (crm_test_msg_t *msg, int index, const void *data, size_t size)
{
    return index < msg->n && zmq_msg_size (&msg->parts[index]) == size &&
           memcmp (zmq_msg_data (&msg->parts[index]), data, size) == 0;
}

//  Whether frame index of msg holds exactly text.
static inline bool
crm_test_msg_part_str (crm_test_msg_t *msg, int index, const char *text)
{
    return crm_test_msg_part_is (msg, index, text, strlen (text));
}

//  --------------------------------------------------------------------------
//  MMI

//  Whether the broker behind client knows a worker of service (mmi.service
//  answers "200").
static inline bool
crm_test_mmi_known (crm_mdp_client_t *client, const char *service)
{
    zmsg_t *body = zmsg_new ();
    zmsg_addstr (body, service);
    zmsg_t *reply = crm_mdp_client_call (client, "mmi.service", &body);
    char *code = reply ? zmsg_popstr (reply) : NULL;
    bool known = code && strcmp (code, "200") == 0;
    free (code);
    zmsg_destroy (&reply);
    return known;
}

//  Asks until the broker knows a worker of service (READY is asynchronous),
//  for up to ms; true if it came to know one.
static inline bool
crm_test_mmi_wait (crm_mdp_client_t *client, const char *service, int ms)
{
    int64_t deadline = crm_mono_ms () + ms;
    while (crm_mono_ms () < deadline) {
        if (crm_test_mmi_known (client, service))
            return true;
        usleep (20000);
    }
    return false;
}

#endif
