/*  test_broker.c - the broker against raw libzmq clients and workers: routing, capacity, timeouts, MMI, events. */
#include "broker.h"

#include "crm_log.h"
#include "crm_mdp.h"
#include "crm_proto.h"
#include "crm_util.h"
#include "crm_test.h"
#include "crm_test_broker.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

#define HEARTBEAT_MS 200
#define LIVENESS     3
#define NO_WORKER_MS 300
#define QUEUE_MAX    5

static void *s_ctx;
static crm_test_broker_t s_broker;

static void
s_broker_start (void)
{
    crm_test_broker_init (&s_broker, true);
    s_broker.config.heartbeat_ms = HEARTBEAT_MS;
    s_broker.config.liveness = LIVENESS;
    s_broker.config.no_worker_ms = NO_WORKER_MS;
    s_broker.config.queue_max = QUEUE_MAX;
    if (crm_test_broker_start (&s_broker) != 0)
        exit (EXIT_FAILURE);
    CHECK (strstr (s_broker.endpoint, "tcp://127.0.0.1:") == s_broker.endpoint);
    CHECK (strcmp (s_broker.endpoint, "tcp://127.0.0.1:*") != 0);
}

static void
s_broker_stop (void)
{
    crm_test_broker_stop (&s_broker);
    CHECK (s_broker.broker == NULL);
}

//  --------------------------------------------------------------------------
//  Raw sockets and frames

static void *
s_socket (int type, const char *endpoint)
{
    void *socket = zmq_socket (s_ctx, type);
    int linger = 0;
    zmq_setsockopt (socket, ZMQ_LINGER, &linger, sizeof linger);
    int rc = zmq_connect (socket, endpoint);
    if (rc != 0)
        CHECK (rc == 0);
    return socket;
}

//  Sends frames given as (data, size) pairs, n pairs
static void
s_send_raw (void *socket, int n, const void *const *data, const size_t *sizes)
{
    for (int i = 0; i < n; i++) {
        int rc = zmq_send (socket, data[i], sizes[i], i + 1 < n ? ZMQ_SNDMORE : 0);
        if (rc < 0) //  Counted only when it fails: heartbeats vary with timing
            CHECK (rc >= 0);
    }
}

//  Sends n string frames
static void
s_send (void *socket, int n, ...)
{
    const void *data[CRM_TEST_FRAMES_MAX];
    size_t sizes[CRM_TEST_FRAMES_MAX];
    va_list args;
    va_start (args, n);
    for (int i = 0; i < n; i++) {
        data[i] = va_arg (args, const char *);
        sizes[i] = strlen (data[i]);
    }
    va_end (args);
    s_send_raw (socket, n, data, sizes);
}

static int
s_command (crm_test_msg_t *msg)
{
    if (msg->n < 3 || zmq_msg_size (&msg->parts[2]) != 1)
        return -1;
    return *(const uint8_t *) zmq_msg_data (&msg->parts[2]);
}

//  A RequestMeta frame carrying request_id
static zframe_t *
s_meta (const char *request_id)
{
    Crm__V1__RequestMeta meta = CRM__V1__REQUEST_META__INIT;
    meta.request_id = (char *) (uintptr_t) request_id;
    meta.branch = (char *) "north";
    meta.deadline_unix_ms = 42;
    return crm_proto_pack (&meta.base);
}

//  Sends a suite-shaped request [""][MDPC01][service][method][meta][payload]
//  from a DEALER client (or, with req, from a REQ socket)
static void
s_client_request (void *client, bool req, const char *service, const char *request_id,
                  const char *payload)
{
    zframe_t *meta = s_meta (request_id);
    const void *data[6] = {"", CRM_MDPC, service, "Echo", zframe_data (meta), payload};
    size_t sizes[6] = {0, 6, strlen (service), 4, zframe_size (meta), strlen (payload)};
    if (req)
        s_send_raw (client, 5, data + 1, sizes + 1);
    else
        s_send_raw (client, 6, data, sizes);
    zframe_destroy (&meta);
}

//  Receives a client reply and checks the envelope; reply bodies start at
//  index 3 (DEALER) or 2 (REQ). Returns the body's first index or -1.
static int
s_client_reply (void *client, bool req, const char *service, crm_test_msg_t *msg, int timeout_ms)
{
    if (crm_test_msg_recv (client, msg, timeout_ms) != 0)
        return -1;
    int base = req ? 0 : 1;
    if (!req && !crm_test_msg_part_str (msg, 0, ""))
        return -1;
    if (!crm_test_msg_part_str (msg, base, CRM_MDPC) ||
        !crm_test_msg_part_str (msg, base + 1, service))
        return -1;
    return base + 2;
}

