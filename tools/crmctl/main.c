/*  main.c - crmctl: call any service with JSON, publish branch events, tail the live event stream. */
#include "crm.h"

#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

//  Exit codes besides the status codes 0..16 a call returns
#define S_EXIT_USAGE 64

static const crm_config_var_t s_vars[] = {
    {"CRM_BROKER_ENDPOINT", "tcp://127.0.0.1:5555", "broker endpoint for requests"},
    {"CRM_BROKER_EVENTS_OUT", "tcp://127.0.0.1:5557", "broker endpoint of the live event stream"},
    {"CRM_BRANCH", "", "branch sent with requests when --branch is not given"},
    {"CRM_TIMEOUT_MS", "5000", "milliseconds to wait for each reply"},
    {"CRM_RETRIES", "2", "resends (same request id) after a timeout or UNAVAILABLE"},
    CRM_CURVE_CLIENT_CONFIG_VARS,
    {NULL, NULL, NULL},
};

static void
s_usage (FILE *out)
{
    fprintf (out,
             "usage:\n"
             "  crmctl call [--branch B] [--request-id ID] [--pretty] SERVICE METHOD [JSON|-]\n"
             "      send one request; JSON is the request message (default {}); - reads stdin.\n"
             "      Prints the response as JSON; the exit code is the status code (0 = OK,\n"
             "      5 = NOT_FOUND, 14 = UNAVAILABLE, ...); errors go to stderr.\n"
             "  crmctl publish [--window N] [--retries N] [--timeout-ms N] [--branch B] FILE|-\n"
             "      send the branch events of FILE (- reads stdin), a JSON object a line:\n"
             "        {\"service\": \"orders\", \"method\": \"PlaceOrder\",\n"
             "         \"requestId\": \"...\", \"branch\": \"...\", \"request\": {...}}\n"
             "      requestId (required) is the branch's own event id, the idempotency key;\n"
             "      branch defaults to --branch or CRM_BRANCH; request is the method's request\n"
             "      message as in call. At least once: up to N events in flight (default 64),\n"
             "      each resent with the same id after a timeout (--timeout-ms, default\n"
             "      CRM_TIMEOUT_MS), UNAVAILABLE or RESOURCE_EXHAUSTED, up to --retries times\n"
             "      (default 8), waiting longer each time. Events in flight together may be\n"
             "      stored in any order: use --window 1 when the order of lines matters (two\n"
             "      status changes of one order). Prints \"sent N, acknowledged N,\n"
             "      duplicates N, failed N\" (duplicates: stored before, e.g. a file sent\n"
             "      again); each failure goes to stderr with its line number. Exit 0 only\n"
             "      if none failed, 1 otherwise.\n"
             "  crmctl describe [SERVICE]\n"
             "      list the services, or a service's methods with their message types.\n"
             "  crmctl ping [SERVICE]\n"
             "      exit 0 when the broker answers (and SERVICE has an instance), else 14;\n"
             "      for health checks.\n"
             "  crmctl tail [TOPIC-PREFIX...]\n"
             "      print the live event stream as JSON lines until interrupted.\n"
             "  crmctl keygen [--z85]\n"
             "      print a new CURVE key pair (public-key, secret-key) in hex, or in Z85,\n"
             "      for the broker or a client; see docs/security.md.\n"
             "  crmctl --help\n"
             "      this text and the environment variables.\n");
}

static char *
s_read_all (FILE *in)
{
    size_t size = 0, cap = 4096;
    char *buf = malloc (cap);
    size_t n;
    while (buf && (n = fread (buf + size, 1, cap - size - 1, in)) > 0) {
        size += n;
        if (cap - size < 2) {
            char *bigger = realloc (buf, cap * 2);
            if (!bigger) {
                free (buf);
                return NULL;
            }
            buf = bigger;
            cap *= 2;
        }
    }
    if (buf)
        buf[size] = '\0';
    return buf;
}

