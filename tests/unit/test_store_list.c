/* Tests for store_list (store/list.c) against a real SQLite file: keyset
 * pages in every direction over a nullable sort key, filters, the group
 * restriction, read_at and argument checks. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "store/store.h"
#include "store/store_int.h"

#define ORG "org_list"
#define N 11

static const char schema_json[] = "{\"models\":[{\"name\":\"items\",\"fields\":["
                                  "{\"name\":\"name\",\"type\":\"STRING\"},"
                                  "{\"name\":\"score\",\"type\":\"NUMBER\"}]}]}";

static char dir[64];
static char path[128];
static store *db;
static store_conn *conn;
static store_schema *schema;
static const store_model *model;

/* Item i: name "n<i>", score (i % 4) * 0.5 or unset when i % 3 == 0, group
 * "g<i % 2>". */
static int setup(void **state)
{
    (void)state;
    rd_err err;
    snprintf(dir, sizeof dir, "/tmp/rd-list-XXXXXX");
    if (mkdtemp(dir) == NULL)
        return -1;
    snprintf(path, sizeof path, "%s/r.db", dir);
    store_options opt = {.path = path, .sync_normal = true};
    if (store_open(&opt, &db, &err) != RD_OK)
        return -1;
    json_t *doc = json_loads(schema_json, 0, NULL);
    store_write w = {.op = STORE_OP_PUSH_SCHEMA, .org = ORG, .actor = "t"};
    w.push.schema = store_schema_from_json(doc, 0);
    json_decref(doc);
    rd_code code = store_submit_wait(db, &w);
    store_schema_release(w.push.schema);
    json_decref(w.push.changes);
    if (code != RD_OK)
        return -1;
    for (int i = 0; i < N; i++) {
        char id[16], name[16], group[8];
        snprintf(id, sizeof id, "i%02d", i);
        snprintf(name, sizeof name, "n%d", i);
        snprintf(group, sizeof group, "g%d", i % 2);
        json_t *data = json_pack("{ss}", "name", name);
        if (i % 3 != 0)
            json_object_set_new(data, "score", json_real((i % 4) * 0.5));
        store_write c = {.op = STORE_OP_CREATE,
                         .org = ORG,
                         .actor = "t",
                         .rec.model = "items",
                         .rec.id = id,
                         .rec.group = group,
                         .rec.data = data};
        code = store_submit_wait(db, &c);
        store_record_clear(&c.rec.record);
        json_decref(data);
        if (code != RD_OK)
            return -1;
    }
    schema = store_schema_get(db, ORG);
    model = store_schema_model(schema, "items");
    return model != NULL && store_conn_open(db, &conn, &err) == RD_OK ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    store_conn_close(conn);
    store_schema_release(schema);
    store_close(db);
    char cmd[160];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    return system(cmd) == 0 ? 0 : -1;
}

/* Walks every page of (filter, order) with page size limit; writes the ids
 * in order to out ("i00,i03,...") and returns the number of pages. */
static int walk(const char *filter, const char *order, const char *const *groups, size_t n_groups,
                size_t limit, char *out, size_t cap)
{
    store_filter *f = NULL;
    store_order *o = NULL;
    store_page page = {0};
    store_value *after = NULL;
    size_t n_after = 0;
    rd_err err;
    int pages = 0;
    out[0] = '\0';
    assert_int_equal(store_filter_parse(schema, ORG, model, filter, NULL, &f, &err), RD_OK);
    assert_int_equal(store_order_parse(schema, ORG, model, order, NULL, &o, &err), RD_OK);
    for (;;) {
        rd_code code = store_list(conn, ORG, model, f, o, after, n_after, limit, 0, groups,
                                  n_groups, &page, &err);
        if (code != RD_OK)
            fail_msg("store_list: %s", err.msg);
        pages++;
        assert_true(page.read_at >= N);
        for (size_t i = 0; i < page.n; i++)
            snprintf(out + strlen(out), cap - strlen(out), "%s%s", out[0] ? "," : "",
                     page.records[i].id);
        for (size_t i = 0; after != NULL && i < n_after; i++)
            free(after[i].s);
        free(after);
        after = NULL;
        if (!page.more) {
            store_page_free(&page);
            break;
        }
        assert_int_equal(page.n, limit);
        assert_int_equal(page.n_last, store_order_terms(o));
        after = page.last; /* take the cursor over */
        n_after = page.n_last;
        page.last = NULL;
        page.n_last = 0;
        store_page_free(&page);
    }
    store_filter_free(f);
    store_order_free(o);
    return pages;
}

