/*  test_mdp.c - libcrm's MDP client and worker, against a scripted broker and against the real one. */
#include "crm_log.h"
#include "crm_mdp.h"
#include "crm_proto.h"
#include "crm_util.h"
#include "crm_test.h"
#include "crm_test_broker.h"

//  The broker is compiled into this test so client and worker meet the real
//  one in-process, and can watch it restart
#include "../../broker/broker.c"
#include "../../broker/zap.c"

#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

#define HEARTBEAT_MS 100

static void *s_ctx;

//  Worker command of a message received by a ROUTER: [id][""][MDPW01][cmd]...
static int
s_command (crm_test_msg_t *msg)
{
    if (msg->n < 4 || !crm_test_msg_part_str (msg, 1, "") ||
        !crm_test_msg_part_str (msg, 2, CRM_MDPW) || zmq_msg_size (&msg->parts[3]) != 1)
        return -1;
    return *(const uint8_t *) zmq_msg_data (&msg->parts[3]);
}

//  A suite request body with a request id; caller owns
static zmsg_t *
s_request (const char *method, const char *request_id, const char *text)
{
    Crm__V1__RequestMeta meta = CRM__V1__REQUEST_META__INIT;
    meta.request_id = (char *) (uintptr_t) request_id;
    Crm__V1__Status payload = CRM__V1__STATUS__INIT;
    payload.message = (char *) (uintptr_t) text;
    return crm_proto_request_new (method, &meta, &payload.base);
}

//  Status code of a reply body, and its request id copied to rid; -1 if none
static int
s_reply_code (zmsg_t *reply, char *rid, size_t size)
{
    Crm__V1__Status *status;
    zframe_t *payload;
    if (!reply || crm_proto_reply_parse (reply, &status, &payload) != 0)
        return -1;
    int code = status->code;
    if (rid)
        snprintf (rid, size, "%s", status->request_id);
    crm__v1__status__free_unpacked (status, NULL);
    return code;
}

//  --------------------------------------------------------------------------
//  Against a scripted broker: a raw ROUTER, the worker's loop stepped here

typedef struct {
    int calls;           //  Requests handed to the handler
    bool hold;           //  Keep requests instead of answering
    zframe_t *client[4]; //  Held requests
    zmsg_t *body[4];
    int held;
} s_handler_t;

static void
s_handler (crm_mdp_worker_t *worker, zframe_t *client, zmsg_t *body, void *arg)
{
    s_handler_t *handler = arg;
    handler->calls++;
    if (handler->hold && handler->held < 4) {
        handler->client[handler->held] = client;
        handler->body[handler->held++] = body;
        return;
    }
    crm_mdp_worker_reply (worker, &client, &body);
}

//  Runs the loop until the ROUTER has a message (0) or ms pass (-1)
static int
s_spin_recv (struct ev_loop *loop, void *router, crm_test_msg_t *msg, int ms)
{
    int64_t deadline = crm_mono_ms () + ms;
    while (crm_mono_ms () < deadline) {
        ev_run (loop, EVRUN_NOWAIT);
        if (crm_test_msg_recv (router, msg, 5) == 0)
            return 0;
    }
    return -1;
}

//  Waits for a command from the worker, skipping heartbeats unless asked for
static int
s_spin_command (struct ev_loop *loop, void *router, crm_test_msg_t *msg, int command, int ms)
{
    int64_t deadline = crm_mono_ms () + ms;
    while (crm_mono_ms () < deadline) {
        if (s_spin_recv (loop, router, msg, (int) (deadline - crm_mono_ms ())) != 0)
            return -1;
        if (s_command (msg) == command)
            return 0;
        crm_test_msg_close (msg);
    }
    return -1;
}

static void
s_spin (struct ev_loop *loop, int ms)
{
    int64_t deadline = crm_mono_ms () + ms;
    while (crm_mono_ms () < deadline) {
        ev_run (loop, EVRUN_NOWAIT);
        usleep (2000);
    }
}

//  Sends [id][""][MDPW01][command] and optional extra frames to the worker
static void
s_to_worker (void *router, zmq_msg_t *id, int command, int nextra, const void *const *data,
             const size_t *sizes)
{
    uint8_t cmd = (uint8_t) command;
    zmq_send (router, zmq_msg_data (id), zmq_msg_size (id), ZMQ_SNDMORE);
    zmq_send (router, "", 0, ZMQ_SNDMORE);
    zmq_send (router, CRM_MDPW, 6, ZMQ_SNDMORE);
    zmq_send (router, &cmd, 1, nextra ? ZMQ_SNDMORE : 0);
    for (int i = 0; i < nextra; i++)
        zmq_send (router, data[i], sizes[i], i + 1 < nextra ? ZMQ_SNDMORE : 0);
}

