/* Tests for the store against a real SQLite file in a temporary directory:
 * schema pushes and their DDL, record writes through the writer thread,
 * reads, unique constraints, versions, sync ids, group commit under
 * concurrency, deadlines and reopening. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <sqlite3.h>

#include "store/store.h"
#include "store/store_int.h" /* store_fault_arm */
#include "tests/unit/unit_db.h"

#define ORG "org_acme"

static const char schema_v1[] =
    "{\"models\":["
    "{\"name\":\"students\",\"fields\":["
    "{\"name\":\"firstName\",\"type\":\"STRING\",\"required\":true,\"maxLength\":100},"
    "{\"name\":\"lastName\",\"type\":\"STRING\"},"
    "{\"name\":\"email\",\"type\":\"STRING\",\"unique\":true},"
    "{\"name\":\"age\",\"type\":\"INTEGER\",\"min\":0,\"max\":150},"
    "{\"name\":\"score\",\"type\":\"NUMBER\"},"
    "{\"name\":\"isActive\",\"type\":\"BOOLEAN\",\"default\":true},"
    "{\"name\":\"status\",\"type\":\"ENUM\",\"enumValues\":[\"active\",\"inactive\"],"
    "\"default\":\"active\"},"
    "{\"name\":\"profile\",\"type\":\"JSON\"},"
    "{\"name\":\"enrolledAt\",\"type\":\"TIMESTAMP\",\"immutable\":true}],"
    "\"uniqueTogether\":[[\"firstName\",\"lastName\"]]},"
    "{\"name\":\"courses\",\"fields\":[{\"name\":\"title\",\"type\":\"STRING\",\"required\":true}]}"
    "]}";

typedef struct fixture {
    char dir[64];
    char path[128];
    store *s;
} fixture;

static fixture *fx; /* the current test's fixture */

/* ---- helpers --------------------------------------------------------------- */

static json_t *parse(const char *text)
{
    json_error_t je;
    json_t *v = json_loads(text, JSON_DECODE_ANY, &je);
    if (v == NULL)
        fail_msg("bad JSON in test: %s (%s)", text, je.text);
    return v;
}

static store_schema *schema_from(const char *text)
{
    json_t *doc = parse(text);
    store_schema *s = store_schema_new();
    /* build through the public structs: the service does the same */
    json_t *models = json_object_get(doc, "models");
    s->models = calloc(json_array_size(models) + 1, sizeof *s->models);
    for (size_t i = 0; i < json_array_size(models); i++) {
        json_t *jm = json_array_get(models, i);
        store_model *m = &s->models[s->n_models++];
        json_t *fields = json_object_get(jm, "fields");
        json_t *uts = json_object_get(jm, "uniqueTogether");
        m->name = strdup(json_string_value(json_object_get(jm, "name")));
        m->fields = calloc(json_array_size(fields) + 1, sizeof *m->fields);
        m->unique_together = calloc(json_array_size(uts) + 1, sizeof *m->unique_together);
        for (size_t j = 0; j < json_array_size(fields); j++) {
            json_t *jf = json_array_get(fields, j);
            store_field *f = &m->fields[m->n_fields++];
            static const char *const types[] = {"",        "STRING",    "INTEGER", "NUMBER",
                                                "BOOLEAN", "TIMESTAMP", "JSON",    "ENUM"};
            const char *type = json_string_value(json_object_get(jf, "type"));
            f->name = strdup(json_string_value(json_object_get(jf, "name")));
            for (int t = 1; t < 8; t++)
                if (strcmp(types[t], type) == 0)
                    f->type = (store_type)t;
            f->required = json_is_true(json_object_get(jf, "required"));
            f->unique = json_is_true(json_object_get(jf, "unique"));
            f->immutable = json_is_true(json_object_get(jf, "immutable"));
            f->max_length = (uint32_t)json_integer_value(json_object_get(jf, "maxLength"));
            if (json_object_get(jf, "min") != NULL) {
                f->has_min = true;
                f->min = json_number_value(json_object_get(jf, "min"));
            }
            if (json_object_get(jf, "max") != NULL) {
                f->has_max = true;
                f->max = json_number_value(json_object_get(jf, "max"));
            }
            f->default_value = json_deep_copy(json_object_get(jf, "default"));
            json_t *ev = json_object_get(jf, "enumValues");
            f->enum_values = calloc(json_array_size(ev) + 1, sizeof *f->enum_values);
            for (size_t k = 0; k < json_array_size(ev); k++)
                f->enum_values[f->n_enum_values++] =
                    strdup(json_string_value(json_array_get(ev, k)));
        }
        for (size_t j = 0; j < json_array_size(uts); j++) {
            json_t *ju = json_array_get(uts, j);
            store_unique *u = &m->unique_together[m->n_unique_together++];
            u->fields = calloc(json_array_size(ju) + 1, sizeof *u->fields);
            for (size_t k = 0; k < json_array_size(ju); k++)
                u->fields[u->n_fields++] = strdup(json_string_value(json_array_get(ju, k)));
        }
    }
    json_decref(doc);
    return s;
}

static rd_err last; /* the error of the last helper call */

/* Pushes a schema (canonical JSON text) for org; *changes (optional) gets
 * the change lines. */
static rd_code push_org(const char *org, const char *text, bool force, json_t **changes,
                        int64_t *revision)
{
    store_write w;
    memset(&w, 0, sizeof w);
    store_schema *def = schema_from(text);
    w.op = STORE_OP_PUSH_SCHEMA;
    w.org = org;
    w.actor = "tester";
    w.push.schema = def;
    w.push.force = force;
    rd_code code = store_submit_wait(fx->s, &w);
    last = w.err;
    store_schema_release(def);
    if (changes != NULL)
        *changes = w.push.changes;
    else
        json_decref(w.push.changes);
    if (revision != NULL)
        *revision = w.push.revision;
    return code;
}

static rd_code push(const char *text, bool force, json_t **changes)
{
    return push_org(ORG, text, force, changes, NULL);
}

/* Prepares a record write in w (data as JSON text or NULL). */
static void prep(store_write *w, store_op op, const char *model, const char *id, const char *data)
{
    memset(w, 0, sizeof *w);
    w->op = op;
    w->org = ORG;
    w->actor = "tester";
    w->rec.model = model;
    w->rec.id = id;
    w->rec.data = data ? parse(data) : NULL;
}

/* Runs a record write; the caller clears w->rec.record. */
static rd_code run_write(store_write *w)
{
    rd_code code = store_submit_wait(fx->s, w);
    last = w->err;
    json_decref(w->rec.data);
    w->rec.data = NULL;
    return code;
}

static rd_code write_rec(store_op op, const char *model, const char *id, const char *data,
                         store_write *w)
{
    prep(w, op, model, id, data);
    return run_write(w);
}

/* A write whose results the test does not need. */
static rd_code quick(store_op op, const char *model, const char *id, const char *data)
{
    store_write w;
    rd_code code = write_rec(op, model, id, data, &w);
    store_record_clear(&w.rec.record);
    return code;
}

static rd_code get_org(const char *org, const char *model, const char *id, store_record *rec,
                       int64_t *read_at)
{
    store_conn *c = NULL;
    rd_err err;
    assert_int_equal(store_conn_open(fx->s, &c, &err), RD_OK);
    rd_code code = store_get(c, org, model, id, rec, read_at, &err);
    last = err;
    store_conn_close(c);
    return code;
}

static rd_code get(const char *model, const char *id, store_record *rec)
{
    int64_t at;
    return get_org(ORG, model, id, rec, &at);
}

/* Runs a one-value query on a separate connection. */
static int64_t q_int(const char *sql)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    int64_t v = -1;
    assert_int_equal(sqlite3_open_v2(fx->path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK)
        fail_msg("query failed: %s: %s", sql, sqlite3_errmsg(db));
    if (sqlite3_step(st) == SQLITE_ROW)
        v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return v;
}

static char *q_text(const char *sql)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    char *v = NULL;
    assert_int_equal(sqlite3_open_v2(fx->path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK)
        fail_msg("query failed: %s: %s", sql, sqlite3_errmsg(db));
    if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_text(st, 0) != NULL)
        v = strdup((const char *)sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
    sqlite3_close(db);
    return v;
}

/* schema_v1 with the courses model replaced by courses (JSON text); the
 * caller frees the result. */
static char *with_courses(const char *courses)
{
    const char *at = strstr(schema_v1, "{\"name\":\"courses\"");
    size_t n = (size_t)(at - schema_v1);
    char *text = malloc(n + strlen(courses) + 8);
    memcpy(text, schema_v1, n);
    sprintf(text + n, "%s]}", courses);
    return text;
}

static bool has_line(const json_t *changes, const char *line)
{
    for (size_t i = 0; i < json_array_size(changes); i++)
        if (strcmp(json_string_value(json_array_get(changes, i)), line) == 0)
            return true;
    return false;
}

