/*  crm_proto.h - the wire envelope of the suite and a registry of every protobuf type in proto/. */
#ifndef CRM_PROTO_H_INCLUDED
#define CRM_PROTO_H_INCLUDED

#include <czmq.h>
#include <protobuf-c/protobuf-c.h>

#include "crm/v1/common.pb-c.h"

//  Largest request or reply frame the suite accepts, bytes (ZMQ_MAXMSGSIZE).
#define CRM_MAX_MESSAGE_BYTES (1024 * 1024)

//  The proto service of an MDP service name ("contacts" -> crm.v1.Contacts),
//  or NULL. Borrowed.
const ProtobufCServiceDescriptor *crm_proto_find_service (const char *mdp_service);

//  A method of a proto service by name ("CreateContact"), or NULL. Borrowed.
const ProtobufCMethodDescriptor *crm_proto_find_method (const ProtobufCServiceDescriptor *service,
                                                        const char *method);

//  A message type by full name ("crm.v1.Contact"), or NULL. Borrowed.
const ProtobufCMessageDescriptor *crm_proto_find_message (const char *full_name);

//  Every proto service, NULL-terminated. Borrowed.
const ProtobufCServiceDescriptor *const *crm_proto_services (void);

//  GRPC-style name of a status code ("NOT_FOUND"); "UNKNOWN" if out of range.
const char *crm_status_name (int code);

//  Status code by name ("NOT_FOUND" or "STATUS_NOT_FOUND"), -1 if none.
int crm_status_from_name (const char *name);

//  A request body: [method][RequestMeta][payload]. Caller owns the result.
zmsg_t *crm_proto_request_new (const char *method, const Crm__V1__RequestMeta *meta,
                               const ProtobufCMessage *payload);

//  A reply body: [Status][payload]; payload may be NULL (an empty frame).
//  Caller owns the result.
zmsg_t *crm_proto_reply_new (int code, const char *message, const char *request_id,
                             const ProtobufCMessage *payload);

//  Splits a reply body. On success *status_p is a new Status (free with
//  crm__v1__status__free_unpacked) and *payload_p the payload frame, borrowed
//  from reply. -1 when the body is not a well-formed reply.
int crm_proto_reply_parse (zmsg_t *reply, Crm__V1__Status **status_p, zframe_t **payload_p);

//  Packs a message into a new frame. Caller owns the result.
zframe_t *crm_proto_pack (const ProtobufCMessage *msg);

#endif
