/* The change feed's reads over _rd_sync_log (store.h, "change feed"): the
 * log's bounds, the rows of one organisation after a cursor, and the hook
 * the writer runs after each COMMIT. */
#include <stdlib.h>
#include <string.h>

#include "store/store_int.h"

void store_changes_free(store_change *ch, size_t n)
{
    for (size_t i = 0; ch != NULL && i < n; i++) {
        json_decref(ch[i].fields);
        json_decref(ch[i].data);
    }
    free(ch);
}

void store_on_commit(store *s, store_commit_fn fn, void *arg)
{
    pthread_mutex_lock(&s->cmu);
    s->commit_fn = fn;
    s->commit_arg = arg;
    pthread_mutex_unlock(&s->cmu);
}

/* org's bounds in the connection's current snapshot: its newest committed
 * sync id (_rd_org_seq) and the oldest the log still holds for it; with no
 * row left (never written, or all pruned) the oldest is head + 1. */
static rd_code read_bounds(store_conn *c, const char *org, int64_t *oldest, int64_t *head,
                           rd_err *err)
{
    store_dbst *st = NULL;
    int rc = store_org_head(c, org, head);
    if (rc == STORE_DB_OK)
        rc = store_stmt_get(&c->cache, "SELECT min(sync_id) FROM _rd_sync_log WHERE org = ?1", &st);
    if (rc == STORE_DB_OK) {
        store_db_bind_text(st, 1, org, -1, STORE_DB_STATIC);
        rc = store_db_step(st);
    }
    if (rc == STORE_DB_ROW) {
        *oldest =
            store_db_column_type(st, 0) == STORE_DB_NULL ? *head + 1 : store_db_column_int64(st, 0);
        rc = STORE_DB_OK;
    }
    store_stmt_put(st);
    if (rc != STORE_DB_OK)
        return store_sql_err(c->db, rc, err);
    return RD_OK;
}

void store_set_changes_retention(store *s, int64_t seconds, int64_t max_rows)
{
    __atomic_store_n(&s->log_retention_s, seconds > 0 ? seconds : 0, __ATOMIC_RELEASE);
    __atomic_store_n(&s->log_max_rows, max_rows > 0 ? max_rows : 0, __ATOMIC_RELEASE);
}

void store_changes_measure(store *s)
{
    store_dbst *st = NULL;
    if (store_stmt_get(&s->wcache,
                       "SELECT coalesce(max(seq) - min(seq) + 1, 0), coalesce((SELECT committed_at"
                       " FROM _rd_sync_log ORDER BY seq LIMIT 1), 0) FROM _rd_sync_log",
                       &st) == STORE_DB_OK &&
        store_db_step(st) == STORE_DB_ROW) {
        s->log_rows = store_db_column_int64(st, 0);
        s->log_oldest_us = store_db_column_int64(st, 1);
    }
    store_stmt_put(st);
}

/* Deletes the oldest log rows that are too old or beyond the row cap,
 * inside the open batch transaction in its own savepoint. Nothing runs
 * unless the in-memory size or oldest time says a row is due, so a log
 * within its bounds costs no statement. When due: at store_prune_budget's
 * pace (STORE_LOG_PRUNE_ROWS a second plus two per row written, at most
 * STORE_LOG_PRUNE_MAX at once, so it keeps up with any write rate), oldest
 * first (seq order; sync ids grow with commit time). Before
 * deleting, each affected organisation's newest deleted sync id goes into
 * _rd_org_seq, so its head survives its rows. Errors are ignored (tried
 * again later). */
