/* recordd.v1.Records/BulkMutate: checks the request as a whole (size,
 * mode, per-operation keys), turns each operation into a store_bulk_op
 * (data as JSON, guards, authorisation: create here, by-id writes on the
 * writer against the record's group, by-filter writes restricted to the
 * groups the caller may write and checked per record), hands the lot to
 * the writer as one BULK write and answers with the response the receipt
 * module builds (docs/API.md "Bulk writes"). */
#include <string.h>

#include "service/receipt.h"
#include "service/svc_authz.h"
#include "service/svc_convert.h"
#include "service/svc_handlers.h"
#include "service/svc_idem.h"
#include "service/svc_write.h"

#define BULK_DEFAULT_OPS 100

/* One BulkMutate in flight. Lives in the call's arena. */
typedef struct bulk_call {
    store_write w;
    store_bulk bulk;
    svc_call *call;
    /* per operation: its authorisation (svc_write.h), which op->w.ctx
     * points to, and the capability a denial named */
    svc_write_authz *ctx;
    store_filter_access *access; /* per by-filter operation: paths' read groups */
    const char *client_tx_id;
    store_schema *schema; /* the snapshot the operations were checked against */
    store_sealed sealed;
} bulk_call;

/* ---- preparing one operation ----------------------------------------------------------- */

/* The verb each kind of operation needs: that of the single RPC. */
static auth_verb verb_of(store_op op)
{
    switch (op) {
    case STORE_OP_CREATE:
        return AUTH_CREATE;
    case STORE_OP_DELETE:
    case STORE_OP_DELETE_WHERE:
        return AUTH_DELETE;
    default:
        return AUTH_UPDATE;
    }
}

/* The store_filter_access of a by-filter operation (ctx: its
 * svc_write_authz), called on the writer while the filter is parsed: a
 * path through a reference matches only target records in groups the
 * caller may read, and none at all is that operation's denial. */
static rd_code where_read_groups(void *ctx, const char *model, bool *all, const char ***groups,
                                 size_t *n, rd_err *err)
{
    svc_write_authz *az = ctx;
    rd_code code = svc_authz_read_groups(az->call, model, all, groups, n, err);
    if (code == RD_PERMISSION_DENIED && svc_call_required(az->call) != NULL) {
        az->required = *svc_call_required(az->call);
        az->denied = true;
    }
    return code;
}

/* A by-filter operation: only records in groups the caller may write are
 * matched (and, through a reference, only targets it may read); each one is
 * still authorised with its fields by the writer
 * (svc_write_authorize_in_writer). */
static rd_code prepare_where(bulk_call *bc, store_bulk_op *op, svc_write_authz *az,
                             const Recordd__V1__BulkOperation *in, rd_err *err)
{
    rd_arena *a = svc_call_arena(bc->call);
    store_write *w = &op->w;
    bool update = in->operation_case == RECORDD__V1__BULK_OPERATION__OPERATION_UPDATE_WHERE;
    const Recordd__V1__UpdateWhere *u = in->update_where;
    const Recordd__V1__DeleteWhere *d = in->delete_where;
    const Google__Protobuf__Int64Value *max = update ? u->max_affected : d->max_affected;
    bool all = false;
    const char **groups = NULL;
    size_t n_groups = 0;
    w->op = update ? STORE_OP_UPDATE_WHERE : STORE_OP_DELETE_WHERE;
    w->rec.model = update ? u->model : d->model;
    op->filter = update ? u->filter : d->filter;
    if (max != NULL) {
        op->has_max_affected = true;
        op->max_affected = max->value;
    }
    if (svc_write_require(w->rec.model, "model", err) != RD_OK)
        return err->code;
    if (update && svc_struct_to_json(u->data, &w->rec.data, err) != RD_OK)
        return err->code;
    az->call = bc->call;
    az->can = verb_of(w->op);
    az->m = store_schema_model(bc->schema, w->rec.model);
    if (update && !svc_authz_data_fields(a, w->rec.data, &az->fields, &az->n_fields))
        return rd_errf(err, RD_INTERNAL, NULL, "out of memory");
    rd_code code = svc_authz_groups(bc->call, az->can, w->rec.model, &all, &groups, &n_groups, err);
    if (code == RD_PERMISSION_DENIED && svc_call_required(bc->call) != NULL) {
        az->required = *svc_call_required(bc->call);
        az->denied = true;
    }
    if (code != RD_OK)
        return code;
    op->groups = all ? NULL : groups;
    op->n_groups = n_groups;
    bc->access[op - bc->bulk.ops] = (store_filter_access){where_read_groups, az};
    op->access = &bc->access[op - bc->bulk.ops];
    w->authorize = svc_write_authorize_in_writer;
    if (!update) {
        w->authorize_other = svc_write_authorize_other;
        w->may_read = svc_write_may_read;
    }
    return RD_OK;
}

