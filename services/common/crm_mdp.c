/*  crm_mdp.c - ZeroMQ RFC 7/MDP 0.1 client and worker of libcrm, with the worker capacity extension.
 *
 *  The client is a DEALER: crm_mdp_client_call waits for the reply to its
 *  own request and, after a timeout, opens a fresh socket (the Lazy Pirate
 *  way), so a late reply to an abandoned request can never be taken for the
 *  answer to a later one. Replies whose Status carries another request id
 *  are skipped too. Do not mix call with outstanding send/recv requests: a
 *  call that times out drops them with the old socket.
 *
 *  The worker lives on a libev loop. It connects from the loop (so settings
 *  made right after crm_mdp_worker_new apply to the first connection), reads
 *  the socket through crm_zwatch in bounded bursts, heartbeats on an
 *  ev_timer, and starts over on a new socket when the broker is silent for
 *  liveness intervals or tells it DISCONNECT.
 */
#include "crm_mdp.h"

#include "crm_curve.h"
#include "crm_log.h"
#include "crm_proto.h"
#include "crm_util.h"
#include "crm_zwatch.h"

#include <assert.h>
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#define MDP_WORKER_BURST      64   //  Messages a worker reads before the loop runs others
#define MDP_LINGER_MS         500  //  Time to flush DISCONNECT and last replies on close
#define MDP_CLIENT_TIMEOUT_MS 5000 //  Default wait of crm_mdp_client_call

//  --------------------------------------------------------------------------
//  Helpers

//  The request_id of a request body [method][RequestMeta][payload], or NULL;
//  caller frees
static char *
s_body_request_id (zmsg_t *body)
{
    if (!body || zmsg_size (body) < 2)
        return NULL;
    zmsg_first (body);
    zframe_t *meta_frame = zmsg_next (body);
    Crm__V1__RequestMeta *meta =
        crm__v1__request_meta__unpack (NULL, zframe_size (meta_frame), zframe_data (meta_frame));
    if (!meta)
        return NULL;
    char *rid = meta->request_id && *meta->request_id ? strdup (meta->request_id) : NULL;
    crm__v1__request_meta__free_unpacked (meta, NULL);
    return rid;
}

//  The request id in a reply body's Status frame, or NULL; caller frees
static char *
s_reply_request_id (zmsg_t *reply)
{
    zframe_t *status_frame = zmsg_first (reply);
    if (!status_frame)
        return NULL;
    Crm__V1__Status *status =
        crm__v1__status__unpack (NULL, zframe_size (status_frame), zframe_data (status_frame));
    if (!status)
        return NULL;
    char *rid = status->request_id && *status->request_id ? strdup (status->request_id) : NULL;
    crm__v1__status__free_unpacked (status, NULL);
    return rid;
}

//  Sends and always frees msg: czmq keeps a message it could not send
static int
s_send (zmsg_t **msg_p, zsock_t *socket)
{
    int rc = zmsg_send (msg_p, socket);
    int err = errno;
    zmsg_destroy (msg_p);
    errno = err;
    return rc;
}

static void
s_set_maxmsgsize (zsock_t *socket, int64_t bytes)
{
    zmq_setsockopt (zsock_resolve (socket), ZMQ_MAXMSGSIZE, &bytes, sizeof bytes);
}

zsock_t *
crm_broker_socket (int type)
{
    zsock_t *socket = zsock_new (type);
    if (!socket) {
        crm_error ("could not make a socket for the broker: %s", zmq_strerror (errno));
        return NULL;
    }
    s_set_maxmsgsize (socket, CRM_MAX_MESSAGE_BYTES + CRM_MDP_ENVELOPE_BYTES);
    if (crm_curve_client_apply (zsock_resolve (socket)) != 0)
        zsock_destroy (&socket);
    return socket;
}

//  --------------------------------------------------------------------------
//  Client

struct _crm_mdp_client_t {
    char *broker;    //  Broker endpoint
    zsock_t *socket; //  DEALER to the broker; replaced after a call times out
    int timeout_ms;  //  How long a call waits
};

static int
s_client_connect (crm_mdp_client_t *self)
{
    zsock_destroy (&self->socket);
    self->socket = crm_broker_socket (ZMQ_DEALER);
    if (!self->socket)
        return -1;
    //  A broker that is away must not block the caller forever
    zsock_set_sndtimeo (self->socket, self->timeout_ms);
    if (zsock_connect (self->socket, "%s", self->broker) != 0) {
        crm_error ("could not connect to \"%s\": %s", self->broker, zmq_strerror (errno));
        zsock_destroy (&self->socket);
        return -1;
    }
    return 0;
}

