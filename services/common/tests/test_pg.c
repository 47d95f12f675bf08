/*  test_pg.c - crm_pg against a real PostgreSQL: reads, group commit, failures, reconnect, shutdown. */
#include "crm_log.h"
#include "crm_pg.h"
#include "crm_test.h"
#include "crm_test_kit.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <ev.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <libpq-fe.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SCHEMA "test_pg"

static const char *s_dsn; //  Superuser DSN from CRM_TEST_DSN
static PGconn *s_admin;   //  Blocking connection for set-up and checks
static struct ev_loop *s_loop;
static FILE *s_log; //  Where crm_log writes, read back by some checks

//  What one callback saw.
typedef struct {
    int calls; //  Times called: must end at 1
    crm_pg_status_t status;
    char value[128]; //  First column of the first row, on success
    char error[256]; //  The error, on failure
    int order;       //  Position among the callbacks of one check
    bool visible;    //  A write's row was visible to another connection
    int key;         //  The key a write inserted
} answer_t;

static int s_order; //  Callbacks seen in the current check

static void
s_on_answer (crm_pg_status_t status, const PGresult *result, const char *error, void *arg)
{
    answer_t *answer = (answer_t *) arg;
    answer->calls++;
    answer->status = status;
    answer->order = s_order++;
    if (status == CRM_PG_OK) {
        CHECK (result != NULL);
        CHECK (error == NULL);
        if (result && PQntuples (result) > 0 && PQnfields (result) > 0)
            snprintf (answer->value, sizeof answer->value, "%s", PQgetvalue (result, 0, 0));
    }
    else {
        CHECK (result == NULL);
        CHECK (error != NULL);
        snprintf (answer->error, sizeof answer->error, "%s", error ? error : "");
    }
}

//  For writes: also asks another connection whether the row is there, which
//  it is only once the write's transaction committed.
static void
s_on_write (crm_pg_status_t status, const PGresult *result, const char *error, void *arg)
{
    answer_t *answer = (answer_t *) arg;
    s_on_answer (status, result, error, arg);
    char key[16];
    snprintf (key, sizeof key, "%d", answer->key);
    const char *values[] = {key};
    PGresult *res = PQexecParams (s_admin, "SELECT count(*) FROM " SCHEMA ".t WHERE k = $1::int", 1,
                                  NULL, values, NULL, NULL, 0);
    answer->visible =
        PQresultStatus (res) == PGRES_TUPLES_OK && strcmp (PQgetvalue (res, 0, 0), "1") == 0;
    PQclear (res);
}

//  A connected crm_pg with the test's statements registered.
static crm_pg_t *
s_pg_new (const char *extra_dsn)
{
    char dsn[512];
    snprintf (dsn, sizeof dsn, "%s %s", s_dsn, extra_dsn ? extra_dsn : "");
    crm_pg_t *pg = crm_pg_new (s_loop, dsn, SCHEMA);
    CHECK (pg != NULL);
    if (!pg)
        return NULL;
    CHECK_INT (crm_pg_prepare (pg, "add", "SELECT $1::int + $2::int", 2), 0);
    CHECK_INT (crm_pg_prepare (pg, "is_null", "SELECT $1::text IS NULL", 1), 0);
    CHECK_INT (crm_pg_prepare (pg, "divide", "SELECT 100 / $1::int", 1), 0);
    CHECK_INT (crm_pg_prepare (pg, "sleep", "SELECT pg_sleep($1::float8)", 1), 0);
    CHECK_INT (crm_pg_prepare (pg, "table", "SELECT count(*) FROM t", 0), 0);
    CHECK_INT (crm_pg_prepare (pg, "length", "SELECT length($1::text)", 1), 0);
    CHECK_INT (crm_pg_prepare (pg, "insert",
                               "INSERT INTO t (k, txid) VALUES ($1::int, txid_current()) "
                               "RETURNING k",
                               1),
               0);
    CHECK_INT (crm_pg_prepare (pg, "insert_deferred", "INSERT INTO d (k) VALUES ($1::int)", 1), 0);
    //  Answers only once the admin session lets go of advisory lock 4242
    CHECK_INT (crm_pg_prepare (pg, "add_after_lock",
                               "SELECT $1::int + $2::int FROM (SELECT "
                               "pg_advisory_lock_shared(4242)) AS l",
                               2),
               0);
    CHECK (crm_test_run_until (s_loop, crm_test_pg_connected, pg, 10));
    return pg;
}

static int
s_insert (crm_pg_t *pg, answer_t *answer, int key)
{
    char text[16];
    snprintf (text, sizeof text, "%d", key);
    const char *values[] = {text};
    answer->key = key;
    return crm_pg_write (pg, "insert", 1, values, s_on_write, answer);
}

static int
s_add (crm_pg_t *pg, answer_t *answer, int a, int b)
{
    char ta[16], tb[16];
    snprintf (ta, sizeof ta, "%d", a);
    snprintf (tb, sizeof tb, "%d", b);
    const char *values[] = {ta, tb};
    return crm_pg_read (pg, "add", 2, values, s_on_answer, answer);
}

