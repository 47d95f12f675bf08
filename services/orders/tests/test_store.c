/*  test_store.c - the orders service's SQL functions against a real PostgreSQL: concurrency and replays. */
#include "orders.h"
#include "crm_test.h"

#include <libpq-fe.h>
#include <stdarg.h>

extern const crm_migration_t orders_migrations[];
extern const size_t orders_migrations_count;

#define S_SCHEMA "test_orders"

static const char *s_dsn; //  Superuser DSN from CRM_TEST_DSN

static PGconn *
s_connect (void)
{
    PGconn *conn = PQconnectdb (s_dsn);
    if (PQstatus (conn) != CONNECTION_OK) {
        fprintf (stderr, "could not connect: %s", PQerrorMessage (conn));
        exit (1);
    }
    PQclear (PQexec (conn, "SET search_path = " S_SCHEMA));
    PQclear (PQexec (conn, "SET client_min_messages = warning"));
    return conn;
}

//  The single value of a printf-style query, copied into a static buffer;
//  "" when it returns no value, and a report when it fails.
static const char *
s_value (PGconn *conn, const char *fmt, ...)
{
    static char value[8192];
    char sql[4096];
    va_list args;
    va_start (args, fmt);
    vsnprintf (sql, sizeof sql, fmt, args);
    va_end (args);
    PGresult *res = PQexec (conn, sql);
    value[0] = '\0';
    if (PQresultStatus (res) == PGRES_TUPLES_OK && PQntuples (res) > 0 && !PQgetisnull (res, 0, 0))
        snprintf (value, sizeof value, "%s", PQgetvalue (res, 0, 0));
    else if (PQresultStatus (res) != PGRES_COMMAND_OK && PQresultStatus (res) != PGRES_TUPLES_OK)
        fprintf (stderr, "query failed: %s: %s", sql, PQerrorMessage (conn));
    PQclear (res);
    return value;
}

static long
s_count (PGconn *conn, const char *fmt, const char *arg)
{
    return atol (s_value (conn, fmt, arg));
}

//  Places an order through order_place as the service would; returns the reply's code.
static int
s_place (PGconn *conn, const char *request_id, const char *external_id, int64_t promised_by)
{
    char code[ORDERS_TRACKING_LEN + 1];
    orders_tracking_codes_new (&code, 1);
    char promised[24] = "NULL";
    if (promised_by)
        snprintf (promised, sizeof promised, "%lld", (long long) promised_by);
    return atoi (s_value (
        conn,
        "SELECT order_place ('%s', 'fp-%s', false, gen_random_uuid (), 'store-1', '%s', NULL, "
        "'[{\"productId\":\"p\",\"quantity\":\"1\",\"unitPriceMinor\":\"100\"}]', 'EUR', 100, "
        "%s, 'Anna', 'store-1', ARRAY['%s'])->>'code'",
        request_id, request_id, external_id, promised, code));
}

static void
test_sweeps_at_once_mark_each_order_once (void)
{
    PGconn *a = s_connect (), *b = s_connect ();
    PQclear (PQexec (a, "TRUNCATE orders, crm_outbox"));
    char rid[32], ext[32];
    for (int i = 0; i < 30; i++) {
        snprintf (rid, sizeof rid, "sweep-place-%d", i);
        snprintf (ext, sizeof ext, "sweep-%d", i);
        CHECK_INT (s_place (a, rid, ext, 1000 + i), 0);
    }
    //  A holds ten of them while B sweeps: B takes the others without waiting
    PQclear (PQexec (a, "BEGIN"));
    CHECK_INT (atoi (s_value (a, "SELECT order_mark_late (5000, 10, 'sweep-a')")), 10);
    PQclear (PQexec (b, "SET lock_timeout = '2s'"));
    CHECK_INT (atoi (s_value (b, "SELECT order_mark_late (5000, 100, 'sweep-b')")), 20);
    CHECK_INT (atoi (s_value (b, "SELECT order_mark_late (5000, 100, 'sweep-b2')")), 0);
    PQclear (PQexec (a, "COMMIT"));
    CHECK_INT (atoi (s_value (b, "SELECT order_mark_late (5000, 100, 'sweep-b3')")), 0);
    CHECK_INT (s_count (a, "SELECT count(*) FROM orders WHERE late AND version = 2%s", ""), 30);
    CHECK_INT (s_count (a,
                        "SELECT count(DISTINCT payload->>'orderId') FROM crm_outbox "
                        "WHERE topic = 'orders.OrderLate'%s",
                        ""),
               30);
    CHECK_INT (
        s_count (a, "SELECT count(*) FROM crm_outbox WHERE topic = 'orders.OrderLate'%s", ""), 30);
    PQfinish (a);
    PQfinish (b);
}

