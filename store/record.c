/* record.c: one record write on the writer's connection — create,
 * merge-patch update, replace and delete — with its checks (version,
 * per-field staleness, claims, authorisation of the stored group,
 * immutable fields, references) and the sync-log row it appends; a delete
 * also what its onDelete rules do to the records referencing it. The writer
 * (writer.c) calls store_record_apply inside the write's savepoint. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "store/store_int.h"

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
    if (code == RD_DUPLICATE_RECORD && c->w->rec.redact_duplicates)
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
    if (w->org == NULL || w->rec.model == NULL || !store_org_valid(w->org))
        return rd_errf(&w->err, RD_NOT_FOUND, "model", "model '%.64s' is not in the schema",
                       w->rec.model ? w->rec.model : "");
    c->sch = store_writer_schema(s, w->org);
    c->m = store_schema_model(c->sch, w->rec.model);
    if (c->m == NULL)
        return rd_errf(&w->err, RD_NOT_FOUND, "model", "model '%.64s' is not in the schema",
                       w->rec.model);
    if (w->op != STORE_OP_CREATE && (w->rec.id == NULL || w->rec.id[0] == '\0'))
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
    store_dbst *st = NULL;
    rd_code code = RD_OK;
    store_sbuf_add(&sql, "SELECT * FROM ");
    store_sbuf_table(&sql, c->w->org, c->w->rec.model);
    store_sbuf_add(&sql, " WHERE _id = ?1");
    if (sql.oom) {
        code = oom(c);
        goto done;
    }
    int rc = store_stmt_get(&c->s->wcache, sql.p, &st);
    if (rc == STORE_DB_OK)
        rc = store_db_bind_text(st, 1, c->w->rec.id, -1, STORE_DB_STATIC);
    if (rc == STORE_DB_OK)
        rc = store_wstep(c->s, st);
    if (rc == STORE_DB_DONE) {
        code = rd_errf(&c->w->err, RD_NOT_FOUND, "id", "record '%.128s' not found in model '%s'",
                       c->w->rec.id, c->w->rec.model);
        goto done;
    }
    if (rc != STORE_DB_ROW) {
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
    if (c->w->rec.has_expected_version && c->w->rec.expected_version != cur->version)
        return rd_errf(&c->w->err, RD_VERSION_CONFLICT, "expectedVersion",
                       "version conflict: expected version %lld but the record is at version %lld",
                       (long long)c->w->rec.expected_version, (long long)cur->version);
    if (c->w->rec.n_expected_versions > 0) {
        bool any = false;
        for (size_t i = 0; i < c->w->rec.n_expected_versions && !any; i++)
            any = c->w->rec.expected_versions[i] == cur->version;
        if (!any)
            return rd_errf(&c->w->err, RD_VERSION_CONFLICT, "expectedVersions",
                           "version conflict: the record is at version %lld, none of the %zu "
                           "expected versions",
                           (long long)cur->version, c->w->rec.n_expected_versions);
    }
    /* claims (store/claims.c): a live claim needs its id and its holder */
    return store_claim_check(c->s, c->w->org, c->w->rec.model, c->w->rec.id, c->w->rec.claim,
                             c->actor, c->now, &c->w->err);
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
    return json_object_get(c->w->rec.data, f->name) != NULL;
}

/* Names the conflicts in w->err: code RD_STALE_CONTEXT, field = the names
 * comma-joined (cut to fit), message for humans. */
static rd_code stale_error(wctx *c, const store_record *cur)
{
    char names[sizeof c->w->err.field];
    size_t used = 0, i;
    json_t *v;
    names[0] = '\0';
    json_array_foreach(c->w->rec.conflicts, i, v)
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
                   names, (long long)c->w->rec.read_at, (long long)cur->sync_id);
}

/* Compares the sync ids of the fields the write writes with read_at.
 * RD_OK when none changed (or on_stale is OVERWRITE); else w->rec.conflicts
 * lists them, w->rec.held is set for NOTIFY, and RD_STALE_CONTEXT. */
