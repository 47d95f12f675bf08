/*  crm_zwatch.c - a libev watcher for a ZeroMQ socket, correct for edge-triggered ZMQ_FD.
 *
 *  ZMQ_FD only signals that ZMQ_EVENTS may have changed, and only on an edge:
 *  a bare ev_io on it misses messages that arrived before the last read. So
 *  the state is checked on every loop iteration instead: the prepare watcher
 *  asks ZMQ_EVENTS before the loop blocks; with messages waiting it starts an
 *  idle watcher (the loop does not block), otherwise it waits on ZMQ_FD. The
 *  check watcher, after the loop wakes, calls back while messages wait.
 *
 *  Asking ZMQ_EVENTS costs libzmq two system calls. The check asks only when
 *  the socket was readable before the wait or its ZMQ_FD fired: otherwise
 *  nothing can have arrived in between (no code touched the socket while the
 *  loop waited), and the next prepare asks anyway.
 */
#include "crm_zwatch.h"

#include <assert.h>
#include <stdbool.h>
#include <stdlib.h>
#include <zmq.h>

struct _crm_zwatch_t {
    struct ev_loop *loop; //  Loop the watchers run on
    void *socket;         //  Borrowed libzmq socket
    crm_zwatch_fn *fn;    //  Callback while readable
    void *arg;            //  Its argument
    ev_prepare prepare;   //  Before blocking: decide idle or io
    ev_check check;       //  After waking: dispatch
    ev_idle idle;         //  Keeps the loop from blocking while readable
    ev_io io;             //  Wakes the loop on ZMQ_FD
};

static int
s_readable (crm_zwatch_t *self)
{
    int events = 0;
    size_t size = sizeof events;
    if (zmq_getsockopt (self->socket, ZMQ_EVENTS, &events, &size) != 0)
        return 0;
    return (events & ZMQ_POLLIN) != 0;
}

static void
s_on_prepare (struct ev_loop *loop, ev_prepare *w, int revents)
{
    (void) revents;
    crm_zwatch_t *self = w->data;
    if (s_readable (self))
        ev_idle_start (loop, &self->idle);
    else
        ev_io_start (loop, &self->io);
}

static void
s_on_check (struct ev_loop *loop, ev_check *w, int revents)
{
    (void) revents;
    crm_zwatch_t *self = w->data;
    //  Check watchers run before the other callbacks of this iteration, so a
    //  ZMQ_FD that fired still shows as pending here
    bool woken = ev_is_active (&self->idle) || ev_is_pending (&self->io);
    ev_io_stop (loop, &self->io);
    ev_idle_stop (loop, &self->idle);
    if (woken && s_readable (self))
        self->fn (self->socket, self->arg);
}

static void
s_on_nothing (struct ev_loop *loop, ev_idle *w, int revents)
{
    //  The idle and io watchers only exist to wake the loop; check dispatches
    (void) loop, (void) w, (void) revents;
}

static void
s_on_io (struct ev_loop *loop, ev_io *w, int revents)
{
    (void) loop, (void) w, (void) revents;
}

crm_zwatch_t *
crm_zwatch_new (struct ev_loop *loop, void *socket, crm_zwatch_fn *fn, void *arg)
{
    assert (loop && socket && fn);
    int fd;
    size_t size = sizeof fd;
    if (zmq_getsockopt (socket, ZMQ_FD, &fd, &size) != 0)
        return NULL;
    crm_zwatch_t *self = calloc (1, sizeof *self);
    if (!self)
        return NULL;
    self->loop = loop;
    self->socket = socket;
    self->fn = fn;
    self->arg = arg;
    ev_prepare_init (&self->prepare, s_on_prepare);
    ev_check_init (&self->check, s_on_check);
    ev_idle_init (&self->idle, s_on_nothing);
    ev_io_init (&self->io, s_on_io, fd, EV_READ);
    self->prepare.data = self->check.data = self;
    ev_prepare_start (loop, &self->prepare);
    ev_check_start (loop, &self->check);
    return self;
}

void
crm_zwatch_destroy (crm_zwatch_t **self_p)
{
    assert (self_p);
    crm_zwatch_t *self = *self_p;
    if (!self)
        return;
    ev_prepare_stop (self->loop, &self->prepare);
    ev_check_stop (self->loop, &self->check);
    ev_idle_stop (self->loop, &self->idle);
    ev_io_stop (self->loop, &self->io);
    free (self);
    *self_p = NULL;
}