//  Parses a broker-made or worker-made Status frame; -1 when absent
static int
s_status_code (crm_test_msg_t *msg, int index, char *request_id, size_t size)
{
    if (index < 0 || index >= msg->n)
        return -1;
    Crm__V1__Status *status = crm__v1__status__unpack (NULL, zmq_msg_size (&msg->parts[index]),
                                                       zmq_msg_data (&msg->parts[index]));
    if (!status)
        return -1;
    int code = status->code;
    if (request_id)
        snprintf (request_id, size, "%s", status->request_id ? status->request_id : "");
    crm__v1__status__free_unpacked (status, NULL);
    return code;
}

//  --------------------------------------------------------------------------
//  A raw worker

static void *
s_worker_new (const char *service, const char *capacity)
{
    void *worker = s_socket (ZMQ_DEALER, s_broker.endpoint);
    if (capacity)
        s_send (worker, 5, "", CRM_MDPW, "\x01", service, capacity);
    else
        s_send (worker, 4, "", CRM_MDPW, "\x01", service);
    return worker;
}

static void
s_worker_heartbeat (void *worker)
{
    s_send (worker, 3, "", CRM_MDPW, "\x04");
}

//  Waits for a REQUEST, heartbeating meanwhile; 0 or -1 on timeout
static int
s_worker_request (void *worker, crm_test_msg_t *msg, int timeout_ms)
{
    int64_t deadline = crm_mono_ms () + timeout_ms;
    while (crm_mono_ms () < deadline) {
        s_worker_heartbeat (worker);
        if (crm_test_msg_recv (worker, msg, 50) != 0)
            continue;
        if (s_command (msg) == CRM_MDPW_REQUEST && msg->n >= 5 &&
            crm_test_msg_part_str (msg, 0, "") && crm_test_msg_part_str (msg, 1, CRM_MDPW) &&
            crm_test_msg_part_str (msg, 4, ""))
            return 0;
        crm_test_msg_close (msg);
    }
    return -1;
}

//  Echoes a request's body back as its reply; consumes req
static void
s_worker_echo (void *worker, crm_test_msg_t *req)
{
    zmq_send (worker, "", 0, ZMQ_SNDMORE);
    zmq_send (worker, CRM_MDPW, 6, ZMQ_SNDMORE);
    zmq_send (worker, "\x03", 1, ZMQ_SNDMORE);
    for (int i = 3; i < req->n; i++)
        zmq_msg_send (&req->parts[i], worker, i + 1 < req->n ? ZMQ_SNDMORE : 0);
    crm_test_msg_close (req);
}

//  Answers a request with [Status OK with its request id][payload]
static void
s_worker_answer (void *worker, crm_test_msg_t *req)
{
    char rid[128] = "";
    if (req->n >= 7) {
        Crm__V1__RequestMeta *meta = crm__v1__request_meta__unpack (
            NULL, zmq_msg_size (&req->parts[6]), zmq_msg_data (&req->parts[6]));
        if (meta) {
            snprintf (rid, sizeof rid, "%s", meta->request_id);
            crm__v1__request_meta__free_unpacked (meta, NULL);
        }
    }
    zmsg_t *reply = crm_proto_reply_new (0, "", rid, NULL);
    zframe_t *status = zmsg_first (reply);
    zmq_send (worker, "", 0, ZMQ_SNDMORE);
    zmq_send (worker, CRM_MDPW, 6, ZMQ_SNDMORE);
    zmq_send (worker, "\x03", 1, ZMQ_SNDMORE);
    zmq_msg_send (&req->parts[3], worker, ZMQ_SNDMORE);
    zmq_send (worker, "", 0, ZMQ_SNDMORE);
    zmq_send (worker, zframe_data (status), zframe_size (status), ZMQ_SNDMORE);
    if (req->n >= 8)
        zmq_msg_send (&req->parts[7], worker, 0);
    else
        zmq_send (worker, "", 0, 0);
    zmsg_destroy (&reply);
    crm_test_msg_close (req);
}

static void
s_worker_close (void *worker)
{
    s_send (worker, 3, "", CRM_MDPW, "\x05");
    int linger = 200; //  Let DISCONNECT leave
    zmq_setsockopt (worker, ZMQ_LINGER, &linger, sizeof linger);
    zmq_close (worker);
}

//  Asks mmi.service about service; returns the reply code or NULL
static const char *
s_mmi (const char *mmi, const char *service)
{
    static char code[8];
    void *client = s_socket (ZMQ_REQ, s_broker.endpoint);
    if (service)
        s_send (client, 3, CRM_MDPC, mmi, service);
    else
        s_send (client, 2, CRM_MDPC, mmi);
    crm_test_msg_t msg;
    int body = s_client_reply (client, true, mmi, &msg, 2000);
    const char *result = NULL;
    if (body >= 0 && msg.n == body + 1) {
        snprintf (code, sizeof code, "%.*s", (int) zmq_msg_size (&msg.parts[body]),
                  (const char *) zmq_msg_data (&msg.parts[body]));
        result = code;
    }
    crm_test_msg_close (&msg);
    zmq_close (client);
    return result;
}