static int
s_call (crm_config_t *config, int argc, char **argv)
{
    const char *branch = crm_config_get (config, "CRM_BRANCH");
    const char *request_id = NULL;
    int pretty = 0;
    static const struct option options[] = {
        {"branch", required_argument, NULL, 'b'},
        {"request-id", required_argument, NULL, 'r'},
        {"pretty", no_argument, NULL, 'p'},
        {NULL, 0, NULL, 0},
    };
    int opt;
    optind = 1;
    while ((opt = getopt_long (argc, argv, "+b:r:p", options, NULL)) != -1) {
        if (opt == 'b')
            branch = optarg;
        else if (opt == 'r')
            request_id = optarg;
        else if (opt == 'p')
            pretty = 1;
        else {
            s_usage (stderr);
            return S_EXIT_USAGE;
        }
    }
    if (argc - optind < 2 || argc - optind > 3) {
        s_usage (stderr);
        return S_EXIT_USAGE;
    }
    const char *service_name = argv[optind];
    const char *method_name = argv[optind + 1];
    const char *json_arg = argc - optind == 3 ? argv[optind + 2] : "{}";

    const ProtobufCServiceDescriptor *service = crm_proto_find_service (service_name);
    if (!service) {
        fprintf (stderr, "crmctl: no service \"%s\" (see crmctl describe)\n", service_name);
        return S_EXIT_USAGE;
    }
    const ProtobufCMethodDescriptor *method = crm_proto_find_method (service, method_name);
    if (!method) {
        fprintf (stderr, "crmctl: service %s has no method \"%s\" (see crmctl describe %s)\n",
                 service_name, method_name, service_name);
        return S_EXIT_USAGE;
    }
    char *json_text = strcmp (json_arg, "-") == 0 ? s_read_all (stdin) : strdup (json_arg);
    char err[256];
    ProtobufCMessage *request =
        json_text ? crm_json_decode (method->input, json_text, strlen (json_text), err, sizeof err)
                  : NULL;
    free (json_text);
    if (!request) {
        fprintf (stderr, "crmctl: invalid %s: %s\n", method->input->name, err);
        return S_EXIT_USAGE;
    }
    long timeout_ms, retries;
    if (crm_config_get_int (config, "CRM_TIMEOUT_MS", 1, 3600000, &timeout_ms) != 0 ||
        crm_config_get_int (config, "CRM_RETRIES", 0, 100, &retries) != 0) {
        protobuf_c_message_free_unpacked (request, NULL);
        return S_EXIT_USAGE;
    }
    char generated_id[37];
    crm_uuid (generated_id);
    Crm__V1__RequestMeta meta = CRM__V1__REQUEST_META__INIT;
    meta.request_id = (char *) (uintptr_t) (request_id ? request_id : generated_id);
    meta.branch = (char *) (uintptr_t) branch;
    meta.caller = "crmctl";

    crm_mdp_client_t *client = crm_mdp_client_new (crm_config_get (config, "CRM_BROKER_ENDPOINT"));
    crm_mdp_client_set_timeout (client, (int) timeout_ms);
    int exit_code = 14;
    for (long attempt = 0; attempt <= retries; attempt++) {
        meta.deadline_unix_ms = crm_now_ms () + timeout_ms;
        zmsg_t *body = crm_proto_request_new (method->name, &meta, request);
        zmsg_t *reply = crm_mdp_client_call (client, service_name, &body);
        if (!reply) {
            fprintf (stderr, "crmctl: no reply from %s within %ld ms%s\n", service_name, timeout_ms,
                     attempt < retries ? ", resending" : "");
            continue;
        }
        Crm__V1__Status *status;
        zframe_t *payload;
        if (crm_proto_reply_parse (reply, &status, &payload) != 0) {
            fprintf (stderr, "crmctl: malformed reply from %s\n", service_name);
            zmsg_destroy (&reply);
            exit_code = 13;
            break;
        }
        exit_code = status->code;
        if (status->code == CRM__V1__STATUS_CODE__STATUS_UNAVAILABLE && attempt < retries) {
            fprintf (stderr, "crmctl: UNAVAILABLE: %s, resending\n", status->message);
            crm__v1__status__free_unpacked (status, NULL);
            zmsg_destroy (&reply);
            zclock_sleep (200 * (int) (attempt + 1));
            continue;
        }
        if (status->code != 0)
            fprintf (stderr, "crmctl: %s: %s\n", crm_status_name (status->code), status->message);
        if (zframe_size (payload) > 0 || status->code == 0) {
            ProtobufCMessage *response = protobuf_c_message_unpack (
                method->output, NULL, zframe_size (payload), zframe_data (payload));
            if (response) {
                char *out = crm_json_encode (response, pretty);
                printf ("%s\n", out);
                free (out);
                protobuf_c_message_free_unpacked (response, NULL);
            }
            else {
                fprintf (stderr, "crmctl: reply does not decode as %s\n", method->output->name);
                exit_code = 13;
            }
        }
        crm__v1__status__free_unpacked (status, NULL);
        zmsg_destroy (&reply);
        break;
    }
    crm_mdp_client_destroy (&client);
    protobuf_c_message_free_unpacked (request, NULL);
    return exit_code;
}

