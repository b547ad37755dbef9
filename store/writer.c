/* writer.c: the single writer thread and group commit. store_submit queues
 * a write; the writer takes every queued write (up to max_batch), runs each
 * in its own SAVEPOINT inside one IMMEDIATE transaction, commits once (one
 * fsync for the batch) and only then runs the completions. Also the record
 * writes themselves: create, merge-patch update, replace and delete, each
 * appending one row to the sync log. */
#include <stdlib.h>
#include <string.h>

#include "store/store_int.h"

/* ---- queue ----------------------------------------------------------------------- */

static void init_outputs(store_write *w)
{
    rd_err_clear(&w->err);
    rd_random_id("tx_", w->server_tx_id, 20);
    w->last_sync_id = 0;
    w->ops = 0;
    memset(&w->record, 0, sizeof w->record);
    w->schema_revision = 0;
    w->changes = NULL;
    w->current_version = 0;
    w->conflicts = NULL;
    w->held = false;
    w->idem_stored = false;
    w->replayed = false;
    w->replay = NULL;
    w->replay_len = 0;
    w->replay_status = 0;
}

/* Drops whatever a failed write had produced. */
static void reset_outputs(store_write *w)
{
    store_record_clear(&w->record);
    json_decref(w->changes);
    w->changes = NULL;
    w->last_sync_id = 0;
    w->ops = 0;
    w->schema_revision = 0;
    w->current_version = 0;
    json_decref(w->conflicts);
    w->conflicts = NULL;
    w->held = false;
    w->idem_stored = false;
    free(w->replay);
    w->replay = NULL;
    w->replay_len = 0;
    w->replayed = false;
}

void store_submit(store *s, store_write *w)
{
    init_outputs(w);
    w->next_ = NULL;
    w->idem_next_ = NULL;
    w->idem_inflight_ = false;
    pthread_mutex_lock(&s->qmu);
    if (s->closing) {
        pthread_mutex_unlock(&s->qmu);
        rd_errf(&w->err, RD_UNAVAILABLE, NULL, "the store is shutting down");
        if (w->done != NULL)
            w->done(w);
        return;
    }
    if (w->idem_key != NULL && w->idem_key[0] != '\0' && !store_idem_enter(s, w)) {
        pthread_mutex_unlock(&s->qmu);
        rd_errf(&w->err, RD_IDEMPOTENCY_IN_PROGRESS, "idempotencyKey",
                "a request with this idempotency key is still in progress; retry later");
        if (w->done != NULL)
            w->done(w);
        return;
    }
    if (w->op == STORE_OP_PUSH_SCHEMA)
        store_schema_ref(w->schema);
    if (s->qtail != NULL)
        s->qtail->next_ = w;
    else
        s->qhead = w;
    s->qtail = w;
    pthread_cond_signal(&s->qcv);
    pthread_mutex_unlock(&s->qmu);
}

typedef struct waiter {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool done;
    void *ctx; /* the caller's ctx, restored afterwards */
} waiter;

static void wait_done(store_write *w)
{
    waiter *wt = w->ctx;
    pthread_mutex_lock(&wt->mu);
    wt->done = true;
    pthread_cond_signal(&wt->cv);
    pthread_mutex_unlock(&wt->mu);
}

rd_code store_submit_wait(store *s, store_write *w)
{
    waiter wt;
    pthread_mutex_init(&wt.mu, NULL);
    pthread_cond_init(&wt.cv, NULL);
    wt.done = false;
    wt.ctx = w->ctx;
    w->ctx = &wt;
    w->done = wait_done;
    store_submit(s, w);
    pthread_mutex_lock(&wt.mu);
    while (!wt.done)
        pthread_cond_wait(&wt.cv, &wt.mu);
    pthread_mutex_unlock(&wt.mu);
    pthread_mutex_destroy(&wt.mu);
    pthread_cond_destroy(&wt.cv);
    w->ctx = wt.ctx;
    w->done = NULL;
    return w->err.code;
}

/* ---- helpers --------------------------------------------------------------------- */

/* Runs a cached statement on the write connection that returns no rows. */
int store_wstep(store *s, sqlite3_stmt *st)
{
    int left = atomic_load(&s->fault_countdown);
    if (left > 0) {
        if (left > 1 || !atomic_load(&s->fault_repeat))
            atomic_store(&s->fault_countdown, left - 1);
        if (left == 1)
            return atomic_load(&s->fault_rc);
    }
    return sqlite3_step(st);
}

void store_fault_arm(store *s, int nth, int rc, bool repeat)
{
    atomic_store(&s->fault_rc, rc);
    atomic_store(&s->fault_repeat, repeat);
    atomic_store(&s->fault_countdown, nth > 0 ? nth : 0);
}

void store_fault_disarm(store *s)
{
    atomic_store(&s->fault_countdown, 0);
}