//  crm_pg_message: the first line of a message, without libpq's severity prefix
static void
test_message (void)
{
    char out[32];
    crm_pg_message (out, sizeof out, "FATAL:  role \"x\" does not exist\nDETAIL: more");
    CHECK_STR (out, "role \"x\" does not exist");
    crm_pg_message (out, sizeof out, "could not connect: timeout: 3 s");
    CHECK_STR (out, "could not connect: timeout: 3 s");
    crm_pg_message (out, sizeof out, NULL);
    CHECK_STR (out, "unknown error");
    crm_pg_message (out, sizeof out, "");
    CHECK_STR (out, "unknown error");
    crm_pg_message (out, 8, "a message longer than eight");
    CHECK_STR (out, "a messa");
}

static void
test_new_and_not_connected (void)
{
    crm_pg_t *pg = crm_pg_new (s_loop, "this is not a connection string", SCHEMA);
    CHECK (pg == NULL);

    //  Nothing listens on port 1: not connected, statements refused
    pg = crm_pg_new (s_loop, "host=127.0.0.1 port=1 user=nobody dbname=nothing", SCHEMA);
    CHECK (pg != NULL);
    CHECK_INT (crm_pg_prepare (pg, "add", "SELECT $1::int + $2::int", 2), 0);
    crm_test_run_for (s_loop, 0.3);
    CHECK (!crm_pg_connected (pg));
    answer_t answer = {0};
    CHECK_INT (s_add (pg, &answer, 1, 2), -1);
    CHECK_INT (crm_pg_pending (pg), 0);
    CHECK_INT (answer.calls, 0);
    crm_pg_destroy (&pg);
    CHECK (pg == NULL);
    crm_pg_destroy (&pg);
}

static bool
s_chain_done (void *arg)
{
    return ((answer_t *) arg)->calls > 0;
}

//  A read callback that submits the next read, 50 times.
typedef struct {
    crm_pg_t *pg;
    int left;
    int sum;
    answer_t last;
} chain_t;

static void
s_on_chain (crm_pg_status_t status, const PGresult *result, const char *error, void *arg)
{
    (void) error;
    chain_t *chain = (chain_t *) arg;
    CHECK_INT (status, CRM_PG_OK);
    if (result)
        chain->sum = atoi (PQgetvalue (result, 0, 0));
    if (--chain->left == 0) {
        chain->last.calls = 1;
        return;
    }
    char text[16];
    snprintf (text, sizeof text, "%d", chain->sum);
    const char *values[] = {text, "1"};
    CHECK_INT (crm_pg_read (chain->pg, "add", 2, values, s_on_chain, chain), 0);
}

