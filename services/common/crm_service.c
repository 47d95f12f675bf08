/*  crm_service.c - the runtime of one service instance: MDP worker, request envelope, handler table. */
#include "crm_service.h"
#include "crm_events.h"
#include "crm_idem.h"
#include "crm_json.h"
#include "crm_log.h"
#include "crm_mdp.h"
#include "crm_proto.h"
#include "crm_util.h"

#include <assert.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

//  Longest request id and branch accepted; ids are keys, not documents
#define S_MAX_ID_LEN 128
//  Largest reply payload: the frame limit less room for the envelope
#define S_MAX_REPLY_BYTES (CRM_MAX_MESSAGE_BYTES - 4096)
//  Deepest message nesting walked when validating
#define S_MAX_DEPTH 32

struct _crm_service_t {
    struct ev_loop *loop;                   //  Loop of the instance
    char *name;                             //  MDP service name
    const ProtobufCServiceDescriptor *desc; //  Proto service: methods and types
    crm_handler_fn **handlers;              //  Handler per method index of desc
    void *ctx;                              //  Passed to every handler
    crm_mdp_worker_t *worker;               //  Connection to the broker
    crm_call_t *calls;                      //  Calls not yet answered (list head)
    int in_flight;                          //  Length of that list
    crm_events_t *events;                   //  Woken after committed writes, or NULL
};

struct _crm_call_t {
    crm_service_t *service;                  //  Owning service
    zframe_t *client;                        //  Requester, for the MDP reply
    const ProtobufCMethodDescriptor *method; //  What was called
    Crm__V1__RequestMeta *meta;              //  Request id, branch, deadline
    char fingerprint[41];                    //  crm_idem_fingerprint of the request
    int64_t started_ms;                      //  Monotonic arrival time
    crm_call_t *prev, *next;                 //  In service->calls
};

//  Sends a reply for a call and frees it.
static void
s_call_finish (crm_call_t *call, int code, const char *message, int replayed,
               const ProtobufCMessage *response)
{
    crm_service_t *self = call->service;
    const char *request_id = call->meta ? call->meta->request_id : "";
    const char *branch = call->meta ? call->meta->branch : "";
    const char *method = call->method ? call->method->name : "?";
    int64_t elapsed = crm_mono_ms () - call->started_ms;

    if (code == 0)
        crm_log_write (CRM_LOG_DEBUG, request_id, branch, "%s ok in %lld ms%s", method,
                       (long long) elapsed, replayed ? " (replayed)" : "");
    else
        crm_log_write (code == 13 || code == 14 ? CRM_LOG_WARN : CRM_LOG_INFO, request_id, branch,
                       "%s answered %s in %lld ms: %s", method, crm_status_name (code),
                       (long long) elapsed, message ? message : "");

    //  A reply over the suite's frame limit would cost this worker its
    //  connection to the broker and every request in flight on it
    if (response && protobuf_c_message_get_packed_size (response) > S_MAX_REPLY_BYTES) {
        crm_log_write (CRM_LOG_WARN, request_id, branch,
                       "%s reply of %zu bytes is over the limit of %d", method,
                       protobuf_c_message_get_packed_size (response), S_MAX_REPLY_BYTES);
        code = CRM__V1__STATUS_CODE__STATUS_RESOURCE_EXHAUSTED;
        message = "the answer is too large for one message: ask for a smaller page";
        replayed = 0;
        response = NULL;
    }
    Crm__V1__Status status = CRM__V1__STATUS__INIT;
    status.code = (Crm__V1__StatusCode) code;
    status.message = (char *) (uintptr_t) (message ? message : "");
    status.request_id = (char *) (uintptr_t) request_id;
    status.replayed = replayed != 0;
    zmsg_t *reply = zmsg_new ();
    zframe_t *frame = crm_proto_pack (&status.base);
    zmsg_append (reply, &frame);
    frame = crm_proto_pack (response);
    zmsg_append (reply, &frame);
    if (self->worker)
        crm_mdp_worker_reply (self->worker, &call->client, &reply);
    zmsg_destroy (&reply);
    zframe_destroy (&call->client);

    if (call->prev)
        call->prev->next = call->next;
    else if (self->calls == call)
        self->calls = call->next;
    if (call->next)
        call->next->prev = call->prev;
    self->in_flight--;
    if (call->meta)
        crm__v1__request_meta__free_unpacked (call->meta, NULL);
    free (call);
}