static void
test_delay_clears_late_and_a_new_promise_can_be_late_again (void)
{
    PGconn *c = s_connect ();
    CHECK_INT (s_place (c, "late-place", "late-1", 1000), 0);
    CHECK_INT (atoi (s_value (c, "SELECT order_sweep_late ('late-sweep-1', 'f', 2000, 500)"
                                 "->'response'->>'markedLate'")) >= 1,
               1);
    CHECK_STR (s_value (c, "SELECT late FROM orders WHERE external_id = 'late-1'"), "t");
    //  The promise must be in the future by the database's clock
    char sql[512];
    snprintf (sql, sizeof sql,
              "SELECT order_change_status ('late-delay-past', 'f', NULL, 'store-1', 'late-1', 9, "
              "%u, 'till', '', 'oven broke', 3000, 200)->>'code'",
              orders_transition_sources (9));
    CHECK_STR (s_value (c, "%s", sql), "3");
    int64_t future = crm_now_ms () + 3600 * 1000;
    snprintf (sql, sizeof sql,
              "SELECT order_change_status ('late-delay', 'f', NULL, 'store-1', 'late-1', 9, "
              "%u, 'till', '', 'oven broke', %lld, 200)->>'code'",
              orders_transition_sources (9), (long long) future);
    CHECK_STR (s_value (c, "%s", sql), "0");
    CHECK_STR (s_value (c, "SELECT late::text || version FROM orders WHERE external_id = 'late-1'"),
               "false3");
    //  The first refusal was stored and is what a resend gets
    snprintf (sql, sizeof sql,
              "SELECT order_change_status ('late-delay-past', 'f', NULL, 'store-1', 'late-1', 9, "
              "%u, 'till', '', 'oven broke', 3000, 200)",
              orders_transition_sources (9));
    CHECK (strstr (s_value (c, "%s", sql), "\"replayed\": true") != NULL);
    //  Not late before the new promise, late once after it
    snprintf (sql, sizeof sql, "SELECT order_sweep_late ('late-sweep-2', 'f', %lld, 500)",
              (long long) future);
    s_value (c, "%s", sql);
    CHECK_STR (s_value (c, "SELECT late FROM orders WHERE external_id = 'late-1'"), "f");
    snprintf (sql, sizeof sql, "SELECT order_sweep_late ('late-sweep-3', 'f', %lld, 500)",
              (long long) future + 1);
    s_value (c, "%s", sql);
    CHECK_STR (s_value (c, "SELECT late FROM orders WHERE external_id = 'late-1'"), "t");
    CHECK_INT (s_count (c,
                        "SELECT count(*) FROM crm_outbox o JOIN orders r "
                        "ON r.id::text = o.payload->>'orderId' WHERE r.external_id = '%s' "
                        "AND o.topic = 'orders.OrderLate'",
                        "late-1"),
               2);
    CHECK_INT (s_count (c,
                        "SELECT count(*) FROM crm_outbox WHERE request_id = '%s' "
                        "AND topic = 'orders.OrderDelayed'",
                        "late-delay"),
               1);
    PQfinish (c);
}

