/* auth: who is calling and what may they do. Turns an `authorization` value
 * (API key or PASETO v4.public capability token) into a principal, checks a
 * principal's capabilities for an action, mints attenuated tokens and rate
 * limits per principal. Sits between the transport and the handlers
 * (DESIGN.md §2, §6); formats and choices are in docs/internals/auth.md.
 *
 * Conventions: fallible functions return an rd_code (RD_OK = 0) and fill
 * *err (may be NULL) with a message that never contains a credential, key or
 * token. Objects returned through `**out` belong to the caller. All functions
 * are thread-safe for concurrent use of distinct objects; the keyring and the
 * rate limiter are also safe to share between threads. */
#ifndef AUTH_H
#define AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/rd.h"

enum {
    AUTH_APIKEY_LEN = 56,        /* "sk_live_" + 48 base64url chars */
    AUTH_APIKEY_HASH_BYTES = 32, /* keyed BLAKE2b-256 */
    AUTH_PEPPER_BYTES = 32,
    AUTH_PUBLIC_KEY_BYTES = 32, /* Ed25519 */
    AUTH_SEED_BYTES = 32,
    AUTH_KID_LEN = 51,             /* "k4.pid." + 44 chars */
    AUTH_PASERK_PUBLIC_LEN = 53,   /* "k4.public." + 43 chars */
    AUTH_PASERK_SECRET_LEN = 96,   /* "k4.secret." + 86 chars */
    AUTH_JTI_MAX = 64,             /* buffer size for a minted jti */
    AUTH_DEFAULT_SKEW_S = 60,      /* clock skew tolerated on exp/nbf/iat */
    AUTH_DEFAULT_MAX_TTL_S = 3600, /* longest accepted exp - iat */
    AUTH_DEFAULT_MAX_TOKEN_BYTES = 4096,
    AUTH_MINT_DEFAULT_TTL_S = 900,
    AUTH_MINT_MAX_TTL_S = 3600,
    AUTH_CLIENT_ID_MAX = 255, /* longest client identity a credential is bound to */
};

/* Actions a capability grants; a capability holds a bit set of them. */
typedef enum auth_verb {
    AUTH_READ = 1u << 0,
    AUTH_CREATE = 1u << 1,
    AUTH_UPDATE = 1u << 2,
    AUTH_DELETE = 1u << 3,
    AUTH_ADMIN = 1u << 4,
} auth_verb;

/* "read", "create", … for one verb bit; "" for anything else. */
const char *auth_verb_str(auth_verb v);
/* Parses an exact lowercase verb name. 0 on success, -1 otherwise. */
int auth_verb_parse(const char *s, auth_verb *out);

/* What kind of credential authenticated a principal. */
typedef enum auth_kind {
    AUTH_KIND_API_KEY = 1,
    AUTH_KIND_TOKEN = 2,
} auth_kind;

typedef struct auth_caps auth_caps;
typedef struct auth_principal auth_principal;
typedef struct auth_keyring auth_keyring;
typedef struct auth_signer auth_signer;
typedef struct auth_ratelimit auth_ratelimit;

/* ==== credentials ======================================================== */

/* Classifies an `authorization` value ("Bearer <credential>"; the scheme is
 * case-insensitive, the credential is not). value may be NULL (missing
 * header); it need not be NUL-terminated.
 *   *kind     AUTH_KIND_API_KEY for sk_live_/sk_test_, AUTH_KIND_TOKEN for
 *             v4.public.
 *   *cred     points into value (borrowed), *cred_len its length.
 * Does not validate the credential beyond its shape.
 * Errors: RD_UNAUTHENTICATED (missing, other scheme, empty, whitespace or
 * control bytes, v4.local, other versions, anything else). */
rd_code auth_classify(const char *value, size_t len, auth_kind *kind, const char **cred,
                      size_t *cred_len, rd_err *err);

/* The API-key lookup the server provides: find the key whose stored hash is
 * `hash` (compare with sodium_memcmp after the indexed SELECT), reject it when
 * revoked or expired, and return its principal (auth_principal_new_api_key).
 * Returns RD_OK with *out set, RD_UNAUTHENTICATED when unknown, revoked or
 * expired, or another code (RD_UNAVAILABLE…) on store failure. */
typedef rd_code (*auth_key_lookup_fn)(void *ctx, const unsigned char hash[AUTH_APIKEY_HASH_BYTES],
                                      auth_principal **out, rd_err *err);

/* Revocation check for a verified token: nonzero when the token id `jti` or
 * the minting key `sub` is revoked, or when the answer is unknown (fail
 * closed). */
