/* Tests for the change feed's store API (store/changes.c) against a real
 * SQLite file: the values each log row keeps, tombstones, organisation
 * scoping across interleaved sync ids, the model and group filters, the
 * cursor (scanned_to) over full and partial pages and past filtered rows,
 * the log's bounds, and the commit hook. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <sqlite3.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "store/store_int.h"

#define ORG "org_acme"
#define OTHER "org_other"

typedef struct fixture {
    char dir[64];
    char path[128];
    store *s;
    store_conn *c;
} fixture;

static fixture *fx;

static char *dupe(const char *s)
{
    char *p = strdup(s);
    assert_non_null(p);
    return p;
}

/* items {a STRING, n INTEGER} */
static store_schema *items_schema(void)
{
    store_schema *s = store_schema_new();
    s->models = calloc(1, sizeof *s->models);
    s->n_models = 1;
    store_model *m = &s->models[0];
    m->name = dupe("items");
    m->fields = calloc(2, sizeof *m->fields);
    m->n_fields = 2;
    m->fields[0] = (store_field){.name = dupe("a"), .type = STORE_T_STRING};
    m->fields[1] = (store_field){.name = dupe("n"), .type = STORE_T_INTEGER};
    return s;
}

static void push(const char *org)
{
    store_write w = {.op = STORE_OP_PUSH_SCHEMA, .org = org, .actor = "admin"};
    w.push.schema = items_schema();
    assert_int_equal(store_submit_wait(fx->s, &w), RD_OK);
    store_schema_release(w.push.schema);
    json_decref(w.push.changes);
}

static int setup(void **state)
{
    (void)state;
    fx = calloc(1, sizeof *fx);
    snprintf(fx->dir, sizeof fx->dir, "/tmp/rd-chg-XXXXXX");
    assert_non_null(mkdtemp(fx->dir));
    snprintf(fx->path, sizeof fx->path, "%s/r.db", fx->dir);
    store_options o = {.path = fx->path, .sync_normal = true};
    rd_err err;
    assert_int_equal(store_open(&o, &fx->s, &err), RD_OK);
    push(ORG);
    push(OTHER);
    assert_int_equal(store_conn_open(fx->s, &fx->c, &err), RD_OK);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[160];
    store_on_commit(fx->s, NULL, NULL);
    store_conn_close(fx->c);
    store_close(fx->s);
    snprintf(cmd, sizeof cmd, "rm -rf %s", fx->dir);
    assert_int_equal(system(cmd), 0);
    free(fx);
    return 0;
}

/* One record write (data JSON text, NULL for delete); returns its sync id. */
static int64_t write_one(const char *org, store_op op, const char *id, const char *group,
                         const char *data)
{
    store_write w = {.op = op, .org = org, .actor = "alice", .rec.model = "items", .rec.id = id};
    w.rec.group = group;
    w.rec.data = data ? json_loads(data, 0, NULL) : NULL;
    assert_int_equal(store_submit_wait(fx->s, &w), RD_OK);
    int64_t sid = w.last_sync_id;
    json_decref(w.rec.data);
    store_record_clear(&w.rec.record);
    return sid;
}

static void assert_json(const json_t *v, const char *text)
{
    json_t *want = json_loads(text, 0, NULL);
    assert_non_null(want);
    if (!json_equal(v, want)) {
        char *got = json_dumps(v, JSON_COMPACT | JSON_SORT_KEYS);
        fail_msg("got %s, want %s", got, text);
    }
    json_decref(want);
}

static void test_rows_keep_written_values_and_deletes_are_tombstones(void **state)
{
    (void)state;
    int64_t s1 = write_one(ORG, STORE_OP_CREATE, "x", "", "{\"a\":\"a0\",\"n\":1}");
    write_one(ORG, STORE_OP_UPDATE, "x", NULL, "{\"n\":2}");
    write_one(ORG, STORE_OP_UPDATE, "x", NULL, "{\"a\":null}");
    int64_t s4 = write_one(ORG, STORE_OP_DELETE, "x", NULL, NULL);
    store_changes_query q = {.org = ORG, .after = 0, .limit = 10};
    store_change *ev = NULL;
    size_t n = 0;
    int64_t to = -1;
    rd_err err;
    assert_int_equal(store_changes_read(fx->c, &q, &ev, &n, &to, &err), RD_OK);
    assert_int_equal(n, 4);
    assert_int_equal(to, s4);
    assert_int_equal(ev[0].sync_id, s1);
    assert_int_equal(ev[0].op, STORE_OP_CREATE);
    assert_string_equal(ev[0].group, "default");
    assert_string_equal(ev[0].actor, "alice");
    assert_json(ev[0].data, "{\"a\":\"a0\",\"n\":1}");
    assert_int_equal(ev[1].op, STORE_OP_UPDATE);
    assert_json(ev[1].fields, "[\"n\"]");
    assert_json(ev[1].data, "{\"n\":2}"); /* the value then, not the current one */
    assert_json(ev[2].data, "{\"a\":null}");
    assert_int_equal(ev[3].op, STORE_OP_DELETE);
    assert_json(ev[3].fields, "[\"a\",\"n\"]");
    assert_json(ev[3].data, "{}");
    for (size_t i = 1; i < n; i++)
        assert_true(ev[i].sync_id == ev[i - 1].sync_id + 1);
    store_changes_free(ev, n);
}

