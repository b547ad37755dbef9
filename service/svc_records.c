/* recordd.v1.Records handlers: decode → validate against the schema →
 * hand the write to the store's writer → receipt. Reads run on the worker
 * with its own read connection. */
#include <string.h>

#include "service/receipt.h"
#include "service/svc_authz.h"
#include "service/svc_convert.h"
#include "service/svc_handlers.h"
#include "service/svc_idem.h"

/* One write in flight: the store's request plus what the receipt needs.
 * Lives in the call's arena. */
typedef struct write_call {
    store_write w;
    svc_call *call;
    const char *client_tx_id;
    bool with_record;
    store_sealed sealed; /* idempotent writes: the outcome as stored */
    /* update/replace/delete: what authorize_in_writer checks on the writer
     * thread against the record's group (schema held until done) */
    auth_verb can;
    const char *const *fields;
    size_t n_fields;
    store_schema *schema;
    const store_model *m;
} write_call;

/* ---- shared steps ------------------------------------------------------- */

static rd_code require(const char *value, const char *field, rd_err *err)
{
    if (value == NULL || value[0] == '\0')
        return rd_errf(err, RD_VALIDATION_FAILED, field, "%s is required", field);
    return RD_OK;
}

static bool write_seal(store_write *w, store_sealed *out);

/* The concurrency and retry options of a write request (DESIGN.md §4). */
typedef struct write_opts {
    const Google__Protobuf__Int64Value *expected_version, *read_at;
    Recordd__V1__OnStale on_stale;
    const char *claim;
    const char *idempotency_key; /* the request field */
    size_t n_expected_versions;
    const int64_t *expected_versions;
} write_opts;

enum { MAX_EXPECTED_VERSIONS = 16 };

/* Checks the options and copies them into the store write; with an
 * idempotency key (field or metadata) also the canonical hash of req and
 * the seal callback. */
static rd_code set_options(svc_call *call, write_call *wc, const write_opts *o,
                           ProtobufCMessage *req, rd_err *err)
{
    store_write *w = &wc->w;
    const char *key = NULL;
    if (svc_write_guards(w, o->expected_version, o->read_at, o->on_stale, o->claim, err) != RD_OK)
        return err->code;
    if (o->n_expected_versions > MAX_EXPECTED_VERSIONS)
        return rd_errf(err, RD_VALIDATION_FAILED, "expectedVersions",
                       "expectedVersions holds at most %d versions", MAX_EXPECTED_VERSIONS);
    if (o->n_expected_versions > 0 && o->expected_version != NULL)
        return rd_errf(err, RD_VALIDATION_FAILED, "expectedVersions",
                       "give expectedVersion or expectedVersions, not both");
    w->expected_versions = o->expected_versions;
    w->n_expected_versions = o->n_expected_versions;
    if (svc_idem_key(call, o->idempotency_key, &key, err) != RD_OK)
        return err->code;
    if (key == NULL)
        return RD_OK;
    if (svc_idem_hash(svc_call_arena(call), svc_call_method(call)->path, req, w->idem_hash, err) !=
        RD_OK)
        return err->code;
    w->idem_key = key;
    w->seal = write_seal;
    return RD_OK;
}

/* Checks the request strings, the model and (when data is given) the data
 * against the organisation's current schema; *out gets the data as JSON.
 * The store checks again inside its transaction: this early pass keeps bad
 * writes out of the writer's queue. */
static rd_code check_write(svc_call *call, const char *model, const Google__Protobuf__Struct *data,
                           store_check_mode mode, json_t **out, rd_err *err)
{
    svc_ctx *ctx = svc_call_ctx(call);
    if (require(model, "model", err) != RD_OK)
        return err->code;
    store_schema *schema = store_schema_get(ctx->db, svc_call_org(call));
    const store_model *m = store_schema_model(schema, model);
    if (m == NULL) {
        rd_errf(err, RD_NOT_FOUND, "model", "model '%.64s' is not in the schema", model);
        goto done;
    }
    if (out == NULL)
        goto done;
    if (svc_struct_to_json(data, out, err) != RD_OK)
        goto done;
    if (store_check_data(m, *out, mode, err) != RD_OK) {
        json_decref(*out);
        *out = NULL;
    }
done:
    store_schema_release(schema);
    return err->code;
}

/* The store's authorize callback (writer thread, inside the transaction):
 * the record's sync group as the store reads it, so the group checked is
 * the group written. A missing record (group NULL) passes when some
 * capability allows the verb on the model (the write then reports
 * not_found) and is denied otherwise, so a caller without access learns
 * nothing about which ids exist. */
