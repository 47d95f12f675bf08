/*  crm_json.c - generic protobuf <-> JSON through protobuf-c descriptors (proto3 JSON mapping). */
#include "crm_json.h"

#include <assert.h>
#include <float.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

//  Deeper input is refused: it can only be an attack or a mistake, and the
//  decoder recurses once per level.
#define S_MAX_DEPTH 64

//  Room for one path segment per level, plus slack for the innermost field.
#define S_MAX_SEGS (S_MAX_DEPTH + 4)

//  A step of the path from the top-level object to the value being decoded.
typedef enum {
    S_SEG_KEY,    //  member of an object
    S_SEG_INDEX,  //  element of an array
    S_SEG_MAPKEY, //  entry of a map
} s_seg_kind_t;

typedef struct {
    s_seg_kind_t kind;
    const char *key; //  borrowed from the input, for keys and map keys
    size_t index;    //  for array elements
} s_seg_t;

//  State of one crm_json_to_message call.
typedef struct {
    char *err;                //  caller's buffer, may be NULL
    size_t errlen;            //  its size
    int depth;                //  objects and arrays entered
    size_t nsegs;             //  path length; may exceed S_MAX_SEGS, extra steps not kept
    s_seg_t segs[S_MAX_SEGS]; //  the path
} s_decoder_t;

//  Scratch space for one decoded element before it is stored.
typedef union {
    int32_t i32;
    uint32_t u32;
    int64_t i64;
    uint64_t u64;
    float f;
    double d;
    protobuf_c_boolean b;
    char *str;
    ProtobufCBinaryData bytes;
    ProtobufCMessage *msg;
} s_value_t;

static const char s_b64_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static json_t *s_message_to_json (const ProtobufCMessage *msg);
static int s_fill_message (s_decoder_t *dec, ProtobufCMessage *msg, const json_t *json);
static int s_set_field (s_decoder_t *dec, ProtobufCMessage *msg,
                        const ProtobufCFieldDescriptor *field, const json_t *value);

//  --------------------------------------------------------------------------
//  Shared helpers

//  jansson's object iterators take a non-const object although they only read
//  it; the decoder never modifies its input.
static json_t *
s_mutable (const json_t *json)
{
    return (json_t *) (uintptr_t) json;
}

//  Bytes one element takes in a protobuf-c repeated array (and in a struct).
static size_t
s_elem_size (ProtobufCType type)
{
    switch (type) {
        case PROTOBUF_C_TYPE_INT32:
        case PROTOBUF_C_TYPE_SINT32:
        case PROTOBUF_C_TYPE_SFIXED32:
        case PROTOBUF_C_TYPE_UINT32:
        case PROTOBUF_C_TYPE_FIXED32:
        case PROTOBUF_C_TYPE_FLOAT:
        case PROTOBUF_C_TYPE_ENUM:
            return 4;
        case PROTOBUF_C_TYPE_INT64:
        case PROTOBUF_C_TYPE_SINT64:
        case PROTOBUF_C_TYPE_SFIXED64:
        case PROTOBUF_C_TYPE_UINT64:
        case PROTOBUF_C_TYPE_FIXED64:
        case PROTOBUF_C_TYPE_DOUBLE:
            return 8;
        case PROTOBUF_C_TYPE_BOOL:
            return sizeof (protobuf_c_boolean);
        case PROTOBUF_C_TYPE_STRING:
            return sizeof (char *);
        case PROTOBUF_C_TYPE_BYTES:
            return sizeof (ProtobufCBinaryData);
        case PROTOBUF_C_TYPE_MESSAGE:
            return sizeof (ProtobufCMessage *);
    }
    assert (0 && "unknown protobuf-c type");
    return 0;
}

static const char *
s_type_name (ProtobufCType type)
{
    switch (type) {
        case PROTOBUF_C_TYPE_INT32:
            return "int32";
        case PROTOBUF_C_TYPE_SINT32:
            return "sint32";
        case PROTOBUF_C_TYPE_SFIXED32:
            return "sfixed32";
        case PROTOBUF_C_TYPE_UINT32:
            return "uint32";
        case PROTOBUF_C_TYPE_FIXED32:
            return "fixed32";
        case PROTOBUF_C_TYPE_INT64:
            return "int64";
        case PROTOBUF_C_TYPE_SINT64:
            return "sint64";
        case PROTOBUF_C_TYPE_SFIXED64:
            return "sfixed64";
        case PROTOBUF_C_TYPE_UINT64:
            return "uint64";
        case PROTOBUF_C_TYPE_FIXED64:
            return "fixed64";
        case PROTOBUF_C_TYPE_FLOAT:
            return "float";
        case PROTOBUF_C_TYPE_DOUBLE:
            return "double";
        case PROTOBUF_C_TYPE_BOOL:
            return "bool";
        case PROTOBUF_C_TYPE_ENUM:
            return "enum";
        case PROTOBUF_C_TYPE_STRING:
            return "string";
        case PROTOBUF_C_TYPE_BYTES:
            return "bytes";
        case PROTOBUF_C_TYPE_MESSAGE:
            return "message";
    }
    return "unknown";
}

//  Length of the well-formed UTF-8 sequence at s, or 0 when it is not one
//  (overlong forms, surrogates and code points past U+10FFFF are not).
static size_t
s_utf8_seq (const unsigned char *s, size_t left)
{
    unsigned char c = s[0];
    size_t need;
    unsigned char lo = 0x80, hi = 0xBF;

    if (c < 0x80)
        return 1;
    if (c >= 0xC2 && c <= 0xDF)
        need = 1;
    else if (c >= 0xE0 && c <= 0xEF) {
        need = 2;
        if (c == 0xE0)
            lo = 0xA0;
        else if (c == 0xED)
            hi = 0x9F;
    }
    else if (c >= 0xF0 && c <= 0xF4) {
        need = 3;
        if (c == 0xF0)
            lo = 0x90;
        else if (c == 0xF4)
            hi = 0x8F;
    }
    else
        return 0;
    if (left < need + 1)
        return 0;
    if (s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i <= need; i++)
        if (s[i] < 0x80 || s[i] > 0xBF)
            return 0;
    return need + 1;
}

