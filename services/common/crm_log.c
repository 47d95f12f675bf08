/*  crm_log.c - structured logging: one JSON line per event on stdout, or text for a terminal. */
#include "crm_log.h"

#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

static char s_service[64] = "crm"; //  "service" field of every line
static char s_instance[128] = "";  //  "instance" field: host and pid by default
static crm_log_level_t s_level = CRM_LOG_INFO;
static crm_log_format_t s_format = CRM_LOG_JSON;
static FILE *s_stream = NULL; //  NULL means stdout

static const char *s_level_names[] = {"debug", "info", "warn", "error"};

int
crm_log_init (const char *service, const char *instance, const char *level, const char *format)
{
    int rc = 0;
    if (service)
        snprintf (s_service, sizeof s_service, "%s", service);
    if (instance)
        snprintf (s_instance, sizeof s_instance, "%s", instance);
    if (level && *level) {
        int found = 0;
        for (int i = 0; i < 4; i++)
            if (strcmp (level, s_level_names[i]) == 0) {
                s_level = (crm_log_level_t) i;
                found = 1;
            }
        if (!found)
            rc = -1;
    }
    if (format && *format) {
        if (strcmp (format, "json") == 0)
            s_format = CRM_LOG_JSON;
        else if (strcmp (format, "text") == 0)
            s_format = CRM_LOG_TEXT;
        else
            rc = -1;
    }
    return rc;
}

void
crm_log_set_stream (void *file)
{
    s_stream = file;
}

int
crm_log_enabled (crm_log_level_t level)
{
    return level >= s_level;
}

//  Appends s to buf as the inside of a JSON string; control characters and
//  quotes escaped, the rest (valid or not) copied byte for byte.
static size_t
s_json_escape (char *buf, size_t pos, size_t size, const char *s)
{
    for (; *s && pos + 7 < size; s++) {
        unsigned char c = (unsigned char) *s;
        if (c == '"' || c == '\\') {
            buf[pos++] = '\\';
            buf[pos++] = (char) c;
        }
        else if (c == '\n') {
            buf[pos++] = '\\';
            buf[pos++] = 'n';
        }
        else if (c < 0x20) {
            pos += (size_t) snprintf (buf + pos, size - pos, "\\u%04x", c);
        }
        else
            buf[pos++] = (char) c;
    }
    return pos;
}

static size_t
s_json_field (char *buf, size_t pos, size_t size, const char *name, const char *value)
{
    if (!value || !*value || pos + strlen (name) + 8 >= size)
        return pos;
    pos += (size_t) snprintf (buf + pos, size - pos, ",\"%s\":\"", name);
    pos = s_json_escape (buf, pos, size, value);
    if (pos + 1 < size)
        buf[pos++] = '"';
    return pos;
}

void
crm_log_vwrite (crm_log_level_t level, const char *request_id, const char *branch, const char *fmt,
                va_list args)
{
    if (level < s_level)
        return;
    char msg[1024];
    vsnprintf (msg, sizeof msg, fmt, args);

    struct timeval tv;
    gettimeofday (&tv, NULL);
    struct tm tm;
    gmtime_r (&tv.tv_sec, &tm);
    char ts[40];
    size_t n = strftime (ts, sizeof ts, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf (ts + n, sizeof ts - n, ".%03dZ", (int) (tv.tv_usec / 1000));

    char line[2048];
    size_t pos;
    if (s_format == CRM_LOG_JSON) {
        pos = (size_t) snprintf (line, sizeof line, "{\"ts\":\"%s\",\"level\":\"%s\"", ts,
                                 s_level_names[level]);
        pos = s_json_field (line, pos, sizeof line, "service", s_service);
        pos = s_json_field (line, pos, sizeof line, "instance", s_instance);
        pos = s_json_field (line, pos, sizeof line, "msg", msg);
        pos = s_json_field (line, pos, sizeof line, "request_id", request_id);
        pos = s_json_field (line, pos, sizeof line, "branch", branch);
        if (pos + 3 > sizeof line)
            pos = sizeof line - 3;
        line[pos++] = '}';
    }
    else {
        pos = (size_t) snprintf (line, sizeof line, "%s %-5s %s: %s", ts, s_level_names[level],
                                 s_service, msg);
        if (pos >= sizeof line)
            pos = sizeof line - 2;
        if (request_id && *request_id && pos < sizeof line - 2)
            pos += (size_t) snprintf (line + pos, sizeof line - pos, " request_id=%s", request_id);
        if (pos >= sizeof line)
            pos = sizeof line - 2;
        if (branch && *branch && pos < sizeof line - 2)
            pos += (size_t) snprintf (line + pos, sizeof line - pos, " branch=%s", branch);
        if (pos >= sizeof line - 1)
            pos = sizeof line - 2;
    }
    line[pos++] = '\n';
    FILE *out = s_stream ? s_stream : stdout;
    //  One fwrite per line so lines of concurrent writers do not interleave
    fwrite (line, 1, pos, out);
    fflush (out);
}

void
crm_log_write (crm_log_level_t level, const char *request_id, const char *branch, const char *fmt,
               ...)
{
    if (level < s_level)
        return;
    va_list args;
    va_start (args, fmt);
    crm_log_vwrite (level, request_id, branch, fmt, args);
    va_end (args);
}
