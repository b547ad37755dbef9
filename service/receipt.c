/* receipt: turns store outcomes into CommitReceipts and the outcomes of
 * write calls (svc_outcome): the receipt, the error it carries, a replay's
 * stored bytes. Handlers never build a receipt themselves; transports
 * render the outcome (gRPC: service/svc_status.c; HTTP: gw_problem.c). */
#include "service/receipt.h"

#include <string.h>

#include "google/protobuf/any.pb-c.h"
#include "google/rpc/error_details.pb-c.h"
#include "google/rpc/status.pb-c.h"
#include "service/svc_authz.h"
#include "service/svc_status.h"

#define TYPE_URL_PREFIX "type.googleapis.com/"

/* Finishes call with err and the rejected receipt (may be NULL). */
static void fail_with(svc_call *call, const rd_err *err, const Recordd__V1__CommitReceipt *receipt)
{
    svc_outcome o = {.err = *err, .receipt = receipt != NULL ? &receipt->base : NULL};
    svc_finish(call, &o);
}

/* The required capability of a denied call as the receipt error's
 * required_capability; NULL when the call remembered none. */
static Recordd__V1__RequiredCapability *required_pb(svc_call *call)
{
    const auth_required *req = svc_call_required(call);
    Recordd__V1__RequiredCapability *out;
    if (req == NULL || (out = rd_arena_alloc(svc_call_arena(call), sizeof *out)) == NULL)
        return NULL;
    recordd__v1__required_capability__init(out);
    out->can = (char *)auth_verb_str(req->can);
    out->model = (char *)req->model;
    out->sync_group = (char *)req->group;
    return out;
}

static Recordd__V1__ReceiptError *receipt_error(rd_arena *a, const rd_err *err)
{
    Recordd__V1__ReceiptError *e = rd_arena_alloc(a, sizeof *e);
    if (e == NULL)
        return NULL;
    recordd__v1__receipt_error__init(e);
    e->code = (char *)rd_code_str(err->code);
    e->message = rd_arena_strdup(a, err->msg);
    e->field = rd_arena_strdup(a, err->field);
    return (e->message && e->field) ? e : NULL;
}

Recordd__V1__CommitReceipt *receipt_new(svc_call *call, const char *client_tx_id)
{
    rd_arena *a = svc_call_arena(call);
    Recordd__V1__CommitReceipt *r = rd_arena_alloc(a, sizeof *r);
    if (r == NULL)
        return NULL;
    recordd__v1__commit_receipt__init(r);
    r->object = "commit_receipt";
    if (client_tx_id != NULL && client_tx_id[0] != '\0') {
        r->client_tx_id = (char *)client_tx_id;
    } else {
        char id[48];
        rd_random_id("ctx_", id, 20);
        r->client_tx_id = rd_arena_strdup(a, id);
        if (r->client_tx_id == NULL)
            return NULL;
    }
    r->status = RECORDD__V1__COMMIT_STATUS__REJECTED;
    return r;
}

/* The caller's capabilities (NULL: none, so nothing is readable). */
static const auth_caps *caller_caps(svc_call *call)
{
    const auth_principal *p = svc_call_principal(call);
    return p != NULL ? auth_principal_caps(p) : NULL;
}

/* The members of data (a record's fields) the caller may read in (model,
 * group), as a new object (a new reference; NULL when out of memory).
 * *withheld is set when a member was left out. */
static json_t *readable_data(svc_call *call, const char *model, const char *group, json_t *data,
                             protobuf_c_boolean *withheld)
{
    const auth_caps *caps = caller_caps(call);
    if (svc_authz_read_scope(caps, model, group) == SVC_READ_ALL)
        return json_incref(data);
    json_t *out = json_object(), *v;
    const char *k;
    json_object_foreach(data, k, v)
    {
        if (!svc_authz_field_readable(caps, model, group, k)) {
            *withheld = true;
            continue;
        }
        if (out != NULL && json_object_set(out, k, v) != 0) {
            json_decref(out);
            return NULL;
        }
    }
    return out;
}

