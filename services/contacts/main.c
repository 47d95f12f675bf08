/*  main.c - the contacts service: read configuration, migrate, serve until SIGTERM. */
#include "contacts.h"

#include <stdlib.h>
#include <string.h>

extern const crm_migration_t contacts_migrations[];
extern const size_t contacts_migrations_count;

static const crm_config_var_t s_vars[] = {
    {"CRM_CONTACTS_DSN", "host=127.0.0.1 port=5432 dbname=crm user=contacts",
     "PostgreSQL connection string of the contacts database"},
    {"CRM_CONTACTS_SCHEMA", "contacts", "schema holding the service's tables"},
    {"CRM_DEFAULT_CALLING_CODE", "1",
     "country calling code assumed for phone numbers given without one"},
    {"CRM_BRANCH_CALLING_CODES", "",
     "per-branch calling codes for national numbers, e.g. \"riga-1=371,berlin-2=49\""},
    {"CRM_BROKER_EVENTS_OUT", "tcp://127.0.0.1:5557",
     "broker endpoint giving the live event stream (XPUB), for wake-ups; empty: poll only"},
    {"CRM_CONTACTS_ORDERS_SOURCE", "orders",
     "\"orders\": value figures from the orders service's events; empty: not kept"},
    CRM_APP_CONFIG_VARS,
    {NULL, NULL, NULL},
};

int
main (int argc, char **argv)
{
    const crm_app_spec_t spec = {
        .program = "crm-contacts",
        .summary = "The contacts service of the suite.",
        .service = "contacts",
        .dsn_var = "CRM_CONTACTS_DSN",
        .schema_var = "CRM_CONTACTS_SCHEMA",
        .vars = s_vars,
        .migrations = contacts_migrations,
        .migrations_count = contacts_migrations_count,
        .desc = &crm__v1__contacts__descriptor,
        .methods = contacts_methods,
    };
    crm_app_t app;
    int rc = crm_app_init (&app, &spec, argc, argv);
    if (rc != 0)
        return rc > 0 ? EXIT_SUCCESS : EXIT_FAILURE;
    contacts_t contacts = {
        .pg = app.pg,
        .events = app.events,
        .calling_code = crm_config_get (app.config, "CRM_DEFAULT_CALLING_CODE"),
        .branch_codes = crm_config_get (app.config, "CRM_BRANCH_CALLING_CODES"),
    };
    contacts_store_prepare (app.pg);
    //  Name words a rename gave up while others were adding words (0006_name_words_prune.sql)
    crm_retention_add (app.retention, "contact_name_words_prune",
                       "SELECT contact_name_words_prune ($1::int)", "name words checked");
    //  The apply keeps its position under "orders" (0003_value_figures.sql): another
    //  name would read one position and move another
    const char *orders_source = crm_config_get (app.config, "CRM_CONTACTS_ORDERS_SOURCE");
    if (*orders_source && strcmp (orders_source, "orders") != 0) {
        crm_error ("CRM_CONTACTS_ORDERS_SOURCE is \"orders\" or empty, not \"%s\"", orders_source);
        crm_app_destroy (&app);
        return EXIT_FAILURE;
    }
    if (*orders_source) {
        contacts.orders =
            crm_consumer_new (app.loop, app.pg, crm_config_get (app.config, "CRM_BROKER_ENDPOINT"),
                              crm_config_get (app.config, "CRM_BROKER_EVENTS_OUT"), orders_source,
                              "contacts_apply_orders_event", 0);
        if (!contacts.orders) {
            crm_error ("invalid CRM_BROKER_ENDPOINT or CRM_BROKER_EVENTS_OUT");
            crm_app_destroy (&app);
            return EXIT_FAILURE;
        }
    }
    rc = crm_app_serve (&app, &contacts, NULL, NULL);
    //  The consumer goes before the connections: its applies in flight commit or not, both fine
    crm_consumer_destroy (&contacts.orders);
    crm_app_destroy (&app);
    return rc == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
