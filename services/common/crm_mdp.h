/*  crm_mdp.h - ZeroMQ RFC 7/MDP 0.1 (Majordomo) client and worker, with the worker capacity extension.
 *
 *  The client speaks plain 7/MDP through a DEALER socket so several requests
 *  may be outstanding. The worker runs on a libev loop and may announce a
 *  capacity above one in its READY (see docs/protocol.md); it then receives up
 *  to that many requests before replying.
 */
#ifndef CRM_MDP_H_INCLUDED
#define CRM_MDP_H_INCLUDED

#include <czmq.h>
#include <ev.h>

#define CRM_MDPC            "MDPC01"
#define CRM_MDPW            "MDPW01"
#define CRM_MDPW_READY      1
#define CRM_MDPW_REQUEST    2
#define CRM_MDPW_REPLY      3
#define CRM_MDPW_HEARTBEAT  4
#define CRM_MDPW_DISCONNECT 5

//  Heartbeat interval and liveness used by default by broker and worker.
#define CRM_MDP_HEARTBEAT_MS 2500
#define CRM_MDP_LIVENESS     3

//  Room for the envelope (MDP frames, topic, sequence) above CRM_MAX_MESSAGE_BYTES
//  in the ZMQ_MAXMSGSIZE of a socket to the broker.
#define CRM_MDP_ENVELOPE_BYTES 65536

//  A new socket of type (ZMQ_DEALER, ZMQ_SUB, ZMQ_PUB) to the broker, not yet
//  connected: frames over CRM_MAX_MESSAGE_BYTES plus the envelope are refused
//  (ZMQ_MAXMSGSIZE), and it is a CURVE client of the broker when the process
//  has client keys (crm_curve.h). Every socket libcrm points at the broker
//  starts here, so none forgets the keys. NULL, with an error line, on failure.
//  Caller owns the result.
zsock_t *crm_broker_socket (int type);

//  --------------------------------------------------------------------------
//  Client

typedef struct _crm_mdp_client_t crm_mdp_client_t;

//  Connects a client to the broker endpoint, through CURVE when the process
//  has client keys (crm_curve.h). Caller owns the result.
crm_mdp_client_t *crm_mdp_client_new (const char *broker);
void crm_mdp_client_destroy (crm_mdp_client_t **self_p);

//  Milliseconds crm_mdp_client_call waits for a reply (default 5000).
void crm_mdp_client_set_timeout (crm_mdp_client_t *self, int timeout_ms);

//  Sends body to service and waits for the reply; takes ownership of *body_p
//  and sets it NULL. Returns the reply body (caller owns), or NULL on timeout
//  or error. A reply to an earlier, timed-out call is discarded.
zmsg_t *crm_mdp_client_call (crm_mdp_client_t *self, const char *service, zmsg_t **body_p);

//  Asynchronous use: send without waiting (takes ownership of *body_p).
int crm_mdp_client_send (crm_mdp_client_t *self, const char *service, zmsg_t **body_p);

//  Waits up to timeout_ms (-1 forever) for any reply; returns its body (caller
//  owns) and, if service_p, the service name (caller frees); NULL on timeout.
zmsg_t *crm_mdp_client_recv (crm_mdp_client_t *self, char **service_p, int timeout_ms);

//  The underlying libzmq socket, borrowed (for polling).
void *crm_mdp_client_socket (crm_mdp_client_t *self);

//  --------------------------------------------------------------------------
//  Worker

typedef struct _crm_mdp_worker_t crm_mdp_worker_t;

//  Called on the loop for each request. client identifies the requester and
//  must be passed back to crm_mdp_worker_reply; the callee owns both client
//  and body.
typedef void (crm_mdp_request_fn) (crm_mdp_worker_t *worker, zframe_t *client, zmsg_t *body,
                                   void *arg);

//  Connects to the broker as a worker for service and announces capacity
//  (>= 1; 1 is plain MDP). Reconnects by itself when the broker goes silent.
//  Caller owns the result.
crm_mdp_worker_t *crm_mdp_worker_new (struct ev_loop *loop, const char *broker, const char *service,
                                      int capacity, crm_mdp_request_fn *fn, void *arg);

//  Sends DISCONNECT if connected, stops watching, frees; idempotent.
void crm_mdp_worker_destroy (crm_mdp_worker_t **self_p);

//  Heartbeat interval in ms (default CRM_MDP_HEARTBEAT_MS); set before traffic.
void crm_mdp_worker_set_heartbeat (crm_mdp_worker_t *self, int heartbeat_ms);

//  Largest message the worker accepts from the broker (ZMQ_MAXMSGSIZE), bytes.
void crm_mdp_worker_set_maxmsgsize (crm_mdp_worker_t *self, int64_t bytes);

//  Replies to one request; takes ownership of *client_p and *body_p.
int crm_mdp_worker_reply (crm_mdp_worker_t *self, zframe_t **client_p, zmsg_t **body_p);

//  Says DISCONNECT to the broker and takes no more requests; replies to
//  requests already received can still be sent.
void crm_mdp_worker_stop (crm_mdp_worker_t *self);

//  Requests received and not yet replied to.
int crm_mdp_worker_in_flight (crm_mdp_worker_t *self);

#endif
