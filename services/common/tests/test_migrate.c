/*  test_migrate.c - crm_migrate against a real PostgreSQL: apply, re-run, concurrent starts, failures. */
#include "crm_log.h"
#include "crm_migrate.h"
#include "crm_util.h"
#include "crm_test.h"
#include "crm_test_kit.h"

#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static const char *s_dsn; //  Superuser DSN from CRM_TEST_DSN
static PGconn *s_admin;   //  Blocking connection for set-up and checks

static const crm_migration_t s_migrations[] = {
    {1, "0001_tables.sql",
     "CREATE TABLE a (x int PRIMARY KEY);\n"
     "INSERT INTO a VALUES (1);\n"},
    {2, "0002_more.sql",
     "CREATE TABLE b (y text);\n"
     "INSERT INTO a VALUES (2);\n"
     "CREATE FUNCTION a_count () RETURNS bigint LANGUAGE sql AS $$ SELECT count(*) FROM a $$;\n"},
    {5, "0005_later.sql", "INSERT INTO a VALUES (5);\n"},
    //  Changes things, then fails
    {6, "0006_broken.sql",
     "CREATE TABLE c (z int);\n"
     "INSERT INTO a VALUES (6);\n"
     "SELECT 1 / 0;\n"},
};

static void
test_apply (void)
{
    crm_test_exec (s_admin, "DROP SCHEMA IF EXISTS test_migrate CASCADE");

    //  Into a schema that does not exist yet
    CHECK_INT (crm_migrate (s_dsn, "test_migrate", s_migrations, 2), 0);
    CHECK_INT (crm_test_value (s_admin, "SELECT count(*) FROM test_migrate.a"), 2);
    CHECK_INT (crm_test_value (s_admin, "SELECT count(*) FROM pg_proc WHERE proname = 'a_count' "
                                        "AND pronamespace = 'test_migrate'::regnamespace"),
               1);
    CHECK_INT (crm_test_value (s_admin, "SELECT count(*) FROM test_migrate.b"), 0);
    CHECK_INT (crm_test_value (s_admin, "SELECT count(*) FROM test_migrate.crm_migrations "
                                        "WHERE component = 'test_migrate'"),
               2);
    CHECK_INT (crm_test_value (s_admin, "SELECT count(*) FROM test_migrate.crm_migrations "
                                        "WHERE component = 'test_migrate' AND version = 2 "
                                        "AND name = '0002_more.sql' AND applied_at <= now()"),
               1);
    //  libcrm's own migrations come along, recorded under "crm"
    CHECK_INT (crm_test_value (s_admin, "SELECT count(*) FROM test_migrate.crm_migrations "
                                        "WHERE component = 'crm'"),
               (long) crm_common_migrations_count);
    //  Nothing landed in public
    CHECK_INT (crm_test_value (s_admin,
                               "SELECT count(*) FROM pg_tables WHERE schemaname = 'public' "
                               "AND tablename IN ('a', 'b', 'crm_migrations')"),
               0);

    //  A second run changes nothing
    CHECK_INT (crm_migrate (s_dsn, "test_migrate", s_migrations, 2), 0);
    CHECK_INT (crm_test_value (s_admin, "SELECT count(*) FROM test_migrate.a"), 2);
    CHECK_INT (crm_test_value (s_admin, "SELECT count(*) FROM test_migrate.crm_migrations"),
               2 + (long) crm_common_migrations_count);

    //  A new version is applied alone
    CHECK_INT (crm_migrate (s_dsn, "test_migrate", s_migrations, 3), 0);
    CHECK_INT (crm_test_value (s_admin, "SELECT count(*) FROM test_migrate.a"), 3);
    CHECK_INT (crm_test_value (s_admin, "SELECT max(x) FROM test_migrate.a"), 5);
}

