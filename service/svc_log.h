/* svc_log: recordd's structured log (DESIGN.md §9). Every line on stderr is
 * one JSON object with "time" (RFC 3339, UTC), "level" and "msg"; requests
 * add method, code, duration, principal id, server tx id and request id.
 * Transport-neutral: the gRPC core and the HTTP gateway both call
 * svc_log_request once per finished request. Nothing logged here ever holds
 * a credential: callers pass ids, never header values other than the
 * request id. Thread-safe; lines never interleave. */
#ifndef SVC_LOG_H
#define SVC_LOG_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum svc_log_level {
    SVC_LOG_DEBUG = 0,
    SVC_LOG_INFO = 1,
    SVC_LOG_WARN = 2,
    SVC_LOG_ERROR = 3,
    SVC_LOG_OFF = 4, /* as a threshold: nothing is written */
} svc_log_level;

/* Parses "debug", "info", "warn", "error" or "off" (any case). */
bool svc_log_parse_level(const char *s, svc_log_level *out);
/* The threshold: lines below it are dropped. Default SVC_LOG_INFO. */
void svc_log_set_level(svc_log_level level);
bool svc_log_enabled(svc_log_level level);

/* One line {"time","level","msg"} plus the members of extra (a JSON object,
 * consumed; may be NULL). */
void svc_log_json(svc_log_level level, const char *msg, json_t *extra);

/* A finished request of either transport. Strings may be NULL or "". */
typedef struct svc_log_req {
    const char *transport;    /* "grpc" or "http" */
    const char *method;       /* "/recordd.v1.Records/CreateRecord", or the HTTP route
                               * "POST /v1/{model}/records" (the pattern, not the path) */
    int rd_code;              /* an rd_code when the outcome came from the error table, else -1 */
    int grpc_code;            /* gRPC status 0..16; -1: rd_code's */
    int http_status;          /* HTTP status, 0 for gRPC */
    int64_t duration_us;      /* arrival to completion */
    const char *principal_id; /* the authenticated principal's id (never the credential) */
    const char *server_tx_id; /* the write's server tx id, when it produced one */
    const char *request_id;   /* x-request-id as received; NULL or unusable: generated */
    bool probe;               /* a health probe or reflection: logged at debug, not info */
} svc_log_req;

/* Writes the request line:
 *   {"time":…,"level":"info","msg":"request","transport":"grpc",
 *    "method":…,"code":"not_found","grpc_code":5,["http_status":404,]
 *    "duration_ms":1.234,["principal_id":…,]["server_tx_id":…,]"request_id":…}
 * "code" is the error table's string code, or for outcomes outside it the
 * gRPC status name in lower case ("cancelled", "resource_exhausted"). */
void svc_log_request(const svc_log_req *r);

/* The request id a request is logged (and may be answered) with: given when
 * it is 1..128 printable ASCII characters without spaces, else a fresh
 * "req_…" id written into buf (at least 32 bytes). */
const char *svc_log_request_id(const char *given, char *buf, size_t len);

/* The lower-case name of a gRPC status code ("ok", "deadline_exceeded"). */
const char *svc_log_grpc_name(int grpc_code);

#endif
