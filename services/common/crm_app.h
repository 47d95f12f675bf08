/*  crm_app.h - the life of a service program: settings, migrations, connections, event log, retention, serving, and the order they end in.
 *
 *  Every service program does the same around its own handlers: read the
 *  configuration (--help), start the log and the CURVE client keys, wait for
 *  the database and migrate its schema, open a connection for its statements
 *  and one for its event log, start the event log and the retention run,
 *  register with the broker once the database answers, serve until SIGTERM,
 *  and tear down in the order that lets statements still in flight answer
 *  their calls. A main is then crm_app_init, its own set-up (statements,
 *  consumers, timers), crm_app_serve, its own tear-down, crm_app_destroy.
 */
#ifndef CRM_APP_H_INCLUDED
#define CRM_APP_H_INCLUDED

#include <ev.h>
#include <protobuf-c/protobuf-c.h>
#include <stddef.h>

#include "crm_config.h"
#include "crm_curve.h"
#include "crm_events.h"
#include "crm_migrate.h"
#include "crm_pg.h"
#include "crm_retention.h"
#include "crm_service.h"

//  What a service program is.
typedef struct {
    const char *program;    //  "crm-orders", for --help
    const char *summary;    //  One line for --help
    const char *service;    //  "orders": MDP service, log service, event topics' prefix
    const char *dsn_var;    //  Its DSN's variable, "CRM_ORDERS_DSN"
    const char *schema_var; //  Its schema's variable, "CRM_ORDERS_SCHEMA"
    //  Its configuration table: its own variables, CRM_APP_CONFIG_VARS, {NULL}
    const crm_config_var_t *vars;
    const crm_migration_t *migrations; //  Its schema's migrations
    size_t migrations_count;
    const ProtobufCServiceDescriptor *desc; //  Its proto service
    const crm_method_t *methods;            //  Its handlers, ended by {NULL}
} crm_app_spec_t;

//  A running service program; the fields are for the program to use.
typedef struct {
    const crm_app_spec_t *spec; //  Borrowed from crm_app_init
    struct ev_loop *loop;
    crm_config_t *config;
    crm_pg_t *pg;               //  The connection of the service's statements
    crm_pg_t *events_pg;        //  The event log's (and the retention's) connection
    crm_events_t *events;       //  The service's event log
    crm_retention_t *retention; //  Add the service's own periodic statements here
    crm_service_t *service;     //  Set by crm_app_serve
    long drain_s;
} crm_app_t;

//  Reads the configuration (spec is borrowed and must outlive app) from argv and the environment, starts the log and
//  the CURVE client keys, migrates (waiting CRM_DB_WAIT_S for the database),
//  and makes the connections, the event log and the retention. 0: go on
//  (then crm_app_destroy at the end); 1: --help was printed, exit 0; -1: a
//  log line said why, exit 1. On anything but 0, app holds nothing.
int crm_app_init (crm_app_t *app, const crm_app_spec_t *spec, int argc, char **argv);

//  Waits a little for the database, on both connections (registering before
//  they answer would only earn the first requests UNAVAILABLE), registers with the broker with
//  ctx for the handlers, and runs until SIGTERM or SIGINT, then until the
//  calls in flight are answered or CRM_DRAIN_S passed; on_stop (may be NULL)
//  is called with arg when the signal comes. 0, or -1 when the service could
//  not start (a log line says why).
int crm_app_serve (crm_app_t *app, void *ctx, crm_service_stop_fn *on_stop, void *arg);

//  Stops the retention and the event log, closes the connections (their
//  statements in flight answer UNAVAILABLE while the service can still
//  reply), then the service and the configuration. Destroy what uses the
//  connections (consumers, timers) before this.
void crm_app_destroy (crm_app_t *app);

//  Configuration variables of every service program, for its table.
#define CRM_APP_CONFIG_VARS                                                                        \
    {"CRM_BROKER_EVENTS_IN", "tcp://127.0.0.1:5556",                                               \
     "broker endpoint taking the live event stream (XSUB)"},                                       \
        {"CRM_DB_WAIT_S", "60", "seconds to wait for the database at start before giving up"},     \
        {"CRM_DRAIN_S", "10", "seconds to finish requests in flight after SIGTERM"},               \
        CRM_SERVICE_CONFIG_VARS, CRM_RETENTION_CONFIG_VARS, CRM_CURVE_CLIENT_CONFIG_VARS

#endif