static void
test_reads (void)
{
    crm_pg_t *pg = s_pg_new (NULL);
    if (!pg)
        return;
    CHECK_INT (crm_pg_pending (pg), 0);

    //  Many reads at once, answered in order with their own values
    enum { N = 500 };
    static answer_t answers[N];
    memset (answers, 0, sizeof answers);
    s_order = 0;
    for (int i = 0; i < N; i++)
        CHECK_INT (s_add (pg, &answers[i], i, 1000), 0);
    CHECK_INT (crm_pg_pending (pg), N);
    CHECK (crm_test_run_until (s_loop, crm_test_pg_idle, pg, 10));
    int good = 0;
    for (int i = 0; i < N; i++) {
        char want[16];
        snprintf (want, sizeof want, "%d", i + 1000);
        good += answers[i].calls == 1 && answers[i].status == CRM_PG_OK &&
                strcmp (answers[i].value, want) == 0 && answers[i].order == i;
    }
    CHECK_INT (good, N);

    //  Parameters are copied: the caller's buffers may change at once
    answer_t copied = {0};
    char a[16] = "40", b[16] = "2";
    const char *values[] = {a, b};
    CHECK_INT (crm_pg_read (pg, "add", 2, values, s_on_answer, &copied), 0);
    strcpy (a, "1");
    strcpy (b, "1");
    CHECK (crm_test_run_until (s_loop, crm_test_pg_idle, pg, 5));
    CHECK_STR (copied.value, "42");

    //  SQL NULL parameters
    answer_t is_null = {0}, not_null = {0};
    const char *null_value[] = {NULL};
    const char *text_value[] = {"x"};
    CHECK_INT (crm_pg_read (pg, "is_null", 1, null_value, s_on_answer, &is_null), 0);
    CHECK_INT (crm_pg_read (pg, "is_null", 1, text_value, s_on_answer, &not_null), 0);
    CHECK (crm_test_run_until (s_loop, crm_test_pg_idle, pg, 5));
    CHECK_STR (is_null.value, "t");
    CHECK_STR (not_null.value, "f");

    //  A failing read fails alone
    answer_t divided[5];
    memset (divided, 0, sizeof divided);
    const char *divisors[] = {"1", "2", "0", "4", "5"};
    for (int i = 0; i < 5; i++)
        CHECK_INT (crm_pg_read (pg, "divide", 1, &divisors[i], s_on_answer, &divided[i]), 0);
    CHECK (crm_test_run_until (s_loop, crm_test_pg_idle, pg, 5));
    CHECK_STR (divided[0].value, "100");
    CHECK_STR (divided[1].value, "50");
    CHECK_INT (divided[2].status, CRM_PG_ESQL);
    CHECK (strncmp (divided[2].error, "22012: ", 7) == 0);
    CHECK (strstr (divided[2].error, "division by zero") != NULL);
    CHECK_STR (divided[3].value, "25");
    CHECK_STR (divided[4].value, "20");
    for (int i = 0; i < 5; i++)
        CHECK_INT (divided[i].calls, 1);

    //  Several failing reads among many, each failing alone
    enum { M = 150 };
    static answer_t mixed[M];
    memset (mixed, 0, sizeof mixed);
    static char divisor_text[M][8];
    for (int i = 0; i < M; i++) {
        snprintf (divisor_text[i], sizeof divisor_text[i], "%d", i % 3 == 1 ? 0 : 1 + i % 7);
        const char *value[] = {divisor_text[i]};
        CHECK_INT (crm_pg_read (pg, "divide", 1, value, s_on_answer, &mixed[i]), 0);
    }
    CHECK (crm_test_run_until (s_loop, crm_test_pg_idle, pg, 10));
    int right = 0;
    for (int i = 0; i < M; i++) {
        char want[16];
        snprintf (want, sizeof want, "%d", i % 3 == 1 ? 0 : 100 / (1 + i % 7));
        if (i % 3 == 1)
            right += mixed[i].calls == 1 && mixed[i].status == CRM_PG_ESQL;
        else
            right += mixed[i].calls == 1 && mixed[i].status == CRM_PG_OK &&
                     strcmp (mixed[i].value, want) == 0;
    }
    CHECK_INT (right, M);

    //  More than the socket takes at once: sending waits for writability
    enum { BIG = 24, BIG_SIZE = 512 * 1024 };
    char *big = malloc (BIG_SIZE + 1);
    memset (big, 'x', BIG_SIZE);
    big[BIG_SIZE] = '\0';
    static answer_t lengths[BIG];
    memset (lengths, 0, sizeof lengths);
    const char *big_value[] = {big};
    for (int i = 0; i < BIG; i++)
        CHECK_INT (crm_pg_read (pg, "length", 1, big_value, s_on_answer, &lengths[i]), 0);
    free (big);
    CHECK (crm_test_run_until (s_loop, crm_test_pg_idle, pg, 20));
    int long_enough = 0;
    for (int i = 0; i < BIG; i++)
        long_enough += lengths[i].calls == 1 && atoi (lengths[i].value) == BIG_SIZE;
    CHECK_INT (long_enough, BIG);

    //  A slow read does not hold back the answers of reads sent before it
    answer_t quick[8], slow = {0};
    memset (quick, 0, sizeof quick);
    for (int i = 0; i < 8; i++)
        CHECK_INT (s_add (pg, &quick[i], i, i), 0);
    const char *seconds[] = {"1.5"};
    CHECK_INT (crm_pg_read (pg, "sleep", 1, seconds, s_on_answer, &slow), 0);
    CHECK (crm_test_run_until (s_loop, s_chain_done, &quick[7], 1.0));
    CHECK_INT (slow.calls, 0);
    CHECK (crm_test_run_until (s_loop, crm_test_pg_idle, pg, 5));
    CHECK_INT (slow.status, CRM_PG_OK);

    //  Unknown statements are refused at once
    answer_t unknown = {0};
    CHECK_INT (crm_pg_read (pg, "no_such_statement", 0, NULL, s_on_answer, &unknown), -1);
    CHECK_INT (unknown.calls, 0);

    //  Callbacks may submit more
    chain_t chain = {pg, 50, 0, {0}};
    const char *start[] = {"0", "1"};
    CHECK_INT (crm_pg_read (pg, "add", 2, start, s_on_chain, &chain), 0);
    CHECK (crm_test_run_until (s_loop, s_chain_done, &chain.last, 10));
    CHECK_INT (chain.sum, 50);

    //  Statements registered after connecting, and one that cannot be prepared
    CHECK_INT (crm_pg_prepare (pg, "late", "SELECT 'late'::text", 0), 0);
    CHECK_INT (crm_pg_prepare (pg, "broken", "SELEKT nothing", 0), 0);
    CHECK_INT (crm_pg_prepare (pg, "late", "SELECT 1", 0), -1);
    answer_t late = {0}, broken = {0}, after = {0};
    CHECK_INT (crm_pg_read (pg, "late", 0, NULL, s_on_answer, &late), 0);
    CHECK_INT (crm_pg_read (pg, "broken", 0, NULL, s_on_answer, &broken), 0);
    CHECK_INT (s_add (pg, &after, 2, 3), 0);
    CHECK (crm_test_run_until (s_loop, crm_test_pg_idle, pg, 5));
    CHECK_STR (late.value, "late");
    CHECK_INT (broken.status, CRM_PG_ESQL);
    CHECK_STR (after.value, "5");
    CHECK (crm_pg_connected (pg));

    crm_pg_destroy (&pg);
}

//  Reads arriving while a group of reads is in flight wait for it and go
//  together: one group, one implicit transaction, so one transaction_timestamp
static void
test_reads_wait_for_the_group_in_flight (void)
{
    crm_pg_t *pg = s_pg_new (NULL);
    if (!pg)
        return;
    CHECK_INT (crm_pg_prepare (pg, "when", "SELECT transaction_timestamp ()::text", 0), 0);
    CHECK (crm_test_run_until (s_loop, crm_test_pg_connected, pg, 5));
    answer_t slow = {0};
    const char *seconds[] = {"0.2"};
    CHECK_INT (crm_pg_read (pg, "sleep", 1, seconds, s_on_answer, &slow), 0);
    crm_test_run_for (s_loop, 0.05);
    CHECK_INT (slow.calls, 0);
    //  Ten reads, each submitted in a loop iteration of its own
    enum { N = 10 };
    answer_t when[N];
    memset (when, 0, sizeof when);
    for (int i = 0; i < N; i++) {
        CHECK_INT (crm_pg_read (pg, "when", 0, NULL, s_on_answer, &when[i]), 0);
        ev_run (s_loop, EVRUN_NOWAIT);
    }
    CHECK (crm_test_run_until (s_loop, crm_test_pg_idle, pg, 5));
    CHECK_INT (slow.status, CRM_PG_OK);
    int same = 0;
    for (int i = 0; i < N; i++)
        same += when[i].status == CRM_PG_OK && strcmp (when[i].value, when[0].value) == 0;
    CHECK_INT (same, N);
    //  With nothing in flight a read goes at once, without waiting for more
    answer_t alone = {0};
    CHECK_INT (s_add (pg, &alone, 2, 2), 0);
    crm_test_run_for (s_loop, 0.1);
    CHECK_STR (alone.value, "4");
    crm_pg_destroy (&pg);
}