/* Fills op from the i-th operation of the request. A failure here is that
 * operation's failure (op->skip with op->w.err): the store reports it
 * without running it. */
static rd_code prepare_op(bulk_call *bc, size_t i, const Recordd__V1__BulkOperation *in,
                          rd_err *err)
{
    store_bulk_op *op = &bc->bulk.ops[i];
    svc_write_authz *az = &bc->ctx[i];
    op->w.ctx = az;
    /* the by-id operations carry the single RPCs' requests */
    svc_write_req r = {0};
    switch (in->operation_case) {
    case RECORDD__V1__BULK_OPERATION__OPERATION_CREATE: {
        const Recordd__V1__CreateRecordRequest *q = in->create;
        r = (svc_write_req){.op = STORE_OP_CREATE,
                            .model = q->model,
                            .id = q->id,
                            .group = q->group,
                            .data = q->data};
        break;
    }
    case RECORDD__V1__BULK_OPERATION__OPERATION_UPDATE: {
        const Recordd__V1__UpdateRecordRequest *q = in->update;
        r = (svc_write_req){STORE_OP_UPDATE,     q->model,   q->id,       NULL,    q->data,
                            q->expected_version, q->read_at, q->on_stale, q->claim};
        break;
    }
    case RECORDD__V1__BULK_OPERATION__OPERATION_REPLACE: {
        const Recordd__V1__ReplaceRecordRequest *q = in->replace;
        r = (svc_write_req){STORE_OP_REPLACE,    q->model,   q->id,       NULL,    q->data,
                            q->expected_version, q->read_at, q->on_stale, q->claim};
        break;
    }
    case RECORDD__V1__BULK_OPERATION__OPERATION_DELETE: {
        const Recordd__V1__DeleteRecordRequest *q = in->delete_;
        r = (svc_write_req){STORE_OP_DELETE,     q->model,   q->id,       NULL,    NULL,
                            q->expected_version, q->read_at, q->on_stale, q->claim};
        break;
    }
    case RECORDD__V1__BULK_OPERATION__OPERATION_UPDATE_WHERE:
    case RECORDD__V1__BULK_OPERATION__OPERATION_DELETE_WHERE:
        return prepare_where(bc, op, az, in, err);
    default:
        return rd_errf(err, RD_INTERNAL, NULL, "unknown operation");
    }
    if (svc_write_prepare(&r, &op->w, err) != RD_OK)
        return err->code;
    return svc_write_authorize(bc->call, az, verb_of(r.op), &op->w,
                               store_schema_model(bc->schema, r.model), err);
}

/* The request-level check of operation i: exactly one kind, and none of
 * the call-wide settings (idempotency key, client tx id, return_record). */
static rd_code check_shape(size_t i, const Recordd__V1__BulkOperation *in, rd_err *err)
{
    const char *key = NULL, *ctx_id = NULL;
    bool ret = false;
    switch (in->operation_case) {
    case RECORDD__V1__BULK_OPERATION__OPERATION_CREATE:
        key = in->create->idempotency_key;
        ctx_id = in->create->client_tx_id;
        ret = in->create->return_record;
        break;
    case RECORDD__V1__BULK_OPERATION__OPERATION_UPDATE:
        key = in->update->idempotency_key;
        ctx_id = in->update->client_tx_id;
        ret = in->update->return_record;
        break;
    case RECORDD__V1__BULK_OPERATION__OPERATION_REPLACE:
        key = in->replace->idempotency_key;
        ctx_id = in->replace->client_tx_id;
        ret = in->replace->return_record;
        break;
    case RECORDD__V1__BULK_OPERATION__OPERATION_DELETE:
        key = in->delete_->idempotency_key;
        ctx_id = in->delete_->client_tx_id;
        break;
    case RECORDD__V1__BULK_OPERATION__OPERATION_UPDATE_WHERE:
    case RECORDD__V1__BULK_OPERATION__OPERATION_DELETE_WHERE:
        break;
    default: {
        char field[32];
        snprintf(field, sizeof field, "operations[%zu]", i);
        return rd_errf(err, RD_VALIDATION_FAILED, field,
                       "%s: set one of create, update, replace, delete, updateWhere, deleteWhere",
                       field);
    }
    }
    const char *name = key != NULL && key[0] != '\0'         ? "idempotencyKey"
                       : ctx_id != NULL && ctx_id[0] != '\0' ? "clientTxId"
                       : ret                                 ? "returnRecord"
                                                             : NULL;
    if (name == NULL)
        return RD_OK;
    char field[64];
    snprintf(field, sizeof field, "operations[%zu].%s", i, name);
    return rd_errf(err, RD_VALIDATION_FAILED, field,
                   "%s: not allowed inside a bulk operation; set it once on the BulkMutate call",
                   field);
}

