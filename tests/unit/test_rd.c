/* Unit tests for common/rd.c: the error table, the arena, UTF-8 and
 * RFC 3339 helpers. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/rd.h"

/* Every row of DESIGN.md §7, checked against the generated table. */
static void test_error_table_matches_design(void **state)
{
    (void)state;
    static const struct {
        rd_code code;
        const char *str;
        int grpc, http;
    } rows[] = {
        {RD_OK, "ok", 0, 200},
        {RD_INVALID_BODY, "invalid_body", 3, 400},
        {RD_UNKNOWN_FIELD, "unknown_field", 3, 422},
        {RD_VALIDATION_FAILED, "validation_failed", 3, 422},
        {RD_FILTER_REQUIRED, "filter_required", 3, 422},
        {RD_TOO_MANY_OPERATIONS, "too_many_operations", 3, 422},
        {RD_UNAUTHENTICATED, "unauthenticated", 16, 401},
        {RD_TOKEN_EXPIRED, "token_expired", 16, 401},
        {RD_PERMISSION_DENIED, "permission_denied", 7, 403},
        {RD_NOT_FOUND, "not_found", 5, 404},
        {RD_DUPLICATE_RECORD, "duplicate_record", 6, 409},
        {RD_IDEMPOTENCY_KEY_REUSED, "idempotency_key_reused", 6, 409},
        {RD_VERSION_CONFLICT, "version_conflict", 10, 409},
        {RD_STALE_CONTEXT, "stale_context", 10, 409},
        {RD_CLAIMED, "claimed", 10, 409},
        {RD_IDEMPOTENCY_IN_PROGRESS, "idempotency_in_progress", 10, 409},
        {RD_RATE_LIMITED, "rate_limited", 8, 429},
        {RD_DEADLINE_EXCEEDED, "deadline_exceeded", 4, 504},
        {RD_UNAVAILABLE, "unavailable", 14, 503},
        {RD_INTERNAL, "internal", 13, 500},
        {RD_DESTRUCTIVE_CHANGE, "destructive_change", 9, 409},
        {RD_UNIMPLEMENTED, "unimplemented", 12, 501},
        {RD_METHOD_NOT_ALLOWED, "method_not_allowed", 12, 405},
        {RD_UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type", 3, 415},
        {RD_BODY_TOO_LARGE, "body_too_large", 3, 413},
        {RD_SYNC_ID_EXPIRED, "sync_id_expired", 9, 410},
        {RD_TOO_MANY_ROWS, "too_many_rows", 3, 422},
        {RD_CANCELLED, "cancelled", 1, 499},
        {RD_REFERENCE_NOT_FOUND, "reference_not_found", 3, 422},
        {RD_REFERENCED, "referenced", 9, 409},
    };
    assert_int_equal(sizeof rows / sizeof rows[0], RD_CODE_COUNT);
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        assert_string_equal(rd_code_str(rows[i].code), rows[i].str);
        assert_int_equal(rd_code_grpc(rows[i].code), rows[i].grpc);
        assert_int_equal(rd_code_http(rows[i].code), rows[i].http);
        bool precondition = rows[i].code == RD_VERSION_CONFLICT || rows[i].code == RD_NOT_FOUND;
        assert_int_equal(rd_code_http_precondition(rows[i].code), precondition ? 412 : 0);
    }
}

/* The catalogue (docs/errors.md, GET /problems/{code}) has an entry for
 * every row: a new code without one fails here. */
static void test_every_code_is_in_the_catalogue(void **state)
{
    (void)state;
    char *md = rd_code_catalogue_md();
    assert_non_null(md);
    for (int c = 0; c < RD_CODE_COUNT; c++) {
        const rd_code_doc *d = rd_code_describe((rd_code)c);
        if (d->meaning == NULL || d->action == NULL)
            fail_msg("%s has no catalogue entry (common/rd.c code_docs)", rd_code_str((rd_code)c));
        char head[96];
        snprintf(head, sizeof head, "\n## %s\n", rd_code_str((rd_code)c));
        assert_non_null(strstr(md, head));
    }
    free(md);
    assert_true(rd_code_describe(RD_RATE_LIMITED)->retryable);
    assert_false(rd_code_describe(RD_VALIDATION_FAILED)->retryable);
}

