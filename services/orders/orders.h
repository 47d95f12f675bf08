/*  orders.h - the orders service: orders per customer and branch, their status history, tracking, lateness. */
#ifndef ORDERS_H_INCLUDED
#define ORDERS_H_INCLUDED

#include "crm.h"
#include "crm/v1/orders.pb-c.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

//  Longest id, name, branch or actor accepted, in bytes
#define ORDERS_MAX_TEXT 200
//  Longest note or reason, in bytes
#define ORDERS_MAX_NOTE 1000
//  Most items in one order
#define ORDERS_MAX_ITEMS 200
//  Largest quantity of one item
#define ORDERS_MAX_QUANTITY 1000000
//  Most status changes one order keeps (a stored order stays well inside one message)
#define ORDERS_MAX_HISTORY 200
//  Latest time accepted, in ms since the epoch: 9999-12-31T23:59:59.999Z
#define ORDERS_MAX_UNIX_MS INT64_C (253402300799999)
//  Page size when the request gives none, and the largest allowed
#define ORDERS_PAGE_DEFAULT 20
#define ORDERS_PAGE_MAX     100
//  Orders marked late by one sweep statement
#define ORDERS_SWEEP_BATCH 500

//  Tracking codes: this many characters of ORDERS_TRACKING_ALPHABET, which
//  leaves out 0, O, 1, I and L so that a code read aloud or typed is not
//  misread. 31^12 is about 2^59 codes.
#define ORDERS_TRACKING_LEN      12
#define ORDERS_TRACKING_ALPHABET "23456789ABCDEFGHJKMNPQRSTUVWXYZ"
//  Candidate codes sent with every new order: the next is used only if the
//  one before is taken already
#define ORDERS_TRACKING_TRIES 3

//  What every handler shares: the database, the event log, the late sweep.
typedef struct {
    crm_pg_t *pg;         //  Connection of this instance
    crm_events_t *events; //  The service's event log
    struct ev_loop *loop; //  The instance's loop
    ev_timer sweep;       //  Runs the late sweep every sweep interval
    bool sweeping;        //  A sweep statement is in flight
    bool sweep_stopped;   //  No more sweeps: the instance is stopping
    char sweep_id[48];    //  Request id of the sweep in flight, for its events and logs
    int64_t sweep_marked; //  Orders this instance's sweeps marked late since start
} orders_t;

//  The handler table of the service, one entry per rpc of crm.v1.Orders.
extern const crm_method_t orders_methods[];

//  True when code is three uppercase ASCII letters, the shape of ISO 4217.
int orders_currency_valid (const char *code);

//  True when status is a value of crm.v1.OrderStatus other than UNSPECIFIED.
int orders_status_valid (int status);

//  The status's name without its prefix ("IN_PREPARATION"); "UNSPECIFIED"
//  for values outside the enum. Borrowed, static.
const char *orders_status_name (int status);

//  True when an order may go from status from to status to.
int orders_transition_legal (int from, int to);

//  The statuses an order may reach to from, as a bit mask (bit n: status n);
//  what the database checks the stored status against.
unsigned orders_transition_sources (int to);

//  Sum of quantity x unit price of n items into total; -1 when a product or
//  the sum does not fit in 64 bits or a value is negative.
int orders_total (Crm__V1__OrderItem *const *items, size_t n, int64_t *total);

//  A tracking code from random bytes (rejection sampling, so every character
//  is equally likely): ORDERS_TRACKING_LEN characters and a NUL into out.
//  Returns the bytes used, or -1 when len bytes were not enough.
int orders_tracking_code_from_bytes (const unsigned char *random, size_t len,
                                     char out[ORDERS_TRACKING_LEN + 1]);

//  n (1 to 8) new tracking codes from the kernel's random source; 0 / -1.
int orders_tracking_codes_new (char codes[][ORDERS_TRACKING_LEN + 1], int n);

//  A tracking code as a customer typed it: case folded, spaces and dashes
//  dropped. 0, or -1 when it is not a code this service could have made.
int orders_tracking_code_normalize (const char *input, char out[ORDERS_TRACKING_LEN + 1]);

//  Checks an order sent to be placed (purchase: recorded as a completed
//  sale) whose branch, after defaulting, is branch: the fields the service
//  sets are unset, sizes and values are sane, and the total fits. Writes
//  the total into total; on failure writes why into err and returns -1.
int orders_order_check (const Crm__V1__Order *order, const char *branch, bool purchase,
                        int64_t *total, char *err, size_t errlen);

//  True when text is a plain text field: at most max bytes and no control
//  characters; with multiline, line breaks and tabs are allowed (notes).
int orders_text_valid (const char *text, size_t max, bool multiline);

//  True when day is a calendar date written "YYYY-MM-DD".
int orders_day_valid (const char *day);

//  Splits a page token "<microseconds>.<uuid>" as ListOrders gives it;
//  0, or -1 when token is not one.
int orders_page_token_parse (const char *token, char micros[21], char id[37]);

//  Prepares the service's SQL statements on pg.
void orders_store_prepare (crm_pg_t *pg);

//  Starts the late sweep on loop every interval_s seconds (0: never); the
//  first runs a second after the start.
void orders_sweep_start (orders_t *self, double interval_s);

//  Stops the late sweep for good; a sweep in flight completes.
void orders_sweep_stop (orders_t *self);

#endif