/* ---- answering ---------------------------------------------------------------------- */

/* Whether err names a request field of the operation rather than a data
 * field: concurrency refusals name request fields, unknown fields and the
 * model's fields are data, and of the rest the operation's own field names
 * are request fields (a system name sent in data, "version", is data). */
static bool request_field(const store_model *m, const rd_err *e)
{
    static const char *const names[] = {
        "id",     "group",   "model", "filter", "maxAffected", "expectedVersion",
        "readAt", "onStale", "claim", "data"};
    char first[sizeof e->field];
    if (e->code == RD_VERSION_CONFLICT || e->code == RD_CLAIMED || e->code == RD_FILTER_REQUIRED)
        return true;
    if (e->code == RD_UNKNOWN_FIELD)
        return false;
    snprintf(first, sizeof first, "%s", e->field);
    first[strcspn(first, ",.[")] = '\0';
    if (m != NULL && store_model_field(m, first) != NULL)
        return false;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strcmp(first, names[i]) == 0)
            return true;
    return false;
}

/* The response for the bulk's outcome, sealed into the arena. */
static bool seal_response(bulk_call *bc, store_sealed *out)
{
    rd_arena *a = svc_call_arena(bc->call);
    const store_bulk *b = &bc->bulk;
    receipt_bulk_op *ops = rd_arena_calloc(a, b->n_ops * sizeof *ops);
    if (ops == NULL)
        return false;
    for (size_t i = 0; i < b->n_ops; i++) {
        const store_bulk_op *op = &b->ops[i];
        const rd_err *e = &op->w.err;
        ops[i].op = op;
        ops[i].required = bc->ctx[i].denied ? &bc->ctx[i].required : NULL;
        if (!op->failed || e->field[0] == '\0')
            ops[i].field = rd_arena_printf(a, "operations[%zu]", i);
        else if (request_field(
                     store_schema_model(bc->schema, op->w.rec.model ? op->w.rec.model : ""), e))
            ops[i].field = rd_arena_printf(a, "operations[%zu].%s", i, e->field);
        else
            ops[i].field = rd_arena_printf(a, "operations[%zu].data.%s", i, e->field);
        if (ops[i].field == NULL)
            return false;
    }
    return receipt_bulk_seal(bc->call, &bc->w, ops, bc->client_tx_id, b->dry_run, out);
}

/* The store's seal callback (writer thread, inside the bulk's savepoint). */
static bool bulk_seal(store_write *w, store_sealed *out)
{
    bulk_call *bc = w->ctx;
    if (!seal_response(bc, out))
        return false;
    bc->sealed = *out;
    return true;
}

/* An arena cleanup (rd_arena_on_release): releases what the operations
 * hold (JSON, images), the replay bytes and the schema when the call's
 * arena goes. */
static void release(void *arg)
{
    bulk_call *bc = arg;
    for (size_t i = 0; i < bc->bulk.n_ops; i++) {
        store_write *w = &bc->bulk.ops[i].w;
        json_decref(w->rec.data);
        store_record_clear(&w->rec.record);
        json_decref(w->rec.conflicts);
        free(w->affected);
    }
    free(bc->w.affected);
    free(bc->w.replay);
    store_schema_release(bc->schema);
}

/* Runs on the completer once the bulk is durable or failed. */
static void bulk_done(store_write *w)
{
    bulk_call *bc = w->ctx;
    svc_call *call = bc->call;
    rd_err err = w->err;
    /* the rate limit is charged by records: the auth step took one token,
     * the rest of what the bulk touched (dry runs included) is charged now */
    svc_ctx *ctx = svc_call_ctx(call);
    const auth_principal *p = svc_call_principal(call);
    if (ctx->ratelimit != NULL && p != NULL && !w->replayed && bc->bulk.touched > 1)
        auth_ratelimit_charge(ctx->ratelimit, auth_principal_id(p), (double)(bc->bulk.touched - 1));
    if (w->replayed) {
        receipt_bulk_send(call, w->replay, w->replay_len, w->replay_status, true);
        return;
    }
    if (w->idem_stored) {
        receipt_bulk_send(call, bc->sealed.bytes, bc->sealed.len, bc->sealed.status, false);
        return;
    }
    /* executed, and what the bulk decided is what happened (the commit did
     * not fail it afterwards) */
    if (bc->bulk.executed && w->err.code == bc->bulk.outcome) {
        store_sealed s;
        if (seal_response(bc, &s)) {
            receipt_bulk_send(call, s.bytes, s.len, s.status, false);
            return;
        }
        rd_errf(&err, RD_INTERNAL, NULL, "out of memory building the bulk response");
    }
    receipt_finish(call, &err, receipt_new(call, bc->client_tx_id));
}