static int
s_utf8_valid (const char *text, size_t len)
{
    const unsigned char *s = (const unsigned char *) text;
    size_t i = 0;
    while (i < len) {
        size_t n = s_utf8_seq (s + i, len - i);
        if (n == 0)
            return 0;
        i += n;
    }
    return 1;
}

//  A .proto field name in camel case, as protoc forms JSON names and map
//  entry names: underscores dropped, the letter after one upper-cased, and
//  the first letter too when upper_first. Written into buf (at least
//  strlen (name) + 1 bytes); returns the length.
static size_t
s_camel (const char *name, int upper_first, char *buf)
{
    int upper_next = upper_first;
    size_t k = 0;
    for (const char *p = name; *p; p++) {
        if (*p == '_') {
            upper_next = 1;
            continue;
        }
        char c = *p;
        if (upper_next && c >= 'a' && c <= 'z')
            c = (char) (c - 'a' + 'A');
        upper_next = 0;
        buf[k++] = c;
    }
    buf[k] = '\0';
    return k;
}

//  Room for the camel-case form of name: small when it fits, else a new
//  allocation the caller frees (NULL when out of memory).
static char *
s_name_buf (const char *name, char *small, size_t size)
{
    size_t need = strlen (name) + 1;
    return need <= size ? small : malloc (need);
}

//  True when a JSON object key names the field: its .proto name or its
//  lowerCamelCase JSON name.
static int
s_name_matches (const char *name, const char *key, size_t keylen)
{
    if (strlen (name) == keylen && memcmp (name, key, keylen) == 0)
        return 1;
    char small[128];
    char *camel = s_name_buf (name, small, sizeof small);
    if (!camel)
        return 0;
    int match = s_camel (name, 0, camel) == keylen && memcmp (camel, key, keylen) == 0;
    if (camel != small)
        free (camel);
    return match;
}

//  protobuf-c has no map flag: a map field is a repeated message field whose
//  type is the synthesised entry protoc makes for it, "<FieldInCamelCase>Entry"
//  with fields key = 1 and value = 2.
static int
s_is_map (const ProtobufCFieldDescriptor *field)
{
    if (field->label != PROTOBUF_C_LABEL_REPEATED || field->type != PROTOBUF_C_TYPE_MESSAGE)
        return 0;
    const ProtobufCMessageDescriptor *entry = field->descriptor;
    if (!entry || entry->n_fields != 2)
        return 0;
    const ProtobufCFieldDescriptor *key = &entry->fields[0];
    const ProtobufCFieldDescriptor *value = &entry->fields[1];
    if (key->id != 1 || value->id != 2 || strcmp (key->name, "key") != 0 ||
        strcmp (value->name, "value") != 0 || key->label == PROTOBUF_C_LABEL_REPEATED ||
        value->label == PROTOBUF_C_LABEL_REPEATED)
        return 0;
    switch (key->type) {
        case PROTOBUF_C_TYPE_FLOAT:
        case PROTOBUF_C_TYPE_DOUBLE:
        case PROTOBUF_C_TYPE_BYTES:
        case PROTOBUF_C_TYPE_ENUM:
        case PROTOBUF_C_TYPE_MESSAGE:
            return 0;
        default:
            break;
    }
    if (!entry->short_name)
        return 0;
    char small[128];
    char *camel = s_name_buf (field->name, small, sizeof small);
    if (!camel)
        return 0;
    size_t len = s_camel (field->name, 1, camel);
    int match = strncmp (entry->short_name, camel, len) == 0 &&
                strcmp (entry->short_name + len, "Entry") == 0;
    if (camel != small)
        free (camel);
    return match;
}

//  --------------------------------------------------------------------------
//  Message to JSON

//  A JSON string from protobuf text; ill-formed UTF-8 (which JSON cannot
//  carry) becomes U+FFFD rather than failing the whole message.
static json_t *
s_string_to_json (const char *text)
{
    if (!text)
        return json_string ("");
    size_t len = strlen (text);
    if (s_utf8_valid (text, len))
        return json_stringn_nocheck (text, len);

    if (len > (SIZE_MAX - 1) / 3)
        return NULL;
    char *fixed = malloc (len * 3 + 1);
    if (!fixed)
        return NULL;
    const unsigned char *s = (const unsigned char *) text;
    size_t i = 0, k = 0;
    while (i < len) {
        size_t n = s_utf8_seq (s + i, len - i);
        if (n == 0) {
            memcpy (fixed + k, "\xEF\xBF\xBD", 3);
            k += 3;
            i++;
        }
        else {
            memcpy (fixed + k, s + i, n);
            k += n;
            i += n;
        }
    }
    json_t *json = json_stringn_nocheck (fixed, k);
    free (fixed);
    return json;
}

static json_t *
s_bytes_to_json (const ProtobufCBinaryData *bytes)
{
    size_t len = bytes->len;
    if (len == 0 || !bytes->data)
        return json_string ("");
    if (len > (SIZE_MAX / 4 - 1) * 3)
        return NULL;
    size_t outlen = (len + 2) / 3 * 4;
    char *out = malloc (outlen + 1);
    if (!out)
        return NULL;
    const uint8_t *in = bytes->data;
    size_t k = 0, i = 0;
    for (; i + 3 <= len; i += 3) {
        uint32_t v = (uint32_t) in[i] << 16 | (uint32_t) in[i + 1] << 8 | in[i + 2];
        out[k++] = s_b64_alphabet[(v >> 18) & 63];
        out[k++] = s_b64_alphabet[(v >> 12) & 63];
        out[k++] = s_b64_alphabet[(v >> 6) & 63];
        out[k++] = s_b64_alphabet[v & 63];
    }
    if (len - i == 1) {
        uint32_t v = (uint32_t) in[i] << 16;
        out[k++] = s_b64_alphabet[(v >> 18) & 63];
        out[k++] = s_b64_alphabet[(v >> 12) & 63];
        out[k++] = '=';
        out[k++] = '=';
    }
    else if (len - i == 2) {
        uint32_t v = (uint32_t) in[i] << 16 | (uint32_t) in[i + 1] << 8;
        out[k++] = s_b64_alphabet[(v >> 18) & 63];
        out[k++] = s_b64_alphabet[(v >> 12) & 63];
        out[k++] = s_b64_alphabet[(v >> 6) & 63];
        out[k++] = '=';
    }
    json_t *json = json_stringn_nocheck (out, k);
    free (out);
    return json;
}