static int wexec(store *s, const char *sql)
{
    sqlite3_stmt *st = NULL;
    int rc = store_stmt_get(&s->wcache, sql, &st);
    if (rc != SQLITE_OK)
        return rc;
    rc = store_wstep(s, st);
    store_stmt_put(st);
    return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

store_schema *store_writer_schema(store *s, const char *org)
{
    for (size_t i = 0; i < s->n_pending; i++)
        if (strcmp(s->pending[i].org, org) == 0)
            return store_schema_ref(s->pending[i].schema);
    return store_schema_get(s, org);
}

/* Remembers a schema pushed in this batch (takes over the reference). */
static bool pending_put(store *s, const char *org, store_schema *sch)
{
    for (size_t i = 0; i < s->n_pending; i++)
        if (strcmp(s->pending[i].org, org) == 0) {
            store_schema_release(s->pending[i].schema);
            s->pending[i].schema = sch;
            return true;
        }
    if (s->n_pending == s->cap_pending) {
        size_t cap = s->cap_pending ? s->cap_pending * 2 : 4;
        store_pending *n = realloc(s->pending, cap * sizeof *n);
        if (n == NULL)
            return false;
        s->pending = n;
        s->cap_pending = cap;
    }
    char *copy = strdup(org);
    if (copy == NULL)
        return false;
    s->pending[s->n_pending].org = copy;
    s->pending[s->n_pending].schema = sch;
    s->n_pending++;
    return true;
}

/* After COMMIT (publish) or after a failed batch (discard). */
static void pending_finish(store *s, bool publish)
{
    for (size_t i = 0; i < s->n_pending; i++) {
        if (publish)
            store_snap_publish(s, s->pending[i].org, s->pending[i].schema);
        else
            store_schema_release(s->pending[i].schema);
        free(s->pending[i].org);
    }
    s->n_pending = 0;
}

/* ---- one record write -------------------------------------------------------------
 * Everything a record write needs, filled by begin_write. */
typedef struct wctx {
    store *s;
    store_write *w;
    store_schema *sch;
    const store_model *m;
    const char *actor;
    int64_t sid; /* the sync id this write takes */
    int64_t now;
} wctx;

static rd_code sql_fail(wctx *c, int rc)
{
    rd_code code = store_sql_err(c->s->wdb, rc, &c->w->err);
    if (code == RD_DUPLICATE_RECORD && c->w->redact_duplicates)
        return rd_errf(&c->w->err, RD_DUPLICATE_RECORD, NULL,
                       "the record conflicts with an existing record: its id or a unique value "
                       "is already taken");
    return code;
}

static rd_code oom(wctx *c)
{
    return rd_errf(&c->w->err, RD_INTERNAL, NULL, "out of memory");
}

/* Resolves the model; RD_NOT_FOUND when the organisation has no such model. */
static rd_code begin_write(wctx *c, store *s, store_write *w)
{
    memset(c, 0, sizeof *c);
    c->s = s;
    c->w = w;
    c->actor = w->actor != NULL ? w->actor : "";
    c->sid = s->sync_id + 1;
    c->now = rd_now_us();
    if (w->org == NULL || w->model == NULL || !store_org_valid(w->org))
        return rd_errf(&w->err, RD_NOT_FOUND, "model", "model '%.64s' is not in the schema",
                       w->model ? w->model : "");
    c->sch = store_writer_schema(s, w->org);
    c->m = store_schema_model(c->sch, w->model);
    if (c->m == NULL)
        return rd_errf(&w->err, RD_NOT_FOUND, "model", "model '%.64s' is not in the schema",
                       w->model);
    if (w->op != STORE_OP_CREATE && (w->id == NULL || w->id[0] == '\0'))
        return rd_errf(&w->err, RD_VALIDATION_FAILED, "id", "id is required");
    return RD_OK;
}

static void end_write(wctx *c)
{
    store_schema_release(c->sch);
}

/* The complete stored document for create/replace: every sent value in its
 * stored form, defaults for absent or null fields, no nulls. */
static json_t *complete_doc(const store_model *m, const json_t *data)
{
    json_t *doc = json_object();
    for (size_t i = 0; doc != NULL && i < m->n_fields; i++) {
        const store_field *f = &m->fields[i];
        json_t *v = json_object_get(data, f->name);
        if (v == NULL || json_is_null(v))
            v = f->default_value;
        if (v == NULL || json_is_null(v))
            continue;
        json_t *n = store_normalize(f, v);
        if (n == NULL || json_object_set_new(doc, f->name, n) != 0) {
            json_decref(doc);
            return NULL;
        }
    }
    return doc;
}

/* Loads the current row of id into *out; RD_NOT_FOUND when there is none. */
static rd_code load_row(wctx *c, store_record *out)
{
    store_sbuf sql = {0};
    sqlite3_stmt *st = NULL;
    rd_code code = RD_OK;
    store_sbuf_add(&sql, "SELECT * FROM ");
    store_sbuf_table(&sql, c->w->org, c->w->model);
    store_sbuf_add(&sql, " WHERE _id = ?1");
    if (sql.oom) {
        code = oom(c);
        goto done;
    }
    int rc = store_stmt_get(&c->s->wcache, sql.p, &st);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_text(st, 1, c->w->id, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK)
        rc = store_wstep(c->s, st);
    if (rc == SQLITE_DONE) {
        code = rd_errf(&c->w->err, RD_NOT_FOUND, "id", "record '%.128s' not found in model '%s'",
                       c->w->id, c->w->model);
        goto done;
    }
    if (rc != SQLITE_ROW) {
        code = sql_fail(c, rc);
        goto done;
    }
    code = store_row_read(st, c->m, out, &c->w->err);
done:
    store_stmt_put(st);
    store_sbuf_free(&sql);
    return code;
}

static rd_code check_version(wctx *c, const store_record *cur)
{
    if (c->w->has_expected_version && c->w->expected_version != cur->version)
        return rd_errf(&c->w->err, RD_VERSION_CONFLICT, "expectedVersion",
                       "version conflict: expected version %lld but the record is at version %lld",
                       (long long)c->w->expected_version, (long long)cur->version);
    if (c->w->n_expected_versions > 0) {
        bool any = false;
        for (size_t i = 0; i < c->w->n_expected_versions && !any; i++)
            any = c->w->expected_versions[i] == cur->version;
        if (!any)
            return rd_errf(&c->w->err, RD_VERSION_CONFLICT, "expectedVersions",
                           "version conflict: the record is at version %lld, none of the %zu "
                           "expected versions",
                           (long long)cur->version, c->w->n_expected_versions);
    }
    /* claims (store/claims.c): a live claim needs its id and its holder */
    return store_claim_check(c->s, c->w->org, c->w->model, c->w->id, c->w->claim, c->actor, c->now,
                             &c->w->err);
}

/* ---- per-field staleness (read_at) ------------------------------------------------
 * A write with read_at is stale when a field it writes changed after read_at:
 * its "_s_<field>" column (the sync id of the field's last change; NULL for
 * a field added after the row was written, read as 0) is above read_at. */

/* Whether the write writes field f: an update the fields of its patch, a
 * replace or delete every field. */
static bool writes_field(const wctx *c, const store_field *f)
{
    if (c->w->op != STORE_OP_UPDATE)
        return true;
    return json_object_get(c->w->data, f->name) != NULL;
}

/* Names the conflicts in w->err: code RD_STALE_CONTEXT, field = the names
 * comma-joined (cut to fit), message for humans. */
static rd_code stale_error(wctx *c, const store_record *cur)
{
    char names[sizeof c->w->err.field];
    size_t used = 0, i;
    json_t *v;
    names[0] = '\0';
    json_array_foreach(c->w->conflicts, i, v)
    {
        int n =
            snprintf(names + used, sizeof names - used, "%s%s", i ? "," : "", json_string_value(v));
        if (n < 0 || (size_t)n >= sizeof names - used) {
            names[used] = '\0';
            break;
        }
        used += (size_t)n;
    }
    return rd_errf(&c->w->err, RD_STALE_CONTEXT, names,
                   "stale context: %s changed after read_at %lld (the record is at sync id %lld)",
                   names, (long long)c->w->read_at, (long long)cur->sync_id);
}

/* Compares the sync ids of the fields the write writes with read_at.
 * RD_OK when none changed (or on_stale is OVERWRITE); else w->conflicts
 * lists them, w->held is set for NOTIFY, and RD_STALE_CONTEXT. */
static rd_code check_stale(wctx *c, const store_record *cur)
{
    store_write *w = c->w;
    const store_model *m = c->m;
    store_sbuf sql = {0};
    sqlite3_stmt *st = NULL;
    rd_code code = RD_OK;
    int rc, col = 0;
    if (!w->has_read_at || w->on_stale == STORE_STALE_OVERWRITE)
        return RD_OK;
    store_sbuf_add(&sql, "SELECT 0");
    for (size_t i = 0; i < m->n_fields; i++) {
        if (!writes_field(c, &m->fields[i]))
            continue;
        store_sbuf_add(&sql, ", ");
        store_sbuf_ident2(&sql, "_s_", m->fields[i].name);
    }
    store_sbuf_add(&sql, " FROM ");
    store_sbuf_table(&sql, w->org, w->model);
    store_sbuf_add(&sql, " WHERE _id = ?1");
    if (sql.oom) {
        code = oom(c);
        goto done;
    }
    rc = store_stmt_get(&c->s->wcache, sql.p, &st);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_text(st, 1, w->id, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK)
        rc = store_wstep(c->s, st);
    if (rc != SQLITE_ROW) {
        code = sql_fail(c, rc == SQLITE_DONE ? SQLITE_INTERNAL : rc);
        goto done;
    }
    for (size_t i = 0; i < m->n_fields; i++) {
        if (!writes_field(c, &m->fields[i]))
            continue;
        col++;
        if (sqlite3_column_int64(st, col) <= w->read_at)
            continue;
        if (w->conflicts == NULL)
            w->conflicts = json_array();
        if (w->conflicts == NULL ||
            json_array_append_new(w->conflicts, json_string(m->fields[i].name)) != 0) {
            code = oom(c);
            goto done;
        }
    }
    if (w->conflicts != NULL) {
        w->held = w->on_stale == STORE_STALE_NOTIFY;
        code = stale_error(c, cur);
    }
done:
    store_stmt_put(st);
    store_sbuf_free(&sql);
    return code;
}

/* UPDATE/REPLACE/DELETE: the caller's authorisation, decided inside the
 * transaction that writes, so the group checked is the group written.
 * loaded is load_row's result: the callback gets the record's group, or
 * NULL when it does not exist (a caller without access must not learn
 * that). Runs before the concurrency checks, which would otherwise tell an
 * unauthorised caller about the record. Returns loaded when allowed. */
static rd_code check_authorized(wctx *c, rd_code loaded, const store_record *cur)
{
    store_write *w = c->w;
    if (w->authorize == NULL || (loaded != RD_OK && loaded != RD_NOT_FOUND))
        return loaded;
    rd_err not_found = w->err;
    rd_code code = w->authorize(w, loaded == RD_OK ? cur->group : NULL, &w->err);
    if (code != RD_OK)
        return code;
    w->err = not_found;
    return loaded;
}

/* The concurrency checks of update, replace and delete against the current
 * row: expected_version and claims (check_version), then read_at. When one
 * refuses the write, w->current_version gets the record's version; a stale
 * write also gets the current image in w->record (for the notification). */
static rd_code check_concurrency(wctx *c, store_record *cur)
{
    rd_code code = check_version(c, cur);
    if (code == RD_OK)
        code = check_stale(c, cur);
    if (code == RD_VERSION_CONFLICT || code == RD_STALE_CONTEXT || code == RD_CLAIMED)
        c->w->current_version = cur->version;
    if (code == RD_STALE_CONTEXT) {
        store_record_clear(&c->w->record);
        c->w->record = *cur;
        memset(cur, 0, sizeof *cur);
    }
    return code;
}

/* Refuses a change to an immutable field that already holds a value. */
static rd_code check_immutable(wctx *c, const json_t *before, const json_t *after)
{
    for (size_t i = 0; i < c->m->n_fields; i++) {
        const store_field *f = &c->m->fields[i];
        json_t *old = json_object_get(before, f->name);
        if (!f->immutable || old == NULL)
            continue;
        json_t *now = json_object_get(after, f->name);
        if (now == NULL || !json_equal(old, now))
            return rd_errf(&c->w->err, RD_VALIDATION_FAILED, f->name,
                           "%s: the field is immutable and already has a value", f->name);
    }
    return RD_OK;
}

/* 1 when field f has a different value in a and b (absent = null). */
static int field_changed(const store_field *f, const json_t *a, const json_t *b)
{
    json_t *x = json_object_get(a, f->name), *y = json_object_get(b, f->name);
    if (x == NULL || y == NULL)
        return x != y;
    return !json_equal(x, y);
}

/* The log row's data: each of fields with its value in doc (the
 * after-image in stored form; null when absent), as JSON text, or "{}"
 * without doc (a delete). malloc'd; NULL when out of memory. */
static char *log_data(const json_t *fields, const json_t *doc)
{
    json_t *obj = json_object();
    size_t i;
    json_t *name;
    if (obj == NULL)
        return NULL;
    json_array_foreach(fields, i, name)
    {
        if (doc == NULL)
            break;
        json_t *v = json_object_get(doc, json_string_value(name));
        if (json_object_set(obj, json_string_value(name), v != NULL ? v : json_null()) != 0) {
            json_decref(obj);
            return NULL;
        }
    }
    char *text = json_dumps(obj, JSON_COMPACT);
    json_decref(obj);
    return text;
}

/* Appends the write's row to the sync log; doc is the after-image's data
 * (NULL for a delete). */
static rd_code log_change(wctx *c, const char *id, const char *group, const char *op,
                          const json_t *fields, const json_t *doc)
{
    static const char sql[] =
        "INSERT INTO _rd_sync_log (sync_id, server_tx_id, org, model, record_id, op, fields,"
        " actor, grp, committed_at, data) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)";
    sqlite3_stmt *st = NULL;
    char *text = json_dumps(fields, JSON_COMPACT);
    char *data = log_data(fields, doc);
    if (text == NULL || data == NULL) {
        free(text);
        free(data);
        return oom(c);
    }
    int rc = store_stmt_get(&c->s->wcache, sql, &st);
    if (rc == SQLITE_OK) {
        sqlite3_bind_int64(st, 1, c->sid);
        sqlite3_bind_text(st, 2, c->w->server_tx_id, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 3, c->w->org, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 4, c->w->model, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 5, id, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 6, op, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 7, text, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 8, c->actor, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 9, group, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 10, c->now);
        sqlite3_bind_text(st, 11, data, -1, SQLITE_STATIC);
        rc = store_wstep(c->s, st);
    }
    store_stmt_put(st);
    free(text);
    free(data);
    if (rc != SQLITE_DONE && rc != SQLITE_OK)
        return sql_fail(c, rc);
    c->s->log_pace.added++; /* store_changes_prune keeps pace */
    c->s->log_rows++;
    if (c->s->log_oldest_us == 0)
        c->s->log_oldest_us = c->now;
    return RD_OK;
}

/* Steps a prepared write statement to completion. */
static rd_code step_write(wctx *c, sqlite3_stmt *st)
{
    int rc = store_wstep(c->s, st);
    if (rc != SQLITE_DONE)
        return sql_fail(c, rc);
    return RD_OK;
}

static void fill_record(store_record *r, const char *id, const char *group)
{
    snprintf(r->id, sizeof r->id, "%s", id);
    snprintf(r->group, sizeof r->group, "%s", group);
}

/* CREATE: a new row with defaults applied, every field's sync id set. */
static rd_code do_create(wctx *c)
{
    store_write *w = c->w;
    const store_model *m = c->m;
    char idbuf[STORE_ID_MAX + 1];
    const char *id = w->id;
    const char *group = w->group != NULL && w->group[0] != '\0' ? w->group : "default";
    json_t *doc = NULL, *fields = NULL;
    store_sbuf sql = {0};
    sqlite3_stmt *st = NULL;
    rd_code code;
    int rc;
    if (id == NULL || id[0] == '\0') {
        rd_random_id("", idbuf, 20);
        id = idbuf;
    } else if (!store_id_valid(id)) {
        return rd_errf(&w->err, RD_VALIDATION_FAILED, "id",
                       "id must be 1 to %d characters of A-Z a-z 0-9 . _ ~ : -", STORE_ID_MAX);
    }
    if (!store_id_valid(group))
        return rd_errf(&w->err, RD_VALIDATION_FAILED, "group",
                       "group must be 1 to %d characters of A-Z a-z 0-9 . _ ~ : -", STORE_ID_MAX);
    code = store_check_values(m, w->data, STORE_CHECK_CREATE, &w->err);
    if (code != RD_OK)
        return code;
    doc = complete_doc(m, w->data);
    fields = json_array();
    if (doc == NULL || fields == NULL) {
        code = oom(c);
        goto done;
    }
    code = store_check_required(m, doc, &w->err);
    if (code != RD_OK)
        goto done;

    /* ?1 id ?2 group ?3 sync id ?4 now ?5 actor, field j at ?(6 + j) */
    store_sbuf_add(&sql, "INSERT INTO ");
    store_sbuf_table(&sql, w->org, w->model);
    store_sbuf_add(&sql, " (_id, _group, _version, _sync_id, _created_at, _updated_at,"
                         " _created_by, _updated_by");
    for (size_t i = 0; i < m->n_fields; i++) {
        store_sbuf_add(&sql, ", ");
        store_sbuf_ident(&sql, m->fields[i].name);
        store_sbuf_add(&sql, ", ");
        store_sbuf_ident2(&sql, "_s_", m->fields[i].name);
    }
    store_sbuf_add(&sql, ") VALUES (?1, ?2, 1, ?3, ?4, ?4, ?5, ?5");
    for (size_t i = 0; i < m->n_fields; i++)
        store_sbuf_addf(&sql, ", ?%zu, ?3", i + 6);
    store_sbuf_add(&sql, ")");
    if (sql.oom) {
        code = oom(c);
        goto done;
    }
    rc = store_stmt_get(&c->s->wcache, sql.p, &st);
    if (rc != SQLITE_OK) {
        code = sql_fail(c, rc);
        goto done;
    }
    sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, group, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, c->sid);
    sqlite3_bind_int64(st, 4, c->now);
    sqlite3_bind_text(st, 5, c->actor, -1, SQLITE_STATIC);
    for (size_t i = 0; i < m->n_fields; i++) {
        json_t *v = json_object_get(doc, m->fields[i].name);
        rc = store_bind_value(st, (int)i + 6, &m->fields[i], v);
        if (rc == SQLITE_OK && v != NULL)
            rc = json_array_append_new(fields, json_string(m->fields[i].name)) ? SQLITE_NOMEM
                                                                               : SQLITE_OK;
        if (rc != SQLITE_OK) {
            code = sql_fail(c, rc);
            goto done;
        }
    }
    code = step_write(c, st);
    if (code == RD_OK)
        code = log_change(c, id, group, "CREATE", fields, doc);
    if (code != RD_OK)
        goto done;
    store_record *r = &w->record;
    fill_record(r, id, group);
    snprintf(r->created_by, sizeof r->created_by, "%s", c->actor);
    snprintf(r->updated_by, sizeof r->updated_by, "%s", c->actor);
    r->version = 1;
    r->sync_id = c->sid;
    r->created_at_us = r->updated_at_us = c->now;
    r->data = doc;
    doc = NULL;
    w->last_sync_id = c->sid;
    w->ops = 1;
done:
    store_stmt_put(st);
    store_sbuf_free(&sql);
    json_decref(doc);
    json_decref(fields);
    return code;
}