static void assert_json(const json_t *got, const char *want_text)
{
    json_t *want = parse(want_text);
    if (!json_equal(got, want)) {
        char *g = json_dumps(got, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY);
        fprintf(stderr, "got  %s\nwant %s\n", g, want_text);
        free(g);
        json_decref(want);
        fail();
    }
    json_decref(want);
}

static void assert_msg(const char *part)
{
    if (strstr(last.msg, part) == NULL)
        fail_msg("message '%s' lacks '%s'", last.msg, part);
}

static rd_code open_store(bool sync_normal)
{
    rd_err err;
    store_options opt = {.path = fx->path, .sync_normal = sync_normal};
    rd_code code = store_open(&opt, &fx->s, &err);
    if (code != RD_OK)
        fail_msg("store_open: %s", err.msg);
    return code;
}

static int setup(void **state)
{
    fx = calloc(1, sizeof *fx);
    snprintf(fx->dir, sizeof fx->dir, "/tmp/rd_store_XXXXXX");
    if (mkdtemp(fx->dir) == NULL)
        return -1;
    snprintf(fx->path, sizeof fx->path, "%s/test.db", fx->dir);
    open_store(true);
    *state = fx;
    return push(schema_v1, false, NULL) == RD_OK ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    store_close(fx->s);
    unit_db_remove(fx->dir, fx->path);
    free(fx);
    fx = NULL;
    return 0;
}

/* ---- the per-thread read connection ----------------------------------------------- */

static void *thread_conn_of(void *arg)
{
    rd_err err;
    return store_thread_conn(arg, &err);
}

/* Runs on its own thread, whose exit closes the connection it holds. */
static void *thread_conn_steps(void *arg)
{
    (void)arg;
    rd_err err;
    int64_t gen;
    store_conn *a = store_thread_conn(fx->s, &err);
    assert_non_null(a);
    assert_ptr_equal(store_thread_conn(fx->s, &err), a); /* one per thread */
    pthread_t t;
    void *other = NULL;
    assert_int_equal(pthread_create(&t, NULL, thread_conn_of, fx->s), 0);
    assert_int_equal(pthread_join(t, &other), 0);
    assert_non_null(other);
    assert_ptr_not_equal(other, a); /* another thread, another connection */
    /* the store closes and opens again: the connection left from the
     * closed one is replaced, and the new one reads */
    store_close(fx->s);
    open_store(true);
    store_conn *b = store_thread_conn(fx->s, &err);
    assert_non_null(b);
    assert_int_equal(store_auth_gen(b, &gen, &err), RD_OK);
    return NULL;
}

static void test_store_thread_conn_is_one_per_thread_and_store(void **state)
{
    (void)state;
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, thread_conn_steps, NULL), 0);
    assert_int_equal(pthread_join(t, NULL), 0);
}

/* ---- faults on the write path (SQLite's test style) -------------------------------- */

/* The organisation's change log holds sync ids 1..n without a gap. */
static void assert_log_gap_free(void)
{
    int64_t n = q_int("SELECT count(*) FROM _rd_sync_log WHERE org = 'org_acme'");
    int64_t lo = q_int("SELECT min(sync_id) FROM _rd_sync_log WHERE org = 'org_acme'");
    int64_t hi = q_int("SELECT max(sync_id) FROM _rd_sync_log WHERE org = 'org_acme'");
    if (n > 0 && (lo != 1 || hi != n))
        fail_msg("sync ids of org_acme: %lld rows from %lld to %lld", (long long)n, (long long)lo,
                 (long long)hi);
}

/* The Nth SQLite step of the writer fails with BUSY, NOMEM or FULL, for
 * every N a create and an update take: each write either succeeds whole
 * or fails with UNAVAILABLE / INTERNAL and leaves nothing, the change log
 * stays gap-free, and the next write after the fault succeeds. */
static void test_store_faults_fail_whole_writes_and_leave_nothing(void **state)
{
    (void)state;
    static const int codes[] = {SQLITE_BUSY, SQLITE_NOMEM, SQLITE_FULL};
    assert_int_equal(quick(STORE_OP_CREATE, "courses", "base", "{\"title\":\"v0\"}"), RD_OK);
    char want_title[32] = "v0";
    int fired = 0;
    for (size_t k = 0; k < sizeof codes / sizeof codes[0]; k++) {
        for (int nth = 1; nth <= 30; nth++) {
            char id[32], data[64], title[32];
            snprintf(id, sizeof id, "f%zu_%d", k, nth);
            snprintf(title, sizeof title, "v%zu_%d", k, nth);
            snprintf(data, sizeof data, "{\"title\":\"%s\"}", title);
            store_fault_arm(fx->s, nth, codes[k], false);
            rd_code created = quick(STORE_OP_CREATE, "courses", id, "{\"title\":\"new\"}");
            rd_err create_err = last;
            rd_code updated = quick(STORE_OP_UPDATE, "courses", "base", data);
            rd_err update_err = last;
            store_fault_disarm(fx->s);

            store_record rec = {0};
            if (created == RD_OK) {
                assert_int_equal(get("courses", id, &rec), RD_OK);
            } else {
                fired++;
                if (created != RD_UNAVAILABLE && created != RD_INTERNAL)
                    fail_msg("create, step %d failing with %d: %s (%s)", nth, codes[k],
                             rd_code_str(created), create_err.msg);
                assert_int_equal(get("courses", id, &rec), RD_NOT_FOUND);
            }
            store_record_clear(&rec);
            if (updated == RD_OK) {
                snprintf(want_title, sizeof want_title, "%s", title);
            } else {
                fired++;
                if (updated != RD_UNAVAILABLE && updated != RD_INTERNAL)
                    fail_msg("update, step %d failing with %d: %s (%s)", nth, codes[k],
                             rd_code_str(updated), update_err.msg);
            }
            assert_int_equal(get("courses", "base", &rec), RD_OK);
            assert_string_equal(json_string_value(json_object_get(rec.data, "title")), want_title);
            store_record_clear(&rec);
            assert_log_gap_free();
        }
        /* the store recovered: a write after the faults succeeds */
        char id[32];
        snprintf(id, sizeof id, "after%zu", k);
        assert_int_equal(quick(STORE_OP_CREATE, "courses", id, "{\"title\":\"ok\"}"), RD_OK);
        assert_log_gap_free();
    }
    assert_true(fired >= 3 * 8); /* the faults hit every kind of step of both writes */
}

/* ---- references: a cascade that fails half-way ------------------------------------ */

static const char refs_schema[] =
    "{\"models\":["
    "{\"name\":\"parents\",\"fields\":[{\"name\":\"title\",\"type\":\"STRING\"}]},"
    "{\"name\":\"kids\",\"fields\":[{\"name\":\"parent\",\"type\":\"REFERENCE\","
    "\"references\":\"parents\",\"onDelete\":\"CASCADE\"}]},"
    "{\"name\":\"tags\",\"fields\":[{\"name\":\"parent\",\"type\":\"REFERENCE\","
    "\"references\":\"parents\",\"onDelete\":\"SET_NULL\"}]}]}";

/* Pushes refs_schema through the canonical JSON reader (it knows
 * references and onDelete). */
static void push_refs_schema(void)
{
    json_t *doc = parse(refs_schema);
    store_write w;
    memset(&w, 0, sizeof w);
    w.op = STORE_OP_PUSH_SCHEMA;
    w.org = ORG;
    w.actor = "tester";
    w.push.schema = store_schema_from_json(doc, 0);
    w.push.force = true; /* the fixture's models go */
    assert_non_null(w.push.schema);
    if (store_submit_wait(fx->s, &w) != RD_OK)
        fail_msg("push: %s", w.err.msg);
    store_schema_release(w.push.schema);
    json_decref(w.push.changes);
    json_decref(doc);
}

/* The Nth step of the writer fails while a delete cascades to two kids and
 * clears a tag, for every N the delete takes: it either happened whole
 * (4 rows, 4 sync ids) or not at all (everything as it was), and the
 * change log stays gap-free. */