//  NaN and the infinities have no JSON number; proto3 spells them as strings.
static json_t *
s_real_to_json (double v)
{
    if (isnan (v))
        return json_string ("NaN");
    if (isinf (v))
        return json_string (v > 0 ? "Infinity" : "-Infinity");
    return json_real (v);
}

static json_t *
s_text_int64 (int64_t v)
{
    char buf[32];
    snprintf (buf, sizeof buf, "%" PRId64, v);
    return json_string (buf);
}

static json_t *
s_text_uint64 (uint64_t v)
{
    char buf[32];
    snprintf (buf, sizeof buf, "%" PRIu64, v);
    return json_string (buf);
}

//  One singular value (or one element of a repeated field) as JSON.
static json_t *
s_value_to_json (const ProtobufCFieldDescriptor *field, const void *member)
{
    switch (field->type) {
        case PROTOBUF_C_TYPE_INT32:
        case PROTOBUF_C_TYPE_SINT32:
        case PROTOBUF_C_TYPE_SFIXED32:
            return json_integer (*(const int32_t *) member);
        case PROTOBUF_C_TYPE_UINT32:
        case PROTOBUF_C_TYPE_FIXED32:
            return json_integer (*(const uint32_t *) member);
        case PROTOBUF_C_TYPE_INT64:
        case PROTOBUF_C_TYPE_SINT64:
        case PROTOBUF_C_TYPE_SFIXED64:
            return s_text_int64 (*(const int64_t *) member);
        case PROTOBUF_C_TYPE_UINT64:
        case PROTOBUF_C_TYPE_FIXED64:
            return s_text_uint64 (*(const uint64_t *) member);
        case PROTOBUF_C_TYPE_FLOAT:
            return s_real_to_json (*(const float *) member);
        case PROTOBUF_C_TYPE_DOUBLE:
            return s_real_to_json (*(const double *) member);
        case PROTOBUF_C_TYPE_BOOL:
            return json_boolean (*(const protobuf_c_boolean *) member);
        case PROTOBUF_C_TYPE_ENUM: {
            int32_t v = *(const int32_t *) member;
            const ProtobufCEnumValue *ev = protobuf_c_enum_descriptor_get_value (
                (const ProtobufCEnumDescriptor *) field->descriptor, v);
            //  A number this build does not know (from a newer peer) stays a number
            return ev ? json_string (ev->name) : json_integer (v);
        }
        case PROTOBUF_C_TYPE_STRING:
            return s_string_to_json (*(char *const *) member);
        case PROTOBUF_C_TYPE_BYTES:
            return s_bytes_to_json ((const ProtobufCBinaryData *) member);
        case PROTOBUF_C_TYPE_MESSAGE: {
            const ProtobufCMessage *sub = *(ProtobufCMessage *const *) member;
            return sub ? s_message_to_json (sub) : json_object ();
        }
    }
    return NULL;
}

//  Whether protobuf-c would put the field on the wire; the JSON carries
//  exactly what the binary form carries, so both round-trip alike.
static int
s_is_present (const ProtobufCMessage *msg, const ProtobufCFieldDescriptor *field)
{
    const char *member = (const char *) msg + field->offset;
    const char *qmember = (const char *) msg + field->quantifier_offset;
    int pointer_type =
        field->type == PROTOBUF_C_TYPE_MESSAGE || field->type == PROTOBUF_C_TYPE_STRING;

    if (field->label == PROTOBUF_C_LABEL_REQUIRED)
        return 1;
    if (field->label == PROTOBUF_C_LABEL_REPEATED)
        return *(const size_t *) qmember > 0;
    if (field->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
        if (*(const uint32_t *) qmember != field->id)
            return 0;
        if (pointer_type) {
            const void *ptr = *(const void *const *) member;
            return ptr != NULL && ptr != field->default_value;
        }
        return 1;
    }
    if (field->label == PROTOBUF_C_LABEL_OPTIONAL) {
        if (pointer_type) {
            const void *ptr = *(const void *const *) member;
            return ptr != NULL && ptr != field->default_value;
        }
        return *(const protobuf_c_boolean *) qmember != 0;
    }
    //  proto3 implicit presence: present when not the zero value
    switch (field->type) {
        case PROTOBUF_C_TYPE_INT32:
        case PROTOBUF_C_TYPE_SINT32:
        case PROTOBUF_C_TYPE_SFIXED32:
        case PROTOBUF_C_TYPE_UINT32:
        case PROTOBUF_C_TYPE_FIXED32:
        case PROTOBUF_C_TYPE_ENUM:
            return *(const uint32_t *) member != 0;
        case PROTOBUF_C_TYPE_INT64:
        case PROTOBUF_C_TYPE_SINT64:
        case PROTOBUF_C_TYPE_SFIXED64:
        case PROTOBUF_C_TYPE_UINT64:
        case PROTOBUF_C_TYPE_FIXED64:
            return *(const uint64_t *) member != 0;
        case PROTOBUF_C_TYPE_FLOAT:
            return *(const float *) member != 0;
        case PROTOBUF_C_TYPE_DOUBLE:
            return *(const double *) member != 0;
        case PROTOBUF_C_TYPE_BOOL:
            return *(const protobuf_c_boolean *) member != 0;
        case PROTOBUF_C_TYPE_STRING: {
            const char *s = *(char *const *) member;
            return s != NULL && *s != '\0';
        }
        case PROTOBUF_C_TYPE_BYTES:
            return ((const ProtobufCBinaryData *) member)->len != 0;
        case PROTOBUF_C_TYPE_MESSAGE:
            return *(ProtobufCMessage *const *) member != NULL;
    }
    return 0;
}