/* The data an UPDATE produces: the current data with the patch merged per
 * field (json fields whose old and new values are objects merge
 * recursively; anything else is replaced; null clears). */
static json_t *merge_fields(const store_model *m, const json_t *cur, const json_t *patch)
{
    const char *key;
    json_t *v;
    json_t *out = json_copy((json_t *)cur);
    if (out == NULL)
        return NULL;
    json_object_foreach((json_t *)patch, key, v)
    {
        const store_field *f = store_model_field(m, key);
        json_t *old = json_object_get(out, key);
        json_t *next;
        if (f == NULL)
            continue;
        if (json_is_null(v)) {
            json_object_del(out, key);
            continue;
        }
        /* RFC 7396: an object patch merges into the current value, or into
         * {} when there is none or it is not an object (nulls vanish). */
        if (f->type == STORE_T_JSON && json_is_object(v))
            next = store_merge_patch(old ? json_deep_copy(old) : NULL, v);
        else
            next = store_normalize(f, v);
        if (next == NULL || json_object_set_new(out, key, next) != 0) {
            json_decref(out);
            return NULL;
        }
    }
    return out;
}

/* UPDATE and REPLACE: load the row, build the new data, write the changed
 * columns (UPDATE) or every column (REPLACE), set the per-field sync id of
 * each field whose value changed. */
