/* Tests for the store's BULK writes (store/bulk.c) against a real SQLite
 * file: ALL_OR_NOTHING and BEST_EFFORT outcomes, missing ids, held
 * operations, by-filter updates and deletes (filter required, maxAffected,
 * groups, per-record authorisation), dry runs, sync ids and the sync log. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "store/store_int.h"

#define ORG "org_acme"

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

/* items {name STRING unique, n INTEGER min 0} */
static store_schema *items_schema(void)
{
    store_schema *s = store_schema_new();
    s->models = calloc(1, sizeof *s->models);
    s->n_models = 1;
    store_model *m = &s->models[0];
    m->name = dupe("items");
    m->fields = calloc(2, sizeof *m->fields);
    m->n_fields = 2;
    m->fields[0] = (store_field){.name = dupe("name"), .type = STORE_T_STRING, .unique = true};
    m->fields[1] = (store_field){.name = dupe("n"), .type = STORE_T_INTEGER, .has_min = true};
    return s;
}

static int setup(void **state)
{
    (void)state;
    fx = calloc(1, sizeof *fx);
    snprintf(fx->dir, sizeof fx->dir, "/tmp/rd-bulk-XXXXXX");
    assert_non_null(mkdtemp(fx->dir));
    snprintf(fx->path, sizeof fx->path, "%s/r.db", fx->dir);
    store_options o = {.path = fx->path, .sync_normal = true};
    rd_err err;
    assert_int_equal(store_open(&o, &fx->s, &err), RD_OK);
    store_write w = {.op = STORE_OP_PUSH_SCHEMA, .org = ORG, .actor = "admin"};
    w.push.schema = items_schema();
    assert_int_equal(store_submit_wait(fx->s, &w), RD_OK);
    store_schema_release(w.push.schema);
    json_decref(w.push.changes);
    assert_int_equal(store_conn_open(fx->s, &fx->c, &err), RD_OK);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[160];
    store_conn_close(fx->c);
    store_close(fx->s);
    snprintf(cmd, sizeof cmd, "rm -rf %s", fx->dir);
    assert_int_equal(system(cmd), 0);
    free(fx);
    return 0;
}

/* ---- helpers ---------------------------------------------------------------------- */

static int64_t create_item(const char *id, const char *group, const char *name, int n)
{
    char data[128];
    snprintf(data, sizeof data, "{\"name\":\"%s\",\"n\":%d}", name, n);
    store_write w = {.op = STORE_OP_CREATE,
                     .org = ORG,
                     .actor = "alice",
                     .rec.model = "items",
                     .rec.id = id,
                     .rec.group = group};
    w.rec.data = json_loads(data, 0, NULL);
    assert_int_equal(store_submit_wait(fx->s, &w), RD_OK);
    json_decref(w.rec.data);
    store_record_clear(&w.rec.record);
    return w.last_sync_id;
}

/* n of id, or -1 when it does not exist. */
static int64_t n_of(const char *id)
{
    store_record r = {0};
    rd_err err;
    if (store_get(fx->c, ORG, "items", id, &r, NULL, &err) != RD_OK)
        return -1;
    int64_t n = json_integer_value(json_object_get(r.data, "n"));
    store_record_clear(&r);
    return n;
}

static int64_t head(void)
{
    int64_t oldest, newest;
    rd_err err;
    assert_int_equal(store_changes_bounds(fx->c, ORG, &oldest, &newest, &err), RD_OK);
    return newest;
}

/* An operation on items: data is JSON text or NULL. */
static store_bulk_op by_id(store_op op, const char *id, const char *data)
{
    store_bulk_op o;
    memset(&o, 0, sizeof o);
    o.w.op = op;
    o.w.rec.model = "items";
    o.w.rec.id = id;
    o.w.rec.data = data ? json_loads(data, 0, NULL) : NULL;
    return o;
}

static store_bulk_op where(store_op op, const char *filter, const char *data)
{
    store_bulk_op o = by_id(op, NULL, data);
    o.filter = filter;
    return o;
}

/* Runs a bulk of ops[0..n) and returns the write's code; w and b keep the
 * outcome (release with done_with). */
static rd_code run(store_write *w, store_bulk *b, store_bulk_op *ops, size_t n,
                   store_bulk_mode mode, bool dry_run)
{
    memset(w, 0, sizeof *w);
    memset(b, 0, sizeof *b);
    b->ops = ops;
    b->n_ops = n;
    b->mode = mode;
    b->dry_run = dry_run;
    w->op = STORE_OP_BULK;
    w->org = ORG;
    w->actor = "bob";
    w->bulk = b;
    return store_submit_wait(fx->s, w);
}

static void done_with(store_bulk_op *ops, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        json_decref(ops[i].w.rec.data);
        store_record_clear(&ops[i].w.rec.record);
        json_decref(ops[i].w.rec.conflicts);
    }
}

