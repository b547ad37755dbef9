/* receipt: the only place that turns a store outcome into a CommitReceipt
 * and the outcome of a write call (svc_outcome: the receipt, its error, a
 * stored reply); the transports render outcomes (DESIGN.md §2, §7). */
#ifndef RECEIPT_H
#define RECEIPT_H

#include "recordd/v1/records.pb-c.h"
#include "service/svc.h"
#include "service/svc_convert.h"

/* A new receipt in the call's arena: object "commit_receipt", status
 * REJECTED until filled in, client_tx_id echoed or generated when empty.
 * NULL when out of memory. */
Recordd__V1__CommitReceipt *receipt_new(svc_call *call, const char *client_tx_id);

/* Builds the receipt of a finished write in the call's arena. client_tx_id
 * is echoed, or generated when empty. model names the record's model. A
 * write refused by a concurrency check carries current_version; a stale
 * one (w->rec.conflicts) one notification {model, id, read_at,
 * observed_sync_id, conflicting_fields, current_values, written_by, group}
 * and, when held, status HELD (success false, error stale_context). */
Recordd__V1__CommitReceipt *receipt_from_write(svc_call *call, const store_write *w,
                                               const char *client_tx_id, bool with_record,
                                               const char *model);

/* Finishes a write call: OK with the receipt when err->code is RD_OK or
 * the receipt is HELD (a stale write under on_stale NOTIFY), otherwise err
 * with the rejected receipt (its error filled from err when empty) in the
 * outcome. receipt NULL means out of memory. */
void receipt_finish(svc_call *call, const rd_err *err, Recordd__V1__CommitReceipt *receipt);

/* The gRPC status a write call ends with: OK for a confirmed or HELD
 * receipt (a held write did not fail: the caller asked to be notified),
 * else the error's code. */
int receipt_grpc_status(const rd_err *err, const Recordd__V1__CommitReceipt *receipt);

/* Serializes receipt (the outcome of an idempotent write, err its error)
 * into the call's arena for the store to keep: out->bytes/len = the
 * receipt exactly as receipt_send_sealed will send it, out->status =
 * receipt_grpc_status. false when out of memory or receipt is NULL. */
bool receipt_seal(svc_call *call, const rd_err *err, const Recordd__V1__CommitReceipt *receipt,
                  store_sealed *out);

/* Finishes call with a sealed outcome (first answer or replay alike, so
 * both are byte-identical): status 0 -> OK with the receipt, whose bytes
 * gRPC sends as stored; otherwise the receipt's error with the receipt.
 * replayed: the outcome repeats a stored one (HTTP: Idempotent-Replayed). */
void receipt_send_sealed(svc_call *call, const void *bytes, size_t len, int status, bool replayed);

/* ---- BulkMutate (service/svc_bulk.c; docs/API.md "Bulk writes") ---------- */

/* One operation of an executed bulk, as its result reports it. */
typedef struct receipt_bulk_op {
    const store_bulk_op *op;
    /* the error's field as a request path, "operations[2].data.email", or
     * "operations[2]" when the error names no field */
    const char *field;
    const auth_required *required; /* PERMISSION_DENIED: what it needed; else NULL */
} receipt_bulk_op;

/* Builds the BulkMutateResponse of bulk write w (w->bulk executed, ops[i]
 * describing w->bulk->ops[i]) and serializes it into the arena: out->bytes
 * / len, out->status = the gRPC status the call ends with (0, or for a
 * failed ALL_OR_NOTHING bulk the code of w->err). The response: one receipt
 * (server_tx_id, last_sync_id, ops, missing_ids, a notification per stale
 * operation; success = no operation failed; status CONFIRMED when the
 * outcome committed, REJECTED when nothing did, unset for a dry run; error
 * = the call's error, or the first failure of a BEST_EFFORT bulk), a result
 * per operation (google.rpc.Status with ErrorInfo for failures, OK with a
 * message for operations held, missing or not applied) and the totals.
 * false when out of memory. */
bool receipt_bulk_seal(svc_call *call, const store_write *w, const receipt_bulk_op *ops,
                       const char *client_tx_id, bool dry_run, store_sealed *out);

/* Finishes a BulkMutate call with a sealed response (first answer and
 * replay alike, so both are byte-identical): status 0 -> OK with the
 * response, whose bytes gRPC sends as stored; otherwise the receipt
 * error's code, field and message with: ErrorInfo extras index (the
 * failing operation picked) and failed (how many), for PERMISSION_DENIED
 * the capability, a field violation per failing operation ("<code>:
 * <message>"), the rejected CommitReceipt and the BulkMutateResponse. */
void receipt_bulk_send(svc_call *call, const void *bytes, size_t len, int status, bool replayed);

#endif
