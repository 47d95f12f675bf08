/*  crm_util.h - small shared helpers: clocks, ids, hex, fingerprints. */
#ifndef CRM_UTIL_H_INCLUDED
#define CRM_UTIL_H_INCLUDED

#include <stddef.h>
#include <stdint.h>

//  Wall clock, milliseconds since the Unix epoch (UTC).
int64_t crm_now_ms (void);

//  Monotonic clock in milliseconds, for timeouts and latency.
int64_t crm_mono_ms (void);

//  Writes a random (version 4) UUID, 36 characters and a NUL, into out.
void crm_uuid (char out[37]);

//  True when text is a UUID in canonical form (8-4-4-4-12 hex digits, either case).
int crm_uuid_valid (const char *text);

//  Fills buf with len cryptographically random bytes from the kernel; 0 / -1.
int crm_random_bytes (void *buf, size_t len);

//  Lowercase hex of data into out (2*len + 1 bytes).
void crm_hex (const void *data, size_t len, char *out);

//  True when the len bytes at s are valid UTF-8 with no NUL.
int crm_utf8_valid (const char *s, size_t len);

//  Makes s valid UTF-8 in place: each byte that does not start a complete,
//  valid sequence becomes '?'. For text built from input, such as messages
//  that quote a truncated field.
void crm_utf8_repair (char *s);

#endif
