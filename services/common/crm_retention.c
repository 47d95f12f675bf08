/*  crm_retention.c - forgets old request ids and trims the event log, on a timer, in every service instance. */
#include "crm_retention.h"

#include "crm_log.h"
#include "crm_util.h"

#include <assert.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define S_IDEM      "crm_retention_idem"
#define S_EVENTS    "crm_retention_events"
#define S_TASKS_MAX (2 + CRM_RETENTION_TASKS_MAX)
#define S_IDLE      -1

//  One statement of a run, called again while it deals with a full batch
typedef struct {
    char *name;    //  The prepared statement
    char *label;   //  What its count is, for the run's log line
    long keep_s;   //  Built-in: the window, passed as $1 (0: off); added ones: -1
    int64_t run;   //  Counted in this run
    int64_t total; //  Since start
} s_task_t;

struct _crm_retention_t {
    struct ev_loop *loop;
    crm_pg_t *pg;   //  Borrowed
    ev_timer timer; //  Next run
    s_task_t tasks[S_TASKS_MAX];
    int ntasks;
    int current; //  The task whose statement is in flight; S_IDLE: none
    bool doomed; //  Destroyed while a statement was in flight: freed by its answer
};

static void
s_free (crm_retention_t *self)
{
    for (int i = 0; i < self->ntasks; i++) {
        free (self->tasks[i].name);
        free (self->tasks[i].label);
    }
    free (self);
}

static void
s_task_add (crm_retention_t *self, const char *name, const char *label, long keep_s)
{
    assert (self->ntasks < S_TASKS_MAX);
    s_task_t *task = &self->tasks[self->ntasks++];
    task->name = strdup (name);
    task->label = strdup (label);
    task->keep_s = keep_s;
    assert (task->name && task->label);
}

static bool
s_task_on (const s_task_t *task)
{
    return task->keep_s != 0;
}

static void s_on_answer (crm_pg_status_t status, const PGresult *result, const char *error,
                         void *arg);

//  Queues task's statement; false, idle, when the connection is down.
static bool
s_send (crm_retention_t *self, int task_index)
{
    const s_task_t *task = &self->tasks[task_index];
    char keep[32], batch[16];
    snprintf (keep, sizeof keep, "%ld seconds", task->keep_s);
    snprintf (batch, sizeof batch, "%d", CRM_RETENTION_BATCH);
    const char *built_in[] = {keep, batch};
    const char *added[] = {batch};
    bool has_window = task->keep_s > 0;
    if (crm_pg_write (self->pg, task->name, has_window ? 2 : 1, has_window ? built_in : added,
                      s_on_answer, self) != 0) {
        self->current = S_IDLE;
        return false;
    }
    self->current = task_index;
    return true;
}

//  Sends the first task on from index; false when none is left (or the connection is down).
static bool
s_send_from (crm_retention_t *self, int index)
{
    for (; index < self->ntasks; index++)
        if (s_task_on (&self->tasks[index]))
            return s_send (self, index);
    return false;
}

//  The run's log line, when it did anything.
static void
s_said (crm_retention_t *self)
{
    char line[256] = "";
    bool any = false;
    for (int i = 0; i < self->ntasks; i++) {
        const s_task_t *task = &self->tasks[i];
        if (!s_task_on (task))
            continue;
        any = any || task->run > 0;
        size_t at = strlen (line);
        snprintf (line + at, sizeof line - at, "%s%" PRId64 " %s", at ? ", " : "", task->run,
                  task->label);
    }
    if (any)
        crm_info ("retention: %s", line);
}

static void
s_on_answer (crm_pg_status_t status, const PGresult *result, const char *error, void *arg)
{
    crm_retention_t *self = arg;
    if (self->doomed) {
        s_free (self);
        return;
    }
    int index = self->current;
    s_task_t *task = &self->tasks[index];
    if (status == CRM_PG_EUNAVAILABLE) {
        //  The database went away: the next run does it all again
        self->current = S_IDLE;
        return;
    }
    if (status == CRM_PG_ESQL)
        //  One failing statement holds up none of the others
        crm_error ("retention: %s failed: %s", task->name, error ? error : "no result");
    else {
        int64_t count = PQntuples (result) == 1 ? strtoll (PQgetvalue (result, 0, 0), NULL, 10) : 0;
        task->run += count;
        task->total += count;
        //  A full batch: there may be more of the same
        if (count >= CRM_RETENTION_BATCH && s_send (self, index))
            return;
    }
    if (s_send_from (self, index + 1))
        return;
    self->current = S_IDLE;
    s_said (self);
}

