/*  test_util.c - unit tests of crm_util, crm_config, crm_log and crm_idem's fingerprint. */
#include "crm.h"
#include "crm_test.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

static void
test_uuid (void)
{
    char a[37], b[37];
    crm_uuid (a);
    crm_uuid (b);
    CHECK_INT (strlen (a), 36);
    CHECK (strcmp (a, b) != 0);
    CHECK (a[14] == '4');
    CHECK (strchr ("89ab", a[19]) != NULL);
    CHECK (a[8] == '-' && a[13] == '-' && a[18] == '-' && a[23] == '-');
    CHECK (crm_uuid_valid (a));
    CHECK (crm_uuid_valid ("ABCDEF00-1111-4111-8111-111111111111"));
    CHECK (!crm_uuid_valid ("11111111-1111-4111-8111-11111111111"));
    CHECK (!crm_uuid_valid ("11111111x1111-4111-8111-111111111111"));
    CHECK (!crm_uuid_valid ("g1111111-1111-4111-8111-111111111111"));
    CHECK (!crm_uuid_valid (""));
}

static void
test_clocks (void)
{
    int64_t now = crm_now_ms ();
    CHECK (now > 1700000000000LL);
    int64_t m1 = crm_mono_ms ();
    int64_t m2 = crm_mono_ms ();
    CHECK (m2 >= m1);
}

static void
test_hex_and_random (void)
{
    char out[9];
    crm_hex ("\x01\xab\xff\x00", 4, out);
    CHECK_STR (out, "01abff00");
    unsigned char buf[32] = {0}, zero[32] = {0};
    CHECK_INT (crm_random_bytes (buf, sizeof buf), 0);
    CHECK (memcmp (buf, zero, sizeof buf) != 0);
}

static void
test_utf8 (void)
{
    CHECK (crm_utf8_valid ("hello", 5));
    CHECK (crm_utf8_valid ("Анна Петровна", strlen ("Анна Петровна")));
    CHECK (crm_utf8_valid ("\xf0\x9f\x98\x80", 4));  //  U+1F600
    CHECK (!crm_utf8_valid ("\xff", 1));             //  never valid
    CHECK (!crm_utf8_valid ("\xc3", 1));             //  truncated
    CHECK (!crm_utf8_valid ("\xc0\xaf", 2));         //  overlong '/'
    CHECK (!crm_utf8_valid ("\xed\xa0\x80", 3));     //  surrogate
    CHECK (!crm_utf8_valid ("\xf4\x90\x80\x80", 4)); //  past U+10FFFF
    CHECK (!crm_utf8_valid ("a\0b", 3));             //  NUL inside
    CHECK (crm_utf8_valid ("", 0));
}

static void
test_utf8_repair (void)
{
    char cut[] = "Анна"; //  8 bytes; cut in the middle of the last letter
    cut[7] = '\0';
    crm_utf8_repair (cut);
    CHECK_STR (cut, "Анн?");
    CHECK (crm_utf8_valid (cut, strlen (cut)));
    char bad[] = "a\xff"
                 "b\xc3"
                 "(c";
    crm_utf8_repair (bad);
    CHECK_STR (bad, "a?b?(c");
    char fine[] = "ok Ж \xf0\x9f\x98\x80";
    crm_utf8_repair (fine);
    CHECK_STR (fine, "ok Ж \xf0\x9f\x98\x80");
}

static const crm_config_var_t s_vars[] = {
    {"CRM_TEST_NUMBER", "42", "a number"},
    {"CRM_TEST_TEXT", "default text", "a text"},
    {NULL, NULL, NULL},
};

