/*  test_check.c - unit tests of the contacts service's validation and normalisation. */
#include "contacts.h"
#include "crm_test.h"

static void
s_phone (const char *input, const char *code, const char *expected)
{
    char out[20] = "";
    int rc = contacts_phone_normalize (input, code, out, sizeof out);
    if (expected) {
        CHECK_INT (rc, 0);
        CHECK_STR (out, expected);
    }
    else
        CHECK_INT (rc, -1);
}

static void
test_phone (void)
{
    s_phone ("+49 176 1234 5678", "1", "+4917612345678");
    s_phone ("0049 (176) 1234-5678", "1", "+4917612345678");
    s_phone ("0176 12345678", "49", "+4917612345678");
    s_phone ("176/12345678", "49", "+4917612345678");
    s_phone ("(212) 555-0100", "1", "+12125550100");
    s_phone ("212.555.0100", "1", "+12125550100");
    s_phone ("  +7 912 345-67-89", "49", "+79123456789");
    s_phone ("+0 123 4567", "1", NULL);       //  no country code starts with 0
    s_phone ("12345", "49", NULL);            //  too short
    s_phone ("+1234567890123456", "1", NULL); //  over 15 digits
    s_phone ("call me", "1", NULL);
    s_phone ("+49 176 12345678 ext 5", "1", NULL);
    s_phone ("", "1", NULL);
    s_phone ("0176 12345678", "", NULL); //  national without a calling code
    s_phone ("123456789012345678901234567890123456", "1", NULL);
    char small[5];
    CHECK_INT (contacts_phone_normalize ("+4917612345678", "1", small, sizeof small), -1);
}

static void
test_email (void)
{
    CHECK (contacts_email_valid ("anna@example.com"));
    CHECK (contacts_email_valid ("Anna.Petrovna+shop@mail.example.co.uk"));
    CHECK (!contacts_email_valid ("anna.example.com"));
    CHECK (!contacts_email_valid ("anna@@example.com"));
    CHECK (!contacts_email_valid ("@example.com"));
    CHECK (!contacts_email_valid ("anna@"));
    CHECK (!contacts_email_valid ("anna@localhost"));
    CHECK (!contacts_email_valid ("anna@example..com"));
    CHECK (!contacts_email_valid ("anna @example.com"));
    CHECK (!contacts_email_valid ("anna@example.com."));
    CHECK (!contacts_email_valid ("a\x01@example.com"));
    char long_local[80];
    memset (long_local, 'a', 70);
    strcpy (long_local + 70, "@x.io");
    CHECK (!contacts_email_valid (long_local));
}

static void
test_uuid (void)
{
    CHECK (crm_uuid_valid ("11111111-1111-4111-8111-111111111111"));
    CHECK (crm_uuid_valid ("ABCDEF00-1111-4111-8111-111111111111"));
    CHECK (!crm_uuid_valid ("11111111-1111-4111-8111-11111111111"));
    CHECK (!crm_uuid_valid ("11111111x1111-4111-8111-111111111111"));
    CHECK (!crm_uuid_valid ("g1111111-1111-4111-8111-111111111111"));
    CHECK (!crm_uuid_valid (""));
}

static Crm__V1__Contact *
s_contact (const char *json)
{
    char err[256];
    ProtobufCMessage *m =
        crm_json_decode (&crm__v1__contact__descriptor, json, strlen (json), err, sizeof err);
    if (!m)
        fprintf (stderr, "bad test json: %s\n", err);
    return (Crm__V1__Contact *) m;
}

static void
s_check (const char *json, int expected_rc, const char *err_part)
{
    Crm__V1__Contact *contact = s_contact (json);
    CHECK (contact != NULL);
    if (!contact)
        return;
    char err[256] = "";
    int rc = contacts_contact_check (contact, "49", err, sizeof err);
    CHECK_INT (rc, expected_rc);
    if (err_part && !strstr (err, err_part)) {
        CHECK (!"error message");
        fprintf (stderr, "  got \"%s\", wanted it to mention \"%s\"\n", err, err_part);
    }
    protobuf_c_message_free_unpacked (&contact->base, NULL);
}

