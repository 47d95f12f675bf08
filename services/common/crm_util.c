/*  crm_util.c - small shared helpers: clocks, ids, hex, UTF-8. */
#include "crm_util.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

int64_t
crm_now_ms (void)
{
    struct timespec ts;
    clock_gettime (CLOCK_REALTIME, &ts);
    return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t
crm_mono_ms (void)
{
    struct timespec ts;
    clock_gettime (CLOCK_MONOTONIC, &ts);
    return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int
crm_random_bytes (void *buf, size_t len)
{
    unsigned char *p = buf;
    while (len > 0) {
        ssize_t n = getrandom (p, len, 0);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += n;
        len -= (size_t) n;
    }
    return 0;
}

void
crm_uuid (char out[37])
{
    unsigned char b[16];
    if (crm_random_bytes (b, sizeof b) != 0) {
        //  getrandom does not fail on Linux >= 3.17 once the pool is ready;
        //  fall back to a time-seeded value rather than a fixed one
        int64_t t = crm_mono_ms () ^ crm_now_ms ();
        for (size_t i = 0; i < sizeof b; i++)
            b[i] = (unsigned char) (t >> ((i % 8) * 8)) ^ (unsigned char) rand ();
    }
    b[6] = (b[6] & 0x0f) | 0x40; //  version 4
    b[8] = (b[8] & 0x3f) | 0x80; //  RFC 4122 variant
    snprintf (out, 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0],
              b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13],
              b[14], b[15]);
}

void
crm_hex (const void *data, size_t len, char *out)
{
    static const char digits[] = "0123456789abcdef";
    const unsigned char *p = data;
    for (size_t i = 0; i < len; i++) {
        out[2 * i] = digits[p[i] >> 4];
        out[2 * i + 1] = digits[p[i] & 0x0f];
    }
    out[2 * len] = '\0';
}

int
crm_utf8_valid (const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *) s;
    size_t i = 0;
    while (i < len) {
        unsigned char c = p[i];
        size_t need;
        uint32_t cp;
        if (c == 0)
            return 0;
        if (c < 0x80) {
            i++;
            continue;
        }
        else if ((c & 0xe0) == 0xc0) {
            need = 1;
            cp = c & 0x1f;
        }
        else if ((c & 0xf0) == 0xe0) {
            need = 2;
            cp = c & 0x0f;
        }
        else if ((c & 0xf8) == 0xf0) {
            need = 3;
            cp = c & 0x07;
        }
        else
            return 0;
        if (i + need >= len)
            return 0;
        for (size_t k = 1; k <= need; k++) {
            if ((p[i + k] & 0xc0) != 0x80)
                return 0;
            cp = (cp << 6) | (p[i + k] & 0x3f);
        }
        //  Overlong forms, surrogates and values past U+10FFFF are not UTF-8
        if ((need == 1 && cp < 0x80) || (need == 2 && cp < 0x800) || (need == 3 && cp < 0x10000) ||
            (cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff)
            return 0;
        i += need + 1;
    }
    return 1;
}

void
crm_utf8_repair (char *s)
{
    size_t len = strlen (s);
    size_t i = 0;
    while (i < len) {
        size_t n = (unsigned char) s[i] < 0x80 ? 1 : 0;
        //  The shortest valid sequence starting here, if any
        for (size_t k = 2; n == 0 && k <= 4 && i + k <= len; k++)
            if (crm_utf8_valid (s + i, k))
                n = k;
        if (n == 0) {
            s[i] = '?';
            n = 1;
        }
        i += n;
    }
}

int
crm_uuid_valid (const char *text)
{
    if (strlen (text) != 36)
        return 0;
    for (int i = 0; i < 36; i++) {
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (text[i] != '-')
                return 0;
        }
        else if (!isxdigit ((unsigned char) text[i]))
            return 0;
    }
    return 1;
}
