/* Unit tests for schema definitions (store/schema.c): store_schema_validate
 * rule by rule, the canonical JSON form and reference counting. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "store/store.h"
#include "store/store_int.h"

/* Parses a schema in the canonical JSON form, validates it and returns the
 * code (err holds the error). */
static rd_code validate_text(const char *text, rd_err *err)
{
    json_error_t je;
    json_t *doc = json_loads(text, 0, &je);
    if (doc == NULL)
        fail_msg("bad JSON in test: %s (%s)", text, je.text);
    store_schema *s = store_schema_from_json(doc, 0);
    json_decref(doc);
    if (s == NULL)
        fail_msg("schema did not convert: %s", text);
    rd_err_clear(err);
    rd_code code = store_schema_validate(s, err);
    store_schema_release(s);
    return code;
}

static void expect_invalid(const char *text, const char *field, const char *msg_part)
{
    rd_err err;
    rd_code code = validate_text(text, &err);
    if (code != RD_VALIDATION_FAILED)
        fail_msg("%s: got %s, want validation_failed", text, rd_code_str(code));
    assert_string_equal(err.field, field);
    if (msg_part != NULL && strstr(err.msg, msg_part) == NULL)
        fail_msg("message '%s' lacks '%s'", err.msg, msg_part);
}

/* A one-model schema with a single field given as JSON. */
static void expect_field_invalid(const char *field_json, const char *field, const char *msg_part)
{
    char text[1024];
    snprintf(text, sizeof text, "{\"models\":[{\"name\":\"m\",\"fields\":[%s]}]}", field_json);
    expect_invalid(text, field, msg_part);
}

static const char design_schema[] =
    "{\"models\":[{\"name\":\"students\",\"fields\":["
    "{\"name\":\"firstName\",\"type\":\"STRING\",\"required\":true,\"maxLength\":100},"
    "{\"name\":\"email\",\"type\":\"STRING\",\"unique\":true},"
    "{\"name\":\"age\",\"type\":\"INTEGER\",\"min\":0,\"max\":150},"
    "{\"name\":\"isActive\",\"type\":\"BOOLEAN\",\"default\":true},"
    "{\"name\":\"status\",\"type\":\"ENUM\",\"enumValues\":[\"active\",\"inactive\"]},"
    "{\"name\":\"profile\",\"type\":\"JSON\"},"
    "{\"name\":\"enrolledAt\",\"type\":\"TIMESTAMP\",\"immutable\":true,"
    "\"writableBy\":[\"admin\"]}],"
    "\"uniqueTogether\":[[\"firstName\",\"email\"]]}]}";

static void test_schema_validate_accepts_design_example(void **state)
{
    (void)state;
    rd_err err;
    assert_int_equal(validate_text(design_schema, &err), RD_OK);
}

static void test_schema_validate_accepts_empty_schema(void **state)
{
    (void)state;
    rd_err err;
    assert_int_equal(validate_text("{\"models\":[]}", &err), RD_OK);
}

static void test_schema_validate_accepts_63_character_identifier(void **state)
{
    (void)state;
    rd_err err;
    char text[256];
    snprintf(text, sizeof text, "{\"models\":[{\"name\":\"%s\",\"fields\":[]}]}",
             "m12345678901234567890123456789012345678901234567890123456789012");
    assert_int_equal(validate_text(text, &err), RD_OK);
}

static void test_schema_validate_rejects_64_character_identifier(void **state)
{
    (void)state;
    char text[256];
    snprintf(text, sizeof text, "{\"models\":[{\"name\":\"%s\",\"fields\":[]}]}",
             "m123456789012345678901234567890123456789012345678901234567890123");
    expect_invalid(text, "models[0].name", "not a valid identifier");
}

static void test_schema_validate_rejects_sql_in_model_name(void **state)
{
    (void)state;
    expect_invalid("{\"models\":[{\"name\":\"x; DROP TABLE y\",\"fields\":[]}]}", "models[0].name",
                   "'x; DROP TABLE y' is not a valid identifier");
}