/* The notification of a stale write (refused or held): what changed under
 * the caller since read_at, from the record's current image; current_values
 * holds only what the caller may read (*withheld set when something was
 * left out). NULL when out of memory. */
static Recordd__V1__Notification *notification(svc_call *call, const store_write *w,
                                               const char *model, protobuf_c_boolean *withheld)
{
    rd_arena *a = svc_call_arena(call);
    const auth_caps *caps = caller_caps(call);
    Recordd__V1__Notification *n = rd_arena_alloc(a, sizeof *n);
    size_t count = json_array_size(w->rec.conflicts), i;
    char **names = rd_arena_alloc(a, (count ? count : 1) * sizeof *names);
    json_t *values = json_object(), *v;
    bool ok = n != NULL && names != NULL && values != NULL;
    if (!ok)
        goto done;
    recordd__v1__notification__init(n);
    n->model = rd_arena_strdup(a, model);
    n->id = rd_arena_strdup(a, w->rec.record.id);
    n->read_at = w->rec.read_at;
    n->observed_sync_id = w->rec.record.sync_id;
    n->written_by = rd_arena_strdup(a, w->rec.record.updated_by);
    n->group = rd_arena_strdup(a, w->rec.record.group);
    ok = n->model && n->id && n->written_by && n->group;
    json_array_foreach(w->rec.conflicts, i, v)
    {
        const char *name = json_string_value(v);
        json_t *cur = json_object_get(w->rec.record.data, name);
        names[i] = rd_arena_strdup(a, name);
        if (names[i] == NULL)
            ok = false;
        else if (!svc_authz_field_readable(caps, model, w->rec.record.group, name))
            *withheld = true;
        else if (json_object_set(values, name, cur ? cur : json_null()) != 0)
            ok = false;
    }
    n->conflicting_fields = names;
    n->n_conflicting_fields = count;
    n->current_values = ok ? svc_json_to_struct(a, values) : NULL;
    ok = ok && n->current_values != NULL;
done:
    json_decref(values);
    return ok ? n : NULL;
}

static bool add_notification(svc_call *call, Recordd__V1__CommitReceipt *r, const store_write *w,
                             const char *model)
{
    Recordd__V1__Notification **list = rd_arena_alloc(svc_call_arena(call), sizeof *list);
    if (list == NULL || (list[0] = notification(call, w, model, &r->data_withheld)) == NULL)
        return false;
    r->notifications = list;
    r->n_notifications = 1;
    return true;
}

/* Appends affected[0..n) to the receipt's affected list, up to
 * STORE_AFFECTED_MAX in all (the list is allocated for that many). */
static bool add_affected(rd_arena *a, Recordd__V1__CommitReceipt *r, const store_affected *affected,
                         size_t n)
{
    if (n == 0 || r->n_affected >= STORE_AFFECTED_MAX)
        return true;
    if (r->affected == NULL &&
        (r->affected = rd_arena_alloc(a, STORE_AFFECTED_MAX * sizeof *r->affected)) == NULL)
        return false;
    for (size_t i = 0; i < n && r->n_affected < STORE_AFFECTED_MAX; i++) {
        Recordd__V1__AffectedRecord *x = rd_arena_alloc(a, sizeof *x);
        if (x == NULL)
            return false;
        recordd__v1__affected_record__init(x);
        x->model = rd_arena_strdup(a, affected[i].model);
        x->id = rd_arena_strdup(a, affected[i].id);
        x->op = affected[i].op == STORE_OP_DELETE ? "DELETE" : "UPDATE";
        x->sync_id = affected[i].sync_id;
        if (x->model == NULL || x->id == NULL)
            return false;
        r->affected[r->n_affected++] = x;
    }
    return true;
}

