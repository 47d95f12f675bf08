/*  test_curve.c - CURVE keys: hex and Z85, key pairs, the process's client keys applied to sockets, crm_broker_socket. */
#include "crm_curve.h"
#include "crm_log.h"
#include "crm_mdp.h"
#include "crm_proto.h"
#include "crm_test.h"

#include <stdio.h>
#include <string.h>
#include <zmq.h>

static void
test_keys (void)
{
    //  A pair in each form; the public key follows from the secret one
    char public_hex[CRM_CURVE_KEY_HEX + 1], secret_hex[CRM_CURVE_KEY_HEX + 1];
    CHECK_INT (crm_curve_keypair (false, public_hex, secret_hex), 0);
    CHECK_INT (strlen (public_hex), 64);
    CHECK_INT (strspn (secret_hex, "0123456789abcdef"), 64);
    char public_z85[CRM_CURVE_KEY_HEX + 1], secret_z85[CRM_CURVE_KEY_HEX + 1];
    CHECK_INT (crm_curve_keypair (true, public_z85, secret_z85), 0);
    CHECK_INT (strlen (public_z85), 40);
    CHECK (crm_curve_key_valid (public_hex) && crm_curve_key_valid (secret_hex));
    CHECK (crm_curve_key_valid (public_z85) && crm_curve_key_valid (secret_z85));
    CHECK (strcmp (public_hex, secret_hex) != 0);

    char derived[CRM_CURVE_KEY_Z85 + 1];
    CHECK_INT (crm_curve_public (secret_z85, derived), 0);
    CHECK_STR (derived, public_z85);
    //  The same key in both writings decodes alike
    uint8_t from_hex[CRM_CURVE_KEY_BYTES], from_z85[CRM_CURVE_KEY_BYTES];
    CHECK_INT (crm_curve_key_decode (public_hex, from_hex), 0);
    char as_z85[CRM_CURVE_KEY_Z85 + 1];
    zmq_z85_encode (as_z85, from_hex, sizeof from_hex);
    CHECK_INT (crm_curve_key_decode (as_z85, from_z85), 0);
    CHECK (memcmp (from_hex, from_z85, sizeof from_hex) == 0);
    CHECK_INT (crm_curve_public (secret_hex, derived), 0);
    char upper[CRM_CURVE_KEY_HEX + 1];
    for (int i = 0; i <= CRM_CURVE_KEY_HEX; i++)
        upper[i] = (char) (secret_hex[i] >= 'a' ? secret_hex[i] - 32 : secret_hex[i]);
    char derived_upper[CRM_CURVE_KEY_Z85 + 1];
    CHECK_INT (crm_curve_public (upper, derived_upper), 0);
    CHECK_STR (derived_upper, derived);

    //  Not keys: wrong lengths, characters outside the alphabet
    const char *bad[] = {
        "",
        "abc",
        NULL,
        "c8ac0cd1a0e47b6863f0e579afd7828cea4fe6a03abdacb7754dd5d2c1a5900",   //  63
        "c8ac0cd1a0e47b6863f0e579afd7828cea4fe6a03abdacb7754dd5d2c1a59008a", //  65
        "g8ac0cd1a0e47b6863f0e579afd7828cea4fe6a03abdacb7754dd5d2c1a59008",  //  not hex
        "[Zk{82YM#wW{7Z:M3R]coDfk?2Gc4>GvP/vKCSA",                           //  39
        "[Zk{82YM#wW{7Z:M3R]coDfk?2Gc4>GvP/vKCSA\"",                         //  '"' not Z85
        "[Zk{82YM#wW{7Z:M3R]coDfk?2Gc4>GvP/vKCSA ",                          //  space
    };
    uint8_t key[CRM_CURVE_KEY_BYTES];
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        CHECK (!crm_curve_key_valid (bad[i]));
        CHECK_INT (crm_curve_key_decode (bad[i], key), -1);
    }
    CHECK_INT (crm_curve_public ("not a key", derived), -1);
}

static int
s_mechanism (void *socket)
{
    int mechanism = -1;
    size_t size = sizeof mechanism;
    zmq_getsockopt (socket, ZMQ_MECHANISM, &mechanism, &size);
    return mechanism;
}

