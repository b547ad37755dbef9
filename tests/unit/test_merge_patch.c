/* Unit tests for store_merge_patch (store/data.c): every example of RFC 7396
 * Appendix A, the example of section 3, and the ownership rules of the
 * function. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "store/store.h"

typedef struct mp_case {
    const char *target, *patch, *result;
} mp_case;

/* RFC 7396 Appendix A, in order. */
static const mp_case appendix_a[] = {
    {"{\"a\":\"b\"}", "{\"a\":\"c\"}", "{\"a\":\"c\"}"},
    {"{\"a\":\"b\"}", "{\"b\":\"c\"}", "{\"a\":\"b\",\"b\":\"c\"}"},
    {"{\"a\":\"b\"}", "{\"a\":null}", "{}"},
    {"{\"a\":\"b\",\"b\":\"c\"}", "{\"a\":null}", "{\"b\":\"c\"}"},
    {"{\"a\":[\"b\"]}", "{\"a\":\"c\"}", "{\"a\":\"c\"}"},
    {"{\"a\":\"c\"}", "{\"a\":[\"b\"]}", "{\"a\":[\"b\"]}"},
    {"{\"a\":{\"b\":\"c\"}}", "{\"a\":{\"b\":\"d\",\"c\":null}}", "{\"a\":{\"b\":\"d\"}}"},
    {"{\"a\":[{\"b\":\"c\"}]}", "{\"a\":[1]}", "{\"a\":[1]}"},
    {"[\"a\",\"b\"]", "[\"c\",\"d\"]", "[\"c\",\"d\"]"},
    {"{\"a\":\"b\"}", "[\"c\"]", "[\"c\"]"},
    {"{\"a\":\"foo\"}", "null", "null"},
    {"{\"a\":\"foo\"}", "\"bar\"", "\"bar\""},
    {"{\"e\":null}", "{\"a\":1}", "{\"e\":null,\"a\":1}"},
    {"[1,2]", "{\"a\":\"b\",\"c\":null}", "{\"a\":\"b\"}"},
    {"{}", "{\"a\":{\"bb\":{\"ccc\":null}}}", "{\"a\":{\"bb\":{}}}"},
};

static json_t *parse(const char *text)
{
    json_error_t e;
    json_t *v = json_loads(text, JSON_DECODE_ANY, &e);
    if (v == NULL)
        fail_msg("bad JSON in test: %s (%s)", text, e.text);
    return v;
}

static void check_case(const mp_case *c)
{
    json_t *target = parse(c->target), *patch = parse(c->patch), *want = parse(c->result);
    json_t *got = store_merge_patch(target, patch);
    assert_non_null(got);
    if (!json_equal(got, want)) {
        char *g = json_dumps(got, JSON_ENCODE_ANY | JSON_COMPACT);
        fail_msg("target %s patch %s: got %s, want %s", c->target, c->patch, g, c->result);
    }
    json_decref(got);
    json_decref(patch);
    json_decref(want);
}

/* One test per Appendix A example, so a failure names the example. */
#define APPENDIX_TEST(n)                                                                           \
    static void test_merge_patch_rfc7396_example_##n(void **state)                                 \
    {                                                                                              \
        (void)state;                                                                               \
        check_case(&appendix_a[(n)-1]);                                                            \
    }
APPENDIX_TEST(1)
APPENDIX_TEST(2)
APPENDIX_TEST(3)
APPENDIX_TEST(4)
APPENDIX_TEST(5)
APPENDIX_TEST(6)
APPENDIX_TEST(7)
APPENDIX_TEST(8)
APPENDIX_TEST(9)
APPENDIX_TEST(10)
APPENDIX_TEST(11)
APPENDIX_TEST(12)
APPENDIX_TEST(13)
APPENDIX_TEST(14)
APPENDIX_TEST(15)

static void test_merge_patch_rfc7396_table_is_complete(void **state)
{
    (void)state;
    assert_int_equal(sizeof appendix_a / sizeof appendix_a[0], 15);
}

/* The example of RFC 7396 section 3. */
static void test_merge_patch_rfc7396_section3_example(void **state)
{
    (void)state;
    mp_case c = {
        "{\"title\":\"Goodbye!\",\"author\":{\"givenName\":\"John\",\"familyName\":\"Doe\"},"
        "\"tags\":[\"example\",\"sample\"],\"content\":\"This will be unchanged\"}",
        "{\"title\":\"Hello!\",\"phoneNumber\":\"+01-123-456-7890\","
        "\"author\":{\"familyName\":null},\"tags\":[\"example\"]}",
        "{\"title\":\"Hello!\",\"author\":{\"givenName\":\"John\"},\"tags\":[\"example\"],"
        "\"content\":\"This will be unchanged\",\"phoneNumber\":\"+01-123-456-7890\"}",
    };
    check_case(&c);
}

