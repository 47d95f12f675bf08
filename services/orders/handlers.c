/*  handlers.c - the orders service's request handlers: check, call the store, answer. */
#include "orders.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

//  Most bytes of order JSON in one ListOrders page: with the largest order
//  allowed, a page still fits in one message
#define S_PAGE_BUDGET "600000"

//  Answers INVALID_ARGUMENT unless id is an order or contact id; names the field.
static int
s_id_ok (crm_call_t *call, const char *field, const char *id)
{
    if (crm_uuid_valid (id))
        return 1;
    crm_call_reply (call, CRM__V1__STATUS_CODE__STATUS_INVALID_ARGUMENT, NULL,
                    "%s \"%.40s\" is not an id", field, id);
    return 0;
}

//  Answers INVALID_ARGUMENT unless text fits: required or not, at most max
//  bytes, no control characters but, when multiline, line breaks and tabs.
static int
s_fits (crm_call_t *call, const char *field, const char *text, int required, size_t max,
        bool multiline)
{
    if (required && !*text) {
        crm_call_reply (call, CRM__V1__STATUS_CODE__STATUS_INVALID_ARGUMENT, NULL, "%s is required",
                        field);
        return 0;
    }
    if (!orders_text_valid (text, max, multiline)) {
        crm_call_reply (call, CRM__V1__STATUS_CODE__STATUS_INVALID_ARGUMENT, NULL,
                        "%s is longer than %zu bytes or holds a control character", field, max);
        return 0;
    }
    return 1;
}

//  A one-line field: ids, names, branches, actors.
static int
s_text_ok (crm_call_t *call, const char *field, const char *text, int required, size_t max)
{
    return s_fits (call, field, text, required, max, false);
}

//  A note or a reason: several lines allowed.
static int
s_note_ok (crm_call_t *call, const char *field, const char *text, int required)
{
    return s_fits (call, field, text, required, ORDERS_MAX_NOTE, true);
}

//  PlaceOrder and RecordPurchase: the same new order, PLACED or COMPLETED.
static void
s_place (crm_call_t *call, orders_t *self, Crm__V1__Order *order, bool purchase)
{
    if (!order) {
        crm_call_reply (call, CRM__V1__STATUS_CODE__STATUS_INVALID_ARGUMENT, NULL,
                        "order is required");
        return;
    }
    //  The order's branch defaults to the branch making the request
    const char *branch = *order->branch ? order->branch : crm_call_branch (call);
    int64_t total;
    char err[256];
    if (orders_order_check (order, branch, purchase, &total, err, sizeof err) != 0) {
        crm_call_reply (call, CRM__V1__STATUS_CODE__STATUS_INVALID_ARGUMENT, NULL, "%s", err);
        return;
    }
    //  Candidate tracking codes as a PostgreSQL array literal: "{CODE,CODE,CODE}"
    char drawn[ORDERS_TRACKING_TRIES][ORDERS_TRACKING_LEN + 1];
    if (orders_tracking_codes_new (drawn, ORDERS_TRACKING_TRIES) != 0) {
        crm_log_write (CRM_LOG_ERROR, crm_call_request_id (call), crm_call_branch (call),
                       "could not read random bytes for a tracking code");
        crm_call_reply (call, CRM__V1__STATUS_CODE__STATUS_INTERNAL, NULL,
                        "could not make a tracking code");
        return;
    }
    char codes[ORDERS_TRACKING_TRIES * (ORDERS_TRACKING_LEN + 1) + 2];
    size_t at = 0;
    codes[at++] = '{';
    for (int i = 0; i < ORDERS_TRACKING_TRIES; i++) {
        memcpy (codes + at, drawn[i], ORDERS_TRACKING_LEN);
        at += ORDERS_TRACKING_LEN;
        codes[at++] = i + 1 < ORDERS_TRACKING_TRIES ? ',' : '}';
    }
    codes[at] = '\0';

    json_t *list = json_array ();
    for (size_t i = 0; list && i < order->n_items; i++)
        json_array_append_new (list, crm_json_from_message (&order->items[i]->base));
    char *items = list ? json_dumps (list, JSON_COMPACT) : NULL;
    json_decref (list);
    if (!items) {
        crm_call_reply (call, CRM__V1__STATUS_CODE__STATUS_INTERNAL, NULL,
                        "could not encode the items");
        return;
    }
    char id[37], total_text[24], promised[24];
    crm_uuid (id);
    snprintf (total_text, sizeof total_text, "%" PRId64, total);
    snprintf (promised, sizeof promised, "%" PRId64, order->promised_by_unix_ms);
    const char *by_branch = *crm_call_branch (call) ? crm_call_branch (call) : branch;
    const char *values[] = {
        crm_call_request_id (call),
        crm_call_fingerprint (call),
        purchase ? "true" : "false",
        id,
        branch,
        order->external_id,
        *order->contact_id ? order->contact_id : NULL,
        items,
        order->currency,
        total_text,
        order->promised_by_unix_ms ? promised : NULL,
        order->customer_first_name,
        by_branch,
        codes,
    };
    crm_call_sql (call, self->pg, 1, "order_place", 14, values);
    free (items);
}