void
crm_call_reply (crm_call_t *call, int code, const ProtobufCMessage *response, const char *fmt, ...)
{
    assert (call);
    char message[512] = "";
    if (fmt) {
        va_list args;
        va_start (args, fmt);
        vsnprintf (message, sizeof message, fmt, args);
        va_end (args);
        //  A message quoting input cut at a byte count may end mid-character;
        //  Status.message is a proto3 string and must stay UTF-8
        crm_utf8_repair (message);
    }
    s_call_finish (call, code, message, 0, response);
}

void
crm_call_reply_json (crm_call_t *call, const char *json_text)
{
    assert (call && json_text);
    json_error_t jerr;
    json_t *reply = json_loads (json_text, 0, &jerr);
    json_t *code = reply ? json_object_get (reply, "code") : NULL;
    if (!json_is_integer (code)) {
        crm_log_write (CRM_LOG_ERROR, call->meta->request_id, call->meta->branch,
                       "%s: malformed reply from the database", call->method->name);
        json_decref (reply);
        s_call_finish (call, 13, "malformed reply from the database", 0, NULL);
        return;
    }
    const char *message = json_string_value (json_object_get (reply, "message"));
    int replayed = json_is_true (json_object_get (reply, "replayed"));
    json_t *response_json = json_object_get (reply, "response");
    ProtobufCMessage *response = NULL;
    if (response_json && !json_is_null (response_json)) {
        char err[256];
        response = crm_json_to_message (call->method->output, response_json, err, sizeof err);
        if (!response) {
            crm_log_write (CRM_LOG_ERROR, call->meta->request_id, call->meta->branch,
                           "%s: reply from the database does not decode: %s", call->method->name,
                           err);
            json_decref (reply);
            s_call_finish (call, 13, "malformed reply from the database", 0, NULL);
            return;
        }
    }
    s_call_finish (call, (int) json_integer_value (code), message, replayed, response);
    if (response)
        protobuf_c_message_free_unpacked (response, NULL);
    json_decref (reply);
}

const char *
crm_call_request_id (crm_call_t *call)
{
    return call->meta->request_id;
}

const char *
crm_call_branch (crm_call_t *call)
{
    return call->meta->branch;
}

const char *
crm_call_method (crm_call_t *call)
{
    return call->method->name;
}

void *
crm_call_context (crm_call_t *call)
{
    return call->service->ctx;
}

const char *
crm_call_fingerprint (crm_call_t *call)
{
    return call->fingerprint;
}

//  Checks every string of a decoded message is UTF-8 and no field is unknown
//  to this build; writes why not into err. protobuf-c checks neither.
static int
s_validate (const ProtobufCMessage *msg, int depth, char *err, size_t errlen)
{
    const ProtobufCMessageDescriptor *desc = msg->descriptor;
    if (depth > S_MAX_DEPTH) {
        snprintf (err, errlen, "message nested too deep");
        return -1;
    }
    if (msg->n_unknown_fields) {
        snprintf (err, errlen, "unknown field %u in %s", msg->unknown_fields[0].tag, desc->name);
        return -1;
    }
    for (unsigned i = 0; i < desc->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &desc->fields[i];
        const char *base = (const char *) msg + f->offset;
        size_t count = 1;
        const void *values = base;
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            count = *(const size_t *) ((const char *) msg + f->quantifier_offset);
            values = *(void *const *) base;
        }
        if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
            uint32_t which = *(const uint32_t *) ((const char *) msg + f->quantifier_offset);
            if (which != f->id)
                continue;
        }
        for (size_t k = 0; k < count; k++) {
            if (f->type == PROTOBUF_C_TYPE_STRING) {
                const char *s = ((const char *const *) values)[k];
                if (s && !crm_utf8_valid (s, strlen (s))) {
                    snprintf (err, errlen, "field %s.%s is not valid UTF-8", desc->name, f->name);
                    return -1;
                }
            }
            else if (f->type == PROTOBUF_C_TYPE_MESSAGE) {
                const ProtobufCMessage *sub = ((const ProtobufCMessage *const *) values)[k];
                if (sub && s_validate (sub, depth + 1, err, errlen) != 0)
                    return -1;
            }
        }
    }
    return 0;
}