//  --------------------------------------------------------------------------
//  publish: branch events from a file of JSON lines, through crm_branch

static void
s_on_published (const crm_branch_result_t *result, void *arg)
{
    (void) arg;
    if (result->outcome != CRM_BRANCH_FAILED)
        return;
    fprintf (stderr, "crmctl: line %ld (request id \"%s\"): %s: %s\n",
             (long) (intptr_t) result->tag, result->request_id, crm_status_name (result->code),
             result->message);
}

//  A string member of a line, NULL when absent; -1 when present but not a string
static int
s_line_string (json_t *line, const char *key, const char **value)
{
    json_t *member = json_object_get (line, key);
    *value = NULL;
    if (!member)
        return 0;
    if (!json_is_string (member))
        return -1;
    *value = json_string_value (member);
    return 0;
}

//  Turns one line into a request and publishes it; -1 with the reason in err
static int
s_publish_line (crm_branch_t *pub, const char *text, size_t len, long lineno,
                const char *default_branch, char *err, size_t errlen)
{
    json_error_t jerr;
    json_t *line = json_loadb (text, len, JSON_REJECT_DUPLICATES, &jerr);
    ProtobufCMessage *request = NULL;
    int rc = -1;
    if (!line || !json_is_object (line)) {
        snprintf (err, errlen, "not a JSON object%s%s", line ? "" : ": ", line ? "" : jerr.text);
        goto done;
    }
    const char *key;
    json_t *value;
    json_object_foreach (line, key, value)
    {
        if (strcmp (key, "service") != 0 && strcmp (key, "method") != 0 &&
            strcmp (key, "requestId") != 0 && strcmp (key, "branch") != 0 &&
            strcmp (key, "request") != 0) {
            snprintf (err, errlen, "unknown member \"%s\"", key);
            goto done;
        }
    }
    const char *service_name, *method_name, *request_id, *branch;
    if (s_line_string (line, "service", &service_name) != 0 ||
        s_line_string (line, "method", &method_name) != 0 ||
        s_line_string (line, "requestId", &request_id) != 0 ||
        s_line_string (line, "branch", &branch) != 0) {
        snprintf (err, errlen, "service, method, requestId and branch must be strings");
        goto done;
    }
    if (!service_name || !method_name) {
        snprintf (err, errlen, "service and method are required");
        goto done;
    }
    if (!request_id || !*request_id) {
        snprintf (err, errlen, "requestId is required: it is the event's own id");
        goto done;
    }
    if (strlen (request_id) > CRM_BRANCH_REQUEST_ID_MAX) {
        snprintf (err, errlen, "requestId is longer than %d bytes", CRM_BRANCH_REQUEST_ID_MAX);
        goto done;
    }
    const ProtobufCServiceDescriptor *service = crm_proto_find_service (service_name);
    if (!service) {
        snprintf (err, errlen, "no service \"%s\"", service_name);
        goto done;
    }
    const ProtobufCMethodDescriptor *method = crm_proto_find_method (service, method_name);
    if (!method) {
        snprintf (err, errlen, "service %s has no method \"%s\"", service_name, method_name);
        goto done;
    }
    json_t *body = json_object_get (line, "request");
    json_t *empty = body ? NULL : json_object ();
    char why[256] = "";
    request = crm_json_to_message (method->input, body ? body : empty, why, sizeof why);
    json_decref (empty);
    if (!request) {
        snprintf (err, errlen, "invalid %s: %s", method->input->name, why);
        goto done;
    }
    if (crm_branch_publish (pub, service_name, method->name, request_id,
                            branch ? branch : default_branch, request,
                            (void *) (intptr_t) lineno) != 0) {
        snprintf (err, errlen, "%s", errno == EMSGSIZE ? "request too large" : strerror (errno));
        goto done;
    }
    rc = 0;
done:
    if (request)
        protobuf_c_message_free_unpacked (request, NULL);
    json_decref (line);
    return rc;
}