void store_changes_prune(store *s)
{
    static const char cut_by_age[] =
        "SELECT coalesce(max(seq), 0) FROM (SELECT seq, committed_at FROM _rd_sync_log"
        " ORDER BY seq LIMIT ?2) AS oldest WHERE committed_at < ?1";
    static const char cut_by_count[] =
        "SELECT coalesce(min(max(seq) - ?1, min(seq) + ?2 - 1), 0) FROM _rd_sync_log";
    static const char keep_heads[] =
        "INSERT INTO _rd_org_seq (org, sync_id) SELECT org, max(sync_id) FROM _rd_sync_log"
        " WHERE seq <= ?1 GROUP BY org ON CONFLICT (org) DO UPDATE SET"
        " sync_id = max(_rd_org_seq.sync_id, excluded.sync_id)";
    static const char delete_upto[] = "DELETE FROM _rd_sync_log WHERE seq <= ?1";
    /* PostgreSQL: every batch writes its organisations' heads into
     * _rd_org_seq already (and only under their locks: writing other
     * organisations' rows here could deadlock with another process), and
     * rows another process is pruning are skipped, not waited for */
    static const char delete_upto_pg[] =
        "DELETE FROM _rd_sync_log WHERE seq IN (SELECT seq FROM _rd_sync_log WHERE seq <= ?1"
        " FOR UPDATE SKIP LOCKED)";
    bool pg = store_db_dialect(s->wdb) == STORE_DIALECT_POSTGRES;
    int64_t keep_s = __atomic_load_n(&s->log_retention_s, __ATOMIC_ACQUIRE);
    int64_t keep_rows = __atomic_load_n(&s->log_max_rows, __ATOMIC_ACQUIRE);
    int64_t now = rd_now_us();
    bool old_due = keep_s > 0 && s->log_oldest_us != 0 && s->log_oldest_us < now - keep_s * 1000000;
    bool size_due = keep_rows > 0 && s->log_rows > keep_rows;
    if (!old_due && !size_due)
        return;
    int64_t limit =
        store_prune_budget(&s->log_pace, now, STORE_LOG_PRUNE_ROWS, STORE_LOG_PRUNE_MAX);
    if (limit == 0)
        return;
    if (store_exec(s->wdb, "SAVEPOINT log_prune") != STORE_DB_OK)
        return;
    int64_t cut = 0, c = 0;
    store_dbst *st = NULL;
    int rc = STORE_DB_OK;
    if (old_due && (rc = store_stmt_get(&s->wcache, cut_by_age, &st)) == STORE_DB_OK) {
        store_db_bind_int64(st, 1, now - keep_s * 1000000);
        store_db_bind_int64(st, 2, limit);
        if ((rc = store_wstep(s, st)) == STORE_DB_ROW) {
            cut = store_db_column_int64(st, 0);
            rc = STORE_DB_OK;
        }
    }
    store_stmt_put(st);
    st = NULL;
    if (rc == STORE_DB_OK && size_due &&
        (rc = store_stmt_get(&s->wcache, cut_by_count, &st)) == STORE_DB_OK) {
        store_db_bind_int64(st, 1, keep_rows);
        store_db_bind_int64(st, 2, limit);
        if ((rc = store_wstep(s, st)) == STORE_DB_ROW) {
            c = store_db_column_int64(st, 0);
            cut = c > cut ? c : cut;
            rc = STORE_DB_OK;
        }
    }
    store_stmt_put(st);
    st = NULL;
    for (int k = pg ? 1 : 0; rc == STORE_DB_OK && cut > 0 && k < 2; k++) {
        rc = store_stmt_get(&s->wcache,
                            k == 0 ? keep_heads
                            : pg   ? delete_upto_pg
                                   : delete_upto,
                            &st);
        if (rc == STORE_DB_OK) {
            store_db_bind_int64(st, 1, cut);
            rc = store_wstep(s, st) == STORE_DB_DONE ? STORE_DB_OK : STORE_DB_ERROR;
        }
        store_stmt_put(st);
        st = NULL;
    }
    if (rc != STORE_DB_OK)
        store_exec(s->wdb, "ROLLBACK TO log_prune");
    store_exec(s->wdb, "RELEASE log_prune");
    store_changes_measure(s);
}