static rd_code authorize_in_writer(store_write *w, const char *group, rd_err *err)
{
    write_call *wc = w->ctx;
    if (group == NULL)
        return svc_authz_model(wc->call, wc->can, w->model, err);
    return svc_authz(wc->call, wc->can, w->model, group, wc->fields, wc->n_fields, wc->m, err);
}

/* Authorises a write (svc_authz.h) once check_write passed: CREATE needs
 * create in its group with every data key, decided here. UPDATE (patch
 * keys), REPLACE (every field of the model) and DELETE (no field) need
 * their verb on the record's group, decided by the writer where it reads
 * the record (authorize_in_writer). The schema snapshot supplies the
 * writableBy rules. */
static rd_code authorize_before_queue(svc_call *call, write_call *wc, store_op op,
                                      const char *model, const char *group, const json_t *data,
                                      rd_err *err)
{
    rd_arena *a = svc_call_arena(call);
    store_schema *schema = store_schema_get(svc_call_ctx(call)->db, svc_call_org(call));
    const store_model *m = store_schema_model(schema, model);
    const char *const *fields = NULL;
    size_t n = 0;
    bool ok = op == STORE_OP_REPLACE  ? svc_authz_model_fields(a, m, &fields, &n)
              : op == STORE_OP_DELETE ? true
                                      : svc_authz_data_fields(a, data, &fields, &n);
    if (!ok) {
        rd_errf(err, RD_INTERNAL, NULL, "out of memory");
    } else if (op == STORE_OP_CREATE) {
        svc_authz(call, AUTH_CREATE, model, group, fields, n, m, err);
    } else {
        wc->can = op == STORE_OP_DELETE ? AUTH_DELETE : AUTH_UPDATE;
        wc->fields = fields;
        wc->n_fields = n;
        wc->m = m;
        wc->schema = schema; /* released with the arena (release_write) */
        wc->w.authorize = authorize_in_writer;
        return RD_OK;
    }
    store_schema_release(schema);
    return err->code;
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
    json_decref(w->data);
    store_record_clear(&w->record);
    json_decref(w->conflicts);
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
                   receipt_from_write(call, w, wc->client_tx_id, wc->with_record, w->model));
}

/* The store's seal callback (writer thread, inside the write's savepoint):
 * the receipt this write will be answered with, serialized once and kept
 * in the call's arena until done. */
static bool write_seal(store_write *w, store_sealed *out)
{
    write_call *wc = w->ctx;
    Recordd__V1__CommitReceipt *r =
        receipt_from_write(wc->call, w, wc->client_tx_id, wc->with_record, w->model);
    if (!receipt_seal(wc->call, &w->err, r, out))
        return false;
    wc->sealed = *out;
    return true;
}

