/*  bench_orders.c - durable branch events through broker and orders, next to a libpq loop and COPY of the same rows.
 *
 *  Needs a running broker and orders service (tests/bench/run.sh starts them
 *  on a PostgreSQL with fsync and synchronous_commit on) and the orders DSN:
 *  the owner role of the orders schema, for the baselines and for (e).
 *
 *  (a) peak: PlaceOrder events published through crm_branch with a window,
 *      counted when acknowledged, i.e. after their commit;
 *  (b) the same SQL function the service calls, order_place, one row per
 *      commit from a plain synchronous libpq loop;
 *  (c) COPY of rows shaped like what order_place stores, into the same
 *      table, in one transaction;
 *  (d) publish->ack latency at half of the peak rate, paced;
 *  (e) what the event log costs. The service cannot be run without its
 *      event log, but the event log's work all starts in two SQL functions,
 *      crm_event_emit and crm_event_emit_many (one event, or several at
 *      once), which insert the outbox rows that the sequencer then
 *      positions and the fan-out publishes. For runs B, both are replaced in
 *      the benchmark's database by functions of the same signatures that do
 *      nothing, so B runs exactly the same service,
 *      requests and SQL, minus the outbox insert, the sequencing and the
 *      publishing; runs A are with it. A and B alternate (A B A B A B) so that
 *      drift of a busy machine hits both alike; the original function is
 *      put back at the end. The payload's JSON is still built in B, so the
 *      figure slightly understates the whole cost.
 *  Prints human lines and key=value lines.
 */
#include "bench.h"
#include "crm.h"
#include "crm/v1/orders.pb-c.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define S_WINDOW    256
#define S_CONTACTS  100
#define S_PEAK_S    8.0
#define S_AB_S      5.0
#define S_AB_ROUNDS 3 //  A B pairs: one noisy second moves a single pair a lot
#define S_PACED_S   6.0
#define S_LOOP_S    3.0
#define S_COPY_ROWS 50000

static const char *s_broker;
static const char *s_dsn;
static char s_run[16];
static char s_contacts[S_CONTACTS][37];

typedef struct {
    int64_t *latencies; //  Publish-to-ack, us, of acknowledged events
    long n;
    long cap;
    long failed;
} s_stats_t;

static double
s_percentile_ms (s_stats_t *stats, double p)
{
    if (!stats->n)
        return 0;
    qsort (stats->latencies, (size_t) stats->n, sizeof *stats->latencies, s_cmp_i64);
    long i = (long) ((double) stats->n * p);
    if (i >= stats->n)
        i = stats->n - 1;
    return (double) stats->latencies[i] / 1000.0;
}

static void
s_on_outcome (const crm_branch_result_t *result, void *arg)
{
    s_stats_t *stats = arg;
    if (result->outcome == CRM_BRANCH_FAILED) {
        if (stats->failed++ < 5)
            fprintf (stderr, "bench: %s failed: %s: %s\n", result->request_id,
                     crm_status_name (result->code), result->message);
        return;
    }
    if (stats->n == stats->cap) {
        stats->cap = stats->cap ? stats->cap * 2 : 65536;
        stats->latencies =
            realloc (stats->latencies, (size_t) stats->cap * sizeof *stats->latencies);
    }
    stats->latencies[stats->n++] = result->latency_us;
}

//  The items of order i, two of them, as the service gets them
static void
s_items (long i, Crm__V1__OrderItem items[2], char ids[2][16], char names[2][32])
{
    for (int k = 0; k < 2; k++) {
        crm__v1__order_item__init (&items[k]);
        int product = (int) ((i * 7 + k * 13) % 300);
        snprintf (ids[k], sizeof ids[k], "p%03d", product);
        snprintf (names[k], sizeof names[k], "Product %d", product);
        items[k].product_id = ids[k];
        items[k].name = names[k];
        items[k].quantity = 1 + (i + k) % 3;
        items[k].unit_price_minor = 250 + (i * 31 + k * 17) % 4000;
    }
}