//  A map key as the JSON object key: map keys are always strings in JSON.
static json_t *
s_map_key_to_json (const ProtobufCFieldDescriptor *key, const void *member)
{
    switch (key->type) {
        case PROTOBUF_C_TYPE_STRING:
            return s_string_to_json (*(char *const *) member);
        case PROTOBUF_C_TYPE_BOOL:
            return json_string (*(const protobuf_c_boolean *) member ? "true" : "false");
        case PROTOBUF_C_TYPE_INT32:
        case PROTOBUF_C_TYPE_SINT32:
        case PROTOBUF_C_TYPE_SFIXED32:
            return s_text_int64 (*(const int32_t *) member);
        case PROTOBUF_C_TYPE_UINT32:
        case PROTOBUF_C_TYPE_FIXED32:
            return s_text_uint64 (*(const uint32_t *) member);
        default:
            //  64-bit keys are printed the same way as 64-bit values
            return s_value_to_json (key, member);
    }
}

static json_t *
s_map_to_json (const ProtobufCFieldDescriptor *field, ProtobufCMessage *const *entries, size_t n)
{
    const ProtobufCMessageDescriptor *desc = field->descriptor;
    const ProtobufCFieldDescriptor *kf = &desc->fields[0];
    const ProtobufCFieldDescriptor *vf = &desc->fields[1];
    json_t *obj = json_object ();
    if (!obj)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        const ProtobufCMessage *entry = entries[i];
        if (!entry)
            continue;
        json_t *key = s_map_key_to_json (kf, (const char *) entry + kf->offset);
        json_t *value = s_value_to_json (vf, (const char *) entry + vf->offset);
        int rc = key && value ? json_object_set_new (obj, json_string_value (key), value) : -1;
        json_decref (key);
        if (rc != 0) {
            if (!key)
                json_decref (value);
            json_decref (obj);
            return NULL;
        }
    }
    return obj;
}

static json_t *
s_repeated_to_json (const ProtobufCFieldDescriptor *field, const void *array, size_t n)
{
    if (s_is_map (field))
        return s_map_to_json (field, (ProtobufCMessage *const *) array, n);
    json_t *arr = json_array ();
    if (!arr)
        return NULL;
    size_t size = s_elem_size (field->type);
    for (size_t i = 0; i < n; i++) {
        json_t *elem = s_value_to_json (field, (const char *) array + i * size);
        if (!elem || json_array_append_new (arr, elem) != 0) {
            json_decref (arr);
            return NULL;
        }
    }
    return arr;
}

static json_t *
s_message_to_json (const ProtobufCMessage *msg)
{
    const ProtobufCMessageDescriptor *desc = msg->descriptor;
    json_t *obj = json_object ();
    if (!obj)
        return NULL;
    for (unsigned i = 0; i < desc->n_fields; i++) {
        const ProtobufCFieldDescriptor *field = &desc->fields[i];
        if (!s_is_present (msg, field))
            continue;
        const char *member = (const char *) msg + field->offset;
        json_t *value;
        if (field->label == PROTOBUF_C_LABEL_REPEATED)
            value = s_repeated_to_json (
                field, *(void *const *) member,
                *(const size_t *) ((const char *) msg + field->quantifier_offset));
        else
            value = s_value_to_json (field, member);
        if (!value) {
            json_decref (obj);
            return NULL;
        }

        char small[128];
        char *name = s_name_buf (field->name, small, sizeof small);
        int rc = -1;
        if (name) {
            s_camel (field->name, 0, name);
            rc = json_object_set_new (obj, name, value);
            if (name != small)
                free (name);
        }
        else
            json_decref (value);
        if (rc != 0) {
            json_decref (obj);
            return NULL;
        }
    }
    return obj;
}

json_t *
crm_json_from_message (const ProtobufCMessage *msg)
{
    assert (msg);
    assert (msg->descriptor);
    return s_message_to_json (msg);
}

char *
crm_json_encode (const ProtobufCMessage *msg, int pretty)
{
    json_t *json = crm_json_from_message (msg);
    if (!json)
        return NULL;
    char *text = json_dumps (json, pretty ? JSON_INDENT (2) : JSON_COMPACT);
    json_decref (json);
    return text;
}

//  --------------------------------------------------------------------------
//  JSON to message

//  The current path, e.g. contact.phones[1].number, into buf.
static void
s_path (const s_decoder_t *dec, char *buf, size_t size)
{
    size_t k = 0;
    buf[0] = '\0';
    size_t nsegs = dec->nsegs < S_MAX_SEGS ? dec->nsegs : S_MAX_SEGS;
    for (size_t i = 0; i < nsegs && k < size; i++) {
        const s_seg_t *seg = &dec->segs[i];
        int n;
        if (seg->kind == S_SEG_KEY)
            n = snprintf (buf + k, size - k, "%s%s", i ? "." : "", seg->key);
        else if (seg->kind == S_SEG_INDEX)
            n = snprintf (buf + k, size - k, "[%zu]", seg->index);
        else
            n = snprintf (buf + k, size - k, "[\"%s\"]", seg->key);
        if (n < 0)
            break;
        k += (size_t) n;
    }
    if (dec->nsegs > S_MAX_SEGS && k + 4 < size)
        strcat (buf, "...");
}

//  Records why decoding failed: `field "path": reason`, or the bare reason at
//  the top level. Returns -1 for the caller to pass on.
static int s_fail (s_decoder_t *dec, const char *fmt, ...) __attribute__ ((format (printf, 2, 3)));