static void test_schema_validate_rejects_sql_in_field_name(void **state)
{
    (void)state;
    expect_field_invalid("{\"name\":\"a\\\" TEXT); DROP TABLE y; --\",\"type\":\"STRING\"}",
                         "models[0].fields[0].name", "not a valid identifier");
}

static void test_schema_validate_rejects_identifier_starting_with_digit(void **state)
{
    (void)state;
    expect_invalid("{\"models\":[{\"name\":\"1students\",\"fields\":[]}]}", "models[0].name",
                   "not a valid identifier");
}

static void test_schema_validate_rejects_identifier_with_dash(void **state)
{
    (void)state;
    expect_field_invalid("{\"name\":\"first-name\",\"type\":\"STRING\"}",
                         "models[0].fields[0].name", "not a valid identifier");
}

static void test_schema_validate_rejects_empty_name(void **state)
{
    (void)state;
    expect_invalid("{\"models\":[{\"name\":\"\",\"fields\":[]}]}", "models[0].name", "required");
}

static void test_schema_validate_rejects_underscore_prefix(void **state)
{
    (void)state;
    expect_field_invalid("{\"name\":\"_secret\",\"type\":\"STRING\"}", "models[0].fields[0].name",
                         "not a valid identifier");
}

static void test_schema_validate_rejects_reserved_field_names(void **state)
{
    (void)state;
    static const char *const names[] = {
        "id",     "createdAt", "updatedAt", "organizationId", "createdBy", "updatedBy", "version",
        "syncId", "group",     "model",     "readAt",         "ID",        "CREATEDAT", "Version",
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        char field[128];
        snprintf(field, sizeof field, "{\"name\":\"%s\",\"type\":\"STRING\"}", names[i]);
        expect_field_invalid(field, "models[0].fields[0].name", "system field name");
    }
}

static void test_schema_validate_rejects_duplicate_field(void **state)
{
    (void)state;
    expect_invalid("{\"models\":[{\"name\":\"m\",\"fields\":[{\"name\":\"age\",\"type\":"
                   "\"INTEGER\"},{\"name\":\"Age\",\"type\":\"STRING\"}]}]}",
                   "models[0].fields[1].name", "duplicate field name 'Age'");
}

static void test_schema_validate_rejects_duplicate_model(void **state)
{
    (void)state;
    expect_invalid("{\"models\":[{\"name\":\"students\",\"fields\":[]},"
                   "{\"name\":\"Students\",\"fields\":[]}]}",
                   "models[1].name", "duplicate model name");
}

static void test_schema_validate_rejects_enum_without_values(void **state)
{
    (void)state;
    expect_field_invalid("{\"name\":\"status\",\"type\":\"ENUM\"}",
                         "models[0].fields[0].enumValues", "at least one value");
}

static void test_schema_validate_rejects_duplicate_enum_value(void **state)
{
    (void)state;
    expect_field_invalid("{\"name\":\"status\",\"type\":\"ENUM\",\"enumValues\":[\"a\",\"a\"]}",
                         "models[0].fields[0].enumValues", "duplicate enum value");
}

static void test_schema_validate_rejects_enum_values_on_string(void **state)
{
    (void)state;
    expect_field_invalid("{\"name\":\"s\",\"type\":\"STRING\",\"enumValues\":[\"a\"]}",
                         "models[0].fields[0].enumValues", "only ENUM");
}

static void test_schema_validate_rejects_default_of_wrong_type(void **state)
{
    (void)state;
    expect_field_invalid("{\"name\":\"age\",\"type\":\"INTEGER\",\"default\":\"ten\"}",
                         "models[0].fields[0].defaultValue", "expected an integer");
}

static void test_schema_validate_rejects_default_out_of_range(void **state)
{
    (void)state;
    expect_field_invalid("{\"name\":\"age\",\"type\":\"INTEGER\",\"max\":150,\"default\":200}",
                         "models[0].fields[0].defaultValue", "200 is above the maximum 150");
}

static void test_schema_validate_rejects_default_not_in_enum(void **state)
{
    (void)state;
    expect_field_invalid("{\"name\":\"s\",\"type\":\"ENUM\",\"enumValues\":[\"a\"],"
                         "\"default\":\"b\"}",
                         "models[0].fields[0].defaultValue", "'b' is not one of");
}

