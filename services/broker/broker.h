/*  broker.h - the 7/MDP broker of the suite (with the worker capacity extension) and its event fan-out.
 *
 *  One ROUTER socket serves clients and workers (ZeroMQ RFC 7/MDP 0.1 and
 *  8/MMI); an XSUB/XPUB pair forwards live events and subscriptions. The
 *  broker runs on one thread: broker_run loops until broker_stop, and
 *  broker_step does one pass, for tests that drive it themselves.
 */
#ifndef BROKER_H_INCLUDED
#define BROKER_H_INCLUDED

typedef struct {
    const char *endpoint; //  ROUTER for clients and workers, e.g. "tcp://127.0.0.1:5555"
    //  ROUTER for workers only, e.g. "tcp://127.0.0.1:5558"; NULL or "": workers use endpoint.
    //  With it, endpoint takes only client messages, so that whoever can send requests
    //  cannot register to serve them
    const char *worker_endpoint;
    const char *events_in;  //  XSUB publishers connect to; NULL or "" for no fan-out
    const char *events_out; //  XPUB subscribers connect to; NULL or "" for no fan-out
    int heartbeat_ms;       //  Interval of heartbeats to and from workers
    int liveness;           //  Intervals a worker may stay silent before it is dead
    int no_worker_ms;       //  How long a request waits for a service that has no worker
    int queue_max;          //  Requests one service may hold waiting for a worker
    //  CURVE (docs/security.md): the broker's secret key, Z85; NULL or "": none, all in the
    //  clear. With it, endpoint, events_in and events_out are CURVE servers that admit the
    //  clients of client_keys (keys separated by commas or white space, or "*" for any) and
    //  of the file client_keys_file; workers need a worker_endpoint of their own
    const char *curve_secret_key;
    const char *client_keys;
    const char *client_keys_file;
} broker_config_t;

typedef struct _broker_t broker_t;

//  Fills config with the defaults of the suite (endpoints on 127.0.0.1:5555-5557).
void broker_config_defaults (broker_config_t *config);

//  Creates the sockets and binds them; config and its strings are copied.
//  An endpoint may use port "*" for an ephemeral port (see broker_endpoint).
//  Returns NULL, with a log line, when an endpoint cannot be bound. Caller
//  owns the result.
broker_t *broker_new (const broker_config_t *config);

//  Answers what is still queued or in flight UNAVAILABLE, tells the workers
//  DISCONNECT, closes the sockets and frees; idempotent.
void broker_destroy (broker_t **self_p);

//  Endpoints as bound, with ephemeral ports resolved; borrowed. The events
//  endpoints are NULL when the fan-out is off.
const char *broker_endpoint (broker_t *self);
const char *broker_worker_endpoint (broker_t *self); //  endpoint when workers share it
const char *broker_events_in (broker_t *self);
const char *broker_events_out (broker_t *self);

//  One pass of the loop: waits up to timeout_ms for traffic, handles what
//  arrived (a bounded burst per socket), then heartbeats and timeouts.
//  Returns 0, or -1 when the sockets failed (the context was terminated).
int broker_step (broker_t *self, int timeout_ms);

//  Runs until broker_stop is called, then hands back all queued and
//  in-flight requests (UNAVAILABLE) and disconnects the workers. Logs a
//  start and a stop line. Returns 0, or -1 when the sockets failed.
int broker_run (broker_t *self);

//  Makes broker_run return soon; safe from a signal handler or another thread.
void broker_stop (broker_t *self);

#endif