static void
test_client (void)
{
    char broker_public[CRM_CURVE_KEY_HEX + 1], broker_secret[CRM_CURVE_KEY_HEX + 1];
    char public_key[CRM_CURVE_KEY_HEX + 1], secret_key[CRM_CURVE_KEY_HEX + 1];
    crm_curve_keypair (false, broker_public, broker_secret);
    crm_curve_keypair (true, public_key, secret_key);
    void *ctx = zmq_ctx_new ();

    //  Nothing set: sockets stay in the clear
    CHECK (!crm_curve_client_enabled ());
    CHECK (crm_curve_client_public () == NULL);
    void *plain = zmq_socket (ctx, ZMQ_DEALER);
    CHECK_INT (crm_curve_client_apply (plain), 0);
    CHECK_INT (s_mechanism (plain), ZMQ_NULL);
    zmq_close (plain);

    //  Half a setting, or a key that is not one, changes nothing
    CHECK_INT (crm_curve_client_set (broker_public, NULL), -1);
    CHECK_INT (crm_curve_client_set ("", secret_key), -1);
    CHECK_INT (crm_curve_client_set (broker_public, "nope"), -1);
    CHECK_INT (crm_curve_client_set ("nope", secret_key), -1);
    CHECK (!crm_curve_client_enabled ());

    //  Set (hex for the broker, Z85 for the own key): applied to each socket
    CHECK_INT (crm_curve_client_set (broker_public, secret_key), 0);
    CHECK (crm_curve_client_enabled ());
    CHECK_STR (crm_curve_client_public (), public_key);
    void *secure = zmq_socket (ctx, ZMQ_DEALER);
    CHECK_INT (crm_curve_client_apply (secure), 0);
    CHECK_INT (s_mechanism (secure), ZMQ_CURVE);
    uint8_t got[CRM_CURVE_KEY_BYTES], want[CRM_CURVE_KEY_BYTES];
    size_t size = sizeof got;
    zmq_getsockopt (secure, ZMQ_CURVE_SERVERKEY, got, &size);
    crm_curve_key_decode (broker_public, want);
    CHECK_INT (size, 32);
    CHECK (memcmp (got, want, sizeof got) == 0);
    size = sizeof got;
    zmq_getsockopt (secure, ZMQ_CURVE_PUBLICKEY, got, &size);
    crm_curve_key_decode (public_key, want);
    CHECK (memcmp (got, want, sizeof got) == 0);
    zmq_close (secure);

    //  Cleared: back in the clear
    CHECK_INT (crm_curve_client_set (NULL, ""), 0);
    CHECK (!crm_curve_client_enabled ());
    plain = zmq_socket (ctx, ZMQ_DEALER);
    crm_curve_client_apply (plain);
    CHECK_INT (s_mechanism (plain), ZMQ_NULL);
    zmq_close (plain);
    zmq_ctx_term (ctx);
}

//  crm_broker_socket: the size cap always, the keys when they are set
static int64_t
s_maxmsgsize (zsock_t *socket)
{
    int64_t bytes = 0;
    size_t size = sizeof bytes;
    zmq_getsockopt (zsock_resolve (socket), ZMQ_MAXMSGSIZE, &bytes, &size);
    return bytes;
}

static void
test_broker_socket (void)
{
    int types[] = {ZMQ_DEALER, ZMQ_SUB, ZMQ_PUB};
    for (size_t i = 0; i < sizeof types / sizeof *types; i++) {
        zsock_t *socket = crm_broker_socket (types[i]);
        CHECK (socket != NULL);
        CHECK_INT (zsock_type (socket), types[i]);
        CHECK (s_maxmsgsize (socket) == CRM_MAX_MESSAGE_BYTES + CRM_MDP_ENVELOPE_BYTES);
        CHECK_INT (s_mechanism (zsock_resolve (socket)), ZMQ_NULL);
        zsock_destroy (&socket);
    }
    char broker_public[CRM_CURVE_KEY_HEX + 1], broker_secret[CRM_CURVE_KEY_HEX + 1];
    char public_key[CRM_CURVE_KEY_HEX + 1], secret_key[CRM_CURVE_KEY_HEX + 1];
    crm_curve_keypair (false, broker_public, broker_secret);
    crm_curve_keypair (false, public_key, secret_key);
    CHECK_INT (crm_curve_client_set (broker_public, secret_key), 0);
    for (size_t i = 0; i < sizeof types / sizeof *types; i++) {
        zsock_t *socket = crm_broker_socket (types[i]);
        CHECK (socket != NULL);
        CHECK (s_maxmsgsize (socket) == CRM_MAX_MESSAGE_BYTES + CRM_MDP_ENVELOPE_BYTES);
        CHECK_INT (s_mechanism (zsock_resolve (socket)), ZMQ_CURVE);
        uint8_t got[CRM_CURVE_KEY_BYTES], want[CRM_CURVE_KEY_BYTES];
        size_t size = sizeof got;
        zmq_getsockopt (zsock_resolve (socket), ZMQ_CURVE_SERVERKEY, got, &size);
        crm_curve_key_decode (broker_public, want);
        CHECK (memcmp (got, want, sizeof got) == 0);
        zsock_destroy (&socket);
    }
    CHECK_INT (crm_curve_client_set (NULL, NULL), 0);
}

int
main (void)
{
    //  The refusals' error lines are expected: out of sight
    FILE *quiet = fopen ("/dev/null", "w");
    crm_log_init ("test_curve", NULL, "error", "text");
    crm_log_set_stream (quiet);
    RUN (test_keys);
    RUN (test_client);
    RUN (test_broker_socket);
    crm_log_set_stream (NULL);
    fclose (quiet);
    return TEST_DONE ("test_curve");
}
