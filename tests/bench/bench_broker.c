/*  bench_broker.c - requests per second through the broker next to libzmq's zmq_proxy, same clients and echo workers.
 *
 *  One process, threads only: a DEALER client keeps a window of requests in
 *  flight ([method][RequestMeta][payload] bodies of a fixed size) and counts
 *  replies; echo workers send each body straight back. Run (a) goes through
 *  the broker with MDP workers announcing a capacity; run (b) goes through
 *  zmq_proxy (ROUTER to DEALER), whose workers echo whole messages. Each run
 *  is done twice, alternating, and the better of the two counts.
 *
 *  Usage: bench_broker [requests [workers [capacity [window]]]]
 */
#include "crm_log.h"
#include "crm_mdp.h"
#include "crm_proto.h"
#include "crm_util.h"

//  The broker is compiled in, to run on a thread like zmq_proxy does
#include "../../services/broker/broker.c"
#include "../../services/broker/zap.c"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

#define BENCH_PAYLOAD 64   //  Bytes of the request message
#define BENCH_WARMUP  5000 //  Requests before the clock starts
#define BENCH_FRAMES  16   //  Frames an echo worker handles
#define BENCH_WORKERS 16   //  Most workers

typedef enum { BENCH_BROKER, BENCH_PROXY } bench_mode_t;

typedef struct {
    pthread_t thread;     //  Runs s_worker
    void *ctx;            //  Context of clients and workers
    const char *endpoint; //  Where to connect
    bench_mode_t mode;    //  MDP worker or whole-message echo
    int capacity;         //  Announced in READY
    atomic_int *stop;     //  Set when the run is over
} bench_worker_t;

static void *
s_worker (void *arg)
{
    bench_worker_t *self = arg;
    void *socket = zmq_socket (self->ctx, ZMQ_DEALER);
    int linger = 0;
    zmq_setsockopt (socket, ZMQ_LINGER, &linger, sizeof linger);
    zmq_connect (socket, self->endpoint);
    if (self->mode == BENCH_BROKER) {
        char capacity[32];
        snprintf (capacity, sizeof capacity, "capacity=%d", self->capacity);
        zmq_send (socket, "", 0, ZMQ_SNDMORE);
        zmq_send (socket, CRM_MDPW, 6, ZMQ_SNDMORE);
        zmq_send (socket, "\x01", 1, ZMQ_SNDMORE);
        zmq_send (socket, "echo", 4, ZMQ_SNDMORE);
        zmq_send (socket, capacity, strlen (capacity), 0);
    }
    zmq_msg_t parts[BENCH_FRAMES];
    for (int i = 0; i < BENCH_FRAMES; i++)
        zmq_msg_init (&parts[i]);
    int64_t heartbeat_at = crm_mono_ms () + 1000;
    zmq_pollitem_t item = {socket, 0, ZMQ_POLLIN, 0};
    while (!atomic_load (self->stop)) {
        if (self->mode == BENCH_BROKER && crm_mono_ms () >= heartbeat_at) {
            zmq_send (socket, "", 0, ZMQ_SNDMORE);
            zmq_send (socket, CRM_MDPW, 6, ZMQ_SNDMORE);
            zmq_send (socket, "\x04", 1, 0);
            heartbeat_at = crm_mono_ms () + 1000;
        }
        if (zmq_poll (&item, 1, 100) <= 0)
            continue;
        //  Drain what is there before polling again, as a busy worker would
        while (true) {
            int n = 0;
            bool more = true;
            while (more) {
                zmq_msg_t *msg = &parts[n < BENCH_FRAMES ? n : BENCH_FRAMES - 1];
                if (zmq_msg_recv (msg, socket, n == 0 ? ZMQ_DONTWAIT : 0) < 0)
                    break;
                more = zmq_msg_more (msg);
                if (n < BENCH_FRAMES)
                    n++;
            }
            if (n == 0)
                break;
            if (self->mode == BENCH_BROKER) {
                //  ["" ][MDPW01][0x02][address][""][body...] -> same with REPLY
                if (n < 5 || zmq_msg_size (&parts[2]) != 1 ||
                    *(uint8_t *) zmq_msg_data (&parts[2]) != CRM_MDPW_REQUEST)
                    continue;
                *(uint8_t *) zmq_msg_data (&parts[2]) = CRM_MDPW_REPLY;
            }
            for (int i = 0; i < n; i++)
                zmq_msg_send (&parts[i], socket, i + 1 < n ? ZMQ_SNDMORE : 0);
        }
    }
    for (int i = 0; i < BENCH_FRAMES; i++)
        zmq_msg_close (&parts[i]);
    zmq_close (socket);
    return NULL;
}

