/*  crm_app.c - the life of a service program: settings, migrations, connections, event log, retention, serving, and the order they end in. */
#include "crm_app.h"

#include "crm_log.h"
#include "crm_util.h"

#include <assert.h>
#include <czmq.h>
#include <string.h>

//  How long a starting instance waits for its database before it registers anyway
#define S_READY_WAIT_MS 5000

int
crm_app_init (crm_app_t *app, const crm_app_spec_t *spec, int argc, char **argv)
{
    assert (app && spec);
    memset (app, 0, sizeof *app);
    app->spec = spec;
    //  The loop stops on the service runtime's signal handler, not czmq's
    zsys_handler_set (NULL);
    app->config = crm_config_new (spec->program, spec->summary, spec->vars);
    int rc = crm_config_parse_args (app->config, argc, argv);
    long wait_s = 0;
    if (rc == 0 && (crm_config_setup_log (app->config, spec->service) != 0 ||
                    crm_curve_client_setup (app->config) != 0 ||
                    crm_config_get_int (app->config, "CRM_DB_WAIT_S", 0, 86400, &wait_s) != 0 ||
                    crm_config_get_int (app->config, "CRM_DRAIN_S", 0, 3600, &app->drain_s) != 0))
        rc = -1;
    const char *dsn = rc == 0 ? crm_config_get (app->config, spec->dsn_var) : NULL;
    const char *schema = rc == 0 ? crm_config_get (app->config, spec->schema_var) : NULL;
    if (rc == 0 &&
        crm_migrate_wait (dsn, schema, spec->migrations, spec->migrations_count, wait_s) != 0)
        rc = -1;
    if (rc != 0) {
        crm_config_destroy (&app->config);
        return rc > 0 ? 1 : -1;
    }
    app->loop = EV_DEFAULT;
    app->pg = crm_pg_new (app->loop, dsn, schema);
    if (!app->pg) {
        crm_error ("invalid %s", spec->dsn_var);
        crm_app_destroy (app);
        return -1;
    }
    //  The event log has a connection of its own: on the statements' connection each
    //  sequencer run and its commit would hold back the next write batch
    app->events_pg = crm_pg_new (app->loop, dsn, schema);
    app->events = crm_events_new (app->loop, app->events_pg, spec->service,
                                  crm_config_get (app->config, "CRM_BROKER_EVENTS_IN"));
    if (!app->events) {
        crm_error ("invalid CRM_BROKER_EVENTS_IN");
        crm_app_destroy (app);
        return -1;
    }
    //  Old request ids and events go on the event log's connection, away from the writes
    app->retention = crm_retention_new (app->loop, app->events_pg, app->config);
    if (!app->retention) {
        crm_app_destroy (app);
        return -1;
    }
    return 0;
}

int
crm_app_serve (crm_app_t *app, void *ctx, crm_service_stop_fn *on_stop, void *arg)
{
    assert (app && app->pg);
    const crm_app_spec_t *spec = app->spec;
    int64_t ready_by = crm_mono_ms () + S_READY_WAIT_MS;
    //  Both connections: GetEvents is served on the event log's, and a request the
    //  broker hands over at once must not find it still connecting
    while ((!crm_pg_connected (app->pg) || !crm_pg_connected (app->events_pg)) &&
           crm_mono_ms () < ready_by)
        ev_run (app->loop, EVRUN_ONCE);
    app->service =
        crm_service_new (app->loop, app->config, spec->service, spec->desc, spec->methods, ctx);
    if (!app->service)
        return -1;
    crm_service_set_events (app->service, app->events);
    crm_service_run (app->service, app->drain_s * 1000, on_stop, arg);
    return 0;
}

void
crm_app_destroy (crm_app_t *app)
{
    assert (app);
    if (app->service)
        crm_service_set_events (app->service, NULL);
    crm_retention_destroy (&app->retention);
    crm_events_destroy (&app->events);
    crm_pg_destroy (&app->events_pg);
    crm_pg_destroy (&app->pg);
    crm_service_destroy (&app->service);
    if (app->config)
        crm_info ("stopped");
    crm_config_destroy (&app->config);
}