//  Waits until mmi.service says service has a worker (READY is asynchronous)
static bool
s_wait_service (const char *service, const char *want)
{
    for (int i = 0; i < 100; i++) {
        const char *code = s_mmi ("mmi.service", service);
        if (code && strcmp (code, want) == 0)
            return true;
        usleep (10000);
    }
    return false;
}

//  --------------------------------------------------------------------------
//  Tests

static void
test_request_reply (void)
{
    void *worker = s_worker_new ("echo", NULL);
    CHECK (s_wait_service ("echo", "200"));

    //  REQ client, as in the RFC
    void *req = s_socket (ZMQ_REQ, s_broker.endpoint);
    s_client_request (req, true, "echo", "rid-req-1", "hello");
    crm_test_msg_t msg;
    CHECK (s_worker_request (worker, &msg, 2000) == 0);
    CHECK_INT (msg.n, 8);
    CHECK_INT (zmq_msg_size (&msg.parts[3]), 8); //  The client address
    CHECK (crm_test_msg_part_str (&msg, 5, "Echo"));
    CHECK (crm_test_msg_part_str (&msg, 7, "hello"));
    s_worker_echo (worker, &msg);
    int body = s_client_reply (req, true, "echo", &msg, 2000);
    CHECK_INT (body, 2);
    CHECK_INT (msg.n, 5);
    CHECK (crm_test_msg_part_str (&msg, 2, "Echo"));
    CHECK (crm_test_msg_part_str (&msg, 4, "hello"));
    crm_test_msg_close (&msg);

    //  DEALER client with its own empty delimiter, two requests outstanding
    void *dealer = s_socket (ZMQ_DEALER, s_broker.endpoint);
    s_client_request (dealer, false, "echo", "rid-d-1", "one");
    s_client_request (dealer, false, "echo", "rid-d-2", "two");
    for (int i = 0; i < 2; i++) {
        CHECK (s_worker_request (worker, &msg, 2000) == 0);
        s_worker_answer (worker, &msg);
    }
    char rid[128];
    body = s_client_reply (dealer, false, "echo", &msg, 2000);
    CHECK_INT (body, 3);
    CHECK_INT (s_status_code (&msg, body, rid, sizeof rid), 0);
    CHECK_STR (rid, "rid-d-1");
    CHECK (crm_test_msg_part_str (&msg, body + 1, "one"));
    crm_test_msg_close (&msg);
    body = s_client_reply (dealer, false, "echo", &msg, 2000);
    CHECK_INT (s_status_code (&msg, body, rid, sizeof rid), 0);
    CHECK_STR (rid, "rid-d-2");
    crm_test_msg_close (&msg);

    //  A request with no body at all still goes through
    s_send (dealer, 3, "", CRM_MDPC, "echo");
    CHECK (s_worker_request (worker, &msg, 2000) == 0);
    CHECK_INT (msg.n, 5);
    s_worker_echo (worker, &msg);
    body = s_client_reply (dealer, false, "echo", &msg, 2000);
    CHECK_INT (body, 3);
    CHECK_INT (msg.n, 3);
    crm_test_msg_close (&msg);

    zmq_close (req);
    zmq_close (dealer);
    s_worker_close (worker);
    CHECK (s_wait_service ("echo", "404"));
}

static void
test_load_balancing (void)
{
    void *a = s_worker_new ("balance", NULL);
    void *b = s_worker_new ("balance", NULL);
    CHECK (s_wait_service ("balance", "200"));
    usleep (50000); //  Both READY in
    void *client = s_socket (ZMQ_DEALER, s_broker.endpoint);

    //  Two requests at once: one each, as each holds only one
    s_client_request (client, false, "balance", "lb-1", "x");
    s_client_request (client, false, "balance", "lb-2", "y");
    crm_test_msg_t ma, mb;
    CHECK (s_worker_request (a, &ma, 2000) == 0);
    CHECK (s_worker_request (b, &mb, 2000) == 0);
    s_worker_answer (a, &ma);
    s_worker_answer (b, &mb);
    crm_test_msg_t msg;
    for (int i = 0; i < 2; i++) {
        CHECK (s_client_reply (client, false, "balance", &msg, 2000) == 3);
        crm_test_msg_close (&msg);
    }

    //  One at a time: taken in turns, least recently used first
    int served_a = 0, served_b = 0;
    for (int i = 0; i < 10; i++) {
        s_client_request (client, false, "balance", "lb-n", "z");
        zmq_pollitem_t items[2] = {{a, 0, ZMQ_POLLIN, 0}, {b, 0, ZMQ_POLLIN, 0}};
        s_worker_heartbeat (a);
        s_worker_heartbeat (b);
        int got = 0;
        while (!got && zmq_poll (items, 2, 2000) > 0) {
            void *w = items[0].revents ? a : b;
            if (crm_test_msg_recv (w, &msg, 0) == 0 && s_command (&msg) == CRM_MDPW_REQUEST) {
                got = 1;
                w == a ? served_a++ : served_b++;
                s_worker_answer (w, &msg);
            }
            else
                crm_test_msg_close (&msg);
        }
        CHECK (got);
        CHECK (s_client_reply (client, false, "balance", &msg, 2000) == 3);
        crm_test_msg_close (&msg);
    }
    CHECK_INT (served_a, 5);
    CHECK_INT (served_b, 5);
    zmq_close (client);
    s_worker_close (a);
    s_worker_close (b);
}

