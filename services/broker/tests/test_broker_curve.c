/*  test_broker_curve.c - the broker with CURVE: known clients in, the others not; the keys file read again; events. */
#include "broker.h"
#include "zap.h"

#include "crm_curve.h"
#include "crm_log.h"
#include "crm_mdp.h"
#include "crm_test.h"
#include "crm_test_broker.h"
#include "crm_util.h"

#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

typedef struct {
    char public_key[CRM_CURVE_KEY_HEX + 1];
    char secret_key[CRM_CURVE_KEY_HEX + 1];
} s_pair_t;

static s_pair_t s_server, s_alice, s_bob, s_carol;

//  The broker's answer to "mmi.service echo" for a client with the keys of
//  pair (NULL: in the clear): "200", "404", or NULL when none came.
static char *
s_ask (const char *endpoint, const s_pair_t *pair, const char *server_public)
{
    crm_curve_client_set (pair ? server_public : NULL, pair ? pair->secret_key : NULL);
    crm_mdp_client_t *client = crm_mdp_client_new (endpoint);
    crm_mdp_client_set_timeout (client, 500);
    zmsg_t *body = zmsg_new ();
    zmsg_addstr (body, "echo");
    zmsg_t *reply = crm_mdp_client_call (client, "mmi.service", &body);
    char *code = reply ? zmsg_popstr (reply) : NULL;
    zmsg_destroy (&reply);
    crm_mdp_client_destroy (&client);
    crm_curve_client_set (NULL, NULL);
    return code;
}

static bool
s_answered (const char *endpoint, const s_pair_t *pair, const char *server_public, const char *want)
{
    char *code = s_ask (endpoint, pair, server_public);
    bool same = want ? code && strcmp (code, want) == 0 : code == NULL;
    if (!same)
        fprintf (stderr, "  answer %s, expected %s\n", code ? code : "none", want ? want : "none");
    free (code);
    return same;
}

//  A broker that does not start: a log line says why
static void
test_settings (void)
{
    crm_test_broker_t bad;
    const char *keys_file = "/tmp/crm-test-broker-curve-missing.keys";
    unlink (keys_file);
    struct {
        const char *secret, *keys, *file, *workers;
    } cases[] = {
        {s_server.secret_key, s_alice.public_key, NULL, NULL},       //  workers need their own
        {NULL, s_alice.public_key, NULL, "tcp://127.0.0.1:*"},       //  keys without CURVE
        {"", NULL, "/etc/hostname", "tcp://127.0.0.1:*"},            //  a file without CURVE
        {"not a key", "*", NULL, "tcp://127.0.0.1:*"},               //  a secret that is none
        {s_server.secret_key, "", NULL, "tcp://127.0.0.1:*"},        //  nobody admitted
        {s_server.secret_key, "abc", NULL, "tcp://127.0.0.1:*"},     //  a client key that is none
        {s_server.secret_key, NULL, keys_file, "tcp://127.0.0.1:*"}, //  no such file
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        crm_test_broker_init (&bad, false);
        bad.config.curve_secret_key = cases[i].secret;
        bad.config.client_keys = cases[i].keys;
        bad.config.client_keys_file = cases[i].file;
        bad.config.worker_endpoint = cases[i].workers;
        broker_t *broker = broker_new (&bad.config);
        if (broker)
            fprintf (stderr, "  case %zu started\n", i);
        CHECK (broker == NULL);
        broker_destroy (&broker);
    }
}

static void
s_echo (crm_mdp_worker_t *worker, zframe_t *client, zmsg_t *body, void *arg)
{
    (void) arg;
    crm_mdp_worker_reply (worker, &client, &body);
}