rd_code store_changes_stats(store_conn *c, int64_t *rows, size_t max_orgs, store_org_bounds_fn fn,
                            void *arg, rd_err *err)
{
    static const char sql[] =
        "SELECT o.org, max(coalesce((SELECT max(sync_id) FROM _rd_sync_log WHERE org = o.org), 0),"
        " coalesce((SELECT sync_id FROM _rd_org_seq WHERE org = o.org),"
        " (SELECT sync_id FROM _rd_org_seq WHERE org = '*'), 0)),"
        " (SELECT min(sync_id) FROM _rd_sync_log WHERE org = o.org)"
        " FROM (SELECT DISTINCT org FROM _rd_schema) AS o ORDER BY o.org LIMIT ?1";
    store_dbst *st = NULL;
    *rows = 0;
    int rc = store_conn_exec(c, "BEGIN");
    if (rc == STORE_DB_OK)
        rc = store_stmt_get(&c->cache,
                            "SELECT coalesce(max(seq) - min(seq) + 1, 0) FROM _rd_sync_log", &st);
    if (rc == STORE_DB_OK && (rc = store_db_step(st)) == STORE_DB_ROW) {
        *rows = store_db_column_int64(st, 0);
        rc = STORE_DB_OK;
    }
    store_stmt_put(st);
    st = NULL;
    if (rc == STORE_DB_OK)
        rc = store_stmt_get(&c->cache, sql, &st);
    if (rc == STORE_DB_OK) {
        store_db_bind_int64(st, 1, (int64_t)max_orgs);
        while ((rc = store_db_step(st)) == STORE_DB_ROW) {
            int64_t newest = store_db_column_int64(st, 1);
            int64_t oldest = store_db_column_type(st, 2) == STORE_DB_NULL
                                 ? newest + 1
                                 : store_db_column_int64(st, 2);
            fn(arg, (const char *)store_db_column_text(st, 0), oldest, newest);
        }
        if (rc == STORE_DB_DONE)
            rc = STORE_DB_OK;
    }
    store_stmt_put(st);
    rd_code code = rc == STORE_DB_OK ? RD_OK : store_sql_err(c->db, rc, err);
    store_conn_exec(c, "COMMIT");
    return code;
}

rd_code store_changes_bounds(store_conn *c, const char *org, int64_t *oldest, int64_t *head,
                             rd_err *err)
{
    *oldest = *head = 0;
    if (store_conn_exec(c, "BEGIN") != STORE_DB_OK)
        return store_sql_err(c->db, store_db_errcode(c->db), err);
    rd_code code = read_bounds(c, org, oldest, head, err);
    store_conn_exec(c, "COMMIT");
    return code;
}

static bool in_list(const char *v, const char *const *list, size_t n)
{
    if (n == 0)
        return true;
    for (size_t i = 0; i < n; i++)
        if (strcmp(v, list[i]) == 0)
            return true;
    return false;
}

static store_op op_of(const char *op)
{
    if (strcmp(op, "CREATE") == 0)
        return STORE_OP_CREATE;
    if (strcmp(op, "UPDATE") == 0)
        return STORE_OP_UPDATE;
    if (strcmp(op, "REPLACE") == 0)
        return STORE_OP_REPLACE;
    return STORE_OP_DELETE;
}

static void copy_col(char *dst, size_t cap, store_dbst *st, int col)
{
    const unsigned char *v = store_db_column_text(st, col);
    snprintf(dst, cap, "%s", v != NULL ? (const char *)v : "");
}

/* JSON text of column col, or an empty container of the given kind when the
 * column is NULL or not valid JSON of that kind. New reference or NULL. */
static json_t *json_col(store_dbst *st, int col, bool array)
{
    const char *text = (const char *)store_db_column_text(st, col);
    json_t *v = text != NULL ? json_loads(text, JSON_DECODE_ANY, NULL) : NULL;
    if (v != NULL && (array ? json_is_array(v) : json_is_object(v)))
        return v;
    json_decref(v);
    return array ? json_array() : json_object();
}

