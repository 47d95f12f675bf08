/*  crm_json.h - generic protobuf <-> JSON through protobuf-c descriptors (proto3 JSON mapping). */
#ifndef CRM_JSON_H_INCLUDED
#define CRM_JSON_H_INCLUDED

#include <jansson.h>
#include <protobuf-c/protobuf-c.h>
#include <stddef.h>

//  The message as a JSON object: lowerCamelCase names, 64-bit integers as
//  strings, enums by name, bytes in base64, default values omitted. Caller owns
//  the result (json_decref).
json_t *crm_json_from_message (const ProtobufCMessage *msg);

//  The same as compact text (pretty != 0: indented). Caller frees.
char *crm_json_encode (const ProtobufCMessage *msg, int pretty);

//  A new message of type desc from a JSON object. Field names in
//  lowerCamelCase or as in the .proto; numbers or strings for integers; enum
//  names or numbers. An unknown field, a wrong type or an out-of-range value
//  fails: NULL, with the reason in err. Caller frees the result with
//  protobuf_c_message_free_unpacked (msg, NULL).
ProtobufCMessage *crm_json_to_message (const ProtobufCMessageDescriptor *desc, const json_t *json,
                                       char *err, size_t errlen);

//  The same from text.
ProtobufCMessage *crm_json_decode (const ProtobufCMessageDescriptor *desc, const char *text,
                                   size_t len, char *err, size_t errlen);

#endif
