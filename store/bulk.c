/* bulk.c: BulkMutate's store side (store.h, "bulk writes"). A BULK write
 * runs inside the savepoint the writer gives every write: each operation in
 * its own nested savepoint, by-id operations through the single-write code
 * (store_record_apply), by-filter operations as one record write per
 * matching row. ALL_OR_NOTHING undoes everything when an operation failed,
 * BEST_EFFORT only the failed operations, a dry run everything.
 * docs/internals/store.md, "Bulk writes". */
#include <stdlib.h>
#include <string.h>

#include "store/store_int.h"

/* Whether a code is a concurrency refusal (stored with an idempotency key). */
static bool concurrency_code(rd_code code)
{
    return code == RD_VERSION_CONFLICT || code == RD_STALE_CONTEXT || code == RD_CLAIMED;
}

bool store_bulk_storable(const store_write *w)
{
    const store_bulk *b = w->bulk;
    if (b == NULL || !b->executed)
        return false;
    for (size_t i = 0; i < b->n_ops; i++)
        if (b->ops[i].failed && !concurrency_code(b->ops[i].w.err.code))
            return false;
    return b->n_failed > 0;
}

/* Clears what a record write produced (the store's part of its outputs). */
static void clear_outputs(store_write *w)
{
    store_record_clear(&w->rec.record);
    json_decref(w->rec.conflicts);
    w->rec.conflicts = NULL;
    json_decref(w->push.changes);
    w->push.changes = NULL;
    w->last_sync_id = 0;
    w->ops = 0;
    w->rec.held = false;
    w->rec.current_version = 0;
    free(w->affected);
    w->affected = NULL;
    w->n_affected = 0;
}

/* Appends what t (one record write of a by-filter operation) cascaded to
 * w's list of affected records, up to STORE_AFFECTED_MAX. */
static rd_code add_affected(store_write *w, const store_write *t)
{
    if (t->n_affected == 0 || w->n_affected >= STORE_AFFECTED_MAX)
        return RD_OK;
    if (w->affected == NULL &&
        (w->affected = calloc(STORE_AFFECTED_MAX, sizeof *w->affected)) == NULL)
        return rd_errf(&w->err, RD_INTERNAL, NULL, "out of memory");
    for (size_t i = 0; i < t->n_affected && w->n_affected < STORE_AFFECTED_MAX; i++)
        w->affected[w->n_affected++] = t->affected[i];
    return RD_OK;
}

/* ---- by filter ------------------------------------------------------------------------ */

/* The ids of the records of op's model matching its filter (and groups), at
 * most limit + 1 of them, in id order, into a malloc'd array of malloc'd
 * strings. */
static rd_code select_ids(store *s, store_bulk_op *op, const store_filter *f, size_t limit,
                          char ***out, size_t *n)
{
    store_write *w = &op->w;
    store_sbuf sql = {0};
    store_dbst *st = NULL;
    char **ids = NULL;
    rd_code code = RD_OK;
    int rc, idx = 1;
    *out = NULL;
    *n = 0;
    store_sbuf_add(&sql, "SELECT _id FROM ");
    store_sbuf_table(&sql, w->org, w->rec.model);
    store_sbuf_add(&sql, " WHERE (");
    store_sbuf_add(&sql, store_filter_sql(f));
    store_sbuf_add(&sql, ")");
    if (op->groups != NULL) {
        store_sbuf_add(&sql, " AND _group IN (");
        for (size_t g = 0; g < op->n_groups; g++)
            store_sbuf_add(&sql, g == 0 ? "?" : ", ?");
        store_sbuf_add(&sql, op->n_groups == 0 ? "NULL)" : ")");
    }
    store_sbuf_add(&sql, " ORDER BY _id LIMIT ?");
    ids = calloc(limit + 1, sizeof *ids);
    if (sql.oom || ids == NULL) {
        code = rd_errf(&w->err, RD_INTERNAL, NULL, "out of memory");
        goto done;
    }
    rc = store_stmt_get(&s->wcache, sql.p, &st);
    if (rc == STORE_DB_OK)
        rc = store_filter_bind(f, st, &idx);
    for (size_t g = 0; rc == STORE_DB_OK && op->groups != NULL && g < op->n_groups; g++)
        rc = store_db_bind_text(st, idx++, op->groups[g], -1, STORE_DB_STATIC);
    if (rc == STORE_DB_OK)
        rc = store_db_bind_int64(st, idx, (int64_t)limit + 1);
    while (rc == STORE_DB_OK || rc == STORE_DB_ROW) {
        rc = store_wstep(s, st);
        if (rc != STORE_DB_ROW)
            break;
        ids[*n] = strdup((const char *)store_db_column_text(st, 0));
        if (ids[*n] == NULL) {
            code = rd_errf(&w->err, RD_INTERNAL, NULL, "out of memory");
            goto done;
        }
        (*n)++;
    }
    if (rc != STORE_DB_DONE)
        code = store_sql_err(s->wdb, rc, &w->err);
done:
    store_stmt_put(st);
    store_sbuf_free(&sql);
    if (code != RD_OK) {
        for (size_t i = 0; i < *n; i++)
            free(ids[i]);
        free(ids);
        ids = NULL;
        *n = 0;
    }
    *out = ids;
    return code;
}