static int
s_fail (s_decoder_t *dec, const char *fmt, ...)
{
    if (!dec->err || dec->errlen == 0)
        return -1;
    char reason[256];
    va_list args;
    va_start (args, fmt);
    vsnprintf (reason, sizeof reason, fmt, args);
    va_end (args);
    if (dec->nsegs == 0)
        snprintf (dec->err, dec->errlen, "%s", reason);
    else {
        char path[512];
        s_path (dec, path, sizeof path);
        snprintf (dec->err, dec->errlen, "field \"%s\": %s", path, reason);
    }
    return -1;
}

static void
s_push (s_decoder_t *dec, s_seg_kind_t kind, const char *key, size_t index)
{
    if (dec->nsegs < S_MAX_SEGS) {
        dec->segs[dec->nsegs].kind = kind;
        dec->segs[dec->nsegs].key = key;
        dec->segs[dec->nsegs].index = index;
    }
    dec->nsegs++;
}

static void
s_pop (s_decoder_t *dec)
{
    assert (dec->nsegs > 0);
    dec->nsegs--;
}

//  Counts one more level of objects or arrays; fails past the limit.
static int
s_enter (s_decoder_t *dec)
{
    if (++dec->depth > S_MAX_DEPTH) {
        dec->depth--;
        return s_fail (dec, "json nested deeper than %d levels", S_MAX_DEPTH);
    }
    return 0;
}

static void
s_leave (s_decoder_t *dec)
{
    dec->depth--;
}

//  Splits "-123" / "123" into sign and magnitude. Only plain decimal digits
//  are integers here: no spaces, no '+', no exponent. Returns -1 when the text
//  is not one, 1 when it is but does not fit 64 bits, else 0.
static int
s_decimal (const char *s, size_t len, int *negative, uint64_t *magnitude)
{
    size_t i = 0;
    *negative = 0;
    *magnitude = 0;
    if (i < len && s[i] == '-') {
        *negative = 1;
        i++;
    }
    if (i == len)
        return -1;
    int overflow = 0;
    for (; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        unsigned digit = (unsigned) (s[i] - '0');
        if (*magnitude > (UINT64_MAX - digit) / 10)
            overflow = 1;
        else
            *magnitude = *magnitude * 10 + digit;
    }
    return overflow;
}

//  Sign and magnitude of an integer given as a JSON integer, an integral
//  real or a string of digits. Returns -1 (reported) when it is not an
//  integer, 1 when it is but too large for any 64-bit type, else 0.
static int
s_integer_parts (s_decoder_t *dec, const json_t *json, int *negative, uint64_t *magnitude)
{
    if (json_is_integer (json)) {
        json_int_t v = json_integer_value (json);
        *negative = v < 0;
        *magnitude = v < 0 ? (uint64_t) 0 - (uint64_t) v : (uint64_t) v;
        return 0;
    }
    if (json_is_real (json)) {
        double d = json_real_value (json);
        if (!isfinite (d) || d != trunc (d))
            return s_fail (dec, "expected integer");
        *negative = d < 0;
        double mag = fabs (d);
        if (mag >= 18446744073709551616.0)
            return 1;
        *magnitude = (uint64_t) mag;
        return 0;
    }
    if (json_is_string (json)) {
        int rc =
            s_decimal (json_string_value (json), json_string_length (json), negative, magnitude);
        if (rc < 0)
            return s_fail (dec, "expected integer");
        return rc;
    }
    return s_fail (dec, "expected integer");
}

static int
s_signed_from_parts (int negative, uint64_t magnitude, int64_t min, int64_t max, int64_t *out)
{
    if (negative) {
        if (magnitude > (uint64_t) INT64_MAX + 1)
            return -1;
        *out = magnitude == (uint64_t) INT64_MAX + 1 ? INT64_MIN : -(int64_t) magnitude;
    }
    else {
        if (magnitude > (uint64_t) INT64_MAX)
            return -1;
        *out = (int64_t) magnitude;
    }
    return *out < min || *out > max ? -1 : 0;
}

static int
s_unsigned_from_parts (int negative, uint64_t magnitude, uint64_t max, uint64_t *out)
{
    if (negative && magnitude != 0)
        return -1;
    if (magnitude > max)
        return -1;
    *out = magnitude;
    return 0;
}

static int
s_get_signed (s_decoder_t *dec, const json_t *json, ProtobufCType type, int64_t min, int64_t max,
              int64_t *out)
{
    int negative;
    uint64_t magnitude;
    int rc = s_integer_parts (dec, json, &negative, &magnitude);
    if (rc < 0)
        return -1;
    if (rc > 0 || s_signed_from_parts (negative, magnitude, min, max, out) != 0)
        return s_fail (dec, "value out of range for %s", s_type_name (type));
    return 0;
}

static int
s_get_unsigned (s_decoder_t *dec, const json_t *json, ProtobufCType type, uint64_t max,
                uint64_t *out)
{
    int negative;
    uint64_t magnitude;
    int rc = s_integer_parts (dec, json, &negative, &magnitude);
    if (rc < 0)
        return -1;
    if (rc > 0 || s_unsigned_from_parts (negative, magnitude, max, out) != 0)
        return s_fail (dec, "value out of range for %s", s_type_name (type));
    return 0;
}

static int
s_get_double (s_decoder_t *dec, const json_t *json, double *out)
{
    if (json_is_number (json)) {
        *out = json_number_value (json);
        return 0;
    }
    if (!json_is_string (json))
        return s_fail (dec, "expected number");
    const char *s = json_string_value (json);
    size_t len = json_string_length (json);
    if (strcmp (s, "NaN") == 0)
        *out = NAN;
    else if (strcmp (s, "Infinity") == 0)
        *out = INFINITY;
    else if (strcmp (s, "-Infinity") == 0)
        *out = -INFINITY;
    else {
        //  A number in a string: strtod alone would also take hex, "inf" and
        //  leading spaces, so only the characters of a JSON number pass
        if (len == 0 || len != strspn (s, "0123456789+-.eE"))
            return s_fail (dec, "expected number");
        char *end;
        double d = strtod (s, &end);
        if (end != s + len)
            return s_fail (dec, "expected number");
        if (isinf (d))
            return s_fail (dec, "value out of range for double");
        *out = d;
    }
    return 0;
}