static void test_schema_validate_rejects_default_too_long(void **state)
{
    (void)state;
    expect_field_invalid("{\"name\":\"s\",\"type\":\"STRING\",\"maxLength\":2,\"default\":\"abc\"}",
                         "models[0].fields[0].defaultValue", "maximum length 2");
}

static void test_schema_validate_rejects_min_greater_than_max(void **state)
{
    (void)state;
    expect_field_invalid("{\"name\":\"age\",\"type\":\"INTEGER\",\"min\":10,\"max\":5}",
                         "models[0].fields[0].min", "min 10 is greater than max 5");
}

static void test_schema_validate_rejects_min_on_string(void **state)
{
    (void)state;
    expect_field_invalid("{\"name\":\"s\",\"type\":\"STRING\",\"min\":1}",
                         "models[0].fields[0].min", "only INTEGER and NUMBER");
}

static void test_schema_validate_rejects_unique_together_unknown_field(void **state)
{
    (void)state;
    expect_invalid("{\"models\":[{\"name\":\"m\",\"fields\":[{\"name\":\"a\",\"type\":\"STRING\"}],"
                   "\"uniqueTogether\":[[\"a\",\"b\"]]}]}",
                   "models[0].uniqueTogether[0]", "'b' is not a field of model m");
}

static void test_schema_validate_rejects_empty_unique_together(void **state)
{
    (void)state;
    expect_invalid("{\"models\":[{\"name\":\"m\",\"fields\":[{\"name\":\"a\",\"type\":\"STRING\"}],"
                   "\"uniqueTogether\":[[]]}]}",
                   "models[0].uniqueTogether[0]", "names no fields");
}

static void test_schema_validate_rejects_repeated_unique_together_field(void **state)
{
    (void)state;
    expect_invalid("{\"models\":[{\"name\":\"m\",\"fields\":[{\"name\":\"a\",\"type\":\"STRING\"}],"
                   "\"uniqueTogether\":[[\"a\",\"a\"]]}]}",
                   "models[0].uniqueTogether[0]", "named twice");
}

static void test_schema_validate_rejects_unknown_type(void **state)
{
    (void)state;
    rd_err err;
    store_schema *s = store_schema_new();
    s->models = calloc(1, sizeof *s->models);
    s->n_models = 1;
    s->models[0].name = strdup("m");
    s->models[0].fields = calloc(1, sizeof *s->models[0].fields);
    s->models[0].n_fields = 1;
    s->models[0].fields[0].name = strdup("f");
    s->models[0].fields[0].type = (store_type)42;
    assert_int_equal(store_schema_validate(s, &err), RD_VALIDATION_FAILED);
    assert_string_equal(err.field, "models[0].fields[0].type");
    store_schema_release(s);
}

static void test_schema_validate_rejects_too_many_fields(void **state)
{
    (void)state;
    rd_err err;
    store_schema *s = store_schema_new();
    s->models = calloc(1, sizeof *s->models);
    s->n_models = 1;
    s->models[0].name = strdup("m");
    s->models[0].fields = calloc(STORE_MAX_FIELDS + 1, sizeof *s->models[0].fields);
    s->models[0].n_fields = STORE_MAX_FIELDS + 1;
    for (int i = 0; i <= STORE_MAX_FIELDS; i++) {
        char name[16];
        snprintf(name, sizeof name, "f%d", i);
        s->models[0].fields[i].name = strdup(name);
        s->models[0].fields[i].type = STORE_T_STRING;
    }
    assert_int_equal(store_schema_validate(s, &err), RD_VALIDATION_FAILED);
    assert_string_equal(err.field, "models[0].fields");
    s->models[0].n_fields = STORE_MAX_FIELDS; /* exactly the limit is fine */
    assert_int_equal(store_schema_validate(s, &err), RD_OK);
    s->models[0].n_fields = STORE_MAX_FIELDS + 1; /* so release frees every name */
    store_schema_release(s);
}