static void
test_failure (void)
{
    //  The broken migration fails whole and is not recorded
    CHECK_INT (crm_migrate (s_dsn, "test_migrate", s_migrations, 4), -1);
    CHECK_INT (crm_test_value (s_admin,
                               "SELECT count(*) FROM pg_tables WHERE schemaname = 'test_migrate' "
                               "AND tablename = 'c'"),
               0);
    CHECK_INT (crm_test_value (s_admin, "SELECT count(*) FROM test_migrate.a WHERE x = 6"), 0);
    CHECK_INT (crm_test_value (s_admin, "SELECT count(*) FROM test_migrate.crm_migrations "
                                        "WHERE component = 'test_migrate' AND version = 6"),
               0);
    //  What came before stays applied, and the lock was released: a good run goes through
    CHECK_INT (crm_test_value (s_admin, "SELECT count(*) FROM test_migrate.a"), 3);
    CHECK_INT (
        crm_test_value (s_admin, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"), 0);
    CHECK_INT (crm_migrate (s_dsn, "test_migrate", s_migrations, 3), 0);

    //  Tables out of order are refused before anything is done
    crm_migration_t unordered[] = {
        {2, "0002_x.sql", "CREATE TABLE x2 (x int);"},
        {1, "0001_x.sql", "CREATE TABLE x1 (x int);"},
    };
    crm_migration_t repeated[] = {
        {1, "0001_x.sql", "CREATE TABLE x1 (x int);"},
        {1, "0001_y.sql", "CREATE TABLE y1 (x int);"},
    };
    CHECK_INT (crm_migrate (s_dsn, "test_migrate_refused", unordered, 2), -1);
    CHECK_INT (crm_migrate (s_dsn, "test_migrate_refused", repeated, 2), -1);
    CHECK_INT (crm_test_value (s_admin, "SELECT count(*) FROM pg_namespace "
                                        "WHERE nspname = 'test_migrate_refused'"),
               0);

    //  No server
    CHECK_INT (crm_migrate ("host=127.0.0.1 port=1 user=nobody dbname=nothing connect_timeout=2",
                            "test_migrate", s_migrations, 2),
               -1);
}

//  crm_migrate_wait: at once with a server, tried again for wait_s without one
static void
test_wait (void)
{
    CHECK_INT (crm_migrate_wait (s_dsn, "test_migrate", s_migrations, 2, 5), 0);
    int64_t start = crm_mono_ms ();
    CHECK_INT (crm_migrate_wait ("host=127.0.0.1 port=1 user=nobody dbname=nothing "
                                 "connect_timeout=2",
                                 "test_migrate", s_migrations, 2, 1),
               -1);
    int64_t took = crm_mono_ms () - start;
    CHECK (took >= 1000); //  At least one more try after the first
    CHECK (took < 10000);
}

static void
test_odd_schema_name (void)
{
    //  Quoted as an identifier everywhere, never pasted in
    crm_test_exec (s_admin, "DROP SCHEMA IF EXISTS \"Test \"\"Migrate\" CASCADE");
    CHECK_INT (crm_migrate (s_dsn, "Test \"Migrate", s_migrations, 2), 0);
    CHECK_INT (crm_test_value (s_admin, "SELECT count(*) FROM \"Test \"\"Migrate\".a"), 2);
    crm_test_exec (s_admin, "DROP SCHEMA \"Test \"\"Migrate\" CASCADE");
}

//  Slow enough that the processes below overlap.
static const crm_migration_t s_racing[] = {
    {1, "0001_log.sql", "CREATE TABLE log (who int);\nSELECT pg_sleep(0.3);\n"},
    {2, "0002_entry.sql", "INSERT INTO log VALUES (pg_backend_pid());\n"},
};

static void
test_concurrent (void)
{
    crm_test_exec (s_admin, "DROP SCHEMA IF EXISTS test_migrate_race CASCADE");
    enum { N = 4 };
    pid_t pids[N];
    for (int i = 0; i < N; i++) {
        pids[i] = fork ();
        if (pids[i] == 0)
            _exit (crm_migrate (s_dsn, "test_migrate_race", s_racing, 2) == 0 ? 0 : 1);
        CHECK (pids[i] > 0);
    }
    int succeeded = 0;
    for (int i = 0; i < N; i++) {
        int status = 0;
        if (pids[i] > 0 && waitpid (pids[i], &status, 0) == pids[i] && WIFEXITED (status) &&
            WEXITSTATUS (status) == 0)
            succeeded++;
    }
    CHECK_INT (succeeded, N);
    CHECK_INT (crm_test_value (s_admin, "SELECT count(*) FROM test_migrate_race.log"), 1);
    CHECK_INT (crm_test_value (s_admin, "SELECT count(*) FROM test_migrate_race.crm_migrations "
                                        "WHERE component = 'test_migrate_race'"),
               2);
    CHECK_INT (crm_test_value (s_admin, "SELECT count(*) FROM test_migrate_race.crm_migrations "
                                        "WHERE component = 'crm'"),
               (long) crm_common_migrations_count);
    crm_test_exec (s_admin, "DROP SCHEMA test_migrate_race CASCADE");
}

int
main (void)
{
    s_dsn = crm_test_dsn ("test_migrate");
    if (!s_dsn)
        return 77;
    //  The failures below log errors on purpose: keep them off stdout
    crm_log_init ("test_migrate", NULL, "info", "text");
    crm_log_set_stream (stderr);
    s_admin = crm_test_connect (s_dsn, NULL);

    RUN (test_apply);
    RUN (test_failure);
    RUN (test_wait);
    RUN (test_odd_schema_name);
    RUN (test_concurrent);

    crm_test_exec (s_admin, "DROP SCHEMA IF EXISTS test_migrate CASCADE");
    PQfinish (s_admin);
    return TEST_DONE ("test_migrate");
}
