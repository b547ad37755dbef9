/* Unit tests for service/svc_status.c: the gRPC rendering of a failed
 * call's outcome, the google.rpc.Status that travels in
 * grpc-status-details-bin. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "google/rpc/error_details.pb-c.h"
#include "google/rpc/status.pb-c.h"
#include "recordd/v1/records.pb-c.h"
#include "service/svc_status.h"

static Google__Rpc__Status *decode(rd_arena *a, const svc_outcome *o)
{
    size_t len = 0;
    uint8_t *buf = svc_status_details(a, o, &len);
    assert_non_null(buf);
    Google__Rpc__Status *st = google__rpc__status__unpack(NULL, len, buf);
    assert_non_null(st);
    return st;
}

static Google__Rpc__ErrorInfo *info_of(const Google__Rpc__Status *st)
{
    assert_true(st->n_details >= 1);
    assert_string_equal(st->details[0]->type_url, "type.googleapis.com/google.rpc.ErrorInfo");
    Google__Rpc__ErrorInfo *info = google__rpc__error_info__unpack(NULL, st->details[0]->value.len,
                                                                   st->details[0]->value.data);
    assert_non_null(info);
    return info;
}

static const char *md(const Google__Rpc__ErrorInfo *info, const char *key)
{
    for (size_t i = 0; i < info->n_metadata; i++)
        if (strcmp(info->metadata[i]->key, key) == 0)
            return info->metadata[i]->value;
    return NULL;
}

static void test_details_carry_error_info_with_reason_domain_and_field(void **state)
{
    (void)state;
    rd_arena *a = rd_arena_new(1 << 20);
    svc_outcome o = {0};
    rd_errf(&o.err, RD_NOT_FOUND, "id", "record 's9' not found");
    Google__Rpc__Status *st = decode(a, &o);
    assert_int_equal(st->code, 5);
    assert_string_equal(st->message, "record 's9' not found");
    assert_int_equal(st->n_details, 1);
    Google__Rpc__ErrorInfo *info = info_of(st);
    assert_string_equal(info->reason, "not_found");
    assert_string_equal(info->domain, "recordd");
    assert_int_equal(info->n_metadata, 1);
    assert_string_equal(md(info, "field"), "id");
    google__rpc__error_info__free_unpacked(info, NULL);
    google__rpc__status__free_unpacked(st, NULL);
    rd_arena_free(a);
}

static void test_invalid_argument_with_field_adds_bad_request(void **state)
{
    (void)state;
    rd_arena *a = rd_arena_new(1 << 20);
    svc_outcome o = {0};
    rd_errf(&o.err, RD_VALIDATION_FAILED, "age", "age: 200 is above the maximum 150");
    Google__Rpc__Status *st = decode(a, &o);
    assert_int_equal(st->code, 3);
    assert_int_equal(st->n_details, 2);
    assert_string_equal(st->details[1]->type_url, "type.googleapis.com/google.rpc.BadRequest");
    Google__Rpc__BadRequest *br = google__rpc__bad_request__unpack(NULL, st->details[1]->value.len,
                                                                   st->details[1]->value.data);
    assert_int_equal(br->n_field_violations, 1);
    assert_string_equal(br->field_violations[0]->field, "age");
    assert_string_equal(br->field_violations[0]->description, "age: 200 is above the maximum 150");
    google__rpc__bad_request__free_unpacked(br, NULL);
    google__rpc__status__free_unpacked(st, NULL);
    rd_arena_free(a);
}

static void test_rejected_receipt_rides_in_the_details(void **state)
{
    (void)state;
    rd_arena *a = rd_arena_new(1 << 20);
    Recordd__V1__CommitReceipt r = RECORDD__V1__COMMIT_RECEIPT__INIT;
    Recordd__V1__ReceiptError re = RECORDD__V1__RECEIPT_ERROR__INIT;
    r.object = "commit_receipt";
    r.status = RECORDD__V1__COMMIT_STATUS__REJECTED;
    r.server_tx_id = "tx_1";
    re.code = "version_conflict";
    r.error = &re;
    svc_outcome o = {.receipt = &r.base};
    rd_errf(&o.err, RD_VERSION_CONFLICT, NULL, "version is 4, expected 3");
    Google__Rpc__Status *st = decode(a, &o);
    assert_int_equal(st->code, 10);
    assert_int_equal(st->n_details, 2); /* no field: no BadRequest */
    assert_string_equal(st->details[1]->type_url, "type.googleapis.com/recordd.v1.CommitReceipt");
    Recordd__V1__CommitReceipt *got = recordd__v1__commit_receipt__unpack(
        NULL, st->details[1]->value.len, st->details[1]->value.data);
    assert_int_equal(got->status, RECORDD__V1__COMMIT_STATUS__REJECTED);
    assert_string_equal(got->error->code, "version_conflict");
    assert_string_equal(got->server_tx_id, "tx_1");
    recordd__v1__commit_receipt__free_unpacked(got, NULL);
    google__rpc__status__free_unpacked(st, NULL);
    rd_arena_free(a);
}