/* ---- modes ------------------------------------------------------------------------ */

static void test_bulk_all_or_nothing_undoes_everything_when_one_fails(void **state)
{
    (void)state;
    create_item("a1", NULL, "taken", 1);
    int64_t before = head();
    store_bulk_op ops[] = {
        by_id(STORE_OP_CREATE, "a2", "{\"name\":\"fresh\",\"n\":2}"),
        by_id(STORE_OP_UPDATE, "a1", "{\"n\":5}"),
        by_id(STORE_OP_CREATE, "a3", "{\"name\":\"taken\"}"), /* unique violation */
        by_id(STORE_OP_CREATE, "a4", "{\"n\":-1}"),           /* below the minimum */
    };
    store_write w;
    store_bulk b;
    assert_int_equal(run(&w, &b, ops, 4, STORE_BULK_ALL_OR_NOTHING, false), RD_DUPLICATE_RECORD);
    assert_true(b.executed);
    assert_false(b.applied);
    assert_int_equal(b.n_failed, 2);
    assert_int_equal(b.err_index, 2);
    assert_string_equal(w.err.field, "name");
    assert_false(ops[0].failed);
    assert_int_equal(ops[0].affected, 1); /* what it would have written */
    assert_true(ops[2].failed);
    assert_true(ops[3].failed);
    assert_int_equal(ops[3].w.err.code, RD_VALIDATION_FAILED);
    assert_int_equal(w.ops, 0);
    assert_int_equal(w.last_sync_id, 0);
    assert_int_equal(n_of("a2"), -1);
    assert_int_equal(n_of("a1"), 1);
    assert_int_equal(head(), before);
    /* no sync id was consumed: the next write takes the next one */
    assert_int_equal(create_item("a5", NULL, "five", 5), before + 1);
    done_with(ops, 4);
}

static void test_bulk_best_effort_keeps_the_good_operations(void **state)
{
    (void)state;
    create_item("b1", NULL, "b-taken", 1);
    int64_t before = head();
    store_bulk_op ops[] = {
        by_id(STORE_OP_CREATE, "b2", "{\"name\":\"b-two\"}"),
        by_id(STORE_OP_CREATE, "b3", "{\"name\":\"b-taken\"}"),
        by_id(STORE_OP_UPDATE, "b1", "{\"n\":7}"),
    };
    store_write w;
    store_bulk b;
    assert_int_equal(run(&w, &b, ops, 3, STORE_BULK_BEST_EFFORT, false), RD_OK);
    assert_true(b.applied);
    assert_int_equal(b.n_failed, 1);
    assert_true(ops[1].failed);
    assert_int_equal(ops[1].w.err.code, RD_DUPLICATE_RECORD);
    assert_int_equal(w.ops, 2);
    /* gap-free: the failed operation gave its sync id back */
    assert_int_equal(w.last_sync_id, before + 2);
    assert_int_equal(head(), before + 2);
    assert_int_equal(n_of("b2"), 0);
    assert_int_equal(n_of("b1"), 7);
    assert_int_equal(n_of("b3"), -1);
    done_with(ops, 3);
}

static void test_bulk_missing_ids_are_not_failures(void **state)
{
    (void)state;
    store_bulk_op ops[] = {
        by_id(STORE_OP_UPDATE, "nope", "{\"n\":1}"),
        by_id(STORE_OP_REPLACE, "nope", "{\"name\":\"x\"}"),
        by_id(STORE_OP_DELETE, "nope", NULL),
    };
    store_write w;
    store_bulk b;
    assert_int_equal(run(&w, &b, ops, 3, STORE_BULK_ALL_OR_NOTHING, false), RD_OK);
    assert_int_equal(b.n_failed, 0);
    for (size_t i = 0; i < 3; i++) {
        assert_true(ops[i].missing);
        assert_false(ops[i].failed);
        assert_int_equal(ops[i].affected, 0);
    }
    assert_int_equal(w.ops, 0);
    assert_int_equal(w.last_sync_id, 0);
    done_with(ops, 3);
}

static void test_bulk_unknown_model_is_a_failure_not_a_missing_id(void **state)
{
    (void)state;
    store_bulk_op ops[] = {by_id(STORE_OP_UPDATE, "x", "{\"n\":1}")};
    ops[0].w.rec.model = "ghosts";
    store_write w;
    store_bulk b;
    assert_int_equal(run(&w, &b, ops, 1, STORE_BULK_BEST_EFFORT, false), RD_OK);
    assert_true(ops[0].failed);
    assert_false(ops[0].missing);
    assert_int_equal(ops[0].w.err.code, RD_NOT_FOUND);
    assert_string_equal(ops[0].w.err.field, "model");
    done_with(ops, 1);
}