static void
test_status_for_an_order_not_seen_yet_is_not_stored (void)
{
    PGconn *c = s_connect ();
    char sql[512];
    snprintf (sql, sizeof sql,
              "SELECT order_change_status ('early-1', 'f', NULL, 'store-1', 'early', 2, %u, "
              "'till', '', '', NULL, 200)->>'code'",
              orders_transition_sources (2));
    CHECK_STR (s_value (c, "%s", sql), "14");
    CHECK_INT (
        s_count (c, "SELECT count(*) FROM crm_idempotency WHERE request_id = '%s'", "early-1"), 0);
    CHECK_INT (s_place (c, "early-place", "early", 0), 0);
    CHECK_STR (s_value (c, "%s", sql), "0");
    CHECK_STR (s_value (c, "SELECT status FROM orders WHERE external_id = 'early'"), "2");
    //  And a resend now replays
    snprintf (sql, sizeof sql,
              "SELECT order_change_status ('early-1', 'f', NULL, 'store-1', 'early', 2, %u, "
              "'till', '', '', NULL, 200)->>'replayed'",
              orders_transition_sources (2));
    CHECK_STR (s_value (c, "%s", sql), "true");
    CHECK_INT (s_count (c, "SELECT count(*) FROM crm_outbox WHERE request_id = '%s'", "early-1"),
               1);
    PQfinish (c);
}

static void
test_first_commit_of_an_external_id_wins (void)
{
    PGconn *a = s_connect (), *b = s_connect ();
    PQclear (PQexec (a, "BEGIN"));
    CHECK_INT (s_place (a, "twice-a", "twice", 0), 0);
    //  B's insert waits for A's transaction, then finds A's order
    char code[ORDERS_TRACKING_LEN + 1];
    orders_tracking_codes_new (&code, 1);
    char sql[1024];
    snprintf (sql, sizeof sql,
              "SELECT order_place ('twice-b', 'fp', false, gen_random_uuid (), 'store-1', 'twice', "
              "NULL, '[]', 'EUR', 0, NULL, '', 'store-1', ARRAY['%s'])->>'code'",
              code);
    CHECK (PQsendQuery (b, sql));
    PQclear (PQexec (a, "COMMIT"));
    PGresult *res = PQgetResult (b);
    CHECK (PQresultStatus (res) == PGRES_TUPLES_OK && PQntuples (res) == 1);
    if (PQresultStatus (res) == PGRES_TUPLES_OK && PQntuples (res) == 1)
        CHECK_STR (PQgetvalue (res, 0, 0), "6");
    PQclear (res);
    while ((res = PQgetResult (b)))
        PQclear (res);
    CHECK_INT (s_count (a, "SELECT count(*) FROM orders WHERE external_id = '%s'", "twice"), 1);
    //  The tracking code of the refused one was not taken
    CHECK_INT (s_count (a, "SELECT count(*) FROM orders WHERE tracking_code = '%s'", code), 0);
    PQfinish (a);
    PQfinish (b);
}

static void
test_a_taken_tracking_code_is_skipped (void)
{
    PGconn *c = s_connect ();
    const char *taken = s_value (c, "SELECT tracking_code FROM orders LIMIT 1");
    char code[ORDERS_TRACKING_LEN + 1], old[ORDERS_TRACKING_LEN + 1];
    snprintf (old, sizeof old, "%s", taken);
    orders_tracking_codes_new (&code, 1);
    CHECK_STR (s_value (c,
                        "SELECT order_place ('skip', 'fp', false, gen_random_uuid (), 'store-1', "
                        "'skip', NULL, '[]', 'EUR', 0, NULL, '', 'store-1', ARRAY['%s', '%s'])"
                        "->'response'->'order'->>'trackingCode'",
                        old, code),
               code);
    PQfinish (c);
}