static void
test_group_commit (void)
{
    crm_test_exec (s_admin, "TRUNCATE " SCHEMA ".t");
    crm_pg_t *pg = s_pg_new (NULL);
    if (!pg)
        return;

    //  Submitted together: one transaction, callbacks after the commit
    enum { N = 200 };
    static answer_t answers[N];
    memset (answers, 0, sizeof answers);
    for (int i = 0; i < N; i++)
        CHECK_INT (s_insert (pg, &answers[i], i), 0);
    CHECK (crm_test_run_until (s_loop, crm_test_pg_idle, pg, 10));
    int good = 0, visible = 0;
    for (int i = 0; i < N; i++) {
        char want[16];
        snprintf (want, sizeof want, "%d", i);
        good += answers[i].calls == 1 && answers[i].status == CRM_PG_OK &&
                strcmp (answers[i].value, want) == 0;
        visible += answers[i].visible;
    }
    CHECK_INT (good, N);
    CHECK_INT (visible, N);
    CHECK_INT (crm_test_value (s_admin, "SELECT count(*) FROM " SCHEMA ".t"), N);
    CHECK_INT (crm_test_value (s_admin, "SELECT count(DISTINCT txid) FROM " SCHEMA ".t"), 1);

    //  No more than max_batch writes per transaction
    crm_pg_set_max_batch (pg, 50);
    for (int i = 0; i < N; i++)
        CHECK_INT (s_insert (pg, &answers[i], N + i), 0);
    CHECK (crm_test_run_until (s_loop, crm_test_pg_idle, pg, 10));
    CHECK_INT (crm_test_value (s_admin, "SELECT count(*) FROM " SCHEMA ".t"), 2 * N);
    CHECK_INT (
        crm_test_value (s_admin, "SELECT count(DISTINCT txid) FROM " SCHEMA ".t WHERE k >= 200"),
        4);
    CHECK_INT (crm_test_value (s_admin, "SELECT max(c) FROM (SELECT count(*) AS c FROM " SCHEMA
                                        ".t GROUP BY txid) AS x"),
               200);
    crm_pg_set_max_batch (pg, 256);

    //  Writes arriving while a transaction is in flight wait, then go together
    answer_t first = {0};
    static answer_t later[20];
    memset (later, 0, sizeof later);
    CHECK_INT (s_insert (pg, &first, 1000), 0);
    ev_run (s_loop, EVRUN_NOWAIT);
    for (int i = 0; i < 20; i++)
        CHECK_INT (s_insert (pg, &later[i], 1001 + i), 0);
    CHECK (crm_test_run_until (s_loop, crm_test_pg_idle, pg, 10));
    CHECK_INT (first.status, CRM_PG_OK);
    CHECK (first.visible);
    CHECK_INT (crm_test_value (s_admin, "SELECT count(DISTINCT txid) FROM " SCHEMA
                                        ".t WHERE k BETWEEN 1001 AND 1020"),
               1);
    CHECK_INT (
        crm_test_value (s_admin, "SELECT count(*) FROM " SCHEMA ".t WHERE k BETWEEN 1000 AND 1020"),
        21);

    //  A read and a write of the same loop iteration both succeed
    answer_t read = {0}, write = {0};
    CHECK_INT (s_insert (pg, &write, 2000), 0);
    CHECK_INT (crm_pg_read (pg, "table", 0, NULL, s_on_answer, &read), 0);
    CHECK (crm_test_run_until (s_loop, crm_test_pg_idle, pg, 5));
    CHECK_INT (read.status, CRM_PG_OK);
    CHECK_INT (write.status, CRM_PG_OK);
    crm_pg_destroy (&pg);
}