static void test_bulk_stale_notify_is_held_and_not_a_failure(void **state)
{
    (void)state;
    int64_t read_at = create_item("h1", NULL, "held", 1);
    store_bulk_op first[] = {by_id(STORE_OP_UPDATE, "h1", "{\"n\":2}")};
    store_write w;
    store_bulk b;
    assert_int_equal(run(&w, &b, first, 1, STORE_BULK_ALL_OR_NOTHING, false), RD_OK);
    done_with(first, 1);
    store_bulk_op ops[] = {by_id(STORE_OP_UPDATE, "h1", "{\"n\":3}"),
                           by_id(STORE_OP_CREATE, "h2", "{\"name\":\"h-two\"}")};
    ops[0].w.rec.has_read_at = true;
    ops[0].w.rec.read_at = read_at;
    ops[0].w.rec.on_stale = STORE_STALE_NOTIFY;
    assert_int_equal(run(&w, &b, ops, 2, STORE_BULK_ALL_OR_NOTHING, false), RD_OK);
    assert_false(ops[0].failed);
    assert_true(ops[0].w.rec.held);
    assert_int_equal(ops[0].w.err.code, RD_STALE_CONTEXT);
    assert_int_equal(json_array_size(ops[0].w.rec.conflicts), 1);
    assert_int_equal(ops[0].affected, 0);
    assert_int_equal(w.ops, 1);
    assert_int_equal(n_of("h1"), 2);
    assert_int_equal(n_of("h2"), 0);
    done_with(ops, 2);
}

/* ---- by filter ---------------------------------------------------------------------- */

static void test_bulk_update_and_delete_where_share_one_server_tx_id(void **state)
{
    (void)state;
    create_item("f1", NULL, "f-one", 1);
    create_item("f2", NULL, "f-two", 2);
    create_item("f3", NULL, "f-three", 3);
    int64_t before = head();
    store_bulk_op ops[] = {where(STORE_OP_UPDATE_WHERE, "n >= 2", "{\"n\":20}"),
                           where(STORE_OP_DELETE_WHERE, "name = \"f-one\"", NULL)};
    store_write w;
    store_bulk b;
    assert_int_equal(run(&w, &b, ops, 2, STORE_BULK_ALL_OR_NOTHING, false), RD_OK);
    assert_int_equal(ops[0].affected, 2);
    assert_int_equal(ops[1].affected, 1);
    assert_int_equal(w.ops, 3);
    assert_int_equal(w.last_sync_id, before + 3);
    assert_int_equal(n_of("f1"), -1);
    assert_int_equal(n_of("f2"), 20);
    assert_int_equal(n_of("f3"), 20);
    store_changes_query q = {.org = ORG, .after = before, .limit = 10};
    store_change *ch = NULL;
    size_t n = 0;
    int64_t to = 0;
    rd_err err;
    assert_int_equal(store_changes_read(fx->c, &q, &ch, &n, &to, &err), RD_OK);
    assert_int_equal(n, 3);
    for (size_t i = 0; i < n; i++) {
        assert_string_equal(ch[i].server_tx_id, w.server_tx_id);
        assert_int_equal(ch[i].sync_id, before + 1 + (int64_t)i);
        assert_string_equal(ch[i].actor, "bob");
    }
    assert_int_equal(ch[2].op, STORE_OP_DELETE);
    store_changes_free(ch, n);
    done_with(ops, 2);
}

static void test_bulk_by_filter_needs_a_condition(void **state)
{
    (void)state;
    create_item("e1", NULL, "e-one", 1);
    store_bulk_op ops[] = {where(STORE_OP_DELETE_WHERE, "", NULL),
                           where(STORE_OP_DELETE_WHERE, NULL, NULL),
                           where(STORE_OP_UPDATE_WHERE, " \t ", "{\"n\":1}")};
    store_write w;
    store_bulk b;
    assert_int_equal(run(&w, &b, ops, 3, STORE_BULK_BEST_EFFORT, false), RD_OK);
    for (size_t i = 0; i < 3; i++) {
        assert_true(ops[i].failed);
        assert_int_equal(ops[i].w.err.code, RD_FILTER_REQUIRED);
        assert_string_equal(ops[i].w.err.field, "filter");
    }
    assert_int_equal(n_of("e1"), 1);
    done_with(ops, 3);
}

