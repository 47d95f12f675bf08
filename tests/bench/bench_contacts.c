/*  bench_contacts.c - GetContact and CreateContact through broker and service, next to plain libpq loops.
 *
 *  Needs a running broker and contacts service (tests/bench/run.sh starts
 *  them) and the contacts DSN for the libpq baselines, which run the very
 *  statements the service runs, on the same database, in the same run.
 *  Prints human lines and key=value lines.
 */
#include "bench.h"
#include "crm.h"
#include "crm/v1/contacts.pb-c.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define S_WINDOW 128

static const char *s_broker;
static const char *s_dsn;

//  A request body for a GetContact or CreateContact, numbered i; the request
//  id carries i so the reply can be matched to its send time.
static zmsg_t *
s_request (const char *method, int i, const char *run, const char *contact_id)
{
    char request_id[64];
    snprintf (request_id, sizeof request_id, "%s-%s-%d", run, method, i);
    Crm__V1__RequestMeta meta = CRM__V1__REQUEST_META__INIT;
    meta.request_id = request_id;
    meta.branch = "bench";
    if (strcmp (method, "GetContact") == 0) {
        Crm__V1__GetContactRequest get = CRM__V1__GET_CONTACT_REQUEST__INIT;
        get.id = (char *) (uintptr_t) contact_id;
        return crm_proto_request_new (method, &meta, &get.base);
    }
    char number[32], address[64];
    snprintf (number, sizeof number, "+1555%s%05d", run + strlen (run) - 2, i);
    snprintf (address, sizeof address, "bench-%s-%d@example.com", run, i);
    Crm__V1__Phone phone = CRM__V1__PHONE__INIT;
    phone.number = number;
    Crm__V1__Phone *phones[] = {&phone};
    Crm__V1__Email email = CRM__V1__EMAIL__INIT;
    email.address = address;
    Crm__V1__Email *emails[] = {&email};
    Crm__V1__Contact contact = CRM__V1__CONTACT__INIT;
    contact.given_name = "Bench";
    contact.family_name = "Mark";
    contact.n_phones = 1;
    contact.phones = phones;
    contact.n_emails = 1;
    contact.emails = emails;
    Crm__V1__CreateContactRequest create = CRM__V1__CREATE_CONTACT_REQUEST__INIT;
    create.contact = &contact;
    return crm_proto_request_new (method, &meta, &create.base);
}

//  Index i of a reply's request id "<run>-<method>-<i>", -1 on error status.
static int
s_reply_index (zmsg_t *reply, char *first_id, size_t first_id_len)
{
    Crm__V1__Status *status;
    zframe_t *payload;
    if (crm_proto_reply_parse (reply, &status, &payload) != 0)
        return -1;
    int index = -1;
    if (status->code == 0) {
        const char *dash = strrchr (status->request_id, '-');
        index = dash ? atoi (dash + 1) : -1;
        if (first_id && !*first_id) {
            Crm__V1__CreateContactResponse *created = crm__v1__create_contact_response__unpack (
                NULL, zframe_size (payload), zframe_data (payload));
            if (created && created->contact)
                snprintf (first_id, first_id_len, "%s", created->contact->id);
            if (created)
                crm__v1__create_contact_response__free_unpacked (created, NULL);
        }
    }
    else
        fprintf (stderr, "bench: %s: %s\n", crm_status_name (status->code), status->message);
    crm__v1__status__free_unpacked (status, NULL);
    return index;
}