static void
test_bad_write (void)
{
    crm_test_exec (s_admin, "TRUNCATE " SCHEMA ".t");
    crm_test_exec (s_admin, "INSERT INTO " SCHEMA ".t (k, txid) VALUES (7, 0)");
    crm_pg_t *pg = s_pg_new (NULL);
    if (!pg)
        return;

    //  Key 7 exists already: its write fails, the others commit
    enum { N = 20 };
    answer_t answers[N];
    answer_t reads[N];
    memset (answers, 0, sizeof answers);
    memset (reads, 0, sizeof reads);
    for (int i = 0; i < N; i++) {
        CHECK_INT (s_insert (pg, &answers[i], i), 0);
        CHECK_INT (s_add (pg, &reads[i], i, 1), 0);
    }
    CHECK (crm_test_run_until (s_loop, crm_test_pg_idle, pg, 10));
    int good = 0, reads_good = 0;
    for (int i = 0; i < N; i++) {
        CHECK_INT (answers[i].calls, 1);
        if (i != 7)
            good += answers[i].status == CRM_PG_OK && answers[i].visible;
        reads_good += reads[i].status == CRM_PG_OK && reads[i].calls == 1;
    }
    CHECK_INT (good, N - 1);
    CHECK_INT (reads_good, N);
    CHECK_INT (answers[7].status, CRM_PG_ESQL);
    CHECK (strncmp (answers[7].error, "23505: ", 7) == 0);
    CHECK (strstr (answers[7].error, "duplicate key") != NULL);
    CHECK_INT (crm_test_value (s_admin, "SELECT count(*) FROM " SCHEMA ".t"), N);

    //  A failure at commit (a deferred constraint) fails only its own write
    answer_t deferred[6];
    memset (deferred, 0, sizeof deferred);
    const char *keys[] = {"1", "2", "3", "4", "3", "5"};
    for (int i = 0; i < 6; i++)
        CHECK_INT (crm_pg_write (pg, "insert_deferred", 1, &keys[i], s_on_answer, &deferred[i]), 0);
    CHECK (crm_test_run_until (s_loop, crm_test_pg_idle, pg, 10));
    int failed = 0;
    for (int i = 0; i < 6; i++) {
        CHECK_INT (deferred[i].calls, 1);
        failed += deferred[i].status == CRM_PG_ESQL;
    }
    CHECK_INT (failed, 1);
    CHECK_INT (deferred[4].status, CRM_PG_ESQL);
    CHECK (strncmp (deferred[4].error, "23505: ", 7) == 0);
    CHECK_INT (crm_test_value (s_admin, "SELECT count(*) FROM " SCHEMA ".d"), 5);

    //  A lone failing write gets its error directly, and the session is fine after
    answer_t lone = {0}, next = {0};
    CHECK_INT (s_insert (pg, &lone, 7), 0);
    CHECK (crm_test_run_until (s_loop, crm_test_pg_idle, pg, 5));
    CHECK_INT (lone.status, CRM_PG_ESQL);
    CHECK_INT (s_insert (pg, &next, 100), 0);
    CHECK (crm_test_run_until (s_loop, crm_test_pg_idle, pg, 5));
    CHECK_INT (next.status, CRM_PG_OK);
    CHECK (next.visible);
    CHECK (crm_pg_connected (pg));
    crm_pg_destroy (&pg);
}