static void
s_place_order (crm_call_t *call, ProtobufCMessage *message, void *ctx)
{
    s_place (call, ctx, ((Crm__V1__PlaceOrderRequest *) message)->order, false);
}

static void
s_record_purchase (crm_call_t *call, ProtobufCMessage *message, void *ctx)
{
    s_place (call, ctx, ((Crm__V1__RecordPurchaseRequest *) message)->order, true);
}

static void
s_change_status (crm_call_t *call, ProtobufCMessage *message, void *ctx)
{
    Crm__V1__ChangeStatusRequest *request = (Crm__V1__ChangeStatusRequest *) message;
    const char *branch = crm_call_branch (call);
    if ((*request->order_id != '\0') == (*request->external_id != '\0')) {
        crm_call_reply (call, CRM__V1__STATUS_CODE__STATUS_INVALID_ARGUMENT, NULL,
                        "give the order by order_id or by external_id, one of them");
        return;
    }
    if (*request->order_id && !s_id_ok (call, "order_id", request->order_id))
        return;
    if (*request->external_id &&
        (!s_text_ok (call, "external_id", request->external_id, 1, ORDERS_MAX_TEXT) ||
         !s_text_ok (call, "branch of the request metadata (whose external_id it is)", branch, 1,
                     ORDERS_MAX_TEXT)))
        return;
    int to = request->to;
    if (!orders_status_valid (to)) {
        crm_call_reply (call, CRM__V1__STATUS_CODE__STATUS_INVALID_ARGUMENT, NULL,
                        "to is not a status (%d)", to);
        return;
    }
    bool needs_reason = to == CRM__V1__ORDER_STATUS__ORDER_STATUS_DELAYED ||
                        to == CRM__V1__ORDER_STATUS__ORDER_STATUS_CANCELLED;
    if (!s_text_ok (call, "actor", request->actor, 0, ORDERS_MAX_TEXT) ||
        !s_note_ok (call, "note", request->note, 0) ||
        !s_note_ok (call, needs_reason ? "reason (for DELAYED and CANCELLED)" : "reason",
                    request->reason, needs_reason) ||
        !s_text_ok (call, "branch", branch, 0, ORDERS_MAX_TEXT))
        return;
    if (request->promised_by_unix_ms < 0 || request->promised_by_unix_ms > ORDERS_MAX_UNIX_MS) {
        crm_call_reply (call, CRM__V1__STATUS_CODE__STATUS_INVALID_ARGUMENT, NULL,
                        "promised_by_unix_ms is not a time");
        return;
    }
    //  Whether the new promise is in the future is checked in the database,
    //  after the request id is claimed, so that a resend gets the first answer
    if (to == CRM__V1__ORDER_STATUS__ORDER_STATUS_DELAYED && request->promised_by_unix_ms == 0) {
        crm_call_reply (call, CRM__V1__STATUS_CODE__STATUS_INVALID_ARGUMENT, NULL,
                        "DELAYED needs the new promised time (promised_by_unix_ms)");
        return;
    }
    char to_text[8], mask[16], promised[24], max_history[16];
    snprintf (to_text, sizeof to_text, "%d", to);
    snprintf (mask, sizeof mask, "%u", orders_transition_sources (to));
    snprintf (promised, sizeof promised, "%" PRId64, request->promised_by_unix_ms);
    snprintf (max_history, sizeof max_history, "%d", ORDERS_MAX_HISTORY);
    const char *values[] = {
        crm_call_request_id (call),
        crm_call_fingerprint (call),
        *request->order_id ? request->order_id : NULL,
        branch,
        *request->external_id ? request->external_id : NULL,
        to_text,
        mask,
        request->actor,
        request->note,
        request->reason,
        request->promised_by_unix_ms ? promised : NULL,
        max_history,
    };
    crm_call_sql (call, ((orders_t *) ctx)->pg, 1, "order_change_status", 12, values);
}

static void
s_get_order (crm_call_t *call, ProtobufCMessage *message, void *ctx)
{
    Crm__V1__GetOrderRequest *request = (Crm__V1__GetOrderRequest *) message;
    if (!s_id_ok (call, "order_id", request->order_id))
        return;
    const char *values[] = {request->order_id};
    crm_call_sql (call, ((orders_t *) ctx)->pg, 0, "order_get", 1, values);
}

