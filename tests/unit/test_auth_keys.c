/* Unit tests for auth/apikey.c and auth/credential.c: every case of
 * api-keys.json (read at run time from tests/unit/testdata/ or
 * $AUTH_TESTDATA_DIR), key generation, and the classification of
 * `authorization` values. */
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
#include <sodium.h>

#include "auth/auth.h"
#include "auth/auth_int.h"
#include "tests/unit/testdata_util.h"

/* 1 when msg contains any 10-byte run of secret. */
static int echoes(const char *msg, const char *secret)
{
    size_t n = strlen(secret), m = strlen(msg);
    for (size_t i = 0; i + 10 <= n; i++)
        for (size_t j = 0; j + 10 <= m; j++)
            if (memcmp(msg + j, secret + i, 10) == 0)
                return 1;
    return 0;
}

/* A store stand-in: records the hash it was asked for, knows no key. */
typedef struct lookup_log {
    int calls;
    unsigned char hash[AUTH_APIKEY_HASH_BYTES];
    const unsigned char *known; /* hash of the one known key, or NULL */
} lookup_log;

static rd_code lookup_cb(void *ctx, const unsigned char hash[AUTH_APIKEY_HASH_BYTES],
                         auth_principal **out, rd_err *err)
{
    lookup_log *log = ctx;
    log->calls++;
    memcpy(log->hash, hash, AUTH_APIKEY_HASH_BYTES);
    if (log->known != NULL && auth_apikey_hash_equal(hash, log->known)) {
        auth_caps *caps = auth_caps_new();
        assert_int_equal(auth_caps_add(caps, AUTH_READ, "*", "*", NULL, 0, NULL), RD_OK);
        rd_code rc =
            auth_principal_new_api_key("key_01JX8Z3T6V", "org_acme", "admin", caps, out, err);
        auth_caps_free(caps);
        return rc;
    }
    return rd_errf(err, RD_UNAUTHENTICATED, NULL, "unknown API key");
}

static rd_code authenticate(const unsigned char *pepper, lookup_log *log, const char *key,
                            auth_principal **p, rd_err *err)
{
    auth_config cfg;
    auth_config_init(&cfg);
    cfg.pepper = pepper;
    cfg.lookup_key = lookup_cb;
    cfg.lookup_ctx = log;
    char header[256];
    int n = snprintf(header, sizeof header, "Bearer %s", key);
    return auth_authenticate(&cfg, header, (size_t)n, p, err);
}

/* ---- api-keys.json -------------------------------------------------------------- */

