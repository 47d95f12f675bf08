/*  test_json.c - the protobuf <-> JSON converter: every field kind, round trips and errors. */
#include "crm_json.h"
#include "crm/v1/common.pb-c.h"
#include "crm/v1/contacts.pb-c.h"
#include "crm_test.h"

#include <assert.h>
#include <math.h>
#include <stddef.h>
#include <stdint.h>

//  --------------------------------------------------------------------------
//  A message with every field kind the suite's .proto files lack (bytes,
//  doubles, repeated scalars, maps, oneofs, proto2-style optional), described
//  by hand the way protoc-c would describe it.

typedef struct test_kitchen test_kitchen_t;

typedef struct {
    ProtobufCMessage base;
    char *key;
    int64_t value;
} test_labels_entry_t;

typedef struct {
    ProtobufCMessage base;
    int32_t key;
    test_kitchen_t *value;
} test_nodes_entry_t;

struct test_kitchen {
    ProtobufCMessage base;
    int32_t i32;
    int64_t i64;
    uint32_t u32;
    uint64_t u64;
    int32_t s32;
    int64_t s64;
    uint32_t fx32;
    uint64_t fx64;
    int32_t sfx32;
    int64_t sfx64;
    float f;
    double d;
    protobuf_c_boolean b;
    char *text_value;
    ProtobufCBinaryData blob;
    int32_t color;
    size_t n_ri;
    int32_t *ri;
    size_t n_rs;
    char **rs;
    size_t n_rd;
    double *rd;
    size_t n_rb;
    ProtobufCBinaryData *rb;
    size_t n_rcolor;
    int32_t *rcolor;
    size_t n_ru64;
    uint64_t *ru64;
    size_t n_labels;
    test_labels_entry_t **labels;
    size_t n_nodes_by_id;
    test_nodes_entry_t **nodes_by_id;
    test_kitchen_t *child;
    size_t n_children;
    test_kitchen_t **children;
    uint32_t choice_case;
    union {
        char *one_text;
        int32_t one_int;
        ProtobufCBinaryData one_blob;
        test_kitchen_t *one_child;
    };
    protobuf_c_boolean has_opt_int;
    int32_t opt_int;
    char *opt_text;
};

enum { COLOR_UNSPECIFIED = 0, COLOR_RED = 1, COLOR_BLUE = 5 };

static const ProtobufCEnumValue s_color_values[] = {
    {"COLOR_UNSPECIFIED", "COLOR_UNSPECIFIED", 0},
    {"COLOR_RED", "COLOR_RED", 1},
    {"COLOR_BLUE", "COLOR_BLUE", 5},
};
static const ProtobufCEnumValueIndex s_color_by_name[] = {
    {"COLOR_BLUE", 2},
    {"COLOR_RED", 1},
    {"COLOR_UNSPECIFIED", 0},
};
static const ProtobufCIntRange s_color_ranges[] = {{0, 0}, {5, 2}, {0, 3}};
static const ProtobufCEnumDescriptor s_color_desc = {
    PROTOBUF_C__ENUM_DESCRIPTOR_MAGIC,
    "test.Color",
    "Color",
    "Color",
    "test",
    3,
    s_color_values,
    3,
    s_color_by_name,
    2,
    s_color_ranges,
    NULL,
    NULL,
    NULL,
    NULL,
};

static const ProtobufCMessageDescriptor s_kitchen_desc;
static const ProtobufCMessageDescriptor s_labels_entry_desc;
static const ProtobufCMessageDescriptor s_nodes_entry_desc;

#define FIELD(type_, name_, tag_, label_, ptype_, q_, desc_, def_, flags_)                         \
    {                                                                                              \
        .name = #name_, .id = tag_, .label = PROTOBUF_C_LABEL_##label_,                            \
        .type = PROTOBUF_C_TYPE_##ptype_, .quantifier_offset = q_,                                 \
        .offset = offsetof (type_, name_), .descriptor = desc_, .default_value = def_,             \
        .flags = flags_                                                                            \
    }
#define K_PLAIN(name_, tag_, ptype_)                                                               \
    FIELD (test_kitchen_t, name_, tag_, NONE, ptype_, 0, NULL, NULL, 0)