static void
s_track_order (crm_call_t *call, ProtobufCMessage *message, void *ctx)
{
    Crm__V1__TrackOrderRequest *request = (Crm__V1__TrackOrderRequest *) message;
    char code[ORDERS_TRACKING_LEN + 1];
    if (orders_tracking_code_normalize (request->tracking_code, code) != 0) {
        crm_call_reply (call, CRM__V1__STATUS_CODE__STATUS_INVALID_ARGUMENT, NULL,
                        "a tracking code is %d letters and digits", ORDERS_TRACKING_LEN);
        return;
    }
    const char *values[] = {code};
    crm_call_sql (call, ((orders_t *) ctx)->pg, 0, "order_track", 1, values);
}

static void
s_list_orders (crm_call_t *call, ProtobufCMessage *message, void *ctx)
{
    Crm__V1__ListOrdersRequest *request = (Crm__V1__ListOrdersRequest *) message;
    const Crm__V1__PageRequest *page = request->page;
    unsigned size = page && page->page_size ? page->page_size : ORDERS_PAGE_DEFAULT;
    char limit[16], micros[21], after[37];
    snprintf (limit, sizeof limit, "%u", size > ORDERS_PAGE_MAX ? ORDERS_PAGE_MAX : size);
    const char *token = page ? page->page_token : "";
    bool continued = *token != '\0';
    if (continued && orders_page_token_parse (token, micros, after) != 0) {
        crm_call_reply (call, CRM__V1__STATUS_CODE__STATUS_INVALID_ARGUMENT, NULL,
                        "page_token is not one this service gave");
        return;
    }
    if (*request->contact_id) {
        if (*request->branch || *request->day) {
            crm_call_reply (call, CRM__V1__STATUS_CODE__STATUS_INVALID_ARGUMENT, NULL,
                            "give contact_id, or branch and day, not both");
            return;
        }
        if (!s_id_ok (call, "contact_id", request->contact_id))
            return;
        const char *values[] = {request->contact_id, limit, continued ? micros : NULL,
                                continued ? after : NULL, S_PAGE_BUDGET};
        crm_call_sql (call, ((orders_t *) ctx)->pg, 0, "order_list_contact", 5, values);
        return;
    }
    const char *branch = *request->branch ? request->branch : crm_call_branch (call);
    if (!s_text_ok (call, "branch (in the request or its metadata)", branch, 1, ORDERS_MAX_TEXT))
        return;
    if (!orders_day_valid (request->day)) {
        crm_call_reply (call, CRM__V1__STATUS_CODE__STATUS_INVALID_ARGUMENT, NULL,
                        "day \"%.20s\" is not a date like \"2026-11-22\" (give contact_id, or "
                        "branch and day)",
                        request->day);
        return;
    }
    const char *values[] = {
        branch,       request->day, limit, continued ? micros : NULL, continued ? after : NULL,
        S_PAGE_BUDGET};
    crm_call_sql (call, ((orders_t *) ctx)->pg, 0, "order_list_day", 6, values);
}

static void
s_sweep_late (crm_call_t *call, ProtobufCMessage *message, void *ctx)
{
    Crm__V1__SweepLateRequest *request = (Crm__V1__SweepLateRequest *) message;
    if (request->as_of_unix_ms < 0 || request->as_of_unix_ms > ORDERS_MAX_UNIX_MS) {
        crm_call_reply (call, CRM__V1__STATUS_CODE__STATUS_INVALID_ARGUMENT, NULL,
                        "as_of_unix_ms is not a time");
        return;
    }
    char as_of[24], batch[16];
    snprintf (as_of, sizeof as_of, "%" PRId64,
              request->as_of_unix_ms ? request->as_of_unix_ms : crm_now_ms ());
    snprintf (batch, sizeof batch, "%d", ORDERS_SWEEP_BATCH);
    const char *values[] = {crm_call_request_id (call), crm_call_fingerprint (call), as_of, batch};
    crm_call_sql (call, ((orders_t *) ctx)->pg, 1, "order_sweep_late", 4, values);
}

static void
s_get_events (crm_call_t *call, ProtobufCMessage *message, void *ctx)
{
    orders_t *self = ctx;
    crm_events_handle_get (self->events, call, (Crm__V1__GetEventsRequest *) message);
}

const crm_method_t orders_methods[] = {
    {"PlaceOrder", s_place_order},
    {"ChangeStatus", s_change_status},
    {"RecordPurchase", s_record_purchase},
    {"GetOrder", s_get_order},
    {"TrackOrder", s_track_order},
    {"ListOrders", s_list_orders},
    {"SweepLate", s_sweep_late},
    {"GetEvents", s_get_events},
    {NULL, NULL},
};
