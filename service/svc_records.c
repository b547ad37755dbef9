/* recordd.v1.Records handlers: decode → validate against the schema →
 * hand the write to the store's writer → receipt. A write is prepared and
 * authorised by service/svc_write.c, which BulkMutate shares. Reads run on
 * the worker with its thread's read connection. */
#include <string.h>

#include "service/receipt.h"
#include "service/svc_authz.h"
#include "service/svc_convert.h"
#include "service/svc_expand.h"
#include "service/svc_handlers.h"
#include "service/svc_idem.h"
#include "service/svc_write.h"

/* One write in flight: the store's request plus what the receipt needs.
 * Lives in the call's arena. */
typedef struct write_call {
    svc_write_authz az; /* first: the writer's authorize callback finds it at w.ctx */
    store_write w;
    svc_call *call;
    const char *client_tx_id;
    bool with_record;
    store_sealed sealed;  /* idempotent writes: the outcome as stored */
    store_schema *schema; /* the snapshot the write was checked against */
} write_call;

/* ---- shared steps ------------------------------------------------------- */

static bool write_seal(store_write *w, store_sealed *out);

/* The retry options of a write request (DESIGN.md §4) beyond its guards. */
typedef struct write_opts {
    const char *idempotency_key; /* the request field */
    size_t n_expected_versions;
    const int64_t *expected_versions;
} write_opts;

enum { MAX_EXPECTED_VERSIONS = 16 };

/* Checks the options and copies them into the store write; with an
 * idempotency key (field or metadata) also the canonical hash of req and
 * the seal callback. */
static rd_code set_options(svc_call *call, write_call *wc, const write_opts *o,
                           const ProtobufCMessage *req, rd_err *err)
{
    store_write *w = &wc->w;
    const char *key = NULL;
    if (o->n_expected_versions > MAX_EXPECTED_VERSIONS)
        return rd_errf(err, RD_VALIDATION_FAILED, "expectedVersions",
                       "expectedVersions holds at most %d versions", MAX_EXPECTED_VERSIONS);
    if (o->n_expected_versions > 0 && w->rec.has_expected_version)
        return rd_errf(err, RD_VALIDATION_FAILED, "expectedVersions",
                       "give expectedVersion or expectedVersions, not both");
    w->rec.expected_versions = o->expected_versions;
    w->rec.n_expected_versions = o->n_expected_versions;
    if (svc_idem_key(call, o->idempotency_key, &key, err) != RD_OK)
        return err->code;
    if (key == NULL)
        return RD_OK;
    if (svc_idem_hash(svc_call_arena(call), svc_call_method(call)->path, (ProtobufCMessage *)req,
                      w->idem_hash, err) != RD_OK)
        return err->code;
    w->idem_key = key;
    w->seal = write_seal;
    return RD_OK;
}

/* Checks the model and the data against the organisation's current schema
 * (the snapshot is kept with the write: svc_write_authorize's writableBy
 * rules point into it); *m gets the model. The store checks again inside
 * its transaction: this early pass keeps bad writes out of the writer's
 * queue. */
static rd_code check_write(svc_call *call, write_call *wc, const store_model **m, rd_err *err)
{
    static const store_check_mode modes[] = {[STORE_OP_CREATE] = STORE_CHECK_CREATE,
                                             [STORE_OP_UPDATE] = STORE_CHECK_PATCH,
                                             [STORE_OP_REPLACE] = STORE_CHECK_REPLACE};
    store_write *w = &wc->w;
    store *db = svc_call_ctx(call)->db;
    wc->schema = store_schema_get(db, svc_call_org(call));
    for (int pass = 0;; pass++) {
        *m = store_schema_model(wc->schema, w->rec.model);
        rd_code code = *m == NULL ? rd_errf(err, RD_NOT_FOUND, "model",
                                            "model '%.64s' is not in the schema", w->rec.model)
                       : w->op != STORE_OP_DELETE
                           ? store_check_data(*m, w->rec.data, modes[w->op], err)
                           : RD_OK;
        /* refused by the schema: another process may have pushed a newer one */
        if (code == RD_OK || pass > 0 || !store_schema_refresh(db, svc_call_org(call), wc->schema))
            return code;
        store_schema_release(wc->schema);
        wc->schema = store_schema_get(db, svc_call_org(call));
        rd_err_clear(err);
    }
}

/* Finishes a write that failed before reaching the store: the error with a
 * rejected receipt (no server transaction) in its details. */