/* Counts n more records against the bulk's row budget. RD_TOO_MANY_ROWS
 * (in w->err) when it would exceed it. */
static rd_code take_rows(store_bulk *b, store_write *w, int64_t n)
{
    b->touched += n;
    if (b->max_rows > 0 && b->touched > b->max_rows)
        return rd_errf(&w->err, RD_TOO_MANY_ROWS, "operations",
                       "the bulk would touch more than %lld records (--max-bulk-rows); nothing "
                       "was written: split it into smaller calls",
                       (long long)b->max_rows);
    return RD_OK;
}

/* Whether the bulk must stop now: its time slice or the call's deadline
 * ran out (w->err says which). */
static rd_code check_time(const store_write *parent, store_write *w)
{
    const store_bulk *b = parent->bulk;
    int64_t now = rd_now_us();
    if (b->until_us != 0 && now > b->until_us)
        return rd_errf(&w->err, RD_DEADLINE_EXCEEDED, NULL,
                       "the bulk held the writer longer than %lld ms (--max-bulk-ms) and was "
                       "undone; split it into smaller calls",
                       (long long)(b->max_us / 1000));
    if (parent->deadline_us != 0 && now > parent->deadline_us)
        return rd_errf(&w->err, RD_DEADLINE_EXCEEDED, NULL,
                       "the call's deadline passed while the bulk ran; it was undone");
    return RD_OK;
}

/* UPDATE_WHERE / DELETE_WHERE: resolve the model, parse and check the
 * filter, check the patch once, select the matching ids (refusing more
 * than the limit), then write each record as a single write would, each
 * taking the next sync id. On failure the caller undoes the operation. */
static rd_code run_where(store *s, const store_write *parent, store_bulk_op *op)
{
    store_write *w = &op->w;
    bool update = w->op == STORE_OP_UPDATE_WHERE;
    store_schema *sch = NULL;
    store_filter *f = NULL;
    char **ids = NULL;
    size_t n = 0;
    rd_code code = RD_OK;
    if (w->rec.model == NULL || w->rec.model[0] == '\0')
        return rd_errf(&w->err, RD_VALIDATION_FAILED, "model", "model is required");
    sch = store_writer_schema(s, parent->org);
    const store_model *m = store_schema_model(sch, w->rec.model);
    if (!store_org_valid(parent->org) || m == NULL) {
        code = rd_errf(&w->err, RD_NOT_FOUND, "model", "model '%.64s' is not in the schema",
                       w->rec.model);
        goto done;
    }
    if (store_filter_parse(sch, parent->org, m, op->filter, op->access, &f, &w->err) != RD_OK) {
        code = w->err.code;
        goto done;
    }
    if (store_filter_conditions(f) == 0) {
        code = rd_errf(&w->err, RD_FILTER_REQUIRED, "filter",
                       "a by-filter operation needs a filter with at least one condition; "
                       "it never writes a whole model");
        goto done;
    }
    if (op->has_max_affected && op->max_affected < 0) {
        code = rd_errf(&w->err, RD_VALIDATION_FAILED, "maxAffected",
                       "maxAffected must not be negative");
        goto done;
    }
    if (update && store_check_values(m, w->rec.data, STORE_CHECK_PATCH, &w->err) != RD_OK) {
        code = w->err.code;
        goto done;
    }
    size_t limit = STORE_BULK_MAX_AFFECTED;
    if (op->has_max_affected && op->max_affected < STORE_BULK_MAX_AFFECTED)
        limit = (size_t)op->max_affected;
    code = select_ids(s, op, f, limit, &ids, &n);
    if (code != RD_OK)
        goto done;
    if (n > limit) {
        if (op->has_max_affected && (int64_t)limit == op->max_affected)
            code = rd_errf(&w->err, RD_VALIDATION_FAILED, "maxAffected",
                           "the filter matches more than maxAffected (%lld) records; nothing "
                           "was written",
                           (long long)op->max_affected);
        else
            code = rd_errf(&w->err, RD_VALIDATION_FAILED, "maxAffected",
                           "the filter matches more than %d records, the most one operation "
                           "may write; narrow the filter",
                           STORE_BULK_MAX_AFFECTED);
        goto done;
    }
    code = take_rows(parent->bulk, w, (int64_t)n);
    if (code != RD_OK)
        goto done;
    for (size_t i = 0; i < n; i++) {
        if ((code = check_time(parent, w)) != RD_OK)
            break;
        store_write t;
        memset(&t, 0, sizeof t);
        t.op = update ? STORE_OP_UPDATE : STORE_OP_DELETE;
        t.org = parent->org;
        t.actor = parent->actor;
        t.rec.model = w->rec.model;
        t.rec.id = ids[i];
        t.rec.data = w->rec.data;
        t.authorize = w->authorize;
        t.authorize_other = w->authorize_other;
        t.may_read = w->may_read;
        t.ctx = w->ctx;
        memcpy(t.server_tx_id, parent->server_tx_id, sizeof t.server_tx_id);
        code = store_record_apply(s, &t);
        /* a record an earlier one of this operation deleted through its
         * references (onDelete CASCADE): nothing left to do */
        if (!update && code == RD_NOT_FOUND && strcmp(t.err.field, "id") == 0) {
            clear_outputs(&t);
            code = RD_OK;
            continue;
        }
        /* a delete that cascaded wrote more records: they count too */
        if (code == RD_OK && t.ops > 1)
            code = take_rows(parent->bulk, w, t.ops - 1);
        if (code == RD_OK)
            code = add_affected(w, &t);
        if (code == RD_OK) {
            s->sync_id = t.last_sync_id;
            op->affected += t.ops;
        } else if (t.err.code != RD_OK) {
            /* the record's error, naming it */
            rd_errf(&w->err, code, t.err.field[0] ? t.err.field : NULL, "record '%.128s': %s",
                    ids[i], t.err.msg);
            w->rec.current_version = t.rec.current_version;
        }
        clear_outputs(&t);
        if (code != RD_OK)
            break;
    }
done:
    for (size_t i = 0; i < n; i++)
        free(ids[i]);
    free(ids);
    store_filter_free(f);
    store_schema_release(sch);
    return code;
}