static void
s_on_timer (struct ev_loop *loop, ev_timer *w, int revents)
{
    (void) loop;
    (void) revents;
    crm_retention_run (w->data);
}

//  The timer runs while there is something to do.
static void
s_timer_update (crm_retention_t *self)
{
    bool work = false;
    for (int i = 0; i < self->ntasks; i++)
        work = work || s_task_on (&self->tasks[i]);
    if (work && !ev_is_active (&self->timer))
        ev_timer_start (self->loop, &self->timer);
}

crm_retention_t *
crm_retention_new (struct ev_loop *loop, crm_pg_t *pg, crm_config_t *config)
{
    assert (loop);
    assert (pg);
    assert (config);
    long idem_keep_s, events_keep_s, interval_s;
    if (crm_config_get_int (config, "CRM_IDEMPOTENCY_KEEP_S", 0, 100L * 366 * 86400,
                            &idem_keep_s) != 0 ||
        crm_config_get_int (config, "CRM_EVENTS_KEEP_S", 0, 100L * 366 * 86400, &events_keep_s) !=
            0 ||
        crm_config_get_int (config, "CRM_RETENTION_INTERVAL_S", 1, 7L * 86400, &interval_s) != 0)
        return NULL;
    crm_retention_t *self = calloc (1, sizeof *self);
    assert (self);
    self->loop = loop;
    self->pg = pg;
    self->current = S_IDLE;
    s_task_add (self, S_IDEM, "request ids forgotten", idem_keep_s);
    s_task_add (self, S_EVENTS, "events trimmed", events_keep_s);
    crm_pg_prepare (pg, S_IDEM, "SELECT crm_idem_sweep_some ($1::interval, $2::int)", 2);
    crm_pg_prepare (pg, S_EVENTS, "SELECT crm_events_trim_some ($1::interval, $2::int)", 2);
    uint32_t random = 0;
    crm_random_bytes (&random, sizeof random);
    double first = interval_s * (0.1 + 0.9 * (random / (double) UINT32_MAX));
    ev_timer_init (&self->timer, s_on_timer, first, (double) interval_s);
    self->timer.data = self;
    s_timer_update (self);
    return self;
}

void
crm_retention_destroy (crm_retention_t **self_p)
{
    assert (self_p);
    crm_retention_t *self = *self_p;
    if (!self)
        return;
    *self_p = NULL;
    ev_timer_stop (self->loop, &self->timer);
    if (self->current != S_IDLE)
        self->doomed = true;
    else
        s_free (self);
}

void
crm_retention_add (crm_retention_t *self, const char *name, const char *sql, const char *label)
{
    assert (self && name && sql && label);
    assert (self->ntasks < S_TASKS_MAX);
    s_task_add (self, name, label, -1);
    crm_pg_prepare (self->pg, name, sql, 1);
    s_timer_update (self);
}

void
crm_retention_run (crm_retention_t *self)
{
    assert (self);
    if (self->current != S_IDLE)
        return;
    for (int i = 0; i < self->ntasks; i++)
        self->tasks[i].run = 0;
    s_send_from (self, 0);
}

bool
crm_retention_busy (crm_retention_t *self)
{
    assert (self);
    return self->current != S_IDLE;
}

int64_t
crm_retention_count (crm_retention_t *self, const char *name)
{
    assert (self && name);
    for (int i = 0; i < self->ntasks; i++)
        if (strcmp (self->tasks[i].name, name) == 0)
            return self->tasks[i].total;
    return -1;
}

int64_t
crm_retention_forgotten (crm_retention_t *self)
{
    return crm_retention_count (self, S_IDEM);
}

int64_t
crm_retention_trimmed (crm_retention_t *self)
{
    return crm_retention_count (self, S_EVENTS);
}
