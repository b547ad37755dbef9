/* svc_auth: loads the server's auth secrets and implements the library's
 * store callbacks (svc_auth.h). Runs at start-up (svc_auth_open) and, for
 * the callbacks, on worker threads during the auth step. Secrets live in
 * sodium_malloc memory or are wiped after use; messages name files, never
 * their content. */
#include "service/svc_auth.h"

#include <errno.h>
#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

enum { PEPPER_FILE_MAX = 1024, RATELIMIT_KEYS = 65536 };

/* ---- callbacks ------------------------------------------------------------ */

rd_code svc_auth_lookup_key(void *ctx, const unsigned char hash[AUTH_APIKEY_HASH_BYTES],
                            auth_principal **out, rd_err *err)
{
    store_api_key k;
    auth_caps *caps = NULL;
    rd_code code;
    *out = NULL;
    memset(&k, 0, sizeof k);
    store_conn *conn = store_thread_conn(ctx, err);
    if (conn == NULL)
        return err->code;
    code = store_key_lookup(conn, hash, &k, err);
    if (code == RD_NOT_FOUND) {
        code = rd_errf(err, RD_UNAUTHENTICATED, NULL, "unknown API key");
        goto done;
    }
    if (code != RD_OK)
        goto done;
    if (k.revoked_at_us != 0) {
        code = rd_errf(err, RD_UNAUTHENTICATED, NULL, "API key revoked");
        goto done;
    }
    if (auth_caps_from_json(k.caps, strlen(k.caps), &caps, err) != RD_OK) {
        code = rd_errf(err, RD_INTERNAL, NULL, "a stored API key has malformed caps");
        goto done;
    }
    code = auth_principal_new_api_key(k.key_id, k.org, k.role, caps, out, err);
    if (code == RD_OK && k.client_id[0] != '\0' &&
        (code = auth_principal_bind(*out, k.client_id, err)) != RD_OK) {
        auth_principal_free(*out);
        *out = NULL;
        code = rd_errf(err, RD_INTERNAL, NULL, "a stored API key has a malformed client id");
    }
done:
    auth_caps_free(caps);
    store_api_key_clear(&k);
    return code;
}

/* ---- verified-credential cache ------------------------------------------ */

static _Thread_local bool memory_only;  /* svc_auth_memory_only_begin */
static _Thread_local bool needed_store; /* a callback refused to read the store */

void svc_auth_memory_only_begin(void)
{
    memory_only = true;
    needed_store = false;
}

bool svc_auth_memory_only_end(void)
{
    memory_only = false;
    return needed_store;
}

/* In memory-only mode: notes that the store was needed and fails. */
static rd_code refuse_store(rd_err *err)
{
    needed_store = true;
    return rd_errf(err, RD_UNAVAILABLE, NULL, "the credential needs a store read");
}

static int64_t mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* Slot of a key hash: the hash is a keyed BLAKE2b (pepper), so its first
 * bytes are uniform and cannot be aimed at one slot from outside. */
static size_t key_slot(const unsigned char hash[AUTH_APIKEY_HASH_BYTES])
{
    uint64_t h;
    memcpy(&h, hash, sizeof h);
    return (size_t)(h % SVC_AUTH_KEY_CACHE_SLOTS);
}

/* The credential generation as read by a read that started less than
 * SVC_AUTH_GEN_RECHECK_US ago (by any thread), else read now. A change
 * committed at time t is in every read that starts after t, so every call
 * whose auth step starts SVC_AUTH_GEN_RECHECK_US or more after the commit
 * sees the new generation. */
static rd_code current_gen(svc_auth *a, int64_t *gen, rd_err *err)
{
    int64_t started = mono_us();
    pthread_mutex_lock(&a->cache_mu);
    bool fresh = a->gen_read_us != 0 && a->gen_read_us > a->gen_changed_us &&
                 started - a->gen_read_us < a->gen_recheck_us;
    *gen = a->gen;
    pthread_mutex_unlock(&a->cache_mu);
    if (fresh)
        return RD_OK;
    if (memory_only)
        return refuse_store(err);
    store_conn *conn = store_thread_conn(a->db, err);
    if (conn == NULL)
        return err->code;
    rd_code code = store_auth_gen(conn, gen, err);
    if (code != RD_OK)
        return code;
    pthread_mutex_lock(&a->cache_mu);
    if (started > a->gen_read_us) { /* the later-started read wins */
        a->gen = *gen;
        a->gen_read_us = started;
    }
    pthread_mutex_unlock(&a->cache_mu);
    return RD_OK;
}