static void test_store_cascade_faults_undo_the_whole_delete(void **state)
{
    (void)state;
    push_refs_schema();
    int done = 0, fired = 0;
    for (int nth = 1; nth <= 40; nth++) {
        char p[16], k1[16], k2[16], t[16], pdata[48];
        snprintf(p, sizeof p, "p%d", nth);
        snprintf(k1, sizeof k1, "k%da", nth);
        snprintf(k2, sizeof k2, "k%db", nth);
        snprintf(t, sizeof t, "t%d", nth);
        snprintf(pdata, sizeof pdata, "{\"parent\":\"%s\"}", p);
        assert_int_equal(quick(STORE_OP_CREATE, "parents", p, "{\"title\":\"x\"}"), RD_OK);
        assert_int_equal(quick(STORE_OP_CREATE, "kids", k1, pdata), RD_OK);
        assert_int_equal(quick(STORE_OP_CREATE, "kids", k2, pdata), RD_OK);
        assert_int_equal(quick(STORE_OP_CREATE, "tags", t, pdata), RD_OK);
        int64_t before = q_int("SELECT max(sync_id) FROM _rd_sync_log WHERE org = 'org_acme'");

        store_write w;
        store_fault_arm(fx->s, nth, SQLITE_BUSY, false);
        rd_code code = write_rec(STORE_OP_DELETE, "parents", p, NULL, &w);
        store_fault_disarm(fx->s);
        store_record rec = {0};
        int64_t after = q_int("SELECT max(sync_id) FROM _rd_sync_log WHERE org = 'org_acme'");
        if (code == RD_OK) {
            done++;
            assert_int_equal(w.ops, 4);
            assert_int_equal(w.last_sync_id, before + 4);
            assert_int_equal(after, before + 4);
            assert_int_equal(w.n_affected, 3);
            assert_int_equal(w.affected[2].op, STORE_OP_UPDATE);
            assert_int_equal(w.affected[2].sync_id, before + 4);
            assert_int_equal(get("kids", k1, &rec), RD_NOT_FOUND);
            assert_int_equal(get("kids", k2, &rec), RD_NOT_FOUND);
            assert_int_equal(get("tags", t, &rec), RD_OK);
            assert_null(json_object_get(rec.data, "parent"));
            assert_int_equal(rec.version, 2);
        } else {
            fired++;
            if (code != RD_UNAVAILABLE && code != RD_INTERNAL)
                fail_msg("delete, step %d failing: %s (%s)", nth, rd_code_str(code), last.msg);
            assert_int_equal(w.ops, 0);
            assert_null(w.affected);
            assert_int_equal(after, before);
            assert_int_equal(get("parents", p, &rec), RD_OK);
            store_record_clear(&rec);
            assert_int_equal(get("kids", k1, &rec), RD_OK);
            store_record_clear(&rec);
            assert_int_equal(get("kids", k2, &rec), RD_OK);
            store_record_clear(&rec);
            assert_int_equal(get("tags", t, &rec), RD_OK);
            assert_string_equal(json_string_value(json_object_get(rec.data, "parent")), p);
        }
        store_record_clear(&rec);
        store_record_clear(&w.rec.record);
        free(w.affected);
        assert_log_gap_free();
    }
    /* the fault hit every step of the delete, and past them it went through */
    assert_true(fired >= 13); /* up to the last change-feed row */
    assert_true(done > 0);
}

/* A delete changes at most STORE_BULK_MAX_AFFECTED records, the named one
 * included: one more and it is refused whole (too_many_rows, nothing
 * written); at the bound it goes through, its affected list cut at
 * STORE_AFFECTED_MAX. */
static void test_store_cascade_is_bounded(void **state)
{
    (void)state;
    static store_bulk_op ops[1000];
    static char ids[1000][16];
    push_refs_schema();
    assert_int_equal(quick(STORE_OP_CREATE, "parents", "big", "{\"title\":\"x\"}"), RD_OK);
    json_t *data = parse("{\"parent\":\"big\"}");
    int kids = STORE_BULK_MAX_AFFECTED - 1;
    for (int made = 0; made < kids;) {
        size_t n = kids - made < 1000 ? (size_t)(kids - made) : 1000;
        for (size_t i = 0; i < n; i++) {
            memset(&ops[i], 0, sizeof ops[i]);
            snprintf(ids[i], sizeof ids[i], "k%05d", made + (int)i);
            ops[i].w.op = STORE_OP_CREATE;
            ops[i].w.rec.model = "kids";
            ops[i].w.rec.id = ids[i];
            ops[i].w.rec.data = data;
        }
        store_write w;
        store_bulk b;
        memset(&w, 0, sizeof w);
        memset(&b, 0, sizeof b);
        b.ops = ops;
        b.n_ops = n;
        w.op = STORE_OP_BULK;
        w.org = ORG;
        w.actor = "tester";
        w.bulk = &b;
        if (store_submit_wait(fx->s, &w) != RD_OK)
            fail_msg("bulk: %s", w.err.msg);
        for (size_t i = 0; i < n; i++)
            store_record_clear(&ops[i].w.rec.record);
        made += (int)n;
    }
    json_decref(data);
    assert_int_equal(quick(STORE_OP_CREATE, "tags", "tag", "{\"parent\":\"big\"}"), RD_OK);

    /* the parent, its kids and the tag: one record too many */
    int64_t before = q_int("SELECT max(sync_id) FROM _rd_sync_log WHERE org = 'org_acme'");
    store_write w;
    assert_int_equal(write_rec(STORE_OP_DELETE, "parents", "big", NULL, &w), RD_TOO_MANY_ROWS);
    assert_non_null(strstr(last.msg, "more than 10000 records"));
    assert_int_equal(w.ops, 0);
    assert_null(w.affected);
    assert_int_equal(q_int("SELECT max(sync_id) FROM _rd_sync_log WHERE org = 'org_acme'"), before);
    assert_int_equal(q_int("SELECT count(*) FROM r_org_acme__kids"), kids);
    store_record rec = {0};
    assert_int_equal(get("parents", "big", &rec), RD_OK);
    store_record_clear(&rec);

    /* without the tag it is exactly the bound */
    assert_int_equal(quick(STORE_OP_DELETE, "tags", "tag", NULL), RD_OK);
    assert_int_equal(write_rec(STORE_OP_DELETE, "parents", "big", NULL, &w), RD_OK);
    assert_int_equal(w.ops, STORE_BULK_MAX_AFFECTED);
    assert_int_equal(w.last_sync_id, before + 1 + STORE_BULK_MAX_AFFECTED);
    assert_int_equal(w.n_affected, STORE_AFFECTED_MAX);
    assert_string_equal(w.affected[0].id, "k00000");
    assert_int_equal(w.affected[0].sync_id, before + 3);
    assert_int_equal(q_int("SELECT count(*) FROM r_org_acme__kids"), 0);
    store_record_clear(&w.rec.record);
    free(w.affected);
    assert_log_gap_free();
}

/* ---- schema pushes ---------------------------------------------------------------- */

static void test_store_push_creates_models_and_tables(void **state)
{
    (void)state;
    store_schema *s = store_schema_get(fx->s, ORG);
    assert_int_equal(s->revision, 1);
    assert_non_null(store_schema_model(s, "students"));
    assert_non_null(store_schema_model(s, "courses"));
    store_schema_release(s);
    assert_int_equal(q_int("SELECT count(*) FROM sqlite_master WHERE type = 'table'"
                           " AND name IN ('r_org_acme__students', 'r_org_acme__courses')"),
                     2);
    assert_int_equal(q_int("SELECT count(*) FROM _rd_schema WHERE org = 'org_acme'"), 1);
}

static void test_store_push_reports_changes(void **state)
{
    (void)state;
    json_t *changes = NULL;
    int64_t rev = 0;
    assert_int_equal(push_org("org_new", schema_v1, false, &changes, &rev), RD_OK);
    assert_int_equal(rev, 1);
    assert_true(has_line(changes, "create model students"));
    assert_true(has_line(changes, "create model courses"));
    json_decref(changes);
}

static void test_store_push_identical_schema_is_noop(void **state)
{
    (void)state;
    json_t *changes = NULL;
    int64_t rev = 0;
    assert_int_equal(push_org(ORG, schema_v1, false, &changes, &rev), RD_OK);
    assert_int_equal(rev, 1);
    assert_int_equal(json_array_size(changes), 0);
    json_decref(changes);
    assert_int_equal(q_int("SELECT count(*) FROM _rd_schema WHERE org = 'org_acme'"), 1);
}

static void test_store_push_invalid_schema_changes_nothing(void **state)
{
    (void)state;
    assert_int_equal(
        push("{\"models\":[{\"name\":\"x; DROP TABLE y\",\"fields\":[]}]}", true, NULL),
        RD_VALIDATION_FAILED);
    assert_string_equal(last.field, "models[0].name");
    store_schema *s = store_schema_get(fx->s, ORG);
    assert_int_equal(s->revision, 1);
    store_schema_release(s);
}

static void test_store_schema_get_unknown_org_is_empty(void **state)
{
    (void)state;
    store_schema *s = store_schema_get(fx->s, "org_nobody");
    assert_non_null(s);
    assert_int_equal(s->revision, 0);
    assert_int_equal(s->n_models, 0);
    store_schema_release(s);
}