static void
test_contact_check (void)
{
    Crm__V1__Contact *contact =
        s_contact ("{\"givenName\":\"Anna\",\"phones\":[{\"number\":\"0176 1234 5678\"}],"
                   "\"emails\":[{\"address\":\"anna@example.com\"}],"
                   "\"birthday\":{\"year\":2000,\"month\":2,\"day\":29}}");
    char err[256];
    CHECK_INT (contacts_contact_check (contact, "49", err, sizeof err), 0);
    CHECK_STR (contact->phones[0]->number, "+4917612345678");
    protobuf_c_message_free_unpacked (&contact->base, NULL);

    s_check ("{}", -1, "needs a name");
    s_check ("{\"givenName\":\"A\",\"phones\":[{\"number\":\"letters\"}]}", -1, "phones[0]");
    s_check ("{\"givenName\":\"A\",\"emails\":[{\"address\":\"no-at\"}]}", -1, "emails[0]");
    s_check ("{\"givenName\":\"A\",\"birthday\":{\"year\":2023,\"month\":2,\"day\":29}}", -1,
             "not a date");
    s_check ("{\"givenName\":\"A\",\"birthday\":{\"year\":2023,\"month\":4,\"day\":31}}", -1,
             "not a date");
    s_check ("{\"givenName\":\"A\",\"birthday\":{\"year\":2023,\"month\":13,\"day\":1}}", -1,
             "not a date");
    s_check ("{\"givenName\":\"A\",\"phones\":[{\"number\":\"+4917612345678\"},"
             "{\"number\":\"0176 1234 5678\"}]}",
             -1, "listed twice");
    s_check ("{\"givenName\":\"A\",\"emails\":[{\"address\":\"a@x.io\"},{\"address\":\"A@X.io\"}]}",
             -1, "listed twice");
    s_check ("{\"givenName\":\"A\\u0001\"}", -1, "control character");

    char big[400];
    snprintf (big, sizeof big, "{\"familyName\":\"%0250d\"}", 0);
    s_check (big, -1, "longer than");
    char many[4000] = "{\"givenName\":\"A\",\"phones\":[";
    for (int i = 0; i < 21; i++)
        snprintf (many + strlen (many), sizeof many - strlen (many),
                  "%s{\"number\":\"+49176%07d\"}", i ? "," : "", i);
    strcat (many, "]}");
    s_check (many, -1, "at most");
}

static void
test_tags (void)
{
    char a[] = "  VIP ";
    CHECK_INT (contacts_tag_normalize (a), 0);
    CHECK_STR (a, "vip");
    char b[] = "ПОСТОЯННЫЙ";
    CHECK_INT (contacts_tag_normalize (b), 0);
    CHECK_STR (b, "постоянный");
    char c[] = "RĪGA-Über_Ёж";
    CHECK_INT (contacts_tag_normalize (c), 0);
    CHECK_STR (c, "rīga-über_ёж");
    char d[] = "two words";
    CHECK_INT (contacts_tag_normalize (d), -1);
    char e[] = "   ";
    CHECK_INT (contacts_tag_normalize (e), -1);
    char f[] = "bad\xff";
    CHECK_INT (contacts_tag_normalize (f), -1);
    char g[80];
    memset (g, 'x', 70);
    g[70] = '\0';
    CHECK_INT (contacts_tag_normalize (g), -1);
}

static void
test_calling_codes (void)
{
    char found[8];
    CHECK_STR (contacts_calling_code ("riga-1=371,berlin-2=49", "riga-1", "1", found), "371");
    CHECK_STR (contacts_calling_code ("riga-1=371,berlin-2=49", "berlin-2", "1", found), "49");
    CHECK_STR (contacts_calling_code ("riga-1=371,berlin-2=49", "riga", "1", found), "1");
    CHECK_STR (contacts_calling_code ("", "riga-1", "7", found), "7");
    CHECK_STR (contacts_calling_code ("riga-1=371", "", "7", found), "7");
    CHECK_STR (contacts_calling_code ("x=123456789", "x", "7", found), "7");
}

int
main (void)
{
    RUN (test_phone);
    RUN (test_email);
    RUN (test_uuid);
    RUN (test_contact_check);
    RUN (test_tags);
    RUN (test_calling_codes);
    return TEST_DONE ("test_check");
}
