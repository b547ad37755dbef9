/* Unit tests for auth/ratelimit.c: token-bucket arithmetic, retry delays,
 * per-key isolation, bounded memory and thread safety. Time is injected
 * through auth_ratelimit_take_at. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>
#include <pthread.h>

#include "auth/auth.h"

enum { SEC = 1000000 };
static const int64_t T0 = INT64_C(1000) * SEC;

static void test_burst_passes_then_limits(void **state)
{
    (void)state;
    auth_ratelimit *rl = auth_ratelimit_new(2, 5, 16);
    int64_t retry = -1;
    for (int i = 0; i < 5; i++) {
        assert_int_equal(auth_ratelimit_take_at(rl, "key_a", 1, T0, &retry, NULL), RD_OK);
        assert_int_equal(retry, 0);
    }
    rd_err err;
    assert_int_equal(auth_ratelimit_take_at(rl, "key_a", 1, T0, &retry, &err), RD_RATE_LIMITED);
    assert_int_equal(retry, 500); /* one token at 2/s */
    assert_int_equal(rd_code_http(err.code), 429);
    auth_ratelimit_free(rl);
}

static void test_tokens_refill_with_time(void **state)
{
    (void)state;
    auth_ratelimit *rl = auth_ratelimit_new(2, 2, 16);
    int64_t retry;
    assert_int_equal(auth_ratelimit_take_at(rl, "k", 2, T0, &retry, NULL), RD_OK);
    assert_int_equal(auth_ratelimit_take_at(rl, "k", 1, T0 + 100000, &retry, NULL),
                     RD_RATE_LIMITED);
    assert_int_equal(retry, 400); /* 0.2 tokens present, 0.8 missing at 2/s */
    assert_int_equal(auth_ratelimit_take_at(rl, "k", 1, T0 + 500000, &retry, NULL), RD_OK);
    auth_ratelimit_free(rl);
}

static void test_refill_is_capped_at_burst(void **state)
{
    (void)state;
    auth_ratelimit *rl = auth_ratelimit_new(10, 3, 16);
    int64_t retry;
    assert_int_equal(auth_ratelimit_take_at(rl, "k", 1, T0, &retry, NULL), RD_OK);
    int passed = 0;
    for (int i = 0; i < 10; i++)
        passed +=
            auth_ratelimit_take_at(rl, "k", 1, T0 + 3600 * (int64_t)SEC, &retry, NULL) == RD_OK;
    assert_int_equal(passed, 3);
    auth_ratelimit_free(rl);
}

static void test_keys_have_separate_buckets(void **state)
{
    (void)state;
    auth_ratelimit *rl = auth_ratelimit_new(1, 1, 16);
    int64_t retry;
    assert_int_equal(auth_ratelimit_take_at(rl, "key_a", 1, T0, &retry, NULL), RD_OK);
    assert_int_equal(auth_ratelimit_take_at(rl, "key_a", 1, T0, &retry, NULL), RD_RATE_LIMITED);
    assert_int_equal(auth_ratelimit_take_at(rl, "key_b", 1, T0, &retry, NULL), RD_OK);
    auth_ratelimit_free(rl);
}

static void test_cost_is_clamped_to_burst(void **state)
{
    (void)state;
    auth_ratelimit *rl = auth_ratelimit_new(1, 4, 16);
    int64_t retry;
    assert_int_equal(auth_ratelimit_take_at(rl, "k", 100, T0, &retry, NULL), RD_OK);
    assert_int_equal(auth_ratelimit_take_at(rl, "k", 100, T0, &retry, NULL), RD_RATE_LIMITED);
    assert_int_equal(retry, 4000);
    auth_ratelimit_free(rl);
}

static void test_clock_going_back_does_not_refill(void **state)
{
    (void)state;
    auth_ratelimit *rl = auth_ratelimit_new(1, 1, 16);
    int64_t retry;
    assert_int_equal(auth_ratelimit_take_at(rl, "k", 1, T0, &retry, NULL), RD_OK);
    assert_int_equal(auth_ratelimit_take_at(rl, "k", 1, T0 - 10 * SEC, &retry, NULL),
                     RD_RATE_LIMITED);
    auth_ratelimit_free(rl);
}

static void test_memory_is_bounded_by_max_keys(void **state)
{
    (void)state;
    auth_ratelimit *rl = auth_ratelimit_new(1, 10, 4);
    char key[32];
    for (int i = 0; i < 100; i++) {
        snprintf(key, sizeof key, "key_%d", i);
        assert_int_equal(auth_ratelimit_take_at(rl, key, 1, T0, NULL, NULL), RD_OK);
        assert_true(auth_ratelimit_size(rl) <= 4);
    }
    assert_int_equal(auth_ratelimit_size(rl), 4);
    auth_ratelimit_free(rl);
}

