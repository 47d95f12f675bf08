/*  crm_config.h - configuration from CRM_* environment variables, with defaults and --help. */
#ifndef CRM_CONFIG_H_INCLUDED
#define CRM_CONFIG_H_INCLUDED

#include <stdbool.h>

typedef struct {
    const char *name;          //  Environment variable, e.g. "CRM_BROKER_ENDPOINT"
    const char *default_value; //  Used when the variable is unset or empty
    const char *help;          //  One line for --help
} crm_config_var_t;

typedef struct _crm_config_t crm_config_t;

//  Builds a configuration for a program from a table ended by a {NULL} entry;
//  the table is borrowed and must outlive the object. Common variables
//  (CRM_LOG_LEVEL, CRM_LOG_FORMAT, CRM_INSTANCE) are always included.
crm_config_t *crm_config_new (const char *program, const char *summary,
                              const crm_config_var_t *vars);

//  Idempotent destructor.
void crm_config_destroy (crm_config_t **self_p);

//  Reads argv: --help prints usage and every variable with its default and
//  current value and returns 1 (caller exits 0); an unknown argument prints
//  usage to stderr and returns -1; otherwise 0.
int crm_config_parse_args (crm_config_t *self, int argc, char **argv);

//  Value of a variable: environment, else the default. Borrowed. Asserts the
//  name is in the table (a programmer error otherwise).
const char *crm_config_get (crm_config_t *self, const char *name);

//  Integer value; -1 and a log line when the value is not a whole number in
//  [min, max], the caller treating that as a fatal configuration error.
int crm_config_get_int (crm_config_t *self, const char *name, long min, long max, long *value);

//  Starts logging for service from CRM_LOG_LEVEL, CRM_LOG_FORMAT and
//  CRM_INSTANCE (default "<host>:<pid>"); -1 when a value is not recognised.
int crm_config_setup_log (crm_config_t *self, const char *service);

#endif