static rd_code do_change(wctx *c)
{
    store_write *w = c->w;
    const store_model *m = c->m;
    bool replace = w->op == STORE_OP_REPLACE;
    store_record cur = {0};
    json_t *next = NULL, *fields = json_array();
    store_sbuf sql = {0};
    sqlite3_stmt *st = NULL;
    rd_code code;
    int rc;
    if (fields == NULL)
        return oom(c);
    code =
        store_check_values(m, w->data, replace ? STORE_CHECK_REPLACE : STORE_CHECK_PATCH, &w->err);
    if (code == RD_OK)
        code = check_authorized(c, load_row(c, &cur), &cur);
    if (code == RD_OK)
        code = check_concurrency(c, &cur);
    if (code != RD_OK)
        goto done;
    next = replace ? complete_doc(m, w->data) : merge_fields(m, cur.data, w->data);
    if (next == NULL) {
        code = oom(c);
        goto done;
    }
    code = store_check_required(m, next, &w->err);
    for (size_t i = 0; code == RD_OK && i < m->n_fields; i++) {
        const store_field *f = &m->fields[i];
        if (f->type == STORE_T_JSON &&
            store_json_depth(json_object_get(next, f->name), STORE_MAX_DEPTH) > STORE_MAX_DEPTH)
            code = rd_errf(&w->err, RD_VALIDATION_FAILED, f->name,
                           "%s: value is nested deeper than %d levels", f->name, STORE_MAX_DEPTH);
    }
    if (code == RD_OK)
        code = check_immutable(c, cur.data, next);
    if (code != RD_OK)
        goto done;

    /* ?1 sync id ?2 now ?3 actor ?4 id, field i at ?(5 + i) */
    store_sbuf_add(&sql, "UPDATE ");
    store_sbuf_table(&sql, w->org, w->model);
    store_sbuf_add(&sql, " SET _version = _version + 1, _sync_id = ?1, _updated_at = ?2,"
                         " _updated_by = ?3");
    for (size_t i = 0; i < m->n_fields; i++) {
        const store_field *f = &m->fields[i];
        int changed = field_changed(f, cur.data, next);
        if (changed && json_array_append_new(fields, json_string(f->name)) != 0) {
            code = oom(c);
            goto done;
        }
        if (!changed && !replace)
            continue;
        store_sbuf_add(&sql, ", ");
        store_sbuf_ident(&sql, f->name);
        store_sbuf_addf(&sql, " = ?%zu", i + 5);
        if (changed) {
            store_sbuf_add(&sql, ", ");
            store_sbuf_ident2(&sql, "_s_", f->name);
            store_sbuf_add(&sql, " = ?1");
        }
    }
    store_sbuf_add(&sql, " WHERE _id = ?4");
    if (sql.oom) {
        code = oom(c);
        goto done;
    }
    rc = store_stmt_get(&c->s->wcache, sql.p, &st);
    if (rc != SQLITE_OK) {
        code = sql_fail(c, rc);
        goto done;
    }
    sqlite3_bind_int64(st, 1, c->sid);
    sqlite3_bind_int64(st, 2, c->now);
    sqlite3_bind_text(st, 3, c->actor, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 4, w->id, -1, SQLITE_STATIC);
    for (size_t i = 0; i < m->n_fields; i++) {
        const store_field *f = &m->fields[i];
        if (!replace && !field_changed(f, cur.data, next))
            continue;
        rc = store_bind_value(st, (int)i + 5, f, json_object_get(next, f->name));
        if (rc != SQLITE_OK) {
            code = sql_fail(c, rc);
            goto done;
        }
    }
    code = step_write(c, st);
    if (code == RD_OK)
        code = log_change(c, cur.id, cur.group, replace ? "REPLACE" : "UPDATE", fields, next);
    if (code != RD_OK)
        goto done;
    store_record *r = &w->record;
    *r = cur; /* system fields; cur.data (the old data) is released below */
    r->data = next;
    next = NULL;
    r->version = cur.version + 1;
    r->sync_id = c->sid;
    r->updated_at_us = c->now;
    snprintf(r->updated_by, sizeof r->updated_by, "%s", c->actor);
    w->last_sync_id = c->sid;
    w->ops = 1;
done:
    store_stmt_put(st);
    store_sbuf_free(&sql);
    store_record_clear(&cur);
    json_decref(next);
    json_decref(fields);
    return code;
}