static void test_store_push_add_field_with_default_backfills(void **state)
{
    (void)state;
    json_t *changes = NULL;
    assert_int_equal(quick(STORE_OP_CREATE, "courses", "c1", "{\"title\":\"Math\"}"), RD_OK);
    assert_int_equal(push("{\"models\":[{\"name\":\"students\",\"fields\":["
                          "{\"name\":\"firstName\",\"type\":\"STRING\",\"required\":true,"
                          "\"maxLength\":100},{\"name\":\"lastName\",\"type\":\"STRING\"},"
                          "{\"name\":\"email\",\"type\":\"STRING\",\"unique\":true},"
                          "{\"name\":\"age\",\"type\":\"INTEGER\",\"min\":0,\"max\":150},"
                          "{\"name\":\"score\",\"type\":\"NUMBER\"},"
                          "{\"name\":\"isActive\",\"type\":\"BOOLEAN\",\"default\":true},"
                          "{\"name\":\"status\",\"type\":\"ENUM\",\"enumValues\":[\"active\","
                          "\"inactive\"],\"default\":\"active\"},"
                          "{\"name\":\"profile\",\"type\":\"JSON\"},"
                          "{\"name\":\"enrolledAt\",\"type\":\"TIMESTAMP\",\"immutable\":true}],"
                          "\"uniqueTogether\":[[\"firstName\",\"lastName\"]]},"
                          "{\"name\":\"courses\",\"fields\":["
                          "{\"name\":\"title\",\"type\":\"STRING\",\"required\":true},"
                          "{\"name\":\"credits\",\"type\":\"INTEGER\",\"required\":true,"
                          "\"default\":3}]}]}",
                          false, &changes),
                     RD_OK);
    assert_true(has_line(changes, "add field courses.credits"));
    json_decref(changes);
    store_record rec;
    assert_int_equal(get("courses", "c1", &rec), RD_OK);
    assert_json(rec.data, "{\"title\":\"Math\",\"credits\":3}");
    store_record_clear(&rec);
}

static void test_store_push_add_required_field_without_default_refused(void **state)
{
    (void)state;
    assert_int_equal(quick(STORE_OP_CREATE, "courses", "c1", "{\"title\":\"Math\"}"), RD_OK);
    char *text =
        with_courses("{\"name\":\"courses\",\"fields\":[{\"name\":\"title\",\"type\":\"STRING\"},"
                     "{\"name\":\"room\",\"type\":\"STRING\",\"required\":true}]}");
    assert_int_equal(push(text, true, NULL), RD_VALIDATION_FAILED);
    assert_msg("cannot add required field courses.room without a default");
    free(text);
    store_schema *s = store_schema_get(fx->s, ORG);
    assert_int_equal(s->revision, 1);
    assert_null(store_model_field(store_schema_model(s, "courses"), "room"));
    store_schema_release(s);
}

static const char schema_without_score_and_courses[] =
    "{\"models\":["
    "{\"name\":\"students\",\"fields\":["
    "{\"name\":\"firstName\",\"type\":\"STRING\",\"required\":true,\"maxLength\":100},"
    "{\"name\":\"lastName\",\"type\":\"STRING\"},"
    "{\"name\":\"email\",\"type\":\"STRING\",\"unique\":true},"
    "{\"name\":\"age\",\"type\":\"INTEGER\",\"min\":0,\"max\":150},"
    "{\"name\":\"isActive\",\"type\":\"BOOLEAN\",\"default\":true},"
    "{\"name\":\"status\",\"type\":\"ENUM\",\"enumValues\":[\"active\",\"inactive\"],"
    "\"default\":\"active\"},"
    "{\"name\":\"profile\",\"type\":\"JSON\"},"
    "{\"name\":\"enrolledAt\",\"type\":\"TIMESTAMP\",\"immutable\":true}],"
    "\"uniqueTogether\":[[\"firstName\",\"lastName\"]]},"
    "{\"name\":\"courses\",\"fields\":[{\"name\":\"title\",\"type\":\"STRING\",\"required\":true}]}"
    "]}";

static void test_store_push_drop_field_refused_then_forced(void **state)
{
    (void)state;
    json_t *changes = NULL;
    assert_int_equal(
        quick(STORE_OP_CREATE, "students", "s1", "{\"firstName\":\"A\",\"score\":1.5}"), RD_OK);
    assert_int_equal(push(schema_without_score_and_courses, false, NULL), RD_DESTRUCTIVE_CHANGE);
    assert_string_equal(last.field, "students.score");
    assert_msg("use force");
    assert_int_equal(q_int("SELECT count(*) FROM pragma_table_info('r_org_acme__students')"
                           " WHERE name = 'score'"),
                     1);
    assert_int_equal(push(schema_without_score_and_courses, true, &changes), RD_OK);
    assert_true(has_line(changes, "drop field students.score (forced)"));
    json_decref(changes);
    assert_int_equal(q_int("SELECT count(*) FROM pragma_table_info('r_org_acme__students')"
                           " WHERE name IN ('score', '_s_score')"),
                     0);
    store_record rec;
    assert_int_equal(get("students", "s1", &rec), RD_OK);
    assert_null(json_object_get(rec.data, "score"));
    store_record_clear(&rec);
}

static void test_store_push_drop_model_refused_then_forced(void **state)
{
    (void)state;
    json_t *changes = NULL;
    const char *only_students_start = strstr(schema_v1, ",{\"name\":\"courses\"");
    char text[4096];
    snprintf(text, sizeof text, "%.*s]}", (int)(only_students_start - schema_v1), schema_v1);
    assert_int_equal(push(text, false, NULL), RD_DESTRUCTIVE_CHANGE);
    assert_msg("would drop model courses");
    assert_msg("use force");
    assert_int_equal(push(text, true, &changes), RD_OK);
    assert_true(has_line(changes, "drop model courses (forced)"));
    json_decref(changes);
    assert_int_equal(q_int("SELECT count(*) FROM sqlite_master WHERE name = 'r_org_acme__courses'"),
                     0);
    assert_int_equal(quick(STORE_OP_CREATE, "courses", NULL, "{\"title\":\"x\"}"), RD_NOT_FOUND);
}

static void test_store_push_type_change_forced_clears_values(void **state)
{
    (void)state;
    json_t *changes = NULL;
    assert_int_equal(quick(STORE_OP_CREATE, "courses", "c1", "{\"title\":\"Math\"}"), RD_OK);
    char *text =
        with_courses("{\"name\":\"courses\",\"fields\":[{\"name\":\"title\",\"type\":\"JSON\"}]}");
    assert_int_equal(push(text, false, NULL), RD_DESTRUCTIVE_CHANGE);
    assert_msg("from STRING to JSON");
    assert_int_equal(push(text, true, &changes), RD_OK);
    assert_true(has_line(changes, "change type of courses.title from STRING to JSON (forced)"));
    json_decref(changes);
    free(text);
    store_record rec;
    assert_int_equal(get("courses", "c1", &rec), RD_OK);
    assert_int_equal(json_object_size(rec.data), 0);
    store_record_clear(&rec);
    assert_int_equal(quick(STORE_OP_UPDATE, "courses", "c1", "{\"title\":{\"en\":\"Math\"}}"),
                     RD_OK);
}

static void test_store_push_unique_over_duplicates_refused(void **state)
{
    (void)state;
    assert_int_equal(quick(STORE_OP_CREATE, "courses", "c1", "{\"title\":\"Math\"}"), RD_OK);
    assert_int_equal(quick(STORE_OP_CREATE, "courses", "c2", "{\"title\":\"Math\"}"), RD_OK);
    char *text = with_courses(
        "{\"name\":\"courses\",\"fields\":[{\"name\":\"title\",\"type\":\"STRING\","
        "\"required\":true,\"unique\":true},{\"name\":\"room\",\"type\":\"STRING\"}]}");
    assert_int_equal(push(text, false, NULL), RD_DUPLICATE_RECORD);
    assert_string_equal(last.field, "title");
    free(text);
    store_schema *s = store_schema_get(fx->s, ORG);
    assert_int_equal(s->revision, 1);
    store_schema_release(s);
    /* the whole push rolled back: the column added before the index is gone */
    assert_int_equal(q_int("SELECT count(*) FROM pragma_table_info('r_org_acme__courses')"
                           " WHERE name = 'room'"),
                     0);
}

static void test_store_push_unique_removed_drops_index(void **state)
{
    (void)state;
    json_t *changes = NULL;
    char *text = strdup(schema_v1);
    char *at = strstr(text, ",\"unique\":true");
    memmove(at, at + strlen(",\"unique\":true"), strlen(at + strlen(",\"unique\":true")) + 1);
    assert_int_equal(push(text, false, &changes), RD_OK);
    assert_true(has_line(changes, "drop unique students.email"));
    json_decref(changes);
    free(text);
    assert_int_equal(
        quick(STORE_OP_CREATE, "students", "a", "{\"firstName\":\"A\",\"email\":\"x\"}"), RD_OK);
    assert_int_equal(
        quick(STORE_OP_CREATE, "students", "b", "{\"firstName\":\"B\",\"email\":\"x\"}"), RD_OK);
}

/* ---- record writes -------------------------------------------------------------------- */

static void test_store_create_applies_defaults(void **state)
{
    (void)state;
    store_write w;
    assert_int_equal(write_rec(STORE_OP_CREATE, "students", "s1", "{\"firstName\":\"Ada\"}", &w),
                     RD_OK);
    assert_json(w.rec.record.data,
                "{\"firstName\":\"Ada\",\"isActive\":true,\"status\":\"active\"}");
    assert_string_equal(w.rec.record.id, "s1");
    assert_string_equal(w.rec.record.group, "default");
    assert_string_equal(w.rec.record.created_by, "tester");
    assert_int_equal(w.rec.record.version, 1);
    assert_true(w.last_sync_id > 0);
    assert_int_equal(w.rec.record.sync_id, w.last_sync_id);
    assert_int_equal(w.ops, 1);
    assert_int_equal(strncmp(w.server_tx_id, "tx_", 3), 0);
    store_record_clear(&w.rec.record);
}