static void
test_worker_protocol (void)
{
    void *router = zmq_socket (s_ctx, ZMQ_ROUTER);
    int rc = zmq_bind (router, "tcp://127.0.0.1:*");
    CHECK (rc == 0);
    char endpoint[256];
    size_t size = sizeof endpoint;
    zmq_getsockopt (router, ZMQ_LAST_ENDPOINT, endpoint, &size);

    struct ev_loop *loop = ev_loop_new (EVFLAG_AUTO);
    s_handler_t handler = {0};
    crm_mdp_worker_t *worker = crm_mdp_worker_new (loop, endpoint, "fake", 3, s_handler, &handler);
    CHECK (worker != NULL);
    crm_mdp_worker_set_heartbeat (worker, HEARTBEAT_MS);
    crm_mdp_worker_set_maxmsgsize (worker, 4096);

    //  READY announces the capacity
    crm_test_msg_t ready;
    CHECK (s_spin_command (loop, router, &ready, CRM_MDPW_READY, 1000) == 0);
    CHECK_INT (ready.n, 6);
    CHECK (crm_test_msg_part_str (&ready, 4, "fake"));
    CHECK (crm_test_msg_part_str (&ready, 5, "capacity=3"));
    zmq_msg_t *id = &ready.parts[0];

    //  Heartbeats follow, about one an interval
    crm_test_msg_t msg;
    int64_t start = crm_mono_ms ();
    CHECK (s_spin_command (loop, router, &msg, CRM_MDPW_HEARTBEAT, 1000) == 0);
    CHECK (crm_mono_ms () - start <= HEARTBEAT_MS * 2);
    crm_test_msg_close (&msg);

    //  A request reaches the handler; the reply echoes the client address
    const void *data[4] = {"ADDR", "", "Echo", "payload"};
    size_t sizes[4] = {4, 0, 4, 7};
    s_to_worker (router, id, CRM_MDPW_REQUEST, 4, data, sizes);
    CHECK (s_spin_command (loop, router, &msg, CRM_MDPW_REPLY, 1000) == 0);
    CHECK_INT (msg.n, 8);
    CHECK (crm_test_msg_part_str (&msg, 4, "ADDR"));
    CHECK (crm_test_msg_part_str (&msg, 5, ""));
    CHECK (crm_test_msg_part_str (&msg, 6, "Echo"));
    CHECK (crm_test_msg_part_str (&msg, 7, "payload"));
    CHECK (crm_test_msg_part_is (&msg, 0, zmq_msg_data (id), zmq_msg_size (id)));
    crm_test_msg_close (&msg);
    CHECK_INT (handler.calls, 1);
    CHECK_INT (crm_mdp_worker_in_flight (worker), 0);

    //  Malformed messages are dropped, and a frame over ZMQ_MAXMSGSIZE costs
    //  the connection, never the process
    s_to_worker (router, id, 9, 0, NULL, NULL);
    s_to_worker (router, id, CRM_MDPW_REQUEST, 0, NULL, NULL);
    zmq_send (router, zmq_msg_data (id), zmq_msg_size (id), ZMQ_SNDMORE);
    zmq_send (router, "junk", 4, 0);
    char *big = calloc (1, 8192);
    const void *big_data[3] = {"ADDR", "", big};
    size_t big_sizes[3] = {4, 0, 8192};
    s_to_worker (router, id, CRM_MDPW_REQUEST, 3, big_data, big_sizes);
    free (big);
    s_spin (loop, 100);
    CHECK_INT (handler.calls, 1);

    //  A silent broker makes the worker start over: READY on a new connection
    crm_test_msg_close (&ready);
    start = crm_mono_ms ();
    CHECK (s_spin_command (loop, router, &ready, CRM_MDPW_READY, 2000) == 0);
    int64_t silent = crm_mono_ms () - start;
    CHECK (silent >= HEARTBEAT_MS);
    CHECK (silent <= HEARTBEAT_MS * (CRM_MDP_LIVENESS + 3));
    id = &ready.parts[0];

    //  DISCONNECT from the broker: again, at once
    s_to_worker (router, id, CRM_MDPW_DISCONNECT, 0, NULL, NULL);
    start = crm_mono_ms ();
    crm_test_msg_t again;
    CHECK (s_spin_command (loop, router, &again, CRM_MDPW_READY, 1000) == 0);
    CHECK (crm_mono_ms () - start < HEARTBEAT_MS);
    CHECK (!crm_test_msg_part_is (&again, 0, zmq_msg_data (id), zmq_msg_size (id)));
    crm_test_msg_close (&ready);
    id = &again.parts[0];

    //  Held requests count as in flight; stop says DISCONNECT, refuses new
    //  requests itself, and still lets held ones be answered
    handler.hold = true;
    Crm__V1__RequestMeta meta = CRM__V1__REQUEST_META__INIT;
    meta.request_id = (char *) "rid-after-stop";
    zframe_t *meta_frame = crm_proto_pack (&meta.base);
    const void *held_data[5] = {"C1", "", "Echo", zframe_data (meta_frame), ""};
    size_t held_sizes[5] = {2, 0, 4, zframe_size (meta_frame), 0};
    s_to_worker (router, id, CRM_MDPW_REQUEST, 5, held_data, held_sizes);
    s_spin (loop, 50);
    CHECK_INT (crm_mdp_worker_in_flight (worker), 1);
    crm_mdp_worker_stop (worker);
    CHECK (s_spin_command (loop, router, &msg, CRM_MDPW_DISCONNECT, 1000) == 0);
    crm_test_msg_close (&msg);
    held_data[0] = "C2";
    s_to_worker (router, id, CRM_MDPW_REQUEST, 5, held_data, held_sizes);
    CHECK (s_spin_command (loop, router, &msg, CRM_MDPW_REPLY, 1000) == 0);
    CHECK (crm_test_msg_part_str (&msg, 4, "C2"));
    zmsg_t *refusal = zmsg_new ();
    for (int i = 6; i < msg.n; i++)
        zmsg_addmem (refusal, zmq_msg_data (&msg.parts[i]), zmq_msg_size (&msg.parts[i]));
    char rid[64];
    CHECK_INT (s_reply_code (refusal, rid, sizeof rid), 14);
    CHECK_STR (rid, "rid-after-stop");
    zmsg_destroy (&refusal);
    crm_test_msg_close (&msg);
    CHECK_INT (handler.calls, 1 + 1);
    CHECK_INT (crm_mdp_worker_in_flight (worker), 1);
    //  While a request is held the worker keeps heartbeating
    CHECK (s_spin_command (loop, router, &msg, CRM_MDPW_HEARTBEAT, 1000) == 0);
    crm_test_msg_close (&msg);
    crm_mdp_worker_reply (worker, &handler.client[0], &handler.body[0]);
    CHECK (handler.client[0] == NULL && handler.body[0] == NULL);
    CHECK (s_spin_command (loop, router, &msg, CRM_MDPW_REPLY, 1000) == 0);
    CHECK (crm_test_msg_part_str (&msg, 4, "C1"));
    crm_test_msg_close (&msg);
    CHECK_INT (crm_mdp_worker_in_flight (worker), 0);
    //  A stopped worker does not start over when the broker goes quiet
    CHECK (s_spin_command (loop, router, &msg, CRM_MDPW_READY, HEARTBEAT_MS * 5) != 0);
    zframe_destroy (&meta_frame);
    crm_test_msg_close (&again);

    crm_mdp_worker_destroy (&worker);
    crm_mdp_worker_destroy (&worker);
    CHECK (worker == NULL);

    //  Destroying a running worker says DISCONNECT
    worker = crm_mdp_worker_new (loop, endpoint, "plain", 1, s_handler, &handler);
    CHECK (s_spin_command (loop, router, &ready, CRM_MDPW_READY, 1000) == 0);
    CHECK_INT (ready.n, 5); //  Capacity 1: plain MDP, no extra frame
    crm_test_msg_close (&ready);
    crm_mdp_worker_destroy (&worker);
    bool disconnected = false;
    while (!disconnected && crm_test_msg_recv (router, &msg, 1000) == 0) {
        disconnected = s_command (&msg) == CRM_MDPW_DISCONNECT;
        crm_test_msg_close (&msg);
    }
    CHECK (disconnected);

    ev_loop_destroy (loop);
    zmq_close (router);
}

