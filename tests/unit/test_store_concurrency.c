/* Tests for the store's concurrency controls against a real SQLite file:
 * deadlines in the group commit, per-field staleness (read_at + on_stale)
 * and idempotency keys (the in-flight set, sealed outcomes, replays, reuse
 * with another request). */
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

typedef struct fixture {
    char dir[64];
    char path[128];
    store *s;
} fixture;

static fixture *fx;

static char *dupe(const char *s)
{
    char *p = strdup(s);
    assert_non_null(p);
    return p;
}

/* items {a STRING, b STRING, n INTEGER} */
static store_schema *items_schema(void)
{
    store_schema *s = store_schema_new();
    s->models = calloc(1, sizeof *s->models);
    s->n_models = 1;
    store_model *m = &s->models[0];
    m->name = dupe("items");
    m->fields = calloc(3, sizeof *m->fields);
    m->n_fields = 3;
    m->fields[0] = (store_field){.name = dupe("a"), .type = STORE_T_STRING};
    m->fields[1] = (store_field){.name = dupe("b"), .type = STORE_T_STRING};
    m->fields[2] = (store_field){.name = dupe("n"), .type = STORE_T_INTEGER};
    return s;
}

static int setup(void **state)
{
    (void)state;
    fx = calloc(1, sizeof *fx);
    snprintf(fx->dir, sizeof fx->dir, "/tmp/rd-conc-XXXXXX");
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
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[160];
    store_close(fx->s);
    snprintf(cmd, sizeof cmd, "rm -rf %s", fx->dir);
    assert_int_equal(system(cmd), 0);
    free(fx);
    return 0;
}

/* Runs one record write; data is JSON text (NULL for delete). The caller
 * clears what it inspects with done_with. */
static rd_code write_one(store_write *w, store_op op, const char *id, const char *data)
{
    w->op = op;
    w->org = ORG;
    w->actor = "alice";
    w->rec.model = "items";
    w->rec.id = id;
    w->rec.data = data ? json_loads(data, 0, NULL) : NULL;
    return store_submit_wait(fx->s, w);
}

static void done_with(store_write *w)
{
    json_decref(w->rec.data);
    store_record_clear(&w->rec.record);
    json_decref(w->rec.conflicts);
    free(w->replay);
    memset(w, 0, sizeof *w);
}

/* Creates id with {a, b, n} and returns the sync id after it. */
static int64_t create_item(const char *id)
{
    store_write w = {0};
    assert_int_equal(write_one(&w, STORE_OP_CREATE, id, "{\"a\":\"a0\",\"b\":\"b0\",\"n\":0}"),
                     RD_OK);
    int64_t sid = w.last_sync_id;
    done_with(&w);
    return sid;
}

static void update_ok(const char *id, const char *data)
{
    store_write w = {0};
    assert_int_equal(write_one(&w, STORE_OP_UPDATE, id, data), RD_OK);
    done_with(&w);
}

static int64_t version_of(const char *id)
{
    store_conn *c = NULL;
    store_record r = {0};
    rd_err err;
    assert_int_equal(store_conn_open(fx->s, &c, &err), RD_OK);
    assert_int_equal(store_get(c, ORG, "items", id, &r, NULL, &err), RD_OK);
    int64_t v = r.version;
    store_record_clear(&r);
    store_conn_close(c);
    return v;
}

/* ---- deadlines -------------------------------------------------------------- */

static void test_write_past_its_deadline_is_not_applied(void **state)
{
    (void)state;
    create_item("d1");
    store_write w = {.deadline_us = rd_now_us() - 1};
    assert_int_equal(write_one(&w, STORE_OP_UPDATE, "d1", "{\"n\":1}"), RD_DEADLINE_EXCEEDED);
    assert_int_equal(w.last_sync_id, 0);
    done_with(&w);
    assert_int_equal(version_of("d1"), 1);
}

/* ---- staleness ---------------------------------------------------------------- */

static void test_stale_field_rejects_and_names_only_written_changed_fields(void **state)
{
    (void)state;
    int64_t read_at = create_item("s1");
    update_ok("s1", "{\"a\":\"theirs\",\"b\":\"theirs\"}");
    store_write w = {.rec.has_read_at = true, .rec.read_at = read_at};
    assert_int_equal(write_one(&w, STORE_OP_UPDATE, "s1", "{\"a\":\"mine\",\"n\":3}"),
                     RD_STALE_CONTEXT);
    assert_string_equal(w.err.field, "a");
    assert_int_equal(json_array_size(w.rec.conflicts), 1);
    assert_string_equal(json_string_value(json_array_get(w.rec.conflicts, 0)), "a");
    assert_false(w.rec.held);
    assert_int_equal(w.rec.current_version, 2);
    assert_string_equal(json_string_value(json_object_get(w.rec.record.data, "a")), "theirs");
    done_with(&w);
    assert_int_equal(version_of("s1"), 2);
}