static void test_store_create_generates_id(void **state)
{
    (void)state;
    store_write w;
    assert_int_equal(write_rec(STORE_OP_CREATE, "courses", NULL, "{\"title\":\"Math\"}", &w),
                     RD_OK);
    assert_int_equal(strlen(w.rec.record.id), 20);
    char id[129];
    snprintf(id, sizeof id, "%s", w.rec.record.id);
    store_record_clear(&w.rec.record);
    assert_int_equal(write_rec(STORE_OP_CREATE, "courses", "", "{\"title\":\"Art\"}", &w), RD_OK);
    assert_string_not_equal(w.rec.record.id, id);
    store_record_clear(&w.rec.record);
    store_record rec;
    assert_int_equal(get("courses", id, &rec), RD_OK);
    store_record_clear(&rec);
}

static void test_store_create_rejects_bad_client_id(void **state)
{
    (void)state;
    char longid[200];
    memset(longid, 'a', 129);
    longid[129] = '\0';
    assert_int_equal(quick(STORE_OP_CREATE, "courses", "a b", "{\"title\":\"x\"}"),
                     RD_VALIDATION_FAILED);
    assert_string_equal(last.field, "id");
    assert_int_equal(quick(STORE_OP_CREATE, "courses", longid, "{\"title\":\"x\"}"),
                     RD_VALIDATION_FAILED);
    longid[128] = '\0';
    assert_int_equal(quick(STORE_OP_CREATE, "courses", longid, "{\"title\":\"x\"}"), RD_OK);
    assert_int_equal(quick(STORE_OP_CREATE, "courses", "A.z_0~:-", "{\"title\":\"x\"}"), RD_OK);
}

static void test_store_create_duplicate_id(void **state)
{
    (void)state;
    assert_int_equal(quick(STORE_OP_CREATE, "courses", "c1", "{\"title\":\"x\"}"), RD_OK);
    assert_int_equal(quick(STORE_OP_CREATE, "courses", "c1", "{\"title\":\"y\"}"),
                     RD_DUPLICATE_RECORD);
    assert_string_equal(last.field, "id");
}

static void test_store_create_unknown_model(void **state)
{
    (void)state;
    assert_int_equal(quick(STORE_OP_CREATE, "nope", NULL, "{}"), RD_NOT_FOUND);
    assert_msg("model 'nope' is not in the schema");
}

static void test_store_create_checks_data_in_the_writer(void **state)
{
    (void)state;
    assert_int_equal(quick(STORE_OP_CREATE, "students", NULL, "{\"age\":3}"), RD_VALIDATION_FAILED);
    assert_string_equal(last.field, "firstName");
    assert_int_equal(quick(STORE_OP_CREATE, "students", NULL, "{\"firstName\":\"A\",\"x\":1}"),
                     RD_UNKNOWN_FIELD);
    assert_int_equal(quick(STORE_OP_CREATE, "students", NULL, "{\"firstName\":\"A\",\"age\":200}"),
                     RD_VALIDATION_FAILED);
    assert_msg("age: 200 is above the maximum 150");
}

static void test_store_create_group(void **state)
{
    (void)state;
    store_write w;
    prep(&w, STORE_OP_CREATE, "courses", "c1", "{\"title\":\"x\"}");
    w.rec.group = "team-1";
    assert_int_equal(run_write(&w), RD_OK);
    assert_string_equal(w.rec.record.group, "team-1");
    store_record_clear(&w.rec.record);
    prep(&w, STORE_OP_CREATE, "courses", "c2", "{\"title\":\"x\"}");
    w.rec.group = "no spaces";
    assert_int_equal(run_write(&w), RD_VALIDATION_FAILED);
    assert_string_equal(last.field, "group");
}

static void test_store_timestamps_are_normalised(void **state)
{
    (void)state;
    store_write w;
    assert_int_equal(write_rec(STORE_OP_CREATE, "students", "s1",
                               "{\"firstName\":\"A\",\"enrolledAt\":\"2024-05-01T14:00:00+02:00\","
                               "\"age\":30.0,\"score\":2}",
                               &w),
                     RD_OK);
    assert_string_equal(json_string_value(json_object_get(w.rec.record.data, "enrolledAt")),
                        "2024-05-01T12:00:00Z");
    assert_true(json_is_integer(json_object_get(w.rec.record.data, "age")));
    assert_true(json_is_real(json_object_get(w.rec.record.data, "score")));
    store_record rec;
    assert_int_equal(get("students", "s1", &rec), RD_OK);
    assert_true(json_equal(rec.data, w.rec.record.data));
    store_record_clear(&rec);
    store_record_clear(&w.rec.record);
}

static void test_store_get_returns_record_and_read_at(void **state)
{
    (void)state;
    store_write w;
    store_record rec;
    int64_t read_at = 0;
    assert_int_equal(write_rec(STORE_OP_CREATE, "students", "s1",
                               "{\"firstName\":\"Ada\",\"profile\":{\"a\":[1,\"x\"]},"
                               "\"isActive\":false}",
                               &w),
                     RD_OK);
    assert_int_equal(quick(STORE_OP_CREATE, "courses", NULL, "{\"title\":\"x\"}"), RD_OK);
    assert_int_equal(get_org(ORG, "students", "s1", &rec, &read_at), RD_OK);
    assert_true(json_equal(rec.data, w.rec.record.data));
    assert_int_equal(rec.version, 1);
    assert_int_equal(rec.sync_id, w.last_sync_id);
    assert_int_equal(rec.created_at_us, w.rec.record.created_at_us);
    assert_string_equal(rec.group, "default");
    assert_int_equal(read_at, w.last_sync_id + 1);
    assert_int_equal(read_at, q_int("SELECT max(sync_id) FROM _rd_sync_log"));
    store_record_clear(&rec);
    store_record_clear(&w.rec.record);
}

static void test_store_get_not_found(void **state)
{
    (void)state;
    store_record rec;
    assert_int_equal(get("students", "ghost", &rec), RD_NOT_FOUND);
    assert_int_equal(get("nope", "x", &rec), RD_NOT_FOUND);
    assert_int_equal(get("students", "bad id!", &rec), RD_NOT_FOUND);
}

static void test_store_other_org_sees_nothing(void **state)
{
    (void)state;
    store_record rec;
    int64_t at;
    assert_int_equal(quick(STORE_OP_CREATE, "courses", "c1", "{\"title\":\"x\"}"), RD_OK);
    assert_int_equal(get_org("org_other", "courses", "c1", &rec, &at), RD_NOT_FOUND);
    assert_int_equal(push_org("org_other", schema_v1, false, NULL, NULL), RD_OK);
    assert_int_equal(get_org("org_other", "courses", "c1", &rec, &at), RD_NOT_FOUND);
    store_write w;
    prep(&w, STORE_OP_UPDATE, "courses", "c1", "{\"title\":\"y\"}");
    w.org = "org_other";
    assert_int_equal(run_write(&w), RD_NOT_FOUND);
}

static void test_store_update_merges_patch(void **state)
{
    (void)state;
    store_write w;
    assert_int_equal(quick(STORE_OP_CREATE, "students", "s1",
                           "{\"firstName\":\"Ada\",\"age\":20,\"lastName\":\"L\","
                           "\"profile\":{\"a\":1,\"b\":{\"c\":2},\"keep\":true}}"),
                     RD_OK);
    assert_int_equal(write_rec(STORE_OP_UPDATE, "students", "s1",
                               "{\"age\":null,\"status\":\"inactive\","
                               "\"profile\":{\"a\":null,\"b\":{\"d\":3}}}",
                               &w),
                     RD_OK);
    assert_json(w.rec.record.data, "{\"firstName\":\"Ada\",\"lastName\":\"L\",\"isActive\":true,"
                                   "\"status\":\"inactive\",\"profile\":{\"b\":{\"c\":2,\"d\":3},"
                                   "\"keep\":true}}");
    assert_int_equal(w.rec.record.version, 2);
    assert_string_equal(w.rec.record.updated_by, "tester");
    store_record rec;
    assert_int_equal(get("students", "s1", &rec), RD_OK);
    assert_true(json_equal(rec.data, w.rec.record.data));
    assert_int_equal(rec.version, 2);
    store_record_clear(&rec);
    store_record_clear(&w.rec.record);
}

static void test_store_update_json_non_object_replaces(void **state)
{
    (void)state;
    store_write w;
    assert_int_equal(
        quick(STORE_OP_CREATE, "students", "s1", "{\"firstName\":\"Ada\",\"profile\":{\"a\":1}}"),
        RD_OK);
    assert_int_equal(write_rec(STORE_OP_UPDATE, "students", "s1", "{\"profile\":[1,2]}", &w),
                     RD_OK);
    assert_json(json_object_get(w.rec.record.data, "profile"), "[1,2]");
    store_record_clear(&w.rec.record);
}

