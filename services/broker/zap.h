/*  zap.h - the broker's ZAP handler (ZeroMQ RFC 27): which CURVE clients may connect.
 *
 *  Bound on inproc://zeromq.zap.01 of the broker's context, it answers the
 *  handshakes of its CURVE sockets: a client whose public key is in the
 *  allowed set passes, any other is refused with a log line. The set is a
 *  list of keys given at start, a file of keys (one a line, then an optional
 *  comment; lines starting with "#" are comments) read again when it
 *  changes, or "*" for any client that knows the broker's public key. Keys
 *  are written in hex or Z85 (crm_curve.h).
 */
#ifndef ZAP_H_INCLUDED
#define ZAP_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>

typedef struct _broker_zap_t broker_zap_t;

//  The handler in the libzmq context ctx, allowing the keys of keys
//  (separated by commas or white space, or "*") and of the file keys_file
//  (NULL or "": none). NULL, with an error line, when a key is not a key,
//  the file cannot be read, or neither a list nor a file is given (a file
//  with no key yet is allowed, with a warning). Only CURVE requests of ZAP
//  version 1.0 are admitted.
broker_zap_t *broker_zap_new (void *ctx, const char *keys, const char *keys_file);

//  Closes its socket and frees; idempotent.
void broker_zap_destroy (broker_zap_t **self_p);

//  Its socket, for polling.
void *broker_zap_socket (broker_zap_t *self);

//  Answers the requests waiting on its socket.
void broker_zap_handle (broker_zap_t *self);

//  True when any client is admitted ("*").
bool broker_zap_any (broker_zap_t *self);

//  Keys allowed now.
size_t broker_zap_keys (broker_zap_t *self);

#endif