static void test_list_default_order_pages_by_id(void **state)
{
    (void)state;
    char ids[256];
    assert_int_equal(walk(NULL, NULL, NULL, 0, 4, ids, sizeof ids), 3);
    assert_string_equal(ids, "i00,i01,i02,i03,i04,i05,i06,i07,i08,i09,i10");
    assert_int_equal(walk(NULL, NULL, NULL, 0, 11, ids, sizeof ids), 1);
}

static void test_list_nullable_key_ascending(void **state)
{
    (void)state;
    char ids[256];
    /* unset first (i00 i03 i06 i09), then 0.0 (i04 i08), 0.5 (i01 i05),
     * 1.0 (i02 i10), 1.5 (i07); ties by id */
    walk(NULL, "score", NULL, 0, 2, ids, sizeof ids);
    assert_string_equal(ids, "i00,i03,i06,i09,i04,i08,i01,i05,i02,i10,i07");
}

static void test_list_nullable_key_descending(void **state)
{
    (void)state;
    char ids[256];
    /* unset last; ties by name descending ("n2" > "n10") */
    walk(NULL, "score desc, name desc", NULL, 0, 3, ids, sizeof ids);
    assert_string_equal(ids, "i07,i02,i10,i05,i01,i08,i04,i09,i06,i03,i00");
}

static void test_list_filter_and_groups(void **state)
{
    (void)state;
    char ids[256];
    static const char *const g1[] = {"g1"};
    walk("score >= 0.5", "id desc", g1, 1, 2, ids, sizeof ids);
    assert_string_equal(ids, "i07,i05,i01");
    walk("score = null", NULL, NULL, 0, 50, ids, sizeof ids);
    assert_string_equal(ids, "i00,i03,i06,i09");
    walk(NULL, NULL, g1, 0, 5, ids, sizeof ids);
    assert_string_equal(ids, "");
}

static void test_list_checks_arguments(void **state)
{
    (void)state;
    store_page page;
    rd_err err;
    store_value one = {.type = STORE_V_TEXT, .s = "i01", .n = 3};
    assert_int_equal(store_list(conn, ORG, model, NULL, NULL, NULL, 0, 0, 0, NULL, 0, &page, &err),
                     RD_VALIDATION_FAILED);
    assert_int_equal(store_list(conn, ORG, model, NULL, NULL, NULL, 0, STORE_LIST_MAX_LIMIT + 1, 0,
                                NULL, 0, &page, &err),
                     RD_VALIDATION_FAILED);
    assert_int_equal(store_list(conn, ORG, model, NULL, NULL, &one, 2, 5, 0, NULL, 0, &page, &err),
                     RD_VALIDATION_FAILED);
    assert_string_equal(err.field, "pageToken");
    assert_int_equal(
        store_list(conn, "bad__org", model, NULL, NULL, NULL, 0, 5, 0, NULL, 0, &page, &err),
        RD_NOT_FOUND);
    assert_int_equal(store_list(conn, ORG, model, NULL, NULL, &one, 1, 5, 0, NULL, 0, &page, &err),
                     RD_OK);
    assert_int_equal(page.n, 5);
    assert_string_equal(page.records[0].id, "i02");
    assert_string_equal(json_string_value(json_object_get(page.records[0].data, "name")), "n2");
    store_page_free(&page);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_list_default_order_pages_by_id),
        cmocka_unit_test(test_list_nullable_key_ascending),
        cmocka_unit_test(test_list_nullable_key_descending),
        cmocka_unit_test(test_list_filter_and_groups),
        cmocka_unit_test(test_list_checks_arguments),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
