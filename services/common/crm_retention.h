/*  crm_retention.h - forgets old request ids and trims the event log, on a timer, in every service instance.
 *
 *  The idempotency store (crm_idem.h) keeps a row per request id and the
 *  event log (crm_events.h) a row per event: without retention both grow for
 *  ever. Every interval a retention run deletes request ids older than the
 *  idempotency window and events older than the event window, a bounded
 *  batch per statement (libcrm's migration 0006_retention.sql) until no full
 *  batch is left, as group-committed writes on the given connection. Several
 *  instances may run at once: they skip or wait for each other's rows, and
 *  what is kept of the log is always a suffix holding the newest event.
 *  A resend arriving after the idempotency window is treated as new; a
 *  consumer further behind than the event window is told to resync. A
 *  service may add periodic statements of its own to the run.
 */
#ifndef CRM_RETENTION_H_INCLUDED
#define CRM_RETENTION_H_INCLUDED

#include <ev.h>
#include <stdbool.h>
#include <stdint.h>

#include "crm_config.h"
#include "crm_pg.h"

//  Rows one statement of a run deletes at most
#define CRM_RETENTION_BATCH 1000

typedef struct _crm_retention_t crm_retention_t;

//  Starts the retention runs on pg (borrowed; registers two statements on
//  it, so one retention per pg), reading CRM_IDEMPOTENCY_KEEP_S,
//  CRM_EVENTS_KEEP_S and CRM_RETENTION_INTERVAL_S from config. The first run
//  comes after a random part of the interval, so instances started together
//  do not run together. NULL, with an error line, when a setting is not
//  valid. Caller owns the result.
crm_retention_t *crm_retention_new (struct ev_loop *loop, crm_pg_t *pg, crm_config_t *config);

//  Stops the timer and frees; idempotent. A statement still in flight keeps
//  what it needs until pg answers it: pg may be destroyed before or after.
void crm_retention_destroy (crm_retention_t **self_p);

//  Rows a statement added by crm_retention_add deals with at most per call
//  (its $1), as the built-in ones: CRM_RETENTION_BATCH. At most
//  CRM_RETENTION_TASKS_MAX added statements.
#define CRM_RETENTION_TASKS_MAX 4

//  Adds a statement of the service's own to every run, after the built-in
//  ones: sql takes one parameter, the batch (int), and returns one row whose
//  first column counts what it dealt with; while that reaches the batch, it
//  is called again. Registered on pg as name; label names its count in the
//  run's log line ("name words checked"). Starts the timer if the windows
//  had left it off.
void crm_retention_add (crm_retention_t *self, const char *name, const char *sql,
                        const char *label);

//  Starts a run now unless one is going on, or the connection is down.
void crm_retention_run (crm_retention_t *self);

//  True while a run is going on.
bool crm_retention_busy (crm_retention_t *self);

//  Rows this instance deleted since it started.
int64_t crm_retention_forgotten (crm_retention_t *self); //  request ids
int64_t crm_retention_trimmed (crm_retention_t *self);   //  events

//  What the statement called name (built-in or added) dealt with since start;
//  -1 when there is no such statement.
int64_t crm_retention_count (crm_retention_t *self, const char *name);

//  Configuration variables read by crm_retention_new, for a program's table.
#define CRM_RETENTION_CONFIG_VARS                                                                  \
    {"CRM_IDEMPOTENCY_KEEP_S", "604800",                                                           \
     "seconds a request id is remembered: a resend within them gets the first answer; "            \
     "0: for ever"},                                                                               \
        {"CRM_EVENTS_KEEP_S", "2592000",                                                           \
         "seconds an event stays in the event log for consumers to catch up; 0: for ever"},        \
    {                                                                                              \
        "CRM_RETENTION_INTERVAL_S", "600", "seconds between retention runs"                        \
    }

#endif
