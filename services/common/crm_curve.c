/*  crm_curve.c - CURVE keys of the suite: the broker's clients talk to it encrypted and known by key. */
#include "crm_curve.h"

#include "crm_log.h"
#include "crm_util.h"

#include <errno.h>
#include <string.h>
#include <zmq.h>

#define S_KEY CRM_CURVE_KEY_BYTES

static struct {
    bool enabled;
    uint8_t broker[S_KEY];
    uint8_t secret[S_KEY];
    uint8_t public_key[S_KEY];
    char public_text[CRM_CURVE_KEY_Z85 + 1];
} s_client;

static int
s_hex_digit (char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

int
crm_curve_key_decode (const char *text, uint8_t key[CRM_CURVE_KEY_BYTES])
{
    static const char alphabet[] = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                   ".-:+=^!/*?&<>()[]{}@%$#";
    size_t len = text ? strlen (text) : 0;
    if (len == CRM_CURVE_KEY_HEX) {
        for (size_t i = 0; i < S_KEY; i++) {
            int high = s_hex_digit (text[2 * i]), low = s_hex_digit (text[2 * i + 1]);
            if (high < 0 || low < 0)
                return -1;
            key[i] = (uint8_t) (high << 4 | low);
        }
        return 0;
    }
    if (len != CRM_CURVE_KEY_Z85)
        return -1;
    for (const char *c = text; *c; c++)
        if (!strchr (alphabet, *c))
            return -1;
    return zmq_z85_decode (key, text) ? 0 : -1;
}

bool
crm_curve_key_valid (const char *text)
{
    uint8_t key[S_KEY];
    return crm_curve_key_decode (text, key) == 0;
}

int
crm_curve_keypair (bool z85, char *public_key, char *secret_key)
{
    char public_z85[CRM_CURVE_KEY_Z85 + 1], secret_z85[CRM_CURVE_KEY_Z85 + 1];
    if (zmq_curve_keypair (public_z85, secret_z85) != 0)
        return -1;
    if (z85) {
        memcpy (public_key, public_z85, sizeof public_z85);
        memcpy (secret_key, secret_z85, sizeof secret_z85);
    }
    else {
        uint8_t key[S_KEY];
        zmq_z85_decode (key, public_z85);
        crm_hex (key, S_KEY, public_key);
        zmq_z85_decode (key, secret_z85);
        crm_hex (key, S_KEY, secret_key);
        explicit_bzero (key, sizeof key);
    }
    explicit_bzero (secret_z85, sizeof secret_z85);
    return 0;
}

int
crm_curve_public (const char *secret_key, char public_key[CRM_CURVE_KEY_Z85 + 1])
{
    uint8_t secret[S_KEY];
    char secret_z85[CRM_CURVE_KEY_Z85 + 1];
    int rc = -1;
    if (crm_curve_key_decode (secret_key, secret) == 0) {
        zmq_z85_encode (secret_z85, secret, S_KEY);
        rc = zmq_curve_public (public_key, secret_z85) == 0 ? 0 : -1;
    }
    //  Wiped on every path: a decode that failed part-way leaves part of a key
    explicit_bzero (secret, sizeof secret);
    explicit_bzero (secret_z85, sizeof secret_z85);
    return rc;
}

int
crm_curve_client_set (const char *broker_public_key, const char *secret_key)
{
    bool broker = broker_public_key && *broker_public_key;
    bool secret = secret_key && *secret_key;
    if (!broker && !secret) {
        memset (&s_client, 0, sizeof s_client);
        return 0;
    }
    if (broker != secret) {
        crm_error ("CURVE: the broker's public key and this program's secret key go together; "
                   "only the %s is set",
                   broker ? "broker's public key" : "secret key");
        return -1;
    }
    uint8_t broker_key[S_KEY];
    char public_text[CRM_CURVE_KEY_Z85 + 1];
    if (crm_curve_key_decode (broker_public_key, broker_key) != 0 ||
        crm_curve_public (secret_key, public_text) != 0) {
        crm_error ("CURVE: the %s is not a key (64 hex digits or 40 characters of Z85)",
                   crm_curve_key_valid (broker_public_key) ? "secret key" : "broker's public key");
        return -1;
    }
    s_client.enabled = true;
    memcpy (s_client.broker, broker_key, S_KEY);
    crm_curve_key_decode (secret_key, s_client.secret);
    zmq_z85_decode (s_client.public_key, public_text);
    memcpy (s_client.public_text, public_text, sizeof public_text);
    return 0;
}

int
crm_curve_client_setup (crm_config_t *config)
{
    return crm_curve_client_set (crm_config_get (config, "CRM_BROKER_PUBLIC_KEY"),
                                 crm_config_get (config, "CRM_CURVE_SECRET_KEY"));
}

bool
crm_curve_client_enabled (void)
{
    return s_client.enabled;
}

const char *
crm_curve_client_public (void)
{
    return s_client.enabled ? s_client.public_text : NULL;
}

int
crm_curve_client_apply (void *socket)
{
    if (!s_client.enabled)
        return 0;
    if (zmq_setsockopt (socket, ZMQ_CURVE_SERVERKEY, s_client.broker, S_KEY) != 0 ||
        zmq_setsockopt (socket, ZMQ_CURVE_PUBLICKEY, s_client.public_key, S_KEY) != 0 ||
        zmq_setsockopt (socket, ZMQ_CURVE_SECRETKEY, s_client.secret, S_KEY) != 0) {
        crm_error ("CURVE: could not set the keys on a socket: %s", zmq_strerror (errno));
        return -1;
    }
    return 0;
}
