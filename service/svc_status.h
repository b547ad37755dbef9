/* svc_status: the gRPC rendering of a failed call's outcome — the
 * google.rpc.Status that travels in grpc-status-details-bin (DESIGN.md §7):
 * ErrorInfo {reason = the code's string, domain "recordd", metadata field,
 * can/model/sync_group for PERMISSION_DENIED, and the outcome's extra
 * entries}, RetryInfo when the outcome has a retry delay, BadRequest (the
 * outcome's field violations, or err.field for INVALID_ARGUMENT), then the
 * rejected CommitReceipt and the BulkMutateResponse as Any. */
#ifndef SVC_STATUS_H
#define SVC_STATUS_H

#include "google/protobuf/any.pb-c.h"
#include "service/svc.h"

/* The serialized google.rpc.Status of o in arena a (*len bytes); NULL when
 * out of memory. */
uint8_t *svc_status_details(rd_arena *a, const svc_outcome *o, size_t *len);

/* msg packed into a google.protobuf.Any in arena a (type URL
 * "type.googleapis.com/<full name>"); NULL when out of memory. */
Google__Protobuf__Any *svc_status_any(rd_arena *a, const ProtobufCMessage *msg);

#endif
