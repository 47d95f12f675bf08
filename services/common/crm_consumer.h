/*  crm_consumer.h - applies another service's event log in this service's database, each event exactly once, in order.
 *
 *  A consumer follows one source service's event log (crm_events.h). It
 *  reads the position it has applied (crm_consumer_position table, libcrm's
 *  migration 0003_consumers.sql), asks the source GetEvents after it through
 *  the broker (plain 7/MDP client on the loop), and runs the service's apply
 *  statement once per event with ($1 position, $2 topic, $3 payload as
 *  proto3 JSON) as a group-committed write. The service's SQL apply function
 *  calls crm_consumer_advance (source, position) first and applies the effect
 *  only when that returns true, so the position moves in the transaction of
 *  the effect: nothing is applied twice or skipped, whatever fails when.
 *  It waits for new events on the broker's XPUB (a wake-up only) and on a
 *  poll timer, since PUB/SUB may drop. See docs/events.md, "Consuming".
 */
#ifndef CRM_CONSUMER_H_INCLUDED
#define CRM_CONSUMER_H_INCLUDED

#include <ev.h>
#include <stdint.h>

#include "crm_pg.h"

//  Events asked for per GetEvents when crm_consumer_new is given 0
#define CRM_CONSUMER_BATCH_DEFAULT 1000
//  Period of the poll when no live wake-up came, and the wait for a reply
#define CRM_CONSUMER_POLL_MS_DEFAULT    1000
#define CRM_CONSUMER_TIMEOUT_MS_DEFAULT 5000

typedef struct _crm_consumer_t crm_consumer_t;

//  What a consumer did since it started, for metrics and tests.
typedef struct {
    int64_t position;      //  Last position applied, as this consumer knows it
    int64_t last_position; //  The source's last position, from its last answer
    int64_t applied;       //  Events whose apply statement committed
    int64_t fetches;       //  GetEvents answered OK
    int64_t wakeups;       //  Live messages of the source received
    int64_t polls;         //  Poll timer runs while caught up
    int64_t apply_errors;  //  Apply statements that failed (each retried later)
    int64_t fetch_errors;  //  GetEvents not answered OK, or not at all
} crm_consumer_stats_t;

//  Follows the event log of service source (its MDP name; its topics are
//  "<source>.<EventName>") through the broker at broker_endpoint, applying
//  each event with the prepared statement apply_statement on pg, which the
//  service registered with three parameters: position bigint, topic text,
//  payload jsonb. events_out_endpoint is the broker's XPUB
//  (CRM_BROKER_EVENTS_OUT) for live wake-ups; NULL or "": poll only. Both
//  sockets go through CURVE when the process has client keys (crm_curve.h). batch:
//  events per GetEvents (0: the default). pg is borrowed and must outlive the
//  consumer: destroy the consumer first. Registers a statement named
//  "crm_consumer_position_<source>" on pg: one consumer per source per pg
//  (crm_pg refuses the name a second time, with an error line). NULL when an endpoint is not
//  valid. Caller owns the result.
crm_consumer_t *crm_consumer_new (struct ev_loop *loop, crm_pg_t *pg, const char *broker_endpoint,
                                  const char *events_out_endpoint, const char *source,
                                  const char *apply_statement, int batch);

//  Stops asking and applying, closes its sockets, frees; idempotent. Applies
//  in flight on pg still complete (or fail) in the database, and keep what
//  they need until pg answers them.
void crm_consumer_destroy (crm_consumer_t **self_p);

//  Period of the poll while caught up, in milliseconds (>= 1; default 1000).
void crm_consumer_set_interval (crm_consumer_t *self, int interval_ms);

//  How long a GetEvents may go unanswered before it is asked again, in
//  milliseconds (>= 1; default 5000).
void crm_consumer_set_timeout (crm_consumer_t *self, int timeout_ms);

//  The last position applied, as this consumer knows it.
int64_t crm_consumer_position (crm_consumer_t *self);

//  Fills stats with the consumer's figures.
void crm_consumer_stats (crm_consumer_t *self, crm_consumer_stats_t *stats);

#endif