typedef int (*auth_revoked_fn)(void *ctx, const char *jti, const char *sub);

/* Verification and minting settings. Initialise with auth_config_init, then
 * set what differs. The struct only borrows; everything it points at must
 * outlive the calls that use it. */
typedef struct auth_config {
    auth_keyring *keyring;      /* trusted token keys (kid -> public key) */
    const char *issuer;         /* expected and minted `iss`; default "recordd" */
    const char *audience;       /* expected and minted `aud`; default "recordd" */
    int64_t skew_s;             /* default AUTH_DEFAULT_SKEW_S */
    int64_t max_ttl_s;          /* default AUTH_DEFAULT_MAX_TTL_S */
    size_t max_token_bytes;     /* default AUTH_DEFAULT_MAX_TOKEN_BYTES */
    int64_t now_us;             /* fixed clock (µs since epoch) for tests; 0 = wall clock */
    auth_revoked_fn is_revoked; /* NULL: nothing is revoked */
    void *revoked_ctx;
    const unsigned char *pepper;   /* AUTH_PEPPER_BYTES; NULL disables API keys */
    auth_key_lookup_fn lookup_key; /* NULL disables API keys */
    void *lookup_ctx;
} auth_config;

/* Fills *cfg with the defaults above and no keyring, pepper or callbacks. */
void auth_config_init(auth_config *cfg);

/* Authenticates an `authorization` value: classify, then either check the
 * API key's shape and checksum (typos never reach the store), hash it and
 * call cfg->lookup_key, or verify the token (auth_token_verify).
 * On RD_OK *out is a new principal the caller frees with
 * auth_principal_free; otherwise *out is NULL.
 * Errors: RD_UNAUTHENTICATED, RD_TOKEN_EXPIRED, or whatever lookup_key
 * returns. */
rd_code auth_authenticate(const auth_config *cfg, const char *value, size_t len,
                          auth_principal **out, rd_err *err);

/* ==== API keys =========================================================== */

typedef enum auth_key_env {
    AUTH_KEY_LIVE = 1, /* sk_live_ */
    AUTH_KEY_TEST = 2, /* sk_test_ */
} auth_key_env;

/* Generates a new key: prefix + base64url(32 random bytes || CRC-32 BE of
 * prefix||random). out receives AUTH_APIKEY_LEN chars and a NUL. The key is
 * shown once: the caller stores only auth_apikey_hash and wipes out with
 * sodium_memzero. Errors: RD_INTERNAL (bad env). */
rd_code auth_apikey_generate(auth_key_env env, char out[AUTH_APIKEY_LEN + 1], rd_err *err);

/* Checks shape and checksum of key[0..len) without any lookup: exact
 * case-sensitive prefix, exactly 48 strict base64url chars, CRC match.
 * *env (may be NULL) receives the environment.
 * Errors: RD_UNAUTHENTICATED. */
rd_code auth_apikey_check(const char *key, size_t len, auth_key_env *env, rd_err *err);

/* The stored form of a key: crypto_generichash(out, 32, key, 56, pepper, 32).
 * Checks the key first (auth_apikey_check) and fails with its error. */
rd_code auth_apikey_hash(const unsigned char pepper[AUTH_PEPPER_BYTES], const char *key, size_t len,
                         unsigned char out[AUTH_APIKEY_HASH_BYTES], rd_err *err);

/* Constant-time comparison of two stored hashes: 1 when equal. */
int auth_apikey_hash_equal(const unsigned char a[AUTH_APIKEY_HASH_BYTES],
                           const unsigned char b[AUTH_APIKEY_HASH_BYTES]);

/* ==== capabilities ======================================================= */

/* A list of capabilities {can: verbs, model, group, fields?}. model and
 * group are a name or "*"; a capability without a field list allows every
 * field, one with a list (possibly empty) only those fields. */
auth_caps *auth_caps_new(void); /* NULL on out of memory */
void auth_caps_free(auth_caps *c);
auth_caps *auth_caps_clone(const auth_caps *c); /* NULL on out of memory */

/* Appends a capability. verbs: non-zero OR of auth_verb. fields == NULL means
 * "no field list"; otherwise n_fields names (n_fields may be 0). Strings are
 * copied. Errors: RD_VALIDATION_FAILED (field "caps": empty or oversize
 * names, "*" as a field, unknown verb bits, too many entries), RD_INTERNAL
 * (out of memory). */
rd_code auth_caps_add(auth_caps *c, unsigned verbs, const char *model, const char *group,
                      const char *const *fields, size_t n_fields, rd_err *err);