static void fail_write(svc_call *call, const rd_err *err, const char *client_tx_id)
{
    receipt_finish(call, err, receipt_new(call, client_tx_id));
}

/* An arena cleanup (rd_arena_on_release): releases what the store handed
 * over in the write (its outputs and replay bytes) and the schema the
 * authorisation held, when the call's arena goes. */
static void release_write(void *arg)
{
    write_call *wc = arg;
    store_write *w = &wc->w;
    store_schema_release(wc->schema);
    json_decref(w->rec.data);
    store_record_clear(&w->rec.record);
    json_decref(w->rec.conflicts);
    free(w->affected);
    free(w->replay);
}

/* Runs on the store's completer thread once the write is durable or
 * failed. A replay and an outcome stored with the write go out as the
 * sealed bytes, so the first answer and every retry are identical. What
 * the store allocated goes with the call's arena (release_write). */
static void write_done(store_write *w)
{
    write_call *wc = w->ctx;
    svc_call *call = wc->call;
    if (w->replayed) {
        receipt_send_sealed(call, w->replay, w->replay_len, w->replay_status, true);
        return;
    }
    if (w->idem_stored) {
        receipt_send_sealed(call, wc->sealed.bytes, wc->sealed.len, wc->sealed.status, false);
        return;
    }
    rd_err err = w->err; /* finishing may free the arena holding w */
    receipt_finish(call, &err,
                   receipt_from_write(call, w, wc->client_tx_id, wc->with_record, w->rec.model));
}

/* The store's seal callback (writer thread, inside the write's savepoint):
 * the receipt this write will be answered with, serialized once and kept
 * in the call's arena until done. */
static bool write_seal(store_write *w, store_sealed *out)
{
    write_call *wc = w->ctx;
    Recordd__V1__CommitReceipt *r =
        receipt_from_write(wc->call, w, wc->client_tx_id, wc->with_record, w->rec.model);
    if (!receipt_seal(wc->call, &w->err, r, out))
        return false;
    wc->sealed = *out;
    return true;
}

/* Fills the common part of a prepared write and queues it. */
static void submit(svc_call *call, write_call *wc, const char *client_tx_id, bool with_record)
{
    svc_ctx *ctx = svc_call_ctx(call);
    wc->call = call;
    wc->client_tx_id = client_tx_id;
    wc->with_record = with_record;
    wc->w.org = svc_call_org(call);
    wc->w.actor = svc_call_actor(call);
    wc->w.deadline_us = svc_call_deadline_us(call);
    wc->w.rec.redact_duplicates = !svc_authz_reads_whole_model(call, wc->w.rec.model);
    wc->w.done = write_done;
    wc->w.ctx = wc;
    store_submit(ctx->db, &wc->w);
}

static write_call *new_write(svc_call *call, rd_err *err)
{
    rd_arena *a = svc_call_arena(call);
    write_call *wc = rd_arena_calloc(a, sizeof *wc);
    if (wc == NULL || !rd_arena_on_release(a, release_write, wc)) {
        rd_errf(err, RD_INTERNAL, NULL, "out of memory");
        return NULL;
    }
    return wc;
}

/* ---- handlers ------------------------------------------------------------ */

/* Every record write: prepared and authorised (svc_write.c) with the
 * method's capability verb, checked against the schema, queued. */
static void write_record(svc_call *call, const ProtobufCMessage *msg, const svc_write_req *r,
                         const write_opts *o, const char *client_tx_id, bool with_record)
{
    const store_model *m = NULL;
    rd_err err;
    rd_err_clear(&err);
    write_call *wc = new_write(call, &err);
    if (wc == NULL || svc_write_prepare(r, &wc->w, &err) != RD_OK ||
        set_options(call, wc, o, msg, &err) != RD_OK || check_write(call, wc, &m, &err) != RD_OK ||
        svc_write_authorize(call, &wc->az, svc_call_method(call)->can, &wc->w, m, &err) != RD_OK) {
        fail_write(call, &err, client_tx_id); /* the arena's cleanup releases w.rec.data */
        return;
    }
    submit(call, wc, client_tx_id, with_record);
}

void svc_create_record(svc_call *call, const ProtobufCMessage *msg)
{
    const Recordd__V1__CreateRecordRequest *req = (const void *)msg;
    svc_write_req r = {.op = STORE_OP_CREATE,
                       .model = req->model,
                       .id = req->id,
                       .group = req->group,
                       .data = req->data};
    write_opts o = {.idempotency_key = req->idempotency_key};
    write_record(call, msg, &r, &o, req->client_tx_id, req->return_record);
}