static rd_code check_stale(wctx *c, const store_record *cur)
{
    store_write *w = c->w;
    const store_model *m = c->m;
    store_sbuf sql = {0};
    store_dbst *st = NULL;
    rd_code code = RD_OK;
    int rc, col = 0;
    if (!w->rec.has_read_at || w->rec.on_stale == STORE_STALE_OVERWRITE)
        return RD_OK;
    store_sbuf_add(&sql, "SELECT 0");
    for (size_t i = 0; i < m->n_fields; i++) {
        if (!writes_field(c, &m->fields[i]))
            continue;
        store_sbuf_add(&sql, ", ");
        store_sbuf_ident2(&sql, "_s_", m->fields[i].name);
    }
    store_sbuf_add(&sql, " FROM ");
    store_sbuf_table(&sql, w->org, w->rec.model);
    store_sbuf_add(&sql, " WHERE _id = ?1");
    if (sql.oom) {
        code = oom(c);
        goto done;
    }
    rc = store_stmt_get(&c->s->wcache, sql.p, &st);
    if (rc == STORE_DB_OK)
        rc = store_db_bind_text(st, 1, w->rec.id, -1, STORE_DB_STATIC);
    if (rc == STORE_DB_OK)
        rc = store_wstep(c->s, st);
    if (rc != STORE_DB_ROW) {
        code = sql_fail(c, rc == STORE_DB_DONE ? STORE_DB_INTERNAL : rc);
        goto done;
    }
    for (size_t i = 0; i < m->n_fields; i++) {
        if (!writes_field(c, &m->fields[i]))
            continue;
        col++;
        if (store_db_column_int64(st, col) <= w->rec.read_at)
            continue;
        if (w->rec.conflicts == NULL)
            w->rec.conflicts = json_array();
        if (w->rec.conflicts == NULL ||
            json_array_append_new(w->rec.conflicts, json_string(m->fields[i].name)) != 0) {
            code = oom(c);
            goto done;
        }
    }
    if (w->rec.conflicts != NULL) {
        w->rec.held = w->rec.on_stale == STORE_STALE_NOTIFY;
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
 * refuses the write, w->rec.current_version gets the record's version; a stale
 * write also gets the current image in w->record (for the notification). */
static rd_code check_concurrency(wctx *c, store_record *cur)
{
    rd_code code = check_version(c, cur);
    if (code == RD_OK)
        code = check_stale(c, cur);
    if (code == RD_VERSION_CONFLICT || code == RD_STALE_CONTEXT || code == RD_CLAIMED)
        c->w->rec.current_version = cur->version;
    if (code == RD_STALE_CONTEXT) {
        store_record_clear(&c->w->rec.record);
        c->w->rec.record = *cur;
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
static rd_code log_change(wctx *c, const char *model, const char *id, const char *group,
                          const char *op, const json_t *fields, const json_t *doc)
{
    static const char sql[] =
        "INSERT INTO _rd_sync_log (sync_id, server_tx_id, org, model, record_id, op, fields,"
        " actor, grp, committed_at, data) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)";
    store_dbst *st = NULL;
    char *text = json_dumps(fields, JSON_COMPACT);
    char *data = log_data(fields, doc);
    if (text == NULL || data == NULL) {
        free(text);
        free(data);
        return oom(c);
    }
    int rc = store_stmt_get(&c->s->wcache, sql, &st);
    if (rc == STORE_DB_OK) {
        store_db_bind_int64(st, 1, c->sid);
        store_db_bind_text(st, 2, c->w->server_tx_id, -1, STORE_DB_STATIC);
        store_db_bind_text(st, 3, c->w->org, -1, STORE_DB_STATIC);
        store_db_bind_text(st, 4, model, -1, STORE_DB_STATIC);
        store_db_bind_text(st, 5, id, -1, STORE_DB_STATIC);
        store_db_bind_text(st, 6, op, -1, STORE_DB_STATIC);
        store_db_bind_text(st, 7, text, -1, STORE_DB_STATIC);
        store_db_bind_text(st, 8, c->actor, -1, STORE_DB_STATIC);
        store_db_bind_text(st, 9, group, -1, STORE_DB_STATIC);
        store_db_bind_int64(st, 10, c->now);
        store_db_bind_text(st, 11, data, -1, STORE_DB_STATIC);
        rc = store_wdefer(c->s, st);
    }
    store_stmt_put(st);
    free(text);
    free(data);
    if (rc != STORE_DB_DONE && rc != STORE_DB_OK)
        return sql_fail(c, rc);
    c->s->log_pace.added++; /* store_changes_prune keeps pace */
    c->s->log_rows++;
    if (c->s->log_oldest_us == 0)
        c->s->log_oldest_us = c->now;
    return RD_OK;
}

/* Steps a prepared write statement to completion (deferred: a failure,
 * such as a unique violation, shows at a later statement and makes the
 * writer run the batch again, waiting; writer.c). */
static rd_code step_write(wctx *c, store_dbst *st)
{
    int rc = store_wdefer(c->s, st);
    if (rc != STORE_DB_DONE)
        return sql_fail(c, rc);
    return RD_OK;
}

static void fill_record(store_record *r, const char *id, const char *group)
{
    snprintf(r->id, sizeof r->id, "%s", id);
    snprintf(r->group, sizeof r->group, "%s", group);
}

/* ---- references: integrity on create, update and replace -----------------------------
 * Every REFERENCE field a write gives a value (an update or replace: only
 * the fields whose value it changes) must name an existing record of the
 * target model in the same organisation: one indexed lookup by primary key
 * on the writer's connection, inside the write's transaction. Sync groups
 * and read capabilities play no part: the answer is the same whether the
 * target is missing or only unreadable, so it tells nothing about records
 * the caller cannot see beyond what a create with that id would.
 *
 * This cannot race a delete of the target: every write of an organisation
 * is serialized, on SQLite by the one writer thread and its IMMEDIATE
 * transaction, on PostgreSQL also across processes by the organisation's
 * counter row that every batch locks first (writer.c, pg_lock_orgs) until
 * it commits. A delete of the target is therefore either committed before
 * the check reads (the check sees it gone) or runs after this write has
 * committed (and finds this record among the target's referrers). */

/* Whether the record of model `model` with id `id` exists (1), not (0), or
 * the lookup failed (-1, w->err set). */
static int record_exists(wctx *c, const char *model, const char *id)
{
    store_sbuf sql = {0};
    store_dbst *st = NULL;
    int found = -1;
    store_sbuf_add(&sql, "SELECT 1 FROM ");
    store_sbuf_table(&sql, c->w->org, model);
    store_sbuf_add(&sql, " WHERE _id = ?1");
    if (sql.oom) {
        oom(c);
        goto done;
    }
    int rc = store_stmt_get(&c->s->wcache, sql.p, &st);
    if (rc == STORE_DB_OK)
        rc = store_db_bind_text(st, 1, id, -1, STORE_DB_STATIC);
    if (rc == STORE_DB_OK)
        rc = store_wstep(c->s, st);
    if (rc == STORE_DB_ROW)
        found = 1;
    else if (rc == STORE_DB_DONE)
        found = 0;
    else
        sql_fail(c, rc);
done:
    store_stmt_put(st);
    store_sbuf_free(&sql);
    return found;
}

/* Checks the REFERENCE fields of after (the stored document the write
 * produces) against their targets; before is the current data (NULL for a
 * create): a field whose value the write leaves as it was is not looked up
 * again. self is the record's id: a record may reference itself, also on
 * the create that makes it. */
static rd_code check_references(wctx *c, const char *self, const json_t *before,
                                const json_t *after)
{
    for (size_t i = 0; i < c->m->n_fields; i++) {
        const store_field *f = &c->m->fields[i];
        json_t *v = json_object_get(after, f->name);
        if (f->type != STORE_T_REFERENCE || f->references == NULL || !json_is_string(v))
            continue;
        if (before != NULL && !field_changed(f, before, after))
            continue;
        const char *id = json_string_value(v);
        if (strcmp(f->references, c->m->name) == 0 && strcmp(id, self) == 0)
            continue;
        int found = record_exists(c, f->references, id);
        if (found < 0)
            return c->w->err.code;
        if (found == 0)
            return rd_errf(&c->w->err, RD_REFERENCE_NOT_FOUND, f->name,
                           "%s: no %s record has id '%.128s'", f->name, f->references, id);
    }
    return RD_OK;
}

/* CREATE: a new row with defaults applied, every field's sync id set. */
static rd_code do_create(wctx *c)
{
    store_write *w = c->w;
    const store_model *m = c->m;
    char idbuf[STORE_ID_MAX + 1];
    const char *id = w->rec.id;
    const char *group = w->rec.group != NULL && w->rec.group[0] != '\0' ? w->rec.group : "default";
    json_t *doc = NULL, *fields = NULL;
    store_sbuf sql = {0};
    store_dbst *st = NULL;
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
    code = store_check_values(m, w->rec.data, STORE_CHECK_CREATE, &w->err);
    if (code != RD_OK)
        return code;
    doc = complete_doc(m, w->rec.data);
    fields = json_array();
    if (doc == NULL || fields == NULL) {
        code = oom(c);
        goto done;
    }
    code = store_check_required(m, doc, &w->err);
    if (code == RD_OK)
        code = check_references(c, id, NULL, doc);
    if (code != RD_OK)
        goto done;

    /* ?1 id ?2 group ?3 sync id ?4 now ?5 actor, field j at ?(6 + j) */
    store_sbuf_add(&sql, "INSERT INTO ");
    store_sbuf_table(&sql, w->org, w->rec.model);
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
    if (rc != STORE_DB_OK) {
        code = sql_fail(c, rc);
        goto done;
    }
    store_db_bind_text(st, 1, id, -1, STORE_DB_STATIC);
    store_db_bind_text(st, 2, group, -1, STORE_DB_STATIC);
    store_db_bind_int64(st, 3, c->sid);
    store_db_bind_int64(st, 4, c->now);
    store_db_bind_text(st, 5, c->actor, -1, STORE_DB_STATIC);
    for (size_t i = 0; i < m->n_fields; i++) {
        json_t *v = json_object_get(doc, m->fields[i].name);
        rc = store_bind_value(st, (int)i + 6, &m->fields[i], v);
        if (rc == STORE_DB_OK && v != NULL)
            rc = json_array_append_new(fields, json_string(m->fields[i].name)) ? STORE_DB_NOMEM
                                                                               : STORE_DB_OK;
        if (rc != STORE_DB_OK) {
            code = sql_fail(c, rc);
            goto done;
        }
    }
    code = step_write(c, st);
    if (code == RD_OK)
        code = log_change(c, w->rec.model, id, group, "CREATE", fields, doc);
    if (code != RD_OK)
        goto done;
    store_record *r = &w->rec.record;
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
    store_dbst *st = NULL;
    rd_code code;
    int rc;
    if (fields == NULL)
        return oom(c);
    code = store_check_values(m, w->rec.data, replace ? STORE_CHECK_REPLACE : STORE_CHECK_PATCH,
                              &w->err);
    if (code == RD_OK)
        code = check_authorized(c, load_row(c, &cur), &cur);
    if (code == RD_OK)
        code = check_concurrency(c, &cur);
    if (code != RD_OK)
        goto done;
    next = replace ? complete_doc(m, w->rec.data) : merge_fields(m, cur.data, w->rec.data);
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
    if (code == RD_OK)
        code = check_references(c, cur.id, cur.data, next);
    if (code != RD_OK)
        goto done;

    /* ?1 sync id ?2 now ?3 actor ?4 id, field i at ?(5 + i) */
    store_sbuf_add(&sql, "UPDATE ");
    store_sbuf_table(&sql, w->org, w->rec.model);
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
    if (rc != STORE_DB_OK) {
        code = sql_fail(c, rc);
        goto done;
    }
    store_db_bind_int64(st, 1, c->sid);
    store_db_bind_int64(st, 2, c->now);
    store_db_bind_text(st, 3, c->actor, -1, STORE_DB_STATIC);
    store_db_bind_text(st, 4, w->rec.id, -1, STORE_DB_STATIC);
    for (size_t i = 0; i < m->n_fields; i++) {
        const store_field *f = &m->fields[i];
        if (!replace && !field_changed(f, cur.data, next))
            continue;
        rc = store_bind_value(st, (int)i + 5, f, json_object_get(next, f->name));
        if (rc != STORE_DB_OK) {
            code = sql_fail(c, rc);
            goto done;
        }
    }
    code = step_write(c, st);
    if (code == RD_OK)
        code = log_change(c, w->rec.model, cur.id, cur.group, replace ? "REPLACE" : "UPDATE",
                          fields, next);
    if (code != RD_OK)
        goto done;
    store_record *r = &w->rec.record;
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

/* ---- references: what a delete does to the records pointing at it -----------------------
 * A delete finds, for every REFERENCE field of the schema whose target is
 * the deleted record's model, the records holding its id, and acts on
 * each field's onDelete: RESTRICT refuses the delete (RD_REFERENCED),
 * CASCADE deletes the referrer too (and what points at it, and so on),
 * SET_NULL clears the field. It runs in two phases inside the write's
 * transaction, so a refusal has written nothing (PostgreSQL's bare writes,
 * writer.c run_bare, need no undoing then):
 *
 *   plan: an explicit work list (no C recursion) of the records to delete,
 *     starting with the named one, each looked up once (a set of the
 *     records already in the list), so chains of any length and cycles
 *     (A -> B -> A, self-referencing trees) end; the referrers to clear and
 *     those that restrict are collected on the way. Then, in this order:
 *     a restricting referrer that is not itself deleted -> RD_REFERENCED;
 *     more than STORE_BULK_MAX_AFFECTED records to change ->
 *     RD_TOO_MANY_ROWS; w->authorize_other refusing any of them.
 *   write: the named record first (c->sid), then every cascaded delete in
 *     list order, then every cleared referrer (one UPDATE per record, of
 *     all its cleared fields), each with the next sync id and its own
 *     change-feed row (the write's server_tx_id).
 *
 * Like the integrity check, the lookups cannot race other writes of the
 * organisation (they are serialized, see above). */

/* A set of (model, id) keys "model/id" ('/' is in neither) mapping to an
 * index; open addressing. */
typedef struct refset {
    char **keys;
    size_t *vals;
    size_t cap, n;
} refset;

static uint64_t fnv_add(uint64_t h, const char *p)
{
    for (; *p; p++)
        h = (h ^ (unsigned char)*p) * 1099511628211ull;
    return h;
}

/* FNV-1a over "model/id"; also over a stored key (model NULL). */
static uint64_t refset_hash(const char *model, const char *id)
{
    uint64_t h = 1469598103934665603ull;
    if (model != NULL) {
        h = fnv_add(h, model);
        h = (h ^ '/') * 1099511628211ull;
    }
    return fnv_add(h, id);
}

static bool refset_match(const char *key, const char *model, const char *id)
{
    size_t n = strlen(model);
    return strncmp(key, model, n) == 0 && key[n] == '/' && strcmp(key + n + 1, id) == 0;
}

/* The slot of (model, id): holding it, or the empty one where it goes. */
static size_t refset_slot(const refset *h, const char *model, const char *id)
{
    size_t i = (size_t)refset_hash(model, id) & (h->cap - 1);
    while (h->keys[i] != NULL && !refset_match(h->keys[i], model, id))
        i = (i + 1) & (h->cap - 1);
    return i;
}

/* The index stored for (model, id), or SIZE_MAX when absent. */
static size_t refset_get(const refset *h, const char *model, const char *id)
{
    if (h->cap == 0)
        return SIZE_MAX;
    size_t i = refset_slot(h, model, id);
    return h->keys[i] != NULL ? h->vals[i] : SIZE_MAX;
}

/* Adds (model, id) -> val unless present. false when out of memory. */
static bool refset_put(refset *h, const char *model, const char *id, size_t val)
{
    if (2 * (h->n + 1) > h->cap) {
        refset old = *h;
        h->cap = old.cap ? old.cap * 2 : 64;
        h->n = 0;
        h->keys = calloc(h->cap, sizeof *h->keys);
        h->vals = calloc(h->cap, sizeof *h->vals);
        if (h->keys == NULL || h->vals == NULL) {
            free(h->keys);
            free(h->vals);
            *h = old;
            return false;
        }
        for (size_t i = 0; i < old.cap; i++) {
            if (old.keys[i] == NULL)
                continue;
            size_t j = (size_t)refset_hash(NULL, old.keys[i]) & (h->cap - 1);
            while (h->keys[j] != NULL)
                j = (j + 1) & (h->cap - 1);
            h->keys[j] = old.keys[i];
            h->vals[j] = old.vals[i];
            h->n++;
        }
        free(old.keys);
        free(old.vals);
    }
    size_t i = refset_slot(h, model, id);
    if (h->keys[i] != NULL)
        return true;
    size_t lm = strlen(model), li = strlen(id);
    char *k = malloc(lm + li + 2);
    if (k == NULL)
        return false;
    memcpy(k, model, lm);
    k[lm] = '/';
    memcpy(k + lm + 1, id, li + 1);
    h->keys[i] = k;
    h->vals[i] = val;
    h->n++;
    return true;
}

static void refset_free(refset *h)
{
    for (size_t i = 0; i < h->cap; i++)
        free(h->keys[i]);
    free(h->keys);
    free(h->vals);
    memset(h, 0, sizeof *h);
}

/* One record of the plan: deleted (del), cleared (nul: one entry per
 * record) or restricting the delete of del[target] (rst). */
typedef struct casc_rec {
    const store_model *m;
    const store_field *f; /* restricting field; NULL otherwise */
    char *id;
    char *group;
    size_t target; /* restricting: the index in del of the record it references */
    bool *clear;   /* cleared: per field of m, whether it is cleared */
} casc_rec;

typedef struct casc_list {
    casc_rec *v;
    size_t n, cap;
} casc_list;

typedef struct cascade {
    casc_list del;  /* del.v[0] is the named record */
    casc_list nul;  /* records whose fields are cleared (some may be deleted too) */
    casc_list rst;  /* restricting referrers, at most STORE_BULK_MAX_AFFECTED + 1 */
    bool rst_more;  /* rst was cut off */
    refset deleted; /* (model, id) of del -> index */
    refset nulled;  /* (model, id) of nul -> index */
} cascade;

static bool casc_push(casc_list *l, const store_model *m, const store_field *f, const char *id,
                      const char *group, size_t target)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 16;
        casc_rec *v = realloc(l->v, cap * sizeof *v);
        if (v == NULL)
            return false;
        l->v = v;
        l->cap = cap;
    }
    casc_rec *r = &l->v[l->n];
    r->m = m;
    r->f = f;
    r->target = target;
    r->clear = NULL;
    r->id = strdup(id);
    r->group = strdup(group);
    if (r->id == NULL || r->group == NULL) {
        free(r->id);
        free(r->group);
        return false;
    }
    l->n++;
    return true;
}

static void casc_list_free(casc_list *l)
{
    for (size_t i = 0; i < l->n; i++) {
        free(l->v[i].id);
        free(l->v[i].group);
        free(l->v[i].clear);
    }
    free(l->v);
    memset(l, 0, sizeof *l);
}

static void cascade_free(cascade *cs)
{
    casc_list_free(&cs->del);
    casc_list_free(&cs->nul);
    casc_list_free(&cs->rst);
    refset_free(&cs->deleted);
    refset_free(&cs->nulled);
}

static rd_code too_many(wctx *c)
{
    return rd_errf(&c->w->err, RD_TOO_MANY_ROWS, NULL,
                   "deleting record '%.128s' of %s would delete or change more than %d records "
                   "through its references (onDelete); nothing was written",
                   c->w->rec.id, c->m->name, STORE_BULK_MAX_AFFECTED);
}

/* Adds the referrers of del.v[di] through field f of model m to the plan. */
static rd_code plan_referrers(wctx *c, cascade *cs, size_t di, const store_model *m,
                              const store_field *f)
{
    store_sbuf sql = {0};
    store_dbst *st = NULL;
    rd_code code = RD_OK;
    int rc;
    store_sbuf_add(&sql, "SELECT _id, _group FROM ");
    store_sbuf_table(&sql, c->w->org, m->name);
    store_sbuf_add(&sql, " WHERE ");
    store_sbuf_ident(&sql, f->name);
    store_sbuf_add(&sql, " = ?1");
    if (sql.oom)
        return oom(c);
    rc = store_stmt_get(&c->s->wcache, sql.p, &st);
    if (rc == STORE_DB_OK)
        rc = store_db_bind_text(st, 1, cs->del.v[di].id, -1, STORE_DB_STATIC);
    while (rc == STORE_DB_OK || rc == STORE_DB_ROW) {
        rc = store_wstep(c->s, st);
        if (rc != STORE_DB_ROW)
            break;
        const char *id = (const char *)store_db_column_text(st, 0);
        const char *group = (const char *)store_db_column_text(st, 1);
        if (id == NULL)
            continue;
        if (group == NULL)
            group = "";
        if (refset_get(&cs->deleted, m->name, id) != SIZE_MAX)
            continue; /* deleted by this write anyway */
        bool ok = true;
        switch (f->on_delete) {
        case STORE_DEL_CASCADE:
            if (cs->del.n >= STORE_BULK_MAX_AFFECTED) {
                code = too_many(c);
                goto done;
            }
            ok = casc_push(&cs->del, m, NULL, id, group, 0) &&
                 refset_put(&cs->deleted, m->name, id, cs->del.n - 1);
            break;
        case STORE_DEL_SET_NULL: {
            size_t k = refset_get(&cs->nulled, m->name, id);
            if (k == SIZE_MAX) {
                /* at most STORE_BULK_MAX_AFFECTED of them can turn out
                 * deleted: past twice that, too many remain */
                if (cs->nul.n >= 2 * (size_t)STORE_BULK_MAX_AFFECTED) {
                    code = too_many(c);
                    goto done;
                }
                ok = casc_push(&cs->nul, m, NULL, id, group, 0) &&
                     refset_put(&cs->nulled, m->name, id, cs->nul.n - 1) &&
                     (cs->nul.v[cs->nul.n - 1].clear = calloc(m->n_fields, sizeof(bool))) != NULL;
                k = cs->nul.n - 1;
            }
            if (ok)
                cs->nul.v[k].clear[f - m->fields] = true;
            break;
        }
        default: /* RESTRICT */
            if (cs->rst.n > STORE_BULK_MAX_AFFECTED) {
                cs->rst_more = true;
                break;
            }
            ok = casc_push(&cs->rst, m, f, id, group, di);
            break;
        }
        if (!ok) {
            code = oom(c);
            goto done;
        }
    }
    if (rc != STORE_DB_DONE)
        code = sql_fail(c, rc);
done:
    store_stmt_put(st);
    store_sbuf_free(&sql);
    return code;
}

/* The first restricting referrer that is not deleted by this write:
 * RD_REFERENCED naming the record it references, how many records
 * reference that one so, and one of them. */
static rd_code check_restrict(wctx *c, cascade *cs)
{
    size_t first = SIZE_MAX;
    for (size_t i = 0; i < cs->rst.n && first == SIZE_MAX; i++)
        if (refset_get(&cs->deleted, cs->rst.v[i].m->name, cs->rst.v[i].id) == SIZE_MAX)
            first = i;
    if (first == SIZE_MAX)
        return cs->rst_more ? too_many(c) : RD_OK;
    const casc_rec *first_rec = &cs->rst.v[first], *ex = NULL;
    const casc_rec *target = &cs->del.v[first_rec->target];
    store_write *w = c->w;
    refset seen = {0};
    size_t n = 0;
    for (size_t i = first; i < cs->rst.n; i++) {
        const casc_rec *r = &cs->rst.v[i];
        if (r->target != first_rec->target ||
            refset_get(&cs->deleted, r->m->name, r->id) != SIZE_MAX ||
            refset_get(&seen, r->m->name, r->id) != SIZE_MAX)
            continue;
        if (!refset_put(&seen, r->m->name, r->id, 0)) {
            refset_free(&seen);
            return oom(c);
        }
        n++;
        /* the example: a referrer the caller may read, never another */
        if (ex == NULL && (w->may_read == NULL || w->may_read(w, r->m, r->group)))
            ex = r;
    }
    refset_free(&seen);
    if (ex == NULL)
        return rd_errf(&w->err, RD_REFERENCED, NULL,
                       "record '%.128s' of %s is referenced by %s%zu record%s (none of them one "
                       "you may read) through %s.%s; they must be deleted or changed first",
                       target->id, target->m->name, cs->rst_more ? "at least " : "", n,
                       n == 1 ? "" : "s", first_rec->m->name, first_rec->f->name);
    return rd_errf(&w->err, RD_REFERENCED, NULL,
                   "record '%.128s' of %s is referenced by %s%zu record%s (e.g. %s '%.128s' "
                   "through %s); delete or change them first",
                   target->id, target->m->name, cs->rst_more ? "at least " : "", n,
                   n == 1 ? "" : "s", ex->m->name, ex->id, ex->f->name);
}

/* The plan of a delete of the loaded record cur (cascade above). */
static rd_code plan_cascade(wctx *c, const store_record *cur, cascade *cs)
{
    const store_schema *sch = c->sch;
    rd_code code = RD_OK;
    if (!casc_push(&cs->del, c->m, NULL, cur->id, cur->group, 0) ||
        !refset_put(&cs->deleted, c->m->name, cur->id, 0))
        return oom(c);
    /* the work list: del grows while it is walked */
    for (size_t di = 0; code == RD_OK && di < cs->del.n; di++) {
        const char *model = cs->del.v[di].m->name;
        for (size_t i = 0; code == RD_OK && i < sch->n_models; i++) {
            const store_model *m = &sch->models[i];
            for (size_t j = 0; code == RD_OK && j < m->n_fields; j++) {
                const store_field *f = &m->fields[j];
                if (f->type == STORE_T_REFERENCE && f->references != NULL &&
                    strcmp(f->references, model) == 0)
                    code = plan_referrers(c, cs, di, m, f);
            }
        }
    }
    if (code == RD_OK)
        code = check_restrict(c, cs);
    if (code != RD_OK)
        return code;
    /* the records cleared: those not deleted anyway */
    size_t n_cleared = 0;
    for (size_t i = 0; i < cs->nul.n; i++)
        n_cleared += refset_get(&cs->deleted, cs->nul.v[i].m->name, cs->nul.v[i].id) == SIZE_MAX;
    if (cs->del.n + n_cleared > STORE_BULK_MAX_AFFECTED)
        return too_many(c);
    /* the caller may change every one of them */
    if (c->w->authorize_other == NULL)
        return RD_OK;
    for (size_t i = 1; i < cs->del.n; i++) {
        const casc_rec *r = &cs->del.v[i];
        code = c->w->authorize_other(c->w, r->m, STORE_OP_DELETE, r->group, NULL, &c->w->err);
        if (code != RD_OK)
            return code;
    }
    for (size_t i = 0; i < cs->nul.n; i++) {
        const casc_rec *r = &cs->nul.v[i];
        if (refset_get(&cs->deleted, r->m->name, r->id) != SIZE_MAX)
            continue;
        for (size_t k = 0; k < r->m->n_fields; k++) {
            if (!r->clear[k])
                continue;
            code = c->w->authorize_other(c->w, r->m, STORE_OP_UPDATE, r->group,
                                         r->m->fields[k].name, &c->w->err);
            if (code != RD_OK)
                return code;
        }
    }
    return RD_OK;
}

/* Lists a record changed by the cascade in w->affected (the first
 * STORE_AFFECTED_MAX). */
static rd_code note_affected(wctx *c, const store_model *m, const char *id, store_op op)
{
    store_write *w = c->w;
    if (w->n_affected >= STORE_AFFECTED_MAX)
        return RD_OK;
    if (w->affected == NULL &&
        (w->affected = calloc(STORE_AFFECTED_MAX, sizeof *w->affected)) == NULL)
        return oom(c);
    store_affected *a = &w->affected[w->n_affected++];
    snprintf(a->model, sizeof a->model, "%s", m->name);
    snprintf(a->id, sizeof a->id, "%s", id);
    a->op = op;
    a->sync_id = c->sid;
    return RD_OK;
}

/* Deletes cascaded record r with the next sync id. */
static rd_code cascade_delete(wctx *c, const casc_rec *r)
{
    store_sbuf sql = {0};
    store_dbst *st = NULL;
    json_t *fields = json_array();
    rd_code code = RD_OK;
    for (size_t i = 0; fields != NULL && i < r->m->n_fields; i++)
        if (json_array_append_new(fields, json_string(r->m->fields[i].name)) != 0) {
            json_decref(fields);
            fields = NULL;
        }
    store_sbuf_add(&sql, "DELETE FROM ");
    store_sbuf_table(&sql, c->w->org, r->m->name);
    store_sbuf_add(&sql, " WHERE _id = ?1");
    if (fields == NULL || sql.oom) {
        code = oom(c);
        goto done;
    }
    c->sid++;
    int rc = store_stmt_get(&c->s->wcache, sql.p, &st);
    if (rc == STORE_DB_OK)
        rc = store_db_bind_text(st, 1, r->id, -1, STORE_DB_STATIC);
    code = rc == STORE_DB_OK ? step_write(c, st) : sql_fail(c, rc);
    if (code == RD_OK)
        code = log_change(c, r->m->name, r->id, r->group, "DELETE", fields, NULL);
    if (code == RD_OK)
        code = note_affected(c, r->m, r->id, STORE_OP_DELETE);
done:
    store_stmt_put(st);
    store_sbuf_free(&sql);
    json_decref(fields);
    return code;
}

/* Clears the fields of cleared record r (r->clear) with the next sync id:
 * an update of those fields (version + 1, their sync ids, updated at/by)
 * and its change-feed row. */
static rd_code cascade_clear(wctx *c, const casc_rec *r)
{
    store_sbuf sql = {0};
    store_dbst *st = NULL;
    json_t *fields = json_array(), *doc = json_object();
    rd_code code = RD_OK;
    store_sbuf_add(&sql, "UPDATE ");
    store_sbuf_table(&sql, c->w->org, r->m->name);
    store_sbuf_add(&sql, " SET _version = _version + 1, _sync_id = ?1, _updated_at = ?2,"
                         " _updated_by = ?3");
    for (size_t k = 0; fields != NULL && k < r->m->n_fields; k++) {
        const store_field *f = &r->m->fields[k];
        if (!r->clear[k])
            continue;
        if (json_array_append_new(fields, json_string(f->name)) != 0) {
            json_decref(fields);
            fields = NULL;
            break;
        }
        store_sbuf_add(&sql, ", ");
        store_sbuf_ident(&sql, f->name);
        store_sbuf_add(&sql, " = NULL, ");
        store_sbuf_ident2(&sql, "_s_", f->name);
        store_sbuf_add(&sql, " = ?1");
    }
    store_sbuf_add(&sql, " WHERE _id = ?4");
    if (fields == NULL || doc == NULL || sql.oom) {
        code = oom(c);
        goto done;
    }
    c->sid++;
    int rc = store_stmt_get(&c->s->wcache, sql.p, &st);
    if (rc == STORE_DB_OK) {
        store_db_bind_int64(st, 1, c->sid);
        store_db_bind_int64(st, 2, c->now);
        store_db_bind_text(st, 3, c->actor, -1, STORE_DB_STATIC);
        rc = store_db_bind_text(st, 4, r->id, -1, STORE_DB_STATIC);
    }
    code = rc == STORE_DB_OK ? step_write(c, st) : sql_fail(c, rc);
    if (code == RD_OK) /* doc {}: every field logged as null */
        code = log_change(c, r->m->name, r->id, r->group, "UPDATE", fields, doc);
    if (code == RD_OK)
        code = note_affected(c, r->m, r->id, STORE_OP_UPDATE);
done:
    store_stmt_put(st);
    store_sbuf_free(&sql);
    json_decref(fields);
    json_decref(doc);
    return code;
}

/* Writes the plan after the named record (del.v[0]) was deleted with
 * c->sid; c->sid ends at the last sync id taken. */
static rd_code cascade_write(wctx *c, const cascade *cs)
{
    rd_code code = RD_OK;
    for (size_t i = 1; code == RD_OK && i < cs->del.n; i++)
        code = cascade_delete(c, &cs->del.v[i]);
    for (size_t i = 0; code == RD_OK && i < cs->nul.n; i++)
        if (refset_get(&cs->deleted, cs->nul.v[i].m->name, cs->nul.v[i].id) == SIZE_MAX)
            code = cascade_clear(c, &cs->nul.v[i]);
    return code;
}

/* DELETE: the before-image goes to w->rec.record; the log row names every
 * field of the model. The records referencing it are deleted, cleared or
 * refuse the delete (cascade above). */
static rd_code do_delete(wctx *c)
{
    store_write *w = c->w;
    store_record cur = {0};
    cascade cs = {0};
    json_t *fields = json_array();
    store_sbuf sql = {0};
    store_dbst *st = NULL;
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
    if (code == RD_OK)
        code = plan_cascade(c, &cur, &cs);
    if (code != RD_OK)
        goto done;
    store_sbuf_add(&sql, "DELETE FROM ");
    store_sbuf_table(&sql, w->org, w->rec.model);
    store_sbuf_add(&sql, " WHERE _id = ?1");
    if (sql.oom) {
        code = oom(c);
        goto done;
    }
    int rc = store_stmt_get(&c->s->wcache, sql.p, &st);
    if (rc == STORE_DB_OK)
        rc = store_db_bind_text(st, 1, w->rec.id, -1, STORE_DB_STATIC);
    if (rc != STORE_DB_OK) {
        code = sql_fail(c, rc);
        goto done;
    }
    code = step_write(c, st);
    store_stmt_put(st); /* a cascaded delete of the same model takes it again */
    st = NULL;
    if (code == RD_OK)
        code = log_change(c, w->rec.model, cur.id, cur.group, "DELETE", fields, NULL);
    int64_t first = c->sid;
    if (code == RD_OK)
        code = cascade_write(c, &cs);
    if (code != RD_OK)
        goto done;
    w->rec.record = cur;
    cur.data = NULL;
    w->last_sync_id = c->sid;
    w->ops = (int)(c->sid - first + 1);
done:
    store_stmt_put(st);
    store_sbuf_free(&sql);
    store_record_clear(&cur);
    json_decref(fields);
    cascade_free(&cs);
    return code;
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
rd_code store_record_authorize_again(store *s, store_write *w)
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