/* DELETE: the before-image goes to w->record; the log row names every
 * field of the model. */
static rd_code do_delete(wctx *c)
{
    store_write *w = c->w;
    store_record cur = {0};
    json_t *fields = json_array();
    store_sbuf sql = {0};
    sqlite3_stmt *st = NULL;
    rd_code code;
    if (fields == NULL)
        return oom(c);
    for (size_t i = 0; i < c->m->n_fields; i++)
        if (json_array_append_new(fields, json_string(c->m->fields[i].name)) != 0) {
            code = oom(c);
            goto done;
        }
    code = check_authorized(c, load_row(c, &cur), &cur);
    if (code == RD_OK)
        code = check_concurrency(c, &cur);
    if (code != RD_OK)
        goto done;
    store_sbuf_add(&sql, "DELETE FROM ");
    store_sbuf_table(&sql, w->org, w->model);
    store_sbuf_add(&sql, " WHERE _id = ?1");
    if (sql.oom) {
        code = oom(c);
        goto done;
    }
    int rc = store_stmt_get(&c->s->wcache, sql.p, &st);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_text(st, 1, w->id, -1, SQLITE_STATIC);
    if (rc != SQLITE_OK) {
        code = sql_fail(c, rc);
        goto done;
    }
    code = step_write(c, st);
    if (code == RD_OK)
        code = log_change(c, cur.id, cur.group, "DELETE", fields, NULL);
    if (code != RD_OK)
        goto done;
    w->record = cur;
    cur.data = NULL;
    w->last_sync_id = c->sid;
    w->ops = 1;
done:
    store_stmt_put(st);
    store_sbuf_free(&sql);
    store_record_clear(&cur);
    json_decref(fields);
    return code;
}

