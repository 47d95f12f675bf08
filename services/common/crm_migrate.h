/*  crm_migrate.h - numbered SQL migrations embedded in a binary, applied once under an advisory lock. */
#ifndef CRM_MIGRATE_H_INCLUDED
#define CRM_MIGRATE_H_INCLUDED

#include <stddef.h>

typedef struct {
    int version;      //  1, 2, 3... from the file name "0001_name.sql"
    const char *name; //  The file name
    const char *sql;  //  The file's text
} crm_migration_t;

//  Creates schema if missing and applies, in version order, libcrm's own
//  migrations (idempotency store) and then the service's, each one not yet
//  recorded in schema.crm_migrations, each in its own transaction with
//  search_path set to schema. Holds a session advisory lock keyed by the
//  schema name meanwhile, so instances starting together apply each once.
//  Blocking; for start-up. 0 on success, -1 with a log line on failure.
int crm_migrate (const char *dsn, const char *schema, const crm_migration_t *migrations,
                 size_t count);

//  crm_migrate, tried again every second for up to wait_s seconds while it
//  fails (the database may still be starting: compose, make run). 0, or -1
//  with a log line once it gives up.
int crm_migrate_wait (const char *dsn, const char *schema, const crm_migration_t *migrations,
                      size_t count, long wait_s);

//  libcrm's own migrations (generated at build time from services/common/migrations/).
extern const crm_migration_t crm_common_migrations[];
extern const size_t crm_common_migrations_count;

#endif
