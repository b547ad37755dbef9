/* ddl.c: PUSH_SCHEMA on the writer thread. Validates the new definition,
 * diffs it against the organisation's current schema and applies the DDL
 * (tables, columns, unique indexes) inside the writer's savepoint, then
 * records the new revision in _rd_schema. The rules and the reasons behind
 * them are in docs/internals/store.md ("Schema changes"). */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/store_int.h"

typedef struct push {
    store *s;
    store_write *w;
    const char *org;
    json_t *changes; /* human-readable lines */
    rd_err *err;
} push;

/* The column type of a field. SQLite stores booleans as 0/1 and JSON as
 * text; PostgreSQL has its own types for both, and its text compares
 * bytewise ("C") so that lists order as on SQLite. */
static const char *column_type(const push *p, store_type t)
{
    bool pg = store_db_dialect(p->s->wdb) == STORE_DIALECT_POSTGRES;
    switch (t) {
    case STORE_T_NUMBER:
        return pg ? "DOUBLE PRECISION" : "REAL";
    case STORE_T_BOOLEAN:
        return pg ? "BOOLEAN" : "INTEGER";
    case STORE_T_INTEGER:
    case STORE_T_TIMESTAMP:
        return pg ? "BIGINT" : "INTEGER";
    case STORE_T_JSON:
        return pg ? "JSONB" : "TEXT";
    default:
        return pg ? "TEXT COLLATE \"C\"" : "TEXT";
    }
}

/* A per-field sync id's column type. */
static const char *sync_type(const push *p)
{
    return store_db_dialect(p->s->wdb) == STORE_DIALECT_POSTGRES ? "BIGINT" : "INTEGER";
}

static rd_code oom(push *p)
{
    return rd_errf(p->err, RD_INTERNAL, NULL, "out of memory");
}

