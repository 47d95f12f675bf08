/*  store.c - the contacts service's SQL: each request is one call of a function from migrations/. */
#include "contacts.h"

void
contacts_store_prepare (crm_pg_t *pg)
{
    crm_pg_prepare (pg, "contact_create",
                    "SELECT contact_create ($1, $2, $3::uuid, $4::jsonb, $5::boolean)", 5);
    crm_pg_prepare_batch (pg, "contact_create", "SELECT * FROM contact_create_batch ($1::jsonb)");
    crm_pg_prepare (pg, "contact_update", "SELECT contact_update ($1, $2, $3::jsonb)", 3);
    crm_pg_prepare (pg, "contact_get", "SELECT contact_get ($1::uuid)", 1);
    crm_pg_prepare (pg, "contact_find",
                    "SELECT contact_find2 ($1, $2, $3, $4, $5, $6::int, $7, $8::int, $9::uuid, "
                    "$10::int)",
                    10);
    crm_pg_prepare (pg, "contact_list", "SELECT contact_list ($1, $2::int, $3::uuid)", 3);
    crm_pg_prepare (pg, "contact_duplicates", "SELECT contact_duplicates ($1::uuid, $2::int)", 2);
    crm_pg_prepare (pg, "contact_merge",
                    "SELECT contact_merge ($1, $2, $3::uuid, $4::uuid, $5, $6, $7)", 7);
    crm_pg_prepare (pg, "contact_note_add",
                    "SELECT contact_note_add ($1, $2, $3::uuid, $4::uuid, $5, $6, $7)", 7);
    crm_pg_prepare (pg, "contact_notes", "SELECT contact_notes ($1::uuid, $2::int, $3::uuid)", 3);
    crm_pg_prepare (pg, "contact_consent_set",
                    "SELECT contact_consent_set ($1, $2, $3::uuid, $4::int, $5::boolean, $6::int, "
                    "$7, $8, $9, $10)",
                    10);
    crm_pg_prepare (pg, "contact_consent_check", "SELECT contact_consent_check ($1::uuid, $2::int)",
                    2);
    crm_pg_prepare (pg, "contact_audit_list",
                    "SELECT contact_audit_list ($1::uuid, $2::int, $3::bigint)", 3);
    crm_pg_prepare (pg, "contact_export", "SELECT contact_export ($1, $2, $3::uuid, $4, $5, $6)",
                    6);
    crm_pg_prepare (pg, "contact_erase", "SELECT contact_erase ($1, $2, $3::uuid, $4, $5, $6)", 6);
    crm_pg_prepare (pg, "contacts_apply_orders_event",
                    "SELECT contacts_apply_orders_event ($1::bigint, $2, $3::jsonb)", 3);
}
