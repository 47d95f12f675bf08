/*  test_check.c - unit tests of the orders service's checks: transitions, tracking codes, money. */
#include "orders.h"
#include "crm_test.h"

#include <stdint.h>

enum {
    PLACED = CRM__V1__ORDER_STATUS__ORDER_STATUS_PLACED,
    CONFIRMED = CRM__V1__ORDER_STATUS__ORDER_STATUS_CONFIRMED,
    IN_PREPARATION = CRM__V1__ORDER_STATUS__ORDER_STATUS_IN_PREPARATION,
    READY = CRM__V1__ORDER_STATUS__ORDER_STATUS_READY,
    SHIPPED = CRM__V1__ORDER_STATUS__ORDER_STATUS_SHIPPED,
    DELIVERED = CRM__V1__ORDER_STATUS__ORDER_STATUS_DELIVERED,
    COMPLETED = CRM__V1__ORDER_STATUS__ORDER_STATUS_COMPLETED,
    CANCELLED = CRM__V1__ORDER_STATUS__ORDER_STATUS_CANCELLED,
    DELAYED = CRM__V1__ORDER_STATUS__ORDER_STATUS_DELAYED,
};

static void
test_transitions (void)
{
    //  The table of docs/orders.md, row by row: from -> every legal to
    static const struct {
        int from;
        int to[6];
    } table[] = {
        {PLACED, {CONFIRMED, IN_PREPARATION, READY, DELAYED, CANCELLED}},
        {CONFIRMED, {IN_PREPARATION, READY, DELAYED, CANCELLED}},
        {IN_PREPARATION, {READY, DELAYED, CANCELLED}},
        {DELAYED, {CONFIRMED, IN_PREPARATION, READY, DELAYED, CANCELLED}},
        {READY, {SHIPPED, DELIVERED, COMPLETED, CANCELLED}},
        {SHIPPED, {DELIVERED, CANCELLED}},
        {DELIVERED, {COMPLETED}},
        {COMPLETED, {0}},
        {CANCELLED, {0}},
    };
    int legal = 0;
    for (size_t r = 0; r < sizeof table / sizeof table[0]; r++) {
        unsigned want = 0;
        for (int k = 0; k < 6 && table[r].to[k]; k++)
            want |= 1u << table[r].to[k];
        for (int to = 0; to <= 10; to++) {
            int expected = (want >> to) & 1;
            if (orders_transition_legal (table[r].from, to) != expected)
                fprintf (stderr, "  %s -> %s\n", orders_status_name (table[r].from),
                         orders_status_name (to));
            CHECK_INT (orders_transition_legal (table[r].from, to), expected);
            legal += expected;
            //  The mask the database gets says the same
            if (to >= 1 && to <= 9)
                CHECK_INT ((orders_transition_sources (to) >> table[r].from) & 1, expected);
        }
    }
    CHECK_INT (legal, 5 + 4 + 3 + 5 + 4 + 2 + 1);
    //  Nothing goes back to PLACED; nothing leaves the final statuses
    CHECK_INT (orders_transition_sources (PLACED), 0);
    CHECK_INT (orders_transition_sources (COMPLETED), (1u << READY) | (1u << DELIVERED));
    CHECK_INT (orders_transition_sources (DELAYED),
               (1u << PLACED) | (1u << CONFIRMED) | (1u << IN_PREPARATION) | (1u << DELAYED));
    CHECK (!orders_transition_legal (0, PLACED));
    CHECK (!orders_transition_legal (-1, PLACED));
    CHECK (!orders_transition_legal (PLACED, 42));
    CHECK (!orders_transition_legal (99, 1));
    CHECK_INT (orders_transition_sources (0), 0);
    CHECK_INT (orders_transition_sources (10), 0);
    CHECK_INT (orders_transition_sources (-3), 0);
}

static void
test_status_names (void)
{
    CHECK (!orders_status_valid (0));
    CHECK (orders_status_valid (1));
    CHECK (orders_status_valid (9));
    CHECK (!orders_status_valid (10));
    CHECK (!orders_status_valid (-1));
    CHECK_STR (orders_status_name (IN_PREPARATION), "IN_PREPARATION");
    CHECK_STR (orders_status_name (DELAYED), "DELAYED");
    CHECK_STR (orders_status_name (42), "UNSPECIFIED");
    CHECK_STR (orders_status_name (-42), "UNSPECIFIED");
}