//  Publishes PlaceOrder for seconds, at rate per second (0: as fast as the
//  window lets), then waits for every outcome. Returns acknowledged events
//  per second over the whole time, flush included.
static double
s_publish_run (const char *label, double seconds, int window, double rate, s_stats_t *stats)
{
    memset (stats, 0, sizeof *stats);
    crm_branch_t *pub = crm_branch_new (s_broker);
    if (!pub)
        return 0;
    crm_branch_set_window (pub, window);
    crm_branch_set_timeout (pub, 10000);
    crm_branch_set_retries (pub, 3);
    crm_branch_set_caller (pub, "bench_orders");
    crm_branch_set_handler (pub, s_on_outcome, stats);
    double start = s_now_s ();
    long i = 0;
    while (true) {
        double now = s_now_s ();
        if (now - start >= seconds)
            break;
        if (rate > 0) {
            double due = start + (double) i / rate;
            if (due > now) {
                //  At least a millisecond, rounded up: a wait of 0 would spin
                //  and take a core from the suite being measured. What is due
                //  meanwhile goes together after it
                crm_branch_poll (pub, (int) ((due - now) * 1000) + 1);
                continue;
            }
        }
        char rid[64], branch[32];
        snprintf (rid, sizeof rid, "%s-%s-%ld", s_run, label, i);
        snprintf (branch, sizeof branch, "bench-%ld", i % 8);
        Crm__V1__OrderItem items[2];
        Crm__V1__OrderItem *item_ptrs[2] = {&items[0], &items[1]};
        char ids[2][16], names[2][32];
        s_items (i, items, ids, names);
        Crm__V1__Order order = CRM__V1__ORDER__INIT;
        order.branch = branch;
        order.contact_id = s_contacts[i % S_CONTACTS];
        order.external_id = rid;
        order.n_items = 2;
        order.items = item_ptrs;
        order.currency = "EUR";
        order.customer_first_name = "Anna";
        order.promised_by_unix_ms = crm_now_ms () + 2 * 3600 * 1000;
        Crm__V1__PlaceOrderRequest place = CRM__V1__PLACE_ORDER_REQUEST__INIT;
        place.order = &order;
        if (crm_branch_publish (pub, "orders", "PlaceOrder", rid, branch, &place.base, NULL) != 0)
            break;
        i++;
    }
    crm_branch_flush (pub, 60000);
    double elapsed = s_now_s () - start;
    crm_branch_destroy (&pub);
    if (stats->failed)
        fprintf (stderr, "bench: %s: %ld events failed\n", label, stats->failed);
    return (double) stats->n / elapsed;
}

static PGconn *
s_connect (void)
{
    PGconn *conn = PQconnectdb (s_dsn);
    if (PQstatus (conn) != CONNECTION_OK) {
        fprintf (stderr, "bench: could not connect to \"%s\": %s", s_dsn, PQerrorMessage (conn));
        PQfinish (conn);
        return NULL;
    }
    PQclear (PQexec (conn, "SET search_path TO orders"));
    return conn;
}

static bool
s_exec_ok (PGconn *conn, const char *sql)
{
    PGresult *res = PQexec (conn, sql);
    bool ok = PQresultStatus (res) == PGRES_COMMAND_OK || PQresultStatus (res) == PGRES_TUPLES_OK ||
              PQresultStatus (res) == PGRES_COPY_IN;
    if (!ok)
        fprintf (stderr, "bench: %s: %s", sql, PQresultErrorMessage (res));
    PQclear (res);
    return ok;
}

//  Three candidate tracking codes as a PostgreSQL array literal
static void
s_codes (char *out, size_t size)
{
    static const char alphabet[] = "23456789ABCDEFGHJKMNPQRSTUVWXYZ";
    unsigned char random[36];
    crm_random_bytes (random, sizeof random);
    size_t at = 0;
    out[at++] = '{';
    for (int c = 0; c < 3; c++) {
        for (int k = 0; k < 12; k++)
            out[at++] = alphabet[random[c * 12 + k] % 31];
        out[at++] = c < 2 ? ',' : '}';
    }
    out[at] = '\0';
    (void) size;
}