Recordd__V1__CommitReceipt *receipt_from_write(svc_call *call, const store_write *w,
                                               const char *client_tx_id, bool with_record,
                                               const char *model)
{
    rd_arena *a = svc_call_arena(call);
    Recordd__V1__CommitReceipt *r = receipt_new(call, client_tx_id);
    if (r == NULL)
        return NULL;
    r->server_tx_id = rd_arena_strdup(a, w->server_tx_id);
    svc_call_log_tx_id(call, w->server_tx_id);
    r->last_sync_id = w->last_sync_id;
    r->ops = w->ops;
    r->success = w->err.code == RD_OK;
    if (r->success) {
        r->status = RECORDD__V1__COMMIT_STATUS__CONFIRMED;
        /* a delete that cascaded: the other records it changed */
        if (!add_affected(a, r, w->affected, w->n_affected))
            return NULL;
        if (w->op != STORE_OP_DELETE && w->rec.record.version > 0) {
            r->id = rd_arena_strdup(a, w->rec.record.id);
            r->version = w->rec.record.version;
            if (r->id == NULL)
                return NULL;
        }
        if (with_record && w->rec.record.data != NULL) {
            /* only what the caller may read (docs/API.md, Receipts) */
            if (svc_authz_read_scope(caller_caps(call), model, w->rec.record.group) ==
                SVC_READ_NONE) {
                r->data_withheld = true;
            } else {
                store_record shown = w->rec.record;
                shown.data = readable_data(call, model, w->rec.record.group, w->rec.record.data,
                                           &r->data_withheld);
                r->record = shown.data != NULL
                                ? svc_record_to_pb(a, w->org, model, &shown, w->last_sync_id)
                                : NULL;
                json_decref(shown.data);
                if (r->record == NULL)
                    return NULL;
            }
        }
    } else {
        r->error = receipt_error(a, &w->err);
        r->current_version = w->rec.current_version;
        if (r->error == NULL)
            return NULL;
        if (w->rec.conflicts != NULL && !add_notification(call, r, w, model))
            return NULL;
        if (w->rec.held)
            r->status = RECORDD__V1__COMMIT_STATUS__HELD;
    }
    return r->server_tx_id ? r : NULL;
}

void receipt_finish(svc_call *call, const rd_err *err, Recordd__V1__CommitReceipt *receipt)
{
    if (receipt == NULL) {
        rd_err oom;
        rd_errf(&oom, RD_INTERNAL, NULL, "out of memory building the receipt");
        fail_with(call, &oom, NULL);
        return;
    }
    if (err->code == RD_OK || receipt->status == RECORDD__V1__COMMIT_STATUS__HELD) {
        svc_reply(call, &receipt->base);
        return;
    }
    if (receipt->error == NULL) {
        receipt->success = false;
        receipt->status = RECORDD__V1__COMMIT_STATUS__REJECTED;
        receipt->error = receipt_error(svc_call_arena(call), err);
    }
    if (receipt->error != NULL && err->code == RD_PERMISSION_DENIED)
        receipt->error->required_capability = required_pb(call);
    fail_with(call, err, receipt);
}

int receipt_grpc_status(const rd_err *err, const Recordd__V1__CommitReceipt *receipt)
{
    if (err->code == RD_OK ||
        (receipt != NULL && receipt->status == RECORDD__V1__COMMIT_STATUS__HELD))
        return 0;
    return rd_code_grpc(err->code);
}

bool receipt_seal(svc_call *call, const rd_err *err, const Recordd__V1__CommitReceipt *receipt,
                  store_sealed *out)
{
    if (receipt == NULL)
        return false;
    size_t len = recordd__v1__commit_receipt__get_packed_size(receipt);
    uint8_t *buf = rd_arena_alloc(svc_call_arena(call), len ? len : 1);
    if (buf == NULL)
        return false;
    recordd__v1__commit_receipt__pack(receipt, buf);
    out->bytes = buf;
    out->len = len;
    out->status = receipt_grpc_status(err, receipt);
    return true;
}