//  The batch form answers, stores and emits exactly what order_place called
//  once per request, in order, does: the same requests go through
//  order_place_batch in one schema and one by one through order_place in
//  another, and everything but the clock must match.
#define S_ONE_SCHEMA   "test_orders_one"
#define S_BATCH_SCHEMA "test_orders_batch"
#define S_BATCH_ROWS   10

//  What differs between the two runs only by the clock
#define S_NO_TIMES(expr)                                                                           \
    "regexp_replace ((" expr ")::text, "                                                           \
    "'\"(atUnixMs|createdUnixMs|updatedUnixMs|completedUnixMs)\": [0-9]+', '', 'g')"

static void
s_batch_rows (char *json, size_t size)
{
    char ids[S_BATCH_ROWS][37], codes[S_BATCH_ROWS + 1][ORDERS_TRACKING_LEN + 1];
    for (int i = 0; i < S_BATCH_ROWS; i++)
        crm_uuid (ids[i]);
    for (int i = 0; i <= S_BATCH_ROWS; i++)
        CHECK_INT (orders_tracking_codes_new (&codes[i], 1), 0);
    //  request id, fingerprint, purchase, external id, first tracking code
    struct {
        const char *request_id, *fingerprint, *purchase, *external_id;
        int code;
    } rows[S_BATCH_ROWS] = {
        {"b-1", "fp-1", "false", "e-1", 0},       //  plain
        {"b-2", "fp-2", "true", "e-2", 1},        //  plain purchase
        {"b-1", "fp-1", "false", "e-1", 2},       //  resend of the first: its reply again
        {"b-1", "fp-other", "false", "e-9", 3},   //  its id for another request: refused
        {"b-5", "fp-5", "false", "e-1", 4},       //  the first's order number again
        {"pre-1", "fp-pre", "false", "pre-1", 5}, //  resend of a request stored before
        {"b-7", "fp-7", "false", "e-7", -1},      //  first code taken: the second is used
        {"b-8", "fp-8", "false", "pre-1", 7},     //  an order number stored before
        {"b-9", "fp-9", "false", "e-9", 8},       //  plain, after one refused with its number
        {"b-10", "fp-10", "false", "e-10", 9},    //  plain
    };
    size_t at = 0;
    at += (size_t) snprintf (json + at, size - at, "[");
    for (int i = 0; i < S_BATCH_ROWS; i++) {
        char code_list[64];
        if (rows[i].code < 0)
            snprintf (code_list, sizeof code_list, "{TAKENCODE001,%s}", codes[S_BATCH_ROWS]);
        else
            snprintf (code_list, sizeof code_list, "{%s}", codes[rows[i].code]);
        at += (size_t) snprintf (
            json + at, size - at,
            "%s[\"%s\",\"%s\",\"%s\",\"%s\",\"store-1\",\"%s\",%s,"
            "\"[{\\\"productId\\\":\\\"p\\\",\\\"quantity\\\":\\\"2\\\"}]\",\"EUR\",\"%d\",%s,"
            "\"Anna\",\"store-1\",\"%s\"]",
            i ? "," : "", rows[i].request_id, rows[i].fingerprint, rows[i].purchase, ids[i],
            rows[i].external_id, i % 2 ? "null" : "\"9d4f1c2e-0b7a-4c43-9a55-3f1f6f8e2a10\"",
            100 * (i + 1), i == 3 ? "null" : "\"4102444800000\"", code_list);
    }
    snprintf (json + at, size - at, "]");
}