static void test_retry_delay_and_capability(void **state)
{
    (void)state;
    rd_arena *a = rd_arena_new(1 << 20);
    svc_outcome o = {.retry_after_ms = 1500};
    rd_errf(&o.err, RD_RATE_LIMITED, NULL, "slow down");
    Google__Rpc__Status *st = decode(a, &o);
    assert_int_equal(st->code, 8);
    assert_int_equal(st->n_details, 2);
    assert_string_equal(st->details[1]->type_url, "type.googleapis.com/google.rpc.RetryInfo");
    Google__Rpc__RetryInfo *ri = google__rpc__retry_info__unpack(NULL, st->details[1]->value.len,
                                                                 st->details[1]->value.data);
    assert_int_equal(ri->retry_delay->seconds, 1);
    assert_int_equal(ri->retry_delay->nanos, 500000000);
    google__rpc__retry_info__free_unpacked(ri, NULL);
    google__rpc__status__free_unpacked(st, NULL);

    o = (svc_outcome){.can = "update", .model = "students", .group = "g1"};
    rd_errf(&o.err, RD_PERMISSION_DENIED, NULL, "no capability allows update");
    st = decode(a, &o);
    Google__Rpc__ErrorInfo *info = info_of(st);
    assert_string_equal(md(info, "can"), "update");
    assert_string_equal(md(info, "model"), "students");
    assert_string_equal(md(info, "sync_group"), "g1");
    google__rpc__error_info__free_unpacked(info, NULL);
    google__rpc__status__free_unpacked(st, NULL);
    rd_arena_free(a);
}

/* A rolled-back bulk: one violation per failed operation replaces the
 * call's field, ErrorInfo carries the extras, the result rides last. */
static void test_bulk_violations_extras_and_result(void **state)
{
    (void)state;
    rd_arena *a = rd_arena_new(1 << 20);
    Recordd__V1__BulkMutateResponse resp = RECORDD__V1__BULK_MUTATE_RESPONSE__INIT;
    resp.total_failed = 2;
    const svc_kv violations[] = {{"operations[0].data.age", "validation_failed: too old"},
                                 {"operations[2]", "not_found: no record"}};
    const svc_kv info[] = {{"index", "0"}, {"failed", "2"}};
    svc_outcome o = {
        .bulk = &resp.base, .violations = violations, .n_violations = 2, .info = info, .n_info = 2};
    rd_errf(&o.err, RD_VALIDATION_FAILED, "operations[0].data.age", "operations[0]: too old");
    Google__Rpc__Status *st = decode(a, &o);
    assert_int_equal(st->n_details, 3);
    Google__Rpc__ErrorInfo *ei = info_of(st);
    assert_string_equal(md(ei, "field"), "operations[0].data.age");
    assert_string_equal(md(ei, "index"), "0");
    assert_string_equal(md(ei, "failed"), "2");
    google__rpc__error_info__free_unpacked(ei, NULL);
    Google__Rpc__BadRequest *br = google__rpc__bad_request__unpack(NULL, st->details[1]->value.len,
                                                                   st->details[1]->value.data);
    assert_int_equal(br->n_field_violations, 2);
    assert_string_equal(br->field_violations[1]->field, "operations[2]");
    assert_string_equal(br->field_violations[1]->description, "not_found: no record");
    google__rpc__bad_request__free_unpacked(br, NULL);
    assert_string_equal(st->details[2]->type_url,
                        "type.googleapis.com/recordd.v1.BulkMutateResponse");
    google__rpc__status__free_unpacked(st, NULL);
    rd_arena_free(a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_details_carry_error_info_with_reason_domain_and_field),
        cmocka_unit_test(test_invalid_argument_with_field_adds_bad_request),
        cmocka_unit_test(test_rejected_receipt_rides_in_the_details),
        cmocka_unit_test(test_retry_delay_and_capability),
        cmocka_unit_test(test_bulk_violations_extras_and_result),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
