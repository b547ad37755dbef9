/* Unit tests for auth/caps.c: every authorize and mint case of
 * capabilities.json (read at run time from tests/unit/testdata/ or
 * $AUTH_TESTDATA_DIR), the strict JSON form of caps, and principals. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "auth/auth.h"
#include "auth/auth_int.h"
#include "tests/unit/testdata_util.h"

static auth_caps *caps_of(json_t *array)
{
    char *s = json_dumps(array, JSON_COMPACT);
    auth_caps *c = NULL;
    rd_err err;
    if (auth_caps_from_json(s, strlen(s), &c, &err) != RD_OK)
        fail_msg("caps: %s", err.msg);
    free(s);
    return c;
}

static auth_verb verb_of(const char *s)
{
    auth_verb v = 0;
    assert_int_equal(auth_verb_parse(s, &v), 0);
    return v;
}

static const char *grpc_name(rd_code rc)
{
    switch (rd_code_grpc(rc)) {
    case 3:
        return "INVALID_ARGUMENT";
    case 7:
        return "PERMISSION_DENIED";
    case 16:
        return "UNAUTHENTICATED";
    default:
        return "OTHER";
    }
}

/* The deny details of a case: code, gRPC status, required_capability and
 * field (when listed). */
static void check_denial(const char *name, json_t *t, rd_code rc, const rd_err *err,
                         const auth_required *req)
{
    if (rc == RD_OK)
        fail_msg("%s: allowed", name);
    if (strcmp(rd_code_str(rc), str_of(t, "code")) != 0)
        fail_msg("%s: code %s, want %s", name, rd_code_str(rc), str_of(t, "code"));
    assert_string_equal(grpc_name(rc), str_of(t, "grpc"));
    json_t *rq = json_object_get(t, "required_capability");
    if (rq != NULL) {
        assert_string_equal(auth_verb_str(req->can), str_of(rq, "can"));
        assert_string_equal(req->model, str_of(rq, "model"));
        assert_string_equal(req->group, str_of(rq, "sync_group"));
    }
    const char *field = str_of(t, "field");
    if (rc == RD_PERMISSION_DENIED) {
        if (field != NULL) {
            assert_non_null(req->field);
            assert_string_equal(req->field, field);
            assert_string_equal(err->field, field);
        } else {
            assert_null(req->field);
        }
    } else if (field != NULL) {
        assert_string_equal(err->field, field);
    }
}

static void test_authorize_cases(void **state)
{
    (void)state;
    json_t *doc = load_json("auth/capabilities.json");
    json_t *sets = json_object_get(doc, "caps_sets");
    size_t i, allow = 0, deny = 0;
    json_t *t;
    json_array_foreach(json_object_get(doc, "authorize"), i, t)
    {
        char name[64];
        snprintf(name, sizeof name, "authorize[%zu]", i);
        auth_caps *caps = caps_of(json_object_get(sets, str_of(t, "caps_set")));
        json_t *r = json_object_get(t, "request");
        json_t *jf = json_object_get(r, "fields");
        json_t *wb = json_object_get(t, "schema_writable_by");
        size_t n = json_array_size(jf);
        const char *fields[16];
        const char *const *writable[16];
        const char *roles[16][8];
        assert_true(n <= 16);
        for (size_t f = 0; f < n; f++) {
            fields[f] = json_string_value(json_array_get(jf, f));
            json_t *rl = wb ? json_object_get(wb, fields[f]) : NULL;
            writable[f] = NULL;
            if (rl != NULL) {
                size_t k;
                for (k = 0; k < json_array_size(rl) && k < 7; k++)
                    roles[f][k] = json_string_value(json_array_get(rl, k));
                roles[f][k] = NULL;
                writable[f] = roles[f];
            }
        }
        auth_required req;
        rd_err err;
        rd_err_clear(&err);
        rd_code rc =
            auth_caps_allows(caps, str_of(t, "role"), verb_of(str_of(r, "can")), str_of(r, "model"),
                             str_of(r, "group"), fields, n, wb ? writable : NULL, &req, &err);
        if (strcmp(str_of(t, "decision"), "allow") == 0) {
            if (rc != RD_OK)
                fail_msg("%s: denied: %s", name, err.msg);
            allow++;
        } else {
            check_denial(name, t, rc, &err, &req);
            deny++;
        }
        auth_caps_free(caps);
    }
    print_message("capabilities.json authorize: %zu allow, %zu deny\n", allow, deny);
    assert_int_equal(allow + deny, json_array_size(json_object_get(doc, "authorize")));
    json_decref(doc);
}

