/*  sweep.c - the late sweep: open orders whose promised time passed are marked late, with an event each. */
#include "orders.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

static void s_sweep (orders_t *self);

static void
s_on_marked (crm_pg_status_t status, const PGresult *result, const char *error, void *arg)
{
    orders_t *self = arg;
    self->sweeping = false;
    if (status != CRM_PG_OK) {
        //  Unavailable: the next tick tries again; anything else is worth a look
        if (status == CRM_PG_ESQL)
            crm_log_write (CRM_LOG_ERROR, self->sweep_id, NULL, "late sweep failed: %s",
                           error ? error : "no result");
        return;
    }
    int marked = PQntuples (result) == 1 ? atoi (PQgetvalue (result, 0, 0)) : 0;
    if (marked > 0) {
        self->sweep_marked += marked;
        crm_log_write (CRM_LOG_INFO, self->sweep_id, NULL, "marked %d orders late", marked);
        if (self->events)
            crm_events_kick (self->events);
    }
    //  A full batch: more orders may be due, and they are not left for the next tick
    if (marked >= ORDERS_SWEEP_BATCH && !self->sweep_stopped)
        s_sweep (self);
}

//  Sends one sweep statement unless one is in flight or the database is away.
static void
s_sweep (orders_t *self)
{
    if (self->sweeping || self->sweep_stopped || !crm_pg_connected (self->pg))
        return;
    char as_of[24], batch[16], uuid[37];
    snprintf (as_of, sizeof as_of, "%" PRId64, crm_now_ms ());
    snprintf (batch, sizeof batch, "%d", ORDERS_SWEEP_BATCH);
    crm_uuid (uuid);
    //  The events' request id tells a sweep's OrderLate from a SweepLate request's
    snprintf (self->sweep_id, sizeof self->sweep_id, "sweep-%s", uuid);
    const char *values[] = {as_of, batch, self->sweep_id};
    if (crm_pg_write (self->pg, "order_mark_late", 3, values, s_on_marked, self) == 0)
        self->sweeping = true;
}

static void
s_on_tick (struct ev_loop *loop, ev_timer *w, int revents)
{
    (void) loop;
    (void) revents;
    s_sweep ((orders_t *) w->data);
}

void
orders_sweep_start (orders_t *self, double interval_s)
{
    self->sweeping = false;
    self->sweep_stopped = interval_s <= 0;
    if (self->sweep_stopped)
        return;
    ev_timer_init (&self->sweep, s_on_tick, interval_s < 1.0 ? interval_s : 1.0, interval_s);
    self->sweep.data = self;
    ev_timer_start (self->loop, &self->sweep);
}

void
orders_sweep_stop (orders_t *self)
{
    self->sweep_stopped = true;
    if (ev_is_active (&self->sweep))
        ev_timer_stop (self->loop, &self->sweep);
}
