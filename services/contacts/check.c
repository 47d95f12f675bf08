/*  check.c - validation and normalisation of contact data before it reaches the database. */
#include "contacts.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int
contacts_phone_normalize (const char *input, const char *calling_code, char *out, size_t outlen)
{
    char digits[32];
    size_t n = 0;
    int international = 0;
    const char *p = input;
    while (*p == ' ')
        p++;
    if (*p == '+') {
        international = 1;
        p++;
    }
    for (; *p; p++) {
        if (isdigit ((unsigned char) *p)) {
            if (n + 1 >= sizeof digits)
                return -1;
            digits[n++] = *p;
        }
        else if (!strchr (" -.()/", *p))
            return -1;
    }
    digits[n] = '\0';
    const char *national = digits;
    if (!international && n > 2 && digits[0] == '0' && digits[1] == '0') {
        international = 1;
        national = digits + 2;
    }
    char e164[40];
    if (international)
        snprintf (e164, sizeof e164, "+%s", national);
    else {
        //  A national number: its trunk prefix 0 goes, the calling code comes
        if (*national == '0')
            national++;
        //  No country has subscriber numbers shorter than this
        if (strlen (national) < 6)
            return -1;
        if (!calling_code || !*calling_code)
            return -1;
        snprintf (e164, sizeof e164, "+%s%s", calling_code, national);
    }
    //  E.164: a country code that does not start with 0, at most 15 digits;
    //  fewer than 7 is no reachable number anywhere
    size_t total = strlen (e164) - 1;
    if (total < 7 || total > 15 || e164[1] == '0')
        return -1;
    if (strlen (e164) + 1 > outlen)
        return -1;
    memcpy (out, e164, strlen (e164) + 1);
    return 0;
}

int
contacts_email_valid (const char *address)
{
    size_t len = strlen (address);
    if (len < 3 || len > 254)
        return 0;
    const char *at = strchr (address, '@');
    if (!at || strchr (at + 1, '@') || at == address || at - address > 64)
        return 0;
    const char *domain = at + 1;
    if (!*domain || *domain == '.' || address[len - 1] == '.' || !strchr (domain, '.') ||
        strstr (domain, ".."))
        return 0;
    for (const char *p = address; *p; p++)
        if ((unsigned char) *p <= ' ' || *p == 0x7f || strchr ("<>()[],;:\\\"", *p))
            return 0;
    return 1;
}

static int
s_text_ok (const char *field, const char *value, char *err, size_t errlen)
{
    if (strlen (value) > CONTACTS_MAX_TEXT) {
        snprintf (err, errlen, "%s is longer than %d bytes", field, CONTACTS_MAX_TEXT);
        return 0;
    }
    for (const char *p = value; *p; p++)
        if ((unsigned char) *p < ' ') {
            snprintf (err, errlen, "%s holds a control character", field);
            return 0;
        }
    return 1;
}

