/*  crm_config.c - configuration from CRM_* environment variables, with defaults and --help. */
#include "crm_config.h"
#include "crm_log.h"

#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

//  Variables every program reads
static const crm_config_var_t s_common_vars[] = {
    {"CRM_LOG_LEVEL", "info", "log level: debug, info, warn or error"},
    {"CRM_LOG_FORMAT", "json", "log format: json (one object per line) or text"},
    {"CRM_INSTANCE", "", "instance name in logs (default: host name and pid)"},
    {NULL, NULL, NULL},
};

struct _crm_config_t {
    const char *program;          //  Program name for --help
    const char *summary;          //  One line saying what the program is
    const crm_config_var_t *vars; //  The program's own variables (borrowed)
};

crm_config_t *
crm_config_new (const char *program, const char *summary, const crm_config_var_t *vars)
{
    crm_config_t *self = calloc (1, sizeof *self);
    if (!self)
        return NULL;
    self->program = program;
    self->summary = summary;
    self->vars = vars;
    return self;
}

void
crm_config_destroy (crm_config_t **self_p)
{
    assert (self_p);
    free (*self_p);
    *self_p = NULL;
}

static const crm_config_var_t *
s_find (crm_config_t *self, const char *name)
{
    for (const crm_config_var_t *v = self->vars; v && v->name; v++)
        if (strcmp (v->name, name) == 0)
            return v;
    for (const crm_config_var_t *v = s_common_vars; v->name; v++)
        if (strcmp (v->name, name) == 0)
            return v;
    return NULL;
}

//  Values that look like secrets are never printed, not even by --help
static int
s_secret (const char *name, const char *value)
{
    return strstr (name, "PASSWORD") || strstr (name, "SECRET") ||
           (value && strstr (value, "password="));
}

static void
s_print_vars (FILE *out, const crm_config_var_t *vars)
{
    for (const crm_config_var_t *v = vars; v && v->name; v++) {
        const char *current = getenv (v->name);
        fprintf (out, "  %-28s %s\n", v->name, v->help);
        fprintf (out, "  %-28s default: \"%s\"", "", v->default_value);
        if (current && *current)
            fprintf (out, ", now: \"%s\"", s_secret (v->name, current) ? "(hidden)" : current);
        fprintf (out, "\n");
    }
}

static void
s_usage (crm_config_t *self, FILE *out)
{
    fprintf (out, "usage: %s [--help]\n%s\n\nConfigured by environment variables:\n", self->program,
             self->summary);
    s_print_vars (out, self->vars);
    s_print_vars (out, s_common_vars);
}

int
crm_config_parse_args (crm_config_t *self, int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (strcmp (argv[i], "--help") == 0 || strcmp (argv[i], "-h") == 0) {
            s_usage (self, stdout);
            return 1;
        }
        fprintf (stderr, "%s: unknown argument \"%s\"\n", self->program, argv[i]);
        s_usage (self, stderr);
        return -1;
    }
    return 0;
}

const char *
crm_config_get (crm_config_t *self, const char *name)
{
    const crm_config_var_t *var = s_find (self, name);
    assert (var); //  Reading an undeclared variable is a programmer error
    const char *value = getenv (name);
    return value && *value ? value : var->default_value;
}

int
crm_config_get_int (crm_config_t *self, const char *name, long min, long max, long *value)
{
    const char *text = crm_config_get (self, name);
    char *end;
    errno = 0;
    long v = strtol (text, &end, 10);
    if (errno || end == text || *end || v < min || v > max) {
        crm_error ("invalid %s \"%s\": expected a whole number from %ld to %ld", name, text, min,
                   max);
        return -1;
    }
    *value = v;
    return 0;
}

int
crm_config_setup_log (crm_config_t *self, const char *service)
{
    char instance[128];
    const char *configured = crm_config_get (self, "CRM_INSTANCE");
    if (*configured)
        snprintf (instance, sizeof instance, "%s", configured);
    else {
        char host[64] = "localhost";
        gethostname (host, sizeof host - 1);
        host[sizeof host - 1] = '\0';
        snprintf (instance, sizeof instance, "%s:%d", host, (int) getpid ());
    }
    int rc = crm_log_init (service, instance, crm_config_get (self, "CRM_LOG_LEVEL"),
                           crm_config_get (self, "CRM_LOG_FORMAT"));
    if (rc != 0)
        crm_error ("invalid CRM_LOG_LEVEL or CRM_LOG_FORMAT");
    return rc;
}