/* Parses the JSON form (an array of capability objects, strict: known
 * members only, known verbs, no duplicate keys). *out is the caller's.
 * Errors: RD_VALIDATION_FAILED (field "caps"), RD_INTERNAL. */
rd_code auth_caps_from_json(const char *json, size_t len, auth_caps **out, rd_err *err);
/* Compact JSON of c, malloc'd (caller frees); NULL on out of memory. */
char *auth_caps_to_json(const auth_caps *c);

size_t auth_caps_count(const auth_caps *c);
unsigned auth_caps_verbs(const auth_caps *c, size_t i);
const char *auth_caps_model(const auth_caps *c, size_t i);
const char *auth_caps_group(const auth_caps *c, size_t i);
/* The field list of capability i and its length in *n; NULL (and *n = 0)
 * when the capability has no field list. Valid while c lives. */
const char *const *auth_caps_fields(const auth_caps *c, size_t i, size_t *n);

/* The capability a denied request needed, for PERMISSION_DENIED details.
 * Strings are borrowed from the arguments of the call that filled it. */
typedef struct auth_required {
    auth_verb can;     /* 0 when the denial is not about a capability */
    const char *model; /* NULL when can is 0 */
    const char *group; /* the sync group */
    const char *field; /* the offending field, or NULL */
} auth_required;

/* Decides whether caps (held by a principal with role `role`, may be NULL)
 * allow `can` on (model, group), writing fields[0..n) (create/update only;
 * fields may be NULL when n is 0). Rules:
 *  - M = caps granting `can` whose model is "*" or `model` and whose group is
 *    "*" or `group`; empty M denies.
 *  - create/update: unless some cap in M has no field list, every field must
 *    be in the union of M's lists; the first offender (request order) is
 *    reported.
 *  - then, when writable_by is not NULL, writable_by[i] is NULL (no rule) or
 *    a NULL-terminated list of roles that may write fields[i]; the role must
 *    be listed.
 * *required (may be NULL) is filled on denial.
 * Errors: RD_PERMISSION_DENIED, RD_INTERNAL (can not a single verb, NULL
 * model/group). */
rd_code auth_caps_allows(const auth_caps *caps, const char *role, auth_verb can, const char *model,
                         const char *group, const char *const *fields, size_t n,
                         const char *const *const *writable_by, auth_required *required,
                         rd_err *err);

/* auth_caps_allows with the principal's caps and role. */
rd_code auth_allows(const auth_principal *p, auth_verb can, const char *model, const char *group,
                    const char *const *fields, size_t n, const char *const *const *writable_by,
                    auth_required *required, rd_err *err);

/* Attenuation: every (verb, model, group, fields) of every requested cap must
 * be covered by parent under the auth_caps_allows rules, compared literally
 * (a requested "*" needs a parent "*"); a requested cap without a field list
 * needs a covering parent cap without one. *required names the first verb
 * (in auth_verb order) of the first uncovered cap, with field when a field
 * was the problem. Errors: RD_PERMISSION_DENIED. */
rd_code auth_caps_covers(const auth_caps *parent, const auth_caps *requested,
                         auth_required *required, rd_err *err);

/* MintToken policy without signing: the caller must be an API-key
 * principal, requested must be non-empty and covered by the caller's caps.
 * requested_ttl_s: 0 = AUTH_MINT_DEFAULT_TTL_S, clamped to
 * AUTH_MINT_MAX_TTL_S; *issued_ttl_s receives the result.
 * Errors: RD_PERMISSION_DENIED (token caller, not covered),
 * RD_VALIDATION_FAILED (field "caps": empty; field "ttl": negative). */
rd_code auth_mint_check(const auth_principal *caller, const auth_caps *requested,
                        int64_t requested_ttl_s, int64_t *issued_ttl_s, auth_required *required,
                        rd_err *err);

/* ==== principals ========================================================= */

/* A principal for an API key the store found: id is the key id. org is
 * required, role may be NULL, caps is copied. Errors: RD_INTERNAL. */
rd_code auth_principal_new_api_key(const char *key_id, const char *org, const char *role,
                                   const auth_caps *caps, auth_principal **out, rd_err *err);
/* Binds p to a client identity: a URI or DNS subject alternative name the
 * client's verified TLS certificate must carry for p to be accepted
 * (service/svc_tls.h). Part of making p: call before sharing it.
 * client_id: 1..AUTH_CLIENT_ID_MAX printable ASCII bytes, no spaces.
 * Errors: RD_VALIDATION_FAILED (field "client_id"), RD_INTERNAL. */
