/* Unit tests for the filter grammar and order_by (store/filter.c): the
 * compiled SQL fragment, the bound values, and the error each bad input
 * gets (code, field, position or field name in the message). */
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

static const char model_json[] =
    "{\"models\":[{\"name\":\"students\",\"fields\":["
    "{\"name\":\"firstName\",\"type\":\"STRING\"},"
    "{\"name\":\"age\",\"type\":\"INTEGER\"},"
    "{\"name\":\"score\",\"type\":\"NUMBER\"},"
    "{\"name\":\"isActive\",\"type\":\"BOOLEAN\"},"
    "{\"name\":\"status\",\"type\":\"ENUM\",\"enumValues\":[\"active\",\"inactive\"]},"
    "{\"name\":\"profile\",\"type\":\"JSON\"},"
    "{\"name\":\"enrolledAt\",\"type\":\"TIMESTAMP\"},"
    "{\"name\":\"city\",\"type\":\"REFERENCE\",\"references\":\"cities\"},"
    "{\"name\":\"mentor\",\"type\":\"REFERENCE\",\"references\":\"students\"}]},"
    "{\"name\":\"cities\",\"fields\":["
    "{\"name\":\"name\",\"type\":\"STRING\"},"
    "{\"name\":\"pop\",\"type\":\"INTEGER\"},"
    "{\"name\":\"meta\",\"type\":\"JSON\"},"
    "{\"name\":\"country\",\"type\":\"REFERENCE\",\"references\":\"countries\"}]},"
    "{\"name\":\"countries\",\"fields\":["
    "{\"name\":\"code\",\"type\":\"STRING\"},"
    "{\"name\":\"continent\",\"type\":\"REFERENCE\",\"references\":\"continents\"}]},"
    "{\"name\":\"continents\",\"fields\":[{\"name\":\"name\",\"type\":\"STRING\"}]}]}";

static store_schema *schema;
static const store_model *model;
static store_db *db;

static int setup(void **state)
{
    (void)state;
    json_t *doc = json_loads(model_json, 0, NULL);
    schema = store_schema_from_json(doc, 1);
    json_decref(doc);
    model = store_schema_model(schema, "students");
    char msg[128];
    store_db_options opt = {.role = STORE_DB_TOOL};
    if (store_sqlite_open(":memory:", &opt, &db, msg, sizeof msg) != STORE_DB_OK)
        return -1;
    return schema != NULL && model != NULL ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    store_schema_release(schema);
    store_db_close(db);
    return 0;
}

/* Parses text, which must succeed, and checks the compiled SQL. */
static store_filter *parse_ok(const char *text, const char *sql)
{
    store_filter *f = NULL;
    rd_err err;
    rd_err_clear(&err);
    rd_code code = store_filter_parse(schema, "o", model, text, NULL, &f, &err);
    if (code != RD_OK)
        fail_msg("'%s': %s", text, err.msg);
    assert_string_equal(store_filter_sql(f), sql);
    return f;
}

/* Parses text, which must fail with VALIDATION_FAILED on field "filter"
 * and a message containing want. */
static void parse_bad(const char *text, const char *want)
{
    store_filter *f = NULL;
    rd_err err;
    rd_err_clear(&err);
    assert_int_equal(store_filter_parse(schema, "o", model, text, NULL, &f, &err),
                     RD_VALIDATION_FAILED);
    assert_null(f);
    assert_string_equal(err.field, "filter");
    if (strstr(err.msg, want) == NULL)
        fail_msg("'%s': message '%s' lacks '%s'", text, err.msg, want);
}

/* The values f binds, as "SELECT ?, ?, ..." renders them with quote(). */
static void expect_bound(const store_filter *f, const char *want)
{
    char sql[512] = "SELECT quote(?)";
    store_dbst *st = NULL;
    size_t n = 0;
    for (const char *p = store_filter_sql(f); *p; p++)
        n += *p == '?';
    if (n == 0) {
        assert_string_equal(want, "");
        return;
    }
    for (size_t i = 1; i < n; i++)
        strcat(sql, " || ',' || quote(?)");
    assert_int_equal(store_db_prepare(db, sql, &st), STORE_DB_OK);
    int idx = 1;
    assert_int_equal(store_filter_bind(f, st, &idx), STORE_DB_OK);
    assert_int_equal(idx, (int)n + 1);
    assert_int_equal(store_db_step(st), STORE_DB_ROW);
    assert_string_equal((const char *)store_db_column_text(st, 0), want);
    store_db_finalize(st);
}