static void test_store_update_sets_per_field_sync_ids(void **state)
{
    (void)state;
    store_write c, u;
    assert_int_equal(
        write_rec(STORE_OP_CREATE, "students", "s1", "{\"firstName\":\"Ada\",\"age\":20}", &c),
        RD_OK);
    assert_int_equal(
        write_rec(STORE_OP_UPDATE, "students", "s1", "{\"age\":21,\"firstName\":\"Ada\"}", &u),
        RD_OK);
    assert_int_equal(q_int("SELECT _s_age FROM r_org_acme__students WHERE _id = 's1'"),
                     u.last_sync_id);
    assert_int_equal(q_int("SELECT \"_s_firstName\" FROM r_org_acme__students WHERE _id = 's1'"),
                     c.last_sync_id);
    assert_int_equal(q_int("SELECT _sync_id FROM r_org_acme__students WHERE _id = 's1'"),
                     u.last_sync_id);
    char *fields = q_text("SELECT fields FROM _rd_sync_log ORDER BY sync_id DESC LIMIT 1");
    assert_string_equal(fields, "[\"age\"]");
    free(fields);
    store_record_clear(&c.rec.record);
    store_record_clear(&u.rec.record);
}

static void test_store_update_clearing_required_field_refused(void **state)
{
    (void)state;
    store_record rec;
    assert_int_equal(quick(STORE_OP_CREATE, "students", "s1", "{\"firstName\":\"Ada\"}"), RD_OK);
    assert_int_equal(quick(STORE_OP_UPDATE, "students", "s1", "{\"firstName\":null}"),
                     RD_VALIDATION_FAILED);
    assert_string_equal(last.field, "firstName");
    assert_int_equal(get("students", "s1", &rec), RD_OK);
    assert_int_equal(rec.version, 1);
    store_record_clear(&rec);
}

static void test_store_update_without_changes_bumps_version(void **state)
{
    (void)state;
    store_write w;
    assert_int_equal(quick(STORE_OP_CREATE, "students", "s1", "{\"firstName\":\"Ada\"}"), RD_OK);
    assert_int_equal(write_rec(STORE_OP_UPDATE, "students", "s1", "{\"firstName\":\"Ada\"}", &w),
                     RD_OK);
    assert_int_equal(w.rec.record.version, 2);
    char *fields = q_text("SELECT fields FROM _rd_sync_log ORDER BY sync_id DESC LIMIT 1");
    assert_string_equal(fields, "[]");
    free(fields);
    store_record_clear(&w.rec.record);
}

static void test_store_update_immutable_field(void **state)
{
    (void)state;
    assert_int_equal(quick(STORE_OP_CREATE, "students", "s1", "{\"firstName\":\"Ada\"}"), RD_OK);
    /* unset: may be set once */
    assert_int_equal(
        quick(STORE_OP_UPDATE, "students", "s1", "{\"enrolledAt\":\"2024-01-01T00:00:00Z\"}"),
        RD_OK);
    assert_int_equal(
        quick(STORE_OP_UPDATE, "students", "s1", "{\"enrolledAt\":\"2024-01-01T00:00:00+00:00\"}"),
        RD_OK);
    assert_int_equal(
        quick(STORE_OP_UPDATE, "students", "s1", "{\"enrolledAt\":\"2025-01-01T00:00:00Z\"}"),
        RD_VALIDATION_FAILED);
    assert_string_equal(last.field, "enrolledAt");
    assert_msg("immutable");
}

static void test_store_replace_resets_omitted_fields(void **state)
{
    (void)state;
    store_write c, w;
    prep(&c, STORE_OP_CREATE, "students", "s1",
         "{\"firstName\":\"Ada\",\"age\":5,\"status\":\"inactive\",\"isActive\":false,"
         "\"profile\":{\"x\":1}}");
    c.rec.group = "g1";
    assert_int_equal(run_write(&c), RD_OK);
    assert_int_equal(write_rec(STORE_OP_REPLACE, "students", "s1", "{\"firstName\":\"Bea\"}", &w),
                     RD_OK);
    assert_json(w.rec.record.data,
                "{\"firstName\":\"Bea\",\"isActive\":true,\"status\":\"active\"}");
    assert_int_equal(w.rec.record.version, 2);
    assert_string_equal(w.rec.record.group, "g1");
    assert_int_equal(w.rec.record.created_at_us, c.rec.record.created_at_us);
    assert_string_equal(w.rec.record.id, "s1");
    store_record rec;
    assert_int_equal(get("students", "s1", &rec), RD_OK);
    assert_true(json_equal(rec.data, w.rec.record.data));
    store_record_clear(&rec);
    store_record_clear(&c.rec.record);
    store_record_clear(&w.rec.record);
}

static void test_store_replace_requires_required_fields(void **state)
{
    (void)state;
    assert_int_equal(quick(STORE_OP_CREATE, "students", "s1", "{\"firstName\":\"Ada\"}"), RD_OK);
    assert_int_equal(quick(STORE_OP_REPLACE, "students", "s1", "{\"age\":3}"),
                     RD_VALIDATION_FAILED);
    assert_string_equal(last.field, "firstName");
}

static void test_store_delete_returns_before_image(void **state)
{
    (void)state;
    store_write w;
    store_record rec;
    assert_int_equal(quick(STORE_OP_CREATE, "courses", "c1", "{\"title\":\"Math\"}"), RD_OK);
    assert_int_equal(write_rec(STORE_OP_DELETE, "courses", "c1", NULL, &w), RD_OK);
    assert_json(w.rec.record.data, "{\"title\":\"Math\"}");
    assert_string_equal(w.rec.record.id, "c1");
    assert_int_equal(w.ops, 1);
    assert_int_equal(get("courses", "c1", &rec), RD_NOT_FOUND);
    char *op = q_text("SELECT op || ' ' || fields FROM _rd_sync_log ORDER BY sync_id DESC LIMIT 1");
    assert_string_equal(op, "DELETE [\"title\"]");
    free(op);
    store_record_clear(&w.rec.record);
    assert_int_equal(quick(STORE_OP_DELETE, "courses", "c1", NULL), RD_NOT_FOUND);
}

static void test_store_write_to_missing_record_not_found(void **state)
{
    (void)state;
    assert_int_equal(quick(STORE_OP_UPDATE, "courses", "ghost", "{\"title\":\"x\"}"), RD_NOT_FOUND);
    assert_int_equal(quick(STORE_OP_REPLACE, "courses", "ghost", "{\"title\":\"x\"}"),
                     RD_NOT_FOUND);
    assert_int_equal(quick(STORE_OP_DELETE, "courses", "ghost", NULL), RD_NOT_FOUND);
    assert_int_equal(quick(STORE_OP_UPDATE, "nope", "ghost", "{}"), RD_NOT_FOUND);
}

static void test_store_unique_single_field(void **state)
{
    (void)state;
    assert_int_equal(
        quick(STORE_OP_CREATE, "students", "a", "{\"firstName\":\"A\",\"email\":\"x@y\"}"), RD_OK);
    assert_int_equal(
        quick(STORE_OP_CREATE, "students", "b", "{\"firstName\":\"B\",\"email\":\"x@y\"}"),
        RD_DUPLICATE_RECORD);
    assert_string_equal(last.field, "email");
    assert_msg("email");
    assert_int_equal(
        quick(STORE_OP_CREATE, "students", "b", "{\"firstName\":\"B\",\"email\":\"z@y\"}"), RD_OK);
    assert_int_equal(quick(STORE_OP_UPDATE, "students", "b", "{\"email\":\"x@y\"}"),
                     RD_DUPLICATE_RECORD);
    assert_string_equal(last.field, "email");
}

static void test_store_unique_composite(void **state)
{
    (void)state;
    assert_int_equal(
        quick(STORE_OP_CREATE, "students", "a", "{\"firstName\":\"A\",\"lastName\":\"L\"}"), RD_OK);
    assert_int_equal(
        quick(STORE_OP_CREATE, "students", "b", "{\"firstName\":\"A\",\"lastName\":\"M\"}"), RD_OK);
    assert_int_equal(
        quick(STORE_OP_CREATE, "students", "c", "{\"firstName\":\"A\",\"lastName\":\"L\"}"),
        RD_DUPLICATE_RECORD);
    assert_string_equal(last.field, "firstName,lastName");
}

