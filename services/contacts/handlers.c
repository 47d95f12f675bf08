/*  handlers.c - the contacts service's request handlers: check, normalise, call the store. */
#include "contacts.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

//  The page size and where to continue, from a page request: after an id
//  (lists in id order), or at an offset ("o40", orders by rank).
static int
s_page (crm_call_t *call, const Crm__V1__PageRequest *page, char *limit, const char **after,
        char *offset, int by_offset)
{
    unsigned size = page && page->page_size ? page->page_size : CONTACTS_PAGE_DEFAULT;
    if (size > CONTACTS_PAGE_MAX)
        size = CONTACTS_PAGE_MAX;
    snprintf (limit, 16, "%u", size);
    *after = NULL;
    snprintf (offset, 16, "0");
    const char *token = page ? page->page_token : "";
    if (!*token)
        return 0;
    if (crm_uuid_valid (token)) {
        *after = token;
        return 0;
    }
    char *end;
    long at = by_offset && token[0] == 'o' ? strtol (token + 1, &end, 10) : -1;
    if (at >= 0 && at <= 100000 && token[1] && !*end) {
        snprintf (offset, 16, "%ld", at);
        return 0;
    }
    crm_call_reply (call, CRM__V1__STATUS_CODE__STATUS_INVALID_ARGUMENT, NULL,
                    "page_token is not one this service gave");
    return -1;
}

//  Answers INVALID_ARGUMENT unless id is a contact id; names the field.
static int
s_id_ok (crm_call_t *call, const char *field, const char *id)
{
    if (crm_uuid_valid (id))
        return 1;
    crm_call_reply (call, CRM__V1__STATUS_CODE__STATUS_INVALID_ARGUMENT, NULL,
                    "%s \"%.40s\" is not a contact id", field, id);
    return 0;
}

//  Answers INVALID_ARGUMENT unless text fits: required or not, at most max bytes.
static int
s_text_ok (crm_call_t *call, const char *field, const char *text, int required, size_t max)
{
    if (required && !*text) {
        crm_call_reply (call, CRM__V1__STATUS_CODE__STATUS_INVALID_ARGUMENT, NULL, "%s is required",
                        field);
        return 0;
    }
    if (strlen (text) > max) {
        crm_call_reply (call, CRM__V1__STATUS_CODE__STATUS_INVALID_ARGUMENT, NULL,
                        "%s is longer than %zu bytes", field, max);
        return 0;
    }
    return 1;
}

//  The calling code for national numbers given at the request's branch.
static const char *
s_calling_code (contacts_t *self, crm_call_t *call, char found[8])
{
    return contacts_calling_code (self->branch_codes, crm_call_branch (call), self->calling_code,
                                  found);
}

static void
s_create_contact (crm_call_t *call, ProtobufCMessage *message, void *ctx)
{
    contacts_t *self = ctx;
    Crm__V1__CreateContactRequest *request = (Crm__V1__CreateContactRequest *) message;
    Crm__V1__Contact *contact = request->contact;
    char err[256];
    if (!contact) {
        crm_call_reply (call, CRM__V1__STATUS_CODE__STATUS_INVALID_ARGUMENT, NULL,
                        "contact is required");
        return;
    }
    if (*contact->id || contact->version || contact->created_unix_ms || contact->updated_unix_ms) {
        crm_call_reply (call, CRM__V1__STATUS_CODE__STATUS_INVALID_ARGUMENT, NULL,
                        "id, version and times are set by the service, not by the caller");
        return;
    }
    if (!*contact->branch) {
        //  The branch of first contact defaults to the branch making the request
        free (contact->branch == protobuf_c_empty_string ? NULL : contact->branch);
        contact->branch = strdup (crm_call_branch (call));
    }
    if (!*contact->branch) {
        crm_call_reply (call, CRM__V1__STATUS_CODE__STATUS_INVALID_ARGUMENT, NULL,
                        "branch is required (in the contact or the request metadata)");
        return;
    }
    char code[8];
    if (contacts_contact_check (contact, s_calling_code (self, call, code), err, sizeof err) != 0) {
        crm_call_reply (call, CRM__V1__STATUS_CODE__STATUS_INVALID_ARGUMENT, NULL, "%s", err);
        return;
    }
    char id[37];
    crm_uuid (id);
    char *json = crm_json_encode (&contact->base, 0);
    const char *values[] = {
        crm_call_request_id (call),
        crm_call_fingerprint (call),
        id,
        json,
        request->on_duplicate == CRM__V1__DUPLICATE_POLICY__DUPLICATE_POLICY_RETURN_EXISTING
            ? "true"
            : "false",
    };
    crm_call_sql (call, self->pg, 1, "contact_create", 5, values);
    free (json);
}