static void test_idle_buckets_are_evicted(void **state)
{
    (void)state;
    auth_ratelimit *rl = auth_ratelimit_new(1, 2, 64);
    char key[32];
    for (int i = 0; i < 10; i++) {
        snprintf(key, sizeof key, "key_%d", i);
        assert_int_equal(auth_ratelimit_take_at(rl, key, 1, T0, NULL, NULL), RD_OK);
    }
    assert_int_equal(auth_ratelimit_size(rl), 10);
    /* 2 s later every bucket is full again: all ten are dropped */
    assert_int_equal(auth_ratelimit_take_at(rl, "other", 1, T0 + 2 * SEC, NULL, NULL), RD_OK);
    assert_int_equal(auth_ratelimit_size(rl), 1);
    auth_ratelimit_free(rl);
}

static void test_recently_used_bucket_survives_eviction(void **state)
{
    (void)state;
    auth_ratelimit *rl = auth_ratelimit_new(1, 1, 2);
    int64_t retry;
    assert_int_equal(auth_ratelimit_take_at(rl, "hot", 1, T0, &retry, NULL), RD_OK);
    assert_int_equal(auth_ratelimit_take_at(rl, "cold", 1, T0 + 1, &retry, NULL), RD_OK);
    assert_int_equal(auth_ratelimit_take_at(rl, "hot", 1, T0 + 2, &retry, NULL), RD_RATE_LIMITED);
    /* a third key evicts the least recently used one, "cold" */
    assert_int_equal(auth_ratelimit_take_at(rl, "new", 1, T0 + 3, &retry, NULL), RD_OK);
    assert_int_equal(auth_ratelimit_take_at(rl, "hot", 1, T0 + 4, &retry, NULL), RD_RATE_LIMITED);
    auth_ratelimit_free(rl);
}

static void test_bad_arguments(void **state)
{
    (void)state;
    assert_null(auth_ratelimit_new(0, 1, 1));
    assert_null(auth_ratelimit_new(1, 0, 1));
    assert_null(auth_ratelimit_new(1, 1, 0));
    assert_null(auth_ratelimit_new(-1, 1, 1));
    auth_ratelimit *rl = auth_ratelimit_new(1, 1, 1);
    assert_int_equal(auth_ratelimit_take_at(rl, NULL, 1, T0, NULL, NULL), RD_INTERNAL);
    char big[2000];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    assert_int_equal(auth_ratelimit_take_at(rl, big, 1, T0, NULL, NULL), RD_INTERNAL);
    auth_ratelimit_free(rl);
}

static void test_wall_clock_variant_limits(void **state)
{
    (void)state;
    auth_ratelimit *rl = auth_ratelimit_new(0.001, 1, 4);
    int64_t retry;
    assert_int_equal(auth_ratelimit_take(rl, "k", 1, &retry, NULL), RD_OK);
    assert_int_equal(auth_ratelimit_take(rl, "k", 1, &retry, NULL), RD_RATE_LIMITED);
    assert_true(retry > 900000);
    auth_ratelimit_free(rl);
}

typedef struct worker {
    auth_ratelimit *rl;
    int passed;
} worker;

static void *take_many(void *arg)
{
    worker *w = arg;
    char key[16];
    for (int i = 0; i < 2000; i++) {
        snprintf(key, sizeof key, "key_%d", i % 3);
        if (auth_ratelimit_take_at(w->rl, key, 1, T0, NULL, NULL) == RD_OK)
            w->passed++;
    }
    return NULL;
}

/* Eight threads at one instant: exactly burst requests pass per key. */
static void test_concurrent_takes_never_exceed_burst(void **state)
{
    (void)state;
    auth_ratelimit *rl = auth_ratelimit_new(1, 100, 16);
    pthread_t th[8];
    worker w[8];
    for (int i = 0; i < 8; i++) {
        w[i].rl = rl;
        w[i].passed = 0;
        assert_int_equal(pthread_create(&th[i], NULL, take_many, &w[i]), 0);
    }
    int total = 0;
    for (int i = 0; i < 8; i++) {
        pthread_join(th[i], NULL);
        total += w[i].passed;
    }
    assert_int_equal(total, 300);
    auth_ratelimit_free(rl);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_burst_passes_then_limits),
        cmocka_unit_test(test_tokens_refill_with_time),
        cmocka_unit_test(test_refill_is_capped_at_burst),
        cmocka_unit_test(test_keys_have_separate_buckets),
        cmocka_unit_test(test_cost_is_clamped_to_burst),
        cmocka_unit_test(test_clock_going_back_does_not_refill),
        cmocka_unit_test(test_memory_is_bounded_by_max_keys),
        cmocka_unit_test(test_idle_buckets_are_evicted),
        cmocka_unit_test(test_recently_used_bucket_survives_eviction),
        cmocka_unit_test(test_bad_arguments),
        cmocka_unit_test(test_wall_clock_variant_limits),
        cmocka_unit_test(test_concurrent_takes_never_exceed_burst),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