static void test_api_key_cases(void **state)
{
    (void)state;
    json_t *doc = load_json("auth/api-keys.json");
    unsigned char pepper[AUTH_PEPPER_BYTES];
    assert_int_equal(hex_to_bin(str_of(doc, "pepper_hex"), pepper, sizeof pepper), 32);
    size_t i, wellformed = 0, before = 0, notkey = 0;
    json_t *t;
    json_array_foreach(json_object_get(doc, "tests"), i, t)
    {
        const char *name = str_of(t, "name"), *key = str_of(t, "key"),
                   *expect = str_of(t, "expect");
        auth_key_env env = 0;
        rd_err err;
        rd_err_clear(&err);
        rd_code rc = auth_apikey_check(key, strlen(key), &env, &err);
        lookup_log log = {0};
        auth_principal *p = NULL;
        rd_err aerr;
        rd_code arc = authenticate(pepper, &log, key, &p, &aerr);
        assert_null(p);
        assert_int_equal(arc, RD_UNAUTHENTICATED); /* the stand-in store knows no key */
        assert_false(echoes(aerr.msg, key));
        if (strcmp(expect, "well-formed") == 0) {
            if (rc != RD_OK)
                fail_msg("%s: %s", name, err.msg);
            if (str_of(t, "environment") != NULL)
                assert_string_equal(str_of(t, "environment"),
                                    env == AUTH_KEY_LIVE ? "live" : "test");
            unsigned char want[32], got[32];
            hex_to_bin(str_of(t, "stored_hash_hex"), want, sizeof want);
            assert_int_equal(auth_apikey_hash(pepper, key, strlen(key), got, NULL), RD_OK);
            assert_memory_equal(got, want, 32);
            assert_true(auth_apikey_hash_equal(got, want));
            /* the lookup saw exactly that hash, once */
            assert_int_equal(log.calls, 1);
            assert_memory_equal(log.hash, want, 32);
            if (str_of(t, "random_hex") != NULL) {
                unsigned char rnd[32], buf[40], crc[4];
                char again[AUTH_APIKEY_LEN + 1];
                hex_to_bin(str_of(t, "random_hex"), rnd, sizeof rnd);
                hex_to_bin(str_of(t, "crc32_hex"), crc, sizeof crc);
                memcpy(buf, key, 8);
                memcpy(buf + 8, rnd, 32);
                uint32_t c = auth__crc32(buf, sizeof buf);
                assert_int_equal(c, (uint32_t)crc[0] << 24 | (uint32_t)crc[1] << 16 |
                                        (uint32_t)crc[2] << 8 | crc[3]);
                auth__apikey_encode(env, rnd, again);
                assert_string_equal(again, key);
            }
            wellformed++;
        } else if (strcmp(expect, "reject-before-lookup") == 0) {
            if (rc != RD_UNAUTHENTICATED)
                fail_msg("%s: accepted", name);
            assert_int_equal(log.calls, 0);
            assert_false(echoes(err.msg, key));
            before++;
        } else {
            assert_string_equal(expect, "not-an-api-key");
            assert_int_equal(rc, RD_UNAUTHENTICATED);
            assert_int_equal(log.calls, 0);
            auth_kind kind;
            const char *cred;
            size_t cred_len;
            char header[128];
            int n = snprintf(header, sizeof header, "Bearer %s", key);
            assert_int_equal(auth_classify(header, (size_t)n, &kind, &cred, &cred_len, &err),
                             RD_UNAUTHENTICATED);
            assert_false(echoes(err.msg, key));
            notkey++;
        }
    }
    print_message("api-keys.json: %zu well-formed, %zu rejected before lookup, %zu not keys\n",
                  wellformed, before, notkey);
    assert_int_equal(wellformed + before + notkey, json_array_size(json_object_get(doc, "tests")));
    json_decref(doc);
}

static void test_api_key_found_by_lookup_becomes_principal(void **state)
{
    (void)state;
    json_t *doc = load_json("auth/api-keys.json");
    unsigned char pepper[32], known[32];
    hex_to_bin(str_of(doc, "pepper_hex"), pepper, sizeof pepper);
    json_t *valid = json_array_get(json_object_get(doc, "tests"), 0);
    hex_to_bin(str_of(valid, "stored_hash_hex"), known, sizeof known);
    lookup_log log = {.known = known};
    auth_principal *p = NULL;
    assert_int_equal(authenticate(pepper, &log, str_of(valid, "key"), &p, NULL), RD_OK);
    assert_int_equal(auth_principal_kind(p), AUTH_KIND_API_KEY);
    assert_string_equal(auth_principal_id(p), "key_01JX8Z3T6V");
    assert_string_equal(auth_principal_org(p), "org_acme");
    assert_string_equal(auth_principal_role(p), "admin");
    assert_null(auth_principal_jti(p));
    assert_int_equal(auth_caps_count(auth_principal_caps(p)), 1);
    auth_principal_free(p);
    json_decref(doc);
}

static void test_api_keys_disabled_without_pepper(void **state)
{
    (void)state;
    auth_config cfg;
    auth_config_init(&cfg);
    auth_principal *p = NULL;
    static const char h[] = "Bearer sk_live_b45v1W7ZlRPsebvBrd8mb-OiiAwEpbyISDzMCn0Kw5ZG-So3";
    assert_int_equal(auth_authenticate(&cfg, h, strlen(h), &p, NULL), RD_UNAUTHENTICATED);
    assert_null(p);
}

