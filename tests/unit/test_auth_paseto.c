/* Unit tests for auth/paseto.c, auth/keyring.c and auth/token.c: the official
 * PASETO v4 and PASERK k4 vectors, every case of capability-tokens.json
 * (table-driven, read at run time), minting, keyrings and signers.
 * Vectors live in tests/unit/testdata/ (found next to this file, or in
 * $AUTH_TESTDATA_DIR). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>
#include <pthread.h>
#include <sodium.h>

#include "auth/auth.h"
#include "auth/auth_int.h"
#include "tests/unit/testdata_util.h"

/* ---- helpers ------------------------------------------------------------------ */

/* A JSON string member as bytes ("" when absent or null). */
static const char *opt_str(json_t *o, const char *k)
{
    const char *s = str_of(o, k);
    return s ? s : "";
}

/* ---- PASETO v4 vectors ------------------------------------------------------- */

static void test_v4_public_vectors_sign_reproduces_token(void **state)
{
    (void)state;
    json_t *doc = load_json("paseto/v4.json");
    size_t i, count = 0;
    json_t *t;
    json_array_foreach(json_object_get(doc, "tests"), i, t)
    {
        const char *token = str_of(t, "token");
        if (json_is_true(json_object_get(t, "expect-fail")) ||
            strncmp(token, "v4.public.", 10) != 0)
            continue;
        unsigned char sk[64];
        assert_int_equal(hex_to_bin(str_of(t, "secret-key"), sk, sizeof sk), 64);
        const char *m = str_of(t, "payload"), *f = opt_str(t, "footer");
        const char *ia = opt_str(t, "implicit-assertion");
        char *out = NULL;
        assert_int_equal(auth__paseto_sign(sk, (const unsigned char *)m, strlen(m),
                                           (const unsigned char *)f, strlen(f),
                                           (const unsigned char *)ia, strlen(ia), &out, NULL),
                         RD_OK);
        if (strcmp(out, token) != 0)
            fail_msg("%s: signed token differs", str_of(t, "name"));
        free(out);
        sodium_memzero(sk, sizeof sk);
        count++;
    }
    assert_int_equal(count, 3);
    json_decref(doc);
}

static void test_v4_public_vectors_verify(void **state)
{
    (void)state;
    json_t *doc = load_json("paseto/v4.json");
    size_t i, count = 0;
    json_t *t;
    json_array_foreach(json_object_get(doc, "tests"), i, t)
    {
        const char *token = str_of(t, "token");
        if (json_is_true(json_object_get(t, "expect-fail")) ||
            strncmp(token, "v4.public.", 10) != 0)
            continue;
        unsigned char pk[32];
        assert_int_equal(hex_to_bin(str_of(t, "public-key"), pk, sizeof pk), 32);
        const char *ia = opt_str(t, "implicit-assertion");
        unsigned char *m = NULL, *f = NULL;
        size_t ml = 0, fl = 0;
        rd_err err;
        rd_code rc = auth__paseto_verify(pk, token, strlen(token), (const unsigned char *)ia,
                                         strlen(ia), &m, &ml, &f, &fl, &err);
        if (rc != RD_OK)
            fail_msg("%s: %s", str_of(t, "name"), err.msg);
        assert_int_equal(ml, strlen(str_of(t, "payload")));
        assert_memory_equal(m, str_of(t, "payload"), ml);
        assert_int_equal(fl, strlen(opt_str(t, "footer")));
        assert_memory_equal(f, opt_str(t, "footer"), fl);
        free(m);
        free(f);
        /* a different implicit assertion breaks the signature */
        assert_int_equal(auth__paseto_verify(pk, token, strlen(token), (const unsigned char *)"x",
                                             1, &m, &ml, &f, &fl, NULL),
                         RD_UNAUTHENTICATED);
        count++;
    }
    assert_int_equal(count, 3);
    json_decref(doc);
}

/* Every expect-fail vector, with whatever key it carries (public key, or the
 * symmetric key read as a public key) and with key A: always rejected. */
static void test_v4_expect_fail_vectors_are_rejected(void **state)
{
    (void)state;
    json_t *doc = load_json("paseto/v4.json");
    static const char key_a[] = "1eb9dbbbbc047c03fd70604e0071f0987e16b28b757225c11f00415d0e20b1a2";
    size_t i, count = 0;
    json_t *t;
    json_array_foreach(json_object_get(doc, "tests"), i, t)
    {
        if (!json_is_true(json_object_get(t, "expect-fail")))
            continue;
        const char *token = str_of(t, "token");
        const char *ia = opt_str(t, "implicit-assertion");
        const char *keys[2] = {str_of(t, "public-key") ? str_of(t, "public-key") : str_of(t, "key"),
                               key_a};
        for (int k = 0; k < 2; k++) {
            unsigned char pk[32];
            unsigned char *m = NULL, *f = NULL;
            size_t ml = 0, fl = 0;
            rd_err err;
            assert_int_equal(hex_to_bin(keys[k], pk, sizeof pk), 32);
            rd_code rc = auth__paseto_verify(pk, token, strlen(token), (const unsigned char *)ia,
                                             strlen(ia), &m, &ml, &f, &fl, &err);
            if (rc != RD_UNAUTHENTICATED)
                fail_msg("%s: accepted", str_of(t, "name"));
            assert_null(m);
            assert_null(f);
            if (strncmp(token, "v4.local.", 9) == 0)
                assert_non_null(strstr(err.msg, "expected v4.public"));
        }
        count++;
    }
    assert_int_equal(count, 5);
    json_decref(doc);
}