//  Strict base64, standard or URL-safe alphabet, padding optional. The
//  result is always a fresh allocation (one byte even when empty) so that
//  protobuf-c frees it like any unpacked value.
static int
s_base64_decode (const char *s, size_t len, ProtobufCBinaryData *out)
{
    size_t pad = 0;
    while (len > 0 && s[len - 1] == '=' && pad < 2) {
        len--;
        pad++;
    }
    if (pad > 0 && (len + pad) % 4 != 0)
        return -1;
    if (len % 4 == 1)
        return -1;
    size_t outlen = len / 4 * 3 + (len % 4 ? len % 4 - 1 : 0);
    uint8_t *data = malloc (outlen ? outlen : 1);
    if (!data)
        return -1;
    uint32_t acc = 0;
    int bits = 0;
    size_t k = 0;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        uint32_t v;
        if (c >= 'A' && c <= 'Z')
            v = (uint32_t) (c - 'A');
        else if (c >= 'a' && c <= 'z')
            v = (uint32_t) (c - 'a' + 26);
        else if (c >= '0' && c <= '9')
            v = (uint32_t) (c - '0' + 52);
        else if (c == '+' || c == '-')
            v = 62;
        else if (c == '/' || c == '_')
            v = 63;
        else {
            free (data);
            return -1;
        }
        acc = (acc << 6 | v) & 0xFFFFFF;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            data[k++] = (uint8_t) (acc >> bits);
        }
    }
    assert (k == outlen);
    out->len = outlen;
    out->data = data;
    return 0;
}

static int
s_get_enum (s_decoder_t *dec, const json_t *json, const ProtobufCEnumDescriptor *ed, int32_t *out)
{
    if (json_is_string (json)) {
        const char *name = json_string_value (json);
        const ProtobufCEnumValue *ev = NULL;
        if (strlen (name) == json_string_length (json))
            ev = protobuf_c_enum_descriptor_get_value_by_name (ed, name);
        if (!ev)
            return s_fail (dec, "unknown value \"%s\" for enum %s", name, ed->name);
        *out = ev->value;
        return 0;
    }
    if (json_is_integer (json) || json_is_real (json)) {
        int64_t v;
        if (s_get_signed (dec, json, PROTOBUF_C_TYPE_ENUM, INT32_MIN, INT32_MAX, &v) != 0)
            return -1;
        if (!protobuf_c_enum_descriptor_get_value (ed, (int) v))
            return s_fail (dec, "unknown value %" PRId64 " for enum %s", v, ed->name);
        *out = (int32_t) v;
        return 0;
    }
    return s_fail (dec, "expected enum name or number");
}

static int
s_get_string (s_decoder_t *dec, const json_t *json, char **out)
{
    if (!json_is_string (json))
        return s_fail (dec, "expected string");
    const char *s = json_string_value (json);
    size_t len = json_string_length (json);
    //  protobuf-c strings end at the first NUL; one inside would cut the text
    if (memchr (s, '\0', len))
        return s_fail (dec, "string contains a nul character");
    if (!s_utf8_valid (s, len))
        return s_fail (dec, "invalid utf-8 in string");
    char *copy = malloc (len + 1);
    if (!copy)
        return s_fail (dec, "out of memory");
    memcpy (copy, s, len + 1);
    *out = copy;
    return 0;
}

static ProtobufCMessage *
s_message_new (const ProtobufCMessageDescriptor *desc)
{
    //  The system allocator, as protobuf-c's default, so that
    //  protobuf_c_message_free_unpacked (msg, NULL) releases it
    ProtobufCMessage *msg = malloc (desc->sizeof_message);
    if (msg)
        protobuf_c_message_init (desc, msg);
    return msg;
}

static ProtobufCMessage *
s_message_from_json (s_decoder_t *dec, const ProtobufCMessageDescriptor *desc, const json_t *json)
{
    if (!json_is_object (json)) {
        s_fail (dec, "expected object");
        return NULL;
    }
    ProtobufCMessage *msg = s_message_new (desc);
    if (!msg) {
        s_fail (dec, "out of memory");
        return NULL;
    }
    if (s_fill_message (dec, msg, json) != 0) {
        protobuf_c_message_free_unpacked (msg, NULL);
        return NULL;
    }
    return msg;
}

//  Decodes one element of the field's type into out; nothing is stored (and
//  nothing is owned) unless it succeeds.
static int
s_get_value (s_decoder_t *dec, const ProtobufCFieldDescriptor *field, const json_t *json,
             s_value_t *out)
{
    int64_t i64;
    uint64_t u64;
    double d;

    switch (field->type) {
        case PROTOBUF_C_TYPE_INT32:
        case PROTOBUF_C_TYPE_SINT32:
        case PROTOBUF_C_TYPE_SFIXED32:
            if (s_get_signed (dec, json, field->type, INT32_MIN, INT32_MAX, &i64) != 0)
                return -1;
            out->i32 = (int32_t) i64;
            return 0;
        case PROTOBUF_C_TYPE_UINT32:
        case PROTOBUF_C_TYPE_FIXED32:
            if (s_get_unsigned (dec, json, field->type, UINT32_MAX, &u64) != 0)
                return -1;
            out->u32 = (uint32_t) u64;
            return 0;
        case PROTOBUF_C_TYPE_INT64:
        case PROTOBUF_C_TYPE_SINT64:
        case PROTOBUF_C_TYPE_SFIXED64:
            return s_get_signed (dec, json, field->type, INT64_MIN, INT64_MAX, &out->i64);
        case PROTOBUF_C_TYPE_UINT64:
        case PROTOBUF_C_TYPE_FIXED64:
            return s_get_unsigned (dec, json, field->type, UINT64_MAX, &out->u64);
        case PROTOBUF_C_TYPE_FLOAT:
            if (s_get_double (dec, json, &d) != 0)
                return -1;
            if (isfinite (d) && fabs (d) > FLT_MAX)
                return s_fail (dec, "value out of range for float");
            out->f = (float) d;
            return 0;
        case PROTOBUF_C_TYPE_DOUBLE:
            return s_get_double (dec, json, &out->d);
        case PROTOBUF_C_TYPE_BOOL:
            if (!json_is_boolean (json))
                return s_fail (dec, "expected boolean");
            out->b = json_is_true (json);
            return 0;
        case PROTOBUF_C_TYPE_ENUM:
            return s_get_enum (dec, json, field->descriptor, &out->i32);
        case PROTOBUF_C_TYPE_STRING:
            return s_get_string (dec, json, &out->str);
        case PROTOBUF_C_TYPE_BYTES:
            if (!json_is_string (json))
                return s_fail (dec, "expected base64 string");
            if (s_base64_decode (json_string_value (json), json_string_length (json),
                                 &out->bytes) != 0)
                return s_fail (dec, "invalid base64");
            return 0;
        case PROTOBUF_C_TYPE_MESSAGE:
            out->msg = s_message_from_json (dec, field->descriptor, json);
            return out->msg ? 0 : -1;
    }
    return s_fail (dec, "unsupported field type");
}