static void
s_get_contact (crm_call_t *call, ProtobufCMessage *message, void *ctx)
{
    Crm__V1__GetContactRequest *request = (Crm__V1__GetContactRequest *) message;
    if (!s_id_ok (call, "id", request->id))
        return;
    const char *values[] = {request->id};
    crm_call_sql (call, ((contacts_t *) ctx)->pg, 0, "contact_get", 1, values);
}

static void
s_update_contact (crm_call_t *call, ProtobufCMessage *message, void *ctx)
{
    contacts_t *self = ctx;
    Crm__V1__UpdateContactRequest *request = (Crm__V1__UpdateContactRequest *) message;
    Crm__V1__Contact *contact = request->contact;
    char err[256];
    if (!contact || !crm_uuid_valid (contact->id) || contact->version < 1) {
        crm_call_reply (call, CRM__V1__STATUS_CODE__STATUS_INVALID_ARGUMENT, NULL,
                        "contact with its id and the version it was read at is required");
        return;
    }
    char code[8];
    if (contacts_contact_check (contact, s_calling_code (self, call, code), err, sizeof err) != 0) {
        crm_call_reply (call, CRM__V1__STATUS_CODE__STATUS_INVALID_ARGUMENT, NULL, "%s", err);
        return;
    }
    char *json = crm_json_encode (&contact->base, 0);
    const char *values[] = {crm_call_request_id (call), crm_call_fingerprint (call), json};
    crm_call_sql (call, self->pg, 1, "contact_update", 3, values);
    free (json);
}

static void
s_find_contacts (crm_call_t *call, ProtobufCMessage *message, void *ctx)
{
    contacts_t *self = ctx;
    Crm__V1__FindContactsRequest *request = (Crm__V1__FindContactsRequest *) message;
    int given = (*request->phone != 0) + (*request->email != 0) + (*request->name != 0) +
                (*request->fuzzy_name != 0) + (*request->tag != 0) +
                (request->birthday_within_days != 0);
    if (given != 1) {
        crm_call_reply (call, CRM__V1__STATUS_CODE__STATUS_INVALID_ARGUMENT, NULL,
                        "give exactly one of phone, email, name, fuzzy_name, tag and "
                        "birthday_within_days");
        return;
    }
    char e164[20], days[16], code[8];
    const char *phone = NULL, *email = NULL, *name = NULL, *fuzzy = NULL, *tag = NULL,
               *within = NULL;
    if (*request->phone) {
        if (contacts_phone_normalize (request->phone, s_calling_code (self, call, code), e164,
                                      sizeof e164) != 0) {
            crm_call_reply (call, CRM__V1__STATUS_CODE__STATUS_INVALID_ARGUMENT, NULL,
                            "\"%.40s\" is not a phone number", request->phone);
            return;
        }
        phone = e164;
    }
    else if (*request->email) {
        if (!contacts_email_valid (request->email)) {
            crm_call_reply (call, CRM__V1__STATUS_CODE__STATUS_INVALID_ARGUMENT, NULL,
                            "\"%.60s\" is not an email address", request->email);
            return;
        }
        email = request->email;
    }
    else if (*request->name) {
        if (!s_text_ok (call, "name", request->name, 1, CONTACTS_MAX_TEXT))
            return;
        name = request->name;
    }
    else if (*request->fuzzy_name) {
        if (!s_text_ok (call, "fuzzy_name", request->fuzzy_name, 1, CONTACTS_MAX_TEXT))
            return;
        fuzzy = request->fuzzy_name;
    }
    else if (*request->tag) {
        if (contacts_tag_normalize (request->tag) != 0) {
            crm_call_reply (call, CRM__V1__STATUS_CODE__STATUS_INVALID_ARGUMENT, NULL,
                            "tag is 1 to %d letters, digits, - or _", CONTACTS_MAX_TAG);
            return;
        }
        tag = request->tag;
    }
    else {
        if (request->birthday_within_days > 366) {
            crm_call_reply (call, CRM__V1__STATUS_CODE__STATUS_INVALID_ARGUMENT, NULL,
                            "birthday_within_days is 1 to 366");
            return;
        }
        snprintf (days, sizeof days, "%u", request->birthday_within_days);
        within = days;
    }
    if (!s_text_ok (call, "branch", request->branch, 0, CONTACTS_MAX_TEXT))
        return;
    char limit[16], offset[16];
    const char *after;
    if (s_page (call, request->page, limit, &after, offset, fuzzy || within) != 0)
        return;
    const char *values[] = {
        phone, email, name,  fuzzy, tag, within, *request->branch ? request->branch : NULL,
        limit, after, offset};
    crm_call_sql (call, self->pg, 0, "contact_find", 10, values);
}