static void test_filter_blank_has_no_condition(void **state)
{
    (void)state;
    store_filter *f = parse_ok("", "TRUE");
    assert_int_equal(store_filter_conditions(f), 0);
    store_filter_free(f);
    f = parse_ok(" \t\n ", "TRUE");
    assert_int_equal(store_filter_conditions(f), 0);
    store_filter_free(f);
    f = parse_ok(NULL, "TRUE");
    store_filter_free(f);
}

static void test_filter_every_operator(void **state)
{
    (void)state;
    static const struct {
        const char *text, *sql;
    } cases[] = {
        {"age = 5", "\"age\" = ?"},   {"age != 5", "\"age\" <> ?"}, {"age < 5", "\"age\" < ?"},
        {"age <= 5", "\"age\" <= ?"}, {"age > 5", "\"age\" > ?"},   {"age >= 5", "\"age\" >= ?"},
        {"age>=5", "\"age\" >= ?"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        store_filter *f = parse_ok(cases[i].text, cases[i].sql);
        assert_int_equal(store_filter_conditions(f), 1);
        expect_bound(f, "5");
        store_filter_free(f);
    }
}

static void test_filter_and_joins_comparisons(void **state)
{
    (void)state;
    store_filter *f = parse_ok("firstName = \"Ann\" AND age > 3 AND isActive = true",
                               "\"firstName\" = ? AND \"age\" > ? AND \"isActive\" = ?");
    assert_int_equal(store_filter_conditions(f), 3);
    expect_bound(f, "'Ann',3,1");
    store_filter_free(f);
}

static void test_filter_number_literals(void **state)
{
    (void)state;
    store_filter *f = parse_ok("score >= -1.5 AND age < +7 AND age != 9223372036854775807",
                               "\"score\" >= ? AND \"age\" < ? AND \"age\" <> ?");
    expect_bound(f, "-1.5,7,9223372036854775807");
    store_filter_free(f);
    f = parse_ok("score = 99999999999999999999", "\"score\" = ?");
    expect_bound(f, "1.0e+20");
    store_filter_free(f);
    /* a fractional or huge number against an INTEGER field compares as a
     * double, said so for PostgreSQL, which types the parameter by column */
    f = parse_ok("age < 2.5 AND age > 99999999999999999999 AND age >= 3",
                 "\"age\" < CAST(? AS DOUBLE PRECISION) AND \"age\" > CAST(? AS DOUBLE PRECISION)"
                 " AND \"age\" >= ?");
    expect_bound(f, "2.5,1.0e+20,3");
    store_filter_free(f);
}

static void test_filter_bool_literals(void **state)
{
    (void)state;
    store_filter *f =
        parse_ok("isActive = false AND isActive != true", "\"isActive\" = ? AND \"isActive\" <> ?");
    expect_bound(f, "0,1");
    store_filter_free(f);
}

static void test_filter_null_compiles_to_is_null(void **state)
{
    (void)state;
    store_filter *f =
        parse_ok("age = null AND status != null", "\"age\" IS NULL AND \"status\" IS NOT NULL");
    assert_int_equal(store_filter_conditions(f), 2);
    expect_bound(f, "");
    store_filter_free(f);
}

static void test_filter_null_refuses_ordering(void **state)
{
    (void)state;
    parse_bad("age < null", "null compares only with = or != (position 7)");
}

static void test_filter_string_escapes(void **state)
{
    (void)state;
    store_filter *f = parse_ok("firstName = \"a\\\"b\\\\c\"", "\"firstName\" = ?");
    expect_bound(f, "'a\"b\\c'");
    store_filter_free(f);
    parse_bad("firstName = \"a\\nb\"", "position 16");
    parse_bad("firstName = \"abc", "unterminated string starting at position 13");
}

static void test_filter_system_fields(void **state)
{
    (void)state;
    store_filter *f = parse_ok("id = \"r1\" AND group = \"team-a\" AND version >= 2 AND "
                               "syncId > 10 AND createdAt < \"2024-01-01T00:00:00Z\" AND "
                               "updatedAt >= \"2024-01-01T00:00:01Z\"",
                               "\"_id\" = ? AND \"_group\" = ? AND \"_version\" >= ? AND "
                               "\"_sync_id\" > ? AND \"_created_at\" < ? AND \"_updated_at\" >= ?");
    expect_bound(f, "'r1','team-a',2,10,1704067200000000,1704067201000000");
    store_filter_free(f);
}

static void test_filter_timestamp_field_takes_rfc3339(void **state)
{
    (void)state;
    store_filter *f = parse_ok("enrolledAt > \"2024-01-01T01:00:00+01:00\"", "\"enrolledAt\" > ?");
    expect_bound(f, "1704067200000000");
    store_filter_free(f);
    parse_bad("enrolledAt > \"yesterday\"", "field 'enrolledAt' is a TIMESTAMP");
    parse_bad("createdAt > 5", "field 'createdAt' is TIMESTAMP");
}

static void test_filter_unknown_field(void **state)
{
    (void)state;
    parse_bad("age = 1 AND nickname = \"x\"", "unknown field 'nickname' at position 13");
    parse_bad("Age = 1", "unknown field 'Age'");
    parse_bad("organizationId = \"x\"", "unknown field 'organizationId'");
}

static void test_filter_type_mismatch_names_field(void **state)
{
    (void)state;
    parse_bad("age = \"5\"", "field 'age' is INTEGER; a string literal");
    parse_bad("firstName = 5", "field 'firstName' is STRING; a number literal");
    parse_bad("status = true", "field 'status' is ENUM; a boolean literal");
    parse_bad("isActive = 1", "field 'isActive' is BOOLEAN; a number literal");
    parse_bad("isActive < true", "field 'isActive' is BOOLEAN and compares only with = or !=");
    parse_bad("profile = \"x\"", "field 'profile' is JSON and cannot be filtered");
}

static void test_filter_syntax_errors_name_position(void **state)
{
    (void)state;
    parse_bad("age", "expected an operator (= != < <= > >=) at position 4 (end of input)");
    parse_bad("age = ", "expected a literal");
    parse_bad("age == 5", "at position 6");
    parse_bad("age = 5 and age = 6", "expected AND (uppercase, between spaces) or the end of the "
                                     "filter at position 9");
    parse_bad("age = 5 AND", "position 9");
    parse_bad("age = 5 AND ", "expected a field name at position 13");
    parse_bad("age = 5 OR age = 6", "position 9");
    parse_bad("(age = 5)", "expected a field name at position 1");
    parse_bad("age = 5x", "position 8");
    parse_bad("age = 1.", "a digit after '.' at position 9");
    parse_bad("age = -x", "a digit at position 8");
    parse_bad("age = yes", "expected a literal");
}

static void test_filter_caps(void **state)
{
    (void)state;
    char big[STORE_FILTER_MAX_LEN + 2];
    memset(big, ' ', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    parse_bad(big, "longer than 4096 bytes");

    char many[2048] = "";
    for (int i = 0; i < STORE_FILTER_MAX_CONDS; i++)
        strcat(many, i ? " AND age = 1" : "age = 1");
    store_filter *f = NULL;
    rd_err err;
    assert_int_equal(store_filter_parse(schema, "o", model, many, NULL, &f, &err), RD_OK);
    assert_int_equal(store_filter_conditions(f), STORE_FILTER_MAX_CONDS);
    store_filter_free(f);
    strcat(many, " AND age = 1");
    parse_bad(many, "more than 64 comparisons");
}

static void test_filter_sql_injection_stays_a_bound_literal(void **state)
{
    (void)state;
    store_filter *f =
        parse_ok("firstName = \"x' OR 1=1 --\" AND status = \"a\\\"; DROP TABLE t; --\"",
                 "\"firstName\" = ? AND \"status\" = ?");
    expect_bound(f, "'x'' OR 1=1 --','a\"; DROP TABLE t; --'");
    store_filter_free(f);
    parse_bad("firstName = \"x\" OR 1=1 --", "position 17");
    parse_bad("firstName = x' OR 1=1 --", "expected a literal");
}

/* ---- paths through references ------------------------------------------------------ */

#define CITIES "\"r_o__cities\""
#define COUNTRIES "\"r_o__countries\""
#define CONTINENTS "\"r_o__continents\""

static void test_path_depth_1_2_3(void **state)
{
    (void)state;
    store_filter *f =
        parse_ok("city.name = \"London\"", "\"city\" IN (SELECT \"_r1\"._id FROM " CITIES
                                           " AS \"_r1\" WHERE \"_r1\".\"name\" = ?)");
    assert_int_equal(store_filter_conditions(f), 1);
    expect_bound(f, "'London'");
    store_filter_free(f);
    f = parse_ok("city.country.code = \"GB\"", "\"city\" IN (SELECT \"_r1\"._id FROM " CITIES
                                               " AS \"_r1\" WHERE \"_r1\".\"country\" "
                                               "IN (SELECT \"_r2\"._id FROM " COUNTRIES
                                               " AS \"_r2\" WHERE \"_r2\".\"code\" = ?))");
    expect_bound(f, "'GB'");
    store_filter_free(f);
    f = parse_ok(
        "city.country.continent.name != \"Asia\"",
        "\"city\" IN (SELECT \"_r1\"._id FROM " CITIES " AS \"_r1\" WHERE \"_r1\".\"country\" "
        "IN (SELECT \"_r2\"._id FROM " COUNTRIES " AS \"_r2\" WHERE \"_r2\".\"continent\" "
        "IN (SELECT \"_r3\"._id FROM " CONTINENTS " AS \"_r3\" WHERE \"_r3\".\"name\" <> ?)))");
    expect_bound(f, "'Asia'");
    store_filter_free(f);
    /* a self-reference, system fields at the end, null, and a reference
     * field compared directly, mixed with ordinary comparisons */
    f = parse_ok(
        "age > 3 AND mentor.id = \"s1\" AND city.pop < 2.5 AND city.country = null AND "
        "city = \"c1\" AND city.createdAt >= \"2024-01-01T00:00:00Z\"",
        "\"age\" > ? AND \"mentor\" IN (SELECT \"_r1\"._id FROM \"r_o__students\" AS "
        "\"_r1\" WHERE \"_r1\".\"_id\" = ?) AND \"city\" IN (SELECT \"_r1\"._id FROM " CITIES
        " AS \"_r1\" WHERE \"_r1\".\"pop\" < CAST(? AS DOUBLE PRECISION)) AND \"city\" IN "
        "(SELECT \"_r1\"._id FROM " CITIES " AS \"_r1\" WHERE \"_r1\".\"country\" IS NULL) AND "
        "\"city\" = ? AND \"city\" IN (SELECT \"_r1\"._id FROM " CITIES
        " AS \"_r1\" WHERE \"_r1\".\"_created_at\" >= ?)");
    assert_int_equal(store_filter_conditions(f), 6);
    expect_bound(f, "3,'s1',2.5,'c1',1704067200000000");
    store_filter_free(f);
}

static void test_path_errors_name_position(void **state)
{
    (void)state;
    parse_bad("city.nam = \"x\"",
              "unknown field 'nam' of model 'cities' in 'city.nam' at position 6");
    parse_bad("age = 1 AND city.country.cod = \"GB\"",
              "unknown field 'cod' of model 'countries' in 'city.country.cod' at position 26");
    parse_bad("nope.name = \"x\"", "unknown field 'nope' at position 1");
    parse_bad("firstName.x = \"a\"",
              "field 'firstName' of model 'students' is STRING, not a "
              "REFERENCE, so 'firstName.x' cannot go through it (position 1)");
    parse_bad("city.name.x = \"a\"", "not a REFERENCE");
    parse_bad("city.id.x = \"a\"", "field 'id' of model 'cities' is STRING, not a REFERENCE");
    /* three references are the most: the fourth is named */
    parse_bad(
        "mentor.city.country.continent.name = \"Europe\"",
        "'mentor.city.country.continent.name' traverses more than 3 references (position 21)");
    parse_bad("mentor.mentor.mentor.mentor.mentor.mentor.mentor.id = \"x\"",
              "traverses more than 3 references (position 22)");
    store_filter_free(
        parse_ok("mentor.mentor.mentor.id = \"x\"",
                 "\"mentor\" IN (SELECT \"_r1\"._id FROM \"r_o__students\" AS \"_r1\" "
                 "WHERE \"_r1\".\"mentor\" IN (SELECT \"_r2\"._id FROM "
                 "\"r_o__students\" AS \"_r2\" WHERE \"_r2\".\"mentor\" IN (SELECT "
                 "\"_r3\"._id FROM \"r_o__students\" AS \"_r3\" WHERE "
                 "\"_r3\".\"_id\" = ?)))"));
    /* type checks name the whole path */
    parse_bad("city.pop = \"x\"", "field 'city.pop' is INTEGER; a string literal does not compare "
                                  "with it (position 12)");
    parse_bad("city.country.code = 5", "field 'city.country.code' is STRING; a number literal");
    parse_bad("city.meta = \"x\"", "field 'city.meta' is JSON and cannot be filtered (position 6)");
    parse_bad("city.createdAt > \"yesterday\"", "field 'city.createdAt' is a TIMESTAMP");
    parse_bad("city.name < null", "null compares only with = or != (position 13)");
    /* the syntax of a path: names joined by dots, nothing else */
    parse_bad("city.\"x\" = \"a\"", "expected a field name after '.' at position 6");
    parse_bad("city. name = \"a\"", "expected a field name after '.' at position 6");
    parse_bad("city .name = \"a\"", "expected an operator (= != < <= > >=) at position 6");
    parse_bad("city.", "expected a field name after '.' at position 6 (end of input)");
    parse_bad("city..name = \"a\"", "at position 6");
    parse_bad(".name = \"a\"", "expected a field name at position 1");
}

static void test_path_injection_stays_literal_or_fails(void **state)
{
    (void)state;
    store_filter *f =
        parse_ok("city.name = \"x\\\" OR 1=1 --\" AND city.country.code = \"') --\"",
                 "\"city\" IN (SELECT \"_r1\"._id FROM " CITIES
                 " AS \"_r1\" WHERE \"_r1\".\"name\" = ?) AND \"city\" IN (SELECT "
                 "\"_r1\"._id FROM " CITIES " AS \"_r1\" WHERE \"_r1\".\"country\" IN "
                 "(SELECT \"_r2\"._id FROM " COUNTRIES " AS \"_r2\" WHERE \"_r2\".\"code\" = ?))");
    expect_bound(f, "'x\" OR 1=1 --',''') --'");
    store_filter_free(f);
    parse_bad("city.name\" OR 1=1 --", "expected an operator (= != < <= > >=) at position 10");
    parse_bad("city.name = \"x\" OR 1=1", "position 17");
    parse_bad("city.name;DROP TABLE t = \"x\"", "position 10");
    /* a very long path stops at the first segment that does not resolve */
    char big[STORE_FILTER_MAX_LEN];
    big[0] = '\0';
    for (int i = 0; i < 800; i++)
        strcat(big, "city.");
    strcat(big, "name = \"x\"");
    parse_bad(big, "unknown field 'city' of model 'cities'");
    big[0] = '\0';
    for (int i = 0; i < 500; i++)
        strcat(big, "mentor.");
    strcat(big, "id = \"x\"");
    parse_bad(big, "traverses more than 3 references (position 22)");
}

/* An access that restricts cities to two groups, countries to none and
 * lets every continent through; denies students; counts its calls. */
static int access_calls;
static char access_group[16];

static rd_code test_access(void *ctx, const char *target, bool *all, const char ***groups,
                           size_t *n, rd_err *err)
{
    static const char *two[2] = {access_group, "g2"};
    (void)ctx;
    access_calls++;
    if (strcmp(target, "cities") == 0) {
        *groups = two;
        *n = 2;
    } else if (strcmp(target, "continents") == 0) {
        *all = true;
    } else if (strcmp(target, "countries") != 0) {
        return rd_errf(err, RD_PERMISSION_DENIED, NULL, "no read on %s", target);
    }
    return RD_OK;
}

static void test_path_access_restricts_groups(void **state)
{
    (void)state;
    store_filter_access acc = {test_access, NULL};
    store_filter *f = NULL;
    rd_err err;
    rd_err_clear(&err);
    access_calls = 0;
    snprintf(access_group, sizeof access_group, "g1");
    assert_int_equal(store_filter_parse(schema, "o", model,
                                        "city.name = \"L\" AND city.country.continent.name = \"E\"",
                                        &acc, &f, &err),
                     RD_OK);
    /* once per model entered, the groups copied */
    assert_int_equal(access_calls, 3);
    snprintf(access_group, sizeof access_group, "changed");
    assert_string_equal(
        store_filter_sql(f),
        "\"city\" IN (SELECT \"_r1\"._id FROM " CITIES " AS \"_r1\" WHERE \"_r1\"._group IN (?, ?) "
        "AND \"_r1\".\"name\" = ?) AND \"city\" IN (SELECT \"_r1\"._id FROM " CITIES
        " AS \"_r1\" WHERE \"_r1\"._group IN (?, ?) AND \"_r1\".\"country\" IN (SELECT \"_r2\"._id "
        "FROM " COUNTRIES " AS \"_r2\" WHERE \"_r2\"._group IN (NULL) AND \"_r2\".\"continent\" IN "
        "(SELECT \"_r3\"._id FROM " CONTINENTS " AS \"_r3\" WHERE \"_r3\".\"name\" = ?)))");
    expect_bound(f, "'g1','g2','L','g1','g2','E'");
    store_filter_free(f);
    /* the base model is the caller's to restrict: not asked */
    access_calls = 0;
    assert_int_equal(store_filter_parse(schema, "o", model, "age = 1", &acc, &f, &err), RD_OK);
    assert_int_equal(access_calls, 0);
    store_filter_free(f);
    /* a denial fails the parse with its code */
    f = NULL;
    assert_int_equal(
        store_filter_parse(schema, "o", model, "age = 1 AND mentor.age = 2", &acc, &f, &err),
        RD_PERMISSION_DENIED);
    assert_null(f);
    assert_non_null(strstr(err.msg, "no read on students"));
}

/* The compiled fragments run on SQLite with the semantics documented in
 * store.h: a comparison through an unset or unreadable reference never
 * matches. */
static void test_path_runs_on_sqlite(void **state)
{
    (void)state;
    static const char *const ddl[] = {
        "CREATE TABLE r_o__students (_id TEXT, _group TEXT, age INTEGER, city TEXT, mentor TEXT)",
        "CREATE TABLE r_o__cities (_id TEXT, _group TEXT, name TEXT, pop INTEGER, country TEXT)",
        "CREATE TABLE r_o__countries (_id TEXT, _group TEXT, code TEXT, continent TEXT)",
        "CREATE TABLE r_o__continents (_id TEXT, _group TEXT, name TEXT)",
        "INSERT INTO r_o__continents VALUES ('k1', 'g1', 'Europe')",
        "INSERT INTO r_o__countries VALUES ('n1', 'g1', 'GB', 'k1'), ('n2', 'g1', 'FR', NULL)",
        "INSERT INTO r_o__cities VALUES ('c1', 'g1', 'London', 9, 'n1'), ('c2', 'g2', 'Paris', 2, "
        "'n2'), ('c3', 'g3', 'Leeds', 1, 'n1'), ('c4', 'g1', NULL, 0, NULL)",
        "INSERT INTO r_o__students VALUES ('s1', 'g', 1, 'c1', NULL), ('s2', 'g', 2, 'c2', 's1'), "
        "('s3', 'g', 3, 'c3', 's2'), ('s4', 'g', 4, NULL, 's3'), ('s5', 'g', 5, 'c4', 's1')",
    };
    for (size_t i = 0; i < sizeof ddl / sizeof ddl[0]; i++)
        assert_int_equal(store_db_exec(db, ddl[i]), STORE_DB_OK);
    static const struct {
        const char *filter, *all, *restricted;
    } cases[] = {
        {"city.name = \"London\"", "s1", "s1"},
        {"city.name != \"London\"", "s2,s3", "s2"}, /* c3 is in g3 */
        {"city.name = null", "s5", "s5"},
        {"city.country.code = \"GB\"", "s1,s3", ""},               /* countries: no group */
        {"city.country.continent.name = \"Europe\"", "s1,s3", ""}, /* likewise */
        {"city.country = null", "s5", "s5"},
        {"city.pop > 0 AND age > 1", "s2,s3", "s2"},
        {"city.name = \"x') OR 1=1 --\"", "", ""},
    };
    for (int restricted = 0; restricted < 2; restricted++) {
        for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
            store_filter_access acc = {test_access, NULL};
            store_filter *f = NULL;
            rd_err err;
            snprintf(access_group, sizeof access_group, "g1");
            const char *flt = cases[i].filter;
            if (store_filter_parse(schema, "o", model, flt, restricted ? &acc : NULL, &f, &err) !=
                RD_OK)
                fail_msg("'%s': %s", flt, err.msg);
            char sql[2048];
            snprintf(sql, sizeof sql,
                     "SELECT coalesce(group_concat(_id, ','), '') FROM (SELECT _id FROM "
                     "r_o__students WHERE %s ORDER BY _id)",
                     store_filter_sql(f));
            store_dbst *st = NULL;
            assert_int_equal(store_db_prepare(db, sql, &st), STORE_DB_OK);
            int idx = 1;
            assert_int_equal(store_filter_bind(f, st, &idx), STORE_DB_OK);
            assert_int_equal(store_db_step(st), STORE_DB_ROW);
            const char *want = restricted ? cases[i].restricted : cases[i].all;
            if (strcmp((const char *)store_db_column_text(st, 0), want) != 0)
                fail_msg("'%s' (%s): got '%s', want '%s'", flt, restricted ? "restricted" : "all",
                         (const char *)store_db_column_text(st, 0), want);
            store_db_finalize(st);
            store_filter_free(f);
        }
    }
    /* the self-reference, without an access */
    store_filter *f = NULL;
    rd_err err;
    assert_int_equal(store_filter_parse(schema, "o", model,
                                        "mentor.mentor.city.name = \"London\" AND mentor.age >= 1",
                                        NULL, &f, &err),
                     RD_OK);
    char sql[2048];
    snprintf(sql, sizeof sql,
             "SELECT coalesce(group_concat(_id, ','), '') FROM (SELECT _id FROM r_o__students "
             "WHERE %s ORDER BY _id)",
             store_filter_sql(f));
    store_dbst *st = NULL;
    assert_int_equal(store_db_prepare(db, sql, &st), STORE_DB_OK);
    int idx = 1;
    assert_int_equal(store_filter_bind(f, st, &idx), STORE_DB_OK);
    assert_int_equal(store_db_step(st), STORE_DB_ROW);
    /* s3's mentor s2 has the mentor s1, who lives in London */
    assert_string_equal((const char *)store_db_column_text(st, 0), "s3");
    store_db_finalize(st);
    store_filter_free(f);
}

/* ---- order_by -------------------------------------------------------------------- */

static void expect_order(const char *text, const char *want)
{
    store_order *o = NULL;
    rd_err err;
    rd_err_clear(&err);
    if (store_order_parse(schema, "o", model, text, NULL, &o, &err) != RD_OK)
        fail_msg("'%s': %s", text ? text : "(null)", err.msg);
    char got[256] = "";
    for (size_t i = 0; i < store_order_terms(o); i++) {
        bool desc;
        const char *col = store_order_col(o, i, &desc);
        snprintf(got + strlen(got), sizeof got - strlen(got), "%s%s %s", i ? "," : "", col,
                 desc ? "desc" : "asc");
    }
    assert_string_equal(got, want);
    store_order_free(o);
}

static void order_bad(const char *text, const char *want)
{
    store_order *o = NULL;
    rd_err err;
    rd_err_clear(&err);
    assert_int_equal(store_order_parse(schema, "o", model, text, NULL, &o, &err),
                     RD_VALIDATION_FAILED);
    assert_null(o);
    assert_string_equal(err.field, "orderBy");
    if (strstr(err.msg, want) == NULL)
        fail_msg("'%s': message '%s' lacks '%s'", text, err.msg, want);
}

static void test_order_defaults_to_id(void **state)
{
    (void)state;
    expect_order(NULL, "_id asc");
    expect_order("  ", "_id asc");
}

static void test_order_terms_and_tiebreak(void **state)
{
    (void)state;
    expect_order("age desc", "age desc,_id asc");
    expect_order("age DESC, firstName, score asc", "age desc,firstName asc,score asc,_id asc");
    expect_order("createdAt desc,id desc", "_created_at desc,_id desc");
    expect_order("syncId", "_sync_id asc,_id asc");
}

static void test_order_through_a_reference(void **state)
{
    (void)state;
    expect_order("city.name desc, age", "name desc,age asc,_id asc");
    store_order *o = NULL;
    rd_err err;
    assert_int_equal(store_order_parse(schema, "o", model, "city.name desc", NULL, &o, &err),
                     RD_OK);
    assert_true(store_order_has_path(o));
    store_sbuf b = {0};
    store_order_key_sql(&b, o, 0);
    store_sbuf_add(&b, "|");
    store_order_key_sql(&b, o, 1);
    assert_false(b.oom);
    assert_string_equal(b.p, "(SELECT \"_o\".\"name\" FROM " CITIES " AS \"_o\" WHERE "
                             "\"_o\"._id = \"r_o__students\".\"city\")|\"_id\"");
    store_sbuf_free(&b);
    store_order_free(o);
    /* restricted to the groups the access gives, bound per key */
    store_filter_access acc = {test_access, NULL};
    snprintf(access_group, sizeof access_group, "g1");
    assert_int_equal(store_order_parse(schema, "o", model, "city.pop", &acc, &o, &err), RD_OK);
    store_sbuf c = {0};
    store_order_key_sql(&c, o, 0);
    assert_string_equal(c.p,
                        "(SELECT \"_o\".\"pop\" FROM " CITIES " AS \"_o\" WHERE "
                        "\"_o\"._id = \"r_o__students\".\"city\" AND \"_o\"._group IN (?, ?))");
    store_sbuf_free(&c);
    store_order_free(o);
    assert_int_equal(store_order_parse(schema, "o", model, "mentor.age", &acc, &o, &err),
                     RD_PERMISSION_DENIED);
    assert_null(o);
    /* no path: the plain column list */
    assert_int_equal(store_order_parse(schema, "o", model, "city desc", NULL, &o, &err), RD_OK);
    assert_false(store_order_has_path(o));
    store_order_free(o);
}

static void test_order_errors(void **state)
{
    (void)state;
    order_bad("nickname", "unknown field 'nickname' at position 1");
    order_bad("profile", "field 'profile' is JSON");
    order_bad("age, age desc", "field 'age' given twice");
    order_bad("id, age", "no term may follow it");
    order_bad("age sideways", "expected asc, desc, ',' or the end at position 5");
    order_bad("age,", "expected a field name at position 5");
    order_bad("a,b,c,d,e,f,g,h,i", "unknown field 'a'");
    order_bad("age,score,firstName,isActive,status,enrolledAt,version,syncId,group",
              "more than 8 terms");
    order_bad("city.country.code",
              "'city.country.code' traverses more than 1 reference (position 6)");
    order_bad("city.nam", "unknown field 'nam' of model 'cities' in 'city.nam' at position 6");
    order_bad("age.x", "not a REFERENCE");
    order_bad("city.meta", "field 'city.meta' is JSON");
    order_bad("city.name, city.name desc", "field 'city.name' given twice (position 12)");
    order_bad("city.\"name\"", "expected a field name after '.' at position 6");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_filter_blank_has_no_condition),
        cmocka_unit_test(test_filter_every_operator),
        cmocka_unit_test(test_filter_and_joins_comparisons),
        cmocka_unit_test(test_filter_number_literals),
        cmocka_unit_test(test_filter_bool_literals),
        cmocka_unit_test(test_filter_null_compiles_to_is_null),
        cmocka_unit_test(test_filter_null_refuses_ordering),
        cmocka_unit_test(test_filter_string_escapes),
        cmocka_unit_test(test_filter_system_fields),
        cmocka_unit_test(test_filter_timestamp_field_takes_rfc3339),
        cmocka_unit_test(test_filter_unknown_field),
        cmocka_unit_test(test_filter_type_mismatch_names_field),
        cmocka_unit_test(test_filter_syntax_errors_name_position),
        cmocka_unit_test(test_filter_caps),
        cmocka_unit_test(test_filter_sql_injection_stays_a_bound_literal),
        cmocka_unit_test(test_path_depth_1_2_3),
        cmocka_unit_test(test_path_errors_name_position),
        cmocka_unit_test(test_path_injection_stays_literal_or_fails),
        cmocka_unit_test(test_path_access_restricts_groups),
        cmocka_unit_test(test_path_runs_on_sqlite),
        cmocka_unit_test(test_order_defaults_to_id),
        cmocka_unit_test(test_order_through_a_reference),
        cmocka_unit_test(test_order_terms_and_tiebreak),
        cmocka_unit_test(test_order_errors),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