void svc_auth_credentials_changed(svc_auth *a)
{
    int64_t now = mono_us();
    pthread_mutex_lock(&a->cache_mu);
    a->gen_changed_us = now; /* a read begun before now may predate the change */
    pthread_mutex_unlock(&a->cache_mu);
}

rd_code svc_auth_lookup_key_cached(void *ctx, const unsigned char hash[AUTH_APIKEY_HASH_BYTES],
                                   auth_principal **out, rd_err *err)
{
    svc_auth *a = ctx;
    int64_t gen = 0;
    *out = NULL;
    /* read before the lookup: a change committed after this read leaves the
     * entry filled below at an old generation, so it is never used */
    rd_code code = current_gen(a, &gen, err);
    if (code != RD_OK)
        return code;
    int64_t now = mono_us();
    svc_key_slot *slot = &a->key_cache[key_slot(hash)];
    pthread_mutex_lock(&a->cache_mu);
    if (slot->principal != NULL && slot->gen == gen &&
        now - slot->filled_us < SVC_AUTH_KEY_CACHE_TTL_US &&
        auth_apikey_hash_equal(slot->hash, hash))
        *out = auth_principal_ref(slot->principal);
    pthread_mutex_unlock(&a->cache_mu);
    if (*out != NULL)
        return RD_OK;
    if (memory_only)
        return refuse_store(err);
    code = svc_auth_lookup_key(a->db, hash, out, err);
    if (code != RD_OK)
        return code;
    auth_principal *old = NULL;
    pthread_mutex_lock(&a->cache_mu);
    old = slot->principal;
    memcpy(slot->hash, hash, AUTH_APIKEY_HASH_BYTES);
    slot->principal = auth_principal_ref(*out);
    slot->gen = gen;
    slot->filled_us = now;
    pthread_mutex_unlock(&a->cache_mu);
    auth_principal_free(old);
    return RD_OK;
}

int svc_auth_is_revoked(void *ctx, const char *jti, const char *sub)
{
    rd_err err;
    if (memory_only) {
        refuse_store(&err);
        return 1; /* fails closed; the caller redoes the auth step */
    }
    store_conn *conn = store_thread_conn(ctx, &err);
    if (conn == NULL)
        return 1;
    return store_is_revoked(conn, jti, sub) != 0;
}

/* ---- secrets ---------------------------------------------------------------- */

/* RD_UNAVAILABLE naming path and the fix when path does not exist. */
static rd_code need_file(const char *path, const char *flag, rd_err *err)
{
    struct stat st;
    if (path == NULL || path[0] == '\0')
        return rd_errf(err, RD_UNAVAILABLE, flag, "--%s is not set", flag);
    if (stat(path, &st) != 0)
        return rd_errf(err, RD_UNAVAILABLE, flag,
                       "%.300s is missing (--%s): run `recordctl init` to create the server's "
                       "keys, or point --%s at them",
                       path, flag, flag);
    return RD_OK;
}

rd_code svc_pepper_load(const char *path, unsigned char out[AUTH_PEPPER_BYTES], rd_err *err)
{
    static const int variants[] = {
        sodium_base64_VARIANT_ORIGINAL, sodium_base64_VARIANT_ORIGINAL_NO_PADDING,
        sodium_base64_VARIANT_URLSAFE, sodium_base64_VARIANT_URLSAFE_NO_PADDING};
    char buf[PEPPER_FILE_MAX + 1];
    size_t n = 0, len = 0;
    rd_code code = RD_OK;
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return rd_errf(err, RD_UNAVAILABLE, "pepper-file", "cannot read %.300s: %s", path,
                       strerror(errno));
    n = fread(buf, 1, PEPPER_FILE_MAX, f);
    bool too_long = n == PEPPER_FILE_MAX && fgetc(f) != EOF;
    fclose(f);
    buf[n] = '\0';
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' '))
        buf[--n] = '\0';
    if (too_long || n == 0) {
        code = rd_errf(err, RD_VALIDATION_FAILED, "pepper-file",
                       "%.300s must hold one line of 32 bytes in hex or base64", path);
        goto done;
    }
    const char *end = NULL;
    if (n == 2 * AUTH_PEPPER_BYTES &&
        sodium_hex2bin(out, AUTH_PEPPER_BYTES, buf, n, NULL, &len, &end) == 0 &&
        len == AUTH_PEPPER_BYTES && end == buf + n)
        goto done;
    for (size_t i = 0; i < sizeof variants / sizeof variants[0]; i++) {
        if (sodium_base642bin(out, AUTH_PEPPER_BYTES, buf, n, NULL, &len, &end, variants[i]) == 0 &&
            len == AUTH_PEPPER_BYTES && end == buf + n)
            goto done;
    }
    sodium_memzero(out, AUTH_PEPPER_BYTES);
    code = rd_errf(err, RD_VALIDATION_FAILED, "pepper-file",
                   "%.300s must hold one line of 32 bytes in hex or base64", path);
