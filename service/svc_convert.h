/* svc_convert: conversions between the wire types (protobuf-c) and the
 * store's types (jansson data, store_record). Everything built for the wire
 * is allocated in the call's arena; jansson values are owned by the caller. */
#ifndef SVC_CONVERT_H
#define SVC_CONVERT_H

#include <jansson.h>

#include "google/protobuf/struct.pb-c.h"
#include "google/protobuf/timestamp.pb-c.h"
#include "recordd/v1/records.pb-c.h"
#include "store/store.h"

/* Converts record data (a Struct; NULL = empty object) into a new jansson
 * object. Rejects (RD_VALIDATION_FAILED, field = the top-level key) values
 * nested deeper than STORE_MAX_DEPTH, numbers that are not finite and values
 * without a kind. Integral numbers within ±2^53 become JSON integers. */
rd_code svc_struct_to_json(const Google__Protobuf__Struct *s, json_t **out, rd_err *err);
/* A single Value; path names it in errors. */
rd_code svc_value_to_json(const Google__Protobuf__Value *v, const char *path, json_t **out,
                          rd_err *err);

/* Builds a Struct / Value in the arena from jansson (store data, which the
 * store already checked), with the proto3 JSON decoder of gw_json.c. NULL
 * when out of memory; a Struct of NULL or a non-object is empty. */
Google__Protobuf__Struct *svc_json_to_struct(rd_arena *a, const json_t *obj);
Google__Protobuf__Value *svc_json_to_value(rd_arena *a, const json_t *v);

Google__Protobuf__Timestamp *svc_timestamp(rd_arena *a, int64_t t_us);

/* A Record in the arena from a stored record. */
Recordd__V1__Record *svc_record_to_pb(rd_arena *a, const char *org, const char *model,
                                      const store_record *rec, int64_t read_at);

/* Nesting limit for requests, counted in protobuf messages. A Struct
 * level costs three (Struct, entry, Value), so this admits about 200 JSON
 * levels: deep enough that the data checks (STORE_MAX_DEPTH) name the
 * offending field, shallow enough for a worker's stack. */
#define SVC_MAX_PB_DEPTH 600

/* The gate in front of protobuf-c's unpacker: walks the wire bytes of a
 * message of type d without decoding it and rejects (RD_INVALID_BODY, field
 * = the field path) messages nested deeper than SVC_MAX_PB_DEPTH, which
 * would exhaust the stack of the recursive unpacker, and strings that are
 * not UTF-8 or hold a NUL, which protobuf-c would silently truncate.
 * Malformed framing is left for the unpacker to reject. */
rd_code svc_pb_precheck(const ProtobufCMessageDescriptor *d, const uint8_t *buf, size_t len,
                        rd_err *err);

#endif