static void test_schema_validate_rejects_too_many_models(void **state)
{
    (void)state;
    rd_err err;
    store_schema *s = store_schema_new();
    s->models = calloc(STORE_MAX_MODELS + 1, sizeof *s->models);
    s->n_models = STORE_MAX_MODELS + 1;
    for (int i = 0; i <= STORE_MAX_MODELS; i++) {
        char name[16];
        snprintf(name, sizeof name, "m%d", i);
        s->models[i].name = strdup(name);
    }
    assert_int_equal(store_schema_validate(s, &err), RD_VALIDATION_FAILED);
    assert_string_equal(err.field, "models");
    store_schema_release(s);
}

static void test_schema_validate_null_schema(void **state)
{
    (void)state;
    rd_err err;
    assert_int_equal(store_schema_validate(NULL, &err), RD_VALIDATION_FAILED);
}

static void test_schema_json_round_trips(void **state)
{
    (void)state;
    json_t *doc = json_loads(design_schema, 0, NULL);
    store_schema *s = store_schema_from_json(doc, 7);
    assert_non_null(s);
    assert_int_equal(s->revision, 7);
    json_t *first = store_schema_to_json(s);
    store_schema *s2 = store_schema_from_json(first, 7);
    json_t *again = store_schema_to_json(s2);
    assert_true(json_equal(first, again));
    json_decref(first);
    store_schema_release(s2);
    const store_model *m = store_schema_model(s, "students");
    assert_non_null(m);
    assert_int_equal(m->n_unique_together, 1);
    assert_true(store_model_field(m, "email")->unique);
    assert_null(store_model_field(m, "nope"));
    assert_null(store_schema_model(s, "nope"));
    json_decref(doc);
    json_decref(again);
    store_schema_release(s);
}

/* Struct numbers arrive as doubles: an INTEGER default 5.0 is stored as 5,
 * so pushing it twice compares equal. */
static void test_schema_json_normalises_integer_default(void **state)
{
    (void)state;
    store_field f = {.name = "n", .type = STORE_T_INTEGER, .default_value = json_real(5.0)};
    json_t *j = store_field_to_json(&f);
    assert_true(json_is_integer(json_object_get(j, "default")));
    assert_int_equal(json_integer_value(json_object_get(j, "default")), 5);
    json_decref(j);
    json_decref(f.default_value);
}

static void test_schema_ref_and_release(void **state)
{
    (void)state;
    store_schema *s = store_schema_new();
    assert_int_equal(s->revision, 0);
    assert_ptr_equal(store_schema_ref(s), s);
    store_schema_release(s);
    assert_int_equal(s->refs_, 1);
    store_schema_release(s);
}

/* A schema text with one ENUM field of n values "v0".."v{n-1}" (plus a
 * repeat of "v7" when dup); malloc'd. */
static char *enum_schema(size_t n, bool dup)
{
    size_t cap = 128 + n * 16;
    char *t = malloc(cap);
    assert_non_null(t);
    size_t o = (size_t)snprintf(t, cap,
                                "{\"models\":[{\"name\":\"m\",\"fields\":[{\"name\":\"e\","
                                "\"type\":\"ENUM\",\"enumValues\":[");
    for (size_t i = 0; i < n; i++)
        o += (size_t)snprintf(t + o, cap - o, "%s\"v%zu\"", i ? "," : "", i);
    if (dup)
        o += (size_t)snprintf(t + o, cap - o, ",\"v7\"");
    snprintf(t + o, cap - o, "]}]}]}");
    return t;
}

static void test_schema_validate_caps_enum_values_and_finds_duplicates(void **state)
{
    (void)state;
    char *ok = enum_schema(1000, false), *dup = enum_schema(999, true),
         *big = enum_schema(1001, false);
    rd_err err;
    assert_int_equal(validate_text(ok, &err), RD_OK);
    expect_invalid(dup, "models[0].fields[0].enumValues", "duplicate enum value 'v7'");
    expect_invalid(big, "models[0].fields[0].enumValues", "at most 1000");
    free(ok);
    free(dup);
    free(big);
}