//  The items of order i as the service stores them (proto3 JSON)
static char *
s_items_json (long i)
{
    Crm__V1__OrderItem items[2];
    char ids[2][16], names[2][32];
    s_items (i, items, ids, names);
    json_t *list = json_array ();
    for (int k = 0; k < 2; k++)
        json_array_append_new (list, crm_json_from_message (&items[k].base));
    char *text = json_dumps (list, JSON_COMPACT);
    json_decref (list);
    return text;
}

static int64_t
s_total (long i)
{
    Crm__V1__OrderItem items[2];
    char ids[2][16], names[2][32];
    s_items (i, items, ids, names);
    return items[0].quantity * items[0].unit_price_minor +
           items[1].quantity * items[1].unit_price_minor;
}

//  (b) order_place, one call per commit, for seconds
static double
s_libpq_loop (double seconds)
{
    PGconn *conn = s_connect ();
    if (!conn)
        return 0;
    PGresult *prepared =
        PQprepare (conn, "place",
                   "SELECT order_place ($1, $2, $3::boolean, $4::uuid, $5, $6, $7::uuid, "
                   "$8::jsonb, $9, $10::bigint, $11::bigint, $12, $13, $14::text[])",
                   14, NULL);
    bool ok = PQresultStatus (prepared) == PGRES_COMMAND_OK;
    if (!ok)
        fprintf (stderr, "bench: %s", PQresultErrorMessage (prepared));
    PQclear (prepared);
    long n = 0;
    double start = s_now_s ();
    while (ok && s_now_s () - start < seconds) {
        char rid[64], fingerprint[41], id[37], total[24], promised[24], codes[64], branch[32];
        snprintf (rid, sizeof rid, "%s-loop-%ld", s_run, n);
        crm_idem_fingerprint ("PlaceOrder", rid, strlen (rid), fingerprint);
        crm_uuid (id);
        snprintf (branch, sizeof branch, "bench-%ld", n % 8);
        char *items = s_items_json (n);
        snprintf (total, sizeof total, "%" PRId64, s_total (n));
        snprintf (promised, sizeof promised, "%" PRId64, crm_now_ms () + 2 * 3600 * 1000);
        s_codes (codes, sizeof codes);
        const char *values[14] = {
            rid,   fingerprint, "false", id,       branch, rid,    s_contacts[n % S_CONTACTS],
            items, "EUR",       total,   promised, "Anna", branch, codes,
        };
        PGresult *res = PQexecPrepared (conn, "place", 14, values, NULL, NULL, 0);
        if (PQresultStatus (res) != PGRES_TUPLES_OK) {
            fprintf (stderr, "bench: order_place: %s", PQresultErrorMessage (res));
            ok = false;
        }
        PQclear (res);
        free (items);
        n++;
    }
    double elapsed = s_now_s () - start;
    PQfinish (conn);
    return ok ? (double) n / elapsed : 0;
}

//  (c) COPY of rows like order_place's into orders, one transaction
static double
s_copy (long rows)
{
    PGconn *conn = s_connect ();
    if (!conn)
        return 0;
    double start = s_now_s ();
    bool ok = s_exec_ok (conn, "BEGIN") &&
              s_exec_ok (conn, "COPY orders (id, branch, external_id, contact_id, items, "
                               "currency, total_minor, status, promised_by_ms, tracking_code, "
                               "history, customer_first_name, created_at, updated_at) FROM STDIN");
    char line[2048];
    for (long i = 0; ok && i < rows; i++) {
        char id[37], codes[64], branch[32];
        crm_uuid (id);
        s_codes (codes, sizeof codes);
        codes[13] = '\0'; //  The first of the three codes
        snprintf (branch, sizeof branch, "bench-%ld", i % 8);
        int64_t now = crm_now_ms ();
        int64_t promised = now + 2 * 3600 * 1000;
        char *items = s_items_json (i);
        int len =
            snprintf (line, sizeof line,
                      "%s\t%s\t%s-copy-%ld\t%s\t%s\tEUR\t%" PRId64 "\t1\t%" PRId64
                      "\t%s\t[{\"toStatus\": 1, \"atUnixMs\": %" PRId64
                      ", \"branch\": \"%s\", \"promisedByUnixMs\": %" PRId64 "}]\tAnna\tnow\tnow\n",
                      id, branch, s_run, i, s_contacts[i % S_CONTACTS], items, s_total (i),
                      promised, codes + 1, now, branch, promised);
        free (items);
        ok = PQputCopyData (conn, line, len) == 1;
    }
    ok = PQputCopyEnd (conn, ok ? NULL : "bench stopped") == 1 && ok;
    PGresult *res;
    while ((res = PQgetResult (conn))) {
        if (PQresultStatus (res) != PGRES_COMMAND_OK) {
            fprintf (stderr, "bench: COPY: %s", PQresultErrorMessage (res));
            ok = false;
        }
        PQclear (res);
    }
    ok = ok && s_exec_ok (conn, "COMMIT");
    double elapsed = s_now_s () - start;
    PQfinish (conn);
    return ok ? (double) rows / elapsed : 0;
}