static void test_error_codes_are_unique_strings(void **state)
{
    (void)state;
    for (int i = 0; i < RD_CODE_COUNT; i++)
        for (int j = i + 1; j < RD_CODE_COUNT; j++)
            assert_string_not_equal(rd_code_str(i), rd_code_str(j));
}

static void test_out_of_range_code_is_internal(void **state)
{
    (void)state;
    assert_string_equal(rd_code_str(RD_CODE_COUNT), "internal");
    assert_int_equal(rd_code_grpc(RD_CODE_COUNT), 13);
    assert_int_equal(rd_code_http(RD_CODE_COUNT), 500);
}

static void test_errf_formats_field_and_message(void **state)
{
    (void)state;
    rd_err e;
    assert_int_equal(rd_errf(&e, RD_NOT_FOUND, "id", "record '%s' not found", "s1"), RD_NOT_FOUND);
    assert_int_equal(e.code, RD_NOT_FOUND);
    assert_string_equal(e.field, "id");
    assert_string_equal(e.msg, "record 's1' not found");
    rd_errf(&e, RD_INTERNAL, NULL, "x");
    assert_string_equal(e.field, "");
}

static void test_code_from_str_is_the_table_reversed(void **state)
{
    (void)state;
    for (int c = 0; c < RD_CODE_COUNT; c++)
        assert_int_equal(rd_code_from_str(rd_code_str((rd_code)c)), c);
    assert_int_equal(rd_code_from_str("no_such_code"), RD_INTERNAL);
    assert_int_equal(rd_code_from_str(NULL), RD_INTERNAL);
}

static void test_arena_allocations_are_aligned_and_distinct(void **state)
{
    (void)state;
    rd_arena *a = rd_arena_new(1 << 20);
    char *p = rd_arena_alloc(a, 3), *q = rd_arena_alloc(a, 5);
    assert_non_null(p);
    assert_true(q >= p + 3);
    assert_int_equal((uintptr_t)q % _Alignof(max_align_t), 0);
    char *s = rd_arena_printf(a, "%s-%d", "tx", 42);
    assert_string_equal(s, "tx-42");
    rd_arena_free(a);
}

static void test_arena_grows_past_first_block(void **state)
{
    (void)state;
    rd_arena *a = rd_arena_new(1 << 22);
    for (int i = 0; i < 1000; i++)
        memset(rd_arena_alloc(a, 1000), 0xAB, 1000);
    void *big = rd_arena_alloc(a, 100000);
    assert_non_null(big);
    rd_arena_reset(a);
    assert_non_null(rd_arena_alloc(a, 16));
    rd_arena_free(a);
}

/* Cleanups record their order into a shared log. */
static char cleanup_log[16];
static size_t cleanup_n;

static void log_cleanup(void *arg)
{
    cleanup_log[cleanup_n++] = *(const char *)arg;
}

static void test_arena_cleanups_run_newest_first_on_reset_and_free(void **state)
{
    (void)state;
    static const char a = 'a', b = 'b', c = 'c';
    rd_arena *ar = rd_arena_new(1 << 20);
    assert_non_null(ar);
    cleanup_n = 0;
    assert_true(rd_arena_on_release(ar, log_cleanup, (void *)&a));
    assert_true(rd_arena_on_release(ar, log_cleanup, (void *)&b));
    rd_arena_reset(ar);
    assert_int_equal(cleanup_n, 2);
    assert_memory_equal(cleanup_log, "ba", 2);
    rd_arena_reset(ar); /* ran once: forgotten after */
    assert_int_equal(cleanup_n, 2);
    assert_true(rd_arena_on_release(ar, log_cleanup, (void *)&c));
    rd_arena_free(ar);
    assert_int_equal(cleanup_n, 3);
    assert_int_equal(cleanup_log[2], 'c');
    /* a full arena registers nothing: the caller releases at once */
    rd_arena *small = rd_arena_new(16);
    assert_non_null(small);
    while (rd_arena_alloc(small, 64) != NULL)
        ;
    assert_false(rd_arena_on_release(small, log_cleanup, (void *)&a));
    rd_arena_free(small);
    assert_int_equal(cleanup_n, 3);
}

