/* Unit tests for service/receipt.c: the google.rpc.Status details that
 * travel in grpc-status-details-bin. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "google/rpc/error_details.pb-c.h"
#include "google/rpc/status.pb-c.h"
#include "service/receipt.h"

static Google__Rpc__Status *decode(rd_arena *a, const rd_err *err,
                                   const Recordd__V1__CommitReceipt *receipt)
{
    size_t len = 0;
    uint8_t *buf = receipt_status_details(a, err, receipt, &len);
    assert_non_null(buf);
    Google__Rpc__Status *st = google__rpc__status__unpack(NULL, len, buf);
    assert_non_null(st);
    return st;
}

static void test_details_carry_error_info_with_reason_domain_and_field(void **state)
{
    (void)state;
    rd_arena *a = rd_arena_new(1 << 20);
    rd_err err;
    rd_errf(&err, RD_NOT_FOUND, "id", "record 's9' not found");
    Google__Rpc__Status *st = decode(a, &err, NULL);
    assert_int_equal(st->code, 5);
    assert_string_equal(st->message, "record 's9' not found");
    assert_int_equal(st->n_details, 1);
    assert_string_equal(st->details[0]->type_url, "type.googleapis.com/google.rpc.ErrorInfo");
    Google__Rpc__ErrorInfo *info = google__rpc__error_info__unpack(NULL, st->details[0]->value.len,
                                                                   st->details[0]->value.data);
    assert_string_equal(info->reason, "not_found");
    assert_string_equal(info->domain, "recordd");
    assert_int_equal(info->n_metadata, 1);
    assert_string_equal(info->metadata[0]->key, "field");
    assert_string_equal(info->metadata[0]->value, "id");
    google__rpc__error_info__free_unpacked(info, NULL);
    google__rpc__status__free_unpacked(st, NULL);
    rd_arena_free(a);
}

static void test_invalid_argument_with_field_adds_bad_request(void **state)
{
    (void)state;
    rd_arena *a = rd_arena_new(1 << 20);
    rd_err err;
    rd_errf(&err, RD_VALIDATION_FAILED, "age", "age: 200 is above the maximum 150");
    Google__Rpc__Status *st = decode(a, &err, NULL);
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
    rd_err err;
    rd_errf(&err, RD_VERSION_CONFLICT, NULL, "version is 4, expected 3");
    Recordd__V1__CommitReceipt r = RECORDD__V1__COMMIT_RECEIPT__INIT;
    Recordd__V1__ReceiptError re = RECORDD__V1__RECEIPT_ERROR__INIT;
    r.object = "commit_receipt";
    r.status = RECORDD__V1__COMMIT_STATUS__REJECTED;
    r.server_tx_id = "tx_1";
    re.code = "version_conflict";
    r.error = &re;
    Google__Rpc__Status *st = decode(a, &err, &r);
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_details_carry_error_info_with_reason_domain_and_field),
        cmocka_unit_test(test_invalid_argument_with_field_adds_bad_request),
        cmocka_unit_test(test_rejected_receipt_rides_in_the_details),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