//  (e) crm_event_emit and crm_event_emit_many as installed, so they can be
//  put back: one SQL text creating both
static char *
s_emit_definition (PGconn *conn)
{
    PGresult *res =
        PQexec (conn, "SELECT string_agg (pg_get_functiondef (f), ';' ORDER BY f::text) || ';' "
                      "FROM unnest (ARRAY['crm_event_emit(text,jsonb,text)'::regprocedure, "
                      "'crm_event_emit_many(text[],jsonb[],text[])'::regprocedure]) AS f");
    char *def = NULL;
    if (PQresultStatus (res) == PGRES_TUPLES_OK && PQntuples (res) == 1)
        def = strdup (PQgetvalue (res, 0, 0));
    else
        fprintf (stderr, "bench: could not read crm_event_emit: %s", PQresultErrorMessage (res));
    PQclear (res);
    return def;
}

static bool
s_emit_off (PGconn *conn)
{
    return s_exec_ok (conn, "CREATE OR REPLACE FUNCTION crm_event_emit (p_topic text, "
                            "p_payload jsonb, p_request_id text) RETURNS void LANGUAGE plpgsql "
                            "AS $$ BEGIN END; $$") &&
           s_exec_ok (conn, "CREATE OR REPLACE FUNCTION crm_event_emit_many (p_topics text[], "
                            "p_payloads jsonb[], p_request_ids text[]) RETURNS void "
                            "LANGUAGE plpgsql AS $$ BEGIN END; $$");
}

//  Events in the log, positioned or not
static long
s_outbox_rows (PGconn *conn)
{
    PGresult *res = PQexec (conn, "SELECT count(*) FROM crm_outbox");
    long n = PQresultStatus (res) == PGRES_TUPLES_OK ? atol (PQgetvalue (res, 0, 0)) : -1;
    PQclear (res);
    return n;
}

