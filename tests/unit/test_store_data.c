/* Unit tests for store_check_data (store/data.c): one rule per test, each
 * checking the code, the field the error names and the message. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "store/store.h"
#include "store/store_int.h"

static const char model_json[] =
    "{\"models\":[{\"name\":\"students\",\"fields\":["
    "{\"name\":\"firstName\",\"type\":\"STRING\",\"required\":true,\"maxLength\":5},"
    "{\"name\":\"age\",\"type\":\"INTEGER\",\"min\":0,\"max\":150},"
    "{\"name\":\"score\",\"type\":\"NUMBER\",\"min\":0,\"max\":1},"
    "{\"name\":\"isActive\",\"type\":\"BOOLEAN\",\"required\":true,\"default\":true},"
    "{\"name\":\"status\",\"type\":\"ENUM\",\"enumValues\":[\"active\",\"inactive\"]},"
    "{\"name\":\"profile\",\"type\":\"JSON\"},"
    "{\"name\":\"enrolledAt\",\"type\":\"TIMESTAMP\"}]}]}";

static store_schema *schema;
static const store_model *model;

static int setup(void **state)
{
    (void)state;
    json_t *doc = json_loads(model_json, 0, NULL);
    schema = store_schema_from_json(doc, 1);
    json_decref(doc);
    model = store_schema_model(schema, "students");
    return schema != NULL && model != NULL ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    store_schema_release(schema);
    return 0;
}

/* Checks data (JSON text) in mode; returns the code and leaves the error in
 * *err. */
static rd_code check(const char *text, store_check_mode mode, rd_err *err)
{
    json_error_t je;
    json_t *data = json_loads(text, JSON_DECODE_ANY, &je);
    if (data == NULL)
        fail_msg("bad JSON in test: %s", text);
    rd_err_clear(err);
    rd_code code = store_check_data(model, data, mode, err);
    json_decref(data);
    return code;
}

static void expect_ok(const char *text, store_check_mode mode)
{
    rd_err err;
    if (check(text, mode, &err) != RD_OK)
        fail_msg("%s: unexpected error %s: %s", text, rd_code_str(err.code), err.msg);
}

static void expect_err(const char *text, store_check_mode mode, rd_code code, const char *field,
                       const char *msg_part)
{
    rd_err err;
    rd_code got = check(text, mode, &err);
    if (got != code)
        fail_msg("%s: got %s (%s), want %s", text, rd_code_str(got), err.msg, rd_code_str(code));
    assert_string_equal(err.field, field);
    if (msg_part != NULL && strstr(err.msg, msg_part) == NULL)
        fail_msg("message '%s' lacks '%s'", err.msg, msg_part);
}

#define C STORE_CHECK_CREATE
#define P STORE_CHECK_PATCH
#define R STORE_CHECK_REPLACE

static void test_check_data_accepts_valid_document(void **state)
{
    (void)state;
    expect_ok("{\"firstName\":\"Ada\",\"age\":36,\"score\":0.5,\"isActive\":false,"
              "\"status\":\"active\",\"profile\":{\"a\":[1,2]},"
              "\"enrolledAt\":\"2024-05-01T12:00:00Z\"}",
              C);
}

static void test_check_data_unknown_field_is_named(void **state)
{
    (void)state;
    expect_err("{\"firstName\":\"Ada\",\"nickname\":\"A\"}", C, RD_UNKNOWN_FIELD, "nickname",
               "nickname");
}

static void test_check_data_unknown_field_in_patch(void **state)
{
    (void)state;
    expect_err("{\"Age\":3}", P, RD_UNKNOWN_FIELD, "Age", "unknown field");
}

static void test_check_data_system_field_is_server_managed(void **state)
{
    (void)state;
    expect_err("{\"version\":3}", P, RD_VALIDATION_FAILED, "version",
               "field 'version' is server-managed");
}

static void test_check_data_system_field_matches_case_insensitively(void **state)
{
    (void)state;
    expect_err("{\"firstName\":\"Ada\",\"SyncId\":1}", C, RD_VALIDATION_FAILED, "SyncId",
               "server-managed");
}

static void test_check_data_string_requires_string(void **state)
{
    (void)state;
    expect_err("{\"firstName\":5}", P, RD_VALIDATION_FAILED, "firstName",
               "firstName: expected a string");
}