//  A whole number option in [min, max], or -1
static int
s_int_option (const char *name, const char *text, long min, long max, long *value)
{
    char *end;
    errno = 0;
    long n = strtol (text, &end, 10);
    if (errno || end == text || *end || n < min || n > max) {
        fprintf (stderr, "crmctl: %s must be a whole number from %ld to %ld\n", name, min, max);
        return -1;
    }
    *value = n;
    return 0;
}

static int
s_publish (crm_config_t *config, int argc, char **argv)
{
    const char *branch = crm_config_get (config, "CRM_BRANCH");
    long window = CRM_BRANCH_WINDOW_DEFAULT, retries = CRM_BRANCH_RETRIES_DEFAULT, timeout_ms;
    if (crm_config_get_int (config, "CRM_TIMEOUT_MS", 1, 3600000, &timeout_ms) != 0)
        return S_EXIT_USAGE;
    static const struct option options[] = {
        {"window", required_argument, NULL, 'w'},
        {"retries", required_argument, NULL, 'r'},
        {"timeout-ms", required_argument, NULL, 't'},
        {"branch", required_argument, NULL, 'b'},
        {NULL, 0, NULL, 0},
    };
    int opt;
    optind = 1;
    while ((opt = getopt_long (argc, argv, "+w:r:t:b:", options, NULL)) != -1) {
        int rc = 0;
        if (opt == 'w')
            rc = s_int_option ("--window", optarg, 1, 100000, &window);
        else if (opt == 'r')
            rc = s_int_option ("--retries", optarg, 0, 1000, &retries);
        else if (opt == 't')
            rc = s_int_option ("--timeout-ms", optarg, 1, 3600000, &timeout_ms);
        else if (opt == 'b')
            branch = optarg;
        else
            rc = -1;
        if (rc != 0) {
            s_usage (stderr);
            return S_EXIT_USAGE;
        }
    }
    if (argc - optind != 1) {
        s_usage (stderr);
        return S_EXIT_USAGE;
    }
    const char *path = argv[optind];
    FILE *in = strcmp (path, "-") == 0 ? stdin : fopen (path, "r");
    if (!in) {
        fprintf (stderr, "crmctl: could not open \"%s\": %s\n", path, strerror (errno));
        return S_EXIT_USAGE;
    }
    const char *endpoint = crm_config_get (config, "CRM_BROKER_ENDPOINT");
    crm_branch_t *pub = crm_branch_new (endpoint);
    if (!pub) {
        fprintf (stderr, "crmctl: could not connect to \"%s\"\n", endpoint);
        if (in != stdin)
            fclose (in);
        return 14;
    }
    crm_branch_set_window (pub, (int) window);
    crm_branch_set_retries (pub, (int) retries);
    crm_branch_set_timeout (pub, (int) timeout_ms);
    crm_branch_set_caller (pub, "crmctl");
    crm_branch_set_handler (pub, s_on_published, NULL);

    long lineno = 0, bad = 0;
    char *text = NULL;
    size_t cap = 0;
    ssize_t len;
    while ((len = getline (&text, &cap, in)) >= 0) {
        lineno++;
        while (len > 0 && (text[len - 1] == '\n' || text[len - 1] == '\r'))
            text[--len] = '\0';
        size_t start = 0;
        while (start < (size_t) len && isspace ((unsigned char) text[start]))
            start++;
        if (start == (size_t) len)
            continue; //  Blank lines separate nothing and are not events
        char err[512];
        if (s_publish_line (pub, text + start, (size_t) len - start, lineno, branch, err,
                            sizeof err) != 0) {
            fprintf (stderr, "crmctl: line %ld: %s\n", lineno, err);
            bad++;
        }
    }
    bool read_failed = ferror (in);
    free (text);
    if (in != stdin)
        fclose (in);
    crm_branch_flush (pub, -1);
    crm_branch_counters_t counters;
    crm_branch_counters (pub, &counters);
    crm_branch_destroy (&pub);
    if (read_failed)
        fprintf (stderr, "crmctl: could not read \"%s\" to the end\n", path);
    long failed = (long) counters.failed + bad;
    printf ("sent %lu, acknowledged %lu, duplicates %lu, failed %ld\n",
            (unsigned long) counters.published, (unsigned long) counters.acknowledged,
            (unsigned long) counters.duplicates, failed);
    if (counters.resent)
        fprintf (stderr, "crmctl: %lu resends (%lu timeouts)\n", (unsigned long) counters.resent,
                 (unsigned long) counters.timeouts);
    return failed == 0 && !read_failed ? 0 : 1;
}