//  Counts requests a worker receives within ms, heartbeating; keeps them
static int
s_collect (void *worker, crm_test_msg_t *held, int max, int ms)
{
    int n = 0;
    int64_t deadline = crm_mono_ms () + ms;
    while (n < max && crm_mono_ms () < deadline) {
        if (s_worker_request (worker, &held[n], (int) (deadline - crm_mono_ms ())) == 0)
            n++;
    }
    return n;
}

//  Steps broker until worker a or b holds a REQUEST; 0 with it in msg and
//  the worker in which, or -1
static int
s_step_until_request (broker_t *broker, void *a, void *b, crm_test_msg_t *msg, void **which)
{
    for (int i = 0; i < 400; i++) {
        broker_step (broker, 5);
        void *workers[] = {a, b};
        for (int k = 0; k < 2; k++) {
            while (crm_test_msg_recv (workers[k], msg, 0) == 0) {
                if (s_command (msg) == CRM_MDPW_REQUEST) {
                    *which = workers[k];
                    return 0;
                }
                crm_test_msg_close (msg);
            }
        }
    }
    return -1;
}

//  Steps broker until client holds a reply; 0, or -1
static int
s_step_until_reply (broker_t *broker, void *client)
{
    crm_test_msg_t msg;
    for (int i = 0; i < 400; i++) {
        broker_step (broker, 5);
        if (crm_test_msg_recv (client, &msg, 0) == 0) {
            crm_test_msg_close (&msg);
            return 0;
        }
    }
    return -1;
}

//  Requests read in one burst go to one worker while it has room (so a
//  service instance gets them together); requests one at a time go round the
//  workers in turn. The broker is stepped here, so what one pass reads is
//  known: everything sent before it.
static void
test_bursts_stay_together (void)
{
    broker_config_t config;
    broker_config_defaults (&config);
    config.endpoint = "tcp://127.0.0.1:*";
    config.events_in = config.events_out = NULL;
    broker_t *broker = broker_new (&config);
    CHECK (broker != NULL);
    if (!broker)
        return;
    void *a = s_socket (ZMQ_DEALER, broker_endpoint (broker));
    void *b = s_socket (ZMQ_DEALER, broker_endpoint (broker));
    s_send (a, 5, "", CRM_MDPW, "\x01", "burst", "capacity=8");
    s_send (b, 5, "", CRM_MDPW, "\x01", "burst", "capacity=8");
    void *client = s_socket (ZMQ_DEALER, broker_endpoint (broker));
    for (int i = 0; i < 40; i++)
        broker_step (broker, 5);

    //  Six sent together, read in one pass: all six to one worker
    for (int i = 0; i < 6; i++)
        s_client_request (client, false, "burst", "together", "p");
    usleep (200000); //  All six wait in the broker's socket
    broker_step (broker, 100);
    crm_test_msg_t held[6];
    void *which[6];
    int got = 0;
    while (got < 6 && s_step_until_request (broker, a, b, &held[got], &which[got]) == 0)
        got++;
    CHECK_INT (got, 6);
    int to_first = 0;
    for (int i = 0; i < got; i++)
        to_first += which[i] == which[0];
    CHECK_INT (to_first, 6);
    for (int i = 0; i < got; i++) {
        s_worker_answer (which[i], &held[i]);
        CHECK_INT (s_step_until_reply (broker, client), 0);
    }

    //  One at a time: each to the other worker
    void *last = NULL;
    int turns = 0;
    for (int i = 0; i < 6; i++) {
        s_client_request (client, false, "burst", "alone", "p");
        crm_test_msg_t msg;
        void *worker = NULL;
        CHECK_INT (s_step_until_request (broker, a, b, &msg, &worker), 0);
        if (!worker)
            break;
        turns += worker != last;
        last = worker;
        s_worker_answer (worker, &msg);
        CHECK_INT (s_step_until_reply (broker, client), 0);
    }
    CHECK_INT (turns, 6);
    zmq_close (client);
    zmq_close (a);
    zmq_close (b);
    broker_destroy (&broker);
}