static void test_store_version_conflict(void **state)
{
    (void)state;
    store_write w;
    assert_int_equal(quick(STORE_OP_CREATE, "courses", "c1", "{\"title\":\"x\"}"), RD_OK);
    prep(&w, STORE_OP_UPDATE, "courses", "c1", "{\"title\":\"y\"}");
    w.rec.has_expected_version = true;
    w.rec.expected_version = 5;
    assert_int_equal(run_write(&w), RD_VERSION_CONFLICT);
    assert_msg("at version 1");
    assert_int_equal(w.last_sync_id, 0);
    prep(&w, STORE_OP_DELETE, "courses", "c1", NULL);
    w.rec.has_expected_version = true;
    w.rec.expected_version = 2;
    assert_int_equal(run_write(&w), RD_VERSION_CONFLICT);
    prep(&w, STORE_OP_UPDATE, "courses", "c1", "{\"title\":\"y\"}");
    w.rec.has_expected_version = true;
    w.rec.expected_version = 1;
    assert_int_equal(run_write(&w), RD_OK);
    assert_int_equal(w.rec.record.version, 2);
    store_record_clear(&w.rec.record);
}

/* Updates touching 100 different field sets need more statements than the
 * write connection's cache holds: evicted statements are finalized and
 * re-prepared without changing results. */
static void test_store_statement_cache_eviction(void **state)
{
    (void)state;
    static const char *const names[] = {"lastName", "email",  "age",     "score",
                                        "profile",  "status", "isActive"};
    json_t *want = json_pack("{s:s}", "firstName", "Ada");
    store_record rec;
    assert_int_equal(quick(STORE_OP_CREATE, "students", "s1", "{\"firstName\":\"Ada\"}"), RD_OK);
    json_object_set_new(want, "isActive", json_true());
    json_object_set_new(want, "status", json_string("active"));
    for (int mask = 1; mask <= 100; mask++) {
        json_t *patch = json_object();
        for (int b = 0; b < 7; b++) {
            if (!(mask & (1 << b)))
                continue;
            json_t *v;
            char text[32];
            snprintf(text, sizeof text, "v%d", mask);
            switch (b) {
            case 2:
                v = json_integer(mask);
                break;
            case 3:
                v = json_real(mask + 0.5);
                break;
            case 4:
                v = json_pack("{s:i}", "m", mask);
                break;
            case 5:
                v = json_string(mask % 2 ? "inactive" : "active");
                break;
            case 6:
                v = json_boolean(mask % 2);
                break;
            default:
                v = json_string(text);
                break;
            }
            json_object_set(patch, names[b], v);
            json_object_set_new(want, names[b], v);
        }
        store_write w;
        memset(&w, 0, sizeof w);
        w.op = STORE_OP_UPDATE;
        w.org = ORG;
        w.actor = "tester";
        w.rec.model = "students";
        w.rec.id = "s1";
        w.rec.data = patch;
        assert_int_equal(run_write(&w), RD_OK);
        store_record_clear(&w.rec.record);
    }
    assert_int_equal(get("students", "s1", &rec), RD_OK);
    if (!json_equal(rec.data, want)) {
        char *g = json_dumps(rec.data, JSON_SORT_KEYS), *x = json_dumps(want, JSON_SORT_KEYS);
        fprintf(stderr, "got  %s\nwant %s\n", g, x);
        fail();
    }
    assert_int_equal(rec.version, 101);
    store_record_clear(&rec);
    json_decref(want);
}

/* ---- sync ids, batching, durability ------------------------------------------------- */

static void test_store_sync_ids_increase_without_gaps(void **state)
{
    (void)state;
    int64_t base = q_int("SELECT coalesce(max(sync_id), 0) FROM _rd_sync_log");
    store_write w;
    int64_t ids[4];
    assert_int_equal(write_rec(STORE_OP_CREATE, "courses", "c1", "{\"title\":\"a\"}", &w), RD_OK);
    ids[0] = w.last_sync_id;
    store_record_clear(&w.rec.record);
    assert_int_equal(quick(STORE_OP_CREATE, "courses", "c1", "{\"title\":\"dup\"}"),
                     RD_DUPLICATE_RECORD);
    assert_int_equal(write_rec(STORE_OP_UPDATE, "courses", "c1", "{\"title\":\"b\"}", &w), RD_OK);
    ids[1] = w.last_sync_id;
    store_record_clear(&w.rec.record);
    assert_int_equal(write_rec(STORE_OP_REPLACE, "courses", "c1", "{\"title\":\"c\"}", &w), RD_OK);
    ids[2] = w.last_sync_id;
    store_record_clear(&w.rec.record);
    assert_int_equal(write_rec(STORE_OP_DELETE, "courses", "c1", NULL, &w), RD_OK);
    ids[3] = w.last_sync_id;
    store_record_clear(&w.rec.record);
    for (int i = 0; i < 4; i++)
        assert_int_equal(ids[i], base + 1 + i);
    char *ops = q_text("SELECT group_concat(op, ',') FROM (SELECT op FROM _rd_sync_log"
                       " WHERE record_id = 'c1' ORDER BY sync_id)");
    assert_string_equal(ops, "CREATE,UPDATE,REPLACE,DELETE");
    free(ops);
    char *row = q_text("SELECT org || '|' || model || '|' || actor || '|' || grp || '|' || fields"
                       " FROM _rd_sync_log WHERE op = 'CREATE' AND record_id = 'c1'");
    assert_string_equal(row, "org_acme|courses|tester|default|[\"title\"]");
    free(row);
    assert_int_equal(q_int("SELECT count(DISTINCT server_tx_id) FROM _rd_sync_log"),
                     q_int("SELECT count(*) FROM _rd_sync_log"));
}

typedef struct thread_arg {
    int index;
    int failures;
    int64_t ids[50];
} thread_arg;

