/*  test_proto.c - unit tests of crm_proto (registry, envelope) and crm_zwatch (libev and ZeroMQ). */
#include "crm.h"
#include "crm/v1/contacts.pb-c.h"
#include "crm_test.h"

#include <pthread.h>
#include <unistd.h>

static void
test_registry (void)
{
    const ProtobufCServiceDescriptor *service = crm_proto_find_service ("contacts");
    CHECK (service == &crm__v1__contacts__descriptor);
    CHECK (crm_proto_find_service ("nosuch") == NULL);
    const ProtobufCMethodDescriptor *method = crm_proto_find_method (service, "CreateContact");
    CHECK (method && method->input == &crm__v1__create_contact_request__descriptor);
    CHECK (method && method->output == &crm__v1__create_contact_response__descriptor);
    CHECK (crm_proto_find_method (service, "createcontact") == NULL);
    CHECK (crm_proto_find_message ("crm.v1.Contact") == &crm__v1__contact__descriptor);
    CHECK (crm_proto_find_message ("crm.v1.RequestMeta") == &crm__v1__request_meta__descriptor);
    CHECK (crm_proto_find_message ("crm.v1.Nope") == NULL);
    int services = 0;
    for (const ProtobufCServiceDescriptor *const *s = crm_proto_services (); *s; s++)
        services++;
    CHECK (services >= 1);
}

static void
test_status_names (void)
{
    CHECK_STR (crm_status_name (0), "OK");
    CHECK_STR (crm_status_name (5), "NOT_FOUND");
    CHECK_STR (crm_status_name (16), "UNAUTHENTICATED");
    CHECK_STR (crm_status_name (99), "UNKNOWN");
    CHECK_STR (crm_status_name (-1), "UNKNOWN");
    CHECK_INT (crm_status_from_name ("UNAVAILABLE"), 14);
    CHECK_INT (crm_status_from_name ("STATUS_ABORTED"), 10);
    CHECK_INT (crm_status_from_name ("nope"), -1);
    //  The proto enum and the names agree
    for (unsigned i = 0; i < crm__v1__status_code__descriptor.n_values; i++) {
        const ProtobufCEnumValue *v = &crm__v1__status_code__descriptor.values[i];
        CHECK_STR (crm_status_name (v->value), v->name + 7);
    }
}

static void
test_envelope (void)
{
    Crm__V1__RequestMeta meta = CRM__V1__REQUEST_META__INIT;
    meta.request_id = "r-1";
    meta.branch = "b-1";
    Crm__V1__GetContactRequest get = CRM__V1__GET_CONTACT_REQUEST__INIT;
    get.id = "x";
    zmsg_t *request = crm_proto_request_new ("GetContact", &meta, &get.base);
    CHECK_INT (zmsg_size (request), 3);
    char *method = zmsg_popstr (request);
    CHECK_STR (method, "GetContact");
    zstr_free (&method);
    zframe_t *frame = zmsg_pop (request);
    Crm__V1__RequestMeta *decoded =
        crm__v1__request_meta__unpack (NULL, zframe_size (frame), zframe_data (frame));
    CHECK (decoded && strcmp (decoded->request_id, "r-1") == 0);
    crm__v1__request_meta__free_unpacked (decoded, NULL);
    zframe_destroy (&frame);
    zmsg_destroy (&request);

    Crm__V1__GetContactResponse response = CRM__V1__GET_CONTACT_RESPONSE__INIT;
    zmsg_t *reply = crm_proto_reply_new (5, "no contact x", "r-1", &response.base);
    Crm__V1__Status *status;
    zframe_t *payload;
    CHECK_INT (crm_proto_reply_parse (reply, &status, &payload), 0);
    CHECK_INT (status->code, 5);
    CHECK_STR (status->message, "no contact x");
    CHECK_STR (status->request_id, "r-1");
    CHECK (payload != NULL && zframe_size (payload) == 0);
    crm__v1__status__free_unpacked (status, NULL);
    zmsg_destroy (&reply);

    reply = zmsg_new ();
    zmsg_addstr (reply, "\xff\xff\xff garbage");
    zmsg_addstr (reply, "");
    CHECK_INT (crm_proto_reply_parse (reply, &status, &payload), -1);
    zmsg_addstr (reply, "three");
    CHECK_INT (crm_proto_reply_parse (reply, &status, &payload), -1);
    zmsg_destroy (&reply);

    zframe_t *empty = crm_proto_pack (NULL);
    CHECK_INT (zframe_size (empty), 0);
    zframe_destroy (&empty);
}

//  zwatch: the reader takes one message per callback so the watcher must call
//  again without a new edge on ZMQ_FD
typedef struct {
    int received;
    int expected;
} s_reader_t;

static void
s_read_one (void *socket, void *arg)
{
    s_reader_t *reader = arg;
    char buf[16];
    if (zmq_recv (socket, buf, sizeof buf, ZMQ_DONTWAIT) >= 0)
        reader->received++;
    if (reader->received == reader->expected)
        ev_break (EV_DEFAULT, EVBREAK_ALL);
}