/* ---- one operation ------------------------------------------------------------------------- */

/* Runs op in its own savepoint: kept when it succeeded (or found its record
 * missing), undone otherwise. Sets op->failed / missing / affected and
 * keeps s->sync_id at the last sync id it kept. false when the transaction
 * is unusable. */
static bool run_op(store *s, const store_write *parent, store_bulk_op *op)
{
    store_write *w = &op->w;
    int64_t before = s->sync_id;
    rd_code code;
    op->failed = false;
    op->missing = false;
    op->affected = 0;
    if (op->skip) {
        op->failed = true;
        if (w->err.code == RD_OK)
            rd_errf(&w->err, RD_INTERNAL, NULL, "the operation was refused");
        return true;
    }
    w->org = parent->org;
    w->actor = parent->actor;
    memcpy(w->server_tx_id, parent->server_tx_id, sizeof w->server_tx_id);
    rd_err_clear(&w->err);
    if (store_wexec(s, "SAVEPOINT op") != STORE_DB_OK) {
        store_sql_err(s->wdb, store_db_errcode(s->wdb), &w->err);
        op->failed = true;
        return false;
    }
    if (w->op == STORE_OP_UPDATE_WHERE || w->op == STORE_OP_DELETE_WHERE) {
        code = run_where(s, parent, op);
    } else if (w->op >= STORE_OP_CREATE && w->op <= STORE_OP_DELETE) {
        code = take_rows(parent->bulk, w, 1);
        if (code == RD_OK)
            code = check_time(parent, w);
        if (code == RD_OK)
            code = store_record_apply(s, w);
        /* a delete that cascaded wrote more records: they count too */
        if (code == RD_OK && w->ops > 1)
            code = take_rows(parent->bulk, w, w->ops - 1);
        if (code == RD_OK) {
            s->sync_id = w->last_sync_id;
            op->affected = w->ops;
        }
        /* a by-id change of a record that is not there: reported in the
         * receipt's missing ids, not a failure (load_row's "id" error; an
         * unknown model names "model") */
        if (code == RD_NOT_FOUND && w->op != STORE_OP_CREATE && strcmp(w->err.field, "id") == 0) {
            op->missing = true;
            code = RD_OK;
        }
    } else {
        code = rd_errf(&w->err, RD_INTERNAL, NULL, "operation %d cannot be part of a bulk",
                       (int)w->op);
    }
    if (code == RD_OK) {
        if (store_wexec(s, "RELEASE op") == STORE_DB_OK)
            return true;
        code = store_sql_err(s->wdb, store_db_errcode(s->wdb), &w->err);
        op->affected = 0;
    }
    /* failed or held (w->err keeps why): undo the operation's writes and give
     * its sync ids back */
    op->failed = !(code == RD_STALE_CONTEXT && w->rec.held);
    op->affected = 0;
    s->sync_id = before;
    w->last_sync_id = 0;
    w->ops = 0;
    free(w->affected);
    w->affected = NULL;
    w->n_affected = 0;
    int rc = store_wexec(s, "ROLLBACK TO op");
    if (rc == STORE_DB_OK)
        rc = store_wexec(s, "RELEASE op");
    return rc == STORE_DB_OK;
}