static void test_notify_holds_and_overwrite_applies(void **state)
{
    (void)state;
    int64_t read_at = create_item("s2");
    update_ok("s2", "{\"n\":7}");
    store_write w = {
        .rec.has_read_at = true, .rec.read_at = read_at, .rec.on_stale = STORE_STALE_NOTIFY};
    assert_int_equal(write_one(&w, STORE_OP_UPDATE, "s2", "{\"n\":1}"), RD_STALE_CONTEXT);
    assert_true(w.rec.held);
    assert_int_equal(w.last_sync_id, 0);
    done_with(&w);
    w = (store_write){
        .rec.has_read_at = true, .rec.read_at = read_at, .rec.on_stale = STORE_STALE_OVERWRITE};
    assert_int_equal(write_one(&w, STORE_OP_UPDATE, "s2", "{\"n\":1}"), RD_OK);
    done_with(&w);
    assert_int_equal(version_of("s2"), 3);
}

static void test_fields_nobody_changed_are_not_stale(void **state)
{
    (void)state;
    int64_t read_at = create_item("s3");
    update_ok("s3", "{\"a\":\"theirs\"}");
    store_write w = {.rec.has_read_at = true, .rec.read_at = read_at};
    assert_int_equal(write_one(&w, STORE_OP_UPDATE, "s3", "{\"b\":\"mine\"}"), RD_OK);
    done_with(&w);
}

static void test_delete_writes_every_field(void **state)
{
    (void)state;
    int64_t read_at = create_item("s4");
    update_ok("s4", "{\"b\":\"theirs\"}");
    store_write w = {.rec.has_read_at = true, .rec.read_at = read_at};
    assert_int_equal(write_one(&w, STORE_OP_DELETE, "s4", NULL), RD_STALE_CONTEXT);
    assert_string_equal(w.err.field, "b");
    done_with(&w);
}

/* ---- idempotency ------------------------------------------------------------------ */

static bool seal_fixed(store_write *w, store_sealed *out)
{
    static const char ok[] = "sealed-ok";
    static const char refused[] = "sealed-refused";
    bool applied = w->err.code == RD_OK;
    out->bytes = applied ? ok : refused;
    out->len = applied ? sizeof ok : sizeof refused;
    out->status = applied ? 0 : 10;
    return true;
}

static void idem_write(store_write *w, const char *key, uint8_t hash_byte)
{
    w->idem_key = key;
    memset(w->idem_hash, hash_byte, sizeof w->idem_hash);
    w->seal = seal_fixed;
}

static void test_idempotent_write_is_stored_and_replayed_once(void **state)
{
    (void)state;
    create_item("i1");
    store_write w = {0};
    idem_write(&w, "k1", 1);
    assert_int_equal(write_one(&w, STORE_OP_UPDATE, "i1", "{\"n\":1}"), RD_OK);
    assert_true(w.idem_stored);
    assert_false(w.replayed);
    done_with(&w);
    idem_write(&w, "k1", 1);
    assert_int_equal(write_one(&w, STORE_OP_UPDATE, "i1", "{\"n\":1}"), RD_OK);
    assert_true(w.replayed);
    assert_int_equal(w.replay_len, sizeof "sealed-ok");
    assert_memory_equal(w.replay, "sealed-ok", w.replay_len);
    assert_int_equal(w.replay_status, 0);
    assert_int_equal(w.last_sync_id, 0);
    done_with(&w);
    assert_int_equal(version_of("i1"), 2);
}

static void test_same_key_with_another_hash_is_reused(void **state)
{
    (void)state;
    create_item("i2");
    store_write w = {0};
    idem_write(&w, "k2", 1);
    assert_int_equal(write_one(&w, STORE_OP_UPDATE, "i2", "{\"n\":1}"), RD_OK);
    done_with(&w);
    idem_write(&w, "k2", 2);
    assert_int_equal(write_one(&w, STORE_OP_UPDATE, "i2", "{\"n\":2}"), RD_IDEMPOTENCY_KEY_REUSED);
    done_with(&w);
    assert_int_equal(version_of("i2"), 2);
}

