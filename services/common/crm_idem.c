/*  crm_idem.c - the idempotency store: fingerprints of requests (the rest is SQL). */
#include "crm_idem.h"
#include "crm_util.h"

#include <czmq.h>

void
crm_idem_fingerprint (const char *method, const void *payload, size_t len, char out[41])
{
    zdigest_t *digest = zdigest_new ();
    zdigest_update (digest, (const byte *) method, strlen (method) + 1);
    if (len)
        zdigest_update (digest, (const byte *) payload, len);
    crm_hex (zdigest_data (digest), zdigest_size (digest), out);
    zdigest_destroy (&digest);
}
