/*  crm_branch.h - the branch publisher: branch events sent to the suite at least once, each answer reported once.
 *
 *  A branch system (a till, a tablet, a branch web shop) sends each event as
 *  a request of a service ("orders" "PlaceOrder") whose request id is the
 *  branch's own event id. The services store a request and its answer in the
 *  transaction of its effect, so a resend with the same id changes nothing
 *  and gets the first answer (Status.replayed). The publisher relies on that:
 *  it keeps up to a window of requests in flight on one DEALER connection to
 *  the broker, resends a request with the same id after a timeout or a
 *  retryable status (UNAVAILABLE, RESOURCE_EXHAUSTED, DEADLINE_EXCEEDED,
 *  ABORTED), waiting an exponentially growing, jittered time between
 *  attempts, up to a retry limit, and reports each request's outcome once:
 *  acknowledged (stored by this publisher's request), duplicate (stored
 *  before: the answer was replayed, e.g. the first reply was lost or the
 *  event was published again) or failed (refused, or no success within the
 *  retries).
 *
 *  Requests in flight at the same time may be stored in any order: publish
 *  the next event of one order after the previous one's outcome when the
 *  order matters. Plain single-threaded object: it does its work, and calls
 *  the outcome handler, inside crm_branch_publish, crm_branch_poll and
 *  crm_branch_flush only.
 */
#ifndef CRM_BRANCH_H_INCLUDED
#define CRM_BRANCH_H_INCLUDED

#include <czmq.h>
#include <protobuf-c/protobuf-c.h>
#include <stddef.h>
#include <stdint.h>

//  Defaults of the settings below
#define CRM_BRANCH_WINDOW_DEFAULT     64
#define CRM_BRANCH_TIMEOUT_MS_DEFAULT 5000
#define CRM_BRANCH_RETRIES_DEFAULT    8
#define CRM_BRANCH_BACKOFF_MS_DEFAULT 100
#define CRM_BRANCH_BACKOFF_MAX_MS     5000
//  Longest request id accepted, bytes
#define CRM_BRANCH_REQUEST_ID_MAX 256

typedef enum {
    CRM_BRANCH_ACKNOWLEDGED = 0, //  OK, stored by this request
    CRM_BRANCH_DUPLICATE = 1,    //  OK, replayed: the service had stored it before
    CRM_BRANCH_FAILED = 2,       //  Refused, or retries exhausted; code says why
} crm_branch_outcome_t;

//  One request's outcome, given to the handler; every pointer is borrowed
//  for the duration of the call.
typedef struct {
    crm_branch_outcome_t outcome;
    const char *service;    //  As published
    const char *method;     //  As published
    const char *request_id; //  As published
    int code;               //  Status code of the last answer (0 = OK); DEADLINE_EXCEEDED
                            //  when the last attempt got no answer in time
    const char *message;    //  Status message, or why there was no answer; never NULL
    zframe_t *response;     //  The response payload, or NULL when no answer came
    int replayed;           //  1 when the answer was the one stored for an earlier attempt
    int attempts;           //  Times the request was sent
    int64_t latency_us;     //  From crm_branch_publish to this outcome
    void *tag;              //  As given to crm_branch_publish
} crm_branch_result_t;

//  Called once per published request with its outcome.
typedef void (crm_branch_fn) (const crm_branch_result_t *result, void *arg);

//  Running totals since the publisher was made.
typedef struct {
    uint64_t published;    //  Requests accepted by crm_branch_publish
    uint64_t sent;         //  Sends, first attempts and resends
    uint64_t resent;       //  Resends (same request id)
    uint64_t timeouts;     //  Attempts that got no answer in time
    uint64_t acknowledged; //  Outcomes CRM_BRANCH_ACKNOWLEDGED
    uint64_t duplicates;   //  Outcomes CRM_BRANCH_DUPLICATE
    uint64_t failed;       //  Outcomes CRM_BRANCH_FAILED
    size_t in_flight;      //  Published, outcome not yet reported
} crm_branch_counters_t;

typedef struct _crm_branch_t crm_branch_t;

//  Connects a publisher to the broker endpoint (7/MDP), through CURVE when
//  the process has client keys (crm_curve_client_set, before this call);
//  NULL when the endpoint is not valid. Caller owns the result.
crm_branch_t *crm_branch_new (const char *broker);

//  Closes the connection and frees; idempotent. Requests still in flight are
//  dropped without an outcome: call crm_branch_flush first.
void crm_branch_destroy (crm_branch_t **self_p);

//  The outcome handler and its argument (borrowed). The handler must not
//  call crm_branch_publish, crm_branch_flush or crm_branch_destroy.
void crm_branch_set_handler (crm_branch_t *self, crm_branch_fn *fn, void *arg);

//  Most requests in flight at once, resends included (>= 1).
void crm_branch_set_window (crm_branch_t *self, int window);

//  How long one attempt waits for its answer, ms (>= 1); also sent as the
//  request's deadline, so a service does not work on an attempt given up.
void crm_branch_set_timeout (crm_branch_t *self, int timeout_ms);

//  Resends of one request after its first attempt (>= 0).
void crm_branch_set_retries (crm_branch_t *self, int retries);

//  Wait before the first resend, ms; each further resend waits twice as
//  long, up to max_ms; each wait is drawn between half and all of that.
void crm_branch_set_backoff (crm_branch_t *self, int initial_ms, int max_ms);

//  RequestMeta.caller of the requests (default "crm_branch"); copied.
void crm_branch_set_caller (crm_branch_t *self, const char *caller);

//  Publishes payload (packed at once; still the caller's) as method of
//  service with request_id, the event's own id, on behalf of branch (may be
//  NULL). Waits, reporting outcomes, while the window is full or while a
//  request with the same id is in flight (so publishing an event twice gets
//  the second a duplicate). tag is handed back with the outcome. Returns 0;
//  -1 with nothing sent and no outcome when the request id is empty or
//  longer than CRM_BRANCH_REQUEST_ID_MAX (errno EINVAL) or the request does
//  not fit in CRM_MAX_MESSAGE_BYTES (errno EMSGSIZE).
int crm_branch_publish (crm_branch_t *self, const char *service, const char *method,
                        const char *request_id, const char *branch, const ProtobufCMessage *payload,
                        void *tag);

//  Handles answers, timeouts and due resends for up to timeout_ms (0: what
//  is ready now; -1: until an outcome, or not at all when nothing is in
//  flight), returning as soon as an outcome was reported. Returns the number
//  of outcomes reported.
int crm_branch_poll (crm_branch_t *self, int timeout_ms);

//  Waits until every request published has its outcome, at most timeout_ms
//  (-1: no limit; each request ends after its retries anyway). Returns 0
//  when none is left in flight, -1 when the time ran out first.
int crm_branch_flush (crm_branch_t *self, int timeout_ms);

//  Requests published whose outcome is not reported yet.
size_t crm_branch_in_flight (crm_branch_t *self);

//  Copies the running totals into counters.
void crm_branch_counters (crm_branch_t *self, crm_branch_counters_t *counters);

//  "acknowledged", "duplicate" or "failed". Static string.
const char *crm_branch_outcome_name (crm_branch_outcome_t outcome);

#endif