static void
s_list_contacts (crm_call_t *call, ProtobufCMessage *message, void *ctx)
{
    Crm__V1__ListContactsRequest *request = (Crm__V1__ListContactsRequest *) message;
    const char *branch = *request->branch ? request->branch : crm_call_branch (call);
    if (!*branch || strlen (branch) > CONTACTS_MAX_TEXT) {
        crm_call_reply (call, CRM__V1__STATUS_CODE__STATUS_INVALID_ARGUMENT, NULL,
                        "branch is required (in the request or its metadata)");
        return;
    }
    char limit[16], offset[16];
    const char *after;
    if (s_page (call, request->page, limit, &after, offset, 0) != 0)
        return;
    const char *values[] = {branch, limit, after};
    crm_call_sql (call, ((contacts_t *) ctx)->pg, 0, "contact_list", 3, values);
}

static void
s_find_duplicates (crm_call_t *call, ProtobufCMessage *message, void *ctx)
{
    Crm__V1__FindDuplicatesRequest *request = (Crm__V1__FindDuplicatesRequest *) message;
    if (!s_id_ok (call, "contact_id", request->contact_id))
        return;
    char limit[16];
    snprintf (limit, sizeof limit, "%u",
              request->limit == 0   ? 10
              : request->limit > 50 ? 50
                                    : request->limit);
    const char *values[] = {request->contact_id, limit};
    crm_call_sql (call, ((contacts_t *) ctx)->pg, 0, "contact_duplicates", 2, values);
}

static void
s_merge_contacts (crm_call_t *call, ProtobufCMessage *message, void *ctx)
{
    Crm__V1__MergeContactsRequest *request = (Crm__V1__MergeContactsRequest *) message;
    if (!s_id_ok (call, "survivor_id", request->survivor_id) ||
        !s_id_ok (call, "merged_id", request->merged_id) ||
        !s_text_ok (call, "actor", request->actor, 1, CONTACTS_MAX_TEXT) ||
        !s_text_ok (call, "reason", request->reason, 0, CONTACTS_MAX_NOTE))
        return;
    const char *values[] = {crm_call_request_id (call),
                            crm_call_fingerprint (call),
                            request->survivor_id,
                            request->merged_id,
                            request->actor,
                            request->reason,
                            crm_call_branch (call)};
    crm_call_sql (call, ((contacts_t *) ctx)->pg, 1, "contact_merge", 7, values);
}