static void
test_tracking_code (void)
{
    char code[ORDERS_TRACKING_LEN + 1];
    //  Bytes map to the alphabet modulo 31; 248 and up are skipped
    unsigned char bytes[20];
    for (int i = 0; i < 20; i++)
        bytes[i] = (unsigned char) i;
    CHECK_INT (orders_tracking_code_from_bytes (bytes, 20, code), 12);
    CHECK_STR (code, "23456789ABCD");
    unsigned char skewed[] = {255, 248, 247, 30, 31, 0, 62, 250, 1, 2, 3, 4, 5, 6, 7, 8, 9};
    CHECK_INT (orders_tracking_code_from_bytes (skewed, sizeof skewed, code), 15);
    CHECK_STR (code, "ZZ2223456789");
    CHECK_INT (orders_tracking_code_from_bytes (skewed, 10, code), -1);
    unsigned char high[64];
    memset (high, 0xff, sizeof high);
    CHECK_INT (orders_tracking_code_from_bytes (high, sizeof high, code), -1);

    //  Fresh codes: the right shape, and not one twice in many
    enum { N = 2000 };
    static char seen[N][ORDERS_TRACKING_LEN + 1];
    int bad = 0, twice = 0;
    int count[256] = {0};
    for (int i = 0; i < N; i++) {
        CHECK_INT (orders_tracking_codes_new (&seen[i], 1), 0);
        char normal[ORDERS_TRACKING_LEN + 1];
        if (strlen (seen[i]) != ORDERS_TRACKING_LEN ||
            orders_tracking_code_normalize (seen[i], normal) != 0 ||
            strcmp (normal, seen[i]) != 0 || strpbrk (seen[i], "01OIL") != NULL)
            bad++;
        for (int k = 0; k < ORDERS_TRACKING_LEN; k++)
            count[(unsigned char) seen[i][k]]++;
        for (int j = 0; j < i; j++)
            if (strcmp (seen[i], seen[j]) == 0)
                twice++;
    }
    CHECK_INT (bad, 0);
    CHECK_INT (twice, 0);
    //  Several at once, each its own
    char many[8][ORDERS_TRACKING_LEN + 1];
    CHECK_INT (orders_tracking_codes_new (many, 8), 0);
    for (int i = 0; i < 8; i++) {
        CHECK_INT (strlen (many[i]), ORDERS_TRACKING_LEN);
        for (int j = 0; j < i; j++)
            CHECK (strcmp (many[i], many[j]) != 0);
    }
    CHECK_INT (orders_tracking_codes_new (many, 0), -1);
    CHECK_INT (orders_tracking_codes_new (many, 9), -1);
    //  24,000 characters over 31: each about 774 times; far off means a bias
    int low = N, most = 0;
    for (const char *c = ORDERS_TRACKING_ALPHABET; *c; c++) {
        if (count[(unsigned char) *c] < low)
            low = count[(unsigned char) *c];
        if (count[(unsigned char) *c] > most)
            most = count[(unsigned char) *c];
    }
    CHECK (low > 600);
    CHECK (most < 950);
}

static void
test_tracking_code_typed (void)
{
    char code[ORDERS_TRACKING_LEN + 1];
    CHECK_INT (orders_tracking_code_normalize ("ABCD-EFGH-JKMN", code), 0);
    CHECK_STR (code, "ABCDEFGHJKMN");
    CHECK_INT (orders_tracking_code_normalize (" abcd efgh 2345 ", code), 0);
    CHECK_STR (code, "ABCDEFGH2345");
    CHECK_INT (orders_tracking_code_normalize ("ABCDEFGHJKM", code), -1);   //  11
    CHECK_INT (orders_tracking_code_normalize ("ABCDEFGHJKMNP", code), -1); //  13
    CHECK_INT (orders_tracking_code_normalize ("ABCDEFGHJKM0", code), -1);  //  0 is not used
    CHECK_INT (orders_tracking_code_normalize ("ABCDEFGHJKMO", code), -1);  //  nor O
    CHECK_INT (orders_tracking_code_normalize ("ABCDEFGHJKM1", code), -1);
    CHECK_INT (orders_tracking_code_normalize ("ABCDEFGHJKMI", code), -1);
    CHECK_INT (orders_tracking_code_normalize ("ABCDEFGHJKML", code), -1);
    CHECK_INT (orders_tracking_code_normalize ("ABCDEFGHJKM%", code), -1);
    CHECK_INT (orders_tracking_code_normalize ("ABCDEFGHJKM\xc3\x84", code), -1);
    CHECK_INT (orders_tracking_code_normalize ("", code), -1);
    CHECK_INT (orders_tracking_code_normalize ("------------", code), -1);
}