static int
s_describe (int argc, char **argv)
{
    const ProtobufCServiceDescriptor *const *services = crm_proto_services ();
    if (argc < 2) {
        for (int i = 0; services[i]; i++) {
            char name[64];
            snprintf (name, sizeof name, "%s", services[i]->short_name);
            for (char *p = name; *p; p++)
                *p = (char) tolower ((unsigned char) *p);
            printf ("%s\t%s, %u methods\n", name, services[i]->name, services[i]->n_methods);
        }
        return 0;
    }
    const ProtobufCServiceDescriptor *service = crm_proto_find_service (argv[1]);
    if (!service) {
        fprintf (stderr, "crmctl: no service \"%s\"\n", argv[1]);
        return S_EXIT_USAGE;
    }
    for (unsigned i = 0; i < service->n_methods; i++)
        printf ("%s\t%s -> %s\n", service->methods[i].name, service->methods[i].input->name,
                service->methods[i].output->name);
    return 0;
}

static int
s_ping (crm_config_t *config, int argc, char **argv)
{
    long timeout_ms;
    if (crm_config_get_int (config, "CRM_TIMEOUT_MS", 1, 3600000, &timeout_ms) != 0)
        return S_EXIT_USAGE;
    const char *endpoint = crm_config_get (config, "CRM_BROKER_ENDPOINT");
    crm_mdp_client_t *client = crm_mdp_client_new (endpoint);
    crm_mdp_client_set_timeout (client, (int) timeout_ms);
    //  mmi.service answers "200" when the service has a worker, "404" if not
    zmsg_t *body = zmsg_new ();
    zmsg_addstr (body, argc > 1 ? argv[1] : "mmi.service");
    zmsg_t *reply = crm_mdp_client_call (client, "mmi.service", &body);
    int rc = 14;
    if (!reply)
        fprintf (stderr, "crmctl: no answer from the broker at %s\n", endpoint);
    else {
        char *answer = zmsg_popstr (reply);
        if (argc < 2 || (answer && strcmp (answer, "200") == 0))
            rc = 0;
        else
            fprintf (stderr, "crmctl: no instance of %s is ready\n", argv[1]);
        printf ("%s\n", rc == 0 ? "ok" : "unavailable");
        zstr_free (&answer);
        zmsg_destroy (&reply);
    }
    crm_mdp_client_destroy (&client);
    return rc;
}