static void
s_on_timeout (struct ev_loop *loop, ev_timer *w, int revents)
{
    (void) w, (void) revents;
    ev_break (loop, EVBREAK_ALL);
}

static void
test_zwatch (void)
{
    void *ctx = zmq_ctx_new ();
    void *pull = zmq_socket (ctx, ZMQ_PULL);
    void *push = zmq_socket (ctx, ZMQ_PUSH);
    CHECK_INT (zmq_bind (pull, "inproc://zwatch"), 0);
    CHECK_INT (zmq_connect (push, "inproc://zwatch"), 0);
    //  Everything is queued before the loop runs: one edge at most
    for (int i = 0; i < 100; i++)
        zmq_send (push, "x", 1, 0);
    s_reader_t reader = {0, 100};
    struct ev_loop *loop = EV_DEFAULT;
    crm_zwatch_t *watch = crm_zwatch_new (loop, pull, s_read_one, &reader);
    CHECK (watch != NULL);
    ev_timer timeout;
    ev_timer_init (&timeout, s_on_timeout, 5.0, 0.0);
    ev_timer_start (loop, &timeout);
    ev_run (loop, 0);
    CHECK_INT (reader.received, 100);

    //  Messages arriving while the loop waits wake it
    reader.expected = 150;
    for (int i = 0; i < 50; i++)
        zmq_send (push, "y", 1, 0);
    ev_timer_again (loop, &timeout);
    ev_run (loop, 0);
    CHECK_INT (reader.received, 150);
    ev_timer_stop (loop, &timeout);

    crm_zwatch_destroy (&watch);
    CHECK (watch == NULL);
    crm_zwatch_destroy (&watch);
    zmq_close (push);
    zmq_close (pull);
    zmq_ctx_term (ctx);
}

//  zwatch with a peer on another thread: messages arrive while the loop waits,
//  and the callback answers on the watched socket itself, which takes the
//  socket's pending commands and so can swallow the ZMQ_FD edge of the next
//  message. Every message is still read, and every answer goes back.
#define ECHO_COUNT 500

typedef struct {
    void *ctx;
    int answered;
} s_peer_t;

static void *
s_peer (void *arg)
{
    s_peer_t *peer = arg;
    void *dealer = zmq_socket (peer->ctx, ZMQ_DEALER);
    zmq_connect (dealer, "inproc://zwatch-echo");
    for (int i = 0; i < ECHO_COUNT; i++) {
        zmq_send (dealer, "q", 1, 0);
        if (i % 50 == 0)
            usleep (2000); //  Now and then the loop goes to sleep in between
        char buf[8];
        while (zmq_recv (dealer, buf, sizeof buf, ZMQ_DONTWAIT) >= 0)
            peer->answered++;
    }
    zmq_pollitem_t item = {dealer, 0, ZMQ_POLLIN, 0};
    while (peer->answered < ECHO_COUNT && zmq_poll (&item, 1, 5000) == 1) {
        char buf[8];
        while (zmq_recv (dealer, buf, sizeof buf, ZMQ_DONTWAIT) >= 0)
            peer->answered++;
    }
    zmq_close (dealer);
    return NULL;
}

static void
s_echo_one (void *socket, void *arg)
{
    s_reader_t *reader = arg;
    char buf[16];
    if (zmq_recv (socket, buf, sizeof buf, ZMQ_DONTWAIT) >= 0) {
        reader->received++;
        zmq_send (socket, "a", 1, 0);
    }
    if (reader->received == reader->expected)
        ev_break (EV_DEFAULT, EVBREAK_ALL);
}

static void
test_zwatch_answering (void)
{
    void *ctx = zmq_ctx_new ();
    void *server = zmq_socket (ctx, ZMQ_DEALER);
    CHECK_INT (zmq_bind (server, "inproc://zwatch-echo"), 0);
    s_peer_t peer = {ctx, 0};
    pthread_t thread;
    CHECK_INT (pthread_create (&thread, NULL, s_peer, &peer), 0);
    s_reader_t reader = {0, ECHO_COUNT};
    struct ev_loop *loop = EV_DEFAULT;
    crm_zwatch_t *watch = crm_zwatch_new (loop, server, s_echo_one, &reader);
    ev_timer timeout;
    ev_timer_init (&timeout, s_on_timeout, 10.0, 0.0);
    ev_timer_start (loop, &timeout);
    ev_run (loop, 0);
    ev_timer_stop (loop, &timeout);
    pthread_join (thread, NULL);
    CHECK_INT (reader.received, ECHO_COUNT);
    CHECK_INT (peer.answered, ECHO_COUNT);
    crm_zwatch_destroy (&watch);
    zmq_close (server);
    zmq_ctx_term (ctx);
}

int
main (void)
{
    zsys_handler_set (NULL);
    RUN (test_registry);
    RUN (test_status_names);
    RUN (test_envelope);
    RUN (test_zwatch);
    RUN (test_zwatch_answering);
    return TEST_DONE ("test_proto");
}