static void
test_currency (void)
{
    CHECK (orders_currency_valid ("EUR"));
    CHECK (orders_currency_valid ("RUB"));
    CHECK (!orders_currency_valid ("eur"));
    CHECK (!orders_currency_valid ("EU"));
    CHECK (!orders_currency_valid ("EURO"));
    CHECK (!orders_currency_valid ("E1R"));
    CHECK (!orders_currency_valid (""));
    CHECK (!orders_currency_valid ("\xc3\x84UR"));
}

static Crm__V1__OrderItem *
s_item (int64_t quantity, int64_t price)
{
    static Crm__V1__OrderItem items[8];
    static int next;
    Crm__V1__OrderItem *item = &items[next++ % 8];
    crm__v1__order_item__init (item);
    item->product_id = (char *) "sku";
    item->quantity = quantity;
    item->unit_price_minor = price;
    return item;
}

static void
test_money (void)
{
    int64_t total = -1;
    Crm__V1__OrderItem *two[] = {s_item (2, 150), s_item (3, 1000)};
    CHECK_INT (orders_total (two, 2, &total), 0);
    CHECK_INT (total, 3300);
    CHECK_INT (orders_total (two, 0, &total), 0);
    CHECK_INT (total, 0);

    //  The largest that fits, and one more
    Crm__V1__OrderItem *max[] = {s_item (1, INT64_MAX)};
    CHECK_INT (orders_total (max, 1, &total), 0);
    CHECK (total == INT64_MAX);
    Crm__V1__OrderItem *sum_over[] = {s_item (1, INT64_MAX), s_item (1, 1)};
    CHECK_INT (orders_total (sum_over, 2, &total), -1);
    Crm__V1__OrderItem *product_over[] = {s_item (1000000, INT64_MAX / 999999)};
    CHECK_INT (orders_total (product_over, 1, &total), -1);
    Crm__V1__OrderItem *negative[] = {s_item (2, -1)};
    CHECK_INT (orders_total (negative, 1, &total), -1);
    Crm__V1__OrderItem *huge[] = {s_item (INT64_MAX, INT64_MAX)};
    CHECK_INT (orders_total (huge, 1, &total), -1);
}

static Crm__V1__Order *
s_order (const char *json)
{
    char err[256];
    ProtobufCMessage *m =
        crm_json_decode (&crm__v1__order__descriptor, json, strlen (json), err, sizeof err);
    if (!m)
        fprintf (stderr, "bad test json: %s\n", err);
    return (Crm__V1__Order *) m;
}

//  Checks an order given as JSON; returns 0 or -1 and prints why on -1.
static int
s_check (const char *json, bool purchase, int64_t *total)
{
    Crm__V1__Order *order = s_order (json);
    if (!order)
        return -2;
    char err[256] = "";
    int64_t sum = 0;
    int rc = orders_order_check (order, *order->branch ? order->branch : "riga-1", purchase, &sum,
                                 err, sizeof err);
    CHECK (rc == 0 || *err);
    if (total)
        *total = sum;
    protobuf_c_message_free_unpacked (&order->base, NULL);
    return rc;
}

#define GOOD_ITEMS "\"items\":[{\"productId\":\"a\",\"quantity\":2,\"unitPriceMinor\":150}]"

