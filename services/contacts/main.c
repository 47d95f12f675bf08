/*  main.c - the contacts service: read configuration, migrate, serve until SIGTERM. */
#include "contacts.h"

#include <stdlib.h>

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
    {"CRM_BROKER_EVENTS_IN", "tcp://127.0.0.1:5556",
     "broker endpoint taking the live event stream (XSUB)"},
    {"CRM_BROKER_EVENTS_OUT", "tcp://127.0.0.1:5557",
     "broker endpoint giving the live event stream (XPUB), for wake-ups; empty: poll only"},
    {"CRM_CONTACTS_ORDERS_SOURCE", "orders",
     "MDP service of the orders events feeding the value figures; empty: not kept"},
    {"CRM_DB_WAIT_S", "60", "seconds to wait for the database at start before giving up"},
    {"CRM_DRAIN_S", "10", "seconds to finish requests in flight after SIGTERM"},
    CRM_SERVICE_CONFIG_VARS,
    {NULL, NULL, NULL},
};

int
main (int argc, char **argv)
{
    zsys_handler_set (NULL);
    crm_config_t *config =
        crm_config_new ("crm-contacts", "The contacts service of the suite.", s_vars);
    int rc = crm_config_parse_args (config, argc, argv);
    if (rc != 0) {
        crm_config_destroy (&config);
        return rc > 0 ? EXIT_SUCCESS : EXIT_FAILURE;
    }
    long wait_s, drain_s;
    if (crm_config_setup_log (config, "contacts") != 0 ||
        crm_config_get_int (config, "CRM_DB_WAIT_S", 0, 86400, &wait_s) != 0 ||
        crm_config_get_int (config, "CRM_DRAIN_S", 0, 3600, &drain_s) != 0) {
        crm_config_destroy (&config);
        return EXIT_FAILURE;
    }
    const char *dsn = crm_config_get (config, "CRM_CONTACTS_DSN");
    const char *schema = crm_config_get (config, "CRM_CONTACTS_SCHEMA");

    if (crm_migrate_wait (dsn, schema, contacts_migrations, contacts_migrations_count, wait_s) !=
        0) {
        crm_config_destroy (&config);
        return EXIT_FAILURE;
    }

    struct ev_loop *loop = EV_DEFAULT;
    contacts_t contacts = {
        .pg = crm_pg_new (loop, dsn, schema),
        .calling_code = crm_config_get (config, "CRM_DEFAULT_CALLING_CODE"),
        .branch_codes = crm_config_get (config, "CRM_BRANCH_CALLING_CODES"),
    };
    if (!contacts.pg) {
        crm_error ("invalid CRM_CONTACTS_DSN");
        crm_config_destroy (&config);
        return EXIT_FAILURE;
    }
    contacts_store_prepare (contacts.pg);
    //  The event log has a connection of its own: on the writes' connection
    //  each sequencer run and its commit would hold back the next write batch
    crm_pg_t *events_pg = crm_pg_new (loop, dsn, schema);
    contacts.events = crm_events_new (loop, events_pg, "contacts",
                                      crm_config_get (config, "CRM_BROKER_EVENTS_IN"));
    if (!contacts.events) {
        crm_error ("invalid CRM_BROKER_EVENTS_IN");
        crm_pg_destroy (&events_pg);
        crm_pg_destroy (&contacts.pg);
        crm_config_destroy (&config);
        return EXIT_FAILURE;
    }

    //  Registering with the broker before the database answers would only
    //  earn the first requests UNAVAILABLE; wait for it a little first
    int64_t ready_by = crm_mono_ms () + 5000;
    while (!crm_pg_connected (contacts.pg) && crm_mono_ms () < ready_by)
        ev_run (loop, EVRUN_ONCE);

    crm_service_t *service = crm_service_new (
        loop, config, "contacts", &crm__v1__contacts__descriptor, contacts_methods, &contacts);
    if (!service) {
        crm_events_destroy (&contacts.events);
        crm_pg_destroy (&events_pg);
        crm_pg_destroy (&contacts.pg);
        crm_config_destroy (&config);
        return EXIT_FAILURE;
    }
    crm_service_set_events (service, contacts.events);
    const char *orders_source = crm_config_get (config, "CRM_CONTACTS_ORDERS_SOURCE");
    if (*orders_source) {
        contacts.orders =
            crm_consumer_new (loop, contacts.pg, crm_config_get (config, "CRM_BROKER_ENDPOINT"),
                              crm_config_get (config, "CRM_BROKER_EVENTS_OUT"), orders_source,
                              "contacts_apply_orders_event", 0);
        if (!contacts.orders) {
            crm_error ("invalid CRM_BROKER_ENDPOINT or CRM_BROKER_EVENTS_OUT");
            crm_events_destroy (&contacts.events);
            crm_pg_destroy (&events_pg);
            crm_pg_destroy (&contacts.pg);
            crm_service_destroy (&service);
            crm_config_destroy (&config);
            return EXIT_FAILURE;
        }
    }
    crm_service_run (service, drain_s * 1000, NULL, NULL);

    //  The consumer, events and the database go first: statements still in
    //  flight answer their calls UNAVAILABLE while the service can still send
    //  replies (the consumer's applies in flight commit or not, both fine)
    crm_consumer_destroy (&contacts.orders);
    crm_service_set_events (service, NULL);
    crm_events_destroy (&contacts.events);
    crm_pg_destroy (&events_pg);
    crm_pg_destroy (&contacts.pg);
    crm_service_destroy (&service);
    crm_info ("stopped");
    crm_config_destroy (&config);
    return EXIT_SUCCESS;
}