static void test_org_scope_filters_and_cursor(void **state)
{
    (void)state;
    int64_t a1 = write_one(ORG, STORE_OP_CREATE, "a1", "g1", "{\"n\":1}");
    write_one(OTHER, STORE_OP_CREATE, "o1", "g1", "{\"n\":1}");
    int64_t a2 = write_one(ORG, STORE_OP_CREATE, "a2", "g2", "{\"n\":2}");
    int64_t a3 = write_one(ORG, STORE_OP_CREATE, "a3", "g1", "{\"n\":3}");
    int64_t o2 = write_one(OTHER, STORE_OP_CREATE, "o2", "g1", "{\"n\":2}");
    /* sync ids are per organisation: each counts its own writes, gap-free */
    assert_int_equal(a1, 1);
    assert_int_equal(a2, 2);
    assert_int_equal(a3, 3);
    assert_int_equal(o2, 2);
    store_change *ev = NULL;
    size_t n = 0;
    int64_t to = 0;
    rd_err err;

    /* a full page ends at its last row */
    store_changes_query q = {.org = ORG, .after = 0, .limit = 2};
    assert_int_equal(store_changes_read(fx->c, &q, &ev, &n, &to, &err), RD_OK);
    assert_int_equal(n, 2);
    assert_int_equal(ev[0].sync_id, a1);
    assert_int_equal(ev[1].sync_id, a2);
    assert_int_equal(to, a2);
    store_changes_free(ev, n);

    /* a partial page ends at the organisation's head */
    q.after = to;
    assert_int_equal(store_changes_read(fx->c, &q, &ev, &n, &to, &err), RD_OK);
    assert_int_equal(n, 1);
    assert_int_equal(ev[0].sync_id, a3);
    assert_int_equal(to, a3);
    store_changes_free(ev, n);

    /* nothing new: the cursor stays */
    q.after = to;
    assert_int_equal(store_changes_read(fx->c, &q, &ev, &n, &to, &err), RD_OK);
    assert_int_equal(n, 0);
    assert_null(ev);
    assert_int_equal(to, a3);

    /* group filter; upto bounds the read */
    const char *g1[] = {"g1"};
    store_changes_query g = {
        .org = ORG, .after = 0, .upto = a3 - 1, .groups = g1, .n_groups = 1, .limit = 10};
    assert_int_equal(store_changes_read(fx->c, &g, &ev, &n, &to, &err), RD_OK);
    assert_int_equal(n, 1);
    assert_string_equal(ev[0].id, "a1");
    assert_int_equal(to, a3 - 1);
    store_changes_free(ev, n);

    /* model filter */
    const char *none[] = {"nope"};
    store_changes_query m = {.org = ORG, .after = 0, .models = none, .n_models = 1, .limit = 10};
    assert_int_equal(store_changes_read(fx->c, &m, &ev, &n, &to, &err), RD_OK);
    assert_int_equal(n, 0);
    assert_int_equal(to, a3);

    /* bounds */
    int64_t oldest = 0, head = 0;
    assert_int_equal(store_changes_bounds(fx->c, ORG, &oldest, &head, &err), RD_OK);
    assert_int_equal(oldest, a1);
    assert_int_equal(head, a3);
    assert_int_equal(store_changes_bounds(fx->c, OTHER, &oldest, &head, &err), RD_OK);
    assert_int_equal(head, o2);

    /* a bad limit is refused */
    q.limit = 0;
    assert_int_equal(store_changes_read(fx->c, &q, &ev, &n, &to, &err), RD_INTERNAL);
}

static int64_t hooked;

static void hook(void *arg, int64_t last)
{
    (void)arg;
    hooked = last;
}

static void test_commit_hook_sees_each_new_commit(void **state)
{
    (void)state;
    rd_err err;
    int64_t oldest = 0, head = 0;
    assert_int_equal(store_changes_bounds(fx->c, ORG, &oldest, &head, &err), RD_OK);
    assert_int_equal(head, 0);
    assert_int_equal(oldest, 1); /* nothing held: head + 1 */
    hooked = 0;
    store_on_commit(fx->s, hook, NULL);
    write_one(ORG, STORE_OP_CREATE, "h", "", "{\"n\":1}");
    int64_t g1 = hooked;
    assert_true(g1 > 0);
    write_one(OTHER, STORE_OP_CREATE, "h", "", "{\"n\":1}");
    assert_true(hooked > g1); /* any organisation's commit wakes the feed */
    int64_t g2 = hooked;
    store_on_commit(fx->s, NULL, NULL);
    write_one(ORG, STORE_OP_UPDATE, "h", NULL, "{\"n\":2}");
    assert_int_equal(hooked, g2);
}

/* The feed reads one organisation's rows by an index, not by scanning every
 * organisation's log. */
