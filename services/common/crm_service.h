/*  crm_service.h - the runtime of one service instance: MDP worker, request envelope, handler table.
 *
 *  A service gives a table of methods (one per rpc of its proto service); the
 *  runtime receives requests from the broker, checks the envelope (method,
 *  metadata, payload size and UTF-8, deadline), decodes the payload, calls the
 *  handler, and sends exactly one reply per request, with a log line for every
 *  refused request. Handlers answer later, from database callbacks, through
 *  crm_call_reply*.
 */
#ifndef CRM_SERVICE_H_INCLUDED
#define CRM_SERVICE_H_INCLUDED

#include <ev.h>
#include <protobuf-c/protobuf-c.h>

#include "crm_config.h"
#include "crm_pg.h"

typedef struct _crm_service_t crm_service_t;
typedef struct _crm_call_t crm_call_t;
struct _crm_events_t;

//  Handles one decoded request; request is borrowed for the call only (the
//  handler may change it, e.g. to normalise it). The
//  handler must eventually call crm_call_reply or crm_call_reply_json once.
typedef void (crm_handler_fn) (crm_call_t *call, ProtobufCMessage *request, void *ctx);

typedef struct {
    const char *method;     //  rpc name in the proto service, "CreateContact"
    crm_handler_fn *handle; //  The handler
} crm_method_t;

//  An instance of MDP service name, answering the methods of desc with the
//  handlers of methods (a table ended by {NULL}; borrowed); ctx is passed to
//  every handler. Reads CRM_BROKER_WORKER_ENDPOINT (or, when empty,
//  CRM_BROKER_ENDPOINT), CRM_CAPACITY and CRM_BROKER_HEARTBEAT_MS from config.
//  Asserts every rpc of desc has a handler. Caller owns the result.
crm_service_t *crm_service_new (struct ev_loop *loop, crm_config_t *config, const char *name,
                                const ProtobufCServiceDescriptor *desc, const crm_method_t *methods,
                                void *ctx);

//  Idempotent destructor; pending calls are answered UNAVAILABLE.
void crm_service_destroy (crm_service_t **self_p);

//  Stops taking requests (MDP DISCONNECT); calls in flight still complete.
void crm_service_stop (crm_service_t *self);

//  Calls not yet answered.
int crm_service_in_flight (crm_service_t *self);

//  Called once when a stop signal arrives, after the service stopped taking
//  requests: stop the instance's own timers (sweeps, consumers) here.
typedef void (crm_service_stop_fn) (void *arg);

//  Runs the service's loop until SIGTERM or SIGINT; then stops taking
//  requests (on_stop, if given, is called) and runs on until every call in
//  flight is answered or drain_ms passed. Returns when the loop is done.
void crm_service_run (crm_service_t *self, int64_t drain_ms, crm_service_stop_fn *on_stop,
                      void *arg);

//  The event log (borrowed) that crm_call_sql wakes after each committed
//  write, so events the write emitted are sequenced soon; NULL: none.
void crm_service_set_events (crm_service_t *self, struct _crm_events_t *events);

//  Configuration variables read by crm_service_new, for a program's table.
#define CRM_SERVICE_CONFIG_VARS                                                                    \
    {"CRM_BROKER_ENDPOINT", "tcp://127.0.0.1:5555", "broker endpoint for MDP requests"},           \
        {"CRM_BROKER_WORKER_ENDPOINT", "",                                                         \
         "broker endpoint this service serves on, when the broker has one for workers; "           \
         "empty: CRM_BROKER_ENDPOINT"},                                                            \
        {"CRM_CAPACITY", "64", "requests one instance holds in flight at once (MDP extension)"},   \
    {                                                                                              \
        "CRM_BROKER_HEARTBEAT_MS", "2500", "MDP heartbeat interval; must match the broker's"       \
    }

//  The request's metadata; borrowed, valid until the call is answered.
const char *crm_call_request_id (crm_call_t *call);
const char *crm_call_branch (crm_call_t *call);
const char *crm_call_method (crm_call_t *call);

//  The ctx given to crm_service_new, borrowed.
void *crm_call_context (crm_call_t *call);

//  Fingerprint of the request (crm_idem_fingerprint), for write functions.
const char *crm_call_fingerprint (crm_call_t *call);

//  Answers with a status code, an optional response message (NULL: empty
//  payload) and a printf-style human message (NULL: none). Frees the call.
void crm_call_reply (crm_call_t *call, int code, const ProtobufCMessage *response, const char *fmt,
                     ...) __attribute__ ((format (printf, 4, 5)));

//  Answers from a JSON reply {"code": n, "message": "...", "replayed": bool,
//  "response": {...}} as built by the SQL write functions; a reply that does
//  not decode as the method's response type is answered INTERNAL. Frees the call.
void crm_call_reply_json (crm_call_t *call, const char *json_text);

//  Runs a prepared statement whose one result is the call's reply as JSON
//  (see crm_call_reply_json) and answers the call with it; UNAVAILABLE when the
//  database is away (at once, or when the connection broke), INTERNAL with a
//  log line on an SQL error. A write is group-committed and answered only
//  after its commit. values are copied.
void crm_call_sql (crm_call_t *call, crm_pg_t *pg, int write, const char *statement, int nparams,
                   const char *const *values);

#endif
