/*  test_app.c - a service program's life through crm_app: start, serve through the broker, stop on SIGTERM, refusals at start. */
#include "crm_app.h"
#include "crm_log.h"
#include "crm_mdp.h"
#include "crm_proto.h"
#include "crm_test.h"
#include "crm_test_broker.h"
#include "crm_test_kit.h"

#include "../../broker/broker.c"
#include "../../broker/zap.c"

#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define SCHEMA "test_app"

static const crm_config_var_t s_vars[] = {
    {"CRM_TEST_APP_DSN", "", "the test's database"},
    {"CRM_TEST_APP_SCHEMA", SCHEMA, "its schema"},
    CRM_APP_CONFIG_VARS,
    {NULL, NULL, NULL},
};

static crm_app_t s_app;
static int s_stops;    //  on_stop calls
static int s_get_code; //  Status of the client's GetEvents
static char s_broker[256];
static const char *s_dsn;

static void
s_handle_get (crm_call_t *call, ProtobufCMessage *request, void *ctx)
{
    crm_app_t *app = ctx;
    crm_events_handle_get (app->events, call, (Crm__V1__GetEventsRequest *) request);
}

static const crm_method_t s_methods[] = {{"GetEvents", s_handle_get}, {NULL, NULL}};

static crm_app_spec_t
s_spec (void)
{
    crm_app_spec_t spec = {
        .program = "test-app",
        .summary = "crm_app under test",
        .service = "testapp",
        .dsn_var = "CRM_TEST_APP_DSN",
        .schema_var = "CRM_TEST_APP_SCHEMA",
        .vars = s_vars,
        .migrations = NULL,
        .migrations_count = 0,
        .desc = &crm_test_events_service,
        .methods = s_methods,
    };
    return spec;
}

static void
s_on_stop (void *arg)
{
    CHECK (arg == &s_app);
    s_stops++;
}

//  A client, as another program: calls the service through the broker, then
//  sends the process SIGTERM
static void *
s_client (void *arg)
{
    (void) arg;
    crm_mdp_client_t *client = crm_mdp_client_new (s_broker);
    if (crm_test_mmi_wait (client, "testapp", 10000)) {
        Crm__V1__RequestMeta meta = CRM__V1__REQUEST_META__INIT;
        meta.request_id = (char *) "app-1";
        Crm__V1__GetEventsRequest request = CRM__V1__GET_EVENTS_REQUEST__INIT;
        zmsg_t *body = crm_proto_request_new ("GetEvents", &meta, &request.base);
        zmsg_t *reply = crm_mdp_client_call (client, "testapp", &body);
        Crm__V1__Status *status;
        zframe_t *payload;
        if (reply && crm_proto_reply_parse (reply, &status, &payload) == 0) {
            s_get_code = (int) status->code;
            crm__v1__status__free_unpacked (status, NULL);
        }
        zmsg_destroy (&reply);
    }
    crm_mdp_client_destroy (&client);
    kill (getpid (), SIGTERM);
    return NULL;
}

static void
test_life (void)
{
    const char *dsn = s_dsn;
    crm_test_broker_t broker;
    crm_test_broker_init (&broker, true);
    if (crm_test_broker_start (&broker) != 0)
        return;
    snprintf (s_broker, sizeof s_broker, "%s", broker.endpoint);
    setenv ("CRM_BROKER_ENDPOINT", s_broker, 1);
    setenv ("CRM_BROKER_EVENTS_IN", broker_events_in (broker.broker), 1);
    setenv ("CRM_TEST_APP_DSN", dsn, 1);
    setenv ("CRM_DB_WAIT_S", "10", 1);
    setenv ("CRM_BROKER_HEARTBEAT_MS", "500", 1);

    crm_app_spec_t spec = s_spec ();
    char *argv[] = {(char *) "test-app", NULL};
    CHECK_INT (crm_app_init (&s_app, &spec, 1, argv), 0);
    CHECK (s_app.loop && s_app.config && s_app.pg && s_app.events_pg);
    CHECK (s_app.events && s_app.retention && !s_app.service);
    CHECK (s_app.pg != s_app.events_pg);

    pthread_t client;
    pthread_create (&client, NULL, s_client, NULL);
    CHECK_INT (crm_app_serve (&s_app, &s_app, s_on_stop, &s_app), 0);
    pthread_join (client, NULL);
    CHECK_INT (s_stops, 1);
    CHECK_INT (s_get_code, 0);
    CHECK (s_app.service != NULL);
    crm_app_destroy (&s_app);
    CHECK (!s_app.config && !s_app.pg && !s_app.events_pg && !s_app.events);
    CHECK (!s_app.retention && !s_app.service);
    crm_app_destroy (&s_app); //  Twice is harmless
    crm_test_broker_stop (&broker);
}

