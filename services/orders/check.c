/*  check.c - validation of orders before they reach the database: transitions, money, tracking codes. */
#include "orders.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define S_BIT(status) (1u << CRM__V1__ORDER_STATUS__ORDER_STATUS_##status)

//  The legal transitions: for each status, the statuses it may go to. An
//  order not yet ready may be confirmed, prepared, delayed (again, with a new
//  promise) or cancelled; a ready one leaves the shop; completed and cancelled
//  are final. Nothing goes back to PLACED. docs/orders.md shows the table.
static const unsigned s_next[] = {
    [CRM__V1__ORDER_STATUS__ORDER_STATUS_PLACED] = S_BIT (CONFIRMED) | S_BIT (IN_PREPARATION) |
                                                   S_BIT (READY) | S_BIT (DELAYED) |
                                                   S_BIT (CANCELLED),
    [CRM__V1__ORDER_STATUS__ORDER_STATUS_CONFIRMED] =
        S_BIT (IN_PREPARATION) | S_BIT (READY) | S_BIT (DELAYED) | S_BIT (CANCELLED),
    [CRM__V1__ORDER_STATUS__ORDER_STATUS_IN_PREPARATION] =
        S_BIT (READY) | S_BIT (DELAYED) | S_BIT (CANCELLED),
    [CRM__V1__ORDER_STATUS__ORDER_STATUS_READY] =
        S_BIT (SHIPPED) | S_BIT (DELIVERED) | S_BIT (COMPLETED) | S_BIT (CANCELLED),
    [CRM__V1__ORDER_STATUS__ORDER_STATUS_SHIPPED] = S_BIT (DELIVERED) | S_BIT (CANCELLED),
    [CRM__V1__ORDER_STATUS__ORDER_STATUS_DELIVERED] = S_BIT (COMPLETED),
    [CRM__V1__ORDER_STATUS__ORDER_STATUS_COMPLETED] = 0,
    [CRM__V1__ORDER_STATUS__ORDER_STATUS_CANCELLED] = 0,
    [CRM__V1__ORDER_STATUS__ORDER_STATUS_DELAYED] = S_BIT (CONFIRMED) | S_BIT (IN_PREPARATION) |
                                                    S_BIT (READY) | S_BIT (DELAYED) |
                                                    S_BIT (CANCELLED),
};
#define S_NSTATUS ((int) (sizeof s_next / sizeof s_next[0]))

static const char *const s_names[] = {
    "UNSPECIFIED", "PLACED",    "CONFIRMED", "IN_PREPARATION", "READY",
    "SHIPPED",     "DELIVERED", "COMPLETED", "CANCELLED",      "DELAYED",
};

int
orders_currency_valid (const char *code)
{
    return strlen (code) == 3 && code[0] >= 'A' && code[0] <= 'Z' && code[1] >= 'A' &&
           code[1] <= 'Z' && code[2] >= 'A' && code[2] <= 'Z';
}

int
orders_status_valid (int status)
{
    return status > 0 && status < S_NSTATUS;
}

const char *
orders_status_name (int status)
{
    return status >= 0 && status < S_NSTATUS ? s_names[status] : s_names[0];
}

int
orders_transition_legal (int from, int to)
{
    return orders_status_valid (from) && orders_status_valid (to) && (s_next[from] & (1u << to));
}

unsigned
orders_transition_sources (int to)
{
    unsigned mask = 0;
    for (int from = 1; from < S_NSTATUS; from++)
        if (orders_transition_legal (from, to))
            mask |= 1u << from;
    return mask;
}

int
orders_total (Crm__V1__OrderItem *const *items, size_t n, int64_t *total)
{
    int64_t sum = 0;
    for (size_t i = 0; i < n; i++) {
        int64_t line;
        if (items[i]->quantity < 0 || items[i]->unit_price_minor < 0 ||
            __builtin_mul_overflow (items[i]->quantity, items[i]->unit_price_minor, &line) ||
            __builtin_add_overflow (sum, line, &sum))
            return -1;
    }
    *total = sum;
    return 0;
}