//  Requests and events through CURVE; in the clear or with an unknown key, nothing
static void
test_clients (void)
{
    //  Alice's key given in Z85, Bob's in hex
    char alice_z85[CRM_CURVE_KEY_Z85 + 1];
    uint8_t key[CRM_CURVE_KEY_BYTES];
    crm_curve_key_decode (s_alice.public_key, key);
    zmq_z85_encode (alice_z85, key, sizeof key);
    char keys[200];
    snprintf (keys, sizeof keys, " %s,%s ", alice_z85, s_bob.public_key);

    crm_test_broker_t broker;
    crm_test_broker_init (&broker, true);
    broker.config.worker_endpoint = "tcp://127.0.0.1:*";
    broker.config.curve_secret_key = s_server.secret_key;
    broker.config.client_keys = keys;
    if (crm_test_broker_start (&broker) != 0)
        return;
    const char *at = broker.endpoint;
    CHECK (s_answered (at, &s_alice, s_server.public_key, "404"));
    CHECK (s_answered (at, &s_bob, s_server.public_key, "404"));
    CHECK (s_answered (at, NULL, NULL, NULL));
    CHECK (s_answered (at, &s_carol, s_server.public_key, NULL));
    //  The right own key, the wrong broker key: the handshake fails
    CHECK (s_answered (at, &s_alice, s_carol.public_key, NULL));

    //  A worker in the clear on its own endpoint serves a CURVE client
    crm_test_worker_t worker;
    crm_test_worker_init (&worker, broker_worker_endpoint (broker.broker), "echo", 4, s_echo, NULL,
                          500);
    crm_test_worker_start (&worker, NULL, NULL);
    crm_curve_client_set (s_server.public_key, s_alice.secret_key);
    crm_mdp_client_t *client = crm_mdp_client_new (at);
    CHECK (crm_test_mmi_wait (client, "echo", 3000));
    zmsg_t *body = zmsg_new ();
    zmsg_addstr (body, "hello");
    zmsg_t *reply = crm_mdp_client_call (client, "echo", &body);
    char *text = reply ? zmsg_popstr (reply) : NULL;
    CHECK_STR (text, "hello");
    free (text);
    zmsg_destroy (&reply);
    crm_mdp_client_destroy (&client);

    //  Events: a publisher and a subscriber with keys meet; one in the clear hears nothing
    void *ctx = zmq_ctx_new ();
    void *pub = zmq_socket (ctx, ZMQ_PUB);
    void *sub = zmq_socket (ctx, ZMQ_SUB);
    CHECK_INT (crm_curve_client_apply (pub), 0);
    CHECK_INT (crm_curve_client_apply (sub), 0);
    crm_curve_client_set (NULL, NULL);
    void *clear = zmq_socket (ctx, ZMQ_SUB);
    int linger = 0;
    zmq_setsockopt (pub, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt (sub, ZMQ_SUBSCRIBE, "", 0);
    zmq_setsockopt (clear, ZMQ_SUBSCRIBE, "", 0);
    zmq_connect (pub, broker_events_in (broker.broker));
    zmq_connect (sub, broker_events_out (broker.broker));
    zmq_connect (clear, broker_events_out (broker.broker));
    //  Subscriptions travel upstream: publish until one arrives
    crm_test_msg_t msg = {0};
    bool heard = false;
    for (int i = 0; i < 40 && !heard; i++) {
        zmq_send (pub, "test.Event", 10, ZMQ_SNDMORE);
        zmq_send (pub, "x", 1, 0);
        heard = crm_test_msg_recv (sub, &msg, 50) == 0;
    }
    CHECK (heard);
    if (heard)
        CHECK (crm_test_msg_part_str (&msg, 0, "test.Event"));
    crm_test_msg_close (&msg);
    CHECK (crm_test_msg_recv (clear, &msg, 100) != 0);
    zmq_close (clear);
    zmq_close (sub);
    zmq_close (pub);
    zmq_ctx_term (ctx);

    crm_test_worker_stop (&worker);
    crm_test_broker_stop (&broker);
}

static void
s_write (const char *path, const char *text)
{
    char temporary[256];
    snprintf (temporary, sizeof temporary, "%s.new", path);
    FILE *file = fopen (temporary, "w");
    fputs (text, file);
    fclose (file);
    rename (temporary, path);
}

//  A CURVE broker admitting the keys of the file at path; 0, or -1 (checked
//  failed, path removed) when it did not start
static int
s_start_with_keys_file (crm_test_broker_t *broker, const char *path)
{
    crm_test_broker_init (broker, false);
    broker->config.worker_endpoint = "tcp://127.0.0.1:*";
    broker->config.curve_secret_key = s_server.secret_key;
    broker->config.client_keys_file = path;
    if (crm_test_broker_start (broker) != 0) {
        CHECK (!"the broker started");
        unlink (path);
        return -1;
    }
    return 0;
}

//  Keys from a file, with comments; a change to it holds for the next connection
static void
test_keys_file (void)
{
    char path[64];
    snprintf (path, sizeof path, "/tmp/crm-test-broker-curve-%d.keys", (int) getpid ());
    //  A Z85 key with a "#" in it is still a key, not a comment
    char hashed_public[CRM_CURVE_KEY_HEX + 1] = "", hashed_secret[CRM_CURVE_KEY_HEX + 1];
    for (int i = 0; i < 1000 && !strchr (hashed_public, '#'); i++)
        crm_curve_keypair (true, hashed_public, hashed_secret);
    CHECK (strchr (hashed_public, '#') != NULL);
    s_pair_t hashed;
    memcpy (hashed.public_key, hashed_public, sizeof hashed.public_key);
    memcpy (hashed.secret_key, hashed_secret, sizeof hashed.secret_key);
    char text[512];
    snprintf (text, sizeof text,
              "# the branches' tills\n"
              "\n"
              "  %s   riga-1 till\n"
              "%s\n",
              s_alice.public_key, hashed.public_key);
    s_write (path, text);

    crm_test_broker_t broker;
    if (s_start_with_keys_file (&broker, path) != 0)
        return;
    const char *at = broker.endpoint;
    CHECK (s_answered (at, &s_alice, s_server.public_key, "404"));
    CHECK (s_answered (at, &hashed, s_server.public_key, "404"));
    CHECK (s_answered (at, &s_bob, s_server.public_key, NULL));

    //  Bob added, Alice gone: no restart needed
    snprintf (text, sizeof text, "%s bob\n%s\n", s_bob.public_key, hashed.public_key);
    s_write (path, text);
    CHECK (s_answered (at, &s_bob, s_server.public_key, "404"));
    CHECK (s_answered (at, &s_alice, s_server.public_key, NULL));

    //  A file that no longer reads well: the keys read last still hold
    s_write (path, "not-a-key\n");
    CHECK (s_answered (at, &s_bob, s_server.public_key, "404"));
    CHECK (s_answered (at, &s_alice, s_server.public_key, NULL));

    //  Read just after a change, then written over in place with as many bytes and
    //  left with the same time stamp (as a write within one tick of the clock can
    //  leave it): read again all the same, since the first read came too soon
    snprintf (text, sizeof text, "%s\n", s_carol.public_key);
    s_write (path, text);
    CHECK (s_answered (at, &s_carol, s_server.public_key, "404"));
    struct stat before;
    CHECK_INT (stat (path, &before), 0);
    snprintf (text, sizeof text, "%s\n", s_alice.public_key);
    FILE *file = fopen (path, "r+");
    fputs (text, file);
    fclose (file);
    struct timespec times[2] = {before.st_atim, before.st_mtim};
    CHECK_INT (utimensat (AT_FDCWD, path, times, 0), 0);
    CHECK (s_answered (at, &s_alice, s_server.public_key, "404"));
    CHECK (s_answered (at, &s_carol, s_server.public_key, NULL));
    crm_test_broker_stop (&broker);
    unlink (path);
}

//  An empty keys file: the broker starts, admits nobody, and admits a key once
//  the file holds it
static void
test_empty_keys_file (void)
{
    char path[64];
    snprintf (path, sizeof path, "/tmp/crm-test-broker-curve-%d.empty", (int) getpid ());
    s_write (path, "# nobody yet\n");
    crm_test_broker_t broker;
    if (s_start_with_keys_file (&broker, path) != 0)
        return;
    CHECK (s_answered (broker.endpoint, &s_alice, s_server.public_key, NULL));
    char text[128];
    snprintf (text, sizeof text, "%s\n", s_alice.public_key);
    s_write (path, text);
    CHECK (s_answered (broker.endpoint, &s_alice, s_server.public_key, "404"));
    crm_test_broker_stop (&broker);
    unlink (path);
}

//  The ZAP handler on its own, asked as libzmq asks it (RFC 27): the reply
//  status for a request of another version, of another mechanism, of a
//  known and of an unknown key
static const char *
s_zap_status (void *ctx, broker_zap_t *zap, const char *version, const char *mechanism,
              const uint8_t *key, char *status, size_t size)
{
    void *req = zmq_socket (ctx, ZMQ_REQ);
    zmq_connect (req, "inproc://zeromq.zap.01");
    const char *frames[] = {version, "7", "crm", "127.0.0.1", "", mechanism};
    for (int i = 0; i < 6; i++)
        zmq_send (req, frames[i], strlen (frames[i]), ZMQ_SNDMORE);
    zmq_send (req, key, 32, 0);
    zmq_pollitem_t item = {broker_zap_socket (zap), 0, ZMQ_POLLIN, 0};
    zmq_poll (&item, 1, 1000);
    broker_zap_handle (zap);
    status[0] = '\0';
    char frame[64];
    for (int i = 0; i < 6; i++) {
        int got = zmq_recv (req, frame, sizeof frame - 1, 0);
        if (got < 0)
            break;
        frame[got < (int) sizeof frame - 1 ? got : (int) sizeof frame - 1] = '\0';
        if (i == 2) {
            size_t n = strlen (frame) < size ? strlen (frame) : size - 1;
            memcpy (status, frame, n);
            status[n] = '\0';
        }
    }
    zmq_close (req);
    return status;
}

static void
test_zap_requests (void)
{
    void *ctx = zmq_ctx_new ();
    broker_zap_t *zap = broker_zap_new (ctx, s_alice.public_key, NULL);
    CHECK (zap != NULL);
    uint8_t alice[32], bob[32];
    crm_curve_key_decode (s_alice.public_key, alice);
    crm_curve_key_decode (s_bob.public_key, bob);
    char status[16];
    CHECK_STR (s_zap_status (ctx, zap, "1.0", "CURVE", alice, status, sizeof status), "200");
    CHECK_STR (s_zap_status (ctx, zap, "1.0", "CURVE", bob, status, sizeof status), "400");
    CHECK_STR (s_zap_status (ctx, zap, "2.0", "CURVE", alice, status, sizeof status), "500");
    CHECK_STR (s_zap_status (ctx, zap, "1.0", "PLAIN", alice, status, sizeof status), "400");
    CHECK_STR (s_zap_status (ctx, zap, "1.0", "NULL", alice, status, sizeof status), "400");
    broker_zap_destroy (&zap);
    CHECK (zap == NULL);
    zmq_ctx_term (ctx);
}

int
main (void)
{
    crm_test_mdp_init ("test_broker_curve");
    s_pair_t *pairs[] = {&s_server, &s_alice, &s_bob, &s_carol};
    for (size_t i = 0; i < sizeof pairs / sizeof *pairs; i++)
        crm_curve_keypair (false, pairs[i]->public_key, pairs[i]->secret_key);
    RUN (test_settings);
    RUN (test_clients);
    RUN (test_keys_file);
    RUN (test_empty_keys_file);
    RUN (test_zap_requests);
    return TEST_DONE ("test_broker_curve");
}