static void
test_order (void)
{
    int64_t total;
    CHECK_INT (
        s_check ("{\"externalId\":\"1\",\"currency\":\"EUR\"," GOOD_ITEMS "}", false, &total), 0);
    CHECK_INT (total, 300);
    CHECK_INT (s_check ("{\"externalId\":\"1\",\"currency\":\"EUR\",\"contactId\":"
                        "\"11111111-1111-4111-8111-111111111111\",\"promisedByUnixMs\":1,"
                        "\"total\":{\"minorUnits\":300,\"currency\":\"EUR\"}," GOOD_ITEMS "}",
                        false, NULL),
               0);
    //  A purchase may say COMPLETED; an order may not say anything
    CHECK_INT (s_check ("{\"externalId\":\"1\",\"currency\":\"EUR\",\"status\":7," GOOD_ITEMS "}",
                        true, NULL),
               0);
    CHECK_INT (s_check ("{\"externalId\":\"1\",\"currency\":\"EUR\",\"status\":7," GOOD_ITEMS "}",
                        false, NULL),
               -1);
    CHECK_INT (s_check ("{\"externalId\":\"1\",\"currency\":\"EUR\",\"status\":1," GOOD_ITEMS "}",
                        true, NULL),
               -1);

    static const char *const refused[] = {
        //  Set by the service
        "{\"id\":\"x\",\"externalId\":\"1\",\"currency\":\"EUR\"," GOOD_ITEMS "}",
        "{\"trackingCode\":\"ABCDEFGHJKMN\",\"externalId\":\"1\",\"currency\":\"EUR\"," GOOD_ITEMS
        "}",
        "{\"version\":1,\"externalId\":\"1\",\"currency\":\"EUR\"," GOOD_ITEMS "}",
        "{\"late\":true,\"externalId\":\"1\",\"currency\":\"EUR\"," GOOD_ITEMS "}",
        "{\"history\":[{\"toStatus\":1}],\"externalId\":\"1\",\"currency\":\"EUR\"," GOOD_ITEMS "}",
        //  Missing or malformed
        "{\"currency\":\"EUR\"," GOOD_ITEMS "}",
        "{\"externalId\":\"1\"," GOOD_ITEMS "}",
        "{\"externalId\":\"1\",\"currency\":\"eur\"," GOOD_ITEMS "}",
        "{\"externalId\":\"1\",\"currency\":\"EUR\"}",
        "{\"externalId\":\"1\",\"currency\":\"EUR\",\"contactId\":\"42\"," GOOD_ITEMS "}",
        "{\"externalId\":\"a\\tb\",\"currency\":\"EUR\"," GOOD_ITEMS "}",
        "{\"externalId\":\"1\",\"currency\":\"EUR\",\"promisedByUnixMs\":-5," GOOD_ITEMS "}",
        "{\"externalId\":\"1\",\"currency\":\"EUR\",\"promisedByUnixMs\":"
        "253402300800000," GOOD_ITEMS "}",
        //  Items
        "{\"externalId\":\"1\",\"currency\":\"EUR\",\"items\":[{\"productId\":\"a\",\"quantity\":0,"
        "\"unitPriceMinor\":1}]}",
        "{\"externalId\":\"1\",\"currency\":\"EUR\",\"items\":[{\"productId\":\"a\",\"quantity\":"
        "1000001,\"unitPriceMinor\":1}]}",
        "{\"externalId\":\"1\",\"currency\":\"EUR\",\"items\":[{\"productId\":\"a\",\"quantity\":"
        "-1,\"unitPriceMinor\":1}]}",
        "{\"externalId\":\"1\",\"currency\":\"EUR\",\"items\":[{\"productId\":\"a\",\"quantity\":1,"
        "\"unitPriceMinor\":-1}]}",
        "{\"externalId\":\"1\",\"currency\":\"EUR\",\"items\":[{\"quantity\":1}]}",
        "{\"externalId\":\"1\",\"currency\":\"EUR\",\"items\":[{\"productId\":\"a\",\"quantity\":"
        "1000000,\"unitPriceMinor\":\"9223372036854775\"}]}",
        //  A total that is not the items' sum
        "{\"externalId\":\"1\",\"currency\":\"EUR\",\"total\":{\"minorUnits\":299}," GOOD_ITEMS "}",
        "{\"externalId\":\"1\",\"currency\":\"EUR\",\"total\":{\"minorUnits\":300,\"currency\":"
        "\"USD\"}," GOOD_ITEMS "}",
    };
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
        int rc = s_check (refused[i], false, NULL);
        if (rc != -1)
            fprintf (stderr, "  accepted: %s\n", refused[i]);
        CHECK_INT (rc, -1);
    }

    //  200 items are fine, 201 are not; the branch must be there and sane
    char *json = malloc (64 * 1024);
    for (int n = 200; n <= 201; n++) {
        size_t at =
            (size_t) sprintf (json, "{\"externalId\":\"1\",\"currency\":\"EUR\",\"items\":[");
        for (int i = 0; i < n; i++)
            at += (size_t) sprintf (json + at, "%s{\"name\":\"x\",\"quantity\":1}", i ? "," : "");
        strcpy (json + at, "]}");
        CHECK_INT (s_check (json, false, NULL), n == 200 ? 0 : -1);
    }
    free (json);
    Crm__V1__Order *order = s_order ("{\"externalId\":\"1\",\"currency\":\"EUR\"," GOOD_ITEMS "}");
    char err[256];
    CHECK_INT (orders_order_check (order, "", false, &total, err, sizeof err), -1);
    CHECK (strstr (err, "branch") != NULL);
    char long_branch[300];
    memset (long_branch, 'b', sizeof long_branch - 1);
    long_branch[sizeof long_branch - 1] = '\0';
    CHECK_INT (orders_order_check (order, long_branch, false, &total, err, sizeof err), -1);
    protobuf_c_message_free_unpacked (&order->base, NULL);
}