static void test_generated_keys_are_well_formed_and_distinct(void **state)
{
    (void)state;
    char a[AUTH_APIKEY_LEN + 1], b[AUTH_APIKEY_LEN + 1];
    auth_key_env env = 0;
    assert_int_equal(auth_apikey_generate(AUTH_KEY_LIVE, a, NULL), RD_OK);
    assert_int_equal(auth_apikey_generate(AUTH_KEY_TEST, b, NULL), RD_OK);
    assert_int_equal(strlen(a), AUTH_APIKEY_LEN);
    assert_int_equal(strncmp(a, "sk_live_", 8), 0);
    assert_int_equal(strncmp(b, "sk_test_", 8), 0);
    assert_int_equal(auth_apikey_check(a, strlen(a), &env, NULL), RD_OK);
    assert_int_equal(env, AUTH_KEY_LIVE);
    assert_int_equal(auth_apikey_check(b, strlen(b), &env, NULL), RD_OK);
    assert_int_equal(env, AUTH_KEY_TEST);
    assert_string_not_equal(a + 8, b + 8);
    sodium_memzero(a, sizeof a);
    sodium_memzero(b, sizeof b);
}

static void test_generate_rejects_unknown_environment(void **state)
{
    (void)state;
    char k[AUTH_APIKEY_LEN + 1];
    assert_int_equal(auth_apikey_generate((auth_key_env)7, k, NULL), RD_INTERNAL);
}

static void test_every_single_char_typo_is_caught_by_checksum(void **state)
{
    (void)state;
    static const char key[] = "sk_live_b45v1W7ZlRPsebvBrd8mb-OiiAwEpbyISDzMCn0Kw5ZG-So3";
    static const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    char typo[sizeof key];
    for (size_t pos = 8; pos < AUTH_APIKEY_LEN; pos++) {
        for (const char *c = alphabet; *c; c++) {
            if (*c == key[pos])
                continue;
            memcpy(typo, key, sizeof key);
            typo[pos] = *c;
            if (auth_apikey_check(typo, AUTH_APIKEY_LEN, NULL, NULL) == RD_OK)
                fail_msg("typo at %zu accepted", pos);
        }
    }
}

static void test_hash_refuses_malformed_key(void **state)
{
    (void)state;
    unsigned char pepper[32] = {0}, out[32];
    assert_int_equal(auth_apikey_hash(pepper, "sk_live_short", 13, out, NULL), RD_UNAUTHENTICATED);
}

static void test_hash_equal_compares_all_bytes(void **state)
{
    (void)state;
    unsigned char a[32], b[32];
    memset(a, 7, sizeof a);
    memcpy(b, a, sizeof b);
    assert_true(auth_apikey_hash_equal(a, b));
    b[31] ^= 1;
    assert_false(auth_apikey_hash_equal(a, b));
}

/* ---- classification ---------------------------------------------------------- */

static const char KEY[] = "sk_test_UXmq2XSJXKUvD_y_qtJr7YjMz_aDudc7C5aYstuh0wVl9T1i";

static rd_code classify(const char *v, auth_kind *kind, const char **cred, size_t *len, rd_err *err)
{
    return auth_classify(v, v ? strlen(v) : 0, kind, cred, len, err);
}

static void test_classify_bearer_api_key(void **state)
{
    (void)state;
    char h[128];
    snprintf(h, sizeof h, "Bearer %s", KEY);
    auth_kind kind = 0;
    const char *cred;
    size_t len;
    assert_int_equal(classify(h, &kind, &cred, &len, NULL), RD_OK);
    assert_int_equal(kind, AUTH_KIND_API_KEY);
    assert_int_equal(len, strlen(KEY));
    assert_memory_equal(cred, KEY, len);
}

static void test_classify_bearer_token(void **state)
{
    (void)state;
    auth_kind kind = 0;
    const char *cred;
    size_t len;
    assert_int_equal(classify("Bearer v4.public.eyJ4IjoxfQ", &kind, &cred, &len, NULL), RD_OK);
    assert_int_equal(kind, AUTH_KIND_TOKEN);
    assert_int_equal(len, strlen("v4.public.eyJ4IjoxfQ"));
}

static void test_classify_scheme_is_case_insensitive(void **state)
{
    (void)state;
    char h[128];
    snprintf(h, sizeof h, "bEaReR   %s  ", KEY);
    auth_kind kind = 0;
    const char *cred;
    size_t len;
    assert_int_equal(classify(h, &kind, &cred, &len, NULL), RD_OK);
    assert_int_equal(len, strlen(KEY)); /* surrounding spaces are not part of it */
}