//  --------------------------------------------------------------------------
//  Against the real broker: an echo worker on its own thread and loop

static crm_test_broker_t s_broker;

#define ECHO_DELAYED_MAX 16

typedef struct {
    ev_timer timer;           //  Fires when the answer is due
    crm_mdp_worker_t *worker; //  Worker to answer through
    zframe_t *client;         //  The request's client
    zmsg_t *reply;            //  The answer
} s_delayed_t;

typedef struct {
    crm_test_worker_t base;                //  The worker, its thread and loop
    s_delayed_t delayed[ECHO_DELAYED_MAX]; //  Answers of "Slow" requests
} s_echo_t;

static void
s_on_delayed (struct ev_loop *loop, ev_timer *w, int revents)
{
    (void) loop, (void) revents;
    s_delayed_t *delayed = w->data;
    crm_mdp_worker_reply (delayed->worker, &delayed->client, &delayed->reply);
}

//  Answers OK with the request's id and payload; "Slow" ones 400 ms later
static void
s_echo_request (crm_mdp_worker_t *worker, zframe_t *client, zmsg_t *body, void *arg)
{
    s_echo_t *echo = arg;
    char rid[64] = "";
    zframe_t *method = zmsg_first (body);
    zframe_t *meta_frame = zmsg_next (body);
    zframe_t *payload = zmsg_next (body);
    if (meta_frame) {
        Crm__V1__RequestMeta *meta = crm__v1__request_meta__unpack (NULL, zframe_size (meta_frame),
                                                                    zframe_data (meta_frame));
        if (meta) {
            snprintf (rid, sizeof rid, "%s", meta->request_id);
            crm__v1__request_meta__free_unpacked (meta, NULL);
        }
    }
    zmsg_t *reply = crm_proto_reply_new (0, "", rid, NULL);
    zframe_t *last = zmsg_last (reply);
    zmsg_remove (reply, last);
    zframe_destroy (&last);
    zframe_t *copy = payload ? zframe_dup (payload) : zframe_new_empty ();
    zmsg_append (reply, &copy);
    bool slow = method && zframe_streq (method, "Slow");
    zmsg_destroy (&body);
    if (!slow) {
        crm_mdp_worker_reply (worker, &client, &reply);
        return;
    }
    for (int i = 0; i < ECHO_DELAYED_MAX; i++) {
        s_delayed_t *delayed = &echo->delayed[i];
        if (delayed->client || delayed->reply)
            continue;
        delayed->worker = worker;
        delayed->client = client;
        delayed->reply = reply;
        ev_timer_init (&delayed->timer, s_on_delayed, 0.4, 0.0);
        delayed->timer.data = delayed;
        ev_timer_start (echo->base.loop, &delayed->timer);
        return;
    }
    zframe_destroy (&client);
    zmsg_destroy (&reply);
}