//  Sends count requests keeping window in flight (rate 0), or paced at rate
//  per second; fills latencies (us) and returns requests per second.
static double
s_run (const char *method, int count, int window, double rate, const char *run,
       const char *contact_id, int64_t *latencies, char *first_id, size_t first_id_len)
{
    crm_mdp_client_t *client = crm_mdp_client_new (s_broker);
    int64_t *sent_at = calloc ((size_t) count, sizeof *sent_at);
    int sent = 0, received = 0, failed = 0;
    double start = s_now_s ();
    while (received + failed < count) {
        while (sent < count && sent - received - failed < window &&
               (rate <= 0 || sent < (s_now_s () - start) * rate)) {
            zmsg_t *body = s_request (method, sent, run, contact_id);
            sent_at[sent] = s_now_us ();
            crm_mdp_client_send (client, "contacts", &body);
            sent++;
        }
        int wait_ms = rate > 0 && sent < count ? 1 : 5000;
        zmsg_t *reply = crm_mdp_client_recv (client, NULL, wait_ms);
        if (!reply) {
            if (wait_ms == 5000) {
                fprintf (stderr, "bench: no reply within 5 s (%d of %d answered)\n", received,
                         count);
                break;
            }
            continue;
        }
        int index = s_reply_index (reply, first_id, first_id_len);
        zmsg_destroy (&reply);
        if (index < 0 || index >= count)
            failed++;
        else
            latencies[received++] = s_now_us () - sent_at[index];
    }
    double elapsed = s_now_s () - start;
    free (sent_at);
    crm_mdp_client_destroy (&client);
    if (failed)
        fprintf (stderr, "bench: %d %s requests failed\n", failed, method);
    return received / elapsed;
}

static void
s_percentiles (int64_t *latencies, int n, double *p50, double *p99)
{
    qsort (latencies, (size_t) n, sizeof *latencies, s_cmp_i64);
    *p50 = n ? latencies[n / 2] / 1000.0 : 0;
    *p99 = n ? latencies[(int) (n * 0.99)] / 1000.0 : 0;
}

//  The plain libpq loop: one synchronous statement at a time on one connection.
static double
s_libpq_loop (const char *sql, int nparams, int count, const char *run, const char *contact_id)
{
    PGconn *conn = PQconnectdb (s_dsn);
    if (PQstatus (conn) != CONNECTION_OK) {
        fprintf (stderr, "bench: %s", PQerrorMessage (conn));
        PQfinish (conn);
        return 0;
    }
    PQclear (PQexec (conn, "SET search_path TO contacts"));
    PGresult *prepared = PQprepare (conn, "s", sql, nparams, NULL);
    PQclear (prepared);
    double start = s_now_s ();
    for (int i = 0; i < count; i++) {
        char request_id[64], id[37], json[256], fingerprint[41];
        const char *values[5];
        if (nparams == 1)
            values[0] = contact_id;
        else {
            snprintf (request_id, sizeof request_id, "%s-libpq-%d", run, i);
            crm_uuid (id);
            snprintf (json, sizeof json,
                      "{\"branch\":\"bench\",\"givenName\":\"Bench\",\"familyName\":\"Mark\","
                      "\"phones\":[{\"number\":\"+1666%s%05d\"}],"
                      "\"emails\":[{\"address\":\"libpq-%s-%d@example.com\"}]}",
                      run + strlen (run) - 2, i, run, i);
            crm_idem_fingerprint ("CreateContact", json, strlen (json), fingerprint);
            values[0] = request_id;
            values[1] = fingerprint;
            values[2] = id;
            values[3] = json;
            values[4] = "false";
        }
        PGresult *res = PQexecPrepared (conn, "s", nparams, values, NULL, NULL, 0);
        if (PQresultStatus (res) != PGRES_TUPLES_OK)
            fprintf (stderr, "bench: %s", PQresultErrorMessage (res));
        PQclear (res);
    }
    double elapsed = s_now_s () - start;
    PQfinish (conn);
    return count / elapsed;
}

//  --------------------------------------------------------------------------
//  The floor under those latencies: what one request costs when nothing queues.
//  A request through the broker crosses a dozen thread hand-offs (every process
//  has a ZeroMQ I/O thread), each a wake-up of a thread that was asleep, so the
//  machine's wake-up time is part of every figure above.

#define FLOOR_COUNT 5000