crm_mdp_client_t *
crm_mdp_client_new (const char *broker)
{
    assert (broker);
    crm_mdp_client_t *self = calloc (1, sizeof *self);
    if (!self)
        return NULL;
    self->broker = strdup (broker);
    self->timeout_ms = MDP_CLIENT_TIMEOUT_MS;
    if (!self->broker || s_client_connect (self) != 0)
        crm_mdp_client_destroy (&self);
    return self;
}

void
crm_mdp_client_destroy (crm_mdp_client_t **self_p)
{
    assert (self_p);
    crm_mdp_client_t *self = *self_p;
    if (!self)
        return;
    zsock_destroy (&self->socket);
    free (self->broker);
    free (self);
    *self_p = NULL;
}

void
crm_mdp_client_set_timeout (crm_mdp_client_t *self, int timeout_ms)
{
    assert (self);
    self->timeout_ms = timeout_ms;
    if (self->socket)
        zsock_set_sndtimeo (self->socket, timeout_ms);
}

void *
crm_mdp_client_socket (crm_mdp_client_t *self)
{
    assert (self);
    return self->socket ? zsock_resolve (self->socket) : NULL;
}

int
crm_mdp_client_send (crm_mdp_client_t *self, const char *service, zmsg_t **body_p)
{
    assert (self && service && body_p);
    zmsg_t *msg = *body_p ? *body_p : zmsg_new ();
    *body_p = NULL;
    if (!self->socket && s_client_connect (self) != 0) {
        zmsg_destroy (&msg);
        return -1;
    }
    zmsg_pushstr (msg, service);
    zmsg_pushstr (msg, CRM_MDPC);
    zmsg_pushmem (msg, "", 0);
    int rc = s_send (&msg, self->socket);
    if (rc != 0)
        crm_warn ("could not send a request for %s to \"%s\": %s", service, self->broker,
                  zmq_strerror (errno));
    return rc;
}

//  Waits until deadline (mono ms, -1 forever) for a well-formed reply
static zmsg_t *
s_client_recv (crm_mdp_client_t *self, char **service_p, int64_t deadline)
{
    if (!self->socket)
        return NULL;
    while (true) {
        long timeout = -1;
        if (deadline >= 0) {
            timeout = (long) (deadline - crm_mono_ms ());
            if (timeout < 0)
                timeout = 0;
        }
        zmq_pollitem_t item = {zsock_resolve (self->socket), 0, ZMQ_POLLIN, 0};
        if (zmq_poll (&item, 1, timeout) <= 0)
            return NULL; //  Timed out or interrupted
        zmsg_t *msg = zmsg_recv (self->socket);
        if (!msg)
            return NULL;
        zframe_t *empty = zmsg_pop (msg);
        zframe_t *header = zmsg_pop (msg);
        zframe_t *service = zmsg_pop (msg);
        bool valid = empty && zframe_size (empty) == 0 && header &&
                     zframe_streq (header, CRM_MDPC) && service;
        zframe_destroy (&empty);
        zframe_destroy (&header);
        if (!valid) {
            crm_warn ("dropped a malformed reply from \"%s\"", self->broker);
            zframe_destroy (&service);
            zmsg_destroy (&msg);
            continue;
        }
        if (service_p)
            *service_p = zframe_strdup (service);
        zframe_destroy (&service);
        return msg;
    }
}

zmsg_t *
crm_mdp_client_recv (crm_mdp_client_t *self, char **service_p, int timeout_ms)
{
    assert (self);
    if (service_p)
        *service_p = NULL;
    int64_t deadline = timeout_ms < 0 ? -1 : crm_mono_ms () + timeout_ms;
    return s_client_recv (self, service_p, deadline);
}