static void test_bulk_max_affected_refuses_the_operation(void **state)
{
    (void)state;
    create_item("m1", NULL, "m-one", 100);
    create_item("m2", NULL, "m-two", 100);
    store_bulk_op ops[] = {where(STORE_OP_UPDATE_WHERE, "n = 100", "{\"n\":1}"),
                           where(STORE_OP_DELETE_WHERE, "n = 100", NULL)};
    ops[0].has_max_affected = true;
    ops[0].max_affected = 1;
    ops[1].has_max_affected = true;
    ops[1].max_affected = 2;
    store_write w;
    store_bulk b;
    assert_int_equal(run(&w, &b, ops, 2, STORE_BULK_BEST_EFFORT, false), RD_OK);
    assert_true(ops[0].failed);
    assert_int_equal(ops[0].w.err.code, RD_VALIDATION_FAILED);
    assert_string_equal(ops[0].w.err.field, "maxAffected");
    assert_false(ops[1].failed);
    assert_int_equal(ops[1].affected, 2);
    assert_int_equal(n_of("m1"), -1);
    done_with(ops, 2);
}

static void test_bulk_by_filter_only_in_the_given_groups(void **state)
{
    (void)state;
    create_item("g1", "team-a", "g-one", 50);
    create_item("g2", "team-b", "g-two", 50);
    static const char *const groups[] = {"team-a"};
    store_bulk_op ops[] = {where(STORE_OP_UPDATE_WHERE, "n = 50", "{\"n\":51}")};
    ops[0].groups = groups;
    ops[0].n_groups = 1;
    store_write w;
    store_bulk b;
    assert_int_equal(run(&w, &b, ops, 1, STORE_BULK_ALL_OR_NOTHING, false), RD_OK);
    assert_int_equal(ops[0].affected, 1);
    assert_int_equal(n_of("g1"), 51);
    assert_int_equal(n_of("g2"), 50);
    done_with(ops, 1);
}

/* Denies every record of group team-b. */
static rd_code deny_team_b(store_write *w, const char *group, rd_err *err)
{
    (void)w;
    if (group != NULL && strcmp(group, "team-b") == 0)
        return rd_errf(err, RD_PERMISSION_DENIED, NULL, "no update on team-b");
    return RD_OK;
}

static void test_bulk_all_or_nothing_reports_a_denial_first(void **state)
{
    (void)state;
    create_item("p1", "team-a", "p-one", 60);
    create_item("p2", "team-b", "p-two", 60);
    store_bulk_op ops[] = {by_id(STORE_OP_UPDATE, "p1", "{\"n\":-5}"), /* validation */
                           where(STORE_OP_UPDATE_WHERE, "n = 60", "{\"n\":61}")};
    ops[1].w.authorize = deny_team_b;
    store_write w;
    store_bulk b;
    assert_int_equal(run(&w, &b, ops, 2, STORE_BULK_ALL_OR_NOTHING, false), RD_PERMISSION_DENIED);
    assert_int_equal(b.err_index, 1);
    assert_int_equal(b.n_failed, 2);
    assert_non_null(strstr(ops[1].w.err.msg, "record 'p2'"));
    assert_int_equal(n_of("p1"), 60);
    done_with(ops, 2);
}

/* ---- dry run ------------------------------------------------------------------------- */

static void test_bulk_dry_run_reports_and_writes_nothing(void **state)
{
    (void)state;
    create_item("d1", NULL, "d-one", 70);
    int64_t before = head();
    store_bulk_op ops[] = {by_id(STORE_OP_CREATE, "d2", "{\"name\":\"d-two\"}"),
                           where(STORE_OP_UPDATE_WHERE, "n = 70", "{\"n\":71}"),
                           by_id(STORE_OP_DELETE, "d1", NULL)};
    store_write w;
    store_bulk b;
    assert_int_equal(run(&w, &b, ops, 3, STORE_BULK_BEST_EFFORT, true), RD_OK);
    assert_true(b.executed);
    assert_false(b.applied);
    assert_int_equal(b.rows, 3);
    assert_int_equal(w.ops, 3);
    assert_int_equal(w.last_sync_id, 0);
    assert_int_equal(head(), before);
    assert_int_equal(n_of("d1"), 70);
    assert_int_equal(n_of("d2"), -1);
    assert_int_equal(create_item("d3", NULL, "d-three", 1), before + 1);
    done_with(ops, 3);
}

int main(void)
{
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_bulk_all_or_nothing_undoes_everything_when_one_fails),
        T(test_bulk_best_effort_keeps_the_good_operations),
        T(test_bulk_missing_ids_are_not_failures),
        T(test_bulk_unknown_model_is_a_failure_not_a_missing_id),
        T(test_bulk_stale_notify_is_held_and_not_a_failure),
        T(test_bulk_update_and_delete_where_share_one_server_tx_id),
        T(test_bulk_by_filter_needs_a_condition),
        T(test_bulk_max_affected_refuses_the_operation),
        T(test_bulk_by_filter_only_in_the_given_groups),
        T(test_bulk_all_or_nothing_reports_a_denial_first),
        T(test_bulk_dry_run_reports_and_writes_nothing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
