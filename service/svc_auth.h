/* svc_auth: the server's side of auth/ (DESIGN.md §6). Loads the server's
 * secrets (API-key pepper, token signing key, trusted token keys) into one
 * auth_config, and implements the store-backed callbacks the library asks
 * for: API-key lookup and token revocation. The per-RPC checks are in
 * svc_authz.h; the auth step itself is in svc_call.c. */
#ifndef SVC_AUTH_H
#define SVC_AUTH_H

#include <pthread.h>

#include "auth/auth.h"
#include "store/store.h"

/* Where the secrets are and how tokens are checked. Paths are required. */
typedef struct svc_auth_options {
    const char *pepper_file;  /* 32 bytes as hex or base64, one line */
    const char *signing_key;  /* "k4.secret.…" file */
    const char *trusted_keys; /* "k4.public.…" file or directory of them */
    const char *issuer;       /* expected/minted iss */
    const char *audience;     /* expected/minted aud */
    double rate_per_s;        /* per-principal requests per second; 0 = off */
    double burst;             /* bucket size; 0 = max(rate, 1) */
} svc_auth_options;

/* The verified-credential cache (svc_auth_lookup_key_cached): a fixed
 * table of API-key hash -> principal. An entry is used only while the
 * store's credential generation (store_auth_gen) is the one it was filled
 * at, so any key or token revocation committed before a call starts is seen
 * by that call, from this or any other process; and never longer than the
 * TTL. A colliding key replaces the entry. */
enum {
    SVC_AUTH_KEY_CACHE_SLOTS = 1024,
    SVC_AUTH_KEY_CACHE_TTL_US = 60 * 1000000,
    /* the generation read is shared by the calls of the next 1 ms */
    SVC_AUTH_GEN_RECHECK_US = 1000,
};

typedef struct svc_key_slot {
    unsigned char hash[AUTH_APIKEY_HASH_BYTES];
    auth_principal *principal; /* a reference; NULL when empty */
    int64_t gen;               /* the credential generation when filled */
    int64_t filled_us;         /* CLOCK_MONOTONIC µs when filled */
} svc_key_slot;

/* The loaded state; cfg is what the server core verifies with. */
typedef struct svc_auth {
    auth_config cfg;
    auth_keyring *keyring;
    auth_signer *signer;
    unsigned char *pepper;     /* AUTH_PEPPER_BYTES in sodium_malloc memory */
    auth_ratelimit *ratelimit; /* NULL when off */
    store *db;
    pthread_mutex_t cache_mu; /* guards key_cache */
    svc_key_slot key_cache[SVC_AUTH_KEY_CACHE_SLOTS];
    int64_t gen;            /* the last credential generation read */
    int64_t gen_read_us;    /* when that read started (CLOCK_MONOTONIC µs); 0 = never */
    int64_t gen_recheck_us; /* SVC_AUTH_GEN_RECHECK_US (tests set their own) */
    int64_t gen_changed_us; /* when a change was last announced: older reads are stale */
} svc_auth;

/* Loads everything o names; the signer's own public key is always added to
 * the keyring. Errors: RD_UNAVAILABLE (a file is missing: the message names
 * it and says to run `recordctl init`), RD_VALIDATION_FAILED (a file is
 * malformed; never quoted), RD_INTERNAL. *out is the caller's
 * (svc_auth_close). */
rd_code svc_auth_open(const svc_auth_options *o, store *db, svc_auth **out, rd_err *err);
void svc_auth_close(svc_auth *a);
/* Keys or revocations changed in another process (store_on_remote): the
 * next credential check reads the credential generation again; a read
 * begun before this call is not trusted any more (it may predate the
 * change). */
void svc_auth_credentials_changed(svc_auth *a);

/* Reads a pepper file: one line of 64 hex digits or base64 (standard or
 * URL-safe, padded or not) of exactly AUTH_PEPPER_BYTES bytes. The file
 * buffer is wiped. Errors: RD_UNAVAILABLE (cannot read), RD_VALIDATION_FAILED. */
rd_code svc_pepper_load(const char *path, unsigned char out[AUTH_PEPPER_BYTES], rd_err *err);

/* auth_key_lookup_fn over store_key_lookup (ctx = the store): unknown or
 * revoked keys are RD_UNAUTHENTICATED; store failures keep their code. */
rd_code svc_auth_lookup_key(void *ctx, const unsigned char hash[AUTH_APIKEY_HASH_BYTES],
                            auth_principal **out, rd_err *err);
/* svc_auth_lookup_key through the cache above (ctx = the svc_auth): one
 * read of the credential generation per call, and the key lookup, caps
 * parse and principal allocation only on a miss. Fails closed when the
 * generation cannot be read. */
rd_code svc_auth_lookup_key_cached(void *ctx, const unsigned char hash[AUTH_APIKEY_HASH_BYTES],
                                   auth_principal **out, rd_err *err);
/* auth_revoked_fn over store_is_revoked (ctx = the store); fails closed. */
int svc_auth_is_revoked(void *ctx, const char *jti, const char *sub);

/* Memory-only auth for the completion-queue thread, which must never wait
 * on SQLite (docs/internals/server.md). Between svc_auth_memory_only_begin
 * and svc_auth_memory_only_end on one thread, the callbacks above answer
 * only from memory: a cached API key under a generation read less than
 * SVC_AUTH_GEN_RECHECK_US ago. Anything that would read the store (a miss,
 * a stale generation, a token's revocation check) fails instead, and
 * svc_auth_memory_only_end returns true: the caller then discards the
 * outcome and does the auth step where the store may be read. */
void svc_auth_memory_only_begin(void);
bool svc_auth_memory_only_end(void);

#endif