zmsg_t *
crm_mdp_client_call (crm_mdp_client_t *self, const char *service, zmsg_t **body_p)
{
    assert (self && service && body_p);
    char *rid = s_body_request_id (*body_p);
    if (crm_mdp_client_send (self, service, body_p) != 0) {
        free (rid);
        return NULL;
    }
    int64_t deadline = crm_mono_ms () + self->timeout_ms;
    zmsg_t *reply = NULL;
    while (!reply) {
        char *reply_service = NULL;
        reply = s_client_recv (self, &reply_service, deadline);
        if (!reply)
            break;
        bool ours = reply_service && strcmp (reply_service, service) == 0;
        if (ours && rid) {
            char *reply_rid = s_reply_request_id (reply);
            ours = !reply_rid || strcmp (reply_rid, rid) == 0;
            free (reply_rid);
        }
        if (!ours) {
            crm_debug ("discarded a stale reply from %s", reply_service ? reply_service : "?");
            zmsg_destroy (&reply);
        }
        free (reply_service);
    }
    if (!reply) {
        //  Whatever answers the abandoned request later goes to a closed socket
        crm_log_write (CRM_LOG_WARN, rid, NULL, "no reply from %s within %d ms", service,
                       self->timeout_ms);
        s_client_connect (self);
    }
    free (rid);
    return reply;
}

//  --------------------------------------------------------------------------
//  Worker

struct _crm_mdp_worker_t {
    struct ev_loop *loop;   //  Loop it runs on
    char *broker;           //  Broker endpoint
    char *service;          //  Service name it offers
    int capacity;           //  Requests it takes at once
    crm_mdp_request_fn *fn; //  Request handler
    void *arg;              //  Its argument
    zsock_t *socket;        //  DEALER to the broker, NULL until connected
    crm_zwatch_t *watch;    //  Reads the socket on the loop
    ev_timer heartbeat;     //  Heartbeats and the broker-silence check
    ev_timer connect;       //  (Re)connects from the loop
    int heartbeat_ms;       //  Heartbeat interval
    int64_t maxmsgsize;     //  ZMQ_MAXMSGSIZE of the socket
    ev_tstamp last_heard;   //  Loop time of the last message from the broker
    int in_flight;          //  Requests handed to fn and not replied to
    bool stopped;           //  Said DISCONNECT; takes no more requests
    bool reconnect;         //  A reconnect is due once the read burst ends
};

static void
s_worker_command (crm_mdp_worker_t *self, int command, zmsg_t *msg)
{
    if (!msg)
        msg = zmsg_new ();
    byte cmd = (byte) command;
    zmsg_pushmem (msg, &cmd, 1);
    zmsg_pushstr (msg, CRM_MDPW);
    zmsg_pushmem (msg, "", 0);
    if (!self->socket) {
        zmsg_destroy (&msg);
        return;
    }
    //  The socket never blocks (SNDTIMEO 0): a broker that does not read is
    //  as good as gone, and the liveness check will start over
    if (s_send (&msg, self->socket) != 0 && command != CRM_MDPW_HEARTBEAT)
        crm_warn ("could not send to broker at \"%s\": %s", self->broker, zmq_strerror (errno));
}

static void s_worker_on_readable (void *socket, void *arg);

static void
s_worker_connect (crm_mdp_worker_t *self)
{
    crm_zwatch_destroy (&self->watch);
    zsock_destroy (&self->socket);
    self->reconnect = false;
    self->socket = zsock_new (ZMQ_DEALER);
    if (self->socket) {
        s_set_maxmsgsize (self->socket, self->maxmsgsize);
        zsock_set_sndtimeo (self->socket, 0);
        zsock_set_linger (self->socket, 0);
        if (zsock_connect (self->socket, "%s", self->broker) != 0) {
            crm_error ("could not connect to \"%s\": %s", self->broker, zmq_strerror (errno));
            zsock_destroy (&self->socket);
        }
    }
    if (self->socket)
        self->watch =
            crm_zwatch_new (self->loop, zsock_resolve (self->socket), s_worker_on_readable, self);
    if (!self->watch) {
        //  Try again a heartbeat later rather than spin
        zsock_destroy (&self->socket);
        ev_timer_stop (self->loop, &self->connect);
        ev_timer_set (&self->connect, self->heartbeat_ms / 1000.0, 0.0);
        ev_timer_start (self->loop, &self->connect);
        return;
    }
    zmsg_t *ready = zmsg_new ();
    zmsg_addstr (ready, self->service);
    if (self->capacity > 1)
        zmsg_addstrf (ready, "capacity=%d", self->capacity);
    s_worker_command (self, CRM_MDPW_READY, ready);
    self->last_heard = ev_now (self->loop);
    self->heartbeat.repeat = self->heartbeat_ms / 1000.0;
    ev_timer_again (self->loop, &self->heartbeat);
    crm_debug ("worker for %s connected to \"%s\" with capacity %d", self->service, self->broker,
               self->capacity);
}