static void test_v4_local_vectors_are_rejected_as_not_public(void **state)
{
    (void)state;
    json_t *doc = load_json("paseto/v4.json");
    unsigned char pk[32];
    hex_to_bin("1eb9dbbbbc047c03fd70604e0071f0987e16b28b757225c11f00415d0e20b1a2", pk, 32);
    size_t i, count = 0;
    json_t *t;
    json_array_foreach(json_object_get(doc, "tests"), i, t)
    {
        const char *token = str_of(t, "token");
        if (strncmp(token, "v4.local.", 9) != 0)
            continue;
        unsigned char *m = NULL, *f = NULL;
        size_t ml = 0, fl = 0;
        rd_err err;
        assert_int_equal(
            auth__paseto_verify(pk, token, strlen(token), NULL, 0, &m, &ml, &f, &fl, &err),
            RD_UNAUTHENTICATED);
        assert_non_null(strstr(err.msg, "expected v4.public"));
        count++;
    }
    assert_int_equal(count, 12); /* 4-E-1..9, 4-F-1, 4-F-4, 4-F-5 */
    json_decref(doc);
}

static void test_pae_matches_spec_examples(void **state)
{
    (void)state;
    size_t n = 0;
    unsigned char *p = auth__pae(NULL, NULL, 0, &n);
    assert_int_equal(n, 8);
    assert_memory_equal(p, "\0\0\0\0\0\0\0\0", 8);
    free(p);
    const unsigned char *one[1] = {(const unsigned char *)""};
    size_t one_len[1] = {0};
    p = auth__pae(one, one_len, 1, &n);
    assert_int_equal(n, 16);
    assert_memory_equal(p, "\x01\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0", 16);
    free(p);
    const unsigned char *two[1] = {(const unsigned char *)"test"};
    size_t two_len[1] = {4};
    p = auth__pae(two, two_len, 1, &n);
    assert_int_equal(n, 20);
    assert_memory_equal(p, "\x01\0\0\0\0\0\0\0\x04\0\0\0\0\0\0\0test", 20);
    free(p);
}

static void test_b64url_decode_is_strict(void **state)
{
    (void)state;
    unsigned char out[16];
    size_t n = 0;
    assert_int_equal(auth__b64url_decode("QQ", 2, out, sizeof out, &n), 0);
    assert_int_equal(n, 1);
    assert_int_equal(auth__b64url_decode("QR", 2, out, sizeof out, &n), -1);   /* trailing bits */
    assert_int_equal(auth__b64url_decode("QQ==", 4, out, sizeof out, &n), -1); /* padding */
    assert_int_equal(auth__b64url_decode("Q", 1, out, sizeof out, &n), -1);    /* 1-char group */
    assert_int_equal(auth__b64url_decode("a+b/", 4, out, sizeof out, &n), -1); /* std alphabet */
    assert_int_equal(auth__b64url_decode("QUFB ", 5, out, sizeof out, &n), -1);
    assert_int_equal(auth__b64url_decode("QUFBQUFB", 8, out, 5, &n), -1); /* over cap */
}

/* ---- PASERK ------------------------------------------------------------------- */

static void test_k4_pid_vectors(void **state)
{
    (void)state;
    json_t *doc = load_json("paseto/k4.pid.json");
    size_t i, count = 0;
    json_t *t;
    json_array_foreach(json_object_get(doc, "tests"), i, t)
    {
        unsigned char key[64];
        size_t n = hex_to_bin(str_of(t, "key"), key, sizeof key);
        char pid[AUTH_KID_LEN + 1];
        rd_code rc = auth_paserk_pid(key, n, pid, NULL);
        if (json_is_true(json_object_get(t, "expect-fail"))) {
            assert_int_equal(rc, RD_VALIDATION_FAILED);
        } else {
            assert_int_equal(rc, RD_OK);
            assert_string_equal(pid, str_of(t, "paserk"));
        }
        count++;
    }
    assert_int_equal(count, 5);
    json_decref(doc);
}

static void test_k4_public_vectors(void **state)
{
    (void)state;
    json_t *doc = load_json("paseto/k4.public.json");
    size_t i, count = 0;
    json_t *t;
    json_array_foreach(json_object_get(doc, "tests"), i, t)
    {
        unsigned char key[64], back[32];
        size_t n = hex_to_bin(str_of(t, "key"), key, sizeof key);
        char s[AUTH_PASERK_PUBLIC_LEN + 1];
        rd_code rc = auth_paserk_public_encode(key, n, s, NULL);
        if (json_is_true(json_object_get(t, "expect-fail"))) {
            assert_int_equal(rc, RD_VALIDATION_FAILED);
        } else {
            assert_int_equal(rc, RD_OK);
            assert_string_equal(s, str_of(t, "paserk"));
            assert_int_equal(auth_paserk_public_decode(s, strlen(s), back, NULL), RD_OK);
            assert_memory_equal(back, key, 32);
        }
        count++;
    }
    assert_int_equal(count, 4);
    json_decref(doc);
}