//  Drops the answers still due, on the echo's thread as it stops
static void
s_echo_on_quit (struct ev_loop *loop, void *arg)
{
    s_echo_t *echo = arg;
    for (int i = 0; i < ECHO_DELAYED_MAX; i++) {
        ev_timer_stop (loop, &echo->delayed[i].timer);
        zframe_destroy (&echo->delayed[i].client);
        zmsg_destroy (&echo->delayed[i].reply);
    }
}

static s_echo_t *
s_echo_start (int capacity)
{
    s_echo_t *echo = calloc (1, sizeof *echo);
    crm_test_worker_init (&echo->base, s_broker.endpoint, "echo", capacity, s_echo_request, echo,
                          HEARTBEAT_MS);
    for (int i = 0; i < ECHO_DELAYED_MAX; i++)
        ev_timer_init (&echo->delayed[i].timer, s_on_delayed, 0.0, 0.0);
    crm_test_worker_start (&echo->base, s_echo_on_quit, echo);
    return echo;
}

static void
s_echo_stop (s_echo_t **echo_p)
{
    s_echo_t *echo = *echo_p;
    crm_test_worker_stop (&echo->base);
    free (echo);
    *echo_p = NULL;
}

static void
test_client_and_worker (void)
{
    crm_test_broker_init (&s_broker, false);
    s_broker.config.heartbeat_ms = HEARTBEAT_MS;
    s_broker.config.no_worker_ms = 300;
    if (crm_test_broker_start (&s_broker) != 0)
        return;
    s_echo_t *echo = s_echo_start (4);
    crm_mdp_client_t *client = crm_mdp_client_new (s_broker.endpoint);
    CHECK (client != NULL);
    crm_mdp_client_set_timeout (client, 2000);
    CHECK (crm_mdp_client_socket (client) != NULL);
    CHECK (crm_test_mmi_wait (client, "echo", 2000));

    //  A call and its reply
    zmsg_t *body = s_request ("Echo", "rid-1", "hello");
    zmsg_t *reply = crm_mdp_client_call (client, "echo", &body);
    CHECK (body == NULL);
    char rid[64];
    CHECK_INT (s_reply_code (reply, rid, sizeof rid), 0);
    CHECK_STR (rid, "rid-1");
    zmsg_destroy (&reply);

    //  A call that times out, then one that does not: the late answer to the
    //  first is never taken for the second's
    crm_mdp_client_set_timeout (client, 150);
    body = s_request ("Slow", "rid-slow", "");
    int64_t start = crm_mono_ms ();
    reply = crm_mdp_client_call (client, "echo", &body);
    CHECK (reply == NULL);
    CHECK (crm_mono_ms () - start >= 140);
    crm_mdp_client_set_timeout (client, 2000);
    usleep (400000); //  The slow answer is back by now
    body = s_request ("Echo", "rid-2", "");
    reply = crm_mdp_client_call (client, "echo", &body);
    CHECK_INT (s_reply_code (reply, rid, sizeof rid), 0);
    CHECK_STR (rid, "rid-2");
    zmsg_destroy (&reply);

    //  A reply waiting for another request id is skipped by a call
    body = s_request ("Echo", "rid-other", "");
    CHECK (crm_mdp_client_send (client, "echo", &body) == 0);
    usleep (100000);
    body = s_request ("Echo", "rid-3", "");
    reply = crm_mdp_client_call (client, "echo", &body);
    CHECK_INT (s_reply_code (reply, rid, sizeof rid), 0);
    CHECK_STR (rid, "rid-3");
    zmsg_destroy (&reply);

    //  Asynchronous use: several requests in flight
    for (int i = 0; i < 5; i++) {
        char id[16];
        snprintf (id, sizeof id, "rid-a%d", i);
        body = s_request ("Echo", id, "");
        CHECK (crm_mdp_client_send (client, "echo", &body) == 0);
    }
    int answered = 0;
    for (int i = 0; i < 5; i++) {
        char *service = NULL;
        reply = crm_mdp_client_recv (client, &service, 2000);
        if (s_reply_code (reply, rid, sizeof rid) == 0 && strncmp (rid, "rid-a", 5) == 0)
            answered++;
        CHECK_STR (service, "echo");
        free (service);
        zmsg_destroy (&reply);
    }
    CHECK_INT (answered, 5);
    CHECK (crm_mdp_client_recv (client, NULL, 50) == NULL);

    //  Heartbeats keep an idle worker registered well past the liveness
    usleep (HEARTBEAT_MS * (CRM_MDP_LIVENESS + 4) * 1000);
    CHECK (crm_test_mmi_known (client, "echo"));
    body = s_request ("Echo", "rid-idle", "");
    reply = crm_mdp_client_call (client, "echo", &body);
    CHECK_INT (s_reply_code (reply, NULL, 0), 0);
    zmsg_destroy (&reply);

    //  The broker restarts on the same endpoint: the worker comes back by itself
    crm_test_broker_stop (&s_broker);
    usleep (HEARTBEAT_MS * 1000);
    crm_test_broker_start (&s_broker);
    CHECK (crm_test_mmi_wait (client, "echo", 3000));
    body = s_request ("Echo", "rid-after", "");
    reply = crm_mdp_client_call (client, "echo", &body);
    CHECK_INT (s_reply_code (reply, rid, sizeof rid), 0);
    CHECK_STR (rid, "rid-after");
    zmsg_destroy (&reply);

    //  A request for a service nobody serves: the broker answers UNAVAILABLE
    body = s_request ("Echo", "rid-none", "");
    reply = crm_mdp_client_call (client, "nobody", &body);
    CHECK_INT (s_reply_code (reply, rid, sizeof rid), 14);
    CHECK_STR (rid, "rid-none");
    zmsg_destroy (&reply);

    crm_mdp_client_destroy (&client);
    crm_mdp_client_destroy (&client);
    CHECK (client == NULL);
    s_echo_stop (&echo);
    crm_test_broker_stop (&s_broker);
}

int
main (void)
{
    crm_test_mdp_init ("test_mdp");
    s_ctx = zmq_ctx_new ();
    RUN (test_worker_protocol);
    RUN (test_client_and_worker);
    zmq_ctx_term (s_ctx);
    return TEST_DONE ("test_mdp");
}