void receipt_send_sealed(svc_call *call, const void *bytes, size_t len, int status, bool replayed)
{
    ProtobufCAllocator alloc;
    rd_arena_pb_allocator(svc_call_arena(call), &alloc);
    Recordd__V1__CommitReceipt *r = recordd__v1__commit_receipt__unpack(&alloc, len, bytes);
    svc_outcome o = {.replayed = replayed};
    if (r == NULL || (status != 0 && r->error == NULL)) {
        rd_errf(&o.err, RD_INTERNAL, NULL, "a stored receipt could not be decoded");
        svc_finish(call, &o);
        return;
    }
    svc_call_log_tx_id(call, r->server_tx_id);
    if (status == 0) { /* the reply goes out as stored, byte for byte */
        o.reply = &r->base;
        o.reply_bytes = bytes;
        o.reply_len = len;
    } else { /* the error is the receipt's */
        rd_errf(&o.err, rd_code_from_str(r->error->code), r->error->field, "%s", r->error->message);
        o.receipt = &r->base;
    }
    svc_finish(call, &o);
}

/* ---- BulkMutate ---------------------------------------------------------------------- */

/* An ErrorInfo metadata entry in the arena. */
static Google__Rpc__ErrorInfo__MetadataEntry *md_entry(rd_arena *a, const char *key,
                                                       const char *value)
{
    Google__Rpc__ErrorInfo__MetadataEntry *e = rd_arena_alloc(a, sizeof *e);
    if (e == NULL || value == NULL)
        return NULL;
    google__rpc__error_info__metadata_entry__init(e);
    e->key = (char *)key;
    e->value = (char *)value;
    return e;
}

/* google.rpc.ErrorInfo {reason, "recordd", metadata keys[i] = vals[i] for
 * the values that are not NULL} packed into an Any. */
static Google__Protobuf__Any *error_info_any(rd_arena *a, const char *reason,
                                             const char *const *keys, const char *const *vals,
                                             size_t n)
{
    Google__Rpc__ErrorInfo info = GOOGLE__RPC__ERROR_INFO__INIT;
    Google__Rpc__ErrorInfo__MetadataEntry **md = rd_arena_alloc(a, (n ? n : 1) * sizeof *md);
    if (md == NULL)
        return NULL;
    info.reason = (char *)reason;
    info.domain = "recordd";
    info.metadata = md;
    for (size_t i = 0; i < n; i++) {
        if (vals[i] == NULL)
            continue;
        if ((md[info.n_metadata] = md_entry(a, keys[i], vals[i])) == NULL)
            return NULL;
        info.n_metadata++;
    }
    return svc_status_any(a, &info.base);
}

/* The google.rpc.Status of one operation's result. */
static Google__Rpc__Status *bulk_op_status(rd_arena *a, const store_write *w,
                                           const receipt_bulk_op *o, bool applied, bool dry_run)
{
    const store_bulk_op *op = o->op;
    Google__Rpc__Status *st = rd_arena_alloc(a, sizeof *st);
    if (st == NULL)
        return NULL;
    google__rpc__status__init(st);
    (void)w;
    if (!op->failed) {
        if (op->w.rec.held)
            st->message = rd_arena_printf(a, "held: %s", op->w.err.msg);
        else if (op->missing)
            st->message = "not found: the id is listed in the receipt's missingIds";
        else if (!applied && dry_run)
            st->message = "dry run: not applied";
        else if (!applied)
            st->message = "not applied: another operation failed and the bulk is all-or-nothing";
        else
            st->message = "";
        return st->message ? st : NULL;
    }
    const rd_err *e = &op->w.err;
    st->code = rd_code_grpc(e->code);
    st->message = rd_arena_strdup(a, e->msg);
    const char *keys[5] = {"field", "current_version", "can", "model", "sync_group"};
    const char *vals[5] = {o->field, NULL, NULL, NULL, NULL};
    if (op->w.rec.current_version > 0)
        vals[1] = rd_arena_printf(a, "%lld", (long long)op->w.rec.current_version);
    if (e->code == RD_PERMISSION_DENIED && o->required != NULL && o->required->can != 0) {
        vals[2] = auth_verb_str(o->required->can);
        vals[3] = o->required->model;
        vals[4] = o->required->group;
    }
    st->details = rd_arena_alloc(a, sizeof *st->details);
    if (st->message == NULL || st->details == NULL ||
        (st->details[0] = error_info_any(a, rd_code_str(e->code), keys, vals, 5)) == NULL)
        return NULL;
    st->n_details = 1;
    return st;
}