/* Appends one line to the push's change list. */
static rd_code change(push *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static rd_code change(push *p, const char *fmt, ...)
{
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (json_array_append_new(p->changes, json_string(line)) != 0)
        return oom(p);
    return RD_OK;
}

/* Runs the statement in b (uncached) and empties b. */
static rd_code run(push *p, store_sbuf *b)
{
    rd_code code = RD_OK;
    if (b->oom) {
        code = oom(p);
    } else {
        int rc = store_exec(p->s->wdb, b->p);
        if (rc != STORE_DB_OK)
            code = store_sql_err(p->s->wdb, rc, p->err);
    }
    store_sbuf_free(b);
    return code;
}

/* "a, b" for messages and change lines. */
static void join_names(char *const *names, size_t n, char *out, size_t cap, const char *sep)
{
    size_t len = 0;
    out[0] = '\0';
    for (size_t i = 0; i < n; i++) {
        int w = snprintf(out + len, cap - len, "%s%s", i ? sep : "", names[i]);
        if (w < 0 || (size_t)w >= cap - len)
            break;
        len += (size_t)w;
    }
}

/* Appends the quoted name of an index: "r_<org>__<model>:u:<field>" for a
 * unique field, ":ut:<a>,<b>" for a composite unique, ":r:<field>" for the
 * (non-unique) index of a REFERENCE field. The separators cannot occur in
 * identifiers, so names never collide. */
static void index_name(store_sbuf *b, const push *p, const char *model, char *const *fields,
                       size_t n, const char *kind)
{
    char list[STORE_MAX_FIELDS * 65], name[sizeof list + 160];
    join_names(fields, n, list, sizeof list, ",");
    int len = snprintf(name, sizeof name, "r_%s__%s:%s:%s", p->org, model, kind, list);
    /* PostgreSQL cuts names at 63 bytes, and two cut names could meet: a
     * long one keeps its first 44 bytes and ends in a hash of the whole */
    if (store_db_dialect(p->s->wdb) == STORE_DIALECT_POSTGRES && len > STORE_PG_NAME_MAX) {
        uint64_t h = 1469598103934665603ull;
        for (const unsigned char *q = (const unsigned char *)name; *q; q++)
            h = (h ^ *q) * 1099511628211ull;
        snprintf(name + 44, sizeof name - 44, "~%016llx", (unsigned long long)h);
    }
    store_sbuf_addf(b, "\"%s\"", name);
}

/* On PostgreSQL a name longer than STORE_PG_NAME_MAX bytes would be cut
 * (and could meet another): a model's table "r_<org>__<model>" and a
 * field's sync-id column "_s_<field>" must fit. */
static rd_code check_pg_names(push *p, const store_schema *next)
{
    if (store_db_dialect(p->s->wdb) != STORE_DIALECT_POSTGRES)
        return RD_OK;
    size_t org = strlen(p->org);
    for (size_t i = 0; i < next->n_models; i++) {
        const store_model *m = &next->models[i];
        char path[96];
        if (2 + org + 2 + strlen(m->name) > STORE_PG_NAME_MAX) {
            snprintf(path, sizeof path, "models[%zu].name", i);
            return rd_errf(p->err, RD_VALIDATION_FAILED, path,
                           "model name '%s' is too long for this database: organisation and "
                           "model name together may have at most %d characters on PostgreSQL",
                           m->name, STORE_PG_NAME_MAX - 4);
        }
        for (size_t j = 0; j < m->n_fields; j++)
            if (3 + strlen(m->fields[j].name) > STORE_PG_NAME_MAX) {
                snprintf(path, sizeof path, "models[%zu].fields[%zu].name", i, j);
                return rd_errf(p->err, RD_VALIDATION_FAILED, path,
                               "field name '%s' is too long for this database: at most %d "
                               "characters on PostgreSQL",
                               m->fields[j].name, STORE_PG_NAME_MAX - 3);
            }
    }
    return RD_OK;
}

/* A unique index on fields of m. On PostgreSQL a text or JSON field is
 * indexed by its SHA-256 (_rd_key, pg_layout.c): a B-tree entry holds at
 * most about 2.7 kB, while a value may be a megabyte (as on SQLite). */
static rd_code create_unique(push *p, const store_model *m, char *const *fields, size_t n,
                             bool composite)
{
    store_sbuf b = {0};
    char list[STORE_MAX_FIELDS * 65];
    const char *model = m->name;
    bool pg = store_db_dialect(p->s->wdb) == STORE_DIALECT_POSTGRES;
    store_sbuf_add(&b, "CREATE UNIQUE INDEX ");
    index_name(&b, p, model, fields, n, composite ? "ut" : "u");
    store_sbuf_add(&b, " ON ");
    store_sbuf_table(&b, p->org, model);
    store_sbuf_add(&b, " (");
    for (size_t i = 0; i < n; i++) {
        const store_field *f = store_model_field(m, fields[i]);
        bool hashed =
            pg && f != NULL &&
            (f->type == STORE_T_STRING || f->type == STORE_T_ENUM || f->type == STORE_T_JSON);
        store_sbuf_add(&b, i ? ", " : "");
        store_sbuf_add(&b, hashed ? "_rd_key(" : "");
        store_sbuf_ident(&b, fields[i]);
        store_sbuf_add(&b, !hashed ? "" : f->type == STORE_T_JSON ? "::text)" : ")");
    }
    store_sbuf_add(&b, ")");
    rd_code code = run(p, &b);
    if (code == RD_DUPLICATE_RECORD) {
        join_names(fields, n, list, sizeof list, ",");
        rd_errf(p->err, RD_DUPLICATE_RECORD, list,
                "cannot add a unique constraint on %s.%s%s%s: existing records share a value",
                model, n > 1 ? "(" : "", list, n > 1 ? ")" : "");
    }
    return code;
}

static rd_code drop_unique(push *p, const char *model, char *const *fields, size_t n,
                           bool composite)
{
    store_sbuf b = {0};
    store_sbuf_add(&b, "DROP INDEX IF EXISTS ");
    index_name(&b, p, model, fields, n, composite ? "ut" : "u");
    return run(p, &b);
}

/* The index of a REFERENCE field: a delete finds the records referencing
 * the deleted one by it (record.c, "references"). */
static rd_code create_ref_index(push *p, const char *model, const store_field *f)
{
    store_sbuf b = {0};
    char *const name[1] = {f->name};
    store_sbuf_add(&b, "CREATE INDEX ");
    index_name(&b, p, model, name, 1, "r");
    store_sbuf_add(&b, " ON ");
    store_sbuf_table(&b, p->org, model);
    store_sbuf_add(&b, " (");
    store_sbuf_ident(&b, f->name);
    store_sbuf_add(&b, ")");
    return run(p, &b);
}

static rd_code drop_ref_index(push *p, const char *model, const store_field *f)
{
    store_sbuf b = {0};
    char *const name[1] = {f->name};
    store_sbuf_add(&b, "DROP INDEX IF EXISTS ");
    index_name(&b, p, model, name, 1, "r");
    return run(p, &b);
}

/* Adds the value column and the per-field sync id column of f. */
static rd_code add_columns(push *p, const char *model, const store_field *f)
{
    store_sbuf b = {0};
    rd_code code;
    for (int k = 0; k < 2; k++) {
        store_sbuf_add(&b, "ALTER TABLE ");
        store_sbuf_table(&b, p->org, model);
        store_sbuf_add(&b, " ADD COLUMN ");
        store_sbuf_ident2(&b, k ? "_s_" : "", f->name);
        store_sbuf_addf(&b, " %s", k ? sync_type(p) : column_type(p, f->type));
        code = run(p, &b);
        if (code != RD_OK)
            return code;
    }
    return RD_OK;
}

static rd_code drop_columns(push *p, const char *model, const char *field)
{
    store_sbuf b = {0};
    rd_code code;
    for (int k = 0; k < 2; k++) {
        store_sbuf_add(&b, "ALTER TABLE ");
        store_sbuf_table(&b, p->org, model);
        store_sbuf_add(&b, " DROP COLUMN ");
        store_sbuf_ident2(&b, k ? "_s_" : "", field);
        code = run(p, &b);
        if (code != RD_OK)
            return code;
    }
    return RD_OK;
}

/* Writes f's default into every existing row (their per-field sync id
 * stays NULL: no write changed the field). */
static rd_code backfill_default(push *p, const char *model, const store_field *f)
{
    store_sbuf b = {0};
    store_dbst *st = NULL;
    rd_code code = RD_OK;
    json_t *v = store_normalize(f, f->default_value);
    store_sbuf_add(&b, "UPDATE ");
    store_sbuf_table(&b, p->org, model);
    store_sbuf_add(&b, " SET ");
    store_sbuf_ident(&b, f->name);
    store_sbuf_add(&b, " = ?1");
    if (b.oom || v == NULL) {
        code = oom(p);
        goto done;
    }
    int rc = store_db_prepare(p->s->wdb, b.p, &st);
    if (rc == STORE_DB_OK)
        rc = store_bind_value(st, 1, f, v);
    if (rc == STORE_DB_OK)
        rc = store_db_step(st);
    if (rc != STORE_DB_DONE)
        code = store_sql_err(p->s->wdb, rc, p->err);
done:
    store_db_finalize(st);
    store_sbuf_free(&b);
    json_decref(v);
    return code;
}

/* 1 when the model's table has at least one row, 0 when empty, -1 on error
 * (p->err set). */
static int has_rows(push *p, const char *model)
{
    store_sbuf b = {0};
    store_dbst *st = NULL;
    int result = -1;
    store_sbuf_add(&b, "SELECT 1 FROM ");
    store_sbuf_table(&b, p->org, model);
    store_sbuf_add(&b, " LIMIT 1");
    if (b.oom) {
        oom(p);
        goto done;
    }
    int rc = store_db_prepare(p->s->wdb, b.p, &st);
    if (rc == STORE_DB_OK)
        rc = store_db_step(st);
    if (rc == STORE_DB_ROW)
        result = 1;
    else if (rc == STORE_DB_DONE)
        result = 0;
    else
        store_sql_err(p->s->wdb, rc, p->err);
done:
    store_db_finalize(st);
    store_sbuf_free(&b);
    return result;
}

static rd_code create_model(push *p, const store_model *m)
{
    store_sbuf b = {0};
    store_sbuf_add(&b, "CREATE TABLE ");
    store_sbuf_table(&b, p->org, m->name);
    const char *text = column_type(p, STORE_T_STRING), *i64 = sync_type(p);
    store_sbuf_addf(&b,
                    " (_id %s PRIMARY KEY NOT NULL, _group %s NOT NULL,"
                    " _version %s NOT NULL, _sync_id %s NOT NULL,"
                    " _created_at %s NOT NULL, _updated_at %s NOT NULL,"
                    " _created_by %s NOT NULL, _updated_by %s NOT NULL",
                    text, text, i64, i64, i64, i64, text, text);
    for (size_t i = 0; i < m->n_fields; i++) {
        store_sbuf_add(&b, ", ");
        store_sbuf_ident(&b, m->fields[i].name);
        store_sbuf_addf(&b, " %s, ", column_type(p, m->fields[i].type));
        store_sbuf_ident2(&b, "_s_", m->fields[i].name);
        store_sbuf_addf(&b, " %s", i64);
    }
    store_sbuf_add(&b, ")");
    rd_code code = run(p, &b);
    for (size_t i = 0; code == RD_OK && i < m->n_fields; i++)
        if (m->fields[i].unique)
            code = create_unique(p, m, &m->fields[i].name, 1, false);
    for (size_t i = 0; code == RD_OK && i < m->n_unique_together; i++)
        code =
            create_unique(p, m, m->unique_together[i].fields, m->unique_together[i].n_fields, true);
    for (size_t i = 0; code == RD_OK && i < m->n_fields; i++)
        if (m->fields[i].type == STORE_T_REFERENCE)
            code = create_ref_index(p, m->name, &m->fields[i]);
    if (code == RD_OK)
        code = change(p, "create model %s", m->name);
    return code;
}

static rd_code drop_model(push *p, const store_model *m)
{
    store_sbuf b = {0};
    store_sbuf_add(&b, "DROP TABLE ");
    store_sbuf_table(&b, p->org, m->name);
    rd_code code = run(p, &b);
    if (code == RD_OK)
        code = change(p, "drop model %s (forced)", m->name);
    return code;
}

/* Whether two definitions of a field keep its values: the same type and,
 * for a reference, the same target model (ids of one model mean nothing
 * in another). */
static bool same_values(const store_field *of, const store_field *nf)
{
    return of->type == nf->type &&
           (of->type != STORE_T_REFERENCE || strcmp(of->references, nf->references) == 0);
}

/* 1 when field name survives the push with its values (same_values). */
static int field_kept(const store_model *om, const store_model *nm, const char *name)
{
    const store_field *of = store_model_field(om, name), *nf = store_model_field(nm, name);
    return of != NULL && nf != NULL && same_values(of, nf);
}

static int unique_equal(const store_unique *a, const store_unique *b)
{
    if (a->n_fields != b->n_fields)
        return 0;
    for (size_t i = 0; i < a->n_fields; i++)
        if (strcmp(a->fields[i], b->fields[i]) != 0)
            return 0;
    return 1;
}

/* 1 when m has the composite u. */
static int has_unique(const store_model *m, const store_unique *u)
{
    for (size_t i = 0; i < m->n_unique_together; i++)
        if (unique_equal(&m->unique_together[i], u))
            return 1;
    return 0;
}

/* 1 when composite u (of om) keeps its index through the push: nm has it
 * and every field it covers keeps its column. */
static int unique_kept(const store_model *om, const store_model *nm, const store_unique *u)
{
    if (!has_unique(nm, u))
        return 0;
    for (size_t i = 0; i < u->n_fields; i++)
        if (!field_kept(om, nm, u->fields[i]))
            return 0;
    return 1;
}

/* 1 when the definitions of a and b differ in anything but type and
 * uniqueness (metadata: constraints, default, roles). */
static int metadata_changed(const store_field *a, const store_field *b)
{
    json_t *x = store_field_to_json(a), *y = store_field_to_json(b);
    int changed = 1;
    if (x != NULL && y != NULL) {
        json_object_del(x, "unique");
        json_object_del(y, "unique");
        changed = !json_equal(x, y);
    }
    json_decref(x);
    json_decref(y);
    return changed;
}

/* Refuses, unless forced, a push that would drop a column of om. */
static rd_code check_destructive(push *p, const store_model *om, const store_model *nm)
{
    char path[160];
    for (size_t i = 0; i < om->n_fields; i++) {
        const store_field *of = &om->fields[i];
        const store_field *nf = store_model_field(nm, of->name);
        snprintf(path, sizeof path, "%s.%s", om->name, of->name);
        if (p->w->push.force || (nf != NULL && same_values(of, nf)))
            continue;
        if (nf == NULL)
            return rd_errf(p->err, RD_DESTRUCTIVE_CHANGE, path,
                           "would drop field %s and its values: send every field of the model "
                           "(GET the schema first), push with merge to add only, or use force "
                           "to drop it",
                           path);
        if (nf->type == of->type)
            return rd_errf(p->err, RD_DESTRUCTIVE_CHANGE, path,
                           "would change the model %s references from %s to %s and clear its "
                           "values; use force",
                           path, of->references, nf->references);
        return rd_errf(p->err, RD_DESTRUCTIVE_CHANGE, path,
                       "would change the type of %s from %s to %s and drop its values; use force",
                       path, store_type_name(of->type), store_type_name(nf->type));
    }
    return RD_OK;
}

/* A REFERENCE field added to a model with records gets its default in every
 * one of them: the default must name an existing record of the target. */
static rd_code check_default_target(push *p, const store_model *m, const store_field *f)
{
    store_sbuf b = {0};
    store_dbst *st = NULL;
    rd_code code = RD_OK;
    store_sbuf_add(&b, "SELECT 1 FROM ");
    store_sbuf_table(&b, p->org, f->references);
    store_sbuf_add(&b, " WHERE _id = ?1");
    if (b.oom) {
        code = oom(p);
        goto done;
    }
    int rc = store_db_prepare(p->s->wdb, b.p, &st);
    if (rc == STORE_DB_OK)
        rc = store_db_bind_text(st, 1, json_string_value(f->default_value), -1, STORE_DB_STATIC);
    if (rc == STORE_DB_OK)
        rc = store_db_step(st);
    if (rc == STORE_DB_DONE)
        code = rd_errf(p->err, RD_REFERENCE_NOT_FOUND, f->name,
                       "cannot add %s.%s with default '%.128s': the existing records would get it, "
                       "and model %s has no record with that id",
                       m->name, f->name, json_string_value(f->default_value), f->references);
    else if (rc != STORE_DB_ROW)
        code = store_sql_err(p->s->wdb, rc, p->err);
done:
    store_db_finalize(st);
    store_sbuf_free(&b);
    return code;
}

/* Applies the difference between two versions of one model. */
static rd_code alter_model(push *p, const store_model *om, const store_model *nm)
{
    const char *model = nm->name;
    char list[STORE_MAX_FIELDS * 65];
    int rows = -2; /* not yet known */
    rd_code code = check_destructive(p, om, nm);
    if (code != RD_OK)
        return code;

    /* 1. unique indexes that go away or cover a column about to be dropped */
    for (size_t i = 0; i < om->n_fields; i++) {
        const store_field *of = &om->fields[i];
        const store_field *nf = store_model_field(nm, of->name);
        if (!of->unique || (field_kept(om, nm, of->name) && nf->unique))
            continue;
        code = drop_unique(p, model, &of->name, 1, false);
        if (code == RD_OK && field_kept(om, nm, of->name))
            code = change(p, "drop unique %s.%s", model, of->name);
        if (code != RD_OK)
            return code;
    }
    for (size_t i = 0; i < om->n_unique_together; i++) {
        const store_unique *u = &om->unique_together[i];
        if (unique_kept(om, nm, u))
            continue;
        code = drop_unique(p, model, u->fields, u->n_fields, true);
        join_names(u->fields, u->n_fields, list, sizeof list, ", ");
        if (code == RD_OK && !has_unique(nm, u))
            code = change(p, "drop unique %s(%s)", model, list);
        if (code != RD_OK)
            return code;
    }

    /* 2. columns dropped or retyped (forced, checked above) */
    for (size_t i = 0; i < om->n_fields; i++) {
        const store_field *of = &om->fields[i];
        const store_field *nf = store_model_field(nm, of->name);
        if (field_kept(om, nm, of->name))
            continue;
        code = of->type == STORE_T_REFERENCE ? drop_ref_index(p, model, of) : RD_OK;
        if (code == RD_OK)
            code = drop_columns(p, model, of->name);
        if (code == RD_OK && nf == NULL)
            code = change(p, "drop field %s.%s (forced)", model, of->name);
        else if (code == RD_OK && nf->type == of->type)
            code = change(p, "change %s.%s to reference %s instead of %s, values cleared (forced)",
                          model, of->name, nf->references, of->references);
        else if (code == RD_OK)
            code = change(p, "change type of %s.%s from %s to %s (forced)", model, of->name,
                          store_type_name(of->type), store_type_name(nf->type));
        if (code != RD_OK)
            return code;
    }

    /* 3. columns added (new fields, retyped fields) */
    for (size_t i = 0; i < nm->n_fields; i++) {
        const store_field *nf = &nm->fields[i];
        const store_field *of = store_model_field(om, nf->name);
        bool has_default = nf->default_value != NULL && !json_is_null(nf->default_value);
        if (field_kept(om, nm, nf->name))
            continue;
        if (rows == -2)
            rows = has_rows(p, model);
        if (rows < 0)
            return p->err->code;
        if (nf->required && !has_default && rows > 0)
            return rd_errf(p->err, RD_VALIDATION_FAILED, nf->name,
                           "cannot add required field %s.%s without a default value: the model "
                           "already has records",
                           model, nf->name);
        if (nf->type == STORE_T_REFERENCE && has_default && rows > 0 &&
            (code = check_default_target(p, nm, nf)) != RD_OK)
            return code;
        code = add_columns(p, model, nf);
        if (code == RD_OK && nf->type == STORE_T_REFERENCE)
            code = create_ref_index(p, model, nf);
        if (code == RD_OK && has_default && rows > 0)
            code = backfill_default(p, model, nf);
        if (code == RD_OK && of == NULL)
            code = change(p, "add field %s.%s", model, nf->name);
        if (code != RD_OK)
            return code;
    }

    /* 4. unique indexes added (or rebuilt over a retyped column) */
    for (size_t i = 0; i < nm->n_fields; i++) {
        const store_field *nf = &nm->fields[i];
        const store_field *of = store_model_field(om, nf->name);
        bool kept = field_kept(om, nm, nf->name);
        if (!nf->unique || (kept && of->unique))
            continue;
        code = create_unique(p, nm, &nf->name, 1, false);
        if (code == RD_OK && (of == NULL || !of->unique))
            code = change(p, "add unique %s.%s", model, nf->name);
        if (code != RD_OK)
            return code;
    }
    for (size_t i = 0; i < nm->n_unique_together; i++) {
        const store_unique *u = &nm->unique_together[i];
        if (has_unique(om, u) && unique_kept(om, nm, u))
            continue;
        code = create_unique(p, nm, u->fields, u->n_fields, true);
        join_names(u->fields, u->n_fields, list, sizeof list, ", ");
        if (code == RD_OK && !has_unique(om, u))
            code = change(p, "add unique %s(%s)", model, list);
        if (code != RD_OK)
            return code;
    }

    /* 5. metadata only */
    for (size_t i = 0; i < nm->n_fields; i++) {
        const store_field *nf = &nm->fields[i];
        const store_field *of = store_model_field(om, nf->name);
        if (!field_kept(om, nm, nf->name) || !metadata_changed(of, nf))
            continue;
        code = change(p, "update field %s.%s", model, nf->name);
        if (code != RD_OK)
            return code;
    }
    return RD_OK;
}

/* Applies every difference between cur and next. */
static rd_code apply_diff(push *p, const store_schema *cur, const store_schema *next)
{
    rd_code code = RD_OK;
    for (size_t i = 0; i < cur->n_models; i++) {
        const store_model *om = &cur->models[i];
        if (store_schema_model(next, om->name) != NULL)
            continue;
        if (!p->w->push.force)
            return rd_errf(p->err, RD_DESTRUCTIVE_CHANGE, om->name,
                           "would drop model %s and its records: a push replaces the whole "
                           "schema, so send every model (GET the schema first), push with merge "
                           "to add only, or use force to drop it",
                           om->name);
        code = drop_model(p, om);
        if (code != RD_OK)
            return code;
    }
    for (size_t i = 0; i < next->n_models; i++) {
        const store_model *nm = &next->models[i];
        const store_model *om = store_schema_model(cur, nm->name);
        code = om != NULL ? alter_model(p, om, nm) : create_model(p, nm);
        if (code != RD_OK)
            return code;
    }
    if (json_array_size(p->changes) == 0)
        code = change(p, "reorder models or fields");
    return code;
}

static rd_code record_revision(push *p, const json_t *doc, int64_t revision)
{
    store_dbst *st = NULL;
    rd_code code = RD_OK;
    char *text = json_dumps(doc, JSON_COMPACT);
    if (text == NULL)
        return oom(p);
    int rc = store_db_prepare(p->s->wdb,
                              "INSERT INTO _rd_schema (org, revision, doc, created_at)"
                              " VALUES (?1, ?2, ?3, ?4)",
                              &st);
    if (rc == STORE_DB_OK) {
        store_db_bind_text(st, 1, p->org, -1, STORE_DB_STATIC);
        store_db_bind_int64(st, 2, revision);
        store_db_bind_text(st, 3, text, -1, STORE_DB_STATIC);
        store_db_bind_int64(st, 4, rd_now_us());
        rc = store_db_step(st);
    }
    if (rc != STORE_DB_DONE)
        code = store_sql_err(p->s->wdb, rc, p->err);
    store_db_finalize(st);
    free(text);
    return code;
}

/* The element of array a whose "name" is name, or NULL (*index set). */
static json_t *named(json_t *a, const char *name, size_t *index)
{
    size_t i;
    json_t *v;
    json_array_foreach(a, i, v)
    {
        const char *n = json_string_value(json_object_get(v, "name"));
        if (n != NULL && name != NULL && strcmp(n, name) == 0) {
            *index = i;
            return v;
        }
    }
    return NULL;
}

/* A merge push: cur (a schema document) with the models of pushed added;
 * for a model that exists, its fields are added or replaced by name and its
 * uniqueTogether entries added. Nothing is dropped. A new document; NULL
 * when out of memory. */
static json_t *merge_docs(const json_t *cur, const json_t *pushed)
{
    json_t *out = json_deep_copy(cur);
    json_t *models = json_object_get(out, "models");
    size_t i, j, k;
    json_t *pm, *pf, *pu, *u;
    if (models == NULL)
        goto fail;
    json_array_foreach(json_object_get(pushed, "models"), i, pm)
    {
        json_t *om = named(models, json_string_value(json_object_get(pm, "name")), &k);
        if (om == NULL) {
            if (json_array_append(models, pm) != 0)
                goto fail;
            continue;
        }
        json_t *fields = json_object_get(om, "fields");
        json_array_foreach(json_object_get(pm, "fields"), j, pf)
        {
            bool found = named(fields, json_string_value(json_object_get(pf, "name")), &k) != NULL;
            if ((found ? json_array_set(fields, k, pf) : json_array_append(fields, pf)) != 0)
                goto fail;
        }
        json_t *uts = json_object_get(pm, "uniqueTogether");
        if (json_array_size(uts) == 0)
            continue;
        json_t *ours = json_object_get(om, "uniqueTogether");
        if (ours == NULL && (json_object_set_new(om, "uniqueTogether", json_array()) != 0 ||
                             (ours = json_object_get(om, "uniqueTogether")) == NULL))
            goto fail;
        json_array_foreach(uts, j, pu)
        {
            bool have = false;
            json_array_foreach(ours, k, u) have = have || json_equal(u, pu);
            if (!have && json_array_append(ours, pu) != 0)
                goto fail;
        }
    }
    return out;
fail:
    json_decref(out);
    return NULL;
}

rd_code store_push_schema(store *s, store_write *w, store_schema **published)
{
    push p = {s, w, w->org, NULL, &w->err};
    store_schema *cur = NULL, *next = NULL;
    json_t *doc = NULL, *curdoc = NULL;
    rd_code code;
    *published = NULL;
    if (w->org == NULL || !store_org_valid(w->org))
        return rd_errf(&w->err, RD_VALIDATION_FAILED, "organizationId",
                       "organization id '%.64s' cannot hold a schema (letters, digits, _ and -; "
                       "no \"__\"; at most %d characters)",
                       w->org ? w->org : "", STORE_ORG_MAX);
    char other[STORE_ORG_MAX + 1] = "";
    int variant = store_org_case_variant(s->wdb, w->org, other, sizeof other);
    if (variant < 0)
        return store_sql_err(s->wdb, STORE_DB_ERROR, &w->err);
    if (variant > 0)
        return rd_errf(&w->err, RD_VALIDATION_FAILED, "organizationId",
                       "organization id '%s' differs only in case from the existing organization "
                       "'%s' (organization ids are case-insensitive); use '%s'",
                       w->org, other, other);
    /* a merge is validated once merged (it may name fields it does not send) */
    if (!w->push.merge && (code = store_schema_validate(w->push.schema, &w->err)) != RD_OK)
        return code;
    cur = store_writer_schema(s, w->org);
    /* here, in the writer, no other push can come between the check and
     * the change */
    if (w->push.has_expected_revision && w->push.expected_revision != cur->revision) {
        code = rd_errf(&w->err, RD_VERSION_CONFLICT, "expectedRevision",
                       "the schema is at revision %lld, not %lld: get it, make your change to "
                       "it and push again",
                       (long long)cur->revision, (long long)w->push.expected_revision);
        goto done;
    }
    doc = store_schema_to_json(w->push.schema);
    curdoc = store_schema_to_json(cur);
    p.changes = json_array();
    if (doc == NULL || curdoc == NULL || p.changes == NULL) {
        code = oom(&p);
        goto done;
    }
    if (w->push.merge) {
        json_t *merged = merge_docs(curdoc, doc);
        json_decref(doc);
        doc = merged;
        if (doc == NULL) {
            code = oom(&p);
            goto done;
        }
    }
    if (json_equal(doc, curdoc)) {
        /* identical: nothing to do, the revision stays */
        w->push.revision = cur->revision;
        goto finish;
    }
    next = store_schema_from_json(doc, cur->revision + 1);
    if (next == NULL) {
        code = oom(&p);
        goto done;
    }
    if (w->push.merge && (code = store_schema_validate(next, &w->err)) != RD_OK)
        goto done;
    if ((code = check_pg_names(&p, next)) != RD_OK)
        goto done;
    code = apply_diff(&p, cur, next);
    if (code == RD_OK)
        code = record_revision(&p, doc, next->revision);
    if (code != RD_OK)
        goto done;
    w->push.revision = next->revision;
    *published = next;
    next = NULL;
finish:
    w->push.changes = p.changes;
    p.changes = NULL;
done:
    json_decref(p.changes);
    json_decref(doc);
    json_decref(curdoc);
    store_schema_release(next);
    store_schema_release(cur);
    return code;
}
