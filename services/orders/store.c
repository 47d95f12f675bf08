/*  store.c - the orders service's SQL: each request is one call of a function from migrations/. */
#include "orders.h"

void
orders_store_prepare (crm_pg_t *pg)
{
    crm_pg_prepare (
        pg, "order_place",
        "SELECT order_place ($1, $2, $3::boolean, $4::uuid, $5, $6, $7::uuid, $8::jsonb, "
        "$9, $10::bigint, $11::bigint, $12, $13, $14::text[])",
        14);
    //  Several PlaceOrder and RecordPurchase requests committed together go as one call
    crm_pg_prepare_batch (pg, "order_place", "SELECT * FROM order_place_batch ($1::jsonb)");
    crm_pg_prepare (
        pg, "order_change_status",
        "SELECT order_change_status ($1, $2, $3::uuid, $4, $5, $6::int, $7::int, $8, $9, "
        "$10, $11::bigint, $12::int)",
        12);
    crm_pg_prepare (pg, "order_get", "SELECT order_get ($1::uuid)", 1);
    crm_pg_prepare (pg, "order_track", "SELECT order_track ($1)", 1);
    crm_pg_prepare (pg, "order_list_contact",
                    "SELECT order_list_contact ($1::uuid, $2::int, $3::bigint, $4::uuid, $5::int)",
                    5);
    crm_pg_prepare (pg, "order_list_day",
                    "SELECT order_list_day ($1, $2::date, $3::int, $4::bigint, $5::uuid, $6::int)",
                    6);
    crm_pg_prepare (pg, "order_sweep_late", "SELECT order_sweep_late ($1, $2, $3::bigint, $4::int)",
                    4);
    crm_pg_prepare (pg, "order_mark_late", "SELECT order_mark_late ($1::bigint, $2::int, $3)", 3);
}