static void
s_on_request (crm_mdp_worker_t *worker, zframe_t *client, zmsg_t *body, void *arg)
{
    (void) worker;
    crm_service_t *self = arg;
    crm_call_t *call = calloc (1, sizeof *call);
    assert (call);
    call->service = self;
    call->client = client;
    call->started_ms = crm_mono_ms ();
    call->next = self->calls;
    if (self->calls)
        self->calls->prev = call;
    self->calls = call;
    self->in_flight++;

    ProtobufCMessage *request = NULL;
    char err[256];
    if (zmsg_size (body) != 3) {
        crm_warn ("refused request with %zu frames: expected method, meta and payload",
                  zmsg_size (body));
        crm_call_reply (call, 3, NULL,
                        "request must have 3 frames (method, meta, payload), not %zu",
                        zmsg_size (body));
        goto done;
    }
    zframe_t *method_frame = zmsg_first (body);
    zframe_t *meta_frame = zmsg_next (body);
    zframe_t *payload_frame = zmsg_next (body);

    call->meta =
        crm__v1__request_meta__unpack (NULL, zframe_size (meta_frame), zframe_data (meta_frame));
    if (!call->meta) {
        crm_warn ("refused request: RequestMeta does not decode");
        crm_call_reply (call, 3, NULL, "request metadata does not decode as crm.v1.RequestMeta");
        goto done;
    }
    if (s_validate (&call->meta->base, 0, err, sizeof err) != 0 ||
        strlen (call->meta->request_id) > S_MAX_ID_LEN ||
        strlen (call->meta->branch) > S_MAX_ID_LEN) {
        crm__v1__request_meta__free_unpacked (call->meta, NULL);
        call->meta = NULL;
        crm_warn ("refused request: invalid metadata");
        crm_call_reply (call, 3, NULL, "invalid request metadata: %s",
                        *err ? err : "request id or branch too long");
        goto done;
    }
    char method_name[64];
    size_t method_len = zframe_size (method_frame);
    const ProtobufCMethodDescriptor *method = NULL;
    if (method_len > 0 && method_len < sizeof method_name) {
        memcpy (method_name, zframe_data (method_frame), method_len);
        method_name[method_len] = '\0';
        if (crm_utf8_valid (method_name, method_len))
            method = crm_proto_find_method (self->desc, method_name);
    }
    else
        snprintf (method_name, sizeof method_name, "(%zu bytes)", method_len);
    if (!method) {
        if (!crm_utf8_valid (method_name, strlen (method_name)))
            snprintf (method_name, sizeof method_name, "(not UTF-8)");
        crm_log_write (CRM_LOG_WARN, call->meta->request_id, call->meta->branch,
                       "refused request for unknown method \"%s\"", method_name);
        crm_call_reply (call, 12, NULL, "service %s has no method \"%s\"", self->name, method_name);
        goto done;
    }
    call->method = method;
    if (!*call->meta->request_id) {
        crm_call_reply (call, 3, NULL, "request_id is required");
        goto done;
    }
    if (call->meta->deadline_unix_ms > 0 && call->meta->deadline_unix_ms < crm_now_ms ()) {
        crm_call_reply (call, 4, NULL, "deadline passed before the request arrived");
        goto done;
    }
    request = protobuf_c_message_unpack (method->input, NULL, zframe_size (payload_frame),
                                         zframe_data (payload_frame));
    if (!request) {
        crm_call_reply (call, 3, NULL, "payload does not decode as %s", method->input->name);
        goto done;
    }
    if (s_validate (request, 0, err, sizeof err) != 0) {
        crm_call_reply (call, 3, NULL, "%s", err);
        goto done;
    }
    crm_idem_fingerprint (method->name, zframe_data (payload_frame), zframe_size (payload_frame),
                          call->fingerprint);
    self->handlers[method - self->desc->methods](call, request, self->ctx);
done:
    if (request)
        protobuf_c_message_free_unpacked (request, NULL);
    zmsg_destroy (&body);
}

