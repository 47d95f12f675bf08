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
    free (latencies);
    return 0;
}