int
orders_tracking_code_from_bytes (const unsigned char *random, size_t len,
                                 char out[ORDERS_TRACKING_LEN + 1])
{
    //  256 is not a multiple of 31: bytes from 248 up would favour the first
    //  eight characters, so they are skipped
    const size_t size = sizeof ORDERS_TRACKING_ALPHABET - 1;
    const unsigned limit = 256 - 256 % size;
    size_t used = 0, n = 0;
    while (n < ORDERS_TRACKING_LEN) {
        if (used == len)
            return -1;
        unsigned byte = random[used++];
        if (byte < limit)
            out[n++] = ORDERS_TRACKING_ALPHABET[byte % size];
    }
    out[n] = '\0';
    return (int) used;
}

int
orders_tracking_codes_new (char codes[][ORDERS_TRACKING_LEN + 1], int n)
{
    //  One read for all: 32 bytes per code, each kept with probability
    //  248/256, run short of 12 about once in 10^23 codes, and then we draw again
    enum { PER_CODE = 32, MOST = 8 };
    unsigned char random[PER_CODE * MOST];
    if (n < 1 || n > MOST)
        return -1;
    for (int tries = 0; tries < 4; tries++) {
        if (crm_random_bytes (random, (size_t) n * PER_CODE) != 0)
            return -1;
        int made = 0;
        while (made < n && orders_tracking_code_from_bytes (random + made * PER_CODE, PER_CODE,
                                                            codes[made]) > 0)
            made++;
        if (made == n)
            return 0;
    }
    return -1;
}

int
orders_tracking_code_normalize (const char *input, char out[ORDERS_TRACKING_LEN + 1])
{
    size_t n = 0;
    for (const char *p = input; *p; p++) {
        if (*p == ' ' || *p == '-')
            continue;
        char c = (char) toupper ((unsigned char) *p);
        if (n == ORDERS_TRACKING_LEN || !strchr (ORDERS_TRACKING_ALPHABET, c))
            return -1;
        out[n++] = c;
    }
    if (n != ORDERS_TRACKING_LEN)
        return -1;
    out[n] = '\0';
    return 0;
}

int
orders_text_valid (const char *text, size_t max, bool multiline)
{
    size_t len = 0;
    for (const char *p = text; *p; p++, len++)
        if (((unsigned char) *p < ' ' && !(multiline && (*p == '\n' || *p == '\t'))) || *p == 0x7f)
            return 0;
    return len <= max;
}

//  Writes why a text field is refused, or returns 1 when it is fine.
static int
s_text_ok (const char *field, const char *text, size_t max, char *err, size_t errlen)
{
    if (orders_text_valid (text, max, false))
        return 1;
    if (strlen (text) > max)
        snprintf (err, errlen, "%s is longer than %zu bytes", field, max);
    else
        snprintf (err, errlen, "%s holds a control character", field);
    return 0;
}