//  With a worker endpoint of its own, the broker hears workers only there:
//  whoever reaches the client endpoint can send requests but not serve them
static void
test_worker_endpoint (void)
{
    crm_test_broker_t guarded;
    crm_test_broker_init (&guarded, false);
    guarded.config.worker_endpoint = "tcp://127.0.0.1:*";
    if (crm_test_broker_start (&guarded) != 0)
        return;
    char workers_at[256];
    snprintf (workers_at, sizeof workers_at, "%s", broker_worker_endpoint (guarded.broker));
    CHECK (strcmp (workers_at, guarded.endpoint) != 0);
    crm_mdp_client_t *client = crm_mdp_client_new (guarded.endpoint);

    //  A worker on the client endpoint is not heard: its service stays unknown
    void *intruder = s_socket (ZMQ_DEALER, guarded.endpoint);
    s_send (intruder, 5, "", CRM_MDPW, "\x01", "guarded", "capacity=4");
    usleep (200000);
    CHECK (!crm_test_mmi_known (client, "guarded"));

    //  On the worker endpoint it is, and requests to the client endpoint reach it
    void *worker = s_socket (ZMQ_DEALER, workers_at);
    s_send (worker, 5, "", CRM_MDPW, "\x01", "guarded", "capacity=4");
    CHECK (crm_test_mmi_wait (client, "guarded", 2000));
    void *dealer = s_socket (ZMQ_DEALER, guarded.endpoint);
    s_client_request (dealer, false, "guarded", "g-1", "p");
    crm_test_msg_t msg;
    CHECK (s_worker_request (worker, &msg, 2000) == 0);
    s_worker_answer (worker, &msg);
    CHECK (s_client_reply (dealer, false, "guarded", &msg, 2000) == 3);
    crm_test_msg_close (&msg);
    CHECK (crm_test_msg_recv (intruder, &msg, 100) != 0);

    //  A client request on the worker endpoint is dropped, not served
    void *sneaky = s_socket (ZMQ_DEALER, workers_at);
    s_client_request (sneaky, false, "guarded", "g-2", "p");
    CHECK (s_worker_request (worker, &msg, 300) != 0);
    CHECK (crm_test_msg_recv (sneaky, &msg, 100) != 0);

    zmq_close (sneaky);
    zmq_close (dealer);
    zmq_close (worker);
    zmq_close (intruder);
    crm_mdp_client_destroy (&client);
    crm_test_broker_stop (&guarded);
}

static void
test_capacity (void)
{
    void *worker = s_worker_new ("cap3", "capacity=3");
    CHECK (s_wait_service ("cap3", "200"));
    void *client = s_socket (ZMQ_DEALER, s_broker.endpoint);
    for (int i = 0; i < 4; i++)
        s_client_request (client, false, "cap3", "cap", "p");
    crm_test_msg_t held[4];
    //  Three arrive before any reply, the fourth waits in the broker
    CHECK_INT (s_collect (worker, held, 4, 400), 3);
    s_worker_answer (worker, &held[0]);
    CHECK_INT (s_collect (worker, held + 3, 1, 2000), 1);
    for (int i = 1; i < 4; i++)
        s_worker_answer (worker, &held[i]);
    crm_test_msg_t msg;
    for (int i = 0; i < 4; i++) {
        CHECK (s_client_reply (client, false, "cap3", &msg, 2000) == 3);
        crm_test_msg_close (&msg);
    }
    s_worker_close (worker);

    //  A plain MDP worker (no capacity frame) holds one request at a time
    worker = s_worker_new ("cap1", NULL);
    CHECK (s_wait_service ("cap1", "200"));
    for (int i = 0; i < 2; i++)
        s_client_request (client, false, "cap1", "cap", "p");
    CHECK_INT (s_collect (worker, held, 2, 300), 1);
    s_worker_answer (worker, &held[0]);
    CHECK_INT (s_collect (worker, held, 1, 2000), 1);
    s_worker_answer (worker, &held[0]);
    for (int i = 0; i < 2; i++) {
        CHECK (s_client_reply (client, false, "cap1", &msg, 2000) == 3);
        crm_test_msg_close (&msg);
    }
    s_worker_close (worker);

    //  An unreadable capacity frame means capacity 1, not a refusal
    worker = s_worker_new ("capbad", "capacity=lots");
    CHECK (s_wait_service ("capbad", "200"));
    for (int i = 0; i < 2; i++)
        s_client_request (client, false, "capbad", "cap", "p");
    CHECK_INT (s_collect (worker, held, 2, 300), 1);
    crm_test_msg_close (&held[0]);
    s_worker_close (worker);
    //  The closed worker's request, and the queued one, are handed back
    for (int i = 0; i < 2; i++) {
        int body = s_client_reply (client, false, "capbad", &msg, 3000);
        CHECK_INT (s_status_code (&msg, body, NULL, 0), 14);
        crm_test_msg_close (&msg);
    }
    zmq_close (client);
}