//  The state both runs start from: an order placed, and a code taken.
static void
s_batch_setup (PGconn *conn)
{
    s_value (
        conn,
        "SELECT order_place ('pre-1', 'fp-pre', false, '0b5a7a52-93f4-4bd4-b1a4-5c1e6a3d2f01', "
        "'store-1', "
        "'pre-1', NULL, '[]', 'EUR', 0, NULL, '', 'store-1', ARRAY['PRESTORED001'])");
    s_value (
        conn,
        "SELECT order_place ('pre-2', 'fp-pre-2', false, '0b5a7a52-93f4-4bd4-b1a4-5c1e6a3d2f02', "
        "'store-1', "
        "'pre-2', NULL, '[]', 'EUR', 0, NULL, '', 'store-1', ARRAY['TAKENCODE001'])");
    s_value (conn, "TRUNCATE crm_outbox");
}

static void
test_a_batch_answers_as_one_by_one (void)
{
    static char json[16384];
    s_batch_rows (json, sizeof json);
    PGconn *batch = s_connect (), *one = s_connect ();
    PQclear (PQexec (batch, "SET search_path = " S_BATCH_SCHEMA));
    PQclear (PQexec (one, "SET search_path = " S_ONE_SCHEMA));
    s_batch_setup (batch);
    s_batch_setup (one);

    //  One call for all of them, in one transaction
    if (getenv ("TEST_STORE_SHOW"))
        fprintf (stderr, "%s\n", json);
    const char *values[] = {json};
    PGresult *res =
        PQexecParams (batch,
                      "SELECT " S_NO_TIMES ("r") " FROM order_place_batch ($1::jsonb) "
                                                 "WITH ORDINALITY AS x (r, n) ORDER BY n",
                      1, NULL, values, NULL, NULL, 0);
    CHECK (PQresultStatus (res) == PGRES_TUPLES_OK);
    if (PQresultStatus (res) != PGRES_TUPLES_OK)
        fprintf (stderr, "order_place_batch: %s", PQerrorMessage (batch));
    CHECK_INT (PQntuples (res), S_BATCH_ROWS);

    //  One call each, one after the other
    PQclear (PQexec (one, "BEGIN"));
    for (int i = 0; i < S_BATCH_ROWS && i < PQntuples (res); i++) {
        char index[8];
        snprintf (index, sizeof index, "%d", i);
        const char *args[] = {json, index};
        PGresult *single = PQexecParams (
            one,
            "SELECT " S_NO_TIMES (
                "order_place (v->>0, v->>1, (v->>2)::boolean, (v->>3)::uuid, v->>4, v->>5, "
                "(v->>6)::uuid, (v->>7)::jsonb, v->>8, (v->>9)::bigint, (v->>10)::bigint, v->>11, "
                "v->>12, (v->>13)::text[])") " FROM (SELECT $1::jsonb->$2::int AS v) AS x",
            2, NULL, args, NULL, NULL, 0);
        CHECK (PQresultStatus (single) == PGRES_TUPLES_OK && PQntuples (single) == 1);
        if (PQresultStatus (single) == PGRES_TUPLES_OK && PQntuples (single) == 1) {
            if (strcmp (PQgetvalue (single, 0, 0), PQgetvalue (res, i, 0)) != 0)
                fprintf (stderr, "request %d:\n  batch: %s\n  alone: %s\n", i,
                         PQgetvalue (res, i, 0), PQgetvalue (single, 0, 0));
            CHECK_STR (PQgetvalue (single, 0, 0), PQgetvalue (res, i, 0));
        }
        PQclear (single);
    }
    PQclear (PQexec (one, "COMMIT"));
    PQclear (res);

    //  The outcomes themselves
    const char *codes =
        s_value (batch, "SELECT string_agg (r->>'code', ',' ORDER BY n) "
                        "FROM order_place_batch ('[]') WITH ORDINALITY AS x (r, n)");
    CHECK_STR (codes, "");
    CHECK_STR (s_value (batch, "SELECT string_agg (coalesce (reply->>'code', '?'), ',' "
                               "ORDER BY request_id) FROM crm_idempotency"),
               "0,0,0,6,0,6,0,0,0");
    CHECK_STR (s_value (batch, "SELECT tracking_code FROM orders WHERE external_id = 'e-7'"),
               s_value (one, "SELECT tracking_code FROM orders WHERE external_id = 'e-7'"));
    CHECK (strcmp (s_value (batch, "SELECT tracking_code FROM orders WHERE external_id = 'e-7'"),
                   "TAKENCODE001") != 0);
    CHECK_INT (s_count (batch, "SELECT count(*) FROM orders WHERE branch = '%s'", "store-1"), 7);

    //  Stored replies, orders and events match too
    const char *sets[] = {
        "SELECT string_agg (request_id || method || fingerprint || " S_NO_TIMES (
            "reply") ", '|' "
                     "ORDER BY request_id) FROM crm_idempotency",
        "SELECT string_agg (external_id || tracking_code || status || items::text || total_minor "
        "|| coalesce (contact_id::text, '-') || coalesce (promised_by_ms::text, '-') "
        "|| " S_NO_TIMES ("history") ", '|' ORDER BY external_id) FROM orders",
        "SELECT string_agg (topic || request_id || " S_NO_TIMES (
            "payload") ", '|' "
                       "ORDER BY request_id, topic) FROM crm_outbox",
        "SELECT count(*) FROM crm_outbox",
    };
    for (size_t i = 0; i < sizeof sets / sizeof sets[0]; i++) {
        char first[8192];
        snprintf (first, sizeof first, "%s", s_value (batch, "%s", sets[i]));
        CHECK (*first);
        CHECK_STR (first, s_value (one, "%s", sets[i]));
    }
    CHECK_INT (
        s_count (batch, "SELECT count(*) FROM crm_outbox WHERE topic = '%s'", "orders.OrderPlaced"),
        4);
    PQfinish (batch);
    PQfinish (one);
}

