/* auth internals shared by the files in auth/, the unit tests and the fuzz
 * target: struct layouts, strict base64url, PASETO v4.public primitives.
 * Nothing outside auth/ and tests/ includes this. */
#ifndef AUTH_INT_H
#define AUTH_INT_H

#include <pthread.h>

#include "auth/auth.h"

enum {
    AUTH__MAX_CAPS = 128,   /* capabilities per list */
    AUTH__MAX_FIELDS = 256, /* fields per capability */
    AUTH__MAX_NAME = 128,   /* bytes in a model, group or field name */
    AUTH__MAX_CLAIM = 256,  /* bytes in a string claim */
    AUTH__KEYRING_MAX = 64, /* keys in a keyring */
    AUTH__FILE_MAX = 65536, /* bytes in a keyring or key file */
    AUTH__SECRET_KEY_BYTES = 64,
    AUTH__SIG_BYTES = 64,
};

#define AUTH__ALL_VERBS (AUTH_READ | AUTH_CREATE | AUTH_UPDATE | AUTH_DELETE | AUTH_ADMIN)

typedef struct auth__cap {
    unsigned verbs;
    char *model;
    char *group;
    char **fields; /* NULL: no field list */
    size_t n_fields;
} auth__cap;

struct auth_caps {
    auth__cap *v;
    size_t n;
    size_t cap;
};

struct auth_principal {
    auth_kind kind;
    char *id;
    char *org;
    char *role;      /* NULL when none */
    char *jti;       /* NULL for API keys */
    char *client_id; /* the client certificate identity it is bound to, or NULL */
    int64_t expires_us;
    auth_caps *caps;
    int refs; /* auth_principal_ref / auth_principal_free, atomic */
};

typedef struct auth__key {
    char kid[AUTH_KID_LEN + 1];
    unsigned char pk[AUTH_PUBLIC_KEY_BYTES];
} auth__key;

struct auth_keyring {
    pthread_rwlock_t lock;
    auth__key *v;
    size_t n;
};

struct auth_signer {
    unsigned char *sk; /* sodium_malloc'd, AUTH__SECRET_KEY_BYTES */
    unsigned char pk[AUTH_PUBLIC_KEY_BYTES];
    char kid[AUTH_KID_LEN + 1];
};

/* sodium_init once per process; 0 on success. */
int auth__sodium_ready(void);

/* Strict base64url without padding: no '=', no '+' '/', no whitespace, zero
 * trailing bits. 0 on success with *out_len set, -1 otherwise (also when the
 * result would exceed cap). */
int auth__b64url_decode(const char *in, size_t len, unsigned char *out, size_t cap,
                        size_t *out_len);
/* Encoded length of n bytes, without the NUL. */
size_t auth__b64url_len(size_t n);
/* Writes auth__b64url_len(n) chars and a NUL; out_cap must exceed that. */
void auth__b64url_encode(const unsigned char *in, size_t n, char *out, size_t out_cap);

/* PASETO Pre-Authentication Encoding of n pieces into a malloc'd buffer.
 * NULL on out of memory. */
unsigned char *auth__pae(const unsigned char *const *pieces, const size_t *lens, size_t n,
                         size_t *out_len);

/* The parts of a "v4.public.<body>[.<footer>]" token (borrowed). */
typedef struct auth__paseto_parts {
    const char *body;
    size_t body_len;
    const char *footer; /* NULL when the token has no footer */
    size_t footer_len;
} auth__paseto_parts;

/* Splits a token: exact "v4.public." header, non-empty body, at most one
 * footer segment which must be non-empty. Errors: RD_UNAUTHENTICATED. */
rd_code auth__paseto_split(const char *token, size_t len, auth__paseto_parts *parts, rd_err *err);

/* v4.public verification of split parts with public key pk and implicit
 * assertion i. On RD_OK *m_out (message) and *f_out (decoded footer, may be
 * zero-length) are malloc'd and NUL-terminated for convenience; the caller
 * frees both. Errors: RD_UNAUTHENTICATED. */
rd_code auth__paseto_verify_parts(const unsigned char pk[AUTH_PUBLIC_KEY_BYTES],
                                  const auth__paseto_parts *parts, const unsigned char *i,
                                  size_t i_len, unsigned char **m_out, size_t *m_len,
                                  unsigned char **f_out, size_t *f_len, rd_err *err);

/* auth__paseto_split + auth__paseto_verify_parts. */
rd_code auth__paseto_verify(const unsigned char pk[AUTH_PUBLIC_KEY_BYTES], const char *token,
                            size_t len, const unsigned char *i, size_t i_len, unsigned char **m_out,
                            size_t *m_len, unsigned char **f_out, size_t *f_len, rd_err *err);

/* v4.public signing with a 64-byte Ed25519 secret key; the footer is
 * appended when f_len > 0. *token_out is malloc'd. Errors: RD_INTERNAL. */
rd_code auth__paseto_sign(const unsigned char sk[AUTH__SECRET_KEY_BYTES], const unsigned char *m,
                          size_t m_len, const unsigned char *f, size_t f_len,
                          const unsigned char *i, size_t i_len, char **token_out, rd_err *err);

/* Signs payload[0..len) as a profile token: footer {"kid":"<signer kid>"},
 * empty implicit assertion. Used by auth_mint, the tests and the fuzzer. */
rd_code auth__token_sign_payload(const auth_signer *s, const char *payload, size_t len,
                                 char **token_out, rd_err *err);

/* Copies the public key registered under kid[0..kid_len) into pk: 0 when
 * found, -1 otherwise. */
int auth__keyring_lookup(auth_keyring *kr, const char *kid, size_t kid_len,
                         unsigned char pk[AUTH_PUBLIC_KEY_BYTES]);

/* The API-key string for env and random32 (checksum computed). out receives
 * AUTH_APIKEY_LEN chars and a NUL. */
void auth__apikey_encode(auth_key_env env, const unsigned char random32[32],
                         char out[AUTH_APIKEY_LEN + 1]);
/* CRC-32/ISO-HDLC (zlib crc32). */
uint32_t auth__crc32(const unsigned char *p, size_t n);

/* Strict RFC 3339 as the token profile wants (uppercase T and Z, numeric
 * offsets allowed). 0 on success with *t_us set, -1 otherwise. */
int auth__parse_time(const char *s, int64_t *t_us);

/* Builds caps from a parsed JSON array (json_t *; void * keeps jansson out
 * of this header). Errors: RD_VALIDATION_FAILED (field "caps"),
 * RD_INTERNAL. */
rd_code auth__caps_from_json_value(const void *array, auth_caps **out, rd_err *err);
/* The JSON array of c as a new json_t * reference; NULL on out of memory. */
void *auth__caps_to_json_value(const auth_caps *c);

/* A principal with copied strings; caps is taken over (freed on error). */
rd_code auth__principal_new(auth_kind kind, const char *id, const char *org, const char *role,
                            const char *jti, int64_t expires_us, auth_caps *caps,
                            auth_principal **out, rd_err *err);

#endif