int store_wexec(store *s, const char *sql)
{
    return wexec(s, sql);
}

rd_code store_record_apply(store *s, store_write *w)
{
    wctx c;
    rd_code code;
    if (w->op < STORE_OP_CREATE || w->op > STORE_OP_DELETE)
        return rd_errf(&w->err, RD_INTERNAL, NULL, "unknown store operation %d", (int)w->op);
    code = begin_write(&c, s, w);
    if (code == RD_OK) {
        switch (w->op) {
        case STORE_OP_CREATE:
            code = do_create(&c);
            break;
        case STORE_OP_UPDATE:
        case STORE_OP_REPLACE:
            code = do_change(&c);
            break;
        default:
            code = do_delete(&c);
            break;
        }
    }
    end_write(&c);
    return code;
}

/* Authorises w (an UPDATE, REPLACE or DELETE by id with an authorize
 * callback; anything else passes) against the record as it is now, as the
 * write itself would be: check_authorized, and for a record deleted since,
 * the verb on the model in some group. w->err is left as it was when it
 * passes. */
static rd_code authorize_again(store *s, store_write *w)
{
    if (w->authorize == NULL ||
        (w->op != STORE_OP_UPDATE && w->op != STORE_OP_REPLACE && w->op != STORE_OP_DELETE))
        return RD_OK;
    wctx c;
    store_record cur = {0};
    rd_err saved = w->err;
    rd_code code = begin_write(&c, s, w);
    if (code == RD_OK)
        code = check_authorized(&c, load_row(&c, &cur), &cur);
    store_record_clear(&cur);
    end_write(&c);
    if (code == RD_OK || code == RD_NOT_FOUND) {
        w->err = saved;
        return RD_OK;
    }
    return code;
}

/* A replay is authorised again before its stored outcome is returned
 * (authorize_again; for a bulk, each of its by-id operations), so a stored
 * outcome never reaches a caller that could not have made the original
 * call: e.g. a token of the same principal with fewer capabilities. A
 * refusal drops the replay: the caller gets the refusal (never storable),
 * and the stored outcome stays as it was. */
static rd_code authorize_replay(store *s, store_write *w)
{
    rd_code code = RD_OK;
    if (w->op == STORE_OP_BULK && w->bulk != NULL) {
        for (size_t i = 0; code == RD_OK && i < w->bulk->n_ops; i++) {
            store_write *ow = &w->bulk->ops[i].w;
            if (w->bulk->ops[i].skip)
                continue;
            if (ow->org == NULL)
                ow->org = w->org;
            code = authorize_again(s, ow);
            if (code != RD_OK)
                w->err = ow->err;
        }
    } else {
        code = authorize_again(s, w);
    }
    if (code == RD_OK)
        return RD_OK;
    free(w->replay);
    w->replay = NULL;
    w->replayed = false;
    return code;
}

/* Executes one write inside its savepoint. *published gets a schema pushed
 * by it. */
static rd_code apply(store *s, store_write *w, store_schema **published)
{
    *published = NULL;
    if (w->op == STORE_OP_PUSH_SCHEMA)
        return store_push_schema(s, w, published);
    if (w->op == STORE_OP_CLAIM_ACQUIRE || w->op == STORE_OP_CLAIM_RELEASE)
        return store_claim_apply(s, w); /* claims: store/claims.c */
    if (w->op == STORE_OP_BULK)
        return store_bulk_apply(s, w); /* bulk: store/bulk.c */
    return store_record_apply(s, w);
}

/* ---- the batch ------------------------------------------------------------------------ */

/* Fails every write of the batch that had succeeded (the transaction did not
 * commit) with err. Nothing any write sealed was stored. */
static void fail_uncommitted(store_write *head, const rd_err *err)
{
    for (store_write *w = head; w != NULL; w = w->next_) {
        w->idem_stored = false;
        if (w->err.code != RD_OK)
            continue;
        reset_outputs(w);
        w->err = *err;
    }
}

/* Whether a refused write keeps its outputs for the caller's receipt: the
 * current version of a concurrency refusal, and the current image and the
 * conflicts of a stale one. */
static bool keeps_outputs(rd_code code)
{
    return code == RD_VERSION_CONFLICT || code == RD_STALE_CONTEXT || code == RD_CLAIMED;
}

/* Runs one write in its own savepoint: the idempotency lookup (a replay
 * executes nothing), the write, and for an idempotent write with a storable
 * outcome the sealed outcome, stored in the same savepoint (after undoing a
 * refused write). Returns false when the transaction is unusable and the
 * batch must be abandoned. */