static void
s_worker_on_connect (struct ev_loop *loop, ev_timer *w, int revents)
{
    (void) loop, (void) revents;
    crm_mdp_worker_t *self = w->data;
    if (!self->stopped)
        s_worker_connect (self);
}

static void
s_worker_schedule_connect (crm_mdp_worker_t *self)
{
    ev_timer_stop (self->loop, &self->connect);
    ev_timer_set (&self->connect, 0.0, 0.0);
    ev_timer_start (self->loop, &self->connect);
}

static void
s_worker_on_heartbeat (struct ev_loop *loop, ev_timer *w, int revents)
{
    (void) revents;
    crm_mdp_worker_t *self = w->data;
    if (!self->socket)
        return;
    double silent_ms = (ev_now (loop) - self->last_heard) * 1000.0;
    if (!self->stopped && silent_ms > (double) self->heartbeat_ms * CRM_MDP_LIVENESS) {
        crm_warn ("broker at \"%s\" silent for %.0f ms, reconnecting", self->broker, silent_ms);
        s_worker_connect (self);
        return;
    }
    //  After stop, keep the broker's record of us alive until the last reply
    if (!self->stopped || self->in_flight > 0)
        s_worker_command (self, CRM_MDPW_HEARTBEAT, NULL);
}

//  Answers a request the worker will not handle (it is stopping)
static void
s_worker_refuse (crm_mdp_worker_t *self, zframe_t *client, zmsg_t *body)
{
    char *rid = s_body_request_id (body);
    zmsg_destroy (&body);
    zmsg_t *reply = crm_proto_reply_new (CRM__V1__STATUS_CODE__STATUS_UNAVAILABLE,
                                         "the service instance is stopping; resend", rid, NULL);
    free (rid);
    crm_mdp_worker_reply (self, &client, &reply);
}

static void
s_worker_handle (crm_mdp_worker_t *self, zmsg_t *msg)
{
    zframe_t *empty = zmsg_pop (msg);
    zframe_t *header = zmsg_pop (msg);
    zframe_t *command = zmsg_pop (msg);
    bool valid = empty && zframe_size (empty) == 0 && header && zframe_streq (header, CRM_MDPW) &&
                 command && zframe_size (command) == 1;
    int cmd = valid ? zframe_data (command)[0] : 0;
    zframe_destroy (&empty);
    zframe_destroy (&header);
    zframe_destroy (&command);
    if (!valid) {
        crm_warn ("dropped a malformed message from broker at \"%s\"", self->broker);
        zmsg_destroy (&msg);
        return;
    }
    self->last_heard = ev_now (self->loop);
    if (cmd == CRM_MDPW_REQUEST) {
        zframe_t *client = zmsg_pop (msg);
        zframe_t *delimiter = zmsg_pop (msg);
        if (!client || !delimiter || zframe_size (delimiter) != 0) {
            crm_warn ("dropped a request without a client address from \"%s\"", self->broker);
            zframe_destroy (&client);
            zframe_destroy (&delimiter);
            zmsg_destroy (&msg);
            return;
        }
        zframe_destroy (&delimiter);
        self->in_flight++;
        if (self->stopped)
            s_worker_refuse (self, client, msg);
        else
            self->fn (self, client, msg, self->arg);
        return;
    }
    zmsg_destroy (&msg);
    if (cmd == CRM_MDPW_DISCONNECT) {
        if (!self->stopped) {
            crm_info ("broker at \"%s\" asked %s worker to reconnect", self->broker, self->service);
            self->reconnect = true;
        }
    }
    else if (cmd != CRM_MDPW_HEARTBEAT)
        crm_warn ("dropped a message with command %d from broker at \"%s\"", cmd, self->broker);
}

static void
s_worker_on_readable (void *socket, void *arg)
{
    crm_mdp_worker_t *self = arg;
    for (int n = 0; n < MDP_WORKER_BURST && !self->reconnect; n++) {
        if (!(zsock_events (socket) & ZMQ_POLLIN))
            break;
        zmsg_t *msg = zmsg_recv (socket);
        if (!msg)
            break;
        s_worker_handle (self, msg);
    }
    //  Not from here: the watcher and socket being read would go away under us
    if (self->reconnect)
        s_worker_schedule_connect (self);
}