//  Sends and receives count requests keeping window in flight; returns the
//  replies received, and the elapsed time in *seconds
static long
s_client (void *socket, long count, int window, zframe_t *meta, double *seconds)
{
    char payload[BENCH_PAYLOAD];
    memset (payload, 'p', sizeof payload);
    long sent = 0, received = 0;
    int64_t start = crm_mono_ms ();
    zmq_msg_t msg;
    zmq_msg_init (&msg);
    while (received < count) {
        while (sent < count && sent - received < window) {
            zmq_send (socket, "", 0, ZMQ_SNDMORE);
            zmq_send (socket, CRM_MDPC, 6, ZMQ_SNDMORE);
            zmq_send (socket, "echo", 4, ZMQ_SNDMORE);
            zmq_send (socket, "Echo", 4, ZMQ_SNDMORE);
            zmq_send (socket, zframe_data (meta), zframe_size (meta), ZMQ_SNDMORE);
            zmq_send (socket, payload, sizeof payload, 0);
            sent++;
        }
        zmq_pollitem_t item = {socket, 0, ZMQ_POLLIN, 0};
        if (zmq_poll (&item, 1, 5000) <= 0) {
            fprintf (stderr, "bench_broker: no reply for 5 s after %ld replies\n", received);
            break;
        }
        //  Take every reply that is there
        while (zmq_msg_recv (&msg, socket, ZMQ_DONTWAIT) >= 0) {
            while (zmq_msg_more (&msg))
                zmq_msg_recv (&msg, socket, 0);
            received++;
        }
    }
    zmq_msg_close (&msg);
    *seconds = (crm_mono_ms () - start) / 1000.0;
    return received;
}

typedef struct {
    void *ctx;      //  The proxy's own context, like the broker's
    void *frontend; //  ROUTER for clients
    void *backend;  //  DEALER for workers
    void *control;  //  PAIR to stop it
} bench_proxy_t;

static void *
s_proxy (void *arg)
{
    bench_proxy_t *self = arg;
    zmq_proxy_steerable (self->frontend, self->backend, NULL, self->control);
    return NULL;
}

static void *
s_broker_thread (void *arg)
{
    broker_run (arg);
    return NULL;
}