int
orders_order_check (const Crm__V1__Order *order, const char *branch, bool purchase, int64_t *total,
                    char *err, size_t errlen)
{
    if (*order->id || *order->tracking_code || order->n_history || order->created_unix_ms ||
        order->updated_unix_ms || order->version || order->late) {
        snprintf (err, errlen,
                  "id, tracking_code, history, late, times and version are set by the service, "
                  "not by the caller");
        return -1;
    }
    int status = order->status;
    if (status != CRM__V1__ORDER_STATUS__ORDER_STATUS_UNSPECIFIED &&
        !(purchase && status == CRM__V1__ORDER_STATUS__ORDER_STATUS_COMPLETED)) {
        snprintf (err, errlen, "status is set by the service: a new %s is %s",
                  purchase ? "purchase" : "order", purchase ? "COMPLETED" : "PLACED");
        return -1;
    }
    if (!*branch) {
        snprintf (err, errlen, "branch is required (in the order or the request metadata)");
        return -1;
    }
    if (!*order->external_id) {
        snprintf (err, errlen, "external_id (the branch's own order number) is required");
        return -1;
    }
    if (!s_text_ok ("branch", branch, ORDERS_MAX_TEXT, err, errlen) ||
        !s_text_ok ("external_id", order->external_id, ORDERS_MAX_TEXT, err, errlen) ||
        !s_text_ok ("customer_first_name", order->customer_first_name, ORDERS_MAX_TEXT, err,
                    errlen))
        return -1;
    if (*order->contact_id && !crm_uuid_valid (order->contact_id)) {
        snprintf (err, errlen, "contact_id \"%.40s\" is not a contact id", order->contact_id);
        return -1;
    }
    if (!orders_currency_valid (order->currency)) {
        snprintf (err, errlen, "currency \"%.8s\" is not an ISO 4217 code like \"EUR\"",
                  order->currency);
        return -1;
    }
    if (order->n_items < 1 || order->n_items > ORDERS_MAX_ITEMS) {
        snprintf (err, errlen, "an order has 1 to %d items, not %zu", ORDERS_MAX_ITEMS,
                  order->n_items);
        return -1;
    }
    for (size_t i = 0; i < order->n_items; i++) {
        const Crm__V1__OrderItem *item = order->items[i];
        char field[48];
        snprintf (field, sizeof field, "items[%zu].product_id", i);
        if (!s_text_ok (field, item->product_id, ORDERS_MAX_TEXT, err, errlen))
            return -1;
        snprintf (field, sizeof field, "items[%zu].name", i);
        if (!s_text_ok (field, item->name, ORDERS_MAX_TEXT, err, errlen))
            return -1;
        if (!*item->product_id && !*item->name) {
            snprintf (err, errlen, "items[%zu] needs a product_id or a name", i);
            return -1;
        }
        if (item->quantity < 1 || item->quantity > ORDERS_MAX_QUANTITY) {
            snprintf (err, errlen, "items[%zu].quantity is 1 to %d, not %lld", i,
                      ORDERS_MAX_QUANTITY, (long long) item->quantity);
            return -1;
        }
        if (item->unit_price_minor < 0) {
            snprintf (err, errlen, "items[%zu].unit_price_minor is negative", i);
            return -1;
        }
    }
    if (orders_total (order->items, order->n_items, total) != 0) {
        snprintf (err, errlen, "the order's total does not fit in 64 bits of minor units");
        return -1;
    }
    //  A total sent along must be the one the items make
    if (order->total &&
        (order->total->minor_units != *total ||
         (*order->total->currency && strcmp (order->total->currency, order->currency)))) {
        snprintf (err, errlen, "total %lld %.8s is not the items' sum %lld %s",
                  (long long) order->total->minor_units, order->total->currency, (long long) *total,
                  order->currency);
        return -1;
    }
    if (order->promised_by_unix_ms < 0 || order->promised_by_unix_ms > ORDERS_MAX_UNIX_MS) {
        snprintf (err, errlen, "promised_by_unix_ms is not a time");
        return -1;
    }
    return 0;
}

int
orders_day_valid (const char *day)
{
    static const int days[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (strlen (day) != 10 || day[4] != '-' || day[7] != '-')
        return 0;
    for (int i = 0; i < 10; i++)
        if (i != 4 && i != 7 && !isdigit ((unsigned char) day[i]))
            return 0;
    int year = atoi (day), month = atoi (day + 5), mday = atoi (day + 8);
    if (year < 1 || month < 1 || month > 12 || mday < 1 || mday > days[month - 1])
        return 0;
    int leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    return !(month == 2 && mday == 29 && !leap);
}

int
orders_page_token_parse (const char *token, char micros[21], char id[37])
{
    const char *dot = strchr (token, '.');
    size_t digits = dot ? (size_t) (dot - token) : 0;
    if (digits < 1 || digits > 18 || strspn (token, "0123456789") != digits ||
        !crm_uuid_valid (dot + 1))
        return -1;
    memcpy (micros, token, digits);
    micros[digits] = '\0';
    memcpy (id, dot + 1, 37);
    return 0;
}