static void
test_refusals (void)
{
    const char *dsn = s_dsn;
    crm_app_spec_t spec = s_spec ();
    setenv ("CRM_TEST_APP_DSN", dsn, 1);
    //  --help: printed, 1
    char *help[] = {(char *) "test-app", (char *) "--help", NULL};
    CHECK_INT (crm_app_init (&s_app, &spec, 2, help), 1);
    CHECK (s_app.config == NULL);
    //  An argument it does not know
    char *unknown[] = {(char *) "test-app", (char *) "--frobnicate", NULL};
    CHECK_INT (crm_app_init (&s_app, &spec, 2, unknown), -1);
    char *argv[] = {(char *) "test-app", NULL};
    //  A setting that is not a number, half a CURVE setting, a bad retention setting
    const char *bad[][2] = {{"CRM_DRAIN_S", "soon"},
                            {"CRM_DB_WAIT_S", "-1"},
                            {"CRM_BROKER_PUBLIC_KEY", "abc"},
                            {"CRM_RETENTION_INTERVAL_S", "0"}};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        setenv (bad[i][0], bad[i][1], 1);
        CHECK_INT (crm_app_init (&s_app, &spec, 1, argv), -1);
        CHECK (s_app.config == NULL && s_app.pg == NULL);
        unsetenv (bad[i][0]);
    }
    //  No database within CRM_DB_WAIT_S
    setenv ("CRM_TEST_APP_DSN", "host=127.0.0.1 port=1 connect_timeout=1", 1);
    setenv ("CRM_DB_WAIT_S", "0", 1);
    CHECK_INT (crm_app_init (&s_app, &spec, 1, argv), -1);
    CHECK (s_app.config == NULL && s_app.pg == NULL);
    //  An event fan-out endpoint that is none
    setenv ("CRM_TEST_APP_DSN", dsn, 1);
    setenv ("CRM_BROKER_EVENTS_IN", "nowhere", 1);
    CHECK_INT (crm_app_init (&s_app, &spec, 1, argv), -1);
    CHECK (s_app.config == NULL && s_app.pg == NULL && s_app.events_pg == NULL);
}

int
main (void)
{
    crm_test_zsys_init ();
    s_dsn = crm_test_dsn ("test_app");
    if (!s_dsn)
        return 77;
    PGconn *admin = crm_test_connect (s_dsn, NULL);
    crm_test_schema_drop (admin, SCHEMA);
    //  crm_app_init starts the log on stdout, at CRM_LOG_LEVEL
    setenv ("CRM_LOG_LEVEL", "error", 1);
    setenv ("CRM_LOG_FORMAT", "text", 1);
    RUN (test_refusals);
    RUN (test_life);
    CHECK_INT (crm_test_value (admin,
                               "SELECT count(*) FROM information_schema.tables "
                               "WHERE table_schema = '" SCHEMA "' AND table_name = 'crm_outbox'"),
               1);
    crm_test_schema_drop (admin, SCHEMA);
    PQfinish (admin);
    return TEST_DONE ("test_app");
}