static void test_check_data_max_length_counts_code_points(void **state)
{
    (void)state;
    expect_ok("{\"firstName\":\"h\\u00e9llo\"}", P); /* 5 characters, 6 bytes */
    expect_ok("{\"firstName\":\"\\u65e5\\u672c\\u8a9e\\u65e5\\u672c\"}", P);
    expect_err("{\"firstName\":\"h\\u00e9llo!\"}", P, RD_VALIDATION_FAILED, "firstName",
               "6 characters exceed the maximum length 5");
}

static void test_check_data_integer_accepts_integral_real(void **state)
{
    (void)state;
    expect_ok("{\"age\":42.0}", P);
    expect_ok("{\"age\":42}", P);
}

static void test_check_data_integer_rejects_fraction(void **state)
{
    (void)state;
    expect_err("{\"age\":42.5}", P, RD_VALIDATION_FAILED, "age", "age: 42.5 is not an integer");
}

static void test_check_data_integer_rejects_unsafe_real(void **state)
{
    (void)state;
    rd_err err;
    store_field f = {.name = "n", .type = STORE_T_INTEGER};
    json_t *big = json_real(9007199254740994.0); /* 2^53 + 2 */
    assert_int_equal(store_check_value(&f, big, &err), RD_VALIDATION_FAILED);
    assert_non_null(strstr(err.msg, "2^53"));
    json_decref(big);
}

static void test_check_data_integer_rejects_string(void **state)
{
    (void)state;
    expect_err("{\"age\":\"42\"}", P, RD_VALIDATION_FAILED, "age", "expected an integer");
}

static void test_check_data_integer_above_max(void **state)
{
    (void)state;
    expect_err("{\"age\":200}", P, RD_VALIDATION_FAILED, "age",
               "age: 200 is above the maximum 150");
}

static void test_check_data_integer_below_min(void **state)
{
    (void)state;
    expect_err("{\"age\":-1}", P, RD_VALIDATION_FAILED, "age", "age: -1 is below the minimum 0");
}

static void test_check_data_number_rules(void **state)
{
    (void)state;
    expect_ok("{\"score\":0.25}", P);
    expect_ok("{\"score\":1}", P);
    expect_err("{\"score\":\"high\"}", P, RD_VALIDATION_FAILED, "score", "finite number");
    expect_err("{\"score\":1.5}", P, RD_VALIDATION_FAILED, "score",
               "score: 1.5 is above the maximum 1");
}

static void test_check_data_boolean_rules(void **state)
{
    (void)state;
    expect_ok("{\"isActive\":true}", P);
    expect_err("{\"isActive\":1}", P, RD_VALIDATION_FAILED, "isActive", "true or false");
    expect_err("{\"isActive\":\"true\"}", P, RD_VALIDATION_FAILED, "isActive", "true or false");
}

static void test_check_data_timestamp_rules(void **state)
{
    (void)state;
    expect_ok("{\"enrolledAt\":\"2024-02-29T23:59:59.123456+02:00\"}", P);
    expect_err("{\"enrolledAt\":\"2023-02-29T00:00:00Z\"}", P, RD_VALIDATION_FAILED, "enrolledAt",
               "RFC 3339");
    expect_err("{\"enrolledAt\":\"yesterday\"}", P, RD_VALIDATION_FAILED, "enrolledAt", "RFC 3339");
    expect_err("{\"enrolledAt\":1714564800}", P, RD_VALIDATION_FAILED, "enrolledAt", "RFC 3339");
}

static void test_check_data_enum_rules(void **state)
{
    (void)state;
    expect_ok("{\"status\":\"inactive\"}", P);
    expect_err("{\"status\":\"gone\"}", P, RD_VALIDATION_FAILED, "status",
               "status: 'gone' is not one of: active, inactive");
    expect_err("{\"status\":1}", P, RD_VALIDATION_FAILED, "status", "status");
}

static void test_check_data_json_accepts_any_value(void **state)
{
    (void)state;
    expect_ok("{\"profile\":\"text\"}", P);
    expect_ok("{\"profile\":[1,{\"a\":null},true]}", P);
    expect_ok("{\"profile\":3.5}", P);
}