//  A byte bounced between two processes through a pair of pipes, count times:
//  the machine's own wake-up round trip; fills latencies (us). 0, or -1.
static int
s_pipe_pingpong (int64_t *latencies, int count)
{
    int to_child[2], to_parent[2];
    if (pipe (to_child) || pipe (to_parent))
        return -1;
    pid_t child = fork ();
    if (child < 0)
        return -1;
    char byte = 0;
    if (child == 0) {
        close (to_child[1]); //  So that the parent closing its end ends the loop
        close (to_parent[0]);
        while (read (to_child[0], &byte, 1) == 1 && write (to_parent[1], &byte, 1) == 1)
            ;
        _exit (0);
    }
    int rc = 0;
    for (int i = 0; i < count && rc == 0; i++) {
        int64_t start = s_now_us ();
        if (write (to_child[1], &byte, 1) != 1 || read (to_parent[0], &byte, 1) != 1)
            rc = -1;
        latencies[i] = s_now_us () - start;
    }
    close (to_child[1]);
    close (to_child[0]);
    close (to_parent[0]);
    close (to_parent[1]);
    waitpid (child, NULL, 0);
    return rc;
}

//  One request at a time through the broker, count times: to the broker alone
//  (mmi.service) when contact_id is NULL, else GetContact. 0, or -1.
static int
s_one_at_a_time (int64_t *latencies, int count, const char *run, const char *contact_id)
{
    crm_mdp_client_t *client = crm_mdp_client_new (s_broker);
    int rc = 0;
    for (int i = 0; i < count && rc == 0; i++) {
        zmsg_t *body;
        if (contact_id)
            body = s_request ("GetContact", i, run, contact_id);
        else {
            body = zmsg_new ();
            zmsg_addstr (body, "contacts");
        }
        int64_t start = s_now_us ();
        zmsg_t *reply =
            crm_mdp_client_call (client, contact_id ? "contacts" : "mmi.service", &body);
        latencies[i] = s_now_us () - start;
        if (!reply || (contact_id && s_reply_index (reply, NULL, 0) != i))
            rc = -1;
        zmsg_destroy (&reply);
    }
    crm_mdp_client_destroy (&client);
    return rc;
}

//  contact_get on one libpq connection, one at a time, count times. 0, or -1.
static int
s_libpq_one_at_a_time (int64_t *latencies, int count, const char *contact_id)
{
    PGconn *conn = PQconnectdb (s_dsn);
    int rc = PQstatus (conn) == CONNECTION_OK ? 0 : -1;
    if (rc == 0) {
        PQclear (PQexec (conn, "SET search_path TO contacts"));
        PQclear (PQprepare (conn, "s", "SELECT contact_get ($1::uuid)", 1, NULL));
    }
    const char *values[1] = {contact_id};
    for (int i = 0; i < count && rc == 0; i++) {
        int64_t start = s_now_us ();
        PGresult *res = PQexecPrepared (conn, "s", 1, values, NULL, NULL, 0);
        latencies[i] = s_now_us () - start;
        if (PQresultStatus (res) != PGRES_TUPLES_OK)
            rc = -1;
        PQclear (res);
    }
    PQfinish (conn);
    return rc;
}

static void
s_floor_line (const char *what, const char *key, int64_t *latencies, int count)
{
    double p50, p99;
    s_percentiles (latencies, count, &p50, &p99);
    printf ("  %-44s p50 %.2f ms, p99 %.2f ms\n", what, p50, p99);
    printf ("floor_%s_p50_ms=%.2f\nfloor_%s_p99_ms=%.2f\n", key, p50, key, p99);
}

