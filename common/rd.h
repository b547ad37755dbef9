/* recordd common base: the one error table, error values and the per-call
 * arena. Every module includes this; nothing here knows gRPC, HTTP or SQLite
 * beyond the numbers in the error table. */
#ifndef RD_H
#define RD_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The error table (DESIGN.md §7). One row per code:
 *   X(enum name, stable string code, gRPC status code, HTTP status,
 *     HTTP status when the error answers a failed If-Match precondition, or 0)
 * Rows are only ever appended; never reorder or remove one. */
#define RD_CODE_TABLE(X)                                                                           \
    X(RD_OK, "ok", 0, 200, 0)                                                                      \
    X(RD_INVALID_BODY, "invalid_body", 3, 400, 0)                                                  \
    X(RD_UNKNOWN_FIELD, "unknown_field", 3, 422, 0)                                                \
    X(RD_VALIDATION_FAILED, "validation_failed", 3, 422, 0)                                        \
    X(RD_FILTER_REQUIRED, "filter_required", 3, 422, 0)                                            \
    X(RD_TOO_MANY_OPERATIONS, "too_many_operations", 3, 422, 0)                                    \
    X(RD_UNAUTHENTICATED, "unauthenticated", 16, 401, 0)                                           \
    X(RD_TOKEN_EXPIRED, "token_expired", 16, 401, 0)                                               \
    X(RD_PERMISSION_DENIED, "permission_denied", 7, 403, 0)                                        \
    X(RD_NOT_FOUND, "not_found", 5, 404, 412)                                                      \
    X(RD_DUPLICATE_RECORD, "duplicate_record", 6, 409, 0)                                          \
    X(RD_IDEMPOTENCY_KEY_REUSED, "idempotency_key_reused", 6, 409, 0)                              \
    X(RD_VERSION_CONFLICT, "version_conflict", 10, 409, 412)                                       \
    X(RD_STALE_CONTEXT, "stale_context", 10, 409, 0)                                               \
    X(RD_CLAIMED, "claimed", 10, 409, 0)                                                           \
    X(RD_IDEMPOTENCY_IN_PROGRESS, "idempotency_in_progress", 10, 409, 0)                           \
    X(RD_RATE_LIMITED, "rate_limited", 8, 429, 0)                                                  \
    X(RD_DEADLINE_EXCEEDED, "deadline_exceeded", 4, 504, 0)                                        \
    X(RD_UNAVAILABLE, "unavailable", 14, 503, 0)                                                   \
    X(RD_INTERNAL, "internal", 13, 500, 0)                                                         \
    X(RD_DESTRUCTIVE_CHANGE, "destructive_change", 9, 409, 0)                                      \
    X(RD_UNIMPLEMENTED, "unimplemented", 12, 501, 0)                                               \
    X(RD_METHOD_NOT_ALLOWED, "method_not_allowed", 12, 405, 0)                                     \
    X(RD_UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type", 3, 415, 0)                              \
    X(RD_BODY_TOO_LARGE, "body_too_large", 3, 413, 0)                                              \
    X(RD_SYNC_ID_EXPIRED, "sync_id_expired", 9, 410, 0)                                            \
    X(RD_TOO_MANY_ROWS, "too_many_rows", 3, 422, 0)                                                \
    X(RD_CANCELLED, "cancelled", 1, 499, 0)                                                        \
    X(RD_REFERENCE_NOT_FOUND, "reference_not_found", 3, 422, 0)                                    \
    X(RD_REFERENCED, "referenced", 9, 409, 0)

typedef enum rd_code {
#define RD_X_ENUM(name, str, grpc, http, precondition) name,
    RD_CODE_TABLE(RD_X_ENUM)
#undef RD_X_ENUM
        RD_CODE_COUNT
} rd_code;

/* Stable string code ("not_found"); "internal" for an out-of-range value. */
const char *rd_code_str(rd_code c);
/* gRPC status code number (grpc_status_code values). */
int rd_code_grpc(rd_code c);
/* HTTP status. */
int rd_code_http(rd_code c);
/* HTTP status when the error is the answer to an If-Match the request
 * sent (412 Precondition Failed for a version conflict), 0 when the
 * precondition plays no part in it. */
int rd_code_http_precondition(rd_code c);
/* The error catalogue (docs/errors.md, GET /problems/{code}): whether a
 * client may send the same request again and expect another answer, what
 * the code means and what to do about it. */
typedef struct rd_code_doc {
    bool retryable;
    const char *meaning;
    const char *action;
} rd_code_doc;
const rd_code_doc *rd_code_describe(rd_code c);
/* The catalogue entry of c as Markdown (a "## code" section) into buf of
 * cap bytes, NUL-terminated; returns the length it needed (snprintf's
 * rule). */
size_t rd_code_entry_md(rd_code c, char *buf, size_t cap);
/* The whole catalogue as Markdown (docs/errors.md), malloc'd; NULL when
 * out of memory. */
char *rd_code_catalogue_md(void);

/* The code whose stable string is s (a stored receipt's error code);
 * RD_INTERNAL when s is NULL or names no row. */
rd_code rd_code_from_str(const char *s);

/* An error travelling up from the store: a code, the field it concerns (may
 * be empty) and a message for humans. Never holds a secret. */
typedef struct rd_err {
    rd_code code;
    char field[128];
    char msg[384];
} rd_err;

/* Sets *e (when e is not NULL) and returns code. field may be NULL. */
rd_code rd_errf(rd_err *e, rd_code code, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static inline void rd_err_clear(rd_err *e)
{
    e->code = RD_OK;
    e->field[0] = '\0';
    e->msg[0] = '\0';
}

/* ---- per-call arena ------------------------------------------------------
 * A bump allocator: everything a call allocates comes from its arena and is
 * released at once by rd_arena_free. Not thread-safe: one owner at a time.
 * Allocation fails (NULL) once the arena holds more than its cap. */
typedef struct rd_arena rd_arena;

rd_arena *rd_arena_new(size_t cap_bytes);
void rd_arena_free(rd_arena *a);
/* Forget every allocation but keep the first block for reuse. */
void rd_arena_reset(rd_arena *a);
void *rd_arena_alloc(rd_arena *a, size_t n);
void *rd_arena_calloc(rd_arena *a, size_t n);
char *rd_arena_strdup(rd_arena *a, const char *s);
char *rd_arena_strndup(rd_arena *a, const char *s, size_t n);
char *rd_arena_printf(rd_arena *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Registers fn(arg) to run when the arena is reset or freed, the newest
 * registration first, before its memory goes: the release of what a call
 * holds outside its arena (jansson values, schema references, malloc'd
 * buffers), so the owner of the arena is the one owner of everything the
 * call holds. False when the arena is full: nothing is registered and the
 * caller releases at once. */
bool rd_arena_on_release(rd_arena *a, void (*fn)(void *arg), void *arg);
/* A protobuf-c allocator drawing from the arena (free is a no-op). */
struct ProtobufCAllocator;
void rd_arena_pb_allocator(rd_arena *a, struct ProtobufCAllocator *out);

/* ---- small utilities ---------------------------------------------------- */
/* Microseconds since the Unix epoch (CLOCK_REALTIME). */
int64_t rd_now_us(void);
/* 1 when s[0..n) is well-formed UTF-8 without NUL bytes. */
int rd_utf8_valid(const char *s, size_t n);
/* Formats t (µs since epoch, UTC) as RFC 3339 with 'Z' and 0, 3 or 6
 * fractional digits into buf (at least 32 bytes). Returns buf. */
char *rd_rfc3339(int64_t t_us, char *buf, size_t len);
/* Parses an RFC 3339 timestamp (offset or Z required). 0 on success. */
int rd_parse_rfc3339(const char *s, int64_t *t_us);
/* Fills buf with a random lowercase base32 string of n chars + NUL, prefixed by prefix. */
void rd_random_id(const char *prefix, char *buf, size_t n);

#endif