#define K_REP(name_, tag_, ptype_, desc_)                                                          \
    FIELD (test_kitchen_t, name_, tag_, REPEATED, ptype_, offsetof (test_kitchen_t, n_##name_),    \
           desc_, NULL, 0)
#define K_ONEOF(name_, tag_, ptype_, desc_, def_)                                                  \
    FIELD (test_kitchen_t, name_, tag_, NONE, ptype_, offsetof (test_kitchen_t, choice_case),      \
           desc_, def_, PROTOBUF_C_FIELD_FLAG_ONEOF)

static const ProtobufCFieldDescriptor s_kitchen_fields[] = {
    K_PLAIN (i32, 1, INT32),
    K_PLAIN (i64, 2, INT64),
    K_PLAIN (u32, 3, UINT32),
    K_PLAIN (u64, 4, UINT64),
    K_PLAIN (s32, 5, SINT32),
    K_PLAIN (s64, 6, SINT64),
    K_PLAIN (fx32, 7, FIXED32),
    K_PLAIN (fx64, 8, FIXED64),
    K_PLAIN (sfx32, 9, SFIXED32),
    K_PLAIN (sfx64, 10, SFIXED64),
    K_PLAIN (f, 11, FLOAT),
    K_PLAIN (d, 12, DOUBLE),
    K_PLAIN (b, 13, BOOL),
    FIELD (test_kitchen_t, text_value, 14, NONE, STRING, 0, NULL, &protobuf_c_empty_string, 0),
    K_PLAIN (blob, 15, BYTES),
    FIELD (test_kitchen_t, color, 16, NONE, ENUM, 0, &s_color_desc, NULL, 0),
    FIELD (test_kitchen_t, ri, 17, REPEATED, INT32, offsetof (test_kitchen_t, n_ri), NULL, NULL,
           PROTOBUF_C_FIELD_FLAG_PACKED),
    K_REP (rs, 18, STRING, NULL),
    K_REP (rd, 19, DOUBLE, NULL),
    K_REP (rb, 20, BYTES, NULL),
    K_REP (rcolor, 21, ENUM, &s_color_desc),
    K_REP (ru64, 22, UINT64, NULL),
    K_REP (labels, 23, MESSAGE, &s_labels_entry_desc),
    K_REP (nodes_by_id, 24, MESSAGE, &s_nodes_entry_desc),
    FIELD (test_kitchen_t, child, 25, NONE, MESSAGE, 0, &s_kitchen_desc, NULL, 0),
    K_REP (children, 26, MESSAGE, &s_kitchen_desc),
    K_ONEOF (one_text, 27, STRING, NULL, &protobuf_c_empty_string),
    K_ONEOF (one_int, 28, INT32, NULL, NULL),
    K_ONEOF (one_blob, 29, BYTES, NULL, NULL),
    K_ONEOF (one_child, 30, MESSAGE, &s_kitchen_desc, NULL),
    FIELD (test_kitchen_t, opt_int, 31, OPTIONAL, INT32, offsetof (test_kitchen_t, has_opt_int),
           NULL, NULL, 0),
    FIELD (test_kitchen_t, opt_text, 32, OPTIONAL, STRING, 0, NULL, NULL, 0),
};
#define KITCHEN_FIELDS (sizeof s_kitchen_fields / sizeof s_kitchen_fields[0])

static const ProtobufCFieldDescriptor s_labels_entry_fields[] = {
    FIELD (test_labels_entry_t, key, 1, NONE, STRING, 0, NULL, &protobuf_c_empty_string, 0),
    FIELD (test_labels_entry_t, value, 2, NONE, INT64, 0, NULL, NULL, 0),
};
static const ProtobufCFieldDescriptor s_nodes_entry_fields[] = {
    FIELD (test_nodes_entry_t, key, 1, NONE, INT32, 0, NULL, NULL, 0),
    FIELD (test_nodes_entry_t, value, 2, NONE, MESSAGE, 0, &s_kitchen_desc, NULL, 0),
};

//  Filled at start-up by sorting: protobuf-c wants field indices by name
static unsigned s_kitchen_by_name[KITCHEN_FIELDS];
static const unsigned s_entry_by_name[] = {0, 1};
static const ProtobufCIntRange s_kitchen_ranges[] = {{1, 0}, {0, KITCHEN_FIELDS}};
static const ProtobufCIntRange s_entry_ranges[] = {{1, 0}, {0, 2}};

static void
s_kitchen_init (ProtobufCMessage *msg)
{
    ProtobufCMessage base = PROTOBUF_C_MESSAGE_INIT (&s_kitchen_desc);
    test_kitchen_t *self = (test_kitchen_t *) msg;
    memset (self, 0, sizeof *self);
    self->base = base;
    self->text_value = (char *) (uintptr_t) protobuf_c_empty_string;
}

static void
s_labels_entry_init (ProtobufCMessage *msg)
{
    ProtobufCMessage base = PROTOBUF_C_MESSAGE_INIT (&s_labels_entry_desc);
    test_labels_entry_t *self = (test_labels_entry_t *) msg;
    memset (self, 0, sizeof *self);
    self->base = base;
    self->key = (char *) (uintptr_t) protobuf_c_empty_string;
}

static void
s_nodes_entry_init (ProtobufCMessage *msg)
{
    ProtobufCMessage base = PROTOBUF_C_MESSAGE_INIT (&s_nodes_entry_desc);
    test_nodes_entry_t *self = (test_nodes_entry_t *) msg;
    memset (self, 0, sizeof *self);
    self->base = base;
}

static const ProtobufCMessageDescriptor s_kitchen_desc = {
    PROTOBUF_C__MESSAGE_DESCRIPTOR_MAGIC,
    "test.Kitchen",
    "Kitchen",
    "Kitchen",
    "test",
    sizeof (test_kitchen_t),
    KITCHEN_FIELDS,
    s_kitchen_fields,
    s_kitchen_by_name,
    1,
    s_kitchen_ranges,
    s_kitchen_init,
    NULL,
    NULL,
    NULL,
};
static const ProtobufCMessageDescriptor s_labels_entry_desc = {
    PROTOBUF_C__MESSAGE_DESCRIPTOR_MAGIC,
    "test.Kitchen.LabelsEntry",
    "LabelsEntry",
    "LabelsEntry",
    "test",
    sizeof (test_labels_entry_t),
    2,
    s_labels_entry_fields,
    s_entry_by_name,
    1,
    s_entry_ranges,
    s_labels_entry_init,
    NULL,
    NULL,
    NULL,
};
static const ProtobufCMessageDescriptor s_nodes_entry_desc = {
    PROTOBUF_C__MESSAGE_DESCRIPTOR_MAGIC,
    "test.Kitchen.NodesByIdEntry",
    "NodesByIdEntry",
    "NodesByIdEntry",
    "test",
    sizeof (test_nodes_entry_t),
    2,
    s_nodes_entry_fields,
    s_entry_by_name,
    1,
    s_entry_ranges,
    s_nodes_entry_init,
    NULL,
    NULL,
    NULL,
};

static int
s_by_name_cmp (const void *a, const void *b)
{
    return strcmp (s_kitchen_fields[*(const unsigned *) a].name,
                   s_kitchen_fields[*(const unsigned *) b].name);
}

static void
s_kitchen_setup (void)
{
    for (unsigned i = 0; i < KITCHEN_FIELDS; i++)
        s_kitchen_by_name[i] = i;
    qsort (s_kitchen_by_name, KITCHEN_FIELDS, sizeof (unsigned), s_by_name_cmp);
}

//  --------------------------------------------------------------------------
//  Helpers

static char s_err[512];

//  Decodes text as desc; NULL (with s_err set) on failure.
static ProtobufCMessage *
s_decode (const ProtobufCMessageDescriptor *desc, const char *text)
{
    s_err[0] = '\0';
    return crm_json_decode (desc, text, strlen (text), s_err, sizeof s_err);
}

//  True when decoding fails with exactly this reason.
static int
s_fails_with (const ProtobufCMessageDescriptor *desc, const char *text, const char *reason)
{
    ProtobufCMessage *msg = s_decode (desc, text);
    if (msg) {
        fprintf (stderr, "    decoded although it should not: %s\n", text);
        protobuf_c_message_free_unpacked (msg, NULL);
        return 0;
    }
    if (reason && strcmp (s_err, reason) != 0) {
        fprintf (stderr, "    error \"%s\", wanted \"%s\"\n", s_err, reason);
        return 0;
    }
    return s_err[0] != '\0';
}

//  Packed bytes of a message; caller frees.
static uint8_t *
s_pack (const ProtobufCMessage *msg, size_t *len)
{
    *len = protobuf_c_message_get_packed_size (msg);
    uint8_t *buf = malloc (*len ? *len : 1);
    assert (buf);
    size_t n = protobuf_c_message_pack (msg, buf);
    assert (n == *len);
    (void) n;
    return buf;
}

static int
s_same_wire (const ProtobufCMessage *a, const ProtobufCMessage *b)
{
    size_t alen, blen;
    uint8_t *abuf = s_pack (a, &alen);
    uint8_t *bbuf = s_pack (b, &blen);
    int same = alen == blen && memcmp (abuf, bbuf, alen) == 0;
    free (abuf);
    free (bbuf);
    return same;
}

//  pack (m) == pack (json_to_message (from_message (m))), through text and
//  through json_t both; also through the binary form and back.
static int
s_round_trips (const ProtobufCMessage *msg)
{
    int ok = 1;
    char *text = crm_json_encode (msg, 0);
    if (!text)
        return 0;
    ProtobufCMessage *back = s_decode (msg->descriptor, text);
    if (!back || !s_same_wire (msg, back)) {
        fprintf (stderr, "    text round trip failed (%s): %s\n", s_err, text);
        ok = 0;
    }
    protobuf_c_message_free_unpacked (back, NULL);

    char *pretty = crm_json_encode (msg, 1);
    back = pretty ? s_decode (msg->descriptor, pretty) : NULL;
    if (!back || !s_same_wire (msg, back))
        ok = 0;
    protobuf_c_message_free_unpacked (back, NULL);
    free (pretty);

    json_t *json = crm_json_from_message (msg);
    back = crm_json_to_message (msg->descriptor, json, s_err, sizeof s_err);
    if (!back || !s_same_wire (msg, back))
        ok = 0;
    protobuf_c_message_free_unpacked (back, NULL);
    json_decref (json);

    size_t len;
    uint8_t *buf = s_pack (msg, &len);
    ProtobufCMessage *unpacked = protobuf_c_message_unpack (msg->descriptor, NULL, len, buf);
    char *text2 = unpacked ? crm_json_encode (unpacked, 0) : NULL;
    if (!text2 || strcmp (text, text2) != 0) {
        fprintf (stderr, "    unpacked copy encodes differently: %s\n", text2 ? text2 : "(null)");
        ok = 0;
    }
    free (text2);
    protobuf_c_message_free_unpacked (unpacked, NULL);
    free (buf);
    free (text);
    return ok;
}

//  Encodes a message decoded from text; caller frees. For checking how input
//  is read and written back.
static char *
s_reencode (const ProtobufCMessageDescriptor *desc, const char *text)
{
    ProtobufCMessage *msg = s_decode (desc, text);
    if (!msg) {
        fprintf (stderr, "    could not decode %s: %s\n", text, s_err);
        return NULL;
    }
    char *out = crm_json_encode (msg, 0);
    protobuf_c_message_free_unpacked (msg, NULL);
    return out;
}

#define CHECK_REENCODE(desc, in, want)                                                             \
    do {                                                                                           \
        char *got_ = s_reencode ((desc), (in));                                                    \
        CHECK_STR (got_, (want));                                                                  \
        free (got_);                                                                               \
    } while (0)

#define KITCHEN (&s_kitchen_desc)
#define CONTACT (&crm__v1__contact__descriptor)

//  --------------------------------------------------------------------------
//  Contacts: the real messages

static const char s_contact_json[] =
    "{\"id\":\"c-1\",\"branch\":\"riga\",\"givenName\":\"Anna\",\"familyName\":\"Ivanova\","
    "\"preferredAddress\":\"Anna Petrovna\",\"firstNameAllowed\":true,"
    "\"phones\":[{\"number\":\"+4917612345678\",\"label\":\"mobile\",\"primary\":true},"
    "{\"number\":\"+37120000000\"}],"
    "\"emails\":[{\"address\":\"anna@example.com\",\"label\":\"work\"}],"
    "\"birthday\":{\"year\":1990,\"month\":4,\"day\":1},"
    "\"createdUnixMs\":\"1700000000123\",\"updatedUnixMs\":\"1700000000456\",\"version\":\"3\"}";

//  Builds the contact above in C; strings are borrowed literals, so it is
//  never freed through protobuf-c.
typedef struct {
    Crm__V1__Contact contact;
    Crm__V1__Phone phone1, phone2;
    Crm__V1__Phone *phones[2];
    Crm__V1__Email email;
    Crm__V1__Email *emails[1];
    Crm__V1__Date birthday;
} test_contact_t;

static void
s_contact_build (test_contact_t *t)
{
    Crm__V1__Contact contact = CRM__V1__CONTACT__INIT;
    Crm__V1__Phone phone = CRM__V1__PHONE__INIT;
    Crm__V1__Email email = CRM__V1__EMAIL__INIT;
    Crm__V1__Date date = CRM__V1__DATE__INIT;
    t->contact = contact;
    t->phone1 = phone;
    t->phone2 = phone;
    t->email = email;
    t->birthday = date;

    t->phone1.number = "+4917612345678";
    t->phone1.label = "mobile";
    t->phone1.primary = 1;
    t->phone2.number = "+37120000000";
    t->phones[0] = &t->phone1;
    t->phones[1] = &t->phone2;
    t->email.address = "anna@example.com";
    t->email.label = "work";
    t->emails[0] = &t->email;
    t->birthday.year = 1990;
    t->birthday.month = 4;
    t->birthday.day = 1;

    t->contact.id = "c-1";
    t->contact.branch = "riga";
    t->contact.given_name = "Anna";
    t->contact.family_name = "Ivanova";
    t->contact.preferred_address = "Anna Petrovna";
    t->contact.first_name_allowed = 1;
    t->contact.n_phones = 2;
    t->contact.phones = t->phones;
    t->contact.n_emails = 1;
    t->contact.emails = t->emails;
    t->contact.birthday = &t->birthday;
    t->contact.created_unix_ms = 1700000000123;
    t->contact.updated_unix_ms = 1700000000456;
    t->contact.version = 3;
}

static void
test_contact_encode (void)
{
    test_contact_t t;
    s_contact_build (&t);
    char *text = crm_json_encode (&t.contact.base, 0);
    CHECK_STR (text, s_contact_json);
    free (text);

    char *pretty = crm_json_encode (&t.birthday.base, 1);
    CHECK_STR (pretty, "{\n  \"year\": 1990,\n  \"month\": 4,\n  \"day\": 1\n}");
    free (pretty);

    json_t *json = crm_json_from_message (&t.contact.base);
    CHECK (json_is_object (json));
    CHECK_STR (json_string_value (json_object_get (json, "givenName")), "Anna");
    CHECK (json_object_get (json, "given_name") == NULL);
    CHECK (json_object_get (json, "middleName") == NULL);
    json_decref (json);
}

static void
test_contact_round_trip (void)
{
    test_contact_t t;
    s_contact_build (&t);
    CHECK (s_round_trips (&t.contact.base));

    Crm__V1__Contact *c = (Crm__V1__Contact *) s_decode (CONTACT, s_contact_json);
    CHECK (c != NULL);
    if (c) {
        CHECK (s_same_wire (&t.contact.base, &c->base));
        CHECK_STR (c->given_name, "Anna");
        CHECK_STR (c->middle_name, "");
        CHECK_INT (c->n_phones, 2);
        CHECK_STR (c->phones[1]->number, "+37120000000");
        CHECK_STR (c->phones[1]->label, "");
        CHECK_INT (c->birthday->year, 1990);
        CHECK_INT (c->created_unix_ms, 1700000000123LL);
        protobuf_c_message_free_unpacked (&c->base, NULL);
    }

    //  Wrapped in a request, with an enum
    Crm__V1__CreateContactRequest req = CRM__V1__CREATE_CONTACT_REQUEST__INIT;
    req.contact = &t.contact;
    req.on_duplicate = CRM__V1__DUPLICATE_POLICY__DUPLICATE_POLICY_RETURN_EXISTING;
    CHECK (s_round_trips (&req.base));

    //  A list of many contacts: large input is no problem
    Crm__V1__ListContactsResponse list = CRM__V1__LIST_CONTACTS_RESPONSE__INIT;
    enum { MANY = 2000 };
    Crm__V1__Contact **many = calloc (MANY, sizeof *many);
    assert (many);
    for (size_t i = 0; i < MANY; i++)
        many[i] = &t.contact;
    list.n_contacts = MANY;
    list.contacts = many;
    CHECK (s_round_trips (&list.base));
    free (many);
}

static void
test_contact_defaults (void)
{
    Crm__V1__Contact empty = CRM__V1__CONTACT__INIT;
    char *text = crm_json_encode (&empty.base, 0);
    CHECK_STR (text, "{}");
    free (text);
    CHECK (s_round_trips (&empty.base));

    //  Present but empty submessage and repeated of empty elements stay
    Crm__V1__Date date = CRM__V1__DATE__INIT;
    Crm__V1__Phone phone = CRM__V1__PHONE__INIT;
    Crm__V1__Phone *phones[] = {&phone};
    empty.birthday = &date;
    empty.n_phones = 1;
    empty.phones = phones;
    text = crm_json_encode (&empty.base, 0);
    CHECK_STR (text, "{\"phones\":[{}],\"birthday\":{}}");
    free (text);
    CHECK (s_round_trips (&empty.base));

    //  null means the default, for every kind of field
    CHECK_REENCODE (CONTACT,
                    "{\"id\":null,\"phones\":null,\"birthday\":null,\"version\":null,"
                    "\"firstNameAllowed\":null}",
                    "{}");
    CHECK_REENCODE (CONTACT, "{\"phones\":[],\"id\":\"\",\"version\":0,\"birthday\":{}}",
                    "{\"birthday\":{}}");
}

static void
test_contact_names (void)
{
    //  Both the .proto name and the lowerCamelCase one are understood
    CHECK_REENCODE (CONTACT, "{\"given_name\":\"A\",\"familyName\":\"B\",\"created_unix_ms\":5}",
                    "{\"givenName\":\"A\",\"familyName\":\"B\",\"createdUnixMs\":\"5\"}");
    CHECK (s_fails_with (CONTACT, "{\"given_name\":\"A\",\"givenName\":\"B\"}",
                         "field \"givenName\": field given more than once"));
    CHECK (s_fails_with (CONTACT, "{\"GivenName\":\"A\"}", "unknown field \"GivenName\""));
    CHECK (s_fails_with (CONTACT, "{\"givenname\":\"A\"}", "unknown field \"givenname\""));
    CHECK (s_fails_with (&crm__v1__create_contact_request__descriptor,
                         "{\"contact\":{\"phones\":[{\"number\":\"1\",\"extension\":\"2\"}]}}",
                         "unknown field \"contact.phones[0].extension\""));
    CHECK (s_fails_with (CONTACT, "{\"id\":\"a\",\"id\":\"b\"}", NULL));
}

static void
test_contact_errors (void)
{
    const ProtobufCMessageDescriptor *req = &crm__v1__create_contact_request__descriptor;
    CHECK (s_fails_with (req, "{\"contact\":{\"phones\":[{\"number\":\"1\"},{\"number\":5}]}}",
                         "field \"contact.phones[1].number\": expected string"));
    CHECK (s_fails_with (req, "{\"contact\":{\"phones\":{}}}",
                         "field \"contact.phones\": expected array"));
    CHECK (s_fails_with (req, "{\"contact\":{\"phones\":[null]}}",
                         "field \"contact.phones[0]\": expected object"));
    CHECK (s_fails_with (req, "{\"contact\":[]}", "field \"contact\": expected object"));
    CHECK (s_fails_with (req, "{\"contact\":{\"firstNameAllowed\":1}}",
                         "field \"contact.firstNameAllowed\": expected boolean"));
    CHECK (s_fails_with (req, "{\"contact\":{\"firstNameAllowed\":\"true\"}}", NULL));
    CHECK (s_fails_with (req, "{\"contact\":{\"version\":true}}",
                         "field \"contact.version\": expected integer"));
    CHECK (s_fails_with (req, "{\"contact\":{\"version\":\"12a\"}}", NULL));
    CHECK (s_fails_with (req, "{\"contact\":{\"version\":\" 12\"}}", NULL));
    CHECK (s_fails_with (req, "{\"contact\":{\"version\":\"\"}}", NULL));
    CHECK (s_fails_with (req, "{\"contact\":{\"version\":1.5}}",
                         "field \"contact.version\": expected integer"));
    CHECK (s_fails_with (req, "{\"contact\":{\"birthday\":{\"year\":\"x\"}}}", NULL));

    //  Enums
    CHECK_REENCODE (req, "{\"onDuplicate\":\"DUPLICATE_POLICY_RETURN_EXISTING\"}",
                    "{\"onDuplicate\":\"DUPLICATE_POLICY_RETURN_EXISTING\"}");
    CHECK_REENCODE (req, "{\"on_duplicate\":1}",
                    "{\"onDuplicate\":\"DUPLICATE_POLICY_RETURN_EXISTING\"}");
    CHECK_REENCODE (req, "{\"onDuplicate\":\"DUPLICATE_POLICY_REJECT\"}", "{}");
    CHECK (s_fails_with (req, "{\"onDuplicate\":\"RETURN_EXISTING\"}",
                         "field \"onDuplicate\": unknown value \"RETURN_EXISTING\" for enum "
                         "crm.v1.DuplicatePolicy"));
    CHECK (s_fails_with (req, "{\"onDuplicate\":7}",
                         "field \"onDuplicate\": unknown value 7 for enum crm.v1.DuplicatePolicy"));
    CHECK (s_fails_with (req, "{\"onDuplicate\":true}",
                         "field \"onDuplicate\": expected enum name or number"));
    CHECK (s_fails_with (req, "{\"onDuplicate\":4294967297}", NULL));

    //  Status codes come out by name
    Crm__V1__Status status = CRM__V1__STATUS__INIT;
    status.code = CRM__V1__STATUS_CODE__STATUS_NOT_FOUND;
    status.message = "contact \"x\" not found";
    char *text = crm_json_encode (&status.base, 0);
    CHECK_STR (text, "{\"code\":\"STATUS_NOT_FOUND\",\"message\":\"contact \\\"x\\\" not found\"}");
    free (text);
}

static void
test_integers (void)
{
    const ProtobufCMessageDescriptor *date = &crm__v1__date__descriptor;
    const ProtobufCMessageDescriptor *page = &crm__v1__page_request__descriptor;
    const ProtobufCMessageDescriptor *money = &crm__v1__money__descriptor;

    //  32-bit: numbers, digit strings, integral reals
    CHECK_REENCODE (date, "{\"year\":2147483647,\"month\":\"-2147483648\",\"day\":3.0}",
                    "{\"year\":2147483647,\"month\":-2147483648,\"day\":3}");
    CHECK_REENCODE (date, "{\"year\":1e3}", "{\"year\":1000}");
    CHECK (s_fails_with (date, "{\"year\":2147483648}",
                         "field \"year\": value out of range for int32"));
    CHECK (s_fails_with (date, "{\"year\":\"-2147483649\"}",
                         "field \"year\": value out of range for int32"));
    CHECK (s_fails_with (date, "{\"year\":\"99999999999999999999999\"}",
                         "field \"year\": value out of range for int32"));
    CHECK (s_fails_with (date, "{\"year\":1e300}", "field \"year\": value out of range for int32"));
    CHECK (s_fails_with (date, "{\"year\":\"+1\"}", "field \"year\": expected integer"));
    CHECK (s_fails_with (date, "{\"year\":\"1.0\"}", NULL));
    CHECK_REENCODE (page, "{\"pageSize\":4294967295}", "{\"pageSize\":4294967295}");
    CHECK_REENCODE (page, "{\"pageSize\":\"-0\"}", "{}");
    CHECK (s_fails_with (page, "{\"pageSize\":4294967296}",
                         "field \"pageSize\": value out of range for uint32"));
    CHECK (s_fails_with (page, "{\"pageSize\":-1}",
                         "field \"pageSize\": value out of range for uint32"));
    CHECK (s_fails_with (page, "{\"page_size\":\"-5\"}",
                         "field \"page_size\": value out of range for uint32"));

    //  64-bit: strings out, strings or numbers in
    CHECK_REENCODE (money, "{\"minorUnits\":9223372036854775807,\"currency\":\"EUR\"}",
                    "{\"minorUnits\":\"9223372036854775807\",\"currency\":\"EUR\"}");
    CHECK_REENCODE (money, "{\"minorUnits\":\"-9223372036854775808\"}",
                    "{\"minorUnits\":\"-9223372036854775808\"}");
    CHECK_REENCODE (money, "{\"minorUnits\":-9223372036854775808}",
                    "{\"minorUnits\":\"-9223372036854775808\"}");
    CHECK_REENCODE (money, "{\"minor_units\":-42}", "{\"minorUnits\":\"-42\"}");
    CHECK (s_fails_with (money, "{\"minorUnits\":\"9223372036854775808\"}",
                         "field \"minorUnits\": value out of range for int64"));
    CHECK (s_fails_with (money, "{\"minorUnits\":\"-9223372036854775809\"}",
                         "field \"minorUnits\": value out of range for int64"));
    CHECK (s_fails_with (money, "{\"minorUnits\":9.3e18}",
                         "field \"minorUnits\": value out of range for int64"));
    //  Past what jansson parses as an integer: a JSON error, not a wrong value
    CHECK (s_fails_with (money, "{\"minorUnits\":9223372036854775808}", NULL));
}

static void
test_strings (void)
{
    const ProtobufCMessageDescriptor *phone = &crm__v1__phone__descriptor;
    CHECK_REENCODE (phone, "{\"label\":\"\\u00e9t\\u00e9 \\ud83d\\ude00 \\\"q\\\" \\\\\"}",
                    "{\"label\":\"\xc3\xa9t\xc3\xa9 \xf0\x9f\x98\x80 \\\"q\\\" \\\\\"}");

    //  Invalid UTF-8 in the text: jansson refuses it
    CHECK (s_fails_with (phone, "{\"label\":\"\xff\"}", NULL));
    CHECK (strncmp (s_err, "invalid json", 12) == 0);

    //  ... and in a json_t built without checks, the converter does
    json_t *json = json_object ();
    json_object_set_new (json, "label", json_stringn_nocheck ("ab\xc0\xaf", 4));
    ProtobufCMessage *msg = crm_json_to_message (phone, json, s_err, sizeof s_err);
    CHECK (msg == NULL);
    CHECK_STR (s_err, "field \"label\": invalid utf-8 in string");
    json_object_set_new (json, "label", json_stringn_nocheck ("\xed\xa0\x80", 3));
    msg = crm_json_to_message (phone, json, s_err, sizeof s_err);
    CHECK (msg == NULL);
    CHECK_STR (s_err, "field \"label\": invalid utf-8 in string");
    json_object_set_new (json, "label", json_stringn_nocheck ("a\0b", 3));
    msg = crm_json_to_message (phone, json, s_err, sizeof s_err);
    CHECK (msg == NULL);
    CHECK_STR (s_err, "field \"label\": string contains a nul character");
    json_decref (json);

    //  Ill-formed text inside a message cannot be JSON: it is replaced
    Crm__V1__Phone p = CRM__V1__PHONE__INIT;
    p.label = "a\xff"
              "b\xe2\x82";
    char *text = crm_json_encode (&p.base, 0);
    CHECK_STR (text, "{\"label\":\"a\xef\xbf\xbd"
                     "b\xef\xbf\xbd\xef\xbf\xbd\"}");
    free (text);
}

static void
test_top_level (void)
{
    CHECK (s_fails_with (CONTACT, "[]", "expected a json object at the top level"));
    CHECK (s_fails_with (CONTACT, "5", "expected a json object at the top level"));
    CHECK (s_fails_with (CONTACT, "\"x\"", "expected a json object at the top level"));
    CHECK (s_fails_with (CONTACT, "null", "expected a json object at the top level"));
    CHECK (s_fails_with (CONTACT, "", NULL));
    CHECK (strncmp (s_err, "invalid json", 12) == 0);
    CHECK (s_fails_with (CONTACT, "{\"id\":", NULL));
    CHECK (s_fails_with (CONTACT, "{} {}", NULL));
    CHECK (crm_json_to_message (CONTACT, NULL, s_err, sizeof s_err) == NULL);

    //  No error buffer at all is fine
    CHECK (crm_json_decode (CONTACT, "{\"x\":1}", 7, NULL, 0) == NULL);
    ProtobufCMessage *msg = crm_json_decode (CONTACT, "{\"id\":\"x\"}  ", 12, NULL, 0);
    CHECK (msg != NULL);
    protobuf_c_message_free_unpacked (msg, NULL);

    //  Only len bytes are read
    msg = crm_json_decode (CONTACT, "{\"id\":\"x\"}garbage", 10, s_err, sizeof s_err);
    CHECK (msg != NULL);
    protobuf_c_message_free_unpacked (msg, NULL);
}

//  --------------------------------------------------------------------------
//  Every other kind, through the hand-described message

static void
test_kitchen_scalars (void)
{
    test_kitchen_t k;
    s_kitchen_init (&k.base);
    k.i32 = -7;
    k.i64 = INT64_MIN;
    k.u32 = UINT32_MAX;
    k.u64 = UINT64_MAX;
    k.s32 = INT32_MIN;
    k.s64 = -1;
    k.fx32 = 7;
    k.fx64 = 18446744073709551000ULL;
    k.sfx32 = -2;
    k.sfx64 = INT64_MAX;
    k.f = 1.5f;
    k.d = -0.25;
    k.b = 1;
    k.text_value = "hi";
    uint8_t blob[] = {0xfb, 0xff, 0x00, 'a'};
    k.blob.data = blob;
    k.blob.len = sizeof blob;
    k.color = COLOR_BLUE;

    char *text = crm_json_encode (&k.base, 0);
    CHECK_STR (text,
               "{\"i32\":-7,\"i64\":\"-9223372036854775808\",\"u32\":4294967295,"
               "\"u64\":\"18446744073709551615\",\"s32\":-2147483648,\"s64\":\"-1\",\"fx32\":7,"
               "\"fx64\":\"18446744073709551000\",\"sfx32\":-2,\"sfx64\":\"9223372036854775807\","
               "\"f\":1.5,\"d\":-0.25,\"b\":true,\"textValue\":\"hi\",\"blob\":\"+/8AYQ==\","
               "\"color\":\"COLOR_BLUE\"}");
    free (text);
    CHECK (s_round_trips (&k.base));

    //  Unsigned 64-bit at the limit and past it
    CHECK_REENCODE (KITCHEN, "{\"u64\":\"18446744073709551615\",\"fx64\":9223372036854775807}",
                    "{\"u64\":\"18446744073709551615\",\"fx64\":\"9223372036854775807\"}");
    CHECK (s_fails_with (KITCHEN, "{\"u64\":\"18446744073709551616\"}",
                         "field \"u64\": value out of range for uint64"));
    CHECK (
        s_fails_with (KITCHEN, "{\"fx64\":-1}", "field \"fx64\": value out of range for fixed64"));
    CHECK (s_fails_with (KITCHEN, "{\"s32\":\"2147483648\"}",
                         "field \"s32\": value out of range for sint32"));
    CHECK (s_fails_with (KITCHEN, "{\"fx32\":\"4294967296\"}",
                         "field \"fx32\": value out of range for fixed32"));
    CHECK (s_fails_with (KITCHEN, "{\"sfx32\":-2147483649}",
                         "field \"sfx32\": value out of range for sfixed32"));
    CHECK_REENCODE (KITCHEN, "{\"sfx64\":\"-9223372036854775808\",\"s64\":1}",
                    "{\"s64\":\"1\",\"sfx64\":\"-9223372036854775808\"}");

    //  Floating point: numbers, numeric strings and the three special strings
    CHECK_REENCODE (KITCHEN, "{\"d\":\"NaN\",\"f\":\"-Infinity\"}",
                    "{\"f\":\"-Infinity\",\"d\":\"NaN\"}");
    CHECK_REENCODE (KITCHEN, "{\"d\":\"Infinity\",\"f\":2}", "{\"f\":2.0,\"d\":\"Infinity\"}");
    CHECK_REENCODE (KITCHEN, "{\"d\":\"1e3\",\"f\":\"-0.5\"}", "{\"f\":-0.5,\"d\":1000.0}");
    CHECK_REENCODE (KITCHEN, "{\"d\":0.0,\"f\":-0.0}", "{}");
    CHECK (s_fails_with (KITCHEN, "{\"d\":\"nan\"}", "field \"d\": expected number"));
    CHECK (s_fails_with (KITCHEN, "{\"d\":\"0x10\"}", "field \"d\": expected number"));
    CHECK (s_fails_with (KITCHEN, "{\"d\":\" 1\"}", "field \"d\": expected number"));
    CHECK (
        s_fails_with (KITCHEN, "{\"d\":\"1e999\"}", "field \"d\": value out of range for double"));
    CHECK (s_fails_with (KITCHEN, "{\"d\":true}", "field \"d\": expected number"));
    CHECK (s_fails_with (KITCHEN, "{\"f\":1e39}", "field \"f\": value out of range for float"));
    CHECK_REENCODE (KITCHEN, "{\"f\":3.4028234663852886e38}", "{\"f\":3.4028234663852886e38}");

    test_kitchen_t special;
    s_kitchen_init (&special.base);
    special.d = NAN;
    special.f = -INFINITY;
    CHECK (s_round_trips (&special.base));
    special.d = 0.1;
    special.f = 0.1f;
    CHECK (s_round_trips (&special.base));
    special.d = 5e-324;
    special.f = 1e-45f;
    CHECK (s_round_trips (&special.base));

    //  Bytes: standard or URL-safe alphabet, padded or not
    CHECK_REENCODE (KITCHEN, "{\"blob\":\"-_8AYQ\"}", "{\"blob\":\"+/8AYQ==\"}");
    CHECK_REENCODE (KITCHEN, "{\"blob\":\"+/8AYQ==\"}", "{\"blob\":\"+/8AYQ==\"}");
    CHECK_REENCODE (KITCHEN, "{\"blob\":\"YWI=\"}", "{\"blob\":\"YWI=\"}");
    CHECK_REENCODE (KITCHEN, "{\"blob\":\"YWJj\"}", "{\"blob\":\"YWJj\"}");
    CHECK_REENCODE (KITCHEN, "{\"blob\":\"\"}", "{}");
    CHECK (s_fails_with (KITCHEN, "{\"blob\":\"YWJjZ\"}", "field \"blob\": invalid base64"));
    CHECK (s_fails_with (KITCHEN, "{\"blob\":\"YW=I\"}", "field \"blob\": invalid base64"));
    CHECK (s_fails_with (KITCHEN, "{\"blob\":\"YW I=\"}", "field \"blob\": invalid base64"));
    CHECK (s_fails_with (KITCHEN, "{\"blob\":\"YWI==\"}", "field \"blob\": invalid base64"));
    CHECK (s_fails_with (KITCHEN, "{\"blob\":\"Y===\"}", "field \"blob\": invalid base64"));
    CHECK (s_fails_with (KITCHEN, "{\"blob\":\"!!!!\"}", "field \"blob\": invalid base64"));
    CHECK (s_fails_with (KITCHEN, "{\"blob\":12}", "field \"blob\": expected base64 string"));

    //  Every length of bytes survives the trip
    uint8_t buf[40];
    for (size_t i = 0; i < sizeof buf; i++)
        buf[i] = (uint8_t) (i * 37 + 11);
    for (size_t len = 0; len <= sizeof buf; len++) {
        test_kitchen_t b;
        s_kitchen_init (&b.base);
        b.blob.data = buf;
        b.blob.len = len;
        CHECK (s_round_trips (&b.base));
    }

    //  Enums by name and number
    CHECK_REENCODE (KITCHEN, "{\"color\":5}", "{\"color\":\"COLOR_BLUE\"}");
    CHECK (s_fails_with (KITCHEN, "{\"color\":2}",
                         "field \"color\": unknown value 2 for enum test.Color"));
    CHECK (s_fails_with (KITCHEN, "{\"color\":\"COLOR_GREEN\"}",
                         "field \"color\": unknown value \"COLOR_GREEN\" for enum test.Color"));
    //  A number this side does not know is written as a number
    test_kitchen_t unknown;
    s_kitchen_init (&unknown.base);
    unknown.color = 9;
    text = crm_json_encode (&unknown.base, 0);
    CHECK_STR (text, "{\"color\":9}");
    free (text);
}

static void
test_kitchen_repeated (void)
{
    test_kitchen_t k;
    s_kitchen_init (&k.base);
    int32_t ri[] = {1, -2, 3};
    char *rs[] = {"a", "", "c"};
    double rd[] = {0.5, 0, -1e10};
    uint8_t raw[] = {1, 2, 3};
    ProtobufCBinaryData rb[] = {{3, raw}, {0, NULL}};
    int32_t rcolor[] = {COLOR_RED, COLOR_UNSPECIFIED};
    uint64_t ru64[] = {0, UINT64_MAX};
    k.n_ri = 3;
    k.ri = ri;
    k.n_rs = 3;
    k.rs = rs;
    k.n_rd = 3;
    k.rd = rd;
    k.n_rb = 2;
    k.rb = rb;
    k.n_rcolor = 2;
    k.rcolor = rcolor;
    k.n_ru64 = 2;
    k.ru64 = ru64;
    char *text = crm_json_encode (&k.base, 0);
    CHECK_STR (text, "{\"ri\":[1,-2,3],\"rs\":[\"a\",\"\",\"c\"],\"rd\":[0.5,0.0,-10000000000.0],"
                     "\"rb\":[\"AQID\",\"\"],\"rcolor\":[\"COLOR_RED\",\"COLOR_UNSPECIFIED\"],"
                     "\"ru64\":[\"0\",\"18446744073709551615\"]}");
    free (text);
    CHECK (s_round_trips (&k.base));

    //  Repeated children, each a full message
    test_kitchen_t c1, c2;
    s_kitchen_init (&c1.base);
    s_kitchen_init (&c2.base);
    c1.text_value = "one";
    c2.n_ri = 1;
    c2.ri = ri;
    test_kitchen_t *children[] = {&c1, &c2};
    k.n_children = 2;
    k.children = children;
    CHECK (s_round_trips (&k.base));

    CHECK_REENCODE (KITCHEN, "{\"ri\":null,\"rs\":[],\"rcolor\":[1,\"COLOR_BLUE\"]}",
                    "{\"rcolor\":[\"COLOR_RED\",\"COLOR_BLUE\"]}");
    CHECK (s_fails_with (KITCHEN, "{\"ri\":[1,null]}", "field \"ri[1]\": expected integer"));
    CHECK (s_fails_with (KITCHEN, "{\"ri\":5}", "field \"ri\": expected array"));
    CHECK (s_fails_with (KITCHEN, "{\"ri\":[1,2147483648]}",
                         "field \"ri[1]\": value out of range for int32"));
    //  Errors after allocations: nothing may leak
    CHECK (s_fails_with (KITCHEN, "{\"rs\":[\"a\",\"b\",7]}", "field \"rs[2]\": expected string"));
    CHECK (s_fails_with (KITCHEN, "{\"rb\":[\"AQID\",\"*\"]}", "field \"rb[1]\": invalid base64"));
    CHECK (s_fails_with (KITCHEN,
                         "{\"textValue\":\"x\",\"children\":[{\"rs\":[\"a\"]},{\"child\":{\"rs\":"
                         "[\"b\"],\"ru64\":[-1]}}]}",
                         "field \"children[1].child.ru64[0]\": value out of range for uint64"));
}

static void
test_kitchen_maps (void)
{
    test_kitchen_t k;
    s_kitchen_init (&k.base);
    test_labels_entry_t l1, l2;
    s_labels_entry_init (&l1.base);
    s_labels_entry_init (&l2.base);
    l1.key = "apples";
    l1.value = 3;
    l2.key = "pears";
    test_labels_entry_t *labels[] = {&l1, &l2};
    k.n_labels = 2;
    k.labels = labels;

    test_kitchen_t node;
    s_kitchen_init (&node.base);
    node.text_value = "seven";
    test_nodes_entry_t n1, n2;
    s_nodes_entry_init (&n1.base);
    s_nodes_entry_init (&n2.base);
    n1.key = -7;
    n1.value = &node;
    n2.key = 8;
    test_nodes_entry_t *nodes[] = {&n1, &n2};
    k.n_nodes_by_id = 2;
    k.nodes_by_id = nodes;

    char *text = crm_json_encode (&k.base, 0);
    CHECK_STR (text, "{\"labels\":{\"apples\":\"3\",\"pears\":\"0\"},"
                     "\"nodesById\":{\"-7\":{\"textValue\":\"seven\"},\"8\":{}}}");
    free (text);
    //  A missing map value is written as an empty message, which packs
    //  differently; give n2 a value for the round trip
    n2.value = &node;
    CHECK (s_round_trips (&k.base));

    CHECK_REENCODE (KITCHEN, "{\"nodes_by_id\":{\"1\":{\"i32\":1}},\"labels\":{\"\":\"-1\"}}",
                    "{\"labels\":{\"\":\"-1\"},\"nodesById\":{\"1\":{\"i32\":1}}}");
    CHECK_REENCODE (KITCHEN, "{\"labels\":{},\"nodesById\":null}", "{}");
    CHECK (s_fails_with (KITCHEN, "{\"labels\":[]}", "field \"labels\": expected object"));
    CHECK (s_fails_with (KITCHEN, "{\"labels\":{\"a\":1,\"b\":null}}",
                         "field \"labels[\"b\"]\": map value must not be null"));
    CHECK (s_fails_with (KITCHEN, "{\"labels\":{\"a\":1,\"b\":\"x\"}}",
                         "field \"labels[\"b\"]\": expected integer"));
    CHECK (s_fails_with (KITCHEN, "{\"nodesById\":{\"x\":{}}}",
                         "field \"nodesById[\"x\"]\": expected integer map key"));
    CHECK (s_fails_with (KITCHEN, "{\"nodesById\":{\"2147483648\":{}}}",
                         "field \"nodesById[\"2147483648\"]\": map key out of range for int32"));
    CHECK (s_fails_with (KITCHEN, "{\"nodesById\":{\"1\":{\"zz\":1}}}",
                         "unknown field \"nodesById[\"1\"].zz\""));
}

static void
test_kitchen_oneof_optional (void)
{
    test_kitchen_t k;
    s_kitchen_init (&k.base);
    //  A oneof member set to its zero value is still written
    k.choice_case = 28;
    k.one_int = 0;
    char *text = crm_json_encode (&k.base, 0);
    CHECK_STR (text, "{\"oneInt\":0}");
    free (text);
    CHECK (s_round_trips (&k.base));

    k.choice_case = 27;
    k.one_text = "";
    text = crm_json_encode (&k.base, 0);
    CHECK_STR (text, "{\"oneText\":\"\"}");
    free (text);
    CHECK (s_round_trips (&k.base));

    test_kitchen_t sub;
    s_kitchen_init (&sub.base);
    k.choice_case = 30;
    k.one_child = &sub;
    text = crm_json_encode (&k.base, 0);
    CHECK_STR (text, "{\"oneChild\":{}}");
    free (text);
    CHECK (s_round_trips (&k.base));

    uint8_t raw[] = {'x'};
    k.choice_case = 29;
    k.one_blob.data = raw;
    k.one_blob.len = 1;
    CHECK (s_round_trips (&k.base));

    test_kitchen_t *in = (test_kitchen_t *) s_decode (KITCHEN, "{\"one_text\":\"\"}");
    CHECK (in && in->choice_case == 27 && strcmp (in->one_text, "") == 0);
    protobuf_c_message_free_unpacked (&in->base, NULL);
    in = (test_kitchen_t *) s_decode (KITCHEN, "{\"oneChild\":{\"i32\":4},\"oneInt\":null}");
    CHECK (in && in->choice_case == 30 && in->one_child->i32 == 4);
    protobuf_c_message_free_unpacked (&in->base, NULL);
    CHECK (s_fails_with (KITCHEN, "{\"oneText\":\"a\",\"oneInt\":1}",
                         "field \"oneInt\": another field of the same oneof is already set"));
    CHECK (s_fails_with (KITCHEN, "{\"oneChild\":{\"rs\":[\"a\"]},\"oneBlob\":\"AA\"}", NULL));
    CHECK (s_fails_with (KITCHEN, "{\"oneChild\":{\"rs\":[\"a\",1]}}",
                         "field \"oneChild.rs[1]\": expected string"));

    //  Optional with presence: set means written, even at zero
    test_kitchen_t o;
    s_kitchen_init (&o.base);
    o.has_opt_int = 1;
    o.opt_text = "";
    text = crm_json_encode (&o.base, 0);
    CHECK_STR (text, "{\"optInt\":0,\"optText\":\"\"}");
    free (text);
    CHECK (s_round_trips (&o.base));
    o.has_opt_int = 0;
    o.opt_int = 5;
    o.opt_text = NULL;
    text = crm_json_encode (&o.base, 0);
    CHECK_STR (text, "{}");
    free (text);
    in = (test_kitchen_t *) s_decode (KITCHEN, "{\"optInt\":0}");
    CHECK (in && in->has_opt_int && in->opt_int == 0 && in->opt_text == NULL);
    protobuf_c_message_free_unpacked (&in->base, NULL);
}

//  A rich input, then a failure at its very end or deep inside: every
//  allocation made so far must be released (ASan checks).
static void
test_error_cleanup (void)
{
    static const char rich[] =
        "{\"i64\":\"5\",\"textValue\":\"t\",\"blob\":\"AAEC\",\"rs\":[\"a\",\"b\"],"
        "\"rb\":[\"AA\",\"AQ\"],\"labels\":{\"x\":1,\"y\":2},"
        "\"nodesById\":{\"1\":{\"textValue\":\"n\",\"rs\":[\"c\"]}},"
        "\"child\":{\"oneText\":\"o\",\"children\":[{\"blob\":\"AA\"}]},"
        "\"oneChild\":{\"optText\":\"p\"},\"optText\":\"q\"";
    char text[sizeof rich + 64];
    snprintf (text, sizeof text, "%s}", rich);
    ProtobufCMessage *msg = s_decode (KITCHEN, text);
    CHECK (msg != NULL);
    if (msg)
        CHECK (s_round_trips (msg));
    protobuf_c_message_free_unpacked (msg, NULL);

    snprintf (text, sizeof text, "%s,\"zz\":1}", rich);
    CHECK (s_fails_with (KITCHEN, text, "unknown field \"zz\""));
    snprintf (text, sizeof text, "%s,\"oneInt\":1}", rich);
    CHECK (s_fails_with (KITCHEN, text, NULL));
    snprintf (text, sizeof text, "%s,\"text_value\":\"again\"}", rich);
    CHECK (s_fails_with (KITCHEN, text, "field \"text_value\": field given more than once"));
    snprintf (text, sizeof text, "%s,\"children\":[{\"rs\":[\"a\"]},{\"labels\":{\"k\":[]}}]}",
              rich);
    CHECK (s_fails_with (KITCHEN, text, "field \"children[1].labels[\"k\"]\": expected integer"));
}

//  JSON of depth objects nested through child.
static char *
s_nested (int depth)
{
    size_t size = (size_t) depth * 12 + 1;
    char *text = malloc (size);
    assert (text);
    size_t k = 0;
    for (int i = 0; i < depth - 1; i++) {
        memcpy (text + k, "{\"child\":", 9);
        k += 9;
    }
    text[k++] = '{';
    for (int i = 0; i < depth; i++)
        text[k++] = '}';
    text[k] = '\0';
    return text;
}

static void
test_depth (void)
{
    char *ok = s_nested (64);
    ProtobufCMessage *msg = s_decode (KITCHEN, ok);
    CHECK (msg != NULL);
    if (msg)
        CHECK (s_round_trips (msg));
    protobuf_c_message_free_unpacked (msg, NULL);
    free (ok);

    char *deep = s_nested (65);
    CHECK (s_fails_with (KITCHEN, deep, NULL));
    CHECK (strstr (s_err, "json nested deeper than 64 levels") != NULL);
    free (deep);

    //  Arrays count as levels too
    CHECK (s_fails_with (KITCHEN, "{\"ri\":[[1]]}", "field \"ri[0]\": expected integer"));
    char *wide = s_nested (2000);
    CHECK (s_fails_with (KITCHEN, wide, NULL));
    free (wide);
}

int
main (void)
{
    s_kitchen_setup ();
    RUN (test_contact_encode);
    RUN (test_contact_round_trip);
    RUN (test_contact_defaults);
    RUN (test_contact_names);
    RUN (test_contact_errors);
    RUN (test_integers);
    RUN (test_strings);
    RUN (test_top_level);
    RUN (test_kitchen_scalars);
    RUN (test_kitchen_repeated);
    RUN (test_kitchen_maps);
    RUN (test_kitchen_oneof_optional);
    RUN (test_error_cleanup);
    RUN (test_depth);
    return TEST_DONE ("test_json");
}
