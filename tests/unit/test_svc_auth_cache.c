/* Unit tests for the verified-credential cache of service/svc_auth.c and
 * its memory-only mode, which the completion-queue thread uses so that it
 * never reads SQLite (docs/internals/server.md). */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "service/svc_auth.h"
#include "tests/unit/unit_db.h"

static const unsigned char H1[AUTH_APIKEY_HASH_BYTES] = {7, 1, 2};

typedef struct fixture {
    char dir[64];
    char path[128];
    store *s;
    svc_auth *a;
} fixture;

static int setup(void **state)
{
    fixture *fx = calloc(1, sizeof *fx);
    rd_err err;
    snprintf(fx->dir, sizeof fx->dir, "/tmp/rd_authcache_XXXXXX");
    if (fx == NULL || mkdtemp(fx->dir) == NULL)
        return -1;
    snprintf(fx->path, sizeof fx->path, "%s/test.db", fx->dir);
    store_options o = {.path = fx->path};
    if (store_open(&o, &fx->s, &err) != RD_OK ||
        store_key_insert(fx->s, "key_a", H1, "acme", "admin", "[]", NULL, &err) != RD_OK)
        return -1;
    fx->a = calloc(1, sizeof *fx->a);
    if (fx->a == NULL)
        return -1;
    fx->a->db = fx->s;
    pthread_mutex_init(&fx->a->cache_mu, NULL);
    /* a window no machine misses: the test moves the clock by shrinking it */
    fx->a->gen_recheck_us = 3600 * (int64_t)1000000;
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    fixture *fx = *state;
    svc_auth_close(fx->a);
    store_close(fx->s);
    unit_db_remove(fx->dir, fx->path);
    free(fx);
    return 0;
}

/* A memory-only lookup: its code, and whether it said the store was needed. */
static rd_code memory_only_lookup(svc_auth *a, bool *needed_store)
{
    auth_principal *p = NULL;
    rd_err err;
    svc_auth_memory_only_begin();
    rd_code code = svc_auth_lookup_key_cached(a, H1, &p, &err);
    *needed_store = svc_auth_memory_only_end();
    auth_principal_free(p);
    return code;
}

/* What the steps saw; asserted on the test's thread (cmocka's assertions
 * must not fail on another thread). */
typedef struct steps {
    fixture *fx;
    rd_code cold, filled, warm, stale, revoked;
    bool cold_needed, warm_needed, stale_needed, token_needed;
    char principal_id[32];
    bool revoked_principal;
    int token_in_mode, token_outside;
} steps;

/* The steps run on their own thread, so its read connection (opened by
 * store_thread_conn) is closed when the thread exits, before store_close. */
static void *cache_steps(void *arg)
{
    steps *st = arg;
    fixture *fx = st->fx;
    auth_principal *p = NULL;
    rd_err err;

    /* cold: nothing in memory, so memory-only refuses and says so */
    st->cold = memory_only_lookup(fx->a, &st->cold_needed);
    /* a normal lookup reads the store and fills the cache */
    st->filled = svc_auth_lookup_key_cached(fx->a, H1, &p, &err);
    if (p != NULL)
        snprintf(st->principal_id, sizeof st->principal_id, "%s", auth_principal_id(p));
    auth_principal_free(p);
    p = NULL;
    /* within the generation window it is answered from memory */
    st->warm = memory_only_lookup(fx->a, &st->warm_needed);
    /* once the generation read is older than the window, memory-only
     * refuses again (a revocation might have happened meanwhile) */
    fx->a->gen_recheck_us = 0;
    st->stale = memory_only_lookup(fx->a, &st->stale_needed);
    /* a revocation raises the generation: the cached entry is not used */
    store_key_revoke(fx->s, "key_a", &err);
    st->revoked = svc_auth_lookup_key_cached(fx->a, H1, &p, &err);
    st->revoked_principal = p != NULL;
    auth_principal_free(p);
    /* a token's revocation check is a store read: refused, fails closed */
    svc_auth_memory_only_begin();
    st->token_in_mode = svc_auth_is_revoked(fx->s, "jti_x", "key_b");
    st->token_needed = svc_auth_memory_only_end();
    st->token_outside = svc_auth_is_revoked(fx->s, "jti_x", "key_b");
    return NULL;
}

static void test_memory_only_answers_only_from_a_fresh_cache(void **state)
{
    steps st = {.fx = *state};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, cache_steps, &st), 0);
    assert_int_equal(pthread_join(t, NULL), 0);
    assert_int_not_equal(st.cold, RD_OK);
    assert_true(st.cold_needed);
    assert_int_equal(st.filled, RD_OK);
    assert_string_equal(st.principal_id, "key_a");
    assert_int_equal(st.warm, RD_OK);
    assert_false(st.warm_needed);
    assert_int_not_equal(st.stale, RD_OK);
    assert_true(st.stale_needed);
    assert_int_equal(st.revoked, RD_UNAUTHENTICATED);
    assert_false(st.revoked_principal);
    assert_int_equal(st.token_in_mode, 1);
    assert_true(st.token_needed);
    assert_int_equal(st.token_outside, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_memory_only_answers_only_from_a_fresh_cache, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