done:
    sodium_memzero(buf, sizeof buf);
    return code;
}

void svc_auth_close(svc_auth *a)
{
    if (a == NULL)
        return;
    for (size_t i = 0; i < SVC_AUTH_KEY_CACHE_SLOTS; i++)
        auth_principal_free(a->key_cache[i].principal);
    sodium_memzero(a->key_cache, sizeof a->key_cache);
    pthread_mutex_destroy(&a->cache_mu);
    auth_ratelimit_free(a->ratelimit);
    auth_signer_free(a->signer);
    auth_keyring_free(a->keyring);
    if (a->pepper != NULL)
        sodium_free(a->pepper);
    free(a);
}

rd_code svc_auth_open(const svc_auth_options *o, store *db, svc_auth **out, rd_err *err)
{
    svc_auth *a = calloc(1, sizeof *a);
    unsigned char pk[AUTH_PUBLIC_KEY_BYTES];
    *out = NULL;
    if (a == NULL)
        return rd_errf(err, RD_INTERNAL, NULL, "out of memory");
    a->db = db;
    pthread_mutex_init(&a->cache_mu, NULL);
    a->gen_recheck_us = SVC_AUTH_GEN_RECHECK_US;
    if (need_file(o->pepper_file, "pepper-file", err) != RD_OK ||
        need_file(o->signing_key, "signing-key", err) != RD_OK ||
        need_file(o->trusted_keys, "trusted-keys", err) != RD_OK)
        goto fail;
    a->pepper = sodium_malloc(AUTH_PEPPER_BYTES);
    a->keyring = auth_keyring_new();
    if (a->pepper == NULL || a->keyring == NULL) {
        rd_errf(err, RD_INTERNAL, NULL, "out of memory");
        goto fail;
    }
    if (svc_pepper_load(o->pepper_file, a->pepper, err) != RD_OK)
        goto fail;
    if (auth_signer_load(o->signing_key, &a->signer, err) != RD_OK) {
        rd_err why = *err;
        rd_errf(err, why.code, "signing-key", "--signing-key %.300s: %s", o->signing_key, why.msg);
        goto fail;
    }
    if (auth_keyring_load(a->keyring, o->trusted_keys, err) != RD_OK) {
        rd_err why = *err;
        rd_errf(err, why.code, "trusted-keys", "--trusted-keys: %s", why.msg);
        goto fail;
    }
    auth_signer_public_key(a->signer, pk);
    if (auth_keyring_add(a->keyring, pk, NULL, err) != RD_OK)
        goto fail;
    if (o->rate_per_s > 0) {
        double burst = o->burst > 0 ? o->burst : o->rate_per_s < 1 ? 1 : o->rate_per_s;
        a->ratelimit = auth_ratelimit_new(o->rate_per_s, burst, RATELIMIT_KEYS);
        if (a->ratelimit == NULL) {
            rd_errf(err, RD_VALIDATION_FAILED, "rate-limit", "bad rate limit or burst");
            goto fail;
        }
    }
    auth_config_init(&a->cfg);
    a->cfg.keyring = a->keyring;
    if (o->issuer != NULL && o->issuer[0] != '\0')
        a->cfg.issuer = o->issuer;
    if (o->audience != NULL && o->audience[0] != '\0')
        a->cfg.audience = o->audience;
    a->cfg.pepper = a->pepper;
    a->cfg.lookup_key = svc_auth_lookup_key_cached;
    a->cfg.lookup_ctx = a;
    a->cfg.is_revoked = svc_auth_is_revoked;
    a->cfg.revoked_ctx = db;
    *out = a;
    return RD_OK;
fail:
    svc_auth_close(a);
    return err->code;
}