//  Copies a decoded element into its place in a message or array.
static void
s_store (const ProtobufCFieldDescriptor *field, const s_value_t *value, void *member)
{
    memcpy (member, value, s_elem_size (field->type));
}

//  Stores a decoded singular value in msg and marks it present the way
//  protobuf-c expects: the oneof case, or has_ for optional non-pointer
//  fields. What was in the member is a static default (the message is new
//  and each field is set at most once), so overwriting it leaks nothing.
static void
s_store_field (ProtobufCMessage *msg, const ProtobufCFieldDescriptor *field, const s_value_t *value)
{
    char *qmember = (char *) msg + field->quantifier_offset;
    s_store (field, value, (char *) msg + field->offset);
    if (field->flags & PROTOBUF_C_FIELD_FLAG_ONEOF)
        *(uint32_t *) qmember = field->id;
    else if (field->label == PROTOBUF_C_LABEL_OPTIONAL && field->type != PROTOBUF_C_TYPE_STRING &&
             field->type != PROTOBUF_C_TYPE_MESSAGE)
        *(protobuf_c_boolean *) qmember = 1;
}

static int
s_set_repeated (s_decoder_t *dec, ProtobufCMessage *msg, const ProtobufCFieldDescriptor *field,
                const json_t *json)
{
    if (!json_is_array (json))
        return s_fail (dec, "expected array");
    if (s_enter (dec) != 0)
        return -1;
    int rc = 0;
    size_t n = json_array_size (json);
    if (n > 0) {
        size_t size = s_elem_size (field->type);
        char *array = calloc (n, size);
        if (!array) {
            s_leave (dec);
            return s_fail (dec, "out of memory");
        }
        //  Attached before filling: on failure the caller frees the message
        //  and with it whatever elements were decoded so far
        *(void **) ((char *) msg + field->offset) = array;
        *(size_t *) ((char *) msg + field->quantifier_offset) = n;
        for (size_t i = 0; i < n && rc == 0; i++) {
            s_value_t value;
            s_push (dec, S_SEG_INDEX, NULL, i);
            rc = s_get_value (dec, field, json_array_get (json, i), &value);
            if (rc == 0)
                s_store (field, &value, array + i * size);
            s_pop (dec);
        }
    }
    s_leave (dec);
    return rc;
}

//  A JSON object key as a map key of the entry's key type.
static int
s_get_map_key (s_decoder_t *dec, const ProtobufCFieldDescriptor *kf, const char *key, size_t keylen,
               s_value_t *out)
{
    int negative;
    uint64_t magnitude;
    int64_t i64;

    switch (kf->type) {
        case PROTOBUF_C_TYPE_STRING: {
            if (memchr (key, '\0', keylen))
                return s_fail (dec, "map key contains a nul character");
            if (!s_utf8_valid (key, keylen))
                return s_fail (dec, "invalid utf-8 in map key");
            char *copy = malloc (keylen + 1);
            if (!copy)
                return s_fail (dec, "out of memory");
            memcpy (copy, key, keylen);
            copy[keylen] = '\0';
            out->str = copy;
            return 0;
        }
        case PROTOBUF_C_TYPE_BOOL:
            if (keylen == 4 && memcmp (key, "true", 4) == 0)
                out->b = 1;
            else if (keylen == 5 && memcmp (key, "false", 5) == 0)
                out->b = 0;
            else
                return s_fail (dec, "expected map key \"true\" or \"false\"");
            return 0;
        default:
            break;
    }
    int rc = s_decimal (key, keylen, &negative, &magnitude);
    if (rc < 0)
        return s_fail (dec, "expected integer map key");
    switch (kf->type) {
        case PROTOBUF_C_TYPE_INT32:
        case PROTOBUF_C_TYPE_SINT32:
        case PROTOBUF_C_TYPE_SFIXED32:
            if (rc > 0 || s_signed_from_parts (negative, magnitude, INT32_MIN, INT32_MAX, &i64))
                break;
            out->i32 = (int32_t) i64;
            return 0;
        case PROTOBUF_C_TYPE_INT64:
        case PROTOBUF_C_TYPE_SINT64:
        case PROTOBUF_C_TYPE_SFIXED64:
            if (rc > 0 || s_signed_from_parts (negative, magnitude, INT64_MIN, INT64_MAX, &i64))
                break;
            out->i64 = i64;
            return 0;
        case PROTOBUF_C_TYPE_UINT32:
        case PROTOBUF_C_TYPE_FIXED32:
            if (rc > 0 || s_unsigned_from_parts (negative, magnitude, UINT32_MAX, &out->u64))
                break;
            out->u32 = (uint32_t) out->u64;
            return 0;
        case PROTOBUF_C_TYPE_UINT64:
        case PROTOBUF_C_TYPE_FIXED64:
            if (rc > 0 || s_unsigned_from_parts (negative, magnitude, UINT64_MAX, &out->u64))
                break;
            return 0;
        default:
            return s_fail (dec, "unsupported map key type");
    }
    return s_fail (dec, "map key out of range for %s", s_type_name (kf->type));
}