static bool run_one(store *s, store_write *w)
{
    store_schema *published = NULL;
    bool undone = false;
    int rc;
    if (w->deadline_us != 0 && rd_now_us() > w->deadline_us) {
        rd_errf(&w->err, RD_DEADLINE_EXCEEDED, NULL,
                "the deadline passed before the write could be applied");
        return true;
    }
    rc = wexec(s, "SAVEPOINT w");
    if (rc != SQLITE_OK) {
        store_sql_err(s->wdb, rc, &w->err);
        return true;
    }
    rd_code code = store_idem_lookup(s, w);
    if (code == RD_OK && w->replayed)
        code = authorize_replay(s, w);
    if (code == RD_OK && !w->replayed)
        code = apply(s, w, &published);
    if (store_idem_storable(w, code)) {
        if (code != RD_OK) {
            if (wexec(s, "ROLLBACK TO w") != SQLITE_OK)
                goto broken;
            undone = true;
        }
        if (store_idem_save(s, w) != RD_OK)
            code = w->err.code;
    }
    if (code == RD_OK) {
        rc = wexec(s, "RELEASE w");
        if (rc == SQLITE_OK) {
            if (w->last_sync_id > s->sync_id)
                s->sync_id = w->last_sync_id;
            if (published != NULL && !pending_put(s, w->org, published)) {
                store_schema_release(published);
                reset_outputs(w);
                rd_errf(&w->err, RD_INTERNAL, NULL, "out of memory");
                return false;
            }
            return true;
        }
        code = store_sql_err(s->wdb, rc, &w->err);
    }
    /* a refusal whose outcome was stored keeps that row; anything else is
     * undone completely */
    bool keep_rows = undone && w->idem_stored;
    store_schema_release(published);
    if (!keeps_outputs(code))
        reset_outputs(w);
    rc = keep_rows ? SQLITE_OK : wexec(s, "ROLLBACK TO w");
    if (rc == SQLITE_OK)
        rc = wexec(s, "RELEASE w");
    return rc == SQLITE_OK;
broken:
    store_schema_release(published);
    if (!keeps_outputs(code))
        reset_outputs(w);
    return false;
}

/* Takes every write of the batch out of the in-flight key set (after
 * COMMIT, so a retry that finds its key free also finds its outcome). */
static void leave_inflight(store *s, store_write *head)
{
    pthread_mutex_lock(&s->qmu);
    for (store_write *w = head; w != NULL; w = w->next_)
        store_idem_leave(s, w);
    pthread_mutex_unlock(&s->qmu);
}

const int STORE_BATCH_BOUNDS[STORE_BATCH_SLOTS - 1] = {1, 2, 4, 8, 16, 32, 64, 128};
const int STORE_COMMIT_BOUNDS_US[STORE_COMMIT_SLOTS - 1] = {100,  250,   500,   1000,  2500,
                                                            5000, 10000, 25000, 50000, 100000};

/* Records the size of a batch for store_batch_stats_get. */
static void count_batch(store *s, const store_write *head)
{
    uint64_t n = 0;
    for (const store_write *w = head; w != NULL; w = w->next_)
        n++;
    int slot = 0;
    while (slot < STORE_BATCH_SLOTS - 1 && n > (uint64_t)STORE_BATCH_BOUNDS[slot])
        slot++;
    atomic_fetch_add_explicit(&s->batch_counts[slot], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&s->batches, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&s->batch_writes, n, memory_order_relaxed);
}

/* Records how long a COMMIT took for store_batch_stats_get. */
static void count_commit(store *s, int64_t us)
{
    int slot = 0;
    while (slot < STORE_COMMIT_SLOTS - 1 && us > STORE_COMMIT_BOUNDS_US[slot])
        slot++;
    atomic_fetch_add_explicit(&s->commit_counts[slot], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&s->commit_us, (uint64_t)(us > 0 ? us : 0), memory_order_relaxed);
}

void store_batch_stats_get(store *s, store_batch_stats *out)
{
    for (int i = 0; i < STORE_BATCH_SLOTS; i++)
        out->counts[i] = atomic_load_explicit(&s->batch_counts[i], memory_order_relaxed);
    for (int i = 0; i < STORE_COMMIT_SLOTS; i++)
        out->commit_counts[i] = atomic_load_explicit(&s->commit_counts[i], memory_order_relaxed);
    out->commit_us = atomic_load_explicit(&s->commit_us, memory_order_relaxed);
    out->batches = atomic_load_explicit(&s->batches, memory_order_relaxed);
    out->writes = atomic_load_explicit(&s->batch_writes, memory_order_relaxed);
}

/* ---- per-organisation sync ids --------------------------------------------------------
 * Each organisation has its own gap-free sequence of sync ids. The writer
 * keeps them in a table by org (loaded from _rd_org_seq on first use); the
 * counter of the write being run is swapped into s->sync_id, so every
 * write and bulk path takes and gives back ids as with one counter; a
 * failed batch puts every counter back. An organisation's head is its
 * newest log row (STORE_ORG_HEAD_SQL): nothing more is written per batch,
 * and the pruner records heads in _rd_org_seq before it deletes rows. */

static size_t org_slot(const store *s, const char *org)
{
    uint64_t h = 1469598103934665603ull;
    for (const unsigned char *p = (const unsigned char *)org; *p; p++)
        h = (h ^ *p) * 1099511628211ull;
    size_t i = (size_t)h & (s->org_seq_cap - 1);
    while (s->org_seqs[i] != NULL && strcmp(s->org_seqs[i]->org, org) != 0)
        i = (i + 1) & (s->org_seq_cap - 1);
    return i;
}

static bool org_grow(store *s)
{
    size_t cap = s->org_seq_cap ? s->org_seq_cap * 2 : 64;
    store_org_seq **old = s->org_seqs, **next = calloc(cap, sizeof *next);
    size_t old_cap = s->org_seq_cap;
    if (next == NULL)
        return false;
    s->org_seqs = next;
    s->org_seq_cap = cap;
    for (size_t i = 0; i < old_cap; i++)
        if (old[i] != NULL)
            s->org_seqs[org_slot(s, old[i]->org)] = old[i];
    free(old);
    return true;
}

/* org's counter, loaded on first use (the writer's transaction is open);
 * marked touched by the batch. NULL when out of memory or unreadable. */
static store_org_seq *org_enter(store *s, const char *org)
{
    if ((s->org_seq_n + 1) * 2 > s->org_seq_cap && !org_grow(s))
        return NULL;
    size_t i = org_slot(s, org);
    store_org_seq *e = s->org_seqs[i];
    if (e == NULL) {
        sqlite3_stmt *st = NULL;
        int64_t v = s->seq_base;
        int rc = store_stmt_get(&s->wcache, STORE_ORG_HEAD_SQL, &st);
        if (rc == SQLITE_OK) {
            sqlite3_bind_text(st, 1, org, -1, SQLITE_STATIC);
            rc = store_wstep(s, st);
            if (rc == SQLITE_ROW)
                v = sqlite3_column_int64(st, 0);
        }
        store_stmt_put(st);
        if (rc != SQLITE_ROW && rc != SQLITE_DONE)
            return NULL;
        e = calloc(1, sizeof *e);
        if (e == NULL || (e->org = strdup(org)) == NULL) {
            free(e);
            return NULL;
        }
        e->committed = e->pending = v;
        s->org_seqs[i] = e;
        s->org_seq_n++;
    }
    if (!e->touched) {
        e->touched = true;
        e->next_touched = s->org_touched;
        s->org_touched = e;
    }
    return e;
}