static void test_schema_validate_refuses_a_repeated_unique_together(void **state)
{
    (void)state;
    expect_invalid("{\"models\":[{\"name\":\"m\",\"fields\":[{\"name\":\"a\",\"type\":\"STRING\"},"
                   "{\"name\":\"b\",\"type\":\"STRING\"}],"
                   "\"uniqueTogether\":[[\"a\",\"b\"],[\"b\",\"a\"]]}]}",
                   "models[0].uniqueTogether[1]", "same fields as uniqueTogether[0]");
    expect_field_invalid("{\"name\":\"a\",\"type\":\"STRING\",\"writableBy\":["
                         "\"r\",\"r\",\"r\",\"r\",\"r\",\"r\",\"r\",\"r\",\"r\",\"r\",\"r\",\"r\","
                         "\"r\",\"r\",\"r\",\"r\",\"r\",\"r\",\"r\",\"r\",\"r\",\"r\",\"r\",\"r\","
                         "\"r\",\"r\",\"r\",\"r\",\"r\",\"r\",\"r\",\"r\",\"r\",\"r\",\"r\",\"r\","
                         "\"r\",\"r\",\"r\",\"r\",\"r\",\"r\",\"r\",\"r\",\"r\",\"r\",\"r\",\"r\","
                         "\"r\",\"r\",\"r\",\"r\",\"r\",\"r\",\"r\",\"r\",\"r\",\"r\",\"r\",\"r\","
                         "\"r\",\"r\",\"r\",\"r\",\"r\"]}",
                         "models[0].fields[0].writableBy", "at most 64 roles");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_schema_validate_caps_enum_values_and_finds_duplicates),
        cmocka_unit_test(test_schema_validate_refuses_a_repeated_unique_together),
        cmocka_unit_test(test_schema_validate_accepts_design_example),
        cmocka_unit_test(test_schema_validate_accepts_empty_schema),
        cmocka_unit_test(test_schema_validate_accepts_63_character_identifier),
        cmocka_unit_test(test_schema_validate_rejects_64_character_identifier),
        cmocka_unit_test(test_schema_validate_rejects_sql_in_model_name),
        cmocka_unit_test(test_schema_validate_rejects_sql_in_field_name),
        cmocka_unit_test(test_schema_validate_rejects_identifier_starting_with_digit),
        cmocka_unit_test(test_schema_validate_rejects_identifier_with_dash),
        cmocka_unit_test(test_schema_validate_rejects_empty_name),
        cmocka_unit_test(test_schema_validate_rejects_underscore_prefix),
        cmocka_unit_test(test_schema_validate_rejects_reserved_field_names),
        cmocka_unit_test(test_schema_validate_rejects_duplicate_field),
        cmocka_unit_test(test_schema_validate_rejects_duplicate_model),
        cmocka_unit_test(test_schema_validate_rejects_enum_without_values),
        cmocka_unit_test(test_schema_validate_rejects_duplicate_enum_value),
        cmocka_unit_test(test_schema_validate_rejects_enum_values_on_string),
        cmocka_unit_test(test_schema_validate_rejects_default_of_wrong_type),
        cmocka_unit_test(test_schema_validate_rejects_default_out_of_range),
        cmocka_unit_test(test_schema_validate_rejects_default_not_in_enum),
        cmocka_unit_test(test_schema_validate_rejects_default_too_long),
        cmocka_unit_test(test_schema_validate_rejects_min_greater_than_max),
        cmocka_unit_test(test_schema_validate_rejects_min_on_string),
        cmocka_unit_test(test_schema_validate_rejects_unique_together_unknown_field),
        cmocka_unit_test(test_schema_validate_rejects_empty_unique_together),
        cmocka_unit_test(test_schema_validate_rejects_repeated_unique_together_field),
        cmocka_unit_test(test_schema_validate_rejects_unknown_type),
        cmocka_unit_test(test_schema_validate_rejects_too_many_fields),
        cmocka_unit_test(test_schema_validate_rejects_too_many_models),
        cmocka_unit_test(test_schema_validate_null_schema),
        cmocka_unit_test(test_schema_json_round_trips),
        cmocka_unit_test(test_schema_json_normalises_integer_default),
        cmocka_unit_test(test_schema_ref_and_release),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
