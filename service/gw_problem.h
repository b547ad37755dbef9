/* gw_problem: RFC 9457 problem details (application/problem+json) for the
 * HTTP gateway, rendered straight from a call's outcome (svc_outcome): its
 * code, whose HTTP status comes from the one table in common/rd.h, field
 * violations as errors[], the rejected receipt as receipt, a rolled-back
 * bulk result as result, the retry delay as Retry-After. Errors the
 * gateway finds before a call exists (no route, body too large, wrong
 * media type) go through gw_problem_from_err with the same shape. */
#ifndef GW_PROBLEM_H
#define GW_PROBLEM_H

#include <jansson.h>
#include <protobuf-c/protobuf-c.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/rd.h"
#include "service/svc.h"

/* A rendered problem: its HTTP status, body (owned) and what goes into
 * headers. */
typedef struct gw_problem {
    int status;
    json_t *body;          /* the problem object; NULL when out of memory */
    rd_code code;          /* the stable code it carries */
    int64_t retry_after_s; /* > 0: Retry-After (the retry delay, rounded up) */
} gw_problem;

/* The problem for err; http_status 0 takes the table's status. instance
 * is the request path (may be NULL). */
void gw_problem_from_err(const rd_err *err, int http_status, const char *instance, gw_problem *out);

/* The problem for a failed call's outcome: code, detail and field from
 * o->err; errors[] from the field violations (or err.field for
 * INVALID_ARGUMENT); requiredCapability; the rejected receipt and bulk
 * result in JSON; Retry-After from the retry delay. http_status 0 takes the
 * table's status. */
void gw_problem_from_outcome(const svc_outcome *o, int http_status, const char *instance,
                             gw_problem *out);

#endif