static void test_mint_cases(void **state)
{
    (void)state;
    json_t *doc = load_json("auth/capabilities.json");
    json_t *sets = json_object_get(doc, "caps_sets");
    size_t i, allow = 0, deny = 0;
    json_t *t;
    json_array_foreach(json_object_get(doc, "mint"), i, t)
    {
        char name[64];
        snprintf(name, sizeof name, "mint[%zu]", i);
        auth_caps *parent = caps_of(json_object_get(sets, str_of(t, "parent_caps")));
        auth_caps *requested = caps_of(json_object_get(t, "requested_caps"));
        auth_principal *caller = NULL;
        if (strcmp(str_of(t, "caller"), "api_key") == 0) {
            assert_int_equal(auth_principal_new_api_key("key_parent", "org_acme", "editor", parent,
                                                        &caller, NULL),
                             RD_OK);
        } else {
            assert_string_equal(str_of(t, "caller"), "token");
            assert_int_equal(auth__principal_new(AUTH_KIND_TOKEN, "key_parent", "org_acme",
                                                 "editor", "tok_x", 1, auth_caps_clone(parent),
                                                 &caller, NULL),
                             RD_OK);
        }
        json_t *jttl = json_object_get(t, "requested_ttl_seconds");
        int64_t ttl = json_is_integer(jttl) ? json_integer_value(jttl) : 0;
        int64_t issued = -1;
        auth_required req;
        rd_err err;
        rd_err_clear(&err);
        rd_code rc = auth_mint_check(caller, requested, ttl, &issued, &req, &err);
        if (strcmp(str_of(t, "decision"), "allow") == 0) {
            if (rc != RD_OK)
                fail_msg("%s: denied: %s", name, err.msg);
            assert_int_equal(issued, json_integer_value(json_object_get(t, "issued_ttl_seconds")));
            allow++;
        } else {
            check_denial(name, t, rc, &err, &req);
            deny++;
        }
        auth_principal_free(caller);
        auth_caps_free(requested);
        auth_caps_free(parent);
    }
    print_message("capabilities.json mint: %zu allow, %zu deny\n", allow, deny);
    assert_int_equal(allow + deny, json_array_size(json_object_get(doc, "mint")));
    json_decref(doc);
}

/* ---- behaviour beyond the tables ---------------------------------------------- */

static void test_caps_json_round_trips(void **state)
{
    (void)state;
    static const char in[] =
        "[{\"can\":[\"read\",\"create\",\"update\",\"delete\",\"admin\"],\"model\":\"*\","
        "\"group\":\"*\"},{\"can\":[\"update\"],\"model\":\"students\",\"group\":\"team-a\","
        "\"fields\":[\"age\"]},{\"can\":[\"create\"],\"model\":\"m\",\"group\":\"g\","
        "\"fields\":[]}]";
    auth_caps *c = NULL;
    assert_int_equal(auth_caps_from_json(in, strlen(in), &c, NULL), RD_OK);
    assert_int_equal(auth_caps_count(c), 3);
    size_t n = 99;
    assert_null(auth_caps_fields(c, 0, &n));
    assert_int_equal(n, 0);
    assert_non_null(auth_caps_fields(c, 2, &n)); /* empty list, not "no list" */
    assert_int_equal(n, 0);
    char *out = auth_caps_to_json(c);
    assert_string_equal(out, in);
    free(out);
    auth_caps_free(c);
}

static void test_caps_json_is_strict(void **state)
{
    (void)state;
    static const char *bad[] = {
        "{}",
        "[{\"can\":[\"read\"],\"model\":\"m\"}]",
        "[{\"can\":[],\"model\":\"m\",\"group\":\"g\"}]",
        "[{\"can\":[\"Read\"],\"model\":\"m\",\"group\":\"g\"}]",
        "[{\"can\":[\"write\"],\"model\":\"m\",\"group\":\"g\"}]",
        "[{\"can\":\"read\",\"model\":\"m\",\"group\":\"g\"}]",
        "[{\"can\":[\"read\"],\"model\":\"\",\"group\":\"g\"}]",
        "[{\"can\":[\"read\"],\"model\":\"m\",\"group\":\"g\",\"extra\":1}]",
        "[{\"can\":[\"read\"],\"model\":\"m\",\"group\":\"g\",\"fields\":[\"*\"]}]",
        "[{\"can\":[\"read\"],\"model\":\"m\",\"group\":\"g\",\"fields\":[1]}]",
        "[{\"can\":[\"read\"],\"model\":\"m\",\"model\":\"n\",\"group\":\"g\"}]",
        "[{\"can\":[\"read\"],\"model\":1,\"group\":\"g\"}]",
        "[1]",
        "not json",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        auth_caps *c = NULL;
        rd_err err;
        if (auth_caps_from_json(bad[i], strlen(bad[i]), &c, &err) != RD_VALIDATION_FAILED)
            fail_msg("accepted %s", bad[i]);
        assert_null(c);
        assert_string_equal(err.field, "caps");
    }
}