/* The receipt of the whole call. */
static Recordd__V1__CommitReceipt *bulk_receipt(svc_call *call, const store_write *w,
                                                const receipt_bulk_op *ops,
                                                const char *client_tx_id, bool dry_run)
{
    rd_arena *a = svc_call_arena(call);
    const store_bulk *b = w->bulk;
    Recordd__V1__CommitReceipt *r = receipt_new(call, client_tx_id);
    size_t n_missing = 0, n_notes = 0;
    if (r == NULL)
        return NULL;
    r->server_tx_id = rd_arena_strdup(a, w->server_tx_id);
    r->last_sync_id = w->last_sync_id;
    r->ops = w->ops;
    r->success = b->n_failed == 0;
    if (dry_run)
        r->status = RECORDD__V1__COMMIT_STATUS__COMMIT_STATUS_UNSPECIFIED;
    else if (b->applied && (b->mode == STORE_BULK_ALL_OR_NOTHING || b->n_failed < b->n_ops))
        r->status = RECORDD__V1__COMMIT_STATUS__CONFIRMED;
    else
        r->status = RECORDD__V1__COMMIT_STATUS__REJECTED;
    for (size_t i = 0; i < b->n_ops; i++) {
        n_missing += b->ops[i].missing;
        n_notes += b->ops[i].w.rec.conflicts != NULL;
    }
    r->missing_ids = rd_arena_alloc(a, (n_missing ? n_missing : 1) * sizeof *r->missing_ids);
    r->notifications = rd_arena_alloc(a, (n_notes ? n_notes : 1) * sizeof *r->notifications);
    if (r->server_tx_id == NULL || r->missing_ids == NULL || r->notifications == NULL)
        return NULL;
    for (size_t i = 0; i < b->n_ops; i++) {
        const store_write *ow = &b->ops[i].w;
        /* deletes that cascaded: what they changed, when it is kept */
        if (b->applied && !b->ops[i].failed && !add_affected(a, r, ow->affected, ow->n_affected))
            return NULL;
        if (b->ops[i].missing &&
            (r->missing_ids[r->n_missing_ids++] = rd_arena_strdup(a, ow->rec.id)) == NULL)
            return NULL;
        if (ow->rec.conflicts != NULL && (r->notifications[r->n_notifications++] = notification(
                                              call, ow, ow->rec.model, &r->data_withheld)) == NULL)
            return NULL;
    }
    if (b->n_failed == 0)
        return r;
    /* the call's error: ALL_OR_NOTHING the operation the store picked,
     * BEST_EFFORT the first failure */
    size_t pick = b->err_index;
    if (b->mode != STORE_BULK_ALL_OR_NOTHING)
        for (pick = 0; pick < b->n_ops && !b->ops[pick].failed; pick++)
            ;
    const store_bulk_op *op = &b->ops[pick];
    Recordd__V1__ReceiptError *e = rd_arena_alloc(a, sizeof *e);
    if (e == NULL)
        return NULL;
    recordd__v1__receipt_error__init(e);
    e->code = (char *)rd_code_str(op->w.err.code);
    e->field = rd_arena_strdup(a, ops[pick].field);
    e->message = rd_arena_printf(
        a, "operations[%zu]: %s (%zu of %zu operations failed%s)", pick, op->w.err.msg, b->n_failed,
        b->n_ops, b->mode == STORE_BULK_ALL_OR_NOTHING ? "; nothing was applied" : "");
    if (op->w.err.code == RD_PERMISSION_DENIED && ops[pick].required != NULL &&
        ops[pick].required->can != 0) {
        Recordd__V1__RequiredCapability *rc = rd_arena_alloc(a, sizeof *rc);
        if (rc == NULL)
            return NULL;
        recordd__v1__required_capability__init(rc);
        rc->can = (char *)auth_verb_str(ops[pick].required->can);
        rc->model = (char *)ops[pick].required->model;
        rc->sync_group = (char *)ops[pick].required->group;
        e->required_capability = rc;
    }
    if (b->mode == STORE_BULK_ALL_OR_NOTHING)
        r->current_version = op->w.rec.current_version;
    r->error = e;
    return e->field && e->message ? r : NULL;
}