static void *writer_thread(void *p)
{
    thread_arg *a = p;
    store_conn *c = NULL;
    rd_err err;
    if (store_conn_open(fx->s, &c, &err) != RD_OK) {
        a->failures = 50;
        return NULL;
    }
    for (int i = 0; i < 50; i++) {
        char id[32];
        store_write w;
        memset(&w, 0, sizeof w);
        snprintf(id, sizeof id, "t%d-%d", a->index, i);
        w.op = STORE_OP_CREATE;
        w.org = ORG;
        w.actor = "tester";
        w.rec.model = "courses";
        w.rec.id = id;
        w.rec.data = json_pack("{s:s}", "title", id);
        if (store_submit_wait(fx->s, &w) != RD_OK)
            a->failures++;
        a->ids[i] = w.last_sync_id;
        store_record_clear(&w.rec.record);
        json_decref(w.rec.data);
        store_record rec;
        int64_t at = 0;
        if (store_get(c, ORG, "courses", id, &rec, &at, &err) != RD_OK || at < a->ids[i])
            a->failures++;
        store_record_clear(&rec);
    }
    store_conn_close(c);
    return NULL;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static void test_store_concurrent_writes_from_8_threads(void **state)
{
    (void)state;
    pthread_t th[8];
    thread_arg args[8];
    int64_t base = q_int("SELECT coalesce(max(sync_id), 0) FROM _rd_sync_log");
    for (int i = 0; i < 8; i++) {
        memset(&args[i], 0, sizeof args[i]);
        args[i].index = i;
        assert_int_equal(pthread_create(&th[i], NULL, writer_thread, &args[i]), 0);
    }
    for (int i = 0; i < 8; i++)
        pthread_join(th[i], NULL);
    int64_t all[400];
    for (int i = 0; i < 8; i++) {
        assert_int_equal(args[i].failures, 0);
        memcpy(&all[i * 50], args[i].ids, sizeof args[i].ids);
    }
    qsort(all, 400, sizeof all[0], cmp_i64);
    for (int i = 0; i < 400; i++)
        assert_int_equal(all[i], base + 1 + i); /* distinct and gap-free */
    assert_int_equal(q_int("SELECT count(*) FROM r_org_acme__courses"), 400);
}

typedef struct async_state {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int pending;
} async_state;

static void async_done(store_write *w)
{
    async_state *as = w->ctx;
    pthread_mutex_lock(&as->mu);
    as->pending--;
    pthread_cond_signal(&as->cv);
    pthread_mutex_unlock(&as->mu);
}

/* Writes queued while the database is locked by another connection commit
 * together; the failing one is rolled back to its savepoint alone. */
static void test_store_failing_write_does_not_affect_its_batch(void **state)
{
    (void)state;
    async_state as = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 4};
    store_write w[4];
    const char *ids[4] = {"a", "b", "a", "c"};
    sqlite3 *other = NULL;
    int64_t base = q_int("SELECT coalesce(max(sync_id), 0) FROM _rd_sync_log");
    assert_int_equal(sqlite3_open(fx->path, &other), SQLITE_OK);
    assert_int_equal(sqlite3_exec(other, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);
    for (int i = 0; i < 4; i++) {
        prep(&w[i], STORE_OP_CREATE, "courses", ids[i], "{\"title\":\"t\"}");
        w[i].done = async_done;
        w[i].ctx = &as;
        store_submit(fx->s, &w[i]);
    }
    usleep(20000);
    assert_int_equal(sqlite3_exec(other, "COMMIT", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(other);
    pthread_mutex_lock(&as.mu);
    while (as.pending > 0)
        pthread_cond_wait(&as.cv, &as.mu);
    pthread_mutex_unlock(&as.mu);
    assert_int_equal(w[0].err.code, RD_OK);
    assert_int_equal(w[1].err.code, RD_OK);
    assert_int_equal(w[2].err.code, RD_DUPLICATE_RECORD);
    assert_int_equal(w[3].err.code, RD_OK);
    assert_int_equal(w[0].last_sync_id, base + 1);
    assert_int_equal(w[1].last_sync_id, base + 2);
    assert_int_equal(w[2].last_sync_id, 0);
    assert_null(w[2].rec.record.data);
    assert_int_equal(w[3].last_sync_id, base + 3);
    for (int i = 0; i < 4; i++) {
        store_record_clear(&w[i].rec.record);
        json_decref(w[i].rec.data);
    }
}

static void test_store_deadline_passed_is_not_applied(void **state)
{
    (void)state;
    store_write w;
    store_record rec;
    prep(&w, STORE_OP_CREATE, "courses", "late", "{\"title\":\"x\"}");
    w.deadline_us = rd_now_us() - 1;
    assert_int_equal(run_write(&w), RD_DEADLINE_EXCEEDED);
    assert_int_equal(w.last_sync_id, 0);
    assert_int_equal(get("courses", "late", &rec), RD_NOT_FOUND);
    prep(&w, STORE_OP_CREATE, "courses", "ontime", "{\"title\":\"x\"}");
    w.deadline_us = rd_now_us() + 10 * 1000000;
    assert_int_equal(run_write(&w), RD_OK);
    store_record_clear(&w.rec.record);
}

static void test_store_reopen_reads_back(void **state)
{
    (void)state;
    store_write w;
    store_record rec;
    assert_int_equal(write_rec(STORE_OP_CREATE, "students", "s1",
                               "{\"firstName\":\"Ada\",\"profile\":{\"k\":[1,2]},"
                               "\"enrolledAt\":\"2024-05-01T12:00:00.5Z\"}",
                               &w),
                     RD_OK);
    int64_t sid = w.last_sync_id;
    store_close(fx->s);
    fx->s = NULL;
    open_store(false);
    store_schema *s = store_schema_get(fx->s, ORG);
    assert_int_equal(s->revision, 1);
    assert_non_null(store_schema_model(s, "students"));
    store_schema_release(s);
    assert_int_equal(get("students", "s1", &rec), RD_OK);
    assert_true(json_equal(rec.data, w.rec.record.data));
    assert_string_equal(json_string_value(json_object_get(rec.data, "enrolledAt")),
                        "2024-05-01T12:00:00.500Z");
    store_record_clear(&rec);
    store_record_clear(&w.rec.record);
    assert_int_equal(write_rec(STORE_OP_UPDATE, "students", "s1", "{\"age\":1}", &w), RD_OK);
    assert_int_equal(w.last_sync_id, sid + 1);
    store_record_clear(&w.rec.record);
    assert_int_equal(push(schema_v1, false, NULL), RD_OK); /* still identical */
}

/* store_get_many: one `_id IN (64 slots)` statement per 64 ids whatever
 * their number (no query per id), missing and invalid ids simply absent;
 * inside store_read_hold every read sees the held snapshot and read_at. */
static void test_store_get_many_batches_and_holds_snapshot(void **state)
{
    (void)state;
    enum { N = 150 };
    char ids[N + 2][16];
    const char *idp[N + 2];
    for (int i = 0; i < N; i++) {
        snprintf(ids[i], sizeof ids[i], "c%d", i);
        char data[64];
        snprintf(data, sizeof data, "{\"title\":\"t%d\"}", i);
        assert_int_equal(quick(STORE_OP_CREATE, "courses", ids[i], data), RD_OK);
    }
    snprintf(ids[N], sizeof ids[N], "ghost");
    snprintf(ids[N + 1], sizeof ids[N + 1], "bad id!");
    for (int i = 0; i < N + 2; i++)
        idp[i] = ids[i];
    store_schema *sch = store_schema_get(fx->s, ORG);
    const store_model *m = store_schema_model(sch, "courses");
    assert_non_null(m);
    store_conn *c = NULL;
    rd_err err;
    assert_int_equal(store_conn_open(fx->s, &c, &err), RD_OK);
    store_record *out = calloc(N + 2, sizeof *out);
    size_t n = 0;
    int64_t at = 0;
    uint64_t q0 = store_conn_get_many_queries(c);
    assert_int_equal(store_get_many(c, ORG, m, idp, N + 2, out, &n, &at, &err), RD_OK);
    assert_int_equal(store_conn_get_many_queries(c) - q0, 3); /* ceil(152 / 64) */
    assert_int_equal(n, N);
    bool seen[N] = {0};
    for (size_t i = 0; i < n; i++) {
        int k = atoi(out[i].id + 1);
        assert_true(k >= 0 && k < N && !seen[k]);
        seen[k] = true;
        char title[16];
        snprintf(title, sizeof title, "t%d", k);
        assert_string_equal(json_string_value(json_object_get(out[i].data, "title")), title);
        store_record_clear(&out[i]);
    }
    assert_int_equal(at, q_int("SELECT max(sync_id) FROM _rd_sync_log"));

    /* a hold: a record created after it is invisible to every read on c */
    int64_t held = 0, at2 = 0;
    assert_int_equal(store_read_hold(c, ORG, &held, &err), RD_OK);
    assert_int_equal(held, at);
    assert_int_equal(store_read_hold(c, ORG, NULL, &err), RD_INTERNAL);
    assert_int_equal(quick(STORE_OP_CREATE, "courses", "late", "{\"title\":\"late\"}"), RD_OK);
    const char *two[] = {"late", "c0"};
    assert_int_equal(store_get_many(c, ORG, m, two, 2, out, &n, &at2, &err), RD_OK);
    assert_int_equal(n, 1);
    assert_string_equal(out[0].id, "c0");
    assert_int_equal(at2, held);
    store_record_clear(&out[0]);
    store_record rec;
    assert_int_equal(store_get(c, ORG, "courses", "late", &rec, &at2, &err), RD_NOT_FOUND);
    assert_int_equal(store_get(c, ORG, "courses", "c1", &rec, &at2, &err), RD_OK);
    assert_int_equal(at2, held);
    store_record_clear(&rec);
    store_read_release(c);
    store_read_release(c); /* nothing held: nothing to do */
    assert_int_equal(store_get_many(c, ORG, m, two, 2, out, &n, &at2, &err), RD_OK);
    assert_int_equal(n, 2);
    assert_true(at2 > held);
    for (size_t i = 0; i < n; i++)
        store_record_clear(&out[i]);
    free(out);
    store_conn_close(c);
    store_schema_release(sch);
}

int main(void)
{
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_store_push_creates_models_and_tables),
        T(test_store_push_reports_changes),
        T(test_store_push_identical_schema_is_noop),
        T(test_store_push_invalid_schema_changes_nothing),
        T(test_store_schema_get_unknown_org_is_empty),
        T(test_store_push_add_field_with_default_backfills),
        T(test_store_push_add_required_field_without_default_refused),
        T(test_store_push_drop_field_refused_then_forced),
        T(test_store_push_drop_model_refused_then_forced),
        T(test_store_push_type_change_forced_clears_values),
        T(test_store_push_unique_over_duplicates_refused),
        T(test_store_push_unique_removed_drops_index),
        T(test_store_create_applies_defaults),
        T(test_store_create_generates_id),
        T(test_store_create_rejects_bad_client_id),
        T(test_store_create_duplicate_id),
        T(test_store_create_unknown_model),
        T(test_store_create_checks_data_in_the_writer),
        T(test_store_create_group),
        T(test_store_thread_conn_is_one_per_thread_and_store),
        T(test_store_faults_fail_whole_writes_and_leave_nothing),
        T(test_store_cascade_faults_undo_the_whole_delete),
        T(test_store_cascade_is_bounded),
        T(test_store_timestamps_are_normalised),
        T(test_store_get_returns_record_and_read_at),
        T(test_store_get_not_found),
        T(test_store_get_many_batches_and_holds_snapshot),
        T(test_store_other_org_sees_nothing),
        T(test_store_update_merges_patch),
        T(test_store_update_json_non_object_replaces),
        T(test_store_update_sets_per_field_sync_ids),
        T(test_store_update_clearing_required_field_refused),
        T(test_store_update_without_changes_bumps_version),
        T(test_store_update_immutable_field),
        T(test_store_replace_resets_omitted_fields),
        T(test_store_replace_requires_required_fields),
        T(test_store_delete_returns_before_image),
        T(test_store_write_to_missing_record_not_found),
        T(test_store_unique_single_field),
        T(test_store_unique_composite),
        T(test_store_version_conflict),
        T(test_store_statement_cache_eviction),
        T(test_store_sync_ids_increase_without_gaps),
        T(test_store_concurrent_writes_from_8_threads),
        T(test_store_failing_write_does_not_affect_its_batch),
        T(test_store_deadline_passed_is_not_applied),
        T(test_store_reopen_reads_back),
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL);
}