rd_code store_changes_read(store_conn *c, const store_changes_query *q, store_change **out,
                           size_t *n, int64_t *scanned_to, rd_err *err)
{
    static const char sql[] =
        "SELECT sync_id, server_tx_id, model, record_id, op, fields, actor, grp, committed_at,"
        " data FROM _rd_sync_log WHERE sync_id > ?1 AND sync_id <= ?2 AND org = ?3"
        " ORDER BY sync_id";
    store_dbst *st = NULL;
    store_change *res = NULL;
    size_t cnt = 0;
    int64_t oldest, head, last = q->after;
    rd_code code = RD_OK;
    bool in_tx = false;
    *out = NULL;
    *n = 0;
    *scanned_to = q->after;
    if (q->limit == 0 || q->limit > STORE_CHANGES_MAX_LIMIT || q->after < 0)
        return rd_errf(err, RD_INTERNAL, NULL, "store_changes_read: bad limit or cursor");
    res = calloc(q->limit, sizeof *res);
    if (res == NULL)
        return rd_errf(err, RD_INTERNAL, NULL, "out of memory");
    int rc = store_exec(c->db, "BEGIN");
    if (rc != STORE_DB_OK) {
        code = store_sql_err(c->db, rc, err);
        goto done;
    }
    in_tx = true;
    code = read_bounds(c, q->org, &oldest, &head, err);
    if (code != RD_OK)
        goto done;
    /* rows after the cursor were pruned (retention): a gap, never silent */
    if (q->after < oldest - 1) {
        code = rd_errf(err, RD_SYNC_ID_EXPIRED, "sinceSyncId",
                       "sync id %lld is older than the change log's retention; the oldest "
                       "available sync id is %lld (resume from %lld after a full re-read)",
                       (long long)q->after, (long long)oldest, (long long)(oldest - 1));
        goto done;
    }
    int64_t upto = q->upto > 0 && q->upto < head ? q->upto : head;
    if (upto <= q->after)
        goto done; /* nothing new: the cursor stays */
    rc = store_stmt_get(&c->cache, sql, &st);
    if (rc != STORE_DB_OK) {
        code = store_sql_err(c->db, rc, err);
        goto done;
    }
    store_db_bind_int64(st, 1, q->after);
    store_db_bind_int64(st, 2, upto);
    store_db_bind_text(st, 3, q->org, -1, STORE_DB_STATIC);
    last = upto; /* unless the page fills up first */
    while ((rc = store_db_step(st)) == STORE_DB_ROW) {
        const char *model = (const char *)store_db_column_text(st, 2);
        const char *grp = (const char *)store_db_column_text(st, 7);
        if (model == NULL || grp == NULL || !in_list(model, q->models, q->n_models) ||
            !in_list(grp, q->groups, q->n_groups))
            continue;
        store_change *e = &res[cnt];
        e->sync_id = store_db_column_int64(st, 0);
        copy_col(e->server_tx_id, sizeof e->server_tx_id, st, 1);
        copy_col(e->model, sizeof e->model, st, 2);
        copy_col(e->id, sizeof e->id, st, 3);
        e->op = op_of((const char *)store_db_column_text(st, 4));
        copy_col(e->actor, sizeof e->actor, st, 6);
        copy_col(e->group, sizeof e->group, st, 7);
        e->committed_at_us = store_db_column_int64(st, 8);
        e->fields = json_col(st, 5, true);
        e->data = e->op == STORE_OP_DELETE ? json_object() : json_col(st, 9, false);
        cnt++;
        if (e->fields == NULL || e->data == NULL) {
            code = rd_errf(err, RD_INTERNAL, NULL, "out of memory");
            goto done;
        }
        if (cnt == q->limit) {
            last = e->sync_id;
            break;
        }
    }
    if (rc != STORE_DB_ROW && rc != STORE_DB_DONE)
        code = store_sql_err(c->db, rc, err);
done:
    store_stmt_put(st);
    if (in_tx)
        store_exec(c->db, "COMMIT");
    if (code != RD_OK) {
        store_changes_free(res, cnt);
        return code;
    }
    if (cnt == 0) {
        free(res);
        res = NULL;
    }
    *out = res;
    *n = cnt;
    *scanned_to = last;
    return RD_OK;
}
