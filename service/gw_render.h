/* gw_render: the HTTP rendering of a call's outcome (service/gw_http.c's
 * finish callback) — the reply message straight to JSON with the method's
 * HTTP policy, a failure straight to problem+json — and of stream messages
 * as Server-Sent Events. Pure: no libmicrohttpd, no call; what of the HTTP
 * request shapes the answer comes in a gw_render_req. */
#ifndef GW_RENDER_H
#define GW_RENDER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "service/gw_problem.h"
#include "service/svc.h"

#define GW_IF_MATCH_MAX 16 /* entity tags in one If-Match */

/* What of an HTTP request shapes its answer (filled on the MHD thread
 * before the call starts, read-only afterwards). */
typedef struct gw_render_req {
    const char *path;          /* the request path: problem instance, Location base */
    const char *response_body; /* the route's response_body field, or NULL */
    const char *create_id;     /* the id a create request named, or NULL */
    bool has_if_match;
    bool if_match_any; /* If-Match: * */
    int64_t if_match[GW_IF_MATCH_MAX];
    size_t n_if_match;            /* strong numeric tags; 0 with has_if_match: none can match */
    bool want_minimal, want_repr; /* Prefer: return=minimal / representation */
    const char *if_none_match;    /* the header as sent, or NULL */
} gw_render_req;

/* A rendered response: status, body and headers. */
#define GW_ANSWER_HEADERS 8
typedef struct gw_answer {
    int status;        /* 0: nothing rendered */
    const char *ctype; /* a static string; NULL without a body */
    char *body;        /* malloc'd, may be NULL */
    size_t len;
    size_t n_headers;
    struct {
        const char *name; /* a static string */
        char *value;      /* malloc'd */
    } headers[GW_ANSWER_HEADERS];
} gw_answer;

/* Adds a header (value copied; NULL adds nothing) to a; dropped when a is
 * full or memory runs out. */
void gw_answer_header(gw_answer *a, const char *name, const char *value);
/* Renders problem p (its body consumed) into a: problem+json, Retry-After,
 * WWW-Authenticate for 401. */
void gw_answer_problem(gw_answer *a, gw_problem *p);
void gw_answer_free(gw_answer *a);

/* Whether version satisfies q's If-Match. */
bool gw_if_match_ok(const gw_render_req *q, int64_t version);

/* Renders the outcome of a call of m into a (scratch: the call's arena).
 * OK (unary): the reply in JSON — status from m (http_status, 207 from
 * http_partial_status when total_failed > 0, 204 for Prefer:
 * return=minimal on a receipt), ETag from the record's version, Location
 * for a create, If-Match checked against a read (http_if_match_on_reply),
 * Idempotent-Replayed; a reply with a string `etag` field (AIP-154) has
 * it as its ETag and answers 304 to an If-None-Match naming it. A failure: problem+json, 412 for a
 * failed If-Match (the error table's precondition column), m's http_rolled_back_status for a
 * rolled-back bulk. Returns the code rendered (an error rendered in place of a reply is its code).
 */
rd_code gw_render_outcome(const gw_render_req *q, const svc_method *m, const svc_outcome *o,
                          rd_arena *scratch, gw_answer *a);

/* The Server-Sent Event of one stream message (malloc'd; NULL when out of
 * memory): its sync id as the event id, the message in JSON as data. */
char *gw_render_event(const ProtobufCMessage *msg);
/* The final event of a stream that ended with an error, whose problem+json
 * text is problem (NULL: "{}"); malloc'd. */
char *gw_render_error_event(const char *problem);

#endif
