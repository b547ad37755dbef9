/* gw_json: the proto3 JSON mapping over protobuf-c descriptors, for the
 * HTTP/JSON gateway (DESIGN.md §8). Generic: it walks descriptors and knows
 * no recordd message (an Any resolves its type among the types reachable
 * from the message at hand and the google.rpc error details, plus
 * recordd.v1.CommitReceipt, that error details carry). Names: lowerCamelCase
 * json_name on output, both the json_name and the proto name accepted on
 * input. 64-bit integers are strings on output, strings or numbers on input;
 * enums by name on output, name or number on input; bytes as base64;
 * well-known types in their JSON form (Struct, Value, ListValue, Timestamp,
 * Duration, FieldMask, the wrappers, Any as {"@type", ...} for the
 * google.rpc detail types). Everything decoded is allocated in the caller's
 * arena. docs/API.md, "JSON mapping", lists the choices and limits. */
#ifndef GW_JSON_H
#define GW_JSON_H

#include <jansson.h>
#include <stdbool.h>
#include <protobuf-c/protobuf-c.h>
#include <stddef.h>

#include "common/rd.h"

/* Limits of the decoder (documented in docs/API.md). */
#define GW_JSON_MAX_DEPTH 64               /* nesting of objects and arrays */
#define GW_JSON_MAX_BODY ((size_t)4 << 20) /* bytes of one request body */

/* Parses text (len bytes, need not be NUL-terminated) into a new jansson
 * value. Errors (RD_INVALID_BODY): malformed JSON (message names line and
 * column), invalid UTF-8, nesting over GW_JSON_MAX_DEPTH, more than
 * GW_JSON_MAX_BODY bytes, a top level that is not an object. */
rd_code gw_json_parse(const char *text, size_t len, json_t **out, rd_err *err);

/* Decodes a JSON object into a new message of type d allocated in a.
 * Unknown member → RD_UNKNOWN_FIELD with err->field the JSON path
 * ("data" members are free-form: Struct); a value of the wrong type, an
 * unknown enum name, a bad Timestamp → RD_INVALID_BODY naming the field.
 * JSON null for a singular field means "not set" (for Value it is
 * NULL_VALUE). */
rd_code gw_json_decode(const ProtobufCMessageDescriptor *d, const json_t *obj, rd_arena *a,
                       ProtobufCMessage **out, rd_err *err);

/* Merges a JSON object into an existing message (members present in obj
 * overwrite, repeated fields are replaced). Same errors as gw_json_decode.
 * Used for `body: "*"` after path variables were set. */
rd_code gw_json_merge(ProtobufCMessage *m, const json_t *obj, rd_arena *a, rd_err *err);

/* Sets one field from a string as a path variable or query parameter
 * carries it: path is a dotted field path of proto or json names
 * ("model", "read_at", "readAt", "expected_version" for a wrapper sets its
 * value); the string is converted to the field's type (numbers, "true" /
 * "false", enum names or numbers, Timestamp as RFC 3339, bytes base64).
 * A repeated field gets the value appended. Unknown path → RD_UNKNOWN_FIELD;
 * unconvertible value → RD_INVALID_BODY; both name the field. */
rd_code gw_json_set(ProtobufCMessage *m, const char *path, const char *value, rd_arena *a,
                    rd_err *err);

/* Sets the field at path (as for gw_json_set; must be a message field or
 * a Struct/Value field) from a JSON value: for `body: "field"`. */
rd_code gw_json_set_value(ProtobufCMessage *m, const char *path, const json_t *v, rd_arena *a,
                          rd_err *err);

/* Encodes m as a new jansson object (proto3 JSON: fields with default
 * values omitted, except inside Struct/Value). NULL on out of memory, an
 * Any whose type is unknown or a Timestamp/Duration out of its range. */
json_t *gw_json_encode(const ProtobufCMessage *m);

/* Encodes m as compact JSON text (malloc'd, NUL-terminated; *len gets its
 * length). Always valid JSON with every string properly escaped. NULL on
 * out of memory. */
char *gw_json_encode_text(const ProtobufCMessage *m, size_t *len);

/* Writes any jansson value as compact JSON text the way gw_json_encode_text
 * does (malloc'd, NUL-terminated; len may be NULL): pure ASCII (every
 * non-ASCII character, U+2028/U+2029 included, as a \u escape, invalid
 * UTF-8 as U+FFFD), control characters escaped, numbers in the shortest
 * form that reads back the same. For problem+json bodies. NULL on out of
 * memory. */
char *gw_json_dump(const json_t *v, size_t *len);

/* protoc's json_name of a proto field name ("read_at" → "readAt") into out
 * (cap bytes, truncated, NUL-terminated). */
void gw_json_name(const char *proto, char *out, size_t cap);

/* Whether f is a proto map field (a repeated XxxEntry {key = 1; value = 2}):
 * a JSON object in the mapping. */
bool gw_json_is_map(const ProtobufCFieldDescriptor *f);

#endif
