/*  main.c - the broker program: read configuration, bind, route until SIGTERM or SIGINT. */
#include "broker.h"

#include "crm_config.h"
#include "crm_log.h"

#include <czmq.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

static const crm_config_var_t s_vars[] = {
    {"CRM_BROKER_ENDPOINT", "tcp://127.0.0.1:5555",
     "7/MDP endpoint the broker binds for clients (and workers, unless the next is set)"},
    {"CRM_BROKER_WORKER_ENDPOINT", "",
     "7/MDP endpoint for workers only; when set, CRM_BROKER_ENDPOINT refuses workers, so it can "
     "be published without letting clients register as services"},
    {"CRM_BROKER_EVENTS_IN", "tcp://127.0.0.1:5556", "XSUB endpoint event publishers connect to"},
    {"CRM_BROKER_EVENTS_OUT", "tcp://127.0.0.1:5557", "XPUB endpoint event subscribers connect to"},
    {"CRM_BROKER_HEARTBEAT_MS", "2500", "heartbeat interval to and from workers, ms"},
    {"CRM_BROKER_LIVENESS", "3", "heartbeat intervals a silent worker lives before it is dropped"},
    {"CRM_BROKER_NO_WORKER_MS", "3000",
     "how long a request waits for a service with no worker before UNAVAILABLE, ms"},
    {"CRM_BROKER_QUEUE_MAX", "10000",
     "requests one service may hold waiting for a worker; more get RESOURCE_EXHAUSTED"},
    {"CRM_BROKER_SECRET_KEY", "",
     "CURVE secret key (Z85; crmctl keygen): requests and events in and out are then encrypted "
     "and only known clients connect; needs CRM_BROKER_WORKER_ENDPOINT; empty: in the clear"},
    {"CRM_BROKER_CLIENT_KEYS", "",
     "with CURVE, public keys of the clients admitted, separated by commas; * admits any client "
     "that knows the broker's public key"},
    {"CRM_BROKER_CLIENT_KEYS_FILE", "",
     "with CURVE, a file of client public keys admitted, one a line (# starts a comment), read "
     "again whenever it changes"},
    {NULL, NULL, NULL},
};

static broker_t *s_broker = NULL;

static void
s_on_signal (int signum)
{
    (void) signum;
    if (s_broker)
        broker_stop (s_broker);
}

int
main (int argc, char **argv)
{
    //  The loop stops on its own signal handler, not czmq's
    zsys_handler_set (NULL);
    crm_config_t *config = crm_config_new (
        "crm-broker", "The 7/MDP request broker and live event fan-out of the suite.", s_vars);
    int rc = crm_config_parse_args (config, argc, argv);
    if (rc != 0) {
        crm_config_destroy (&config);
        return rc > 0 ? EXIT_SUCCESS : EXIT_FAILURE;
    }
    long heartbeat_ms, liveness, no_worker_ms, queue_max;
    if (crm_config_setup_log (config, "broker") != 0 ||
        crm_config_get_int (config, "CRM_BROKER_HEARTBEAT_MS", 10, 3600000, &heartbeat_ms) != 0 ||
        crm_config_get_int (config, "CRM_BROKER_LIVENESS", 1, 100, &liveness) != 0 ||
        crm_config_get_int (config, "CRM_BROKER_NO_WORKER_MS", 0, 3600000, &no_worker_ms) != 0 ||
        crm_config_get_int (config, "CRM_BROKER_QUEUE_MAX", 0, 10000000, &queue_max) != 0) {
        crm_config_destroy (&config);
        return EXIT_FAILURE;
    }
    broker_config_t settings;
    broker_config_defaults (&settings);
    settings.endpoint = crm_config_get (config, "CRM_BROKER_ENDPOINT");
    settings.worker_endpoint = crm_config_get (config, "CRM_BROKER_WORKER_ENDPOINT");
    settings.events_in = crm_config_get (config, "CRM_BROKER_EVENTS_IN");
    settings.events_out = crm_config_get (config, "CRM_BROKER_EVENTS_OUT");
    settings.heartbeat_ms = (int) heartbeat_ms;
    settings.liveness = (int) liveness;
    settings.no_worker_ms = (int) no_worker_ms;
    settings.queue_max = (int) queue_max;
    settings.curve_secret_key = crm_config_get (config, "CRM_BROKER_SECRET_KEY");
    settings.client_keys = crm_config_get (config, "CRM_BROKER_CLIENT_KEYS");
    settings.client_keys_file = crm_config_get (config, "CRM_BROKER_CLIENT_KEYS_FILE");

    s_broker = broker_new (&settings);
    crm_config_destroy (&config);
    if (!s_broker)
        return EXIT_FAILURE;

    struct sigaction action;
    memset (&action, 0, sizeof action);
    action.sa_handler = s_on_signal;
    sigemptyset (&action.sa_mask);
    sigaction (SIGTERM, &action, NULL);
    sigaction (SIGINT, &action, NULL);

    rc = broker_run (s_broker);
    broker_t *broker = s_broker;
    s_broker = NULL;
    broker_destroy (&broker);
    return rc == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