static void
test_no_worker (void)
{
    void *client = s_socket (ZMQ_DEALER, s_broker.endpoint);
    int64_t start = crm_mono_ms ();
    s_client_request (client, false, "nobody", "rid-none-1", "p");
    crm_test_msg_t msg;
    char rid[128];
    int body = s_client_reply (client, false, "nobody", &msg, 3000);
    int64_t elapsed = crm_mono_ms () - start;
    CHECK_INT (body, 3);
    CHECK_INT (msg.n, 5);
    CHECK_INT (s_status_code (&msg, body, rid, sizeof rid), 14);
    CHECK_STR (rid, "rid-none-1");
    CHECK_INT (zmq_msg_size (&msg.parts[4]), 0);
    CHECK (elapsed >= NO_WORKER_MS - 20);
    CHECK (elapsed < NO_WORKER_MS + 1000);
    crm_test_msg_close (&msg);

    //  A queued request goes to a worker that arrives in time
    s_client_request (client, false, "late", "rid-late", "p");
    usleep (100000);
    void *worker = s_worker_new ("late", NULL);
    CHECK (s_worker_request (worker, &msg, 2000) == 0);
    s_worker_answer (worker, &msg);
    body = s_client_reply (client, false, "late", &msg, 2000);
    CHECK_INT (s_status_code (&msg, body, rid, sizeof rid), 0);
    CHECK_STR (rid, "rid-late");
    crm_test_msg_close (&msg);
    s_worker_close (worker);

    //  Over the queue bound: RESOURCE_EXHAUSTED at once, then the rest time out
    start = crm_mono_ms ();
    for (int i = 0; i < QUEUE_MAX + 1; i++) {
        char id[32];
        snprintf (id, sizeof id, "rid-q-%d", i);
        s_client_request (client, false, "crowded", id, "p");
    }
    body = s_client_reply (client, false, "crowded", &msg, 2000);
    CHECK (crm_mono_ms () - start < NO_WORKER_MS);
    CHECK_INT (s_status_code (&msg, body, rid, sizeof rid), 8);
    CHECK_STR (rid, "rid-q-5");
    crm_test_msg_close (&msg);
    for (int i = 0; i < QUEUE_MAX; i++) {
        body = s_client_reply (client, false, "crowded", &msg, 2000);
        CHECK_INT (s_status_code (&msg, body, NULL, 0), 14);
        crm_test_msg_close (&msg);
    }
    zmq_close (client);
}

static void
test_dead_worker (void)
{
    //  A worker that stops heartbeating is dropped; its client hears UNAVAILABLE
    void *worker = s_worker_new ("fragile", NULL);
    CHECK (s_wait_service ("fragile", "200"));
    void *client = s_socket (ZMQ_DEALER, s_broker.endpoint);
    s_client_request (client, false, "fragile", "rid-dead", "p");
    crm_test_msg_t msg;
    CHECK (s_worker_request (worker, &msg, 2000) == 0);
    crm_test_msg_close (&msg);
    int64_t start = crm_mono_ms ();
    char rid[128];
    int body = s_client_reply (client, false, "fragile", &msg, 3000);
    int64_t elapsed = crm_mono_ms () - start;
    CHECK_INT (s_status_code (&msg, body, rid, sizeof rid), 14);
    CHECK_STR (rid, "rid-dead");
    CHECK (elapsed >= HEARTBEAT_MS * (LIVENESS - 1));
    CHECK (elapsed < HEARTBEAT_MS * (LIVENESS + 3));
    crm_test_msg_close (&msg);
    CHECK_STR (s_mmi ("mmi.service", "fragile"), "404");
    //  It was told DISCONNECT (after heartbeats)
    bool disconnected = false;
    while (crm_test_msg_recv (worker, &msg, 200) == 0) {
        if (s_command (&msg) == CRM_MDPW_DISCONNECT)
            disconnected = true;
        crm_test_msg_close (&msg);
    }
    CHECK (disconnected);
    //  Its late reply is dropped; its heartbeat now earns a DISCONNECT
    s_worker_heartbeat (worker);
    CHECK (crm_test_msg_recv (worker, &msg, 1000) == 0);
    CHECK_INT (s_command (&msg), CRM_MDPW_DISCONNECT);
    crm_test_msg_close (&msg);
    zmq_close (worker);

    //  A worker whose connection closes is noticed at the next heartbeat
    worker = s_worker_new ("closing", NULL);
    CHECK (s_wait_service ("closing", "200"));
    s_client_request (client, false, "closing", "rid-closed", "p");
    CHECK (s_worker_request (worker, &msg, 2000) == 0);
    crm_test_msg_close (&msg);
    zmq_close (worker);
    start = crm_mono_ms ();
    body = s_client_reply (client, false, "closing", &msg, 3000);
    CHECK_INT (s_status_code (&msg, body, rid, sizeof rid), 14);
    CHECK_STR (rid, "rid-closed");
    CHECK (crm_mono_ms () - start < HEARTBEAT_MS * 2);
    crm_test_msg_close (&msg);

    //  A worker that says DISCONNECT with a request in flight may still answer it
    worker = s_worker_new ("leaving", NULL);
    CHECK (s_wait_service ("leaving", "200"));
    s_client_request (client, false, "leaving", "rid-leave", "p");
    CHECK (s_worker_request (worker, &msg, 2000) == 0);
    s_send (worker, 3, "", CRM_MDPW, "\x05");
    CHECK (s_wait_service ("leaving", "404"));
    s_worker_answer (worker, &msg);
    body = s_client_reply (client, false, "leaving", &msg, 2000);
    CHECK_INT (s_status_code (&msg, body, rid, sizeof rid), 0);
    CHECK_STR (rid, "rid-leave");
    crm_test_msg_close (&msg);
    zmq_close (worker);
    zmq_close (client);
}