crm_mdp_worker_t *
crm_mdp_worker_new (struct ev_loop *loop, const char *broker, const char *service, int capacity,
                    crm_mdp_request_fn *fn, void *arg)
{
    assert (loop && broker && service && fn);
    assert (capacity >= 1);
    crm_mdp_worker_t *self = calloc (1, sizeof *self);
    if (!self)
        return NULL;
    self->loop = loop;
    self->broker = strdup (broker);
    self->service = strdup (service);
    self->capacity = capacity;
    self->fn = fn;
    self->arg = arg;
    self->heartbeat_ms = CRM_MDP_HEARTBEAT_MS;
    self->maxmsgsize = CRM_MAX_MESSAGE_BYTES + CRM_MDP_ENVELOPE_BYTES;
    if (!self->broker || !self->service) {
        free (self->broker);
        free (self->service);
        free (self);
        return NULL;
    }
    ev_timer_init (&self->heartbeat, s_worker_on_heartbeat, 0.0, self->heartbeat_ms / 1000.0);
    self->heartbeat.data = self;
    ev_timer_init (&self->connect, s_worker_on_connect, 0.0, 0.0);
    self->connect.data = self;
    ev_timer_start (loop, &self->connect);
    return self;
}

void
crm_mdp_worker_destroy (crm_mdp_worker_t **self_p)
{
    assert (self_p);
    crm_mdp_worker_t *self = *self_p;
    if (!self)
        return;
    if (self->socket) {
        if (!self->stopped)
            s_worker_command (self, CRM_MDPW_DISCONNECT, NULL);
        //  Let DISCONNECT and the last replies leave
        zsock_set_linger (self->socket, MDP_LINGER_MS);
    }
    crm_zwatch_destroy (&self->watch);
    zsock_destroy (&self->socket);
    ev_timer_stop (self->loop, &self->heartbeat);
    ev_timer_stop (self->loop, &self->connect);
    free (self->broker);
    free (self->service);
    free (self);
    *self_p = NULL;
}

void
crm_mdp_worker_set_heartbeat (crm_mdp_worker_t *self, int heartbeat_ms)
{
    assert (self);
    assert (heartbeat_ms > 0);
    self->heartbeat_ms = heartbeat_ms;
    self->heartbeat.repeat = heartbeat_ms / 1000.0;
    if (ev_is_active (&self->heartbeat))
        ev_timer_again (self->loop, &self->heartbeat);
}

void
crm_mdp_worker_set_maxmsgsize (crm_mdp_worker_t *self, int64_t bytes)
{
    assert (self);
    self->maxmsgsize = bytes;
    //  Applies to the next connection; the first one is made from the loop
    if (self->socket)
        s_set_maxmsgsize (self->socket, bytes);
}

int
crm_mdp_worker_reply (crm_mdp_worker_t *self, zframe_t **client_p, zmsg_t **body_p)
{
    assert (self && client_p && body_p);
    zframe_t *client = *client_p;
    zmsg_t *body = *body_p ? *body_p : zmsg_new ();
    *client_p = NULL;
    *body_p = NULL;
    if (self->in_flight > 0)
        self->in_flight--;
    if (!client || !self->socket) {
        zframe_destroy (&client);
        zmsg_destroy (&body);
        return -1;
    }
    zmsg_pushmem (body, "", 0);
    zmsg_prepend (body, &client);
    byte command = CRM_MDPW_REPLY;
    zmsg_pushmem (body, &command, 1);
    zmsg_pushstr (body, CRM_MDPW);
    zmsg_pushmem (body, "", 0);
    int rc = s_send (&body, self->socket);
    if (rc != 0)
        crm_warn ("could not send a reply to broker at \"%s\": %s", self->broker,
                  zmq_strerror (errno));
    return rc;
}

void
crm_mdp_worker_stop (crm_mdp_worker_t *self)
{
    assert (self);
    if (self->stopped)
        return;
    self->stopped = true;
    ev_timer_stop (self->loop, &self->connect);
    if (self->socket && !self->reconnect)
        s_worker_command (self, CRM_MDPW_DISCONNECT, NULL);
}

int
crm_mdp_worker_in_flight (crm_mdp_worker_t *self)
{
    assert (self);
    return self->in_flight;
}
