/*  crm_idem.h - the idempotency store: a resend of a request id gets the first answer.
 *
 *  The store is a table and SQL functions that crm_migrate installs in every
 *  service schema (services/common/migrations/). A write function in SQL
 *  calls crm_idem_begin (request_id, method, fingerprint) first: it returns
 *  NULL when this call claimed the id, the stored reply (marked replayed) when
 *  the id was seen with the same fingerprint, or an error reply when it was
 *  seen with another. It calls crm_idem_finish (request_id, reply) last, in
 *  the same transaction, so the reply is stored if and only if the effect is.
 *  A concurrent duplicate waits on the claim's row lock and then replays.
 */
#ifndef CRM_IDEM_H_INCLUDED
#define CRM_IDEM_H_INCLUDED

#include <stddef.h>

//  Fingerprint of a request: hex SHA-1 of method, a NUL, and payload.
void crm_idem_fingerprint (const char *method, const void *payload, size_t len, char out[41]);

#endif