static void
test_mmi (void)
{
    void *worker = s_worker_new ("known", NULL);
    CHECK (s_wait_service ("known", "200"));
    CHECK_STR (s_mmi ("mmi.service", "known"), "200");
    CHECK_STR (s_mmi ("mmi.service", "unknown"), "404");
    CHECK_STR (s_mmi ("mmi.service", NULL), "404");
    CHECK_STR (s_mmi ("mmi.echo", "known"), "501");
    CHECK_STR (s_mmi ("mmi.x", NULL), "501");
    s_worker_close (worker);
    CHECK (s_wait_service ("known", "404"));
}

static void
test_malformed (void)
{
    FILE *log = tmpfile ();
    crm_log_set_stream (log);
    crm_log_init (NULL, NULL, "warn", NULL);
    void *peer = s_socket (ZMQ_DEALER, s_broker.endpoint);
    s_send (peer, 1, "junk");
    s_send (peer, 2, "", "XYZ01");
    s_send (peer, 2, "", CRM_MDPC);
    s_send (peer, 2, "", CRM_MDPW);
    s_send (peer, 3, "", CRM_MDPW, "\x09");
    s_send (peer, 3, "", CRM_MDPW, "\x02\x02");
    s_send (peer, 3, "", CRM_MDPW, "\x01");
    s_send (peer, 4, "", CRM_MDPW, "\x01", "mmi.service");
    //  More frames than the broker takes
    const void *data[CRM_TEST_FRAMES_MAX];
    size_t sizes[CRM_TEST_FRAMES_MAX];
    data[0] = "";
    sizes[0] = 0;
    data[1] = CRM_MDPC;
    sizes[1] = 6;
    for (int i = 2; i < 70; i++) {
        data[i] = "f";
        sizes[i] = 1;
    }
    s_send_raw (peer, 70, data, sizes);
    //  A client naming no usable service is answered INVALID_ARGUMENT
    s_send (peer, 4, "", CRM_MDPC, "", "body");
    crm_test_msg_t msg;
    int body = s_client_reply (peer, false, "", &msg, 2000);
    CHECK_INT (s_status_code (&msg, body, NULL, 0), 3);
    crm_test_msg_close (&msg);
    //  A REPLY or HEARTBEAT from a stranger earns a DISCONNECT
    s_send (peer, 6, "", CRM_MDPW, "\x03", "12345678", "", "x");
    CHECK (crm_test_msg_recv (peer, &msg, 2000) == 0);
    CHECK_INT (s_command (&msg), CRM_MDPW_DISCONNECT);
    crm_test_msg_close (&msg);

    //  A registered worker sending a bad REPLY is not dropped for it
    void *worker = s_worker_new ("sturdy", NULL);
    CHECK (s_wait_service ("sturdy", "200"));
    s_send (worker, 6, "", CRM_MDPW, "\x03", "12345678", "", "x");
    s_send (worker, 4, "", CRM_MDPW, "\x03", "short");
    s_send (worker, 3, "", CRM_MDPW, "\x07");
    void *client = s_socket (ZMQ_DEALER, s_broker.endpoint);
    s_client_request (client, false, "sturdy", "rid-sturdy", "p");
    CHECK (s_worker_request (worker, &msg, 2000) == 0);
    s_worker_answer (worker, &msg);
    char rid[128];
    body = s_client_reply (client, false, "sturdy", &msg, 2000);
    CHECK_INT (s_status_code (&msg, body, rid, sizeof rid), 0);
    CHECK_STR (rid, "rid-sturdy");
    crm_test_msg_close (&msg);

    //  A frame over ZMQ_MAXMSGSIZE drops that connection only
    size_t big = CRM_MAX_MESSAGE_BYTES + 70000;
    char *huge = calloc (1, big);
    const void *hdata[4] = {"", CRM_MDPC, "sturdy", huge};
    size_t hsizes[4] = {0, 6, 6, big};
    void *greedy = s_socket (ZMQ_DEALER, s_broker.endpoint);
    s_send_raw (greedy, 4, hdata, hsizes);
    free (huge);
    CHECK (crm_test_msg_recv (greedy, &msg, 300) != 0);
    zmq_close (greedy);

    //  A frame just over the limit, within the socket's margin, goes no further
    huge = calloc (1, CRM_MAX_MESSAGE_BYTES + 1);
    hdata[3] = huge;
    hsizes[3] = CRM_MAX_MESSAGE_BYTES + 1;
    greedy = s_socket (ZMQ_DEALER, s_broker.endpoint);
    s_send_raw (greedy, 4, hdata, hsizes);
    free (huge);
    CHECK (crm_test_msg_recv (greedy, &msg, 300) != 0);
    CHECK (s_worker_request (worker, &msg, 100) != 0);
    zmq_close (greedy);

    //  Still answering
    CHECK_STR (s_mmi ("mmi.service", "sturdy"), "200");
    s_worker_close (worker);
    zmq_close (client);
    zmq_close (peer);

    crm_log_set_stream (stderr);
    const char *level = getenv ("CRM_LOG_LEVEL");
    crm_log_init (NULL, NULL, level ? level : "error", NULL);
    char *text = crm_test_file_text (log);
    fclose (log);
    CHECK (strstr (text, "dropped a message without an empty delimiter") != NULL);
    CHECK (strstr (text, "unknown protocol header") != NULL);
    CHECK (strstr (text, "more than 64 frames") != NULL);
    CHECK (strstr (text, "unknown command 0x09") != NULL);
    CHECK (strstr (text, "READY without a valid service name") != NULL);
    CHECK (strstr (text, "reserved service") != NULL);
    CHECK (strstr (text, "over 1048576") != NULL);
    free (text);
}