static void
test_config (void)
{
    crm_config_t *config = crm_config_new ("test", "a test program", s_vars);
    CHECK (config != NULL);
    unsetenv ("CRM_TEST_TEXT");
    CHECK_STR (crm_config_get (config, "CRM_TEST_TEXT"), "default text");
    setenv ("CRM_TEST_TEXT", "from env", 1);
    CHECK_STR (crm_config_get (config, "CRM_TEST_TEXT"), "from env");
    setenv ("CRM_TEST_TEXT", "", 1);
    CHECK_STR (crm_config_get (config, "CRM_TEST_TEXT"), "default text");
    CHECK_STR (crm_config_get (config, "CRM_LOG_LEVEL"), "info");

    long value = 0;
    unsetenv ("CRM_TEST_NUMBER");
    CHECK_INT (crm_config_get_int (config, "CRM_TEST_NUMBER", 0, 100, &value), 0);
    CHECK_INT (value, 42);
    crm_log_set_stream (fopen ("/dev/null", "w"));
    setenv ("CRM_TEST_NUMBER", "420", 1);
    CHECK_INT (crm_config_get_int (config, "CRM_TEST_NUMBER", 0, 100, &value), -1);
    setenv ("CRM_TEST_NUMBER", "12abc", 1);
    CHECK_INT (crm_config_get_int (config, "CRM_TEST_NUMBER", 0, 100, &value), -1);
    unsetenv ("CRM_TEST_NUMBER");

    char *no_args[] = {"test", NULL};
    CHECK_INT (crm_config_parse_args (config, 1, no_args), 0);
    char *bad_args[] = {"test", "--bogus", NULL};
    FILE *saved = stderr;
    stderr = fopen ("/dev/null", "w");
    CHECK_INT (crm_config_parse_args (config, 2, bad_args), -1);
    fclose (stderr);
    stderr = saved;
    char *help_args[] = {"test", "--help", NULL};
    FILE *out = tmpfile ();
    FILE *saved_out = stdout;
    stdout = out;
    CHECK_INT (crm_config_parse_args (config, 2, help_args), 1);
    stdout = saved_out;
    char *text = crm_test_file_text (out);
    fclose (out);
    CHECK (strstr (text, "CRM_TEST_NUMBER") != NULL);
    CHECK (strstr (text, "CRM_LOG_FORMAT") != NULL);
    CHECK (strstr (text, "default: \"42\"") != NULL);
    free (text);
    crm_config_destroy (&config);
    CHECK (config == NULL);
    crm_config_destroy (&config);
}

static char *
s_capture_log (crm_log_level_t level, const char *request_id, const char *branch, const char *msg)
{
    FILE *out = tmpfile ();
    crm_log_set_stream (out);
    crm_log_write (level, request_id, branch, "%s", msg);
    crm_log_set_stream (NULL);
    char *text = crm_test_file_text (out);
    fclose (out);
    return text;
}

static void
test_log (void)
{
    CHECK_INT (crm_log_init ("svc", "host:1", "info", "json"), 0);
    char *line = s_capture_log (CRM_LOG_WARN, "req-1", "b7", "could not \"do\" it\n\x01");
    json_error_t err;
    json_t *obj = json_loads (line, 0, &err);
    CHECK (obj != NULL);
    CHECK_STR (json_string_value (json_object_get (obj, "level")), "warn");
    CHECK_STR (json_string_value (json_object_get (obj, "service")), "svc");
    CHECK_STR (json_string_value (json_object_get (obj, "instance")), "host:1");
    CHECK_STR (json_string_value (json_object_get (obj, "request_id")), "req-1");
    CHECK_STR (json_string_value (json_object_get (obj, "branch")), "b7");
    CHECK_STR (json_string_value (json_object_get (obj, "msg")), "could not \"do\" it\n\x01");
    CHECK (json_is_string (json_object_get (obj, "ts")));
    CHECK (line[strlen (line) - 1] == '\n');
    json_decref (obj);
    free (line);

    line = s_capture_log (CRM_LOG_DEBUG, NULL, NULL, "hidden");
    CHECK_STR (line, "");
    free (line);
    CHECK (!crm_log_enabled (CRM_LOG_DEBUG));
    CHECK (crm_log_enabled (CRM_LOG_ERROR));

    CHECK_INT (crm_log_init (NULL, NULL, "debug", "text"), 0);
    line = s_capture_log (CRM_LOG_DEBUG, "r2", NULL, "readable");
    CHECK (strstr (line, "debug") && strstr (line, "svc: readable") &&
           strstr (line, "request_id=r2"));
    free (line);
    CHECK_INT (crm_log_init (NULL, NULL, "loud", "xml"), -1);
    crm_log_init (NULL, NULL, "info", "json");
}

static void
test_fingerprint (void)
{
    char a[41], b[41], c[41], d[41];
    crm_idem_fingerprint ("CreateContact", "abc", 3, a);
    crm_idem_fingerprint ("CreateContact", "abc", 3, b);
    crm_idem_fingerprint ("CreateContact", "abd", 3, c);
    crm_idem_fingerprint ("UpdateContact", "abc", 3, d);
    CHECK_INT (strlen (a), 40);
    CHECK_STR (a, b);
    CHECK (strcmp (a, c) != 0);
    CHECK (strcmp (a, d) != 0);
    crm_idem_fingerprint ("X", NULL, 0, a);
    CHECK_INT (strlen (a), 40);
}

int
main (void)
{
    RUN (test_uuid);
    RUN (test_clocks);
    RUN (test_hex_and_random);
    RUN (test_utf8);
    RUN (test_utf8_repair);
    RUN (test_config);
    RUN (test_log);
    RUN (test_fingerprint);
    return TEST_DONE ("test_util");
}