crm_service_t *
crm_service_new (struct ev_loop *loop, crm_config_t *config, const char *name,
                 const ProtobufCServiceDescriptor *desc, const crm_method_t *methods, void *ctx)
{
    assert (loop && config && name && desc && methods);
    long capacity, heartbeat_ms;
    if (crm_config_get_int (config, "CRM_CAPACITY", 1, 100000, &capacity) != 0 ||
        crm_config_get_int (config, "CRM_BROKER_HEARTBEAT_MS", 10, 600000, &heartbeat_ms) != 0)
        return NULL;
    crm_service_t *self = calloc (1, sizeof *self);
    assert (self);
    self->loop = loop;
    self->name = strdup (name);
    self->desc = desc;
    self->ctx = ctx;
    self->handlers = calloc (desc->n_methods, sizeof *self->handlers);
    assert (self->handlers);
    for (const crm_method_t *m = methods; m->method; m++) {
        const ProtobufCMethodDescriptor *method = crm_proto_find_method (desc, m->method);
        assert (method); //  A handler for a method the proto lacks is a programmer error
        self->handlers[method - desc->methods] = m->handle;
    }
    for (unsigned i = 0; i < desc->n_methods; i++)
        assert (self->handlers[i]); //  Every rpc needs its handler
    const char *broker = crm_config_get (config, "CRM_BROKER_WORKER_ENDPOINT");
    if (!broker || !*broker)
        broker = crm_config_get (config, "CRM_BROKER_ENDPOINT");
    self->worker = crm_mdp_worker_new (loop, broker, name, (int) capacity, s_on_request, self);
    if (!self->worker) {
        crm_error ("could not connect to broker at \"%s\"", broker);
        crm_service_destroy (&self);
        return NULL;
    }
    crm_mdp_worker_set_maxmsgsize (self->worker, CRM_MAX_MESSAGE_BYTES);
    crm_mdp_worker_set_heartbeat (self->worker, (int) heartbeat_ms);
    crm_info ("serving %s for broker %s with capacity %ld", name, broker, capacity);
    return self;
}

void
crm_service_stop (crm_service_t *self)
{
    assert (self);
    if (self->worker)
        crm_mdp_worker_stop (self->worker);
}

//  State of crm_service_run between the signal and the end of the drain
typedef struct {
    crm_service_t *service;       //  What is being run
    crm_service_stop_fn *on_stop; //  The instance's own stop, or NULL
    void *arg;                    //  Its argument
    ev_timer drain;               //  Polls for the end of in-flight work after a signal
    int64_t drain_ms;             //  How long in-flight work may take
    int64_t drain_until;          //  Monotonic ms after which the loop ends regardless
} s_runner_t;

static void
s_on_drain (struct ev_loop *loop, ev_timer *w, int revents)
{
    (void) revents;
    s_runner_t *runner = w->data;
    if (runner->service->in_flight == 0 || crm_mono_ms () >= runner->drain_until)
        ev_break (loop, EVBREAK_ALL);
}