//  Writes with a batch form: one statement on the server for each run of them.
static void
test_batch_writes (void)
{
    crm_test_exec (s_admin, "TRUNCATE " SCHEMA ".t");
    crm_test_exec (s_admin, "CREATE TABLE IF NOT EXISTS " SCHEMA ".calls (n int NOT NULL)");
    crm_test_exec (s_admin, "TRUNCATE " SCHEMA ".calls");
    crm_test_exec (s_admin, "INSERT INTO " SCHEMA ".calls VALUES (0)");
    crm_pg_t *pg = s_pg_new (NULL);
    if (!pg)
        return;
    //  The batch form counts its calls, and answers each write with its key
    CHECK_INT (crm_pg_prepare_batch (pg, "insert",
                                     "WITH c AS (UPDATE calls SET n = n + 1) "
                                     "INSERT INTO t (k, txid) "
                                     "SELECT (e.v->>0)::int, txid_current () "
                                     "FROM jsonb_array_elements ($1::jsonb) WITH ORDINALITY "
                                     "AS e (v, i) ORDER BY e.i RETURNING k"),
               0);
    CHECK_INT (crm_pg_prepare_batch (pg, "insert", "SELECT 1"), -1);
    CHECK_INT (crm_pg_prepare_batch (pg, "no_such_statement", "SELECT 1"), -1);
    CHECK_INT (crm_pg_prepare (pg, "echo", "SELECT coalesce ($1::text, '<null>'), $2::text", 2), 0);
    CHECK_INT (crm_pg_prepare_batch (pg, "echo",
                                     "SELECT coalesce (e.v->>0, '<null>'), e.v->>1 "
                                     "FROM jsonb_array_elements ($1::jsonb) "
                                     "WITH ORDINALITY AS e (v, i) ORDER BY e.i"),
               0);
    //  A batch form that answers with the wrong number of rows
    CHECK_INT (crm_pg_prepare (pg, "one", "SELECT $1::int * 10", 1), 0);
    CHECK_INT (crm_pg_prepare_batch (pg, "one", "SELECT 1 FROM (SELECT $1::jsonb) AS x"), 0);
    CHECK (crm_test_run_until (s_loop, crm_test_pg_connected, pg, 5));

    //  Fifty writes queued together: one call, one transaction, each its own row
    enum { N = 50 };
    static answer_t answers[N];
    memset (answers, 0, sizeof answers);
    for (int i = 0; i < N; i++)
        CHECK_INT (s_insert (pg, &answers[i], i), 0);
    CHECK (crm_test_run_until (s_loop, crm_test_pg_idle, pg, 10));
    int good = 0;
    for (int i = 0; i < N; i++) {
        char want[16];
        snprintf (want, sizeof want, "%d", i);
        good += answers[i].calls == 1 && answers[i].status == CRM_PG_OK && answers[i].visible &&
                strcmp (answers[i].value, want) == 0;
    }
    CHECK_INT (good, N);
    CHECK_INT (crm_test_value (s_admin, "SELECT n FROM " SCHEMA ".calls"), 1);
    CHECK_INT (crm_test_value (s_admin, "SELECT count(DISTINCT txid) FROM " SCHEMA ".t"), 1);

    //  Text that JSON must escape, and NULL, come back exactly
    const char *texts[] = {"plain",
                           "quote \" and backslash \\",
                           "tab\tnew\nline\x01\x1f",
                           "Ирина Łódź 東京",
                           "",
                           NULL,
                           "{\"a\": [1]}",
                           "\\u0041"};
    enum { T = sizeof texts / sizeof texts[0] };
    answer_t echoes[T];
    memset (echoes, 0, sizeof echoes);
    for (size_t i = 0; i < T; i++) {
        const char *values[] = {texts[i], texts[T - 1 - i]};
        CHECK_INT (crm_pg_write (pg, "echo", 2, values, s_on_answer, &echoes[i]), 0);
    }
    CHECK (crm_test_run_until (s_loop, crm_test_pg_idle, pg, 5));
    for (size_t i = 0; i < T; i++) {
        CHECK_INT (echoes[i].status, CRM_PG_OK);
        CHECK_STR (echoes[i].value, texts[i] ? texts[i] : "<null>");
    }

    //  One write of a batch fails: the batch is rolled back and each write tried
    //  alone, so only that one fails
    crm_test_exec (s_admin, "UPDATE " SCHEMA ".calls SET n = 0");
    static answer_t more[N];
    memset (more, 0, sizeof more);
    for (int i = 0; i < N; i++)
        CHECK_INT (s_insert (pg, &more[i], i == 17 ? 3 : 100 + i), 0);
    CHECK (crm_test_run_until (s_loop, crm_test_pg_idle, pg, 10));
    good = 0;
    for (int i = 0; i < N; i++)
        good += more[i].calls == 1 && more[i].status == CRM_PG_OK && more[i].visible;
    CHECK_INT (good, N - 1);
    CHECK_INT (more[17].status, CRM_PG_ESQL);
    CHECK (strncmp (more[17].error, "23505: ", 7) == 0);
    //  The batch's own effects were rolled back with it; the retries are single
    CHECK_INT (crm_test_value (s_admin, "SELECT n FROM " SCHEMA ".calls"), 0);
    CHECK_INT (crm_test_value (s_admin, "SELECT count(*) FROM " SCHEMA ".t"), 2 * N - 1);

    //  Runs are broken by other statements, and keep their order: a single
    //  write, a run of three, a write of another statement, a run of two
    crm_test_exec (s_admin, "UPDATE " SCHEMA ".calls SET n = 0");
    answer_t mixed[7];
    memset (mixed, 0, sizeof mixed);
    CHECK_INT (s_insert (pg, &mixed[0], 1000), 0);
    const char *ab[] = {"a", "b"};
    CHECK_INT (crm_pg_write (pg, "echo", 2, ab, s_on_answer, &mixed[1]), 0);
    for (int i = 2; i < 5; i++)
        CHECK_INT (s_insert (pg, &mixed[i], 1000 + i), 0);
    CHECK_INT (s_add (pg, &mixed[5], 1, 2), 0);
    CHECK_INT (s_insert (pg, &mixed[6], 1006), 0);
    CHECK (crm_test_run_until (s_loop, crm_test_pg_idle, pg, 5));
    for (int i = 0; i < 7; i++)
        CHECK_INT (mixed[i].status, CRM_PG_OK);
    CHECK_STR (mixed[3].value, "1003");
    CHECK_STR (mixed[5].value, "3");
    CHECK_INT (crm_test_value (s_admin, "SELECT n FROM " SCHEMA ".calls"), 1);
    //  Written in the order given: keys by insertion order
    CHECK_INT (crm_test_value (s_admin,
                               "SELECT count(*) FROM (SELECT k, row_number () OVER (ORDER BY ctid) "
                               "AS r FROM " SCHEMA ".t WHERE k >= 1000) AS x "
                               "WHERE k - 1000 = (ARRAY[0, 2, 3, 4, 6])[r]"),
               5);

    //  A batch form answering the wrong number of rows: tried alone instead
    answer_t ones[3];
    memset (ones, 0, sizeof ones);
    const char *digits[] = {"1", "2", "3"};
    for (int i = 0; i < 3; i++)
        CHECK_INT (crm_pg_write (pg, "one", 1, &digits[i], s_on_answer, &ones[i]), 0);
    CHECK (crm_test_run_until (s_loop, crm_test_pg_idle, pg, 5));
    for (int i = 0; i < 3; i++)
        CHECK_INT (ones[i].status, CRM_PG_OK);
    CHECK_STR (ones[0].value, "10");
    CHECK_STR (ones[1].value, "20");
    CHECK_STR (ones[2].value, "30");
    crm_pg_destroy (&pg);
}

static bool
s_all_called (void *arg)
{
    answer_t *answers = (answer_t *) arg;
    for (int i = 0; i < 6; i++)
        if (answers[i].calls == 0)
            return false;
    return true;
}

