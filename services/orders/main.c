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
    CRM_APP_CONFIG_VARS,
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
    const crm_app_spec_t spec = {
        .program = "crm-orders",
        .summary = "The orders service of the suite: orders, tracking, late and delayed.",
        .service = "orders",
        .dsn_var = "CRM_ORDERS_DSN",
        .schema_var = "CRM_ORDERS_SCHEMA",
        .vars = s_vars,
        .migrations = orders_migrations,
        .migrations_count = orders_migrations_count,
        .desc = &crm__v1__orders__descriptor,
        .methods = orders_methods,
    };
    crm_app_t app;
    int rc = crm_app_init (&app, &spec, argc, argv);
    if (rc != 0)
        return rc > 0 ? EXIT_SUCCESS : EXIT_FAILURE;
    long sweep_s;
    if (crm_config_get_int (app.config, "CRM_ORDERS_SWEEP_S", 0, 86400, &sweep_s) != 0) {
        crm_app_destroy (&app);
        return EXIT_FAILURE;
    }
    orders_t orders = {
        .pg = app.pg,
        .events = app.events,
        .loop = app.loop,
    };
    orders_store_prepare (app.pg);
    orders_sweep_start (&orders, (double) sweep_s);
    rc = crm_app_serve (&app, &orders, s_on_stop, &orders);
    orders_sweep_stop (&orders);
    crm_app_destroy (&app);
    return rc == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