static void
s_on_stop_signal (struct ev_loop *loop, ev_signal *w, int revents)
{
    (void) revents;
    s_runner_t *runner = w->data;
    if (ev_is_active (&runner->drain))
        return;
    crm_info ("stopping: %d requests in flight", runner->service->in_flight);
    crm_service_stop (runner->service);
    if (runner->on_stop)
        runner->on_stop (runner->arg);
    runner->drain_until = crm_mono_ms () + runner->drain_ms;
    ev_timer_start (loop, &runner->drain);
}

void
crm_service_run (crm_service_t *self, int64_t drain_ms, crm_service_stop_fn *on_stop, void *arg)
{
    assert (self);
    s_runner_t runner = {self, on_stop, arg, {0}, drain_ms, 0};
    ev_timer_init (&runner.drain, s_on_drain, 0.0, 0.05);
    runner.drain.data = &runner;
    ev_signal sigterm, sigint;
    ev_signal_init (&sigterm, s_on_stop_signal, SIGTERM);
    ev_signal_init (&sigint, s_on_stop_signal, SIGINT);
    sigterm.data = sigint.data = &runner;
    ev_signal_start (self->loop, &sigterm);
    ev_signal_start (self->loop, &sigint);
    //  Signal watchers alone do not keep the loop running
    ev_unref (self->loop);
    ev_unref (self->loop);
    ev_run (self->loop, 0);
    ev_ref (self->loop);
    ev_ref (self->loop);
    ev_signal_stop (self->loop, &sigterm);
    ev_signal_stop (self->loop, &sigint);
    ev_timer_stop (self->loop, &runner.drain);
}

void
crm_service_set_events (crm_service_t *self, crm_events_t *events)
{
    assert (self);
    self->events = events;
}

//  Answers a call from the result of its statement.
static void
s_on_sql_result (crm_pg_status_t status, const PGresult *result, const char *error, void *arg)
{
    crm_call_t *call = arg;
    if (status == CRM_PG_OK && PQntuples (result) == 1 && !PQgetisnull (result, 0, 0))
        crm_call_reply_json (call, PQgetvalue (result, 0, 0));
    else if (status == CRM_PG_EUNAVAILABLE)
        crm_call_reply (call, CRM__V1__STATUS_CODE__STATUS_UNAVAILABLE, NULL,
                        "database unavailable: retry with the same request_id");
    else {
        crm_log_write (CRM_LOG_ERROR, crm_call_request_id (call), crm_call_branch (call),
                       "%s failed in the database: %s", crm_call_method (call),
                       error ? error : "no result");
        crm_call_reply (call, CRM__V1__STATUS_CODE__STATUS_INTERNAL, NULL,
                        "could not complete %s in the database", crm_call_method (call));
    }
}

//  A committed write may have emitted events: the event log sequences them soon.
static void
s_on_sql_write_result (crm_pg_status_t status, const PGresult *result, const char *error, void *arg)
{
    crm_call_t *call = arg;
    if (status == CRM_PG_OK && call->service->events)
        crm_events_kick_soon (call->service->events);
    s_on_sql_result (status, result, error, call);
}

void
crm_call_sql (crm_call_t *call, crm_pg_t *pg, int write, const char *statement, int nparams,
              const char *const *values)
{
    assert (call && pg && statement);
    int rc = write ? crm_pg_write (pg, statement, nparams, values, s_on_sql_write_result, call)
                   : crm_pg_read (pg, statement, nparams, values, s_on_sql_result, call);
    if (rc != 0)
        crm_call_reply (call, CRM__V1__STATUS_CODE__STATUS_UNAVAILABLE, NULL,
                        "database unavailable: retry with the same request_id");
}

int
crm_service_in_flight (crm_service_t *self)
{
    return self->in_flight;
}

void
crm_service_destroy (crm_service_t **self_p)
{
    assert (self_p);
    crm_service_t *self = *self_p;
    if (!self)
        return;
    while (self->calls)
        crm_call_reply (self->calls, 14, NULL, "service instance is shutting down");
    crm_mdp_worker_destroy (&self->worker);
    free (self->handlers);
    free (self->name);
    free (self);
    *self_p = NULL;
}