static void
s_floor (const char *run, const char *contact_id)
{
    int64_t *latencies = calloc (FLOOR_COUNT, sizeof *latencies);
    printf ("one request at a time, %d each (nothing queues; the machine's wake-ups remain):\n",
            FLOOR_COUNT);
    if (s_pipe_pingpong (latencies, FLOOR_COUNT) == 0)
        s_floor_line ("a byte between two processes and back", "pipe", latencies, FLOOR_COUNT);
    if (s_libpq_one_at_a_time (latencies, FLOOR_COUNT, contact_id) == 0)
        s_floor_line ("contact_get on a libpq connection", "libpq", latencies, FLOOR_COUNT);
    if (s_one_at_a_time (latencies, FLOOR_COUNT, run, NULL) == 0)
        s_floor_line ("mmi.service, to the broker and back", "broker", latencies, FLOOR_COUNT);
    if (s_one_at_a_time (latencies, FLOOR_COUNT, run, contact_id) == 0)
        s_floor_line ("GetContact through broker and contacts", "get", latencies, FLOOR_COUNT);
    free (latencies);
}

int
main (int argc, char **argv)
{
    zsys_handler_set (NULL);
    if (argc < 3) {
        fprintf (stderr, "usage: bench_contacts BROKER_ENDPOINT CONTACTS_DSN\n");
        return 64;
    }
    s_broker = argv[1];
    s_dsn = argv[2];
    crm_log_init ("bench", NULL, "warn", "text");
    char run[16];
    snprintf (run, sizeof run, "%02d%02d", (int) (crm_now_ms () / 1000 % 100),
              (int) (getpid () % 100));

    enum { CREATES = 4000, CREATES_LIBPQ = 400, GETS = 20000 };
    int64_t *latencies = calloc (GETS, sizeof *latencies);
    char contact_id[64] = "";

    //  CreateContact: group commit through the service vs one row per commit
    double create_rate = s_run ("CreateContact", CREATES, 256, 0, run, NULL, latencies, contact_id,
                                sizeof contact_id);
    double p50, p99;
    s_percentiles (latencies, CREATES, &p50, &p99);
    double create_libpq =
        s_libpq_loop ("SELECT contact_create ($1, $2, $3::uuid, $4::jsonb, $5::boolean)", 5,
                      CREATES_LIBPQ, run, NULL);
    printf ("CreateContact via broker: %.0f/s (p50 %.2f ms, p99 %.2f ms at window 256); "
            "libpq one row per commit: %.0f/s; ratio %.2f\n",
            create_rate, p50, p99, create_libpq, create_libpq ? create_rate / create_libpq : 0);
    printf ("create_rate=%.0f\ncreate_libpq_rate=%.0f\ncreate_ratio=%.2f\n", create_rate,
            create_libpq, create_libpq ? create_rate / create_libpq : 0);

    if (!*contact_id) {
        fprintf (stderr, "bench: no contact was created\n");
        return 1;
    }
    //  GetContact: peak rate, then latency at half of it
    double get_rate = s_run ("GetContact", GETS, S_WINDOW, 0, run, contact_id, latencies, NULL, 0);
    double get_libpq = s_libpq_loop ("SELECT contact_get ($1::uuid)", 1, GETS, run, contact_id);
    double half = getenv ("BENCH_GET_RATE") ? atof (getenv ("BENCH_GET_RATE")) : get_rate / 2;
    int paced = (int) (half * 3);
    if (paced > GETS)
        paced = GETS;
    s_run ("GetContact", paced, 100000, half, run, contact_id, latencies, NULL, 0);
    s_percentiles (latencies, paced, &p50, &p99);
    printf ("GetContact via broker: %.0f/s peak; libpq loop: %.0f/s; ratio %.2f; "
            "at %.0f/s (half of peak): p50 %.2f ms, p99 %.2f ms\n",
            get_rate, get_libpq, get_libpq ? get_rate / get_libpq : 0, half, p50, p99);
    printf ("get_rate=%.0f\nget_libpq_rate=%.0f\nget_ratio=%.2f\nget_half_load_p50_ms=%.2f\n"
            "get_half_load_p99_ms=%.2f\n",
            get_rate, get_libpq, get_libpq ? get_rate / get_libpq : 0, p50, p99);
    s_floor (run, contact_id);
    free (latencies);
    return 0;
}