/* ---- the bulk -------------------------------------------------------------------------------- */

rd_code store_bulk_apply(store *s, store_write *w)
{
    store_bulk *b = w->bulk;
    int64_t start = s->sync_id;
    bool usable = true;
    if (b == NULL || b->n_ops == 0 || b->n_ops > STORE_BULK_MAX_OPS || b->ops == NULL)
        return rd_errf(&w->err, RD_INTERNAL, NULL, "a bulk needs 1 to %d operations",
                       STORE_BULK_MAX_OPS);
    b->executed = false;
    b->applied = false;
    b->n_failed = 0;
    b->err_index = 0;
    b->rows = 0;
    b->touched = 0;
    b->until_us = b->max_us > 0 ? rd_now_us() + b->max_us : 0;
    if (store_wexec(s, "SAVEPOINT bulk") != STORE_DB_OK)
        return store_sql_err(s->wdb, store_db_errcode(s->wdb), &w->err);
    rd_code abort_code = RD_OK;
    for (size_t i = 0; i < b->n_ops && usable; i++) {
        store_bulk_op *op = &b->ops[i];
        usable = run_op(s, w, op);
        if (op->failed)
            b->n_failed++;
        else
            b->rows += op->affected;
        /* over budget or out of time: the whole bulk stops and is undone */
        rd_code c = op->w.err.code;
        if (op->failed && (c == RD_TOO_MANY_ROWS || c == RD_DEADLINE_EXCEEDED)) {
            abort_code = c;
            w->err = op->w.err;
            break;
        }
    }
    if (usable && abort_code != RD_OK) {
        int rc = store_wexec(s, "ROLLBACK TO bulk");
        if (rc == STORE_DB_OK)
            rc = store_wexec(s, "RELEASE bulk");
        s->sync_id = start;
        if (rc != STORE_DB_OK) {
            b->outcome = rd_errf(&w->err, RD_INTERNAL, NULL, "the bulk could not be undone");
            return b->outcome;
        }
        b->outcome = abort_code;
        return abort_code; /* refused as a whole: executed stays false */
    }
    if (!usable) {
        /* the savepoint stack is broken: the writer abandons the batch */
        s->sync_id = start;
        b->outcome = rd_errf(&w->err, RD_INTERNAL, NULL, "the bulk could not be undone");
        return b->outcome;
    }
    b->executed = true;
    bool undo = b->dry_run || (b->mode == STORE_BULK_ALL_OR_NOTHING && b->n_failed > 0);
    int rc = undo ? store_wexec(s, "ROLLBACK TO bulk") : STORE_DB_OK;
    if (rc == STORE_DB_OK)
        rc = store_wexec(s, "RELEASE bulk");
    int64_t last = s->sync_id;
    s->sync_id = start; /* the writer advances it once the write's savepoint is released */
    if (rc != STORE_DB_OK) {
        b->executed = false;
        b->outcome = store_sql_err(s->wdb, rc, &w->err);
        return b->outcome;
    }
    b->applied = !undo;
    w->last_sync_id = undo || last == start ? 0 : last;
    w->ops = (int)(undo && !b->dry_run ? 0 : b->rows);
    if (b->mode == STORE_BULK_ALL_OR_NOTHING && b->n_failed > 0) {
        /* the call's error: the first denied operation, else the first failure */
        size_t pick = b->n_ops;
        for (size_t i = 0; i < b->n_ops && pick == b->n_ops; i++)
            if (b->ops[i].failed && b->ops[i].w.err.code == RD_PERMISSION_DENIED)
                pick = i;
        for (size_t i = 0; i < b->n_ops && pick == b->n_ops; i++)
            if (b->ops[i].failed)
                pick = i;
        b->err_index = pick;
        w->err = b->ops[pick].w.err;
        b->outcome = w->err.code;
        return b->outcome;
    }
    b->outcome = RD_OK;
    return RD_OK;
}