//  One run: returns requests per second, 0 on failure
static double
s_run (bench_mode_t mode, long count, int nworkers, int capacity, int window, zframe_t *meta)
{
    void *ctx = zmq_ctx_new ();
    broker_t *broker = NULL;
    pthread_t server;
    bench_proxy_t proxy = {0};
    char client_endpoint[256], worker_endpoint[256];
    if (mode == BENCH_BROKER) {
        broker_config_t config;
        broker_config_defaults (&config);
        config.endpoint = "tcp://127.0.0.1:*";
        config.events_in = NULL;
        config.events_out = NULL;
        broker = broker_new (&config);
        if (!broker)
            return 0;
        snprintf (client_endpoint, sizeof client_endpoint, "%s", broker_endpoint (broker));
        snprintf (worker_endpoint, sizeof worker_endpoint, "%s", broker_endpoint (broker));
        pthread_create (&server, NULL, s_broker_thread, broker);
    }
    else {
        proxy.ctx = zmq_ctx_new ();
        proxy.frontend = zmq_socket (proxy.ctx, ZMQ_ROUTER);
        proxy.backend = zmq_socket (proxy.ctx, ZMQ_DEALER);
        proxy.control = zmq_socket (proxy.ctx, ZMQ_PAIR);
        zmq_bind (proxy.frontend, "tcp://127.0.0.1:*");
        zmq_bind (proxy.backend, "tcp://127.0.0.1:*");
        zmq_bind (proxy.control, "inproc://bench-control");
        size_t size = sizeof client_endpoint;
        zmq_getsockopt (proxy.frontend, ZMQ_LAST_ENDPOINT, client_endpoint, &size);
        size = sizeof worker_endpoint;
        zmq_getsockopt (proxy.backend, ZMQ_LAST_ENDPOINT, worker_endpoint, &size);
        pthread_create (&server, NULL, s_proxy, &proxy);
    }
    atomic_int stop;
    atomic_init (&stop, 0);
    bench_worker_t workers[BENCH_WORKERS];
    for (int i = 0; i < nworkers; i++) {
        workers[i] = (bench_worker_t){0, ctx, worker_endpoint, mode, capacity, &stop};
        pthread_create (&workers[i].thread, NULL, s_worker, &workers[i]);
    }
    void *client = zmq_socket (ctx, ZMQ_DEALER);
    int linger = 0;
    zmq_setsockopt (client, ZMQ_LINGER, &linger, sizeof linger);
    zmq_connect (client, client_endpoint);
    //  Every worker connected (a DEALER backend only spreads over those)
    usleep (300000);
    double seconds = 0;
    long warm = s_client (client, BENCH_WARMUP, window, meta, &seconds);
    long done = warm == BENCH_WARMUP ? s_client (client, count, window, meta, &seconds) : 0;

    atomic_store (&stop, 1);
    for (int i = 0; i < nworkers; i++)
        pthread_join (workers[i].thread, NULL);
    zmq_close (client);
    zmq_ctx_term (ctx);
    if (mode == BENCH_BROKER) {
        broker_stop (broker);
        pthread_join (server, NULL);
        broker_destroy (&broker);
    }
    else {
        void *control = zmq_socket (proxy.ctx, ZMQ_PAIR);
        zmq_connect (control, "inproc://bench-control");
        zmq_send (control, "TERMINATE", 9, 0);
        pthread_join (server, NULL);
        zmq_close (control);
        zmq_close (proxy.frontend);
        zmq_close (proxy.backend);
        zmq_close (proxy.control);
        zmq_ctx_term (proxy.ctx);
    }
    if (done != count || seconds <= 0)
        return 0;
    return count / seconds;
}

int
main (int argc, char **argv)
{
    zsys_handler_set (NULL);
    crm_log_init ("bench_broker", "bench", "error", "text");
    long count = argc > 1 ? atol (argv[1]) : 200000;
    int nworkers = argc > 2 ? atoi (argv[2]) : 2;
    int capacity = argc > 3 ? atoi (argv[3]) : 64;
    int window = argc > 4 ? atoi (argv[4]) : nworkers * capacity;
    if (count < 1 || nworkers < 1 || nworkers > BENCH_WORKERS || capacity < 1 || window < 1) {
        fprintf (stderr, "usage: bench_broker [requests [workers [capacity [window]]]]\n");
        return EXIT_FAILURE;
    }
    char rid[37];
    crm_uuid (rid);
    Crm__V1__RequestMeta request_meta = CRM__V1__REQUEST_META__INIT;
    request_meta.request_id = rid;
    request_meta.branch = (char *) "north";
    request_meta.caller = (char *) "bench";
    zframe_t *meta = crm_proto_pack (&request_meta.base);

    double broker_rate = 0, proxy_rate = 0;
    for (int round = 0; round < 2; round++) {
        double rate = s_run (BENCH_PROXY, count, nworkers, capacity, window, meta);
        if (rate > proxy_rate)
            proxy_rate = rate;
        rate = s_run (BENCH_BROKER, count, nworkers, capacity, window, meta);
        if (rate > broker_rate)
            broker_rate = rate;
    }
    zframe_destroy (&meta);
    if (broker_rate <= 0 || proxy_rate <= 0) {
        fprintf (stderr, "bench_broker: a run did not complete\n");
        return EXIT_FAILURE;
    }
    double ratio = broker_rate / proxy_rate;
    printf ("broker: %.0f requests/s, zmq_proxy: %.0f requests/s, ratio %.2f "
            "(%ld requests, %d workers of capacity %d, window %d, %d-byte payload)\n",
            broker_rate, proxy_rate, ratio, count, nworkers, capacity, window, BENCH_PAYLOAD);
    printf ("broker_requests_per_s=%.0f\n", broker_rate);
    printf ("proxy_requests_per_s=%.0f\n", proxy_rate);
    printf ("broker_forward_ratio=%.2f\n", ratio);
    return EXIT_SUCCESS;
}