/* A value of depth n: n nested arrays around 1. */
static char *nested(int n)
{
    char *s = malloc((size_t)n * 2 + 32);
    size_t len = 0;
    len += (size_t)sprintf(s, "{\"profile\":");
    for (int i = 0; i < n; i++)
        s[len++] = '[';
    s[len++] = '1';
    for (int i = 0; i < n; i++)
        s[len++] = ']';
    s[len++] = '}';
    s[len] = '\0';
    return s;
}

static void test_check_data_json_depth_limit(void **state)
{
    (void)state;
    char *ok = nested(STORE_MAX_DEPTH), *deep = nested(STORE_MAX_DEPTH + 1);
    expect_ok(ok, P);
    expect_err(deep, P, RD_VALIDATION_FAILED, "profile",
               "profile: value is nested deeper than 32 levels");
    free(ok);
    free(deep);
}

static void test_check_data_required_missing_on_create(void **state)
{
    (void)state;
    expect_err("{\"age\":3}", C, RD_VALIDATION_FAILED, "firstName",
               "firstName: a required field is missing");
}

static void test_check_data_required_null_on_create_is_missing(void **state)
{
    (void)state;
    expect_err("{\"firstName\":null}", C, RD_VALIDATION_FAILED, "firstName", "missing");
}

static void test_check_data_default_satisfies_required(void **state)
{
    (void)state;
    expect_ok("{\"firstName\":\"Ada\"}", C); /* isActive is required with a default */
}

static void test_check_data_replace_needs_required(void **state)
{
    (void)state;
    expect_err("{\"age\":1}", R, RD_VALIDATION_FAILED, "firstName", "required");
}

static void test_check_data_patch_does_not_need_required(void **state)
{
    (void)state;
    expect_ok("{\"age\":1}", P);
    expect_ok("{}", P);
}

static void test_check_data_patch_null_clears_optional(void **state)
{
    (void)state;
    expect_ok("{\"age\":null,\"profile\":null}", P);
}

static void test_check_data_patch_null_for_required_rejected(void **state)
{
    (void)state;
    expect_err("{\"firstName\":null}", P, RD_VALIDATION_FAILED, "firstName",
               "firstName: a required field cannot be cleared");
}

static void test_check_data_must_be_object(void **state)
{
    (void)state;
    expect_err("[1]", P, RD_VALIDATION_FAILED, "data", "object");
}

static void test_check_data_unknown_model_not_found(void **state)
{
    (void)state;
    rd_err err;
    json_t *data = json_object();
    assert_int_equal(store_check_data(NULL, data, STORE_CHECK_PATCH, &err), RD_NOT_FOUND);
    json_decref(data);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_check_data_accepts_valid_document),
        cmocka_unit_test(test_check_data_unknown_field_is_named),
        cmocka_unit_test(test_check_data_unknown_field_in_patch),
        cmocka_unit_test(test_check_data_system_field_is_server_managed),
        cmocka_unit_test(test_check_data_system_field_matches_case_insensitively),
        cmocka_unit_test(test_check_data_string_requires_string),
        cmocka_unit_test(test_check_data_max_length_counts_code_points),
        cmocka_unit_test(test_check_data_integer_accepts_integral_real),
        cmocka_unit_test(test_check_data_integer_rejects_fraction),
        cmocka_unit_test(test_check_data_integer_rejects_unsafe_real),
        cmocka_unit_test(test_check_data_integer_rejects_string),
        cmocka_unit_test(test_check_data_integer_above_max),
        cmocka_unit_test(test_check_data_integer_below_min),
        cmocka_unit_test(test_check_data_number_rules),
        cmocka_unit_test(test_check_data_boolean_rules),
        cmocka_unit_test(test_check_data_timestamp_rules),
        cmocka_unit_test(test_check_data_enum_rules),
        cmocka_unit_test(test_check_data_json_accepts_any_value),
        cmocka_unit_test(test_check_data_json_depth_limit),
        cmocka_unit_test(test_check_data_required_missing_on_create),
        cmocka_unit_test(test_check_data_required_null_on_create_is_missing),
        cmocka_unit_test(test_check_data_default_satisfies_required),
        cmocka_unit_test(test_check_data_replace_needs_required),
        cmocka_unit_test(test_check_data_patch_does_not_need_required),
        cmocka_unit_test(test_check_data_patch_null_clears_optional),
        cmocka_unit_test(test_check_data_patch_null_for_required_rejected),
        cmocka_unit_test(test_check_data_must_be_object),
        cmocka_unit_test(test_check_data_unknown_model_not_found),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