/* Fills the common part of a write and queues it. */
static void submit(svc_call *call, write_call *wc, store_op op, const char *model, const char *id,
                   json_t *data, const char *client_tx_id, bool with_record)
{
    svc_ctx *ctx = svc_call_ctx(call);
    wc->call = call;
    wc->client_tx_id = client_tx_id;
    wc->with_record = with_record;
    wc->w.op = op;
    wc->w.org = svc_call_org(call);
    wc->w.actor = svc_call_actor(call);
    wc->w.model = model;
    wc->w.id = id;
    wc->w.data = data;
    wc->w.deadline_us = svc_call_deadline_us(call);
    wc->w.redact_duplicates = !svc_authz_reads_whole_model(call, model);
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

void svc_create_record(svc_call *call, const ProtobufCMessage *msg)
{
    const Recordd__V1__CreateRecordRequest *req = (const void *)msg;
    write_opts o = {.idempotency_key = req->idempotency_key};
    write_call *wc = NULL;
    rd_err err;
    json_t *data = NULL;
    rd_err_clear(&err);
    wc = new_write(call, &err);
    if (wc == NULL || set_options(call, wc, &o, (ProtobufCMessage *)msg, &err) != RD_OK ||
        check_write(call, req->model, req->data, STORE_CHECK_CREATE, &data, &err) != RD_OK ||
        authorize_before_queue(call, wc, STORE_OP_CREATE, req->model, req->group, data, &err) !=
            RD_OK)
        goto fail;
    wc->w.group = req->group;
    submit(call, wc, STORE_OP_CREATE, req->model, req->id, data, req->client_tx_id,
           req->return_record);
    return;
fail:
    json_decref(data);
    fail_write(call, &err, req->client_tx_id);
}

void svc_get_record(svc_call *call, const ProtobufCMessage *msg)
{
    const Recordd__V1__GetRecordRequest *req = (const void *)msg;
    svc_ctx *ctx = svc_call_ctx(call);
    store_record rec = {0};
    int64_t read_at = 0;
    rd_err err;
    rd_err_clear(&err);
    if (require(req->model, "model", &err) != RD_OK || require(req->id, "id", &err) != RD_OK)
        goto fail;
    store_conn *conn = store_thread_conn(ctx->db, &err);
    if (conn == NULL)
        goto fail;
    if (store_get(conn, svc_call_org(call), req->model, req->id, &rec, &read_at, &err) != RD_OK) {
        /* a caller that may read no such model learns nothing about ids */
        if (err.code == RD_NOT_FOUND &&
            !svc_authz_model_in_caps(auth_principal_caps(svc_call_principal(call)), AUTH_READ,
                                     req->model))
            svc_authz(call, AUTH_READ, req->model, "*", NULL, 0, NULL, &err);
        goto fail;
    }
    if (svc_authz(call, AUTH_READ, req->model, rec.group, NULL, 0, NULL, &err) != RD_OK)
        goto fail;
    Recordd__V1__Record *out =
        svc_record_to_pb(svc_call_arena(call), svc_call_org(call), req->model, &rec, read_at);
    store_record_clear(&rec);
    if (out == NULL) {
        rd_errf(&err, RD_INTERNAL, NULL, "out of memory");
        goto fail;
    }
    svc_reply(call, &out->base);
    return;
fail:
    store_record_clear(&rec);
    svc_fail(call, &err);
}

/* The fields UpdateRecord and ReplaceRecord have in common. */
typedef struct change_args {
    const char *model, *id, *client_tx_id;
    const Google__Protobuf__Struct *data;
    write_opts opts;
    bool return_record;
} change_args;

static void update_or_replace(svc_call *call, const ProtobufCMessage *msg, const change_args *a,
                              store_op op)
{
    store_check_mode mode = op == STORE_OP_UPDATE ? STORE_CHECK_PATCH : STORE_CHECK_REPLACE;
    write_call *wc = NULL;
    rd_err err;
    json_t *data = NULL;
    rd_err_clear(&err);
    wc = new_write(call, &err);
    if (wc == NULL || require(a->id, "id", &err) != RD_OK ||
        set_options(call, wc, &a->opts, (ProtobufCMessage *)msg, &err) != RD_OK ||
        check_write(call, a->model, a->data, mode, &data, &err) != RD_OK ||
        authorize_before_queue(call, wc, op, a->model, NULL, data, &err) != RD_OK)
        goto fail;
    submit(call, wc, op, a->model, a->id, data, a->client_tx_id, a->return_record);
    return;
fail:
    json_decref(data);
    fail_write(call, &err, a->client_tx_id);
}

void svc_update_record(svc_call *call, const ProtobufCMessage *msg)
{
    const Recordd__V1__UpdateRecordRequest *r = (const void *)msg;
    change_args a = {.model = r->model,
                     .id = r->id,
                     .client_tx_id = r->client_tx_id,
                     .data = r->data,
                     .opts = {r->expected_version, r->read_at, r->on_stale, r->claim,
                              r->idempotency_key, r->n_expected_versions, r->expected_versions},
                     .return_record = r->return_record};
    update_or_replace(call, msg, &a, STORE_OP_UPDATE);
}

void svc_replace_record(svc_call *call, const ProtobufCMessage *msg)
{
    const Recordd__V1__ReplaceRecordRequest *r = (const void *)msg;
    change_args a = {.model = r->model,
                     .id = r->id,
                     .client_tx_id = r->client_tx_id,
                     .data = r->data,
                     .opts = {r->expected_version, r->read_at, r->on_stale, r->claim,
                              r->idempotency_key, r->n_expected_versions, r->expected_versions},
                     .return_record = r->return_record};
    update_or_replace(call, msg, &a, STORE_OP_REPLACE);
}

void svc_delete_record(svc_call *call, const ProtobufCMessage *msg)
{
    const Recordd__V1__DeleteRecordRequest *req = (const void *)msg;
    write_opts o = {req->expected_version, req->read_at,
                    req->on_stale,         req->claim,
                    req->idempotency_key,  req->n_expected_versions,
                    req->expected_versions};
    write_call *wc = NULL;
    rd_err err;
    rd_err_clear(&err);
    wc = new_write(call, &err);
    if (wc == NULL || require(req->id, "id", &err) != RD_OK ||
        set_options(call, wc, &o, (ProtobufCMessage *)msg, &err) != RD_OK ||
        check_write(call, req->model, NULL, STORE_CHECK_PATCH, NULL, &err) != RD_OK ||
        authorize_before_queue(call, wc, STORE_OP_DELETE, req->model, NULL, NULL, &err) != RD_OK)
        goto fail;
    submit(call, wc, STORE_OP_DELETE, req->model, req->id, NULL, req->client_tx_id, false);
    return;
fail:
    fail_write(call, &err, req->client_tx_id);
}
