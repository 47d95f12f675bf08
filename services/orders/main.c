/*  main.c - the orders service: read configuration, migrate, serve and sweep until SIGTERM. */
#include "orders.h"

#include <stdlib.h>

extern const crm_migration_t orders_migrations[];
extern const size_t orders_migrations_count;

static const crm_config_var_t s_vars[] = {
    {"CRM_ORDERS_DSN", "host=127.0.0.1 port=5432 dbname=crm user=orders",
     "PostgreSQL connection string of the orders database"},
    {"CRM_ORDERS_SCHEMA", "orders", "schema holding the service's tables"},
    {"CRM_ORDERS_SWEEP_S", "30",
     "seconds between sweeps marking late the orders whose promised time passed; 0: none"},
    {"CRM_BROKER_EVENTS_IN", "tcp://127.0.0.1:5556",
     "broker endpoint taking the live event stream (XSUB)"},
    {"CRM_DB_WAIT_S", "60", "seconds to wait for the database at start before giving up"},
    {"CRM_DRAIN_S", "10", "seconds to finish requests in flight after SIGTERM"},
    CRM_SERVICE_CONFIG_VARS,
    {NULL, NULL, NULL},
};

//  A stop signal came: no new late sweeps while in-flight calls finish.
static void
s_on_stop (void *arg)
{
    orders_sweep_stop (arg);
}

int
main (int argc, char **argv)
{
    zsys_handler_set (NULL);
    crm_config_t *config = crm_config_new (
        "crm-orders", "The orders service of the suite: orders, tracking, late and delayed.",
        s_vars);
    int rc = crm_config_parse_args (config, argc, argv);
    if (rc != 0) {
        crm_config_destroy (&config);
        return rc > 0 ? EXIT_SUCCESS : EXIT_FAILURE;
    }
    long wait_s, drain_s, sweep_s;
    if (crm_config_setup_log (config, "orders") != 0 ||
        crm_config_get_int (config, "CRM_DB_WAIT_S", 0, 86400, &wait_s) != 0 ||
        crm_config_get_int (config, "CRM_DRAIN_S", 0, 3600, &drain_s) != 0 ||
        crm_config_get_int (config, "CRM_ORDERS_SWEEP_S", 0, 86400, &sweep_s) != 0) {
        crm_config_destroy (&config);
        return EXIT_FAILURE;
    }
    const char *dsn = crm_config_get (config, "CRM_ORDERS_DSN");
    const char *schema = crm_config_get (config, "CRM_ORDERS_SCHEMA");

    if (crm_migrate_wait (dsn, schema, orders_migrations, orders_migrations_count, wait_s) != 0) {
        crm_config_destroy (&config);
        return EXIT_FAILURE;
    }

    struct ev_loop *loop = EV_DEFAULT;
    orders_t orders = {
        .pg = crm_pg_new (loop, dsn, schema),
        .loop = loop,
    };
    if (!orders.pg) {
        crm_error ("invalid CRM_ORDERS_DSN");
        crm_config_destroy (&config);
        return EXIT_FAILURE;
    }
    orders_store_prepare (orders.pg);
    //  The event log has a connection of its own: on the writes' connection
    //  each sequencer run and its commit would hold back the next write batch
    crm_pg_t *events_pg = crm_pg_new (loop, dsn, schema);
    orders.events =
        crm_events_new (loop, events_pg, "orders", crm_config_get (config, "CRM_BROKER_EVENTS_IN"));
    if (!orders.events) {
        crm_error ("invalid CRM_BROKER_EVENTS_IN");
        crm_pg_destroy (&events_pg);
        crm_pg_destroy (&orders.pg);
        crm_config_destroy (&config);
        return EXIT_FAILURE;
    }

    crm_service_t *service = crm_service_new (loop, config, "orders", &crm__v1__orders__descriptor,
                                              orders_methods, &orders);
    if (!service) {
        crm_events_destroy (&orders.events);
        crm_pg_destroy (&events_pg);
        crm_pg_destroy (&orders.pg);
        crm_config_destroy (&config);
        return EXIT_FAILURE;
    }
    crm_service_set_events (service, orders.events);
    orders_sweep_start (&orders, (double) sweep_s);
    crm_service_run (service, drain_s * 1000, s_on_stop, &orders);

    orders_sweep_stop (&orders);
    //  Events and the database go first: statements still in flight answer
    //  their calls UNAVAILABLE while the service can still send replies
    crm_service_set_events (service, NULL);
    crm_events_destroy (&orders.events);
    crm_pg_destroy (&events_pg);
    crm_pg_destroy (&orders.pg);
    crm_service_destroy (&service);
    crm_info ("stopped");
    crm_config_destroy (&config);
    return EXIT_SUCCESS;
}