static void test_arena_refuses_beyond_cap(void **state)
{
    (void)state;
    rd_arena *a = rd_arena_new(64 * 1024);
    assert_null(rd_arena_alloc(a, 1 << 20));
    assert_non_null(rd_arena_alloc(a, 100));
    rd_arena_free(a);
}

static void test_utf8_accepts_valid_text(void **state)
{
    (void)state;
    const char *ok[] = {"", "plain", "caf\xc3\xa9", "\xe2\x82\xac", "\xf0\x9f\x98\x80"};
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++)
        assert_true(rd_utf8_valid(ok[i], strlen(ok[i])));
}

static void test_utf8_rejects_malformed_sequences(void **state)
{
    (void)state;
    const char *bad[] = {
        "\xff",             /* invalid byte */
        "\xc3",             /* truncated */
        "\xc0\xaf",         /* overlong */
        "\xed\xa0\x80",     /* surrogate */
        "\xf4\x90\x80\x80", /* above U+10FFFF */
        "\x80",             /* lone continuation */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_false(rd_utf8_valid(bad[i], strlen(bad[i])));
    assert_false(rd_utf8_valid("a\0b", 3));
}

static void test_rfc3339_round_trip(void **state)
{
    (void)state;
    int64_t t;
    char buf[40];
    assert_int_equal(rd_parse_rfc3339("2024-02-29T12:34:56Z", &t), 0);
    assert_string_equal(rd_rfc3339(t, buf, sizeof buf), "2024-02-29T12:34:56Z");
    assert_int_equal(rd_parse_rfc3339("1970-01-01T00:00:00.5Z", &t), 0);
    assert_int_equal(t, 500000);
    assert_string_equal(rd_rfc3339(t, buf, sizeof buf), "1970-01-01T00:00:00.500Z");
    assert_int_equal(rd_parse_rfc3339("1970-01-01T01:00:00+01:00", &t), 0);
    assert_int_equal(t, 0);
    assert_int_equal(rd_parse_rfc3339("1969-12-31T23:59:59.000001Z", &t), 0);
    assert_int_equal(t, -999999);
    assert_string_equal(rd_rfc3339(t, buf, sizeof buf), "1969-12-31T23:59:59.000001Z");
}

static void test_rfc3339_rejects_malformed(void **state)
{
    (void)state;
    const char *bad[] = {"",
                         "2024-02-30T00:00:00Z",
                         "2023-02-29T00:00:00Z",
                         "2024-01-01 00:00:00Z",
                         "2024-01-01T00:00:00",
                         "2024-01-01T24:00:00Z",
                         "2024-01-01T00:00:00.Z",
                         "2024-01-01T00:00:00Zjunk",
                         "tomorrow"};
    int64_t t;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_not_equal(rd_parse_rfc3339(bad[i], &t), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_error_table_matches_design),
        cmocka_unit_test(test_error_codes_are_unique_strings),
        cmocka_unit_test(test_every_code_is_in_the_catalogue),
        cmocka_unit_test(test_out_of_range_code_is_internal),
        cmocka_unit_test(test_errf_formats_field_and_message),
        cmocka_unit_test(test_arena_allocations_are_aligned_and_distinct),
        cmocka_unit_test(test_arena_grows_past_first_block),
        cmocka_unit_test(test_arena_refuses_beyond_cap),
        cmocka_unit_test(test_arena_cleanups_run_newest_first_on_reset_and_free),
        cmocka_unit_test(test_utf8_accepts_valid_text),
        cmocka_unit_test(test_utf8_rejects_malformed_sequences),
        cmocka_unit_test(test_rfc3339_round_trip),
        cmocka_unit_test(test_rfc3339_rejects_malformed),
        cmocka_unit_test(test_code_from_str_is_the_table_reversed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