int
main (int argc, char **argv)
{
    zsys_handler_set (NULL);
    if (argc < 3) {
        fprintf (stderr, "usage: bench_orders BROKER_ENDPOINT ORDERS_DSN\n");
        return 64;
    }
    s_broker = argv[1];
    s_dsn = argv[2];
    crm_log_init ("bench", NULL, "error", "text");
    crm_log_set_stream (stderr);
    snprintf (s_run, sizeof s_run, "%02d%05d", (int) (crm_now_ms () / 1000 % 100),
              (int) (getpid () % 100000));
    for (int i = 0; i < S_CONTACTS; i++)
        crm_uuid (s_contacts[i]);
    s_stats_t stats;

    //  A short warm-up: connections, plans, caches
    s_publish_run ("warm", 1.5, S_WINDOW, 0, &stats);
    free (stats.latencies);

    //  (a) peak
    double peak = s_publish_run ("peak", S_PEAK_S, S_WINDOW, 0, &stats);
    double peak_p50 = s_percentile_ms (&stats, 0.50), peak_p99 = s_percentile_ms (&stats, 0.99);
    long peak_failed = stats.failed;
    free (stats.latencies);
    printf ("PlaceOrder through broker and orders: %.0f acknowledged events/s at window %d "
            "(p50 %.1f ms, p99 %.1f ms)%s\n",
            peak, S_WINDOW, peak_p50, peak_p99, peak_failed ? ", SOME FAILED" : "");

    //  (d) latency at half of the peak, while the service is in the state
    //  the peak left it in: after (c), autovacuum would be busy with the rows
    //  COPY added, on the cores the service runs on
    double half = peak / 2;
    double paced = s_publish_run ("paced", S_PACED_S, 4096, half, &stats);
    double half_p50 = s_percentile_ms (&stats, 0.50), half_p99 = s_percentile_ms (&stats, 0.99);
    double half_max = s_percentile_ms (&stats, 1.0);
    free (stats.latencies);
    printf ("at %.0f events/s (half of peak; %.0f/s acknowledged): publish->ack p50 %.1f ms, "
            "p99 %.1f ms, max %.1f ms (target p99 < 50 ms)\n",
            half, paced, half_p50, half_p99, half_max);

    //  (b) and (c)
    double loop = s_libpq_loop (S_LOOP_S);
    double copy = s_copy (S_COPY_ROWS);
    printf ("order_place one row per commit (libpq loop): %.0f/s; ratio %.1f (target >= 10)\n",
            loop, loop > 0 ? peak / loop : 0);
    printf ("COPY of %d such rows into orders, one transaction: %.0f rows/s; ratio %.2f\n",
            S_COPY_ROWS, copy, copy > 0 ? peak / copy : 0);

    //  (e) the event log's share: A B A B A B
    double with[S_AB_ROUNDS] = {0}, without[S_AB_ROUNDS] = {0};
    PGconn *conn = s_connect ();
    char *definition = conn ? s_emit_definition (conn) : NULL;
    bool ab = definition != NULL;
    for (int round = 0; ab && round < S_AB_ROUNDS; round++) {
        char label[16];
        snprintf (label, sizeof label, "a%d", round);
        with[round] = s_publish_run (label, S_AB_S, S_WINDOW, 0, &stats);
        free (stats.latencies);
        long before = s_outbox_rows (conn);
        if (!s_emit_off (conn)) {
            ab = false;
            break;
        }
        snprintf (label, sizeof label, "b%d", round);
        without[round] = s_publish_run (label, S_AB_S, S_WINDOW, 0, &stats);
        free (stats.latencies);
        //  Proof that B emitted nothing: the outbox did not grow
        long after = s_outbox_rows (conn);
        if (after != before)
            fprintf (stderr, "bench: the outbox grew by %ld rows with emit off\n", after - before);
        if (!s_exec_ok (conn, definition)) {
            ab = false;
            break;
        }
    }
    free (definition);
    PQfinish (conn);
    if (ab) {
        double a = 0, b = 0;
        char with_text[128] = "", without_text[128] = "";
        for (int round = 0; round < S_AB_ROUNDS; round++) {
            a += with[round] / S_AB_ROUNDS;
            b += without[round] / S_AB_ROUNDS;
            size_t at = strlen (with_text), bt = strlen (without_text);
            snprintf (with_text + at, sizeof with_text - at, "%s%.0f", round ? ", " : "",
                      with[round]);
            snprintf (without_text + bt, sizeof without_text - bt, "%s%.0f", round ? ", " : "",
                      without[round]);
        }
        double overhead = a > 0 ? (b / a - 1) * 100 : 0;
        printf ("event log: %s events/s with it, %s without (crm_event_emit a no-op): it adds "
                "%.1f%% to the cost of an event (target < 20%%)\n",
                with_text, without_text, overhead);
        printf ("events_with_log_rate=%.0f\nevents_without_log_rate=%.0f\n"
                "event_log_overhead_pct=%.1f\n",
                a, b, overhead);
    }
    else
        printf ("event log: not measured (see the errors above)\n");

    printf ("orders_peak_rate=%.0f\norders_peak_p99_ms=%.2f\norders_libpq_loop_rate=%.0f\n"
            "orders_loop_ratio=%.2f\norders_copy_rate=%.0f\norders_copy_ratio=%.3f\n"
            "orders_half_load_rate=%.0f\norders_half_load_p50_ms=%.2f\n"
            "orders_half_load_p99_ms=%.2f\n",
            peak, peak_p99, loop, loop > 0 ? peak / loop : 0, copy, copy > 0 ? peak / copy : 0,
            half, half_p50, half_p99);
    return peak_failed ? 1 : 0;
}
