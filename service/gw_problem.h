/* gw_problem: RFC 9457 problem details (application/problem+json) for the
 * HTTP gateway. It builds nothing of its own: a failed call's problem is a
 * rendering of the gRPC status and the google.rpc.Status details that the
 * receipt module (service/receipt.c) produced — ErrorInfo.reason is the
 * rd_code, whose HTTP status comes from the one table in common/rd.h;
 * BadRequest becomes errors[], the CommitReceipt detail becomes receipt,
 * RetryInfo becomes Retry-After. Errors the gateway finds before a call
 * exists (no route, body too large, wrong media type) go through
 * gw_problem_from_err with the same shape. */
#ifndef GW_PROBLEM_H
#define GW_PROBLEM_H

#include <jansson.h>
#include <protobuf-c/protobuf-c.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/rd.h"

/* A rendered problem: its HTTP status, body (owned) and what goes into
 * headers. */
typedef struct gw_problem {
    int status;
    json_t *body;          /* the problem object; NULL when out of memory */
    rd_code code;          /* the stable code it carries */
    int64_t retry_after_s; /* > 0: Retry-After (from RetryInfo, rounded up) */
    /* The details carried a rolled-back bulk result (a message whose type
     * is recordd.v1.BulkMutateResponse): the status is 422. */
    bool bulk_rolled_back;
} gw_problem;

/* The problem for err; http_status 0 takes the table's status. instance
 * is the request path (may be NULL). */
void gw_problem_from_err(const rd_err *err, int http_status, const char *instance, gw_problem *out);

/* The problem for a failed call: grpc_code and msg of its status, code the
 * error-table row the call noted (svc_outcome.rd_code; -1 or a row of
 * another gRPC status: the first row of the table with grpc_code), details
 * the serialized google.rpc.Status (may be NULL) for the field, the
 * required capability, field violations, retry delay and the receipt or
 * bulk result. Details whose type is not known are left out. */
void gw_problem_from_status(int grpc_code, int code, const char *msg, const void *details,
                            size_t details_len, const char *instance, gw_problem *out);

/* A response message descriptor by its full name ("recordd.v1.CommitReceipt")
 * among the method table's request and response types; NULL when unknown. */
const ProtobufCMessageDescriptor *gw_message_type(const char *full_name);

#endif