bool receipt_bulk_seal(svc_call *call, const store_write *w, const receipt_bulk_op *ops,
                       const char *client_tx_id, bool dry_run, store_sealed *out)
{
    rd_arena *a = svc_call_arena(call);
    const store_bulk *b = w->bulk;
    Recordd__V1__BulkMutateResponse resp = RECORDD__V1__BULK_MUTATE_RESPONSE__INIT;
    if (b == NULL || !b->executed)
        return false;
    resp.receipt = bulk_receipt(call, w, ops, client_tx_id, dry_run);
    resp.results = rd_arena_alloc(a, b->n_ops * sizeof *resp.results);
    if (resp.receipt == NULL || resp.results == NULL)
        return false;
    for (size_t i = 0; i < b->n_ops; i++) {
        const store_bulk_op *op = &b->ops[i];
        Recordd__V1__BulkResult *res = rd_arena_alloc(a, sizeof *res);
        if (res == NULL)
            return false;
        recordd__v1__bulk_result__init(res);
        res->index = (int32_t)i;
        const char *id = op->w.op == STORE_OP_CREATE && op->w.rec.record.id[0] != '\0'
                             ? op->w.rec.record.id
                             : op->w.rec.id;
        res->id = rd_arena_strdup(a, id ? id : "");
        res->affected = (int32_t)op->affected;
        res->applied = b->applied && !op->failed && !op->w.rec.held;
        res->status = bulk_op_status(a, w, &ops[i], res->applied, dry_run);
        if (res->id == NULL || res->status == NULL)
            return false;
        resp.results[resp.n_results++] = res;
    }
    resp.total_requested = (int32_t)b->n_ops;
    resp.total_failed = (int32_t)b->n_failed;
    resp.total_succeeded = (int32_t)(b->n_ops - b->n_failed);
    resp.dry_run = dry_run;
    size_t len = recordd__v1__bulk_mutate_response__get_packed_size(&resp);
    uint8_t *buf = rd_arena_alloc(a, len ? len : 1);
    if (buf == NULL)
        return false;
    recordd__v1__bulk_mutate_response__pack(&resp, buf);
    out->bytes = buf;
    out->len = len;
    out->status =
        b->mode == STORE_BULK_ALL_OR_NOTHING && b->n_failed > 0 ? rd_code_grpc(w->err.code) : 0;
    return true;
}

/* The ErrorInfo of a failed result's status (NULL when it has none). */
static Google__Rpc__ErrorInfo *result_info(rd_arena *a, const Recordd__V1__BulkResult *res)
{
    const Google__Rpc__Status *st = res->status;
    ProtobufCAllocator alloc;
    rd_arena_pb_allocator(a, &alloc);
    for (size_t i = 0; st != NULL && i < st->n_details; i++) {
        const Google__Protobuf__Any *any = st->details[i];
        if (any->type_url != NULL &&
            strcmp(any->type_url, TYPE_URL_PREFIX "google.rpc.ErrorInfo") == 0)
            return google__rpc__error_info__unpack(&alloc, any->value.len, any->value.data);
    }
    return NULL;
}