void svc_get_record(svc_call *call, const ProtobufCMessage *msg)
{
    const Recordd__V1__GetRecordRequest *req = (const void *)msg;
    svc_ctx *ctx = svc_call_ctx(call);
    auth_verb can = svc_call_method(call)->can; /* read */
    store_record rec = {0};
    store_schema *schema = NULL;
    svc_expand *x = NULL;
    store_conn *conn = NULL;
    int64_t read_at = 0;
    rd_err err;
    rd_err_clear(&err);
    if (svc_write_require(req->model, "model", &err) != RD_OK ||
        svc_write_require(req->id, "id", &err) != RD_OK)
        goto fail;
    conn = store_thread_conn(ctx->db, &err);
    if (conn == NULL)
        goto fail;
    /* expand: the record and the ones it references from one snapshot */
    bool hold = req->n_expand > 0 || (req->read_mask != NULL && req->read_mask->n_paths > 0);
    if (hold && store_read_hold(conn, svc_call_org(call), NULL, &err) != RD_OK)
        goto fail;
    if (store_get(conn, svc_call_org(call), req->model, req->id, &rec, &read_at, &err) != RD_OK) {
        /* a caller that may read no such model learns nothing about ids */
        if (err.code == RD_NOT_FOUND &&
            !svc_authz_model_in_caps(auth_principal_caps(svc_call_principal(call)), can,
                                     req->model))
            svc_authz(call, can, req->model, "*", NULL, 0, NULL, &err);
        goto fail;
    }
    if (svc_authz(call, can, req->model, rec.group, NULL, 0, NULL, &err) != RD_OK)
        goto fail;
    if (hold) {
        schema = store_schema_get_model(ctx->db, svc_call_org(call), req->model);
        const store_model *m = store_schema_model(schema, req->model);
        if (m == NULL) {
            rd_errf(&err, RD_NOT_FOUND, "model", "model '%.64s' is not in the schema", req->model);
            goto fail;
        }
        if (svc_expand_parse(svc_call_arena(call), schema, m, req->expand, req->n_expand,
                             req->read_mask, &x, &err) != RD_OK)
            goto fail;
    }
    Recordd__V1__Record *out =
        svc_record_to_pb(svc_call_arena(call), svc_call_org(call), req->model, &rec, read_at);
    if (out == NULL) {
        rd_errf(&err, RD_INTERNAL, NULL, "out of memory");
        goto fail;
    }
    if (svc_expand_apply(call, conn, x, &rec, &out, 1, read_at, &err) != RD_OK)
        goto fail;
    store_read_release(conn);
    store_record_clear(&rec);
    if (schema != NULL)
        store_schema_release(schema);
    svc_reply(call, &out->base);
    return;
fail:
    if (conn != NULL)
        store_read_release(conn);
    store_record_clear(&rec);
    if (schema != NULL)
        store_schema_release(schema);
    svc_fail(call, &err);
}

void svc_update_record(svc_call *call, const ProtobufCMessage *msg)
{
    const Recordd__V1__UpdateRecordRequest *q = (const void *)msg;
    svc_write_req r = {STORE_OP_UPDATE,     q->model,   q->id,       NULL,    q->data,
                       q->expected_version, q->read_at, q->on_stale, q->claim};
    write_opts o = {q->idempotency_key, q->n_expected_versions, q->expected_versions};
    write_record(call, msg, &r, &o, q->client_tx_id, q->return_record);
}

void svc_replace_record(svc_call *call, const ProtobufCMessage *msg)
{
    const Recordd__V1__ReplaceRecordRequest *q = (const void *)msg;
    svc_write_req r = {STORE_OP_REPLACE,    q->model,   q->id,       NULL,    q->data,
                       q->expected_version, q->read_at, q->on_stale, q->claim};
    write_opts o = {q->idempotency_key, q->n_expected_versions, q->expected_versions};
    write_record(call, msg, &r, &o, q->client_tx_id, q->return_record);
}

void svc_delete_record(svc_call *call, const ProtobufCMessage *msg)
{
    const Recordd__V1__DeleteRecordRequest *q = (const void *)msg;
    svc_write_req r = {STORE_OP_DELETE,     q->model,   q->id,       NULL,    NULL,
                       q->expected_version, q->read_at, q->on_stale, q->claim};
    write_opts o = {q->idempotency_key, q->n_expected_versions, q->expected_versions};
    write_record(call, msg, &r, &o, q->client_tx_id, false);
}
