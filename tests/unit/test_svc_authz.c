/* Unit tests for the logic of service/svc_authz.c beyond auth_allows: which
 * fields a write touches, the per-field writableBy lists handed to the
 * library, and the "holds this verb on this model somewhere" rule that
 * decides between not_found and permission_denied for a missing record. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "service/svc_authz.h"

static auth_caps *caps_of(const char *json)
{
    auth_caps *c = NULL;
    rd_err err;
    assert_int_equal(auth_caps_from_json(json, strlen(json), &c, &err), RD_OK);
    return c;
}

static void test_model_in_caps_matches_name_or_star_in_any_group(void **state)
{
    (void)state;
    auth_caps *c = caps_of("[{\"can\":[\"update\"],\"model\":\"students\",\"group\":\"team-a\"},"
                           "{\"can\":[\"read\"],\"model\":\"*\",\"group\":\"x\"}]");
    assert_true(svc_authz_model_in_caps(c, AUTH_UPDATE, "students"));
    assert_false(svc_authz_model_in_caps(c, AUTH_UPDATE, "enrollments"));
    assert_false(svc_authz_model_in_caps(c, AUTH_DELETE, "students"));
    assert_true(svc_authz_model_in_caps(c, AUTH_READ, "anything"));
    assert_false(svc_authz_model_in_caps(NULL, AUTH_READ, "students"));
    auth_caps_free(c);
}

static void test_read_scope_follows_model_group_and_field_lists(void **state)
{
    (void)state;
    auth_caps *c = caps_of("[{\"can\":[\"update\"],\"model\":\"m\",\"group\":\"*\"},"
                           "{\"can\":[\"read\"],\"model\":\"m\",\"group\":\"g1\","
                           "\"fields\":[\"a\"]},"
                           "{\"can\":[\"read\"],\"model\":\"*\",\"group\":\"g2\"}]");
    assert_int_equal(svc_authz_read_scope(c, "m", "default"), SVC_READ_NONE);
    assert_int_equal(svc_authz_read_scope(c, "m", ""), SVC_READ_NONE);
    assert_int_equal(svc_authz_read_scope(c, "m", "g1"), SVC_READ_FIELDS);
    assert_int_equal(svc_authz_read_scope(c, "other", "g2"), SVC_READ_ALL);
    assert_int_equal(svc_authz_read_scope(NULL, "m", "g1"), SVC_READ_NONE);
    assert_true(svc_authz_field_readable(c, "m", "g1", "a"));
    assert_false(svc_authz_field_readable(c, "m", "g1", "b"));
    assert_false(svc_authz_field_readable(c, "m", "default", "a"));
    assert_true(svc_authz_field_readable(c, "m", "g2", "b"));
    auth_caps_free(c);
}

/* A model {a, b writableBy [teacher, admin], c writableBy []}. */
static store_model *model_abc(void)
{
    static char *roles[] = {"teacher", "admin", NULL};
    static char *none[] = {NULL};
    static store_field fields[3];
    static store_model m;
    memset(fields, 0, sizeof fields);
    fields[0].name = "a";
    fields[1].name = "b";
    fields[1].writable_by = roles;
    fields[1].n_writable_by = 2;
    fields[2].name = "c";
    fields[2].writable_by = none;
    m.name = "m";
    m.fields = fields;
    m.n_fields = 3;
    return &m;
}

static void test_writable_by_lists_rules_per_written_field(void **state)
{
    (void)state;
    rd_arena *a = rd_arena_new(1 << 16);
    const char *const *const *wb = NULL;
    const char *written[] = {"a", "b", "zz", "c"};
    assert_true(svc_authz_writable_by(a, model_abc(), written, 4, &wb));
    assert_non_null(wb);
    assert_null(wb[0]);
    assert_string_equal(wb[1][0], "teacher");
    assert_string_equal(wb[1][1], "admin");
    assert_null(wb[1][2]);
    assert_null(wb[2]); /* unknown field: the schema check reports it */
    assert_null(wb[3]); /* empty list = any writer */
    rd_arena_free(a);
}

static void test_writable_by_is_null_without_rules_or_model(void **state)
{
    (void)state;
    rd_arena *a = rd_arena_new(1 << 16);
    const char *const *const *wb = (void *)1;
    const char *written[] = {"a", "c"};
    assert_true(svc_authz_writable_by(a, model_abc(), written, 2, &wb));
    assert_null(wb);
    wb = (void *)1;
    assert_true(svc_authz_writable_by(a, NULL, written, 2, &wb));
    assert_null(wb);
    rd_arena_free(a);
}

static void test_data_fields_are_the_top_level_keys_in_order(void **state)
{
    (void)state;
    rd_arena *a = rd_arena_new(1 << 16);
    json_t *data = json_pack("{s:i,s:{s:i},s:n}", "age", 1, "profile", "x", 2, "email");
    const char *const *f = NULL;
    size_t n = 0;
    assert_true(svc_authz_data_fields(a, data, &f, &n));
    assert_int_equal(n, 3);
    assert_string_equal(f[0], "age");
    assert_string_equal(f[1], "profile");
    assert_string_equal(f[2], "email");
    json_t *arr = json_array();
    assert_true(svc_authz_data_fields(a, arr, &f, &n));
    assert_int_equal(n, 0);
    json_decref(arr);
    json_decref(data);
    rd_arena_free(a);
}

static void test_model_fields_lists_every_field_for_replace(void **state)
{
    (void)state;
    rd_arena *a = rd_arena_new(1 << 16);
    const char *const *f = NULL;
    size_t n = 0;
    assert_true(svc_authz_model_fields(a, model_abc(), &f, &n));
    assert_int_equal(n, 3);
    assert_string_equal(f[0], "a");
    assert_string_equal(f[2], "c");
    assert_true(svc_authz_model_fields(a, NULL, &f, &n));
    assert_int_equal(n, 0);
    rd_arena_free(a);
}

/* The lists svc_authz builds, fed to the library: a pupil may write a but
 * not b; a teacher may write both. */
static void test_writable_by_decides_with_the_library(void **state)
{
    (void)state;
    rd_arena *a = rd_arena_new(1 << 16);
    auth_caps *c = caps_of("[{\"can\":[\"update\"],\"model\":\"*\",\"group\":\"*\"}]");
    const char *const *const *wb = NULL;
    const char *written[] = {"a", "b"};
    auth_required req;
    rd_err err;
    assert_true(svc_authz_writable_by(a, model_abc(), written, 2, &wb));
    assert_int_equal(
        auth_caps_allows(c, "pupil", AUTH_UPDATE, "m", "g", written, 1, wb, &req, &err), RD_OK);
    assert_int_equal(
        auth_caps_allows(c, "pupil", AUTH_UPDATE, "m", "g", written, 2, wb, &req, &err),
        RD_PERMISSION_DENIED);
    assert_string_equal(req.field, "b");
    assert_int_equal(
        auth_caps_allows(c, "teacher", AUTH_UPDATE, "m", "g", written, 2, wb, &req, &err), RD_OK);
    auth_caps_free(c);
    rd_arena_free(a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_model_in_caps_matches_name_or_star_in_any_group),
        cmocka_unit_test(test_writable_by_lists_rules_per_written_field),
        cmocka_unit_test(test_writable_by_is_null_without_rules_or_model),
        cmocka_unit_test(test_data_fields_are_the_top_level_keys_in_order),
        cmocka_unit_test(test_model_fields_lists_every_field_for_replace),
        cmocka_unit_test(test_writable_by_decides_with_the_library),
        cmocka_unit_test(test_read_scope_follows_model_group_and_field_lists),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
