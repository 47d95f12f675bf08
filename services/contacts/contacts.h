/*  contacts.h - the contacts service: one record per customer, found fast, never held twice. */
#ifndef CONTACTS_H_INCLUDED
#define CONTACTS_H_INCLUDED

#include "crm.h"
#include "crm/v1/contacts.pb-c.h"

#include <stddef.h>

//  Longest name, label or address accepted, in bytes
#define CONTACTS_MAX_TEXT 200
//  Most phones or emails one contact holds
#define CONTACTS_MAX_CHANNELS 20
//  Most entries of each list of a contact (family, tags, preferences...)
#define CONTACTS_MAX_LIST 50
//  Longest tag or attribute name
#define CONTACTS_MAX_TAG 64
//  Most notes in one page
#define CONTACTS_NOTES_PAGE_MAX 50
//  Longest note, in bytes
#define CONTACTS_MAX_NOTE 10000
//  Page size when the request gives none, and the largest allowed
#define CONTACTS_PAGE_DEFAULT 50
#define CONTACTS_PAGE_MAX     500

//  What every handler shares: the database and the settings.
typedef struct {
    crm_pg_t *pg;             //  Connection of this instance
    crm_events_t *events;     //  The service's event log
    crm_consumer_t *orders;   //  Applies the orders log to the value figures
    const char *calling_code; //  Country calling code for national numbers ("49")
    const char *branch_codes; //  Per-branch calling codes, "riga-1=371,berlin-2=49"
} contacts_t;

//  The handler table of the service, one entry per rpc of crm.v1.Contacts.
extern const crm_method_t contacts_methods[];

//  Normalises a phone number to E.164 ("+4917612345678"): separators dropped,
//  "00" read as "+", a national number (leading 0 dropped) given
//  calling_code. 0, or -1 when it is not a plausible phone number.
int contacts_phone_normalize (const char *input, const char *calling_code, char *out,
                              size_t outlen);

//  True when address is a plausible email address (one @, a dotted domain,
//  no spaces or control characters, at most 254 bytes).
int contacts_email_valid (const char *address);

//  Checks and normalises a contact in place for storing (phones to E.164,
//  sizes, dates); on failure writes why into err and returns -1.
int contacts_contact_check (Crm__V1__Contact *contact, const char *calling_code, char *err,
                            size_t errlen);

//  Trims and lowercases a tag in place; -1 when it is empty, too long, or
//  holds characters other than letters, digits, - and _.
int contacts_tag_normalize (char *tag);

//  The calling code for branch from a table "branch=code,...", copied into
//  found; else fallback.
const char *contacts_calling_code (const char *table, const char *branch, const char *fallback,
                                   char found[8]);

//  Prepares the service's SQL statements on pg.
void contacts_store_prepare (crm_pg_t *pg);

#endif