static int
s_set_map (s_decoder_t *dec, ProtobufCMessage *msg, const ProtobufCFieldDescriptor *field,
           const json_t *json)
{
    if (!json_is_object (json))
        return s_fail (dec, "expected object");
    if (s_enter (dec) != 0)
        return -1;
    const ProtobufCMessageDescriptor *edesc = field->descriptor;
    const ProtobufCFieldDescriptor *kf = &edesc->fields[0];
    const ProtobufCFieldDescriptor *vf = &edesc->fields[1];
    int rc = 0;
    size_t n = json_object_size (json);
    if (n > 0) {
        ProtobufCMessage **entries = calloc (n, sizeof *entries);
        if (!entries) {
            s_leave (dec);
            return s_fail (dec, "out of memory");
        }
        *(ProtobufCMessage ***) ((char *) msg + field->offset) = entries;
        *(size_t *) ((char *) msg + field->quantifier_offset) = n;
        size_t i = 0;
        json_t *obj = s_mutable (json);
        for (void *it = json_object_iter (obj); it && rc == 0 && i < n;
             it = json_object_iter_next (obj, it), i++) {
            const char *key = json_object_iter_key (it);
            size_t keylen = json_object_iter_key_len (it);
            const json_t *value = json_object_iter_value (it);
            s_push (dec, S_SEG_MAPKEY, key, 0);
            ProtobufCMessage *entry = s_message_new (edesc);
            if (!entry)
                rc = s_fail (dec, "out of memory");
            else {
                s_value_t k;
                entries[i] = entry;
                rc = s_get_map_key (dec, kf, key, keylen, &k);
                if (rc == 0)
                    s_store_field (entry, kf, &k);
                if (rc == 0 && json_is_null (value))
                    rc = s_fail (dec, "map value must not be null");
                if (rc == 0)
                    rc = s_set_field (dec, entry, vf, value);
            }
            s_pop (dec);
        }
    }
    s_leave (dec);
    return rc;
}

//  Decodes one field's JSON value into msg. null leaves the default.
static int
s_set_field (s_decoder_t *dec, ProtobufCMessage *msg, const ProtobufCFieldDescriptor *field,
             const json_t *json)
{
    if (json_is_null (json))
        return 0;
    if (field->label == PROTOBUF_C_LABEL_REPEATED)
        return s_is_map (field) ? s_set_map (dec, msg, field, json)
                                : s_set_repeated (dec, msg, field, json);

    const char *qmember = (const char *) msg + field->quantifier_offset;
    if ((field->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) && *(const uint32_t *) qmember != 0)
        return s_fail (dec, "another field of the same oneof is already set");

    s_value_t value;
    if (s_get_value (dec, field, json, &value) != 0)
        return -1;
    s_store_field (msg, field, &value);
    return 0;
}

static int
s_fill_message (s_decoder_t *dec, ProtobufCMessage *msg, const json_t *json)
{
    const ProtobufCMessageDescriptor *desc = msg->descriptor;
    if (s_enter (dec) != 0)
        return -1;
    //  Which fields were given: the same field under both its names is refused
    unsigned char *seen = calloc (desc->n_fields + 1, 1);
    if (!seen) {
        s_leave (dec);
        return s_fail (dec, "out of memory");
    }
    int rc = 0;
    json_t *obj = s_mutable (json);
    for (void *it = json_object_iter (obj); it && rc == 0; it = json_object_iter_next (obj, it)) {
        const char *key = json_object_iter_key (it);
        size_t keylen = json_object_iter_key_len (it);
        unsigned i;
        for (i = 0; i < desc->n_fields; i++)
            if (s_name_matches (desc->fields[i].name, key, keylen))
                break;
        s_push (dec, S_SEG_KEY, key, 0);
        if (i == desc->n_fields) {
            if (dec->err && dec->errlen) {
                char path[512];
                s_path (dec, path, sizeof path);
                snprintf (dec->err, dec->errlen, "unknown field \"%s\"", path);
            }
            rc = -1;
        }
        else if (seen[i])
            rc = s_fail (dec, "field given more than once");
        else {
            seen[i] = 1;
            rc = s_set_field (dec, msg, &desc->fields[i], json_object_iter_value (it));
        }
        s_pop (dec);
    }
    free (seen);
    s_leave (dec);
    return rc;
}

ProtobufCMessage *
crm_json_to_message (const ProtobufCMessageDescriptor *desc, const json_t *json, char *err,
                     size_t errlen)
{
    assert (desc);
    assert (desc->magic == PROTOBUF_C__MESSAGE_DESCRIPTOR_MAGIC);
    s_decoder_t dec;
    dec.err = err;
    dec.errlen = errlen;
    dec.depth = 0;
    dec.nsegs = 0;
    if (err && errlen)
        err[0] = '\0';
    if (!json_is_object (json)) {
        s_fail (&dec, "expected a json object at the top level");
        return NULL;
    }
    return s_message_from_json (&dec, desc, json);
}

ProtobufCMessage *
crm_json_decode (const ProtobufCMessageDescriptor *desc, const char *text, size_t len, char *err,
                 size_t errlen)
{
    assert (desc);
    assert (text || len == 0);
    json_error_t jerr;
    //  Any top-level value is parsed so that a non-object gets our message
    json_t *json =
        json_loadb (text ? text : "", len, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, &jerr);
    if (!json) {
        if (err && errlen)
            snprintf (err, errlen, "invalid json at line %d column %d: %s", jerr.line, jerr.column,
                      jerr.text);
        return NULL;
    }
    ProtobufCMessage *msg = crm_json_to_message (desc, json, err, errlen);
    json_decref (json);
    return msg;
}
