/* libFuzzer target for the filter grammar and order_by (store/filter.c)
 * against a fixed schema: model m with one field of every type and
 * REFERENCE fields into m2 and itself, m2 referencing m3, m3 referencing m.
 * The first input byte picks the parser (bit 0: filter or order_by) and
 * whether paths go through an access that restricts their groups (bit 1);
 * the rest is the text. Whatever parses must compile to SQL that SQLite
 * prepares against tables of that schema, with exactly as many
 * placeholders as values bound (so no text of the input ever became SQL),
 * and runs. Build and run: `make fuzz` (docs/internals/store.md, "Filters
 * and listing"). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/store.h"
#include "store/store_int.h"

static store_schema *schema;
static const store_model *model;
static store_db *db;

static const char model_json[] =
    "{\"models\":[{\"name\":\"m\",\"fields\":["
    "{\"name\":\"s\",\"type\":\"STRING\"},{\"name\":\"i\",\"type\":\"INTEGER\"},"
    "{\"name\":\"n\",\"type\":\"NUMBER\"},{\"name\":\"b\",\"type\":\"BOOLEAN\"},"
    "{\"name\":\"t\",\"type\":\"TIMESTAMP\"},{\"name\":\"j\",\"type\":\"JSON\"},"
    "{\"name\":\"e\",\"type\":\"ENUM\",\"enumValues\":[\"x\",\"y\"]},"
    "{\"name\":\"r\",\"type\":\"REFERENCE\",\"references\":\"m2\"},"
    "{\"name\":\"self\",\"type\":\"REFERENCE\",\"references\":\"m\"}]},"
    "{\"name\":\"m2\",\"fields\":[{\"name\":\"s\",\"type\":\"STRING\"},"
    "{\"name\":\"i\",\"type\":\"INTEGER\"},{\"name\":\"j\",\"type\":\"JSON\"},"
    "{\"name\":\"r\",\"type\":\"REFERENCE\",\"references\":\"m3\"}]},"
    "{\"name\":\"m3\",\"fields\":[{\"name\":\"s\",\"type\":\"STRING\"},"
    "{\"name\":\"back\",\"type\":\"REFERENCE\",\"references\":\"m\"}]}]}";

#define SYS                                                                                        \
    "_id TEXT, _group TEXT, _version INTEGER, _sync_id INTEGER, _created_at INTEGER, "             \
    "_updated_at INTEGER, "

static const char *const ddl[] = {
    "CREATE TABLE \"r_o__m\" (" SYS "s TEXT, i INTEGER, n REAL, b INTEGER, t INTEGER, j TEXT, "
    "e TEXT, r TEXT, self TEXT)",
    "CREATE TABLE \"r_o__m2\" (" SYS "s TEXT, i INTEGER, j TEXT, r TEXT)",
    "CREATE TABLE \"r_o__m3\" (" SYS "s TEXT, back TEXT)",
    "INSERT INTO \"r_o__m\" (_id, _group, s, i, r, self) VALUES ('a', 'g1', 'x', 1, 'p', 'a')",
    "INSERT INTO \"r_o__m2\" (_id, _group, s, i, r) VALUES ('p', 'g2', 'x', 2, 'q')",
    "INSERT INTO \"r_o__m3\" (_id, _group, s, back) VALUES ('q', 'g3', 'x', 'a')",
};

/* m2: two groups; m3: every group; m: none. */
static rd_code fuzz_access(void *ctx, const char *target, bool *all, const char ***groups,
                           size_t *n, rd_err *err)
{
    static const char *two[] = {"g1", "g2"};
    (void)ctx;
    (void)err;
    if (strcmp(target, "m2") == 0) {
        *groups = two;
        *n = 2;
    } else if (strcmp(target, "m3") == 0) {
        *all = true;
    }
    return RD_OK;
}

static size_t marks(const char *sql)
{
    size_t n = 0;
    for (const char *p = sql; *p; p++)
        n += *p == '?';
    return n;
}

/* Prepares sql, which must be valid; binds with bind (which must fill
 * exactly its placeholders) and steps once. */
static void run(const char *sql, int (*bind)(const void *, store_dbst *, int *), const void *arg)
{
    store_dbst *st = NULL;
    if (store_db_prepare(db, sql, &st) != STORE_DB_OK) {
        fprintf(stderr, "does not prepare: %s\n%s\n", store_db_errmsg(db), sql);
        abort();
    }
    int idx = 1;
    if (bind(arg, st, &idx) != STORE_DB_OK || (size_t)(idx - 1) != marks(sql))
        abort();
    int rc = store_db_step(st);
    if (rc != STORE_DB_ROW && rc != STORE_DB_DONE)
        abort();
    store_db_finalize(st);
}

static int bind_filter(const void *f, store_dbst *st, int *idx)
{
    return store_filter_bind(f, st, idx);
}

static int bind_order(const void *o, store_dbst *st, int *idx)
{
    for (size_t k = 0; k < store_order_terms(o); k++) {
        int rc = store_order_key_bind(o, k, st, idx);
        if (rc != STORE_DB_OK)
            return rc;
    }
    return STORE_DB_OK;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (schema == NULL) {
        json_t *doc = json_loads(model_json, 0, NULL);
        schema = store_schema_from_json(doc, 1);
        json_decref(doc);
        model = store_schema_model(schema, "m");
        char msg[128];
        store_db_options opt = {.role = STORE_DB_TOOL};
        if (model == NULL ||
            store_sqlite_open(":memory:", &opt, &db, msg, sizeof msg) != STORE_DB_OK)
            abort();
        for (size_t i = 0; i < sizeof ddl / sizeof ddl[0]; i++)
            if (store_db_exec(db, ddl[i]) != STORE_DB_OK)
                abort();
    }
    if (size < 1)
        return 0;
    char *text = malloc(size);
    if (text == NULL)
        return 0;
    memcpy(text, data + 1, size - 1);
    text[size - 1] = '\0';
    rd_err err;
    store_filter_access acc = {fuzz_access, NULL};
    const store_filter_access *access = data[0] & 2 ? &acc : NULL;
    store_sbuf sql = {0};
    if (data[0] & 1) {
        store_order *o = NULL;
        if (store_order_parse(schema, "o", model, text, access, &o, &err) == RD_OK) {
            if (store_order_terms(o) < 1 || store_order_terms(o) > STORE_ORDER_MAX_TERMS + 1)
                abort();
            store_sbuf_add(&sql, "SELECT *");
            for (size_t k = 0; k < store_order_terms(o); k++) {
                store_sbuf_add(&sql, ", ");
                store_order_key_sql(&sql, o, k);
            }
            store_sbuf_add(&sql, " FROM \"r_o__m\"");
            if (sql.oom)
                abort();
            run(sql.p, bind_order, o);
            store_order_free(o);
        } else if (err.code != RD_VALIDATION_FAILED && err.code != RD_INTERNAL) {
            abort();
        }
    } else {
        store_filter *f = NULL;
        if (store_filter_parse(schema, "o", model, text, access, &f, &err) == RD_OK) {
            if (store_filter_conditions(f) > STORE_FILTER_MAX_CONDS)
                abort();
            store_sbuf_add(&sql, "SELECT _id FROM \"r_o__m\" WHERE ");
            store_sbuf_add(&sql, store_filter_sql(f));
            if (sql.oom)
                abort();
            run(sql.p, bind_filter, f);
            store_filter_free(f);
        } else if (err.code != RD_VALIDATION_FAILED && err.code != RD_INTERNAL) {
            abort();
        }
    }
    store_sbuf_free(&sql);
    free(text);
    return 0;
}