/* The field metadata of a failed result's ErrorInfo ("operations[i]" when
 * it has none). */
static const char *result_field(rd_arena *a, const Google__Rpc__ErrorInfo *info,
                                const Recordd__V1__BulkResult *res)
{
    for (size_t k = 0; info != NULL && k < info->n_metadata; k++)
        if (strcmp(info->metadata[k]->key, "field") == 0)
            return info->metadata[k]->value;
    return rd_arena_printf(a, "operations[%d]", (int)res->index);
}

void receipt_bulk_send(svc_call *call, const void *bytes, size_t len, int status, bool replayed)
{
    rd_arena *a = svc_call_arena(call);
    ProtobufCAllocator alloc;
    rd_arena_pb_allocator(a, &alloc);
    Recordd__V1__BulkMutateResponse *resp =
        recordd__v1__bulk_mutate_response__unpack(&alloc, len, bytes);
    svc_outcome o = {.replayed = replayed};
    if (resp == NULL || (status != 0 && (resp->receipt == NULL || resp->receipt->error == NULL))) {
        rd_errf(&o.err, RD_INTERNAL, NULL, "a stored bulk response could not be decoded");
        svc_finish(call, &o);
        return;
    }
    if (resp->receipt != NULL)
        svc_call_log_tx_id(call, resp->receipt->server_tx_id);
    if (status == 0) { /* the reply goes out as stored, byte for byte */
        o.reply = &resp->base;
        o.reply_bytes = bytes;
        o.reply_len = len;
        svc_finish(call, &o);
        return;
    }
    /* the call's error is the receipt's; a violation per failing operation
     * ("<code>: <message>"); ErrorInfo also names the operation picked and
     * how many failed */
    const Recordd__V1__ReceiptError *re = resp->receipt->error;
    rd_code code = rd_code_from_str(re->code);
    rd_errf(&o.err, code, re->field, "%s", re->message);
    svc_kv *violations =
        rd_arena_alloc(a, (resp->n_results ? resp->n_results : 1) * sizeof *violations);
    svc_kv *info = rd_arena_alloc(a, 2 * sizeof *info);
    if (violations == NULL || info == NULL)
        goto oom;
    int index = -1;
    for (size_t i = 0; i < resp->n_results; i++) {
        const Recordd__V1__BulkResult *res = resp->results[i];
        if (res->status == NULL || res->status->code == 0)
            continue;
        Google__Rpc__ErrorInfo *ri = result_info(a, res);
        const char *field = result_field(a, ri, res);
        const char *reason = ri != NULL && ri->reason != NULL ? ri->reason : "internal";
        if (index < 0 && res->status->code == rd_code_grpc(code) &&
            strcmp(field, re->field ? re->field : "") == 0)
            index = res->index;
        svc_kv *v = &violations[o.n_violations++];
        v->key = field;
        v->value = rd_arena_printf(a, "%s: %s", reason, res->status->message);
        if (v->key == NULL || v->value == NULL)
            goto oom;
    }
    o.violations = violations;
    info[0] = (svc_kv){"index", index >= 0 ? rd_arena_printf(a, "%d", index) : NULL};
    info[1] = (svc_kv){"failed", rd_arena_printf(a, "%d", (int)resp->total_failed)};
    o.info = info;
    o.n_info = 2;
    if (re->required_capability != NULL) {
        o.can = re->required_capability->can;
        o.model = re->required_capability->model;
        o.group = re->required_capability->sync_group;
    }
    o.receipt = &resp->receipt->base;
    o.bulk = &resp->base;
    svc_finish(call, &o);
    return;
oom:
    rd_errf(&o.err, RD_INTERNAL, NULL, "out of memory building the bulk error");
    o = (svc_outcome){.err = o.err};
    svc_finish(call, &o);
}