static void test_merge_patch_null_removes_field(void **state)
{
    (void)state;
    check_case(&(mp_case){"{\"a\":1,\"b\":2}", "{\"b\":null}", "{\"a\":1}"});
}

static void test_merge_patch_null_for_missing_field_is_noop(void **state)
{
    (void)state;
    check_case(&(mp_case){"{\"a\":1}", "{\"z\":null}", "{\"a\":1}"});
}

static void test_merge_patch_objects_merge_recursively(void **state)
{
    (void)state;
    check_case(&(mp_case){"{\"a\":{\"x\":1,\"y\":{\"p\":1,\"q\":2}}}",
                          "{\"a\":{\"y\":{\"q\":3,\"r\":4}}}",
                          "{\"a\":{\"x\":1,\"y\":{\"p\":1,\"q\":3,\"r\":4}}}"});
}

static void test_merge_patch_non_object_patch_replaces_target(void **state)
{
    (void)state;
    check_case(&(mp_case){"{\"a\":{\"b\":1}}", "42", "42"});
}

static void test_merge_patch_empty_patch_keeps_target(void **state)
{
    (void)state;
    check_case(
        &(mp_case){"{\"a\":[1,2],\"b\":{\"c\":true}}", "{}", "{\"a\":[1,2],\"b\":{\"c\":true}}"});
}

static void test_merge_patch_null_target_becomes_object(void **state)
{
    (void)state;
    json_t *patch = parse("{\"a\":{\"b\":null,\"c\":1}}");
    json_t *got = store_merge_patch(NULL, patch);
    json_t *want = parse("{\"a\":{\"c\":1}}");
    assert_true(json_equal(got, want));
    json_decref(got);
    json_decref(patch);
    json_decref(want);
}

/* The result never shares mutable objects with the patch. */
static void test_merge_patch_does_not_alias_patch(void **state)
{
    (void)state;
    json_t *patch = parse("{\"a\":{\"b\":1}}");
    json_t *got = store_merge_patch(parse("{}"), patch);
    json_object_set_new(json_object_get(got, "a"), "c", json_integer(2));
    json_t *orig = parse("{\"a\":{\"b\":1}}");
    assert_true(json_equal(patch, orig));
    json_decref(got);
    json_decref(patch);
    json_decref(orig);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_merge_patch_rfc7396_example_1),
        cmocka_unit_test(test_merge_patch_rfc7396_example_2),
        cmocka_unit_test(test_merge_patch_rfc7396_example_3),
        cmocka_unit_test(test_merge_patch_rfc7396_example_4),
        cmocka_unit_test(test_merge_patch_rfc7396_example_5),
        cmocka_unit_test(test_merge_patch_rfc7396_example_6),
        cmocka_unit_test(test_merge_patch_rfc7396_example_7),
        cmocka_unit_test(test_merge_patch_rfc7396_example_8),
        cmocka_unit_test(test_merge_patch_rfc7396_example_9),
        cmocka_unit_test(test_merge_patch_rfc7396_example_10),
        cmocka_unit_test(test_merge_patch_rfc7396_example_11),
        cmocka_unit_test(test_merge_patch_rfc7396_example_12),
        cmocka_unit_test(test_merge_patch_rfc7396_example_13),
        cmocka_unit_test(test_merge_patch_rfc7396_example_14),
        cmocka_unit_test(test_merge_patch_rfc7396_example_15),
        cmocka_unit_test(test_merge_patch_rfc7396_table_is_complete),
        cmocka_unit_test(test_merge_patch_rfc7396_section3_example),
        cmocka_unit_test(test_merge_patch_null_removes_field),
        cmocka_unit_test(test_merge_patch_null_for_missing_field_is_noop),
        cmocka_unit_test(test_merge_patch_objects_merge_recursively),
        cmocka_unit_test(test_merge_patch_non_object_patch_replaces_target),
        cmocka_unit_test(test_merge_patch_empty_patch_keeps_target),
        cmocka_unit_test(test_merge_patch_null_target_becomes_object),
        cmocka_unit_test(test_merge_patch_does_not_alias_patch),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