static void
test_days_and_tokens (void)
{
    CHECK (orders_day_valid ("2026-11-22"));
    CHECK (orders_day_valid ("2024-02-29"));
    CHECK (!orders_day_valid ("2025-02-29"));
    CHECK (!orders_day_valid ("2026-13-01"));
    CHECK (!orders_day_valid ("2026-1-22"));
    CHECK (!orders_day_valid ("2026-11-22T00:00"));
    CHECK (!orders_day_valid (""));
    CHECK (!orders_day_valid ("yyyy-mm-dd"));

    char micros[21], id[37];
    CHECK_INT (orders_page_token_parse ("1795391592809874.93825b15-59a1-4330-8a04-27bded914713",
                                        micros, id),
               0);
    CHECK_STR (micros, "1795391592809874");
    CHECK_STR (id, "93825b15-59a1-4330-8a04-27bded914713");
    CHECK_INT (orders_page_token_parse (".93825b15-59a1-4330-8a04-27bded914713", micros, id), -1);
    CHECK_INT (orders_page_token_parse ("12x.93825b15-59a1-4330-8a04-27bded914713", micros, id),
               -1);
    CHECK_INT (orders_page_token_parse ("1234567890123456789.93825b15-59a1-4330-8a04-27bded914713",
                                        micros, id),
               -1);
    CHECK_INT (orders_page_token_parse ("12.93825b15", micros, id), -1);
    CHECK_INT (orders_page_token_parse ("93825b15-59a1-4330-8a04-27bded914713", micros, id), -1);
    CHECK_INT (orders_page_token_parse ("", micros, id), -1);

    CHECK (crm_uuid_valid ("93825b15-59a1-4330-8a04-27bded914713"));
    CHECK (!crm_uuid_valid ("93825b15-59a1-4330-8a04-27bded91471"));
    CHECK (!crm_uuid_valid ("93825b15x59a1-4330-8a04-27bded914713"));
    CHECK (orders_text_valid ("Anna", 4, false));
    CHECK (!orders_text_valid ("Anna", 3, false));
    CHECK (!orders_text_valid ("An\nna", 10, false));
    CHECK (orders_text_valid ("An\nna\tx", 10, true));
    CHECK (!orders_text_valid ("An\rna", 10, true));
    CHECK (!orders_text_valid ("An\x7fna", 10, true));
}

int
main (void)
{
    RUN (test_transitions);
    RUN (test_status_names);
    RUN (test_tracking_code);
    RUN (test_tracking_code_typed);
    RUN (test_currency);
    RUN (test_money);
    RUN (test_order);
    RUN (test_days_and_tokens);
    return TEST_DONE ("test_check");
}
