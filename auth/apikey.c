/* API keys: sk_live_/sk_test_ + base64url(random32 || CRC-32 BE), stored
 * only as a peppered BLAKE2b-256 hash. The checksum lets typos and
 * truncations fail here, before the store is asked. */
#include "auth/auth_int.h"

#include <sodium.h>
#include <string.h>

enum {
    PREFIX_LEN = 8,
    RANDOM_BYTES = 32,
    CRC_BYTES = 4,
    RAW_BYTES = RANDOM_BYTES + CRC_BYTES, /* 36 bytes -> exactly 48 chars */
    BODY_LEN = AUTH_APIKEY_LEN - PREFIX_LEN,
};

static const char PREFIX_LIVE[] = "sk_live_";
static const char PREFIX_TEST[] = "sk_test_";

uint32_t auth__crc32(const unsigned char *p, size_t n)
{
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++)
            c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1u)));
    }
    return ~c;
}

static const char *env_prefix(auth_key_env env)
{
    switch (env) {
    case AUTH_KEY_LIVE:
        return PREFIX_LIVE;
    case AUTH_KEY_TEST:
        return PREFIX_TEST;
    }
    return NULL;
}

/* CRC over ASCII prefix || random, big-endian. */
static void key_crc(const char *prefix, const unsigned char random32[RANDOM_BYTES],
                    unsigned char out[CRC_BYTES])
{
    unsigned char buf[PREFIX_LEN + RANDOM_BYTES];
    memcpy(buf, prefix, PREFIX_LEN);
    memcpy(buf + PREFIX_LEN, random32, RANDOM_BYTES);
    uint32_t c = auth__crc32(buf, sizeof buf);
    sodium_memzero(buf, sizeof buf);
    out[0] = (unsigned char)(c >> 24);
    out[1] = (unsigned char)(c >> 16);
    out[2] = (unsigned char)(c >> 8);
    out[3] = (unsigned char)c;
}

void auth__apikey_encode(auth_key_env env, const unsigned char random32[32],
                         char out[AUTH_APIKEY_LEN + 1])
{
    const char *prefix = env_prefix(env);
    unsigned char raw[RAW_BYTES];
    if (prefix == NULL) {
        out[0] = '\0';
        return;
    }
    memcpy(raw, random32, RANDOM_BYTES);
    key_crc(prefix, random32, raw + RANDOM_BYTES);
    memcpy(out, prefix, PREFIX_LEN);
    auth__b64url_encode(raw, sizeof raw, out + PREFIX_LEN, AUTH_APIKEY_LEN + 1 - PREFIX_LEN);
    sodium_memzero(raw, sizeof raw);
}

rd_code auth_apikey_generate(auth_key_env env, char out[AUTH_APIKEY_LEN + 1], rd_err *err)
{
    unsigned char random32[RANDOM_BYTES];
    if (env_prefix(env) == NULL)
        return rd_errf(err, RD_INTERNAL, NULL, "unknown API key environment");
    if (auth__sodium_ready() != 0)
        return rd_errf(err, RD_INTERNAL, NULL, "crypto library unavailable");
    randombytes_buf(random32, sizeof random32);
    auth__apikey_encode(env, random32, out);
    sodium_memzero(random32, sizeof random32);
    return RD_OK;
}

rd_code auth_apikey_check(const char *key, size_t len, auth_key_env *env, rd_err *err)
{
    rd_code rc = RD_UNAUTHENTICATED;
    unsigned char raw[RAW_BYTES];
    unsigned char crc[CRC_BYTES];
    size_t n = 0;
    auth_key_env e;
    if (key == NULL || len < PREFIX_LEN)
        return rd_errf(err, rc, NULL, "not an API key");
    if (memcmp(key, PREFIX_LIVE, PREFIX_LEN) == 0)
        e = AUTH_KEY_LIVE;
    else if (memcmp(key, PREFIX_TEST, PREFIX_LEN) == 0)
        e = AUTH_KEY_TEST;
    else
        return rd_errf(err, rc, NULL, "not an API key");
    if (len != AUTH_APIKEY_LEN)
        return rd_errf(err, rc, NULL, "malformed API key: wrong length");
    if (auth__b64url_decode(key + PREFIX_LEN, BODY_LEN, raw, sizeof raw, &n) != 0 ||
        n != RAW_BYTES) {
        rd_errf(err, rc, NULL, "malformed API key: not base64url");
        goto done;
    }
    key_crc(key, raw, crc);
    if (sodium_memcmp(crc, raw + RANDOM_BYTES, CRC_BYTES) != 0) {
        rd_errf(err, rc, NULL, "malformed API key: checksum mismatch");
        goto done;
    }
    if (env != NULL)
        *env = e;
    rc = RD_OK;
done:
    sodium_memzero(raw, sizeof raw);
    return rc;
}

rd_code auth_apikey_hash(const unsigned char pepper[AUTH_PEPPER_BYTES], const char *key, size_t len,
                         unsigned char out[AUTH_APIKEY_HASH_BYTES], rd_err *err)
{
    rd_code rc = auth_apikey_check(key, len, NULL, err);
    if (rc != RD_OK)
        return rc;
    if (pepper == NULL)
        return rd_errf(err, RD_INTERNAL, NULL, "API key pepper not configured");
    if (auth__sodium_ready() != 0)
        return rd_errf(err, RD_INTERNAL, NULL, "crypto library unavailable");
    if (crypto_generichash(out, AUTH_APIKEY_HASH_BYTES, (const unsigned char *)key, len, pepper,
                           AUTH_PEPPER_BYTES) != 0)
        return rd_errf(err, RD_INTERNAL, NULL, "hashing failed");
    return RD_OK;
}

int auth_apikey_hash_equal(const unsigned char a[AUTH_APIKEY_HASH_BYTES],
                           const unsigned char b[AUTH_APIKEY_HASH_BYTES])
{
    return sodium_memcmp(a, b, AUTH_APIKEY_HASH_BYTES) == 0;
}