static void test_classify_missing_is_unauthenticated(void **state)
{
    (void)state;
    auth_kind kind;
    const char *cred;
    size_t len;
    rd_err err;
    assert_int_equal(classify(NULL, &kind, &cred, &len, &err), RD_UNAUTHENTICATED);
    assert_non_null(strstr(err.msg, "missing"));
    assert_int_equal(classify("", &kind, &cred, &len, NULL), RD_UNAUTHENTICATED);
    assert_int_equal(classify("Bearer", &kind, &cred, &len, NULL), RD_UNAUTHENTICATED);
    assert_int_equal(classify("Bearer   ", &kind, &cred, &len, NULL), RD_UNAUTHENTICATED);
}

/* Everything that is not Bearer + an sk_ key or a v4.public token fails
 * with a message that does not repeat the credential. */
static void test_classify_rejects_other_shapes_without_echo(void **state)
{
    (void)state;
    static const char *bad[] = {
        "Basic dXNlcjpzZWNyZXRwYXNzd29yZA==",
        "Token sk_live_b45v1W7ZlRPsebvBrd8mb-OiiAwEpbyISDzMCn0Kw5ZG-So3",
        "Bearersk_live_b45v1W7ZlRPsebvBrd8mb-OiiAwEpbyISDzMCn0Kw5ZG-So3",
        "sk_live_b45v1W7ZlRPsebvBrd8mb-OiiAwEpbyISDzMCn0Kw5ZG-So3",
        "Bearer v4.local.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAQAr68PS4AXe7If",
        "Bearer v3.public.eyJpc3MiOiJyZWNvcmRkIn0AAAAAAAAAAAAAAAAAAAA",
        "Bearer V4.PUBLIC.eyJpc3MiOiJyZWNvcmRkIn0AAAAAAAAAAAAAAAAAAAA",
        "Bearer SK_LIVE_b45v1W7ZlRPsebvBrd8mb-OiiAwEpbyISDzMCn0Kw5ZG-So3",
        "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.signaturepart",
        "Bearer garbage-garbage-garbage",
        "Bearer sk_live_b45v1W7ZlRPsebvBrd8mb OiiAwEpbyISDzMCn0Kw5ZG-So3",
        "Bearer sk_live_b45v1W7ZlRPsebvBrd8mb-OiiAwEpbyISDzMCn0Kw5ZG-So3\n",
        "Bearer sk_live_b45v1W7ZlRPsebvBrd8mb-Oii\xc3\xa9wEpbyISDzMCn0Kw5ZG-So3",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        auth_kind kind;
        const char *cred;
        size_t len;
        rd_err err;
        if (classify(bad[i], &kind, &cred, &len, &err) != RD_UNAUTHENTICATED)
            fail_msg("accepted case %zu", i);
        assert_true(err.msg[0] != '\0');
        assert_false(echoes(err.msg, bad[i]));
    }
}

static void test_classify_rejects_embedded_nul(void **state)
{
    (void)state;
    static const char h[] = "Bearer sk_live_b45v1W7ZlRPsebvBrd8mb-\0OiiAwEpbyISDzMCn0Kw5ZG-So3";
    auth_kind kind;
    const char *cred;
    size_t len;
    assert_int_equal(auth_classify(h, sizeof h - 1, &kind, &cred, &len, NULL), RD_UNAUTHENTICATED);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_api_key_cases),
        cmocka_unit_test(test_api_key_found_by_lookup_becomes_principal),
        cmocka_unit_test(test_api_keys_disabled_without_pepper),
        cmocka_unit_test(test_generated_keys_are_well_formed_and_distinct),
        cmocka_unit_test(test_generate_rejects_unknown_environment),
        cmocka_unit_test(test_every_single_char_typo_is_caught_by_checksum),
        cmocka_unit_test(test_hash_refuses_malformed_key),
        cmocka_unit_test(test_hash_equal_compares_all_bytes),
        cmocka_unit_test(test_classify_bearer_api_key),
        cmocka_unit_test(test_classify_bearer_token),
        cmocka_unit_test(test_classify_scheme_is_case_insensitive),
        cmocka_unit_test(test_classify_missing_is_unauthenticated),
        cmocka_unit_test(test_classify_rejects_other_shapes_without_echo),
        cmocka_unit_test(test_classify_rejects_embedded_nul),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