rd_code auth_principal_bind(auth_principal *p, const char *client_id, rd_err *err);
/* Whether client_id is a well-formed binding (see auth_principal_bind). */
bool auth_client_id_ok(const char *client_id);

/* Principals are reference counted and immutable once made, so one may be
 * shared between threads (the server's credential cache does): _ref adds a
 * reference and returns p, _free drops one and frees on the last. */
auth_principal *auth_principal_ref(auth_principal *p);
void auth_principal_free(auth_principal *p);

/* Accessors take a non-NULL principal; strings stay valid while p lives. */
auth_kind auth_principal_kind(const auth_principal *p);
/* The accountable id: the key id for an API key, and for a token its `sub`
 * (the minting key), so a key and its tokens share audit trail and rate
 * limit. */
const char *auth_principal_id(const auth_principal *p);
const char *auth_principal_org(const auth_principal *p);
const char *auth_principal_role(const auth_principal *p);   /* NULL when none */
const char *auth_principal_jti(const auth_principal *p);    /* NULL for API keys */
int64_t auth_principal_expires_us(const auth_principal *p); /* 0 for API keys */
const auth_caps *auth_principal_caps(const auth_principal *p);
/* The client identity p is bound to (auth_principal_bind), or NULL. */
const char *auth_principal_client_id(const auth_principal *p);

/* ==== PASERK and keys ==================================================== */

/* "k4.pid.…" of an Ed25519 public key (PASERK ID over "k4.public.…").
 * out gets AUTH_KID_LEN chars and a NUL. Errors: RD_VALIDATION_FAILED
 * (pk_len is not 32). */
rd_code auth_paserk_pid(const unsigned char *pk, size_t pk_len, char out[AUTH_KID_LEN + 1],
                        rd_err *err);
/* "k4.public.<base64url(pk)>". Errors: RD_VALIDATION_FAILED (pk_len). */
rd_code auth_paserk_public_encode(const unsigned char *pk, size_t pk_len,
                                  char out[AUTH_PASERK_PUBLIC_LEN + 1], rd_err *err);
/* Inverse of auth_paserk_public_encode (strict). Errors:
 * RD_VALIDATION_FAILED. */
rd_code auth_paserk_public_decode(const char *s, size_t len,
                                  unsigned char pk[AUTH_PUBLIC_KEY_BYTES], rd_err *err);

/* The set of trusted token keys, kid -> public key; several at once so keys
 * rotate. Internally locked: verification may run while keys are added,
 * removed or reloaded. */
auth_keyring *auth_keyring_new(void); /* NULL on out of memory */
void auth_keyring_free(auth_keyring *kr);
/* Adds pk under its computed kid (copied to kid_out when not NULL). Adding a
 * key twice is a no-op. Errors: RD_VALIDATION_FAILED (keyring full),
 * RD_INTERNAL. */
rd_code auth_keyring_add(auth_keyring *kr, const unsigned char pk[AUTH_PUBLIC_KEY_BYTES],
                         char kid_out[AUTH_KID_LEN + 1], rd_err *err);
/* Adds a "k4.public.…" PASERK. Errors: as auth_paserk_public_decode and
 * auth_keyring_add. */
rd_code auth_keyring_add_paserk(auth_keyring *kr, const char *paserk, size_t len, rd_err *err);
/* Removes the key with this kid: 1 when removed, 0 when absent. */
int auth_keyring_remove(auth_keyring *kr, const char *kid);
size_t auth_keyring_count(const auth_keyring *kr);
/* Replaces the whole keyring, atomically, with the keys at path: a file of
 * "k4.public.…" lines (blank lines and '#' comments allowed), or a directory
 * whose non-hidden entries (symlinks followed, as in a Kubernetes Secret
 * mount) are such files. On error the keyring is unchanged.
 * Errors: RD_VALIDATION_FAILED (bad line, no keys, too many, file over
 * 64 KiB; the message names file and line, never the content), RD_INTERNAL
 * (I/O). */
rd_code auth_keyring_load(auth_keyring *kr, const char *path, rd_err *err);

/* A token signing key (Ed25519 secret key in guarded sodium memory). */
rd_code auth_signer_generate(auth_signer **out, rd_err *err);
rd_code auth_signer_from_seed(const unsigned char seed[AUTH_SEED_BYTES], auth_signer **out,
                              rd_err *err);
/* Parses a "k4.secret.…" PASERK (64 bytes: seed || public key, checked for
 * consistency). Errors: RD_VALIDATION_FAILED, RD_INTERNAL. */
