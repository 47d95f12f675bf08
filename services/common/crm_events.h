/*  crm_events.h - a service's event log: transactional outbox, gapless positions, catch-up, live fan-out.
 *
 *  A service's SQL write functions call crm_event_emit (topic, payload,
 *  request_id) inside the transaction of the change (services/common/
 *  migrations/0002_events.sql), so a change and its events commit together.
 *  A sequencer, run here on the loop, then gives the committed events the
 *  positions 1, 2, 3... of the service's log, publishes each live on the
 *  broker's XSUB as [topic][payload][position][request_id], and GetEvents
 *  answers a consumer catching up from its stored position. The payload of
 *  topic "<service>.<EventName>" is a crm.v1.<EventName>, stored as its proto3
 *  JSON. Why no consumer ever skips an event: docs/events.md.
 */
#ifndef CRM_EVENTS_H_INCLUDED
#define CRM_EVENTS_H_INCLUDED

#include <ev.h>
#include <stdint.h>

#include "crm_pg.h"
#include "crm_proto.h"
#include "crm_service.h"

//  Events per GetEvents answer when the request gives no limit, and the most
#define CRM_EVENTS_LIMIT_DEFAULT 100
#define CRM_EVENTS_LIMIT_MAX     1000
//  Default period of the sequencer, and events it positions per statement
#define CRM_EVENTS_INTERVAL_MS_DEFAULT 200
#define CRM_EVENTS_BATCH_DEFAULT       1000

typedef struct _crm_events_t crm_events_t;

//  The event log of service on pg (borrowed; must outlive the object, or be
//  destroyed after it). Registers its statements on pg and starts the
//  sequencer's timer. With publish_endpoint (the broker's XSUB,
//  CRM_BROKER_EVENTS_IN), connects a PUB socket there for the live fan-out,
//  through CURVE when the process has client keys (crm_curve.h); NULL or "":
//  no fan-out. NULL when the endpoint is not valid. Caller owns
//  the result.
crm_events_t *crm_events_new (struct ev_loop *loop, crm_pg_t *pg, const char *service,
                              const char *publish_endpoint);

//  Stops the sequencer, closes the PUB socket, answers GetEvents calls not
//  yet sent to the database UNAVAILABLE, frees; idempotent. Destroy it before
//  the crm_service whose calls it answers. Statements still in flight on pg
//  keep what they need until pg answers them, so pg may be destroyed before
//  or after.
void crm_events_destroy (crm_events_t **self_p);

//  Runs the sequencer now, or right after the run in flight.
void crm_events_kick (crm_events_t *self);

//  A write that may have emitted events committed: runs the sequencer in
//  10 ms, or that long after the run in flight, so
//  that the commits of that while share one run (one transaction, one
//  commit) rather than one each. What the service runtime calls.
void crm_events_kick_soon (crm_events_t *self);

//  Answers call (crm_call_reply) with a GetEventsResponse: the events after
//  request->after_position, at most request->limit (0: the default; capped),
//  and the log's last position. OUT_OF_RANGE, with last_position and no
//  events, when the events after that position were trimmed or the position
//  is beyond the log (the consumer must resync); INVALID_ARGUMENT for a
//  negative position; UNAVAILABLE while the database is down. request is
//  borrowed for the call only.
void crm_events_handle_get (crm_events_t *self, crm_call_t *call,
                            const Crm__V1__GetEventsRequest *request);

//  Period of the sequencer in milliseconds (>= 1; default 200).
void crm_events_set_interval (crm_events_t *self, int interval_ms);

//  Most events positioned by one sequencer statement (>= 1; default 1000);
//  a full batch makes the sequencer run again at once.
void crm_events_set_batch (crm_events_t *self, int batch);

//  Events the sequencer runs of this instance have positioned since it
//  started, for metrics and tests. A run whose transaction was rolled back
//  after it returned (rare; see crm_events.c) counts too.
int64_t crm_events_positioned (crm_events_t *self);

#endif