static void
test_connection_lost (void)
{
    crm_test_exec (s_admin, "TRUNCATE " SCHEMA ".t");
    crm_pg_t *pg = s_pg_new ("application_name=test_pg_victim");
    if (!pg)
        return;

    //  Three long reads and three writes behind them, then the backend dies
    answer_t answers[6];
    memset (answers, 0, sizeof answers);
    const char *ten[] = {"10"};
    for (int i = 0; i < 3; i++) {
        CHECK_INT (crm_pg_read (pg, "sleep", 1, ten, s_on_answer, &answers[i]), 0);
        CHECK_INT (s_insert (pg, &answers[3 + i], 3 + i), 0);
    }
    crm_test_run_for (s_loop, 0.2);
    CHECK_INT (crm_pg_pending (pg), 6);
    CHECK_INT (crm_test_value (s_admin,
                               "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                               "WHERE application_name = 'test_pg_victim'"),
               1);
    CHECK (crm_test_run_until (s_loop, s_all_called, answers, 5));
    for (int i = 0; i < 6; i++) {
        CHECK_INT (answers[i].calls, 1);
        CHECK_INT (answers[i].status, CRM_PG_EUNAVAILABLE);
        CHECK (strncmp (answers[i].error, "connection to database lost: ", 29) == 0);
    }
    CHECK_INT (crm_pg_pending (pg), 0);
    CHECK (!crm_pg_connected (pg));
    answer_t refused = {0};
    CHECK_INT (s_add (pg, &refused, 1, 1), -1);
    CHECK_INT (s_insert (pg, &refused, 99), -1);
    CHECK_INT (refused.calls, 0);

    //  Back again by itself, statements prepared anew
    CHECK (crm_test_run_until (s_loop, crm_test_pg_connected, pg, 10));
    answer_t again = {0}, write = {0};
    CHECK_INT (s_add (pg, &again, 20, 22), 0);
    CHECK_INT (s_insert (pg, &write, 42), 0);
    CHECK (crm_test_run_until (s_loop, crm_test_pg_idle, pg, 5));
    CHECK_STR (again.value, "42");
    CHECK_INT (write.status, CRM_PG_OK);
    CHECK (write.visible);
    CHECK_INT (crm_test_value (s_admin, "SELECT count(*) FROM " SCHEMA ".t"), 1);

    //  Killed while idle: noticed, and back again
    CHECK_INT (crm_test_value (s_admin,
                               "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                               "WHERE application_name = 'test_pg_victim'"),
               1);
    CHECK (crm_test_run_until (s_loop, crm_test_pg_disconnected, pg, 5));
    CHECK (crm_test_run_until (s_loop, crm_test_pg_connected, pg, 10));
    answer_t third = {0};
    CHECK_INT (s_add (pg, &third, 1, 2), 0);
    CHECK (crm_test_run_until (s_loop, crm_test_pg_idle, pg, 5));
    CHECK_STR (third.value, "3");

    char *log = crm_test_file_text (s_log);
    CHECK (strstr (log, "connection to database lost") != NULL);
    CHECK (strstr (log, "connected to database") != NULL);
    free (log);
    crm_pg_destroy (&pg);
}

static void
test_destroy_pending (void)
{
    crm_pg_t *pg = s_pg_new (NULL);
    if (!pg)
        return;
    answer_t answers[6];
    memset (answers, 0, sizeof answers);
    const char *ten[] = {"10"};
    //  Some sent, some still queued
    CHECK_INT (crm_pg_read (pg, "sleep", 1, ten, s_on_answer, &answers[0]), 0);
    CHECK_INT (s_insert (pg, &answers[1], 1), 0);
    crm_test_run_for (s_loop, 0.1);
    CHECK_INT (s_add (pg, &answers[2], 1, 1), 0);
    CHECK_INT (s_insert (pg, &answers[3], 2), 0);
    CHECK_INT (crm_pg_read (pg, "sleep", 1, ten, s_on_answer, &answers[4]), 0);
    CHECK_INT (s_insert (pg, &answers[5], 3), 0);
    CHECK_INT (crm_pg_pending (pg), 6);
    crm_pg_destroy (&pg);
    CHECK (pg == NULL);
    for (int i = 0; i < 6; i++) {
        CHECK_INT (answers[i].calls, 1);
        CHECK_INT (answers[i].status, CRM_PG_EUNAVAILABLE);
        CHECK_STR (answers[i].error, "shutting down");
    }
    crm_pg_destroy (&pg);
}

//  A callback that destroys the crm_pg calling it.
typedef struct {
    crm_pg_t *pg;
    answer_t answer;
} destroyer_t;

static void
s_on_destroy (crm_pg_status_t status, const PGresult *result, const char *error, void *arg)
{
    destroyer_t *destroyer = (destroyer_t *) arg;
    s_on_answer (status, result, error, &destroyer->answer);
    crm_pg_destroy (&destroyer->pg);
    CHECK (destroyer->pg == NULL);
}

static void
test_destroy_from_callback (void)
{
    destroyer_t destroyer = {s_pg_new (NULL), {0}};
    if (!destroyer.pg)
        return;
    answer_t others[3];
    memset (others, 0, sizeof others);
    const char *ten[] = {"10"};
    //  The destroying read waits on a lock the admin session holds, so the
    //  statements below are surely sent before anything is answered
    crm_test_exec (s_admin, "SELECT pg_advisory_lock(4242)");
    CHECK_INT (s_add (destroyer.pg, &others[0], 1, 1), 0);
    const char *values[] = {"2", "2"};
    CHECK_INT (crm_pg_read (destroyer.pg, "add_after_lock", 2, values, s_on_destroy, &destroyer),
               0);
    crm_test_run_for (s_loop, 0.1);
    CHECK (destroyer.pg != NULL);
    //  Sent behind the two reads above, still running when they are answered
    CHECK_INT (crm_pg_read (destroyer.pg, "sleep", 1, ten, s_on_answer, &others[1]), 0);
    CHECK_INT (s_insert (destroyer.pg, &others[2], 5), 0);
    crm_test_run_for (s_loop, 0.1);
    CHECK_INT (destroyer.answer.calls, 0);
    crm_test_exec (s_admin, "SELECT pg_advisory_unlock(4242)");
    CHECK (crm_test_run_until (s_loop, s_chain_done, &destroyer.answer, 5));
    CHECK_STR (destroyer.answer.value, "4");
    CHECK (destroyer.pg == NULL);
    CHECK_STR (others[0].value, "2");
    CHECK_STR (others[1].error, "shutting down");
    CHECK_INT (others[2].calls, 1);
    //  Nothing of it is left on the loop
    crm_test_run_for (s_loop, 0.2);
    for (int i = 0; i < 3; i++)
        CHECK_INT (others[i].calls, 1);
}

//  True when this process has a connection to port with SO_KEEPALIVE on and
//  TCP_KEEPIDLE and TCP_USER_TIMEOUT as given (the test's other connections
//  have libpq's defaults)
static bool
s_tcp_connection_with (int port, int idle, int user_timeout)
{
    DIR *dir = opendir ("/proc/self/fd");
    bool found = false;
    struct dirent *entry;
    while (dir && !found && (entry = readdir (dir))) {
        int fd = atoi (entry->d_name);
        struct sockaddr_in peer;
        socklen_t len = sizeof peer;
        if (fd <= 2 || getpeername (fd, (struct sockaddr *) &peer, &len) != 0 ||
            peer.sin_family != AF_INET || ntohs (peer.sin_port) != port)
            continue;
        int keepalive = 0, got_idle = 0, got_timeout = 0;
        socklen_t size = sizeof (int);
        getsockopt (fd, SOL_SOCKET, SO_KEEPALIVE, &keepalive, &size);
        size = sizeof (int);
        getsockopt (fd, IPPROTO_TCP, TCP_KEEPIDLE, &got_idle, &size);
        size = sizeof (int);
        getsockopt (fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &got_timeout, &size);
        found = keepalive && got_idle == idle && got_timeout == user_timeout;
    }
    if (dir)
        closedir (dir);
    return found;
}

//  A connection notices a server gone without a word within about a minute
//  (TCP keepalives and a user timeout), and a statement waiting half a minute
//  fails (statement_timeout), unless the dsn sets its own
static void
test_connection_defaults (void)
{
    const char *at = strstr (s_dsn, "port=");
    int port = at ? atoi (at + 5) : 5432;
    const char *extra[] = {NULL, "keepalives_idle=7 tcp_user_timeout=5000 "
                                 "options='-c statement_timeout=250ms'"};
    int want_idle[] = {30, 7}, want_timeout[] = {60000, 5000};
    const char *want_statement_timeout[] = {"30s", "250ms"};
    for (int i = 0; i < 2; i++) {
        crm_pg_t *pg = s_pg_new (extra[i]);
        if (!pg)
            return;
        CHECK_INT (
            crm_pg_prepare (pg, "timeout", "SELECT current_setting ('statement_timeout')", 0), 0);
        CHECK (crm_test_run_until (s_loop, crm_test_pg_connected, pg, 5));
        CHECK (s_tcp_connection_with (port, want_idle[i], want_timeout[i]));
        answer_t setting;
        memset (&setting, 0, sizeof setting);
        CHECK_INT (crm_pg_read (pg, "timeout", 0, NULL, s_on_answer, &setting), 0);
        CHECK (crm_test_run_until (s_loop, crm_test_pg_idle, pg, 5));
        CHECK_INT (setting.status, CRM_PG_OK);
        CHECK_STR (setting.value, want_statement_timeout[i]);
        crm_pg_destroy (&pg);
    }
}

int
main (void)
{
    s_dsn = crm_test_dsn ("test_pg");
    if (!s_dsn)
        return 77;
    s_log = crm_test_log_capture ("test_pg", "info");
    s_admin = crm_test_connect (s_dsn, NULL);
    crm_test_exec (s_admin, "DROP SCHEMA IF EXISTS " SCHEMA " CASCADE");
    crm_test_exec (s_admin, "CREATE SCHEMA " SCHEMA);
    crm_test_exec (s_admin, "CREATE TABLE " SCHEMA ".t (k int PRIMARY KEY, txid bigint NOT NULL)");
    crm_test_exec (s_admin, "CREATE TABLE " SCHEMA
                            ".d (k int, CONSTRAINT d_k UNIQUE (k) DEFERRABLE INITIALLY DEFERRED)");
    s_loop = ev_loop_new (EVFLAG_AUTO);

    RUN (test_message);
    RUN (test_new_and_not_connected);
    RUN (test_connection_defaults);
    RUN (test_reads);
    RUN (test_reads_wait_for_the_group_in_flight);
    RUN (test_group_commit);
    RUN (test_bad_write);
    RUN (test_batch_writes);
    RUN (test_connection_lost);
    RUN (test_destroy_pending);
    RUN (test_destroy_from_callback);

    crm_test_exec (s_admin, "DROP SCHEMA " SCHEMA " CASCADE");
    PQfinish (s_admin);
    ev_loop_destroy (s_loop);
    //  The library's log lines, when something went wrong
    crm_test_log_end (&s_log, crm_test_failed || getenv ("TEST_PG_LOG"));
    return TEST_DONE ("test_pg");
}
