/* libFuzzer target for the credential path: arbitrary bytes as an
 * `authorization` value, as a v4.public token, as a payload signed with a
 * trusted key (so the claims parser sees attacker-chosen JSON behind a valid
 * signature), as caps JSON and as PASERK strings. The first input byte picks
 * the mode. Build and run: see docs/internals/auth.md. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "auth/auth.h"
#include "auth/auth_int.h"

static auth_keyring *ring;
static auth_signer *signer;
static auth_config cfg;
static const unsigned char pepper[AUTH_PEPPER_BYTES] = {1, 2, 3};

/* The stand-in store knows no key. */
static rd_code no_such_key(void *ctx, const unsigned char hash[AUTH_APIKEY_HASH_BYTES],
                           auth_principal **out, rd_err *err)
{
    (void)ctx;
    (void)hash;
    *out = NULL;
    return rd_errf(err, RD_UNAUTHENTICATED, NULL, "unknown API key");
}

static int revoked_fixed(void *ctx, const char *jti, const char *sub)
{
    (void)ctx;
    return strcmp(jti, "tok_REVOKED") == 0 || strcmp(sub, "key_REVOKED") == 0;
}

static void setup(void)
{
    /* key A of capability-tokens.json, plus key B's seed */
    static const unsigned char seed_a[32] = {0xb4, 0xcb, 0xfb, 0x43, 0xdf, 0x4c, 0xe2, 0x10,
                                             0x72, 0x7d, 0x95, 0x3e, 0x4a, 0x71, 0x33, 0x07,
                                             0xfa, 0x19, 0xbb, 0x7d, 0x9f, 0x85, 0x04, 0x14,
                                             0x38, 0xd9, 0xe1, 0x1b, 0x94, 0x2a, 0x37, 0x74};
    unsigned char seed_b[32], pk[32];
    for (int i = 0; i < 32; i++)
        seed_b[i] = (unsigned char)i;
    auth_signer *b = NULL;
    ring = auth_keyring_new();
    if (ring == NULL || auth_signer_from_seed(seed_a, &signer, NULL) != RD_OK ||
        auth_signer_from_seed(seed_b, &b, NULL) != RD_OK)
        abort();
    auth_signer_public_key(signer, pk);
    if (auth_keyring_add(ring, pk, NULL, NULL) != RD_OK)
        abort();
    auth_signer_public_key(b, pk);
    if (auth_keyring_add(ring, pk, NULL, NULL) != RD_OK)
        abort();
    auth_signer_free(b);
    auth_config_init(&cfg);
    cfg.keyring = ring;
    cfg.now_us = INT64_C(1748779200) * 1000000; /* 2025-06-01T12:00:00Z */
    cfg.is_revoked = revoked_fixed;
    cfg.pepper = pepper;
    cfg.lookup_key = no_such_key;
}

/* Exercise what a server does with a principal. */
static void use_principal(auth_principal *p)
{
    static const char *fields[] = {"age", "email"};
    static const char *admins[] = {"admin", NULL};
    static const char *const *writable[] = {NULL, admins};
    auth_required req;
    if (p == NULL)
        return;
    auth_allows(p, AUTH_UPDATE, "students", "team-a", fields, 2, writable, &req, NULL);
    auth_allows(p, AUTH_READ, "*", "*", NULL, 0, NULL, &req, NULL);
    char *json = auth_caps_to_json(auth_principal_caps(p));
    free(json);
    int64_t ttl;
    auth_mint_check(p, auth_principal_caps(p), 60, &ttl, &req, NULL);
    auth_principal_free(p);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int ready;
    if (!ready) {
        setup();
        ready = 1;
    }
    if (size == 0)
        return 0;
    unsigned mode = data[0] % 5;
    const char *in = (const char *)data + 1;
    size_t n = size - 1;
    auth_principal *p = NULL;
    rd_err err;
    switch (mode) {
    case 0: /* a raw authorization value */
        auth_authenticate(&cfg, in, n, &p, &err);
        use_principal(p);
        break;
    case 1: { /* a v4.public token body and footer */
        char *tok = malloc(10 + n);
        if (tok == NULL)
            return 0;
        memcpy(tok, "v4.public.", 10);
        memcpy(tok + 10, in, n);
        auth_token_verify(&cfg, tok, 10 + n, &p, &err);
        use_principal(p);
        free(tok);
        break;
    }
    case 2: { /* claims behind a valid signature */
        char *tok = NULL;
        if (auth__token_sign_payload(signer, in, n, &tok, NULL) != RD_OK)
            return 0;
        if (auth_token_verify(&cfg, tok, strlen(tok), &p, &err) == RD_OK && p == NULL)
            abort();
        use_principal(p);
        free(tok);
        break;
    }
    case 3: { /* caps JSON */
        auth_caps *c = NULL;
        if (auth_caps_from_json(in, n, &c, &err) == RD_OK) {
            auth_principal *k = NULL;
            if (auth_principal_new_api_key("key_fuzz", "org", "editor", c, &k, NULL) == RD_OK) {
                auth_caps_covers(auth_principal_caps(k), c, NULL, NULL);
                use_principal(k);
            }
            auth_caps_free(c);
        }
        break;
    }
    default: { /* PASERK strings */
        unsigned char pk[AUTH_PUBLIC_KEY_BYTES];
        auth_signer *s = NULL;
        auth_paserk_public_decode(in, n, pk, NULL);
        if (auth_signer_from_paserk(in, n, &s, NULL) == RD_OK)
            auth_signer_free(s);
        auth_apikey_check(in, n, NULL, NULL);
        break;
    }
    }
    return 0;
}