static void
s_add_note (crm_call_t *call, ProtobufCMessage *message, void *ctx)
{
    Crm__V1__AddNoteRequest *request = (Crm__V1__AddNoteRequest *) message;
    if (!s_id_ok (call, "contact_id", request->contact_id) ||
        !s_text_ok (call, "text", request->text, 1, CONTACTS_MAX_NOTE) ||
        !s_text_ok (call, "author", request->author, 1, CONTACTS_MAX_TEXT))
        return;
    char note_id[37];
    crm_uuid (note_id);
    const char *values[] = {crm_call_request_id (call),
                            crm_call_fingerprint (call),
                            note_id,
                            request->contact_id,
                            request->text,
                            request->author,
                            crm_call_branch (call)};
    crm_call_sql (call, ((contacts_t *) ctx)->pg, 1, "contact_note_add", 7, values);
}

static void
s_list_notes (crm_call_t *call, ProtobufCMessage *message, void *ctx)
{
    Crm__V1__ListNotesRequest *request = (Crm__V1__ListNotesRequest *) message;
    if (!s_id_ok (call, "contact_id", request->contact_id))
        return;
    char limit[16], offset[16];
    const char *after;
    if (s_page (call, request->page, limit, &after, offset, 0) != 0)
        return;
    //  Notes run to 10 kB each: a page of them stays well inside one message
    if (atoi (limit) > CONTACTS_NOTES_PAGE_MAX)
        snprintf (limit, sizeof limit, "%d", CONTACTS_NOTES_PAGE_MAX);
    const char *values[] = {request->contact_id, limit, after};
    crm_call_sql (call, ((contacts_t *) ctx)->pg, 0, "contact_notes", 3, values);
}

//  Answers INVALID_ARGUMENT unless channel is one of crm.v1.Channel but UNSPECIFIED.
static int
s_channel_ok (crm_call_t *call, int channel)
{
    if (channel >= CRM__V1__CHANNEL__CHANNEL_EMAIL && channel <= CRM__V1__CHANNEL__CHANNEL_PHONE)
        return 1;
    crm_call_reply (call, CRM__V1__STATUS_CODE__STATUS_INVALID_ARGUMENT, NULL,
                    "channel must be EMAIL, SMS, POST or PHONE");
    return 0;
}

static void
s_set_consent (crm_call_t *call, ProtobufCMessage *message, void *ctx)
{
    Crm__V1__SetConsentRequest *request = (Crm__V1__SetConsentRequest *) message;
    if (!s_id_ok (call, "contact_id", request->contact_id) ||
        !s_channel_ok (call, request->channel) ||
        !s_text_ok (call, "wording_version", request->wording_version, 0, CONTACTS_MAX_TAG) ||
        !s_text_ok (call, "recorded_by", request->recorded_by, 1, CONTACTS_MAX_TEXT) ||
        !s_text_ok (call, "reason", request->reason, 0, CONTACTS_MAX_NOTE))
        return;
    if (request->source < CRM__V1__CONSENT_SOURCE__CONSENT_SOURCE_BRANCH ||
        request->source > CRM__V1__CONSENT_SOURCE__CONSENT_SOURCE_IMPORT) {
        crm_call_reply (call, CRM__V1__STATUS_CODE__STATUS_INVALID_ARGUMENT, NULL,
                        "source must be BRANCH, WEB, STAFF or IMPORT");
        return;
    }
    char channel[8], source[8];
    snprintf (channel, sizeof channel, "%d", request->channel);
    snprintf (source, sizeof source, "%d", request->source);
    const char *values[] = {crm_call_request_id (call),
                            crm_call_fingerprint (call),
                            request->contact_id,
                            channel,
                            request->granted ? "true" : "false",
                            source,
                            request->wording_version,
                            request->recorded_by,
                            request->reason,
                            crm_call_branch (call)};
    crm_call_sql (call, ((contacts_t *) ctx)->pg, 1, "contact_consent_set", 10, values);
}

