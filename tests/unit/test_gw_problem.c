/* Unit tests for service/gw_problem.c: the problem+json an HTTP client gets
 * is a rendering of the call's outcome (svc_outcome), with the HTTP status
 * from the one error table. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "recordd/v1/records.pb-c.h"
#include "service/gw_problem.h"

/* The problem of an outcome with err (and receipt). */
static void render(rd_arena *a, const rd_err *err, const Recordd__V1__CommitReceipt *receipt,
                   gw_problem *p)
{
    (void)a;
    svc_outcome o = {.err = *err, .receipt = receipt != NULL ? &receipt->base : NULL};
    gw_problem_from_outcome(&o, 0, "/v1/x", p);
    assert_non_null(p->body);
}

static const char *str(const json_t *o, const char *key)
{
    const char *s = json_string_value(json_object_get(o, key));
    assert_non_null(s);
    return s;
}

static void test_status_and_members_come_from_the_error_table(void **state)
{
    (void)state;
    rd_arena *a = rd_arena_new(1 << 20);
    rd_err err;
    rd_errf(&err, RD_NOT_FOUND, "id", "record 's9' not found");
    gw_problem p;
    render(a, &err, NULL, &p);
    assert_int_equal(p.status, 404);
    assert_int_equal(p.code, RD_NOT_FOUND);
    assert_string_equal(str(p.body, "type"), "urn:recordd:problem:not_found");
    assert_string_equal(str(p.body, "title"), "Not found");
    assert_string_equal(str(p.body, "code"), "not_found");
    assert_string_equal(str(p.body, "detail"), "record 's9' not found");
    assert_string_equal(str(p.body, "instance"), "/v1/x");
    assert_string_equal(str(p.body, "field"), "id");
    assert_int_equal(json_integer_value(json_object_get(p.body, "status")), 404);
    assert_null(json_object_get(p.body, "errors")); /* not an invalid argument */
    json_decref(p.body);
    rd_arena_free(a);
}

static void test_invalid_argument_codes_split_into_400_and_422_with_errors(void **state)
{
    (void)state;
    rd_arena *a = rd_arena_new(1 << 20);
    rd_err err;
    gw_problem p;
    rd_errf(&err, RD_VALIDATION_FAILED, "age", "age: 200 is above the maximum 150");
    render(a, &err, NULL, &p);
    assert_int_equal(p.status, 422);
    json_t *errs = json_object_get(p.body, "errors");
    assert_int_equal(json_array_size(errs), 1);
    assert_string_equal(str(json_array_get(errs, 0), "field"), "age");
    assert_string_equal(str(json_array_get(errs, 0), "detail"),
                        "age: 200 is above the maximum 150");
    json_decref(p.body);
    rd_errf(&err, RD_INVALID_BODY, NULL, "malformed JSON at line 1, column 3");
    render(a, &err, NULL, &p);
    assert_int_equal(p.status, 400);
    json_decref(p.body);
    rd_arena_free(a);
}

static void test_rejected_receipt_becomes_the_receipt_member(void **state)
{
    (void)state;
    rd_arena *a = rd_arena_new(1 << 20);
    Recordd__V1__CommitReceipt r = RECORDD__V1__COMMIT_RECEIPT__INIT;
    r.object = "commit_receipt";
    r.status = RECORDD__V1__COMMIT_STATUS__REJECTED;
    r.current_version = 7;
    rd_err err;
    rd_errf(&err, RD_VERSION_CONFLICT, "expectedVersion", "expected version 6, record is at 7");
    gw_problem p;
    render(a, &err, &r, &p);
    assert_int_equal(p.status, 409);
    json_t *rc = json_object_get(p.body, "receipt");
    assert_non_null(rc);
    assert_string_equal(str(rc, "status"), "REJECTED");
    assert_string_equal(str(rc, "currentVersion"), "7"); /* int64 as a string */
    json_decref(p.body);
    rd_arena_free(a);
}

static void test_retry_delay_capability_violations_and_result(void **state)
{
    (void)state;
    gw_problem p;
    svc_outcome o = {.retry_after_ms = 1001};
    rd_errf(&o.err, RD_RATE_LIMITED, NULL, "slow down");
    gw_problem_from_outcome(&o, 0, NULL, &p);
    assert_int_equal(p.status, 429);
    assert_int_equal(p.retry_after_s, 2); /* rounded up */
    json_decref(p.body);

    o = (svc_outcome){.can = "update", .model = "students", .group = "g1"};
    rd_errf(&o.err, RD_PERMISSION_DENIED, NULL, "no capability allows update");
    gw_problem_from_outcome(&o, 0, NULL, &p);
    assert_int_equal(p.status, 403);
    json_t *cap = json_object_get(p.body, "requiredCapability");
    assert_string_equal(str(cap, "can"), "update");
    assert_string_equal(str(cap, "model"), "students");
    assert_string_equal(str(cap, "syncGroup"), "g1");
    json_decref(p.body);

    /* a rolled-back bulk: the caller's status (the method's 422), a
     * violation per failed operation, the result */
    Recordd__V1__BulkMutateResponse resp = RECORDD__V1__BULK_MUTATE_RESPONSE__INIT;
    resp.total_failed = 2;
    const svc_kv violations[] = {{"operations[0].data.age", "validation_failed: too old"},
                                 {"operations[2]", "not_found: no record"}};
    o = (svc_outcome){.bulk = &resp.base, .violations = violations, .n_violations = 2};
    rd_errf(&o.err, RD_NOT_FOUND, "operations[2]", "operations[2]: no record");
    gw_problem_from_outcome(&o, 422, "/v1/bulk", &p);
    assert_int_equal(p.status, 422);
    json_t *errs = json_object_get(p.body, "errors");
    assert_int_equal(json_array_size(errs), 2);
    assert_string_equal(str(json_array_get(errs, 1), "detail"), "not_found: no record");
    assert_int_equal(
        json_integer_value(json_object_get(json_object_get(p.body, "result"), "totalFailed")), 2);
    json_decref(p.body);
}

static void test_errors_found_by_the_gateway_use_the_same_shape(void **state)
{
    (void)state;
    rd_err err;
    rd_errf(&err, RD_METHOD_NOT_ALLOWED, NULL, "POST is not allowed on /v1/models/m/x");
    gw_problem p;
    gw_problem_from_err(&err, 0, "/v1/models/m/x", &p);
    assert_int_equal(p.status, 405);
    assert_string_equal(str(p.body, "code"), "method_not_allowed");
    json_decref(p.body);
    rd_errf(&err, RD_VERSION_CONFLICT, NULL, "If-Match \"1\" does not match");
    gw_problem_from_err(&err, 412, NULL, &p); /* If-Match: the status is overridden */
    assert_int_equal(p.status, 412);
    assert_int_equal(json_integer_value(json_object_get(p.body, "status")), 412);
    assert_string_equal(str(p.body, "code"), "version_conflict");
    json_decref(p.body);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_status_and_members_come_from_the_error_table),
        cmocka_unit_test(test_invalid_argument_codes_split_into_400_and_422_with_errors),
        cmocka_unit_test(test_rejected_receipt_becomes_the_receipt_member),
        cmocka_unit_test(test_retry_delay_capability_violations_and_result),
        cmocka_unit_test(test_errors_found_by_the_gateway_use_the_same_shape),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