static void test_feed_query_uses_the_org_index(void **state)
{
    (void)state;
    sqlite3_stmt *st = NULL;
    assert_int_equal(
        sqlite3_prepare_v2(store_sqlite_handle(fx->c->db),
                           "EXPLAIN QUERY PLAN SELECT sync_id, server_tx_id, model, record_id, op,"
                           " fields, actor, grp, committed_at, data FROM _rd_sync_log"
                           " WHERE sync_id > ?1 AND sync_id <= ?2 AND org = ?3 ORDER BY sync_id",
                           -1, &st, NULL),
        SQLITE_OK);
    bool indexed = false;
    while (sqlite3_step(st) == SQLITE_ROW) {
        const char *detail = (const char *)sqlite3_column_text(st, 3);
        if (detail != NULL && strstr(detail, "_rd_sync_log_by_org") != NULL)
            indexed = true;
    }
    sqlite3_finalize(st);
    assert_true(indexed);
}

static void sql_on(const char *path, const char *sql)
{
    sqlite3 *db = NULL;
    char *msg = NULL;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK)
        fail_msg("%s: %s", sql, msg);
    sqlite3_close(db);
}

/* A database of layout 1 (one global sync id sequence: ORG wrote 1, 3 and 5,
 * OTHER 2 and 4) opened by this code: the log is rebuilt, old rows keep
 * their ids, and every organisation continues after the old global maximum,
 * so ids keep increasing for each and none is reused. */
static void test_layout_1_migrates_to_per_organisation_sync_ids(void **state)
{
    (void)state;
    rd_err err;
    store_conn_close(fx->c);
    store_close(fx->s);
    sql_on(fx->path,
           "DROP TABLE _rd_sync_log; DROP TABLE _rd_org_seq;"
           "CREATE TABLE _rd_sync_log (sync_id INTEGER PRIMARY KEY, server_tx_id TEXT NOT NULL,"
           " org TEXT NOT NULL, model TEXT NOT NULL, record_id TEXT NOT NULL, op TEXT NOT NULL,"
           " fields TEXT NOT NULL, actor TEXT NOT NULL, grp TEXT NOT NULL,"
           " committed_at INTEGER NOT NULL, data TEXT);"
           "INSERT INTO _rd_sync_log VALUES "
           "(1,'tx1','org_acme','items','x1','CREATE','[]','a','g',1,'{}'),"
           " (2,'tx2','org_other','items','y1','CREATE','[]','a','g',2,'{}'),"
           " (3,'tx3','org_acme','items','x2','CREATE','[]','a','g',3,'{}'),"
           " (4,'tx4','org_other','items','y2','CREATE','[]','a','g',4,'{}'),"
           " (5,'tx5','org_acme','items','x3','CREATE','[]','a','g',5,'{}');"
           "PRAGMA user_version = 1;");
    store_options o = {.path = fx->path, .sync_normal = true};
    assert_int_equal(store_open(&o, &fx->s, &err), RD_OK);
    assert_int_equal(store_conn_open(fx->s, &fx->c, &err), RD_OK);
    int64_t oldest = 0, head = 0;
    assert_int_equal(store_changes_bounds(fx->c, ORG, &oldest, &head, &err), RD_OK);
    assert_int_equal(oldest, 1);
    assert_int_equal(head, 5);
    assert_int_equal(write_one(ORG, STORE_OP_CREATE, "n1", "", "{\"n\":1}"), 6);
    assert_int_equal(write_one(OTHER, STORE_OP_CREATE, "n1", "", "{\"n\":1}"), 6);
    assert_int_equal(write_one(ORG, STORE_OP_CREATE, "n2", "", "{\"n\":1}"), 7);
    store_change *ev = NULL;
    size_t n = 0;
    int64_t to = 0;
    store_changes_query q = {.org = ORG, .after = 0, .limit = 10};
    assert_int_equal(store_changes_read(fx->c, &q, &ev, &n, &to, &err), RD_OK);
    assert_int_equal(n, 5);
    const int64_t want[] = {1, 3, 5, 6, 7};
    for (size_t i = 0; i < n; i++)
        assert_int_equal(ev[i].sync_id, want[i]);
    store_changes_free(ev, n);
    /* and after a restart the counters come back from _rd_org_seq */
    store_conn_close(fx->c);
    store_close(fx->s);
    assert_int_equal(store_open(&o, &fx->s, &err), RD_OK);
    assert_int_equal(store_conn_open(fx->s, &fx->c, &err), RD_OK);
    assert_int_equal(write_one(OTHER, STORE_OP_CREATE, "n2", "", "{\"n\":1}"), 7);
    assert_int_equal(write_one(ORG, STORE_OP_CREATE, "n3", "", "{\"n\":1}"), 8);
}

int main(void)
{
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_feed_query_uses_the_org_index),
        T(test_layout_1_migrates_to_per_organisation_sync_ids),
        T(test_rows_keep_written_values_and_deletes_are_tombstones),
        T(test_org_scope_filters_and_cursor),
        T(test_commit_hook_sees_each_new_commit),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