static int
s_tail (crm_config_t *config, int argc, char **argv)
{
    const char *endpoint = crm_config_get (config, "CRM_BROKER_EVENTS_OUT");
    zsock_t *sub = crm_broker_socket (ZMQ_SUB);
    if (!sub || zsock_connect (sub, "%s", endpoint) != 0) {
        fprintf (stderr, "crmctl: could not connect to %s\n", endpoint);
        zsock_destroy (&sub);
        return 14;
    }
    if (argc < 2)
        zsock_set_subscribe (sub, "");
    for (int i = 1; i < argc; i++)
        zsock_set_subscribe (sub, argv[i]);
    zsys_handler_reset ();
    while (!zsys_interrupted) {
        zmsg_t *msg = zmsg_recv (sub);
        if (!msg)
            break;
        char *topic = zmsg_popstr (msg);
        zframe_t *payload = zmsg_pop (msg);
        //  Topics are "<service>.<EventName>"; the payload is crm.v1.<EventName>
        const char *dot = topic ? strrchr (topic, '.') : NULL;
        char type_name[128];
        snprintf (type_name, sizeof type_name, "crm.v1.%s", dot ? dot + 1 : "");
        const ProtobufCMessageDescriptor *type = crm_proto_find_message (type_name);
        ProtobufCMessage *event =
            type && payload ? protobuf_c_message_unpack (type, NULL, zframe_size (payload),
                                                         zframe_data (payload))
                            : NULL;
        json_t *line = json_object ();
        json_object_set_new (line, "topic", json_string (topic ? topic : ""));
        if (event)
            json_object_set_new (line, "event", crm_json_from_message (event));
        else
            json_object_set_new (line, "bytes",
                                 json_integer (payload ? (json_int_t) zframe_size (payload) : 0));
        char *text = json_dumps (line, JSON_COMPACT);
        printf ("%s\n", text);
        fflush (stdout);
        free (text);
        json_decref (line);
        if (event)
            protobuf_c_message_free_unpacked (event, NULL);
        zframe_destroy (&payload);
        zstr_free (&topic);
        zmsg_destroy (&msg);
    }
    zsock_destroy (&sub);
    return 0;
}

//  A new CURVE key pair, for the broker or a client (docs/security.md).
static int
s_keygen (int argc, char **argv)
{
    bool z85 = argc == 2 && strcmp (argv[1], "--z85") == 0;
    if (argc > 2 || (argc == 2 && !z85)) {
        s_usage (stderr);
        return S_EXIT_USAGE;
    }
    char public_key[CRM_CURVE_KEY_HEX + 1], secret_key[CRM_CURVE_KEY_HEX + 1];
    if (crm_curve_keypair (z85, public_key, secret_key) != 0) {
        fprintf (stderr, "crmctl: this libzmq has no CURVE\n");
        return 1;
    }
    printf ("public-key %s\nsecret-key %s\n", public_key, secret_key);
    return 0;
}

int
main (int argc, char **argv)
{
    zsys_handler_set (NULL);
    crm_config_t *config =
        crm_config_new ("crmctl", "Call the suite's services and watch its events.", s_vars);
    crm_log_init ("crmctl", NULL, "warn", "text");
    crm_log_set_stream (stderr);
    int rc;
    if (argc >= 2 && (strcmp (argv[1], "--help") == 0 || strcmp (argv[1], "-h") == 0)) {
        s_usage (stdout);
        printf ("\n");
        rc = crm_config_parse_args (config, 2, argv) > 0 ? 0 : S_EXIT_USAGE;
    }
    else if (argc >= 2 && strcmp (argv[1], "keygen") == 0)
        rc = s_keygen (argc - 1, argv + 1);
    else if (crm_curve_client_setup (config) != 0)
        rc = S_EXIT_USAGE;
    else if (argc >= 2 && strcmp (argv[1], "call") == 0)
        rc = s_call (config, argc - 1, argv + 1);
    else if (argc >= 2 && strcmp (argv[1], "publish") == 0)
        rc = s_publish (config, argc - 1, argv + 1);
    else if (argc >= 2 && strcmp (argv[1], "describe") == 0)
        rc = s_describe (argc - 1, argv + 1);
    else if (argc >= 2 && strcmp (argv[1], "ping") == 0)
        rc = s_ping (config, argc - 1, argv + 1);
    else if (argc >= 2 && strcmp (argv[1], "tail") == 0)
        rc = s_tail (config, argc - 1, argv + 1);
    else {
        s_usage (stderr);
        rc = S_EXIT_USAGE;
    }
    crm_config_destroy (&config);
    return rc;
}