int
main (void)
{
    s_dsn = getenv ("CRM_TEST_DSN");
    if (!s_dsn || !*s_dsn) {
        printf ("test_store: CRM_TEST_DSN not set, skipping (needs PostgreSQL)\n");
        return 77;
    }
    crm_log_init ("test", "test", "warn", "text");
    PGconn *admin = s_connect ();
    PQclear (PQexec (admin, "DROP SCHEMA IF EXISTS " S_SCHEMA " CASCADE"));
    PQclear (PQexec (admin, "DROP SCHEMA IF EXISTS " S_ONE_SCHEMA " CASCADE"));
    PQclear (PQexec (admin, "DROP SCHEMA IF EXISTS " S_BATCH_SCHEMA " CASCADE"));
    PQfinish (admin);
    if (crm_migrate (s_dsn, S_SCHEMA, orders_migrations, orders_migrations_count) != 0 ||
        crm_migrate (s_dsn, S_ONE_SCHEMA, orders_migrations, orders_migrations_count) != 0 ||
        crm_migrate (s_dsn, S_BATCH_SCHEMA, orders_migrations, orders_migrations_count) != 0) {
        printf ("test_store: could not migrate\n");
        return 1;
    }
    RUN (test_sweeps_at_once_mark_each_order_once);
    RUN (test_delay_clears_late_and_a_new_promise_can_be_late_again);
    RUN (test_status_for_an_order_not_seen_yet_is_not_stored);
    RUN (test_first_commit_of_an_external_id_wins);
    RUN (test_a_taken_tracking_code_is_skipped);
    RUN (test_a_batch_answers_as_one_by_one);
    admin = s_connect ();
    PQclear (PQexec (admin, "DROP SCHEMA IF EXISTS " S_SCHEMA " CASCADE"));
    PQclear (PQexec (admin, "DROP SCHEMA IF EXISTS " S_ONE_SCHEMA " CASCADE"));
    PQclear (PQexec (admin, "DROP SCHEMA IF EXISTS " S_BATCH_SCHEMA " CASCADE"));
    PQfinish (admin);
    return TEST_DONE ("test_store");
}