static int
s_date_ok (const Crm__V1__Date *date)
{
    static const int days[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (date->year < 1900 || date->year > 2100 || date->month < 1 || date->month > 12 ||
        date->day < 1 || date->day > days[date->month - 1])
        return 0;
    int leap = (date->year % 4 == 0 && date->year % 100 != 0) || date->year % 400 == 0;
    return !(date->month == 2 && date->day == 29 && !leap);
}

int
contacts_contact_check (Crm__V1__Contact *contact, const char *calling_code, char *err,
                        size_t errlen)
{
    if (!s_text_ok ("given_name", contact->given_name, err, errlen) ||
        !s_text_ok ("middle_name", contact->middle_name, err, errlen) ||
        !s_text_ok ("family_name", contact->family_name, err, errlen) ||
        !s_text_ok ("preferred_address", contact->preferred_address, err, errlen) ||
        !s_text_ok ("branch", contact->branch, err, errlen))
        return -1;
    if (!*contact->given_name && !*contact->family_name && contact->n_phones == 0 &&
        contact->n_emails == 0) {
        snprintf (err, errlen, "a contact needs a name, a phone or an email");
        return -1;
    }
    if (contact->n_phones > CONTACTS_MAX_CHANNELS || contact->n_emails > CONTACTS_MAX_CHANNELS) {
        snprintf (err, errlen, "a contact holds at most %d phones and %d emails",
                  CONTACTS_MAX_CHANNELS, CONTACTS_MAX_CHANNELS);
        return -1;
    }
    for (size_t i = 0; i < contact->n_phones; i++) {
        Crm__V1__Phone *phone = contact->phones[i];
        char e164[20];
        if (contacts_phone_normalize (phone->number, calling_code, e164, sizeof e164) != 0) {
            snprintf (err, errlen, "phones[%zu]: \"%.40s\" is not a phone number", i,
                      phone->number);
            return -1;
        }
        if (!s_text_ok ("phone label", phone->label, err, errlen))
            return -1;
        //  The number is replaced by its normal form; the decoded string was
        //  malloc'd by protobuf-c and is freed the same way
        char *normal = strdup (e164);
        if (!normal)
            return -1;
        free (phone->number);
        phone->number = normal;
        for (size_t k = 0; k < i; k++)
            if (strcmp (contact->phones[k]->number, normal) == 0) {
                snprintf (err, errlen, "phone %s is listed twice", normal);
                return -1;
            }
    }
    for (size_t i = 0; i < contact->n_emails; i++) {
        Crm__V1__Email *email = contact->emails[i];
        if (!contacts_email_valid (email->address)) {
            snprintf (err, errlen, "emails[%zu]: \"%.60s\" is not an email address", i,
                      email->address);
            return -1;
        }
        if (!s_text_ok ("email label", email->label, err, errlen))
            return -1;
        for (size_t k = 0; k < i; k++)
            if (strcasecmp (contact->emails[k]->address, email->address) == 0) {
                snprintf (err, errlen, "email %s is listed twice", email->address);
                return -1;
            }
    }
    if (contact->birthday && !s_date_ok (contact->birthday)) {
        snprintf (err, errlen, "birthday %04d-%02d-%02d is not a date", contact->birthday->year,
                  contact->birthday->month, contact->birthday->day);
        return -1;
    }
    if (contact->company_founded && !s_date_ok (contact->company_founded)) {
        snprintf (err, errlen, "company_founded is not a date");
        return -1;
    }
    if (!s_text_ok ("company", contact->company, err, errlen) ||
        !s_text_ok ("job_title", contact->job_title, err, errlen))
        return -1;
    if (contact->n_addresses > CONTACTS_MAX_CHANNELS || contact->n_family > CONTACTS_MAX_LIST ||
        contact->n_preferences > CONTACTS_MAX_LIST ||
        contact->n_favourite_products > CONTACTS_MAX_LIST || contact->n_tags > CONTACTS_MAX_LIST ||
        contact->n_attributes > CONTACTS_MAX_LIST) {
        snprintf (err, errlen, "a contact holds at most %d addresses and %d of each list",
                  CONTACTS_MAX_CHANNELS, CONTACTS_MAX_LIST);
        return -1;
    }
    for (size_t i = 0; i < contact->n_addresses; i++) {
        Crm__V1__PostalAddress *a = contact->addresses[i];
        if (!s_text_ok ("address label", a->label, err, errlen) ||
            !s_text_ok ("street", a->street, err, errlen) ||
            !s_text_ok ("city", a->city, err, errlen) ||
            !s_text_ok ("postal_code", a->postal_code, err, errlen) ||
            !s_text_ok ("region", a->region, err, errlen))
            return -1;
        const char *cc = a->country;
        if (*cc && !(strlen (cc) == 2 && isupper ((unsigned char) cc[0]) &&
                     isupper ((unsigned char) cc[1]))) {
            snprintf (err, errlen, "addresses[%zu]: country must be an ISO 3166 code like \"LV\"",
                      i);
            return -1;
        }
        if (!*a->street && !*a->city && !*a->postal_code) {
            snprintf (err, errlen, "addresses[%zu] is empty", i);
            return -1;
        }
    }
    for (size_t i = 0; i < contact->n_family; i++) {
        Crm__V1__FamilyMember *f = contact->family[i];
        if (!*f->name) {
            snprintf (err, errlen, "family[%zu]: name is required", i);
            return -1;
        }
        if (!s_text_ok ("family name", f->name, err, errlen) ||
            !s_text_ok ("relation", f->relation, err, errlen))
            return -1;
        if (f->birthday && !s_date_ok (f->birthday)) {
            snprintf (err, errlen, "family[%zu]: birthday is not a date", i);
            return -1;
        }
    }
    for (size_t i = 0; i < contact->n_preferences; i++)
        if (!s_text_ok ("preference", contact->preferences[i], err, errlen))
            return -1;
    for (size_t i = 0; i < contact->n_favourite_products; i++)
        if (!s_text_ok ("favourite product", contact->favourite_products[i], err, errlen))
            return -1;
    for (size_t i = 0; i < contact->n_tags; i++) {
        if (contacts_tag_normalize (contact->tags[i]) != 0) {
            snprintf (err, errlen, "tags[%zu]: a tag is 1 to %d letters, digits, - or _", i,
                      CONTACTS_MAX_TAG);
            return -1;
        }
        for (size_t k = 0; k < i; k++)
            if (strcmp (contact->tags[k], contact->tags[i]) == 0) {
                snprintf (err, errlen, "tag %s is listed twice", contact->tags[i]);
                return -1;
            }
    }
    for (size_t i = 0; i < contact->n_attributes; i++) {
        Crm__V1__Contact__AttributesEntry *entry = contact->attributes[i];
        if (!*entry->key || strlen (entry->key) > CONTACTS_MAX_TAG) {
            snprintf (err, errlen, "attribute names are 1 to %d bytes", CONTACTS_MAX_TAG);
            return -1;
        }
        if (!s_text_ok ("attribute", entry->value, err, errlen))
            return -1;
    }
    return 0;
}

//  The lowercase of a two-byte UTF-8 code point (U+0080..U+07FF) of the
//  Latin-1, Latin Extended-A, Greek and Cyrillic blocks; others unchanged.
//  Every mapping stays within two bytes, so tags can be lowercased in place.
static unsigned
s_lower (unsigned cp)
{
    if ((cp >= 0xc0 && cp <= 0xde && cp != 0xd7) || (cp >= 0x391 && cp <= 0x3ab && cp != 0x3a2) ||
        (cp >= 0x410 && cp <= 0x42f))
        return cp + 0x20;
    if (cp >= 0x400 && cp <= 0x40f)
        return cp + 0x50;
    //  Latin Extended-A pairs capital/small as even/odd, but for ranges
    //  where the pairs start on an odd code point
    if (cp >= 0x100 && cp <= 0x137 && cp != 0x130)
        return cp | 1;
    if ((cp >= 0x139 && cp <= 0x148) || (cp >= 0x179 && cp <= 0x17e))
        return cp & 1 ? cp + 1 : cp;
    if (cp >= 0x14a && cp <= 0x177)
        return cp | 1;
    if ((cp >= 0x460 && cp <= 0x481) || (cp >= 0x48a && cp <= 0x4bf))
        return cp | 1;
    return cp;
}

int
contacts_tag_normalize (char *tag)
{
    //  Trimmed and lowercased in place: "VIP " and "vip" are one tag
    char *start = tag;
    while (*start == ' ')
        start++;
    size_t len = strlen (start);
    while (len > 0 && start[len - 1] == ' ')
        len--;
    if (len == 0 || len > CONTACTS_MAX_TAG)
        return -1;
    size_t out = 0;
    for (size_t i = 0; i < len;) {
        unsigned char c = (unsigned char) start[i];
        if (c < 0x80) {
            if (!isalnum (c) && c != '-' && c != '_')
                return -1;
            tag[out++] = (char) tolower (c);
            i++;
            continue;
        }
        //  A letter of another alphabet: lowercased where the alphabet has
        //  cases the service knows (Latin, Greek, Cyrillic), else kept
        size_t n = (c & 0xe0) == 0xc0 ? 2 : (c & 0xf0) == 0xe0 ? 3 : (c & 0xf8) == 0xf0 ? 4 : 0;
        if (n == 0 || i + n > len || !crm_utf8_valid (start + i, n))
            return -1;
        if (n == 2) {
            unsigned cp = ((c & 0x1fu) << 6) | ((unsigned char) start[i + 1] & 0x3fu);
            cp = s_lower (cp);
            tag[out++] = (char) (0xc0 | (cp >> 6));
            tag[out++] = (char) (0x80 | (cp & 0x3f));
        }
        else
            for (size_t k = 0; k < n; k++)
                tag[out++] = start[i + k];
        i += n;
    }
    tag[out] = '\0';
    return 0;
}

const char *
contacts_calling_code (const char *table, const char *branch, const char *fallback, char found[8])
{
    //  table is "branch=code,branch=code"; entries are short, a scan is cheap
    size_t blen = strlen (branch);
    const char *p = table;
    while (p && *p && blen) {
        const char *eq = strchr (p, '=');
        const char *end = strchr (p, ',');
        if (!end)
            end = p + strlen (p);
        if (eq && eq < end && (size_t) (eq - p) == blen && strncmp (p, branch, blen) == 0 &&
            (size_t) (end - eq - 1) < 8) {
            memcpy (found, eq + 1, (size_t) (end - eq - 1));
            found[end - eq - 1] = '\0';
            return found;
        }
        p = *end ? end + 1 : NULL;
    }
    return fallback;
}