static void
s_check_consent (crm_call_t *call, ProtobufCMessage *message, void *ctx)
{
    Crm__V1__CheckConsentRequest *request = (Crm__V1__CheckConsentRequest *) message;
    if (!s_id_ok (call, "contact_id", request->contact_id) ||
        !s_channel_ok (call, request->channel))
        return;
    char channel[8];
    snprintf (channel, sizeof channel, "%d", request->channel);
    const char *values[] = {request->contact_id, channel};
    crm_call_sql (call, ((contacts_t *) ctx)->pg, 0, "contact_consent_check", 2, values);
}

static void
s_list_audit (crm_call_t *call, ProtobufCMessage *message, void *ctx)
{
    Crm__V1__ListAuditRequest *request = (Crm__V1__ListAuditRequest *) message;
    if (!s_id_ok (call, "contact_id", request->contact_id))
        return;
    unsigned size = request->page && request->page->page_size ? request->page->page_size
                                                              : CONTACTS_PAGE_DEFAULT;
    char limit[16];
    snprintf (limit, sizeof limit, "%u", size > CONTACTS_PAGE_MAX ? CONTACTS_PAGE_MAX : size);
    const char *token = request->page ? request->page->page_token : "";
    if (*token && strspn (token, "0123456789") != strlen (token)) {
        crm_call_reply (call, CRM__V1__STATUS_CODE__STATUS_INVALID_ARGUMENT, NULL,
                        "page_token is not one this service gave");
        return;
    }
    const char *values[] = {request->contact_id, limit, *token ? token : NULL};
    crm_call_sql (call, ((contacts_t *) ctx)->pg, 0, "contact_audit_list", 3, values);
}

//  An audited privacy action on one contact (export, erasure): who did it is
//  required, and why, when reason_required.
static void
s_audited (crm_call_t *call, void *ctx, const char *statement, const char *contact_id,
           const char *actor, const char *reason, int reason_required)
{
    if (!s_id_ok (call, "contact_id", contact_id) ||
        !s_text_ok (call, "actor", actor, 1, CONTACTS_MAX_TEXT) ||
        !s_text_ok (call, "reason", reason, reason_required, CONTACTS_MAX_NOTE))
        return;
    const char *values[] = {
        crm_call_request_id (call), crm_call_fingerprint (call), contact_id, actor, reason,
        crm_call_branch (call)};
    crm_call_sql (call, ((contacts_t *) ctx)->pg, 1, statement, 6, values);
}

static void
s_export_contact (crm_call_t *call, ProtobufCMessage *message, void *ctx)
{
    Crm__V1__ExportContactRequest *request = (Crm__V1__ExportContactRequest *) message;
    s_audited (call, ctx, "contact_export", request->contact_id, request->actor, request->reason,
               0);
}

static void
s_erase_contact (crm_call_t *call, ProtobufCMessage *message, void *ctx)
{
    Crm__V1__EraseContactRequest *request = (Crm__V1__EraseContactRequest *) message;
    s_audited (call, ctx, "contact_erase", request->contact_id, request->actor, request->reason, 1);
}

static void
s_get_events (crm_call_t *call, ProtobufCMessage *message, void *ctx)
{
    contacts_t *self = ctx;
    crm_events_handle_get (self->events, call, (Crm__V1__GetEventsRequest *) message);
}

const crm_method_t contacts_methods[] = {
    {"CreateContact", s_create_contact}, {"GetContact", s_get_contact},
    {"UpdateContact", s_update_contact}, {"FindContacts", s_find_contacts},
    {"ListContacts", s_list_contacts},   {"FindDuplicates", s_find_duplicates},
    {"MergeContacts", s_merge_contacts}, {"AddNote", s_add_note},
    {"ListNotes", s_list_notes},         {"SetConsent", s_set_consent},
    {"CheckConsent", s_check_consent},   {"ListAudit", s_list_audit},
    {"ExportContact", s_export_contact}, {"EraseContact", s_erase_contact},
    {"GetEvents", s_get_events},         {NULL, NULL},
};