static void
test_events (void)
{
    //  The publisher is an XPUB so it can see subscriptions arrive upstream
    void *publisher = s_socket (ZMQ_XPUB, broker_events_in (s_broker.broker));
    void *subscriber = s_socket (ZMQ_SUB, broker_events_out (s_broker.broker));
    zmq_setsockopt (subscriber, ZMQ_SUBSCRIBE, "orders.", 7);
    crm_test_msg_t msg;
    CHECK (crm_test_msg_recv (publisher, &msg, 2000) == 0);
    CHECK_INT (msg.n, 1);
    CHECK (crm_test_msg_part_str (&msg, 0, "\x01orders."));
    crm_test_msg_close (&msg);
    s_send (publisher, 2, "contacts.ContactCreated", "c");
    s_send (publisher, 2, "orders.OrderPlaced", "o");
    CHECK (crm_test_msg_recv (subscriber, &msg, 2000) == 0);
    CHECK_INT (msg.n, 2);
    CHECK (crm_test_msg_part_str (&msg, 0, "orders.OrderPlaced"));
    CHECK (crm_test_msg_part_str (&msg, 1, "o"));
    crm_test_msg_close (&msg);
    CHECK (crm_test_msg_recv (subscriber, &msg, 100) != 0);
    zmq_close (subscriber);
    zmq_close (publisher);
}

static void
test_shutdown (void)
{
    //  What the broker holds when it stops is handed back
    void *client = s_socket (ZMQ_DEALER, s_broker.endpoint);
    void *worker = s_worker_new ("held", NULL);
    CHECK (s_wait_service ("held", "200"));
    s_client_request (client, false, "held", "rid-held", "p");
    s_client_request (client, false, "held", "rid-queued", "p");
    crm_test_msg_t msg;
    CHECK (s_worker_request (worker, &msg, 2000) == 0);
    crm_test_msg_close (&msg);
    usleep (50000);
    s_broker_stop ();
    int unavailable = 0;
    for (int i = 0; i < 2; i++) {
        int body = s_client_reply (client, false, "held", &msg, 2000);
        if (s_status_code (&msg, body, NULL, 0) == 14)
            unavailable++;
        crm_test_msg_close (&msg);
    }
    CHECK_INT (unavailable, 2);
    bool disconnected = false;
    while (crm_test_msg_recv (worker, &msg, 200) == 0) {
        if (s_command (&msg) == CRM_MDPW_DISCONNECT)
            disconnected = true;
        crm_test_msg_close (&msg);
    }
    CHECK (disconnected);
    zmq_close (worker);
    zmq_close (client);
}

int
main (void)
{
    crm_test_mdp_init ("test_broker");
    s_ctx = zmq_ctx_new ();
    s_broker_start ();
    RUN (test_request_reply);
    RUN (test_load_balancing);
    RUN (test_bursts_stay_together);
    RUN (test_worker_endpoint);
    RUN (test_capacity);
    RUN (test_no_worker);
    RUN (test_dead_worker);
    RUN (test_mmi);
    RUN (test_malformed);
    RUN (test_events);
    RUN (test_shutdown);
    zmq_ctx_term (s_ctx);
    return TEST_DONE ("test_broker");
}
