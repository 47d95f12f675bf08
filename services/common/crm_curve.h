/*  crm_curve.h - CURVE keys of the suite: the broker's clients talk to it encrypted and known by key.
 *
 *  Keys are written as Z85 (40 characters, ZeroMQ RFC 32) or as hex (64
 *  characters, nothing to quote in a shell or a compose file). The broker holds
 *  a secret key and the public keys of the clients it accepts (docs/security.md).
 *  A client program (crmctl, a branch system, a service's event consumer)
 *  knows the broker's public key and has a key pair of its own: set once at
 *  start, they are applied to every socket libcrm connects to the broker's
 *  client and event-out endpoints (crm_mdp client, crm_branch, crm_consumer).
 *  Without them those sockets talk in the clear, as to a broker without CURVE.
 */
#ifndef CRM_CURVE_H_INCLUDED
#define CRM_CURVE_H_INCLUDED

#include <stdbool.h>

#include "crm_config.h"

#include <stdint.h>

//  Bytes of a key, and characters of one in Z85 and in hex (without the NUL)
#define CRM_CURVE_KEY_BYTES 32
#define CRM_CURVE_KEY_Z85   40
#define CRM_CURVE_KEY_HEX   64

//  Decodes a key written in Z85 or hex into key; 0, or -1 when text is neither.
int crm_curve_key_decode (const char *text, uint8_t key[CRM_CURVE_KEY_BYTES]);

//  True when text is a key in Z85 or hex.
bool crm_curve_key_valid (const char *text);

//  A new key pair, in hex (z85 false) or Z85; 0, or -1 when the library has
//  no CURVE. Each buffer holds CRM_CURVE_KEY_HEX + 1 characters.
int crm_curve_keypair (bool z85, char *public_key, char *secret_key);

//  The public key, in Z85, of a secret key; 0, or -1 when secret_key is not a key.
int crm_curve_public (const char *secret_key, char public_key[CRM_CURVE_KEY_Z85 + 1]);

//  Sets this process's client keys: the broker's public key and its own
//  secret key. Both NULL or "": clients talk in the clear (the default).
//  -1, with an error line, and nothing changed, when only one is given or one
//  is not a key.
int crm_curve_client_set (const char *broker_public_key, const char *secret_key);

//  The same from CRM_BROKER_PUBLIC_KEY and CRM_CURVE_SECRET_KEY in config.
int crm_curve_client_setup (crm_config_t *config);

//  True when client keys are set.
bool crm_curve_client_enabled (void);

//  This process's public key in Z85, or NULL when no client keys are set. Borrowed.
const char *crm_curve_client_public (void);

//  Makes socket (a libzmq socket, not yet connected) a CURVE client of the
//  broker when client keys are set; nothing otherwise. 0, or -1 when libzmq
//  refused the keys.
int crm_curve_client_apply (void *socket);

//  Configuration variables read by crm_curve_client_setup, for a program's table.
#define CRM_CURVE_CLIENT_CONFIG_VARS                                                               \
    {"CRM_BROKER_PUBLIC_KEY", "",                                                                  \
     "the broker's CURVE public key (hex or Z85); empty: talk to the broker in the clear"},        \
    {                                                                                              \
        "CRM_CURVE_SECRET_KEY", "",                                                                \
            "this program's CURVE secret key (hex or Z85), used with CRM_BROKER_PUBLIC_KEY"        \
    }

#endif
