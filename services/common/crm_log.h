/*  crm_log.h - structured logging: one JSON line per event on stdout, or text for a terminal. */
#ifndef CRM_LOG_H_INCLUDED
#define CRM_LOG_H_INCLUDED

#include <stdarg.h>

typedef enum {
    CRM_LOG_DEBUG = 0,
    CRM_LOG_INFO = 1,
    CRM_LOG_WARN = 2,
    CRM_LOG_ERROR = 3,
} crm_log_level_t;

typedef enum {
    CRM_LOG_JSON = 0,
    CRM_LOG_TEXT = 1,
} crm_log_format_t;

//  Sets the process-wide identity and output; service and instance are copied.
//  level and format come from strings ("debug|info|warn|error", "json|text");
//  returns -1 when either string is not recognised (defaults are kept).
int crm_log_init (const char *service, const char *instance, const char *level, const char *format);

//  Redirects output (default stdout); the stream is borrowed. For tests.
void crm_log_set_stream (void *file);

//  True when a message at this level would be written.
int crm_log_enabled (crm_log_level_t level);

//  Writes one log line. request_id and branch may be NULL; they become fields
//  of the line. msg is printf-style.
void crm_log_write (crm_log_level_t level, const char *request_id, const char *branch,
                    const char *fmt, ...) __attribute__ ((format (printf, 4, 5)));
void crm_log_vwrite (crm_log_level_t level, const char *request_id, const char *branch,
                     const char *fmt, va_list args);

#define crm_debug(...) crm_log_write (CRM_LOG_DEBUG, NULL, NULL, __VA_ARGS__)
#define crm_info(...)  crm_log_write (CRM_LOG_INFO, NULL, NULL, __VA_ARGS__)
#define crm_warn(...)  crm_log_write (CRM_LOG_WARN, NULL, NULL, __VA_ARGS__)
#define crm_error(...) crm_log_write (CRM_LOG_ERROR, NULL, NULL, __VA_ARGS__)

#endif