static void test_paserk_public_decode_rejects_other_types(void **state)
{
    (void)state;
    unsigned char pk[32];
    static const char *bad[] = {
        "k3.public.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "k4.secret.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "k4.public.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAB", /* trailing bits */
        "k4.public.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",  /* short */
        "",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(auth_paserk_public_decode(bad[i], strlen(bad[i]), pk, NULL),
                         RD_VALIDATION_FAILED);
}

/* ---- capability-token cases ------------------------------------------------------ */

typedef struct revoked_lists {
    json_t *jtis;
    json_t *subjects;
} revoked_lists;

static int in_list(json_t *list, const char *s)
{
    size_t i;
    json_t *v;
    json_array_foreach(list, i, v)
    {
        if (strcmp(json_string_value(v), s) == 0)
            return 1;
    }
    return 0;
}

static int revoked_cb(void *ctx, const char *jti, const char *sub)
{
    revoked_lists *r = ctx;
    return in_list(r->jtis, jti) || in_list(r->subjects, sub);
}

/* A keyring from a {kid: public key hex} object; each kid must be the k4.pid
 * the library computes for its key. */
static auth_keyring *keyring_from_json(json_t *ring)
{
    auth_keyring *kr = auth_keyring_new();
    assert_non_null(kr);
    const char *kid;
    json_t *hex;
    json_object_foreach(ring, kid, hex)
    {
        unsigned char pk[32];
        char computed[AUTH_KID_LEN + 1];
        assert_int_equal(hex_to_bin(json_string_value(hex), pk, sizeof pk), 32);
        assert_int_equal(auth_keyring_add(kr, pk, computed, NULL), RD_OK);
        assert_string_equal(computed, kid);
    }
    return kr;
}

static json_t *context_for(json_t *doc, json_t *t)
{
    json_t *ctx = json_deep_copy(json_object_get(doc, "context"));
    json_t *over = json_object_get(t, "context_override");
    if (over != NULL)
        assert_int_equal(json_object_update(ctx, over), 0);
    return ctx;
}

static void check_principal_matches_claims(const auth_principal *p, json_t *claims)
{
    assert_int_equal(auth_principal_kind(p), AUTH_KIND_TOKEN);
    assert_string_equal(auth_principal_id(p), str_of(claims, "sub"));
    assert_string_equal(auth_principal_org(p), str_of(claims, "org"));
    assert_string_equal(auth_principal_jti(p), str_of(claims, "jti"));
    if (str_of(claims, "role") != NULL)
        assert_string_equal(auth_principal_role(p), str_of(claims, "role"));
    else
        assert_null(auth_principal_role(p));
    int64_t exp = 0;
    assert_int_equal(auth__parse_time(str_of(claims, "exp"), &exp), 0);
    assert_int_equal(auth_principal_expires_us(p), exp);
    char *caps = auth_caps_to_json(auth_principal_caps(p));
    json_t *got = json_loads(caps, 0, NULL);
    assert_true(json_equal(got, json_object_get(claims, "caps")));
    json_decref(got);
    free(caps);
}

/* 1 when msg contains any 10-byte run of secret (the credential). */
static int echoes(const char *msg, const char *secret)
{
    size_t n = strlen(secret), m = strlen(msg);
    for (size_t i = 0; i + 10 <= n; i++)
        for (size_t j = 0; j + 10 <= m; j++)
            if (memcmp(msg + j, secret + i, 10) == 0)
                return 1;
    return 0;
}

/* Why each rejection case must fail: a fragment of the expected message, so
 * a case cannot pass by failing for an unrelated reason. */
static const struct {
    const char *name;
    const char *why;
} reject_reasons[] = {
    {"rotated-out-key", "key id is not trusted"},
    {"expired", "expired"},
    {"not-yet-valid", "not valid yet"},
    {"ttl-too-long", "lifetime exceeds"},
    {"wrong-issuer", "issuer"},
    {"wrong-audience", "audience"},
    {"revoked-jti", "revoked"},
    {"revoked-subject-key", "revoked"},
    {"missing-exp", "claim exp"},
    {"missing-iat", "claim iat"},
    {"missing-jti", "claim jti"},
    {"missing-iss", "claim iss"},
    {"missing-aud", "claim aud"},
    {"missing-sub", "claim sub"},
    {"missing-org", "claim org"},
    {"missing-caps", "claim caps"},
    {"exp-as-number", "claim exp"},
    {"exp-lowercase-t", "claim exp"},
    {"exp-not-a-date", "claim exp"},
    {"tampered-payload", "signature"},
    {"footer-kid-swapped", "signature"},
    {"footer-stripped", "footer"},
    {"empty-footer-segment", "empty footer"},
    {"extra-segment", "too many segments"},
    {"unknown-kid", "key id is not trusted"},
    {"kid-not-paserk", "footer must be exactly"},
    {"footer-extra-keys", "footer must be exactly"},
    {"footer-carries-public-key", "footer must be exactly"},
    {"implicit-assertion-mismatch", "signature"},
    {"wrong-purpose-local", "expected v4.public"},
    {"wrong-version-v3", "not a v4.public"},
    {"wrong-version-v2", "not a v4.public"},
    {"uppercase-header", "not a v4.public"},
    {"padded-base64", "base64url"},
    {"std-base64-alphabet", "base64url"},
    {"body-shorter-than-signature", "shorter than a signature"},
    {"non-canonical-trailing-bits", "base64url"},
    {"payload-json-array", "JSON object"},
    {"payload-duplicate-keys", "repeats a claim"},
    {"payload-not-json", "not valid JSON"},
    {"payload-invalid-utf8", "UTF-8"},
    {"oversize-token", "exceeds 4096 bytes"},
};

static const char *reject_reason(const char *name)
{
    for (size_t i = 0; i < sizeof reject_reasons / sizeof reject_reasons[0]; i++)
        if (strcmp(reject_reasons[i].name, name) == 0)
            return reject_reasons[i].why;
    fail_msg("%s: no expected reason listed", name);
    return NULL;
}

/* Every case: verify directly and through auth_authenticate, compare the
 * outcome, the principal, the stable code and the gRPC status. */
static void test_capability_token_cases(void **state)
{
    (void)state;
    json_t *doc = load_json("auth/capability-tokens.json");
    size_t i, ok = 0, rejected = 0;
    json_t *t;
    json_array_foreach(json_object_get(doc, "tests"), i, t)
    {
        const char *name = str_of(t, "name");
        const char *token = str_of(t, "token");
        json_t *ctx = context_for(doc, t);
        auth_keyring *kr = keyring_from_json(json_object_get(ctx, "keyring"));
        revoked_lists rl = {json_object_get(ctx, "revoked_jtis"),
                            json_object_get(ctx, "revoked_subjects")};
        auth_config cfg;
        auth_config_init(&cfg);
        cfg.keyring = kr;
        cfg.issuer = str_of(ctx, "issuer");
        cfg.audience = str_of(ctx, "audience");
        cfg.skew_s = json_integer_value(json_object_get(ctx, "skew_seconds"));
        cfg.max_ttl_s = json_integer_value(json_object_get(ctx, "max_ttl_seconds"));
        cfg.max_token_bytes = (size_t)json_integer_value(json_object_get(ctx, "max_token_bytes"));
        assert_string_equal(str_of(ctx, "implicit_assertion"), "");
        assert_int_equal(auth__parse_time(str_of(ctx, "now"), &cfg.now_us), 0);
        cfg.is_revoked = revoked_cb;
        cfg.revoked_ctx = &rl;

        auth_principal *p = NULL;
        rd_err err;
        rd_err_clear(&err);
        rd_code rc = auth_token_verify(&cfg, token, strlen(token), &p, &err);

        size_t hlen = strlen("Bearer ") + strlen(token);
        char *header = malloc(hlen + 1);
        snprintf(header, hlen + 1, "Bearer %s", token);
        auth_principal *p2 = NULL;
        rd_code rc2 = auth_authenticate(&cfg, header, hlen, &p2, NULL);

        if (strcmp(str_of(t, "expect"), "ok") == 0) {
            if (rc != RD_OK)
                fail_msg("%s: rejected: %s", name, err.msg);
            assert_int_equal(rc2, RD_OK);
            check_principal_matches_claims(p, json_object_get(t, "claims"));
            check_principal_matches_claims(p2, json_object_get(t, "claims"));
            ok++;
        } else {
            if (rc == RD_OK)
                fail_msg("%s: accepted", name);
            assert_null(p);
            assert_int_equal(rc2, rc);
            if (strcmp(rd_code_str(rc), str_of(t, "code")) != 0)
                fail_msg("%s: code %s, want %s (%s)", name, rd_code_str(rc), str_of(t, "code"),
                         err.msg);
            assert_string_equal(str_of(t, "grpc"), "UNAUTHENTICATED");
            assert_int_equal(rd_code_grpc(rc), 16);
            assert_int_equal(rd_code_http(rc), 401);
            /* the message never carries token material */
            assert_true(err.msg[0] != '\0');
            assert_false(echoes(err.msg, token));
            if (strstr(err.msg, reject_reason(name)) == NULL)
                fail_msg("%s: rejected for another reason: %s", name, err.msg);
            rejected++;
        }
        auth_principal_free(p);
        auth_principal_free(p2);
        free(header);
        auth_keyring_free(kr);
        json_decref(ctx);
    }
    print_message("capability-tokens.json: %zu ok, %zu rejected\n", ok, rejected);
    assert_int_equal(ok + rejected, json_array_size(json_object_get(doc, "tests")));
    assert_true(ok >= 8 && rejected >= 40);
    json_decref(doc);
}

/* The keys of capability-tokens.json: seeds give the listed public keys and
 * kids, and a signer from seed A reproduces valid-basic byte for byte. */
static void test_capability_token_keys_and_resigning(void **state)
{
    (void)state;
    json_t *doc = load_json("auth/capability-tokens.json");
    const char *name;
    json_t *k;
    json_object_foreach(json_object_get(doc, "keys"), name, k)
    {
        unsigned char seed[32], pk[32], got[32];
        hex_to_bin(str_of(k, "seed"), seed, sizeof seed);
        hex_to_bin(str_of(k, "public_key"), pk, sizeof pk);
        auth_signer *s = NULL;
        assert_int_equal(auth_signer_from_seed(seed, &s, NULL), RD_OK);
        auth_signer_public_key(s, got);
        assert_memory_equal(got, pk, 32);
        assert_string_equal(auth_signer_kid(s), str_of(k, "kid"));
        auth_signer_free(s);
    }
    json_t *basic = json_array_get(json_object_get(doc, "tests"), 0);
    assert_string_equal(str_of(basic, "name"), "valid-basic");
    char *payload = json_dumps(json_object_get(basic, "claims"), JSON_COMPACT);
    unsigned char seed[32];
    hex_to_bin(str_of(json_object_get(json_object_get(doc, "keys"), "A"), "seed"), seed, 32);
    auth_signer *s = NULL;
    assert_int_equal(auth_signer_from_seed(seed, &s, NULL), RD_OK);
    char *token = NULL;
    assert_int_equal(auth__token_sign_payload(s, payload, strlen(payload), &token, NULL), RD_OK);
    assert_string_equal(token, str_of(basic, "token"));
    free(token);
    free(payload);
    auth_signer_free(s);
    json_decref(doc);
}

/* ---- behaviour beyond the tables ---------------------------------------------------- */

static const unsigned char seed_a[32] = {
    0xb4, 0xcb, 0xfb, 0x43, 0xdf, 0x4c, 0xe2, 0x10, 0x72, 0x7d, 0x95, 0x3e, 0x4a, 0x71, 0x33, 0x07,
    0xfa, 0x19, 0xbb, 0x7d, 0x9f, 0x85, 0x04, 0x14, 0x38, 0xd9, 0xe1, 0x1b, 0x94, 0x2a, 0x37, 0x74};

static auth_signer *signer_a(void)
{
    auth_signer *s = NULL;
    assert_int_equal(auth_signer_from_seed(seed_a, &s, NULL), RD_OK);
    return s;
}

static auth_keyring *keyring_of(const auth_signer *s)
{
    unsigned char pk[32];
    auth_keyring *kr = auth_keyring_new();
    auth_signer_public_key(s, pk);
    assert_int_equal(auth_keyring_add(kr, pk, NULL, NULL), RD_OK);
    return kr;
}

/* 2025-06-01T12:00:00Z */
static const int64_t NOW_US = INT64_C(1748779200) * 1000000;

static void test_token_signature_is_checked_before_claims(void **state)
{
    (void)state;
    auth_signer *s = signer_a();
    auth_keyring *kr = keyring_of(s);
    auth_config cfg;
    auth_config_init(&cfg);
    cfg.keyring = kr;
    cfg.now_us = NOW_US;
    char *token = NULL;
    assert_int_equal(auth__token_sign_payload(s, "not json", 8, &token, NULL), RD_OK);
    auth_principal *p = NULL;
    rd_err err;
    assert_int_equal(auth_token_verify(&cfg, token, strlen(token), &p, &err), RD_UNAUTHENTICATED);
    assert_non_null(strstr(err.msg, "JSON"));
    /* flip one signature bit: now the signature fails first */
    char *dot = strrchr(token, '.');
    dot[-2] = dot[-2] == 'A' ? 'B' : 'A';
    assert_int_equal(auth_token_verify(&cfg, token, strlen(token), &p, &err), RD_UNAUTHENTICATED);
    assert_non_null(strstr(err.msg, "signature"));
    assert_null(p);
    free(token);
    auth_keyring_free(kr);
    auth_signer_free(s);
}

static void test_token_without_keyring_is_unauthenticated(void **state)
{
    (void)state;
    auth_config cfg;
    auth_config_init(&cfg);
    auth_principal *p = NULL;
    assert_int_equal(auth_token_verify(&cfg, "v4.public.x", 11, &p, NULL), RD_UNAUTHENTICATED);
    assert_null(p);
}

static void test_time_parse_is_strict_rfc3339(void **state)
{
    (void)state;
    int64_t t = 0, z = 0;
    assert_int_equal(auth__parse_time("2025-06-01T12:10:00Z", &z), 0);
    assert_int_equal(auth__parse_time("2025-06-01T14:10:00+02:00", &t), 0);
    assert_int_equal(t, z);
    assert_int_equal(auth__parse_time("2025-06-01T12:10:00.5Z", &t), 0);
    assert_int_equal(t, z + 500000);
    static const char *bad[] = {
        "2025-06-01t12:10:00Z",
        "2025-06-01T12:10:00z",
        "2025-06-01 12:10:00Z",
        "2025-06-01T12:10:00",
        "2025-06-01T12:10Z",
        "2025-06-01T12:10:00+0200",
        "2025-02-30T12:10:00Z",
        "tomorrow",
        "2025-06-01T12:10:00Z ",
        "2025-06-01T12:10:00.Z",
        "",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (auth__parse_time(bad[i], &t) == 0)
            fail_msg("accepted %s", bad[i]);
}

static auth_principal *key_principal(const char *caps_json)
{
    auth_caps *caps = NULL;
    auth_principal *p = NULL;
    assert_int_equal(auth_caps_from_json(caps_json, strlen(caps_json), &caps, NULL), RD_OK);
    assert_int_equal(
        auth_principal_new_api_key("key_01JX8Z3T6V", "org_acme", "editor", caps, &p, NULL), RD_OK);
    auth_caps_free(caps);
    return p;
}

static void test_mint_then_verify_round_trips(void **state)
{
    (void)state;
    auth_signer *s = signer_a();
    auth_keyring *kr = keyring_of(s);
    auth_config cfg;
    auth_config_init(&cfg);
    cfg.keyring = kr;
    cfg.now_us = NOW_US + 123456; /* iat is truncated to whole seconds */
    auth_principal *key =
        key_principal("[{\"can\":[\"read\",\"update\"],\"model\":\"students\",\"group\":\"team-a\","
                      "\"fields\":[\"age\",\"email\"]}]");
    static const char req_json[] =
        "[{\"can\":[\"update\"],\"model\":\"students\",\"group\":\"team-a\",\"fields\":[\"age\"]}]";
    auth_caps *req = NULL;
    assert_int_equal(auth_caps_from_json(req_json, strlen(req_json), &req, NULL), RD_OK);
    auth_minted m;
    assert_int_equal(auth_mint(&cfg, s, key, req, 0, &m, NULL, NULL), RD_OK);
    assert_int_equal(m.ttl_s, AUTH_MINT_DEFAULT_TTL_S);
    assert_int_equal(m.issued_at_us, NOW_US);
    assert_int_equal(m.expires_at_us, NOW_US + AUTH_MINT_DEFAULT_TTL_S * INT64_C(1000000));
    assert_int_equal(strncmp(m.jti, "tok_", 4), 0);

    auth_principal *p = NULL;
    rd_err err;
    if (auth_token_verify(&cfg, m.token, strlen(m.token), &p, &err) != RD_OK)
        fail_msg("minted token rejected: %s", err.msg);
    assert_int_equal(auth_principal_kind(p), AUTH_KIND_TOKEN);
    assert_string_equal(auth_principal_id(p), "key_01JX8Z3T6V");
    assert_string_equal(auth_principal_org(p), "org_acme");
    assert_string_equal(auth_principal_role(p), "editor");
    assert_string_equal(auth_principal_jti(p), m.jti);
    char *caps = auth_caps_to_json(auth_principal_caps(p));
    assert_string_equal(caps, req_json);
    free(caps);
    /* a token cannot mint */
    auth_minted m2;
    assert_int_equal(auth_mint(&cfg, s, p, req, 0, &m2, NULL, NULL), RD_PERMISSION_DENIED);
    assert_null(m2.token);

    auth_principal_free(p);
    auth_minted_clear(&m);
    auth_caps_free(req);
    auth_principal_free(key);
    auth_keyring_free(kr);
    auth_signer_free(s);
}

static void test_tokens_carry_the_client_binding_of_their_key(void **state)
{
    (void)state;
    auth_signer *s = signer_a();
    auth_keyring *kr = keyring_of(s);
    auth_config cfg;
    auth_config_init(&cfg);
    cfg.keyring = kr;
    cfg.now_us = NOW_US;
    auth_principal *key = key_principal("[{\"can\":[\"read\"],\"model\":\"*\",\"group\":\"*\"}]");
    assert_null(auth_principal_client_id(key));
    assert_int_equal(auth_principal_bind(key, "has space", NULL), RD_VALIDATION_FAILED);
    assert_int_equal(auth_principal_bind(key, "spiffe://prod/ns/billing/sa/api", NULL), RD_OK);
    assert_string_equal(auth_principal_client_id(key), "spiffe://prod/ns/billing/sa/api");
    auth_minted m;
    assert_int_equal(auth_mint(&cfg, s, key, auth_principal_caps(key), 0, &m, NULL, NULL), RD_OK);
    auth_principal *p = NULL;
    assert_int_equal(auth_token_verify(&cfg, m.token, strlen(m.token), &p, NULL), RD_OK);
    assert_string_equal(auth_principal_client_id(p), "spiffe://prod/ns/billing/sa/api");
    auth_principal_free(p);
    auth_minted_clear(&m);

    /* cnf other than {"client_id": identity} is refused */
    static const char *const bad[] = {"\"x\"",
                                      "{}",
                                      "{\"client_id\":\"\"}",
                                      "{\"client_id\":7}",
                                      "{\"client_id\":\"a b\"}",
                                      "{\"client_id\":\"a\",\"x5t#S256\":\"b\"}"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char payload[1024], *token = NULL;
        snprintf(payload, sizeof payload,
                 "{\"iss\":\"recordd\",\"aud\":\"recordd\",\"sub\":\"key_1\",\"org\":\"acme\","
                 "\"jti\":\"tok_1\",\"iat\":\"2025-06-01T12:00:00Z\",\"exp\":"
                 "\"2025-06-01T12:10:00Z\",\"caps\":[{\"can\":[\"read\"],\"model\":\"*\","
                 "\"group\":\"*\"}],\"cnf\":%s}",
                 bad[i]);
        assert_int_equal(auth__token_sign_payload(s, payload, strlen(payload), &token, NULL),
                         RD_OK);
        rd_err err;
        if (auth_token_verify(&cfg, token, strlen(token), &p, &err) != RD_UNAUTHENTICATED)
            fail_msg("accepted cnf %s", bad[i]);
        assert_non_null(strstr(err.msg, "cnf"));
        free(token);
    }
    auth_principal_free(key);
    auth_keyring_free(kr);
    auth_signer_free(s);
}

static void test_mint_ttl_is_clamped_to_config_max(void **state)
{
    (void)state;
    auth_signer *s = signer_a();
    auth_config cfg;
    auth_config_init(&cfg);
    cfg.now_us = NOW_US;
    cfg.max_ttl_s = 600;
    auth_principal *key = key_principal("[{\"can\":[\"read\"],\"model\":\"*\",\"group\":\"*\"}]");
    auth_caps *req = auth_caps_clone(auth_principal_caps(key));
    auth_minted m;
    assert_int_equal(auth_mint(&cfg, s, key, req, 7200, &m, NULL, NULL), RD_OK);
    assert_int_equal(m.ttl_s, 600);
    auth_minted_clear(&m);
    auth_caps_free(req);
    auth_principal_free(key);
    auth_signer_free(s);
}

static void test_revocation_callback_sees_jti_and_sub(void **state)
{
    (void)state;
    auth_signer *s = signer_a();
    auth_keyring *kr = keyring_of(s);
    auth_config cfg;
    auth_config_init(&cfg);
    cfg.keyring = kr;
    cfg.now_us = NOW_US;
    auth_principal *key = key_principal("[{\"can\":[\"read\"],\"model\":\"*\",\"group\":\"*\"}]");
    auth_minted m;
    assert_int_equal(auth_mint(&cfg, s, key, auth_principal_caps(key), 60, &m, NULL, NULL), RD_OK);
    json_t *jtis = json_pack("[s]", m.jti), *subs = json_array();
    revoked_lists rl = {jtis, subs};
    cfg.is_revoked = revoked_cb;
    cfg.revoked_ctx = &rl;
    auth_principal *p = NULL;
    assert_int_equal(auth_token_verify(&cfg, m.token, strlen(m.token), &p, NULL),
                     RD_UNAUTHENTICATED);
    json_array_clear(jtis);
    json_array_append_new(subs, json_string("key_01JX8Z3T6V"));
    assert_int_equal(auth_token_verify(&cfg, m.token, strlen(m.token), &p, NULL),
                     RD_UNAUTHENTICATED);
    json_array_clear(subs);
    assert_int_equal(auth_token_verify(&cfg, m.token, strlen(m.token), &p, NULL), RD_OK);
    auth_principal_free(p);
    json_decref(jtis);
    json_decref(subs);
    auth_minted_clear(&m);
    auth_principal_free(key);
    auth_keyring_free(kr);
    auth_signer_free(s);
}

/* ---- keyring and signer files ------------------------------------------------------ */

static char tmpdir[64];

static int make_tmpdir(void **state)
{
    (void)state;
    /* mkdtemp wants the name to end in six 'X' */
    int n = snprintf(tmpdir, sizeof tmpdir, "/tmp/auth_keyring_");
    memset(tmpdir + n, 'X', 6);
    tmpdir[n + 6] = '\0';
    return mkdtemp(tmpdir) == NULL ? -1 : 0;
}

static int remove_tmpdir(void **state)
{
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

static void write_file(const char *dir, const char *name, const char *text)
{
    char path[256];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

/* keys A and B of capability-tokens.json as PASERK lines */
static const char PASERK_A[] = "k4.public.Hrnbu7wEfAP9cGBOAHHwmH4Wsot1ciXBHwBBXQ4gsaI";
static const char KID_A[] = "k4.pid.yh4-bJYjOYAG6CWy0zsfPmpKylxS7uAWrxqVmBN2KAiJ";
static const char KID_B[] = "k4.pid.aFyPJn8JR0dpgdue6cBXcpbaztu3TwZXLnZuye0dXYtz";

static char *paserk_b(void)
{
    static char out[AUTH_PASERK_PUBLIC_LEN + 1];
    unsigned char seed[32];
    for (int i = 0; i < 32; i++)
        seed[i] = (unsigned char)i;
    auth_signer *s = NULL;
    assert_int_equal(auth_signer_from_seed(seed, &s, NULL), RD_OK);
    auth_signer_public_paserk(s, out);
    auth_signer_free(s);
    return out;
}

static void test_keyring_loads_paserk_file(void **state)
{
    (void)state;
    char text[512], path[256];
    snprintf(text, sizeof text, "# recordd token keys\n\n  %s  \r\n%s\n%s\n", PASERK_A, paserk_b(),
             PASERK_A);
    write_file(tmpdir, "ring.paserk", text);
    snprintf(path, sizeof path, "%s/ring.paserk", tmpdir);
    auth_keyring *kr = auth_keyring_new();
    rd_err err;
    if (auth_keyring_load(kr, path, &err) != RD_OK)
        fail_msg("%s", err.msg);
    assert_int_equal(auth_keyring_count(kr), 2);
    unsigned char pk[32];
    assert_int_equal(auth__keyring_lookup(kr, KID_A, strlen(KID_A), pk), 0);
    assert_int_equal(auth__keyring_lookup(kr, KID_B, strlen(KID_B), pk), 0);
    assert_int_equal(auth_keyring_remove(kr, KID_B), 1);
    assert_int_equal(auth_keyring_remove(kr, KID_B), 0);
    assert_int_equal(auth__keyring_lookup(kr, KID_B, strlen(KID_B), pk), -1);
    auth_keyring_free(kr);
}

static void test_keyring_loads_directory_and_skips_hidden(void **state)
{
    (void)state;
    char dir[256];
    snprintf(dir, sizeof dir, "%s/keys", tmpdir);
    assert_int_equal(mkdir(dir, 0700), 0);
    char line[128];
    snprintf(line, sizeof line, "%s\n", PASERK_A);
    write_file(dir, "a.paserk", line);
    snprintf(line, sizeof line, "%s\n", paserk_b());
    write_file(dir, "b.paserk", line);
    write_file(dir, ".hidden", "this is not a key\n");
    auth_keyring *kr = auth_keyring_new();
    rd_err err;
    if (auth_keyring_load(kr, dir, &err) != RD_OK)
        fail_msg("%s", err.msg);
    assert_int_equal(auth_keyring_count(kr), 2);
    auth_keyring_free(kr);
}

static void test_keyring_bad_line_leaves_keyring_unchanged(void **state)
{
    (void)state;
    char text[256], path[256];
    snprintf(text, sizeof text, "%s\nk4.public.SECRETLOOKINGVALUE\n", PASERK_A);
    write_file(tmpdir, "bad.paserk", text);
    snprintf(path, sizeof path, "%s/bad.paserk", tmpdir);
    auth_keyring *kr = auth_keyring_new();
    assert_int_equal(auth_keyring_add_paserk(kr, paserk_b(), AUTH_PASERK_PUBLIC_LEN, NULL), RD_OK);
    rd_err err;
    assert_int_equal(auth_keyring_load(kr, path, &err), RD_VALIDATION_FAILED);
    assert_non_null(strstr(err.msg, "line 2"));
    assert_null(strstr(err.msg, "SECRETLOOKING"));
    unsigned char pk[32];
    assert_int_equal(auth_keyring_count(kr), 1);
    assert_int_equal(auth__keyring_lookup(kr, KID_B, strlen(KID_B), pk), 0);
    write_file(tmpdir, "empty.paserk", "# nothing\n");
    snprintf(path, sizeof path, "%s/empty.paserk", tmpdir);
    assert_int_equal(auth_keyring_load(kr, path, &err), RD_VALIDATION_FAILED);
    assert_int_equal(auth_keyring_count(kr), 1);
    auth_keyring_free(kr);
}

typedef struct verifier {
    const auth_config *cfg;
    const char *token;
    int failures;
} verifier;

static void *verify_many(void *arg)
{
    verifier *v = arg;
    for (int i = 0; i < 300; i++) {
        auth_principal *p = NULL;
        if (auth_token_verify(v->cfg, v->token, strlen(v->token), &p, NULL) != RD_OK)
            v->failures++;
        auth_principal_free(p);
    }
    return NULL;
}

/* Reloading the keyring (same keys) never makes a concurrent verify fail. */
static void test_keyring_reload_while_verifying(void **state)
{
    (void)state;
    auth_signer *s = signer_a();
    auth_keyring *kr = keyring_of(s);
    char text[128], path[256];
    snprintf(text, sizeof text, "%s\n", PASERK_A);
    write_file(tmpdir, "reload.paserk", text);
    snprintf(path, sizeof path, "%s/reload.paserk", tmpdir);
    auth_config cfg;
    auth_config_init(&cfg);
    cfg.keyring = kr;
    cfg.now_us = NOW_US;
    auth_principal *key = key_principal("[{\"can\":[\"read\"],\"model\":\"*\",\"group\":\"*\"}]");
    auth_minted m;
    assert_int_equal(auth_mint(&cfg, s, key, auth_principal_caps(key), 60, &m, NULL, NULL), RD_OK);
    pthread_t th[4];
    verifier v[4];
    for (int i = 0; i < 4; i++) {
        v[i] = (verifier){&cfg, m.token, 0};
        assert_int_equal(pthread_create(&th[i], NULL, verify_many, &v[i]), 0);
    }
    for (int i = 0; i < 100; i++)
        assert_int_equal(auth_keyring_load(kr, path, NULL), RD_OK);
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(v[i].failures, 0);
    }
    auth_minted_clear(&m);
    auth_principal_free(key);
    auth_keyring_free(kr);
    auth_signer_free(s);
}

static void test_signer_secret_paserk_round_trips_through_file(void **state)
{
    (void)state;
    auth_signer *s = NULL, *back = NULL;
    assert_int_equal(auth_signer_generate(&s, NULL), RD_OK);
    char secret[AUTH_PASERK_SECRET_LEN + 2];
    assert_int_equal(auth_signer_export_secret(s, secret, sizeof secret, NULL), RD_OK);
    assert_int_equal(strlen(secret), AUTH_PASERK_SECRET_LEN);
    assert_int_equal(strncmp(secret, "k4.secret.", 10), 0);
    strcat(secret, "\n");
    write_file(tmpdir, "signing.key", secret);
    sodium_memzero(secret, sizeof secret);
    char path[256];
    snprintf(path, sizeof path, "%s/signing.key", tmpdir);
    rd_err err;
    if (auth_signer_load(path, &back, &err) != RD_OK)
        fail_msg("%s", err.msg);
    assert_string_equal(auth_signer_kid(back), auth_signer_kid(s));
    auth_signer_free(back);
    auth_signer_free(s);
}

static void test_signer_rejects_mismatched_public_half(void **state)
{
    (void)state;
    auth_signer *s = signer_a(), *back = NULL;
    char secret[AUTH_PASERK_SECRET_LEN + 1];
    assert_int_equal(auth_signer_export_secret(s, secret, sizeof secret, NULL), RD_OK);
    /* change one char in the public half (chars past the seed) */
    secret[AUTH_PASERK_SECRET_LEN - 5] = secret[AUTH_PASERK_SECRET_LEN - 5] == 'A' ? 'B' : 'A';
    rd_err err;
    assert_int_equal(auth_signer_from_paserk(secret, strlen(secret), &back, &err),
                     RD_VALIDATION_FAILED);
    assert_null(back);
    sodium_memzero(secret, sizeof secret);
    auth_signer_free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_v4_public_vectors_sign_reproduces_token),
        cmocka_unit_test(test_v4_public_vectors_verify),
        cmocka_unit_test(test_v4_expect_fail_vectors_are_rejected),
        cmocka_unit_test(test_v4_local_vectors_are_rejected_as_not_public),
        cmocka_unit_test(test_pae_matches_spec_examples),
        cmocka_unit_test(test_b64url_decode_is_strict),
        cmocka_unit_test(test_k4_pid_vectors),
        cmocka_unit_test(test_k4_public_vectors),
        cmocka_unit_test(test_paserk_public_decode_rejects_other_types),
        cmocka_unit_test(test_capability_token_cases),
        cmocka_unit_test(test_capability_token_keys_and_resigning),
        cmocka_unit_test(test_token_signature_is_checked_before_claims),
        cmocka_unit_test(test_token_without_keyring_is_unauthenticated),
        cmocka_unit_test(test_time_parse_is_strict_rfc3339),
        cmocka_unit_test(test_mint_then_verify_round_trips),
        cmocka_unit_test(test_mint_ttl_is_clamped_to_config_max),
        cmocka_unit_test(test_revocation_callback_sees_jti_and_sub),
        cmocka_unit_test(test_keyring_loads_paserk_file),
        cmocka_unit_test(test_keyring_loads_directory_and_skips_hidden),
        cmocka_unit_test(test_keyring_bad_line_leaves_keyring_unchanged),
        cmocka_unit_test(test_keyring_reload_while_verifying),
        cmocka_unit_test(test_signer_secret_paserk_round_trips_through_file),
        cmocka_unit_test(test_signer_rejects_mismatched_public_half),
        cmocka_unit_test(test_tokens_carry_the_client_binding_of_their_key),
    };
    return cmocka_run_group_tests(tests, make_tmpdir, remove_tmpdir);
}