/* Ends the batch for the touched counters: committed or put back. true when
 * some organisation advanced. */
static bool org_seqs_finish(store *s, bool committed)
{
    bool advanced = false;
    for (store_org_seq *e = s->org_touched, *next; e != NULL; e = next) {
        next = e->next_touched;
        if (committed) {
            advanced = advanced || e->pending > e->committed;
            e->committed = e->pending;
        } else {
            e->pending = e->committed;
        }
        e->touched = false;
        e->next_touched = NULL;
    }
    s->org_touched = NULL;
    return advanced;
}

/* One group commit: every write in its own savepoint, one COMMIT, then the
 * completions in order. */
static void run_batch(store *s, store_write *head)
{
    bool broken = false, advanced = false;
    rd_err err;
    rd_err_clear(&err);
    count_batch(s, head);
    store_sql_err_took_full(); /* from here on: did this batch hit a full disk? */
    int rc = wexec(s, "BEGIN IMMEDIATE");
    if (rc != SQLITE_OK) {
        store_sql_err(s->wdb, rc, &err);
        fail_uncommitted(head, &err);
        goto complete;
    }
    for (store_write *w = head; w != NULL; w = w->next_) {
        if (broken) {
            rd_errf(&w->err, RD_INTERNAL, NULL, "the batch was rolled back");
            continue;
        }
        store_org_seq *e = w->org != NULL && w->org[0] != '\0' ? org_enter(s, w->org) : NULL;
        if (w->org != NULL && w->org[0] != '\0' && e == NULL) {
            rd_errf(&w->err, RD_INTERNAL, NULL, "the organisation's sync ids could not be read");
            continue;
        }
        s->sync_id = e != NULL ? e->pending : 0;
        if (!run_one(s, w))
            broken = true;
        if (e != NULL)
            e->pending = s->sync_id;
    }
    if (!broken) {
        store_idem_prune(s);
        store_changes_prune(s);
        int64_t t0 = rd_now_us();
        rc = wexec(s, "COMMIT");
        count_commit(s, rd_now_us() - t0);
        if (rc != SQLITE_OK) {
            store_sql_err(s->wdb, rc, &err);
            if (err.code != RD_UNAVAILABLE)
                rd_errf(&err, RD_INTERNAL, NULL, "the commit failed: %s", sqlite3_errstr(rc));
        }
    } else {
        rd_errf(&err, RD_INTERNAL, NULL, "the batch was rolled back");
    }
    if (broken || err.code != RD_OK) {
        if (!sqlite3_get_autocommit(s->wdb))
            wexec(s, "ROLLBACK");
        fail_uncommitted(head, &err);
        org_seqs_finish(s, false);
        pending_finish(s, false);
    } else {
        advanced = org_seqs_finish(s, true);
        pending_finish(s, true);
    }
complete:
    /* a committed batch proves there is room again; one that hit a full disk
     * makes the store not ready (store_storage_full) until then */
    if (store_sql_err_took_full())
        atomic_store(&s->full, true);
    else if (!broken && err.code == RD_OK)
        atomic_store(&s->full, false);
    leave_inflight(s, head);
    store_write *tail = head;
    for (store_write *w = head; w != NULL; w = w->next_) {
        if (w->op == STORE_OP_PUSH_SCHEMA)
            store_schema_release(w->schema);
        tail = w;
    }
    pthread_mutex_lock(&s->cmu);
    if (advanced)
        s->commit_gen++;
    if (s->commit_fn != NULL && advanced)
        s->commit_fn(s->commit_arg, s->commit_gen);
    if (s->ctail != NULL)
        s->ctail->next_ = head;
    else
        s->chead = head;
    s->ctail = tail;
    pthread_cond_signal(&s->ccv);
    pthread_mutex_unlock(&s->cmu);
}

void *store_completer_main(void *arg)
{
    store *s = arg;
    pthread_setname_np(pthread_self(), "rd-completer");
    pthread_mutex_lock(&s->cmu);
    for (;;) {
        while (s->chead == NULL && !s->cclosing)
            pthread_cond_wait(&s->ccv, &s->cmu);
        if (s->chead == NULL)
            break;
        store_write *w = s->chead;
        s->chead = s->ctail = NULL;
        pthread_mutex_unlock(&s->cmu);
        while (w != NULL) {
            store_write *next = w->next_;
            w->next_ = NULL;
            if (w->done != NULL)
                w->done(w);
            w = next;
        }
        pthread_mutex_lock(&s->cmu);
    }
    pthread_mutex_unlock(&s->cmu);
    return NULL;
}

void store_completer_stop(store *s)
{
    if (s == NULL || !s->completer_started)
        return;
    pthread_mutex_lock(&s->cmu);
    s->cclosing = true;
    pthread_cond_signal(&s->ccv);
    pthread_mutex_unlock(&s->cmu);
    pthread_join(s->completer, NULL);
    s->completer_started = false;
}

void *store_writer_main(void *arg)
{
    store *s = arg;
    pthread_setname_np(pthread_self(), "rd-writer");
    store_idem_open(s);
    pthread_mutex_lock(&s->qmu);
    for (;;) {
        while (s->qhead == NULL && !s->closing)
            pthread_cond_wait(&s->qcv, &s->qmu);
        if (s->qhead == NULL)
            break;
        store_write *head = s->qhead, *tail = head;
        for (int n = 1; n < s->max_batch && tail->next_ != NULL; n++)
            tail = tail->next_;
        s->qhead = tail->next_;
        if (s->qhead == NULL)
            s->qtail = NULL;
        tail->next_ = NULL;
        pthread_mutex_unlock(&s->qmu);
        run_batch(s, head);
        pthread_mutex_lock(&s->qmu);
    }
    pthread_mutex_unlock(&s->qmu);
    return NULL;
}