/* ---- the handler -------------------------------------------------------------------- */

void svc_bulk_mutate(svc_call *call, const ProtobufCMessage *msg)
{
    const Recordd__V1__BulkMutateRequest *req = (const void *)msg;
    svc_ctx *ctx = svc_call_ctx(call);
    rd_arena *a = svc_call_arena(call);
    size_t max_ops = ctx->max_bulk_ops > 0 ? (size_t)ctx->max_bulk_ops : BULK_DEFAULT_OPS;
    size_t n = req->n_operations;
    const char *key = NULL;
    bulk_call *bc = NULL;
    rd_err err;
    rd_err_clear(&err);

    if (n == 0) {
        rd_errf(&err, RD_VALIDATION_FAILED, "operations", "operations must not be empty");
        goto fail;
    }
    if (n > max_ops || n > STORE_BULK_MAX_OPS) {
        rd_errf(&err, RD_TOO_MANY_OPERATIONS, "operations",
                "%zu operations; at most %zu are allowed per BulkMutate call", n, max_ops);
        goto fail;
    }
    store_bulk_mode mode;
    switch (req->transaction_mode) {
    case RECORDD__V1__TRANSACTION_MODE__TRANSACTION_MODE_UNSPECIFIED:
    case RECORDD__V1__TRANSACTION_MODE__ALL_OR_NOTHING:
        mode = STORE_BULK_ALL_OR_NOTHING;
        break;
    case RECORDD__V1__TRANSACTION_MODE__BEST_EFFORT:
        mode = STORE_BULK_BEST_EFFORT;
        break;
    default:
        rd_errf(&err, RD_VALIDATION_FAILED, "transactionMode", "transactionMode: unknown value %d",
                (int)req->transaction_mode);
        goto fail;
    }
    for (size_t i = 0; i < n; i++)
        if (check_shape(i, req->operations[i], &err) != RD_OK)
            goto fail;
    bc = rd_arena_calloc(a, sizeof *bc);
    if (bc != NULL) {
        bc->bulk.ops = rd_arena_calloc(a, n * sizeof *bc->bulk.ops);
        bc->ctx = rd_arena_calloc(a, n * sizeof *bc->ctx);
        bc->access = rd_arena_calloc(a, n * sizeof *bc->access);
    }
    if (bc == NULL || bc->bulk.ops == NULL || bc->ctx == NULL || bc->access == NULL ||
        !rd_arena_on_release(a, release, bc)) {
        rd_errf(&err, RD_INTERNAL, NULL, "out of memory");
        goto fail;
    }
    bc->call = call;
    bc->client_tx_id = req->client_tx_id;
    /* a dry run stores nothing and replays nothing: its key is not used */
    if (!req->dry_run) {
        if (svc_idem_key(call, req->idempotency_key, &key, &err) != RD_OK)
            goto fail;
        if (key != NULL && svc_idem_hash(a, svc_call_method(call)->path, (ProtobufCMessage *)msg,
                                         bc->w.idem_hash, &err) != RD_OK)
            goto fail;
    }
    bc->schema = store_schema_get(ctx->db, svc_call_org(call));
    bc->bulk.n_ops = n;
    bc->bulk.mode = mode;
    bc->bulk.dry_run = req->dry_run;
    for (size_t i = 0; i < n; i++) {
        rd_err op_err;
        rd_err_clear(&op_err);
        if (prepare_op(bc, i, req->operations[i], &op_err) != RD_OK) {
            bc->bulk.ops[i].skip = true;
            bc->bulk.ops[i].w.err = op_err;
        }
        bc->bulk.ops[i].w.rec.redact_duplicates =
            !svc_authz_reads_whole_model(call, bc->bulk.ops[i].w.rec.model);
    }
    bc->w.op = STORE_OP_BULK;
    bc->w.bulk = &bc->bulk;
    bc->w.org = svc_call_org(call);
    bc->w.actor = svc_call_actor(call);
    bc->w.deadline_us = svc_call_deadline_us(call);
    bc->bulk.max_rows = ctx->max_bulk_rows;
    bc->bulk.max_us = (int64_t)ctx->max_bulk_ms * 1000;
    if (key != NULL) {
        bc->w.idem_key = key;
        bc->w.seal = bulk_seal;
    }
    bc->w.done = bulk_done;
    bc->w.ctx = bc;
    store_submit(ctx->db, &bc->w);
    return;
fail:
    receipt_finish(call, &err, receipt_new(call, req->client_tx_id));
}