static void test_concurrency_refusal_is_stored_validation_is_not(void **state)
{
    (void)state;
    create_item("i3");
    store_write w = {.rec.has_expected_version = true, .rec.expected_version = 9};
    idem_write(&w, "k3", 1);
    assert_int_equal(write_one(&w, STORE_OP_UPDATE, "i3", "{\"n\":1}"), RD_VERSION_CONFLICT);
    assert_true(w.idem_stored);
    assert_int_equal(w.rec.current_version, 1);
    done_with(&w);
    idem_write(&w, "k3", 1);
    assert_int_equal(write_one(&w, STORE_OP_UPDATE, "i3", "{\"n\":1}"), RD_OK);
    assert_true(w.replayed);
    assert_int_equal(w.replay_status, 10);
    done_with(&w);

    idem_write(&w, "k4", 1);
    assert_int_equal(write_one(&w, STORE_OP_UPDATE, "i3", "{\"n\":\"x\"}"), RD_VALIDATION_FAILED);
    assert_false(w.idem_stored);
    done_with(&w);
    idem_write(&w, "k4", 2);
    assert_int_equal(write_one(&w, STORE_OP_UPDATE, "i3", "{\"n\":2}"), RD_OK);
    assert_false(w.replayed);
    done_with(&w);
}

static void test_key_in_flight_is_refused(void **state)
{
    (void)state;
    create_item("i5");
    store_write first = {.org = ORG, .idem_key = "k5"};
    pthread_mutex_lock(&fx->s->qmu);
    assert_true(store_idem_enter(fx->s, &first));
    pthread_mutex_unlock(&fx->s->qmu);
    store_write w = {0};
    idem_write(&w, "k5", 1);
    assert_int_equal(write_one(&w, STORE_OP_UPDATE, "i5", "{\"n\":1}"), RD_IDEMPOTENCY_IN_PROGRESS);
    done_with(&w);
    idem_write(&w, "k5-other", 1);
    assert_int_equal(write_one(&w, STORE_OP_UPDATE, "i5", "{\"n\":1}"), RD_OK);
    done_with(&w);
    pthread_mutex_lock(&fx->s->qmu);
    store_idem_leave(fx->s, &first);
    pthread_mutex_unlock(&fx->s->qmu);
    idem_write(&w, "k5", 1);
    assert_int_equal(write_one(&w, STORE_OP_UPDATE, "i5", "{\"n\":2}"), RD_OK);
    done_with(&w);
}

static void test_expired_key_is_absent(void **state)
{
    (void)state;
    create_item("i6");
    store_set_idempotency_ttl(fx->s, 1);
    store_write w = {0};
    idem_write(&w, "k6", 1);
    assert_int_equal(write_one(&w, STORE_OP_UPDATE, "i6", "{\"n\":1}"), RD_OK);
    done_with(&w);
    sleep(2);
    idem_write(&w, "k6", 2);
    assert_int_equal(write_one(&w, STORE_OP_UPDATE, "i6", "{\"n\":2}"), RD_OK);
    assert_false(w.replayed);
    assert_true(w.idem_stored);
    done_with(&w);
    assert_int_equal(version_of("i6"), 3);
}

static int64_t idem_rows(void)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    int64_t n = -1;
    assert_int_equal(sqlite3_open_v2(fx->path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db, "SELECT count(*) FROM _rd_idempotency", -1, &st, NULL),
                     SQLITE_OK);
    if (sqlite3_step(st) == SQLITE_ROW)
        n = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return n;
}

/* Expired keys are pruned at least as fast as keys are stored, so a
 * sustained keyed-write rate never grows the table (a fixed 128 rows a
 * second once let it grow without bound). */
static void test_pruning_keeps_up_with_the_insert_rate(void **state)
{
    (void)state;
    char key[32];
    create_item("p1");
    store_set_idempotency_ttl(fx->s, 1);
    for (int i = 0; i < 400; i++) {
        store_write w = {0};
        snprintf(key, sizeof key, "old-%d", i);
        idem_write(&w, key, 1);
        assert_int_equal(write_one(&w, STORE_OP_UPDATE, "p1", "{\"n\":1}"), RD_OK);
        done_with(&w);
    }
    assert_true(idem_rows() >= 400);
    sleep(2); /* the 400 keys expire */
    for (int i = 0; i < 250; i++) {
        store_write w = {0};
        snprintf(key, sizeof key, "new-%d", i);
        idem_write(&w, key, 1);
        assert_int_equal(write_one(&w, STORE_OP_UPDATE, "p1", "{\"n\":2}"), RD_OK);
        done_with(&w);
    }
    /* 250 new keys paid for pruning 500 old ones: only the new remain */
    assert_int_equal(idem_rows(), 250);
}

int main(void)
{
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_write_past_its_deadline_is_not_applied),
        T(test_stale_field_rejects_and_names_only_written_changed_fields),
        T(test_notify_holds_and_overwrite_applies),
        T(test_fields_nobody_changed_are_not_stale),
        T(test_delete_writes_every_field),
        T(test_idempotent_write_is_stored_and_replayed_once),
        T(test_same_key_with_another_hash_is_reused),
        T(test_concurrency_refusal_is_stored_validation_is_not),
        T(test_key_in_flight_is_refused),
        T(test_expired_key_is_absent),
        T(test_pruning_keeps_up_with_the_insert_rate),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