rd_code auth_signer_from_paserk(const char *s, size_t len, auth_signer **out, rd_err *err);
/* Reads one "k4.secret.…" line from a file (trailing newline allowed). The
 * file buffer is wiped. Errors: as auth_signer_from_paserk, RD_INTERNAL (I/O). */
rd_code auth_signer_load(const char *path, auth_signer **out, rd_err *err);
void auth_signer_free(auth_signer *s); /* wipes the key */
const char *auth_signer_kid(const auth_signer *s);
void auth_signer_public_key(const auth_signer *s, unsigned char pk[AUTH_PUBLIC_KEY_BYTES]);
/* "k4.public.…" of the signer, for the verifiers' keyring. */
void auth_signer_public_paserk(const auth_signer *s, char out[AUTH_PASERK_PUBLIC_LEN + 1]);
/* "k4.secret.…" into out (out_len > AUTH_PASERK_SECRET_LEN); the caller
 * wipes out. Errors: RD_INTERNAL (buffer too small). */
rd_code auth_signer_export_secret(const auth_signer *s, char *out, size_t out_len, rd_err *err);

/* ==== capability tokens ================================================== */

/* Verifies a v4.public capability token against cfg (profile in
 * docs/internals/auth.md): size cap, header, footer exactly
 * {"kid":"k4.pid.…"} naming a keyring key, signature over PAE with an empty
 * implicit assertion, and only then the claims (UTF-8, strict JSON object,
 * required claims, iss/aud, RFC 3339 times with skew, TTL cap, caps,
 * an optional cnf {"client_id"} binding (auth_principal_bind), revocation). On RD_OK *out is a new
 * AUTH_KIND_TOKEN principal. Errors: RD_TOKEN_EXPIRED (now > exp + skew), RD_UNAUTHENTICATED. */
rd_code auth_token_verify(const auth_config *cfg, const char *token, size_t len,
                          auth_principal **out, rd_err *err);

/* A minted token. token is malloc'd; release with auth_minted_clear. */
typedef struct auth_minted {
    char *token;
    char jti[AUTH_JTI_MAX];
    int64_t issued_at_us;
    int64_t expires_at_us;
    int64_t ttl_s;
} auth_minted;

/* MintToken: auth_mint_check, then signs claims iss/aud from cfg, sub = the
 * caller's key id, org, role (when set), iat = now (whole seconds), exp =
 * iat + ttl (also clamped to cfg->max_ttl_s), a fresh jti, the requested
 * caps and, when the caller is bound to a client identity, cnf =
 * {"client_id": it}, so the token is bound as its key is. Errors: those of auth_mint_check,
 * RD_INTERNAL. */
rd_code auth_mint(const auth_config *cfg, const auth_signer *signer, const auth_principal *caller,
                  const auth_caps *requested, int64_t requested_ttl_s, auth_minted *out,
                  auth_required *required, rd_err *err);
void auth_minted_clear(auth_minted *m);

/* ==== rate limiting ====================================================== */

/* Token buckets keyed by principal id: each holds up to `burst` tokens and
 * refills at `rate_per_s`. At most max_keys buckets exist; buckets idle long
 * enough to be full again are evicted first, then the least recently used.
 * Returns NULL on bad arguments (rate or burst not in (0, 1e9], max_keys
 * not in [1, 2^24]) or out of memory. */
auth_ratelimit *auth_ratelimit_new(double rate_per_s, double burst, size_t max_keys);
void auth_ratelimit_free(auth_ratelimit *rl);

/* Takes `cost` tokens (clamped to [1, burst]) from key's bucket at the
 * monotonic clock. On RD_RATE_LIMITED *retry_after_ms (may be NULL) is the
 * wait until the request would pass (>= 1); on RD_OK it is 0.
 * Errors: RD_RATE_LIMITED, RD_INTERNAL (key NULL or longer than 1024 bytes,
 * out of memory). */
rd_code auth_ratelimit_take(auth_ratelimit *rl, const char *key, double cost,
                            int64_t *retry_after_ms, rd_err *err);
/* The same at an explicit time (µs, monotonic), for tests. */
rd_code auth_ratelimit_take_at(auth_ratelimit *rl, const char *key, double cost, int64_t now_us,
                               int64_t *retry_after_ms, rd_err *err);
/* Charges cost more tokens to key's bucket after the fact, whatever it
 * holds: the bucket may go below zero (down to -burst), so the principal's
 * next requests wait until it has refilled. For work whose cost is known
 * only once done (a bulk's rows). No-op for cost <= 0. */
void auth_ratelimit_charge(auth_ratelimit *rl, const char *key, double cost);
/* Number of buckets currently held. */
size_t auth_ratelimit_size(auth_ratelimit *rl);

#endif
