/*  test_words.c - the name-word dictionary keeps every word a contact holds, whatever commits when. */
#include "contacts.h"
#include "crm_test.h"
#include "crm_test_kit.h"

#include <libpq-fe.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

extern const crm_migration_t contacts_migrations[];
extern const size_t contacts_migrations_count;

#define SCHEMA "test_contacts_words"

static const char *s_dsn;
static PGconn *s_admin;
static int s_seq;

//  Creates a contact named given family on conn (in its transaction, if one
//  is open); its id goes to id.
static void
s_create (PGconn *conn, const char *given, const char *family, char id[37])
{
    crm_uuid (id);
    char request_id[32], contact[256];
    snprintf (request_id, sizeof request_id, "words-%d", ++s_seq);
    snprintf (contact, sizeof contact,
              "{\"branch\": \"words\", \"givenName\": \"%s\", \"familyName\": \"%s\"}", given,
              family);
    const char *values[] = {request_id, "f", id, contact, "false"};
    PGresult *res = PQexecParams (
        conn, "SELECT contact_create ($1, $2, $3::uuid, $4::jsonb, $5::boolean)->>'code'", 5, NULL,
        values, NULL, NULL, 0);
    CHECK (PQresultStatus (res) == PGRES_TUPLES_OK);
    if (PQresultStatus (res) == PGRES_TUPLES_OK)
        CHECK_STR (PQgetvalue (res, 0, 0), "0");
    else
        fprintf (stderr, "%s", PQresultErrorMessage (res));
    PQclear (res);
}

static void
s_rename (PGconn *conn, const char *id, const char *family)
{
    const char *values[] = {id, family};
    PGresult *res = PQexecParams (conn, "UPDATE contact SET family_name = $2 WHERE id = $1::uuid",
                                  2, NULL, values, NULL, NULL, 0);
    CHECK (PQresultStatus (res) == PGRES_COMMAND_OK);
    PQclear (res);
}

static bool
s_known (const char *word)
{
    char sql[128];
    snprintf (sql, sizeof sql, "SELECT count(*) FROM contact_name_word WHERE word = '%s'", word);
    return crm_test_value (s_admin, sql) == 1;
}

static long
s_noted (void)
{
    return crm_test_value (s_admin, "SELECT count(*) FROM contact_name_word_dropped");
}

//  Alone, a rename gives up its old words at once
static void
test_rename_alone (void)
{
    char a[37];
    s_create (s_admin, "Quentin", "Zyxwvu", a);
    CHECK (s_known ("zyxwvu") && s_known ("quentin"));
    s_rename (s_admin, a, "Plainly");
    CHECK (!s_known ("zyxwvu"));
    CHECK (s_known ("plainly") && s_known ("quentin"));
    CHECK_INT (s_noted (), 0);
    //  A word another contact still holds stays
    char b[37];
    s_create (s_admin, "Quentin", "Twice", b);
    s_rename (s_admin, a, "Once");
    CHECK (s_known ("quentin"));
}

//  Advisory locks the session of conn holds
static long
s_locks_of (PGconn *conn)
{
    char sql[160];
    snprintf (sql, sizeof sql,
              "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
              "AND pid = %d",
              PQbackendPID (conn));
    return crm_test_value (s_admin, sql);
}

//  The race that lost words: a rename gives up a word while a create of the
//  same word is in flight. The rename notes the word instead; the prune
//  deletes nothing while the create is in flight, and keeps the word once the
//  new contact holds it. Nobody waits for the lock meanwhile.
static void
test_rename_while_adding (void)
{
    char a[37], b[37], c[37];
    s_create (s_admin, "Ulla", "Vwxyqk", a);
    PGconn *creator = crm_test_connect (s_dsn, SCHEMA);
    crm_test_exec (creator, "BEGIN");
    s_create (creator, "Berit", "Vwxyqk", b);

    s_rename (s_admin, a, "Otherwise");
    CHECK (s_known ("vwxyqk"));
    CHECK_INT (s_noted (), 1);
    CHECK_INT (s_locks_of (s_admin), 0);

    //  An adder in flight holds up neither other adders nor the prune, which gives up
    PGconn *other = crm_test_connect (s_dsn, SCHEMA);
    s_create (other, "Carla", "Unrelated", c);
    CHECK (s_known ("unrelated"));
    CHECK_INT (crm_test_value (other, "SELECT contact_name_words_prune (100)"), 0);
    CHECK_INT (s_noted (), 1);
    CHECK_INT (s_locks_of (other), 0);

    crm_test_exec (creator, "COMMIT");
    CHECK_INT (crm_test_value (other, "SELECT contact_name_words_prune (100)"), 1);
    CHECK (s_known ("vwxyqk"));
    CHECK_INT (s_noted (), 0);
    CHECK_INT (s_locks_of (other), 0);

    //  Once nobody holds it, it goes, at once when nobody adds words
    s_rename (s_admin, b, "Elsewise");
    CHECK (!s_known ("vwxyqk"));
    PQfinish (other);
    PQfinish (creator);
}