static void test_caps_add_validates_arguments(void **state)
{
    (void)state;
    auth_caps *c = auth_caps_new();
    const char *star[] = {"*"};
    assert_int_equal(auth_caps_add(c, 0, "m", "g", NULL, 0, NULL), RD_VALIDATION_FAILED);
    assert_int_equal(auth_caps_add(c, 1u << 9, "m", "g", NULL, 0, NULL), RD_VALIDATION_FAILED);
    assert_int_equal(auth_caps_add(c, AUTH_READ, NULL, "g", NULL, 0, NULL), RD_VALIDATION_FAILED);
    assert_int_equal(auth_caps_add(c, AUTH_READ, "m", "g", star, 1, NULL), RD_VALIDATION_FAILED);
    assert_int_equal(auth_caps_count(c), 0);
    assert_int_equal(auth_caps_add(c, AUTH_READ | AUTH_UPDATE, "m", "g", NULL, 0, NULL), RD_OK);
    assert_int_equal(auth_caps_verbs(c, 0), AUTH_READ | AUTH_UPDATE);
    assert_string_equal(auth_caps_model(c, 0), "m");
    assert_string_equal(auth_caps_group(c, 0), "g");
    auth_caps_free(c);
}

static void test_allows_without_principal_is_denied(void **state)
{
    (void)state;
    auth_required req;
    assert_int_equal(auth_allows(NULL, AUTH_READ, "m", "g", NULL, 0, NULL, &req, NULL),
                     RD_PERMISSION_DENIED);
    assert_int_equal(req.can, AUTH_READ);
}

static void test_allows_rejects_multi_verb_request(void **state)
{
    (void)state;
    auth_caps *c = auth_caps_new();
    assert_int_equal(auth_caps_add(c, AUTH__ALL_VERBS, "*", "*", NULL, 0, NULL), RD_OK);
    assert_int_equal(
        auth_caps_allows(c, NULL, AUTH_READ | AUTH_DELETE, "m", "g", NULL, 0, NULL, NULL, NULL),
        RD_INTERNAL);
    auth_caps_free(c);
}

static void test_field_list_ignored_for_read_and_delete(void **state)
{
    (void)state;
    auth_caps *c = auth_caps_new();
    const char *age[] = {"age"};
    const char *other[] = {"name"};
    assert_int_equal(auth_caps_add(c, AUTH_READ | AUTH_DELETE, "m", "g", age, 1, NULL), RD_OK);
    assert_int_equal(auth_caps_allows(c, NULL, AUTH_READ, "m", "g", other, 1, NULL, NULL, NULL),
                     RD_OK);
    auth_caps_free(c);
}

static void test_role_rule_without_role_is_denied(void **state)
{
    (void)state;
    auth_caps *c = auth_caps_new();
    assert_int_equal(auth_caps_add(c, AUTH_UPDATE, "*", "*", NULL, 0, NULL), RD_OK);
    const char *fields[] = {"enrolledAt"};
    const char *admins[] = {"admin", NULL};
    const char *const *writable[] = {admins};
    auth_required req;
    assert_int_equal(auth_caps_allows(c, NULL, AUTH_UPDATE, "students", "team-a", fields, 1,
                                      writable, &req, NULL),
                     RD_PERMISSION_DENIED);
    assert_string_equal(req.field, "enrolledAt");
    auth_caps_free(c);
}

static void test_mint_rejects_negative_ttl(void **state)
{
    (void)state;
    auth_caps *c = auth_caps_new();
    assert_int_equal(auth_caps_add(c, AUTH_READ, "*", "*", NULL, 0, NULL), RD_OK);
    auth_principal *p = NULL;
    assert_int_equal(auth_principal_new_api_key("key_1", "org", NULL, c, &p, NULL), RD_OK);
    rd_err err;
    assert_int_equal(auth_mint_check(p, c, -1, NULL, NULL, &err), RD_VALIDATION_FAILED);
    assert_string_equal(err.field, "ttl");
    auth_principal_free(p);
    auth_caps_free(c);
}

static void test_principal_copies_caps(void **state)
{
    (void)state;
    auth_caps *c = auth_caps_new();
    assert_int_equal(auth_caps_add(c, AUTH_READ, "*", "*", NULL, 0, NULL), RD_OK);
    auth_principal *p = NULL;
    assert_int_equal(auth_principal_new_api_key("key_1", "org", NULL, c, &p, NULL), RD_OK);
    auth_caps_free(c);
    assert_int_equal(auth_caps_count(auth_principal_caps(p)), 1);
    assert_null(auth_principal_role(p));
    assert_int_equal(auth_principal_expires_us(p), 0);
    auth_principal_free(p);
    assert_int_equal(auth_principal_new_api_key("", "org", NULL, NULL, &p, NULL), RD_INTERNAL);
    assert_null(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_authorize_cases),
        cmocka_unit_test(test_mint_cases),
        cmocka_unit_test(test_caps_json_round_trips),
        cmocka_unit_test(test_caps_json_is_strict),
        cmocka_unit_test(test_caps_add_validates_arguments),
        cmocka_unit_test(test_allows_without_principal_is_denied),
        cmocka_unit_test(test_allows_rejects_multi_verb_request),
        cmocka_unit_test(test_field_list_ignored_for_read_and_delete),
        cmocka_unit_test(test_role_rule_without_role_is_denied),
        cmocka_unit_test(test_mint_rejects_negative_ttl),
        cmocka_unit_test(test_principal_copies_caps),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