//  A word noted while a prune is at work waits for it and stays noted; a
//  prune that cannot take the lock puts its notes back
static void
test_note_during_prune (void)
{
    crm_test_exec (s_admin, "INSERT INTO contact_name_word VALUES ('ghostly')");
    crm_test_exec (s_admin, "INSERT INTO contact_name_word_dropped VALUES ('ghostly')");
    PGconn *pruner = crm_test_connect (s_dsn, SCHEMA);
    crm_test_exec (pruner, "BEGIN");
    CHECK_INT (crm_test_value (pruner, "SELECT contact_name_words_prune (100)"), 1);
    //  A rename noting the word now waits for the prune's transaction
    PGconn *renamer = crm_test_connect (s_dsn, SCHEMA);
    CHECK (PQsendQuery (renamer, "INSERT INTO contact_name_word_dropped VALUES ('ghostly') "
                                 "ON CONFLICT DO NOTHING") == 1);
    usleep (200 * 1000);
    PQconsumeInput (renamer);
    CHECK (PQisBusy (renamer));
    crm_test_exec (pruner, "COMMIT");
    PGresult *res;
    while ((res = PQgetResult (renamer))) {
        CHECK (PQresultStatus (res) == PGRES_COMMAND_OK);
        PQclear (res);
    }
    CHECK (!s_known ("ghostly"));
    CHECK_INT (s_noted (), 1);

    //  The lock held elsewhere all along: the prune gives up and the note is back
    crm_test_exec (s_admin, "INSERT INTO contact_name_word VALUES ('ghostly')");
    crm_test_exec (renamer, "SELECT pg_advisory_lock (contact_name_words_lock_key ())");
    CHECK_INT (crm_test_value (pruner, "SELECT contact_name_words_prune (100)"), 0);
    CHECK_INT (s_noted (), 1);
    CHECK (s_known ("ghostly"));
    crm_test_exec (renamer, "SELECT pg_advisory_unlock (contact_name_words_lock_key ())");
    CHECK_INT (crm_test_value (pruner, "SELECT contact_name_words_prune (100)"), 1);
    CHECK_INT (s_noted (), 0);
    CHECK (!s_known ("ghostly"));
    PQfinish (renamer);
    PQfinish (pruner);
}

//  The prune deletes the noted words nobody holds, a batch at a time
static void
test_prune (void)
{
    char a[37];
    s_create (s_admin, "Held", "Keptword", a);
    crm_test_exec (s_admin, "INSERT INTO contact_name_word SELECT 'ghost' || i "
                            "FROM generate_series (1, 2500) i");
    crm_test_exec (s_admin, "INSERT INTO contact_name_word_dropped SELECT 'ghost' || i "
                            "FROM generate_series (1, 2500) i");
    crm_test_exec (s_admin, "INSERT INTO contact_name_word_dropped VALUES ('keptword')");
    CHECK_INT (crm_test_value (s_admin, "SELECT contact_name_words_prune (1000)"), 1000);
    CHECK_INT (crm_test_value (s_admin, "SELECT contact_name_words_prune (1000)"), 1000);
    CHECK_INT (crm_test_value (s_admin, "SELECT contact_name_words_prune (1000)"), 501);
    CHECK_INT (crm_test_value (s_admin, "SELECT contact_name_words_prune (1000)"), 0);
    CHECK_INT (crm_test_value (s_admin, "SELECT count(*) FROM contact_name_word "
                                        "WHERE word LIKE 'ghost%'"),
               0);
    CHECK (s_known ("keptword"));
    CHECK_INT (s_noted (), 0);
}

//  A deleter cancelled inside its DELETE (here by statement_timeout, while
//  another transaction holds the word's row) lets go of the lock: it is a
//  session lock, which would otherwise outlive the error and stop every adder
static void
test_cancelled_delete (void)
{
    crm_test_exec (s_admin,
                   "INSERT INTO contact_name_word VALUES ('heldword') ON CONFLICT DO NOTHING");
    PGconn *holder = crm_test_connect (s_dsn, SCHEMA);
    crm_test_exec (holder, "BEGIN");
    crm_test_exec (holder, "SELECT 1 FROM contact_name_word WHERE word = 'heldword' FOR UPDATE");
    PGconn *deleter = crm_test_connect (s_dsn, SCHEMA);
    crm_test_exec (deleter, "SET statement_timeout = '300ms'");
    PGresult *res = PQexec (deleter, "SELECT contact_name_words_delete (ARRAY['heldword'], NULL)");
    CHECK_STR (PQresultErrorField (res, PG_DIAG_SQLSTATE), "57014"); //  query_canceled
    PQclear (res);
    CHECK_INT (s_locks_of (deleter), 0);
    crm_test_exec (holder, "ROLLBACK");
    //  The same session takes and lets go of it again as before
    crm_test_exec (deleter, "RESET statement_timeout");
    CHECK_INT (
        crm_test_value (deleter, "SELECT contact_name_words_delete (ARRAY['heldword'], NULL)::int"),
        1);
    CHECK (!s_known ("heldword"));
    CHECK_INT (s_locks_of (deleter), 0);
    PQfinish (deleter);
    PQfinish (holder);
}

int
main (void)
{
    s_dsn = crm_test_dsn ("test_words");
    if (!s_dsn)
        return 77;
    FILE *log = crm_test_log_capture ("test_words", "warn");
    s_admin = crm_test_connect (s_dsn, NULL);
    crm_test_schema_drop (s_admin, SCHEMA);
    CHECK_INT (crm_migrate (s_dsn, SCHEMA, contacts_migrations, contacts_migrations_count), 0);
    crm_test_exec (s_admin, "SET search_path = " SCHEMA);

    RUN (test_rename_alone);
    RUN (test_rename_while_adding);
    RUN (test_note_during_prune);
    RUN (test_prune);
    RUN (test_cancelled_delete);

    crm_test_schema_drop (s_admin, SCHEMA);
    PQfinish (s_admin);
    crm_test_log_end (&log, false);
    return TEST_DONE ("test_words");
}
