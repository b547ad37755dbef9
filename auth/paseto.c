/* PASETO v4.public and PASERK k4 primitives: strict base64url, PAE,
 * Ed25519 sign/verify over PAE, and the k4.public / k4.pid encodings. The
 * token profile (footer, claims) lives in token.c on top of this. */
#include "auth/auth_int.h"

#include <pthread.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

static const char V4_PUBLIC[] = "v4.public.";
enum { V4_PUBLIC_LEN = sizeof V4_PUBLIC - 1 };
static const char K4_PUBLIC[] = "k4.public.";
enum { K4_PUBLIC_LEN = sizeof K4_PUBLIC - 1 };
static const char K4_PID[] = "k4.pid.";
enum { K4_PID_LEN = sizeof K4_PID - 1, K4_PID_HASH_BYTES = 33 };

static pthread_once_t sodium_once = PTHREAD_ONCE_INIT;
static int sodium_rc = -1;

static void sodium_init_once(void)
{
    sodium_rc = sodium_init() < 0 ? -1 : 0;
}

int auth__sodium_ready(void)
{
    pthread_once(&sodium_once, sodium_init_once);
    return sodium_rc;
}

/* ---- base64url ------------------------------------------------------------ */

int auth__b64url_decode(const char *in, size_t len, unsigned char *out, size_t cap, size_t *out_len)
{
    /* 4 chars carry 3 bytes; a final group of 1 char is never valid. */
    size_t need = len / 4 * 3 + (len % 4 ? len % 4 - 1 : 0);
    if (len % 4 == 1 || need > cap)
        return -1;
    if (len == 0) {
        *out_len = 0;
        return 0;
    }
    size_t n = 0;
    /* libsodium's decoder with b64_end == NULL and no ignore set is strict:
     * it rejects '=', '+', '/', whitespace and non-zero trailing bits. */
    if (sodium_base642bin(out, cap, in, len, NULL, &n, NULL,
                          sodium_base64_VARIANT_URLSAFE_NO_PADDING) != 0)
        return -1;
    if (n != need)
        return -1;
    *out_len = n;
    return 0;
}

size_t auth__b64url_len(size_t n)
{
    return n / 3 * 4 + (n % 3 ? n % 3 + 1 : 0);
}

void auth__b64url_encode(const unsigned char *in, size_t n, char *out, size_t out_cap)
{
    sodium_bin2base64(out, out_cap, in, n, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
}

/* ---- PAE ------------------------------------------------------------------ */

static void le64(unsigned char out[8], uint64_t n)
{
    for (int k = 0; k < 8; k++) {
        out[k] = (unsigned char)(n & 0xff);
        n >>= 8;
    }
    out[7] &= 0x7f; /* PASETO clears the top bit for interoperability */
}

unsigned char *auth__pae(const unsigned char *const *pieces, const size_t *lens, size_t n,
                         size_t *out_len)
{
    size_t total = 8;
    for (size_t k = 0; k < n; k++) {
        if (lens[k] > SIZE_MAX - total - 8)
            return NULL;
        total += 8 + lens[k];
    }
    unsigned char *buf = malloc(total);
    if (buf == NULL)
        return NULL;
    unsigned char *p = buf;
    le64(p, n);
    p += 8;
    for (size_t k = 0; k < n; k++) {
        le64(p, lens[k]);
        p += 8;
        if (lens[k] > 0)
            memcpy(p, pieces[k], lens[k]);
        p += lens[k];
    }
    *out_len = total;
    return buf;
}

/* ---- v4.public -------------------------------------------------------------- */

rd_code auth__paseto_split(const char *token, size_t len, auth__paseto_parts *parts, rd_err *err)
{
    if (token == NULL || len == 0)
        return rd_errf(err, RD_UNAUTHENTICATED, NULL, "token is empty");
    if (len < V4_PUBLIC_LEN || memcmp(token, V4_PUBLIC, V4_PUBLIC_LEN) != 0) {
        if (len >= 9 && memcmp(token, "v4.local.", 9) == 0)
            return rd_errf(err, RD_UNAUTHENTICATED, NULL,
                           "v4.local tokens are not accepted; expected v4.public");
        return rd_errf(err, RD_UNAUTHENTICATED, NULL, "not a v4.public token");
    }
    const char *body = token + V4_PUBLIC_LEN;
    size_t rest = len - V4_PUBLIC_LEN;
    const char *dot = memchr(body, '.', rest);
    parts->body = body;
    parts->body_len = dot ? (size_t)(dot - body) : rest;
    parts->footer = NULL;
    parts->footer_len = 0;
    if (parts->body_len == 0)
        return rd_errf(err, RD_UNAUTHENTICATED, NULL, "token body is empty");
    if (dot != NULL) {
        parts->footer = dot + 1;
        parts->footer_len = rest - parts->body_len - 1;
        if (parts->footer_len == 0)
            return rd_errf(err, RD_UNAUTHENTICATED, NULL, "token has an empty footer segment");
        if (memchr(parts->footer, '.', parts->footer_len) != NULL)
            return rd_errf(err, RD_UNAUTHENTICATED, NULL, "token has too many segments");
    }
    return RD_OK;
}

rd_code auth__paseto_verify_parts(const unsigned char pk[AUTH_PUBLIC_KEY_BYTES],
                                  const auth__paseto_parts *parts, const unsigned char *i,
                                  size_t i_len, unsigned char **m_out, size_t *m_len,
                                  unsigned char **f_out, size_t *f_len, rd_err *err)
{
    rd_code rc = RD_UNAUTHENTICATED;
    unsigned char *body = NULL, *footer = NULL, *pae = NULL;
    size_t body_len = 0, footer_len = 0, pae_len = 0;
    *m_out = NULL;
    *f_out = NULL;
    if (auth__sodium_ready() != 0) {
        rc = rd_errf(err, RD_INTERNAL, NULL, "crypto library unavailable");
        goto done;
    }
    size_t body_cap = parts->body_len / 4 * 3 + 3;
    size_t footer_cap = parts->footer_len / 4 * 3 + 3;
    body = malloc(body_cap + 1);
    footer = malloc(footer_cap + 1);
    if (body == NULL || footer == NULL) {
        rc = rd_errf(err, RD_INTERNAL, NULL, "out of memory");
        goto done;
    }
    if (auth__b64url_decode(parts->body, parts->body_len, body, body_cap, &body_len) != 0) {
        rd_errf(err, rc, NULL, "token body is not canonical base64url");
        goto done;
    }
    if (parts->footer != NULL && auth__b64url_decode(parts->footer, parts->footer_len, footer,
                                                     footer_cap, &footer_len) != 0) {
        rd_errf(err, rc, NULL, "token footer is not canonical base64url");
        goto done;
    }
    if (body_len < AUTH__SIG_BYTES) {
        rd_errf(err, rc, NULL, "token body is shorter than a signature");
        goto done;
    }
    size_t mlen = body_len - AUTH__SIG_BYTES;
    const unsigned char *sig = body + mlen;
    const unsigned char *pieces[4] = {(const unsigned char *)V4_PUBLIC, body, footer, i};
    size_t lens[4] = {V4_PUBLIC_LEN, mlen, footer_len, i_len};
    pae = auth__pae(pieces, lens, 4, &pae_len);
    if (pae == NULL) {
        rc = rd_errf(err, RD_INTERNAL, NULL, "out of memory");
        goto done;
    }
    if (crypto_sign_verify_detached(sig, pae, pae_len, pk) != 0) {
        rd_errf(err, rc, NULL, "token signature is invalid");
        goto done;
    }
    body[mlen] = '\0';
    footer[footer_len] = '\0';
    *m_out = body;
    *m_len = mlen;
    *f_out = footer;
    *f_len = footer_len;
    body = NULL;
    footer = NULL;
    rc = RD_OK;
done:
    free(body);
    free(footer);
    free(pae);
    return rc;
}

rd_code auth__paseto_verify(const unsigned char pk[AUTH_PUBLIC_KEY_BYTES], const char *token,
                            size_t len, const unsigned char *i, size_t i_len, unsigned char **m_out,
                            size_t *m_len, unsigned char **f_out, size_t *f_len, rd_err *err)
{
    auth__paseto_parts parts;
    *m_out = NULL;
    *f_out = NULL;
    rd_code rc = auth__paseto_split(token, len, &parts, err);
    if (rc != RD_OK)
        return rc;
    return auth__paseto_verify_parts(pk, &parts, i, i_len, m_out, m_len, f_out, f_len, err);
}

rd_code auth__paseto_sign(const unsigned char sk[AUTH__SECRET_KEY_BYTES], const unsigned char *m,
                          size_t m_len, const unsigned char *f, size_t f_len,
                          const unsigned char *i, size_t i_len, char **token_out, rd_err *err)
{
    rd_code rc = RD_INTERNAL;
    unsigned char *pae = NULL, *body = NULL;
    char *tok = NULL;
    size_t pae_len = 0;
    *token_out = NULL;
    if (auth__sodium_ready() != 0) {
        rd_errf(err, rc, NULL, "crypto library unavailable");
        goto done;
    }
    if (m_len > SIZE_MAX / 2 || f_len > SIZE_MAX / 2) {
        rd_errf(err, rc, NULL, "token too large");
        goto done;
    }
    const unsigned char *pieces[4] = {(const unsigned char *)V4_PUBLIC, m, f, i};
    size_t lens[4] = {V4_PUBLIC_LEN, m_len, f_len, i_len};
    pae = auth__pae(pieces, lens, 4, &pae_len);
    body = malloc(m_len + AUTH__SIG_BYTES);
    if (pae == NULL || body == NULL) {
        rd_errf(err, rc, NULL, "out of memory");
        goto done;
    }
    if (m_len > 0)
        memcpy(body, m, m_len);
    if (crypto_sign_detached(body + m_len, NULL, pae, pae_len, sk) != 0) {
        rd_errf(err, rc, NULL, "signing failed");
        goto done;
    }
    size_t blen = auth__b64url_len(m_len + AUTH__SIG_BYTES);
    size_t flen = f_len > 0 ? 1 + auth__b64url_len(f_len) : 0;
    size_t total = V4_PUBLIC_LEN + blen + flen + 1;
    tok = malloc(total);
    if (tok == NULL) {
        rd_errf(err, rc, NULL, "out of memory");
        goto done;
    }
    memcpy(tok, V4_PUBLIC, V4_PUBLIC_LEN);
    auth__b64url_encode(body, m_len + AUTH__SIG_BYTES, tok + V4_PUBLIC_LEN, total - V4_PUBLIC_LEN);
    if (f_len > 0) {
        tok[V4_PUBLIC_LEN + blen] = '.';
        auth__b64url_encode(f, f_len, tok + V4_PUBLIC_LEN + blen + 1,
                            total - V4_PUBLIC_LEN - blen - 1);
    }
    *token_out = tok;
    tok = NULL;
    rc = RD_OK;
done:
    free(pae);
    free(body);
    free(tok);
    return rc;
}

/* ---- PASERK ------------------------------------------------------------------ */

rd_code auth_paserk_public_encode(const unsigned char *pk, size_t pk_len,
                                  char out[AUTH_PASERK_PUBLIC_LEN + 1], rd_err *err)
{
    if (pk == NULL || pk_len != AUTH_PUBLIC_KEY_BYTES)
        return rd_errf(err, RD_VALIDATION_FAILED, "key", "a k4 public key is 32 bytes");
    memcpy(out, K4_PUBLIC, K4_PUBLIC_LEN);
    auth__b64url_encode(pk, pk_len, out + K4_PUBLIC_LEN,
                        AUTH_PASERK_PUBLIC_LEN + 1 - K4_PUBLIC_LEN);
    return RD_OK;
}

rd_code auth_paserk_public_decode(const char *s, size_t len,
                                  unsigned char pk[AUTH_PUBLIC_KEY_BYTES], rd_err *err)
{
    size_t n = 0;
    if (s == NULL || len != AUTH_PASERK_PUBLIC_LEN || memcmp(s, K4_PUBLIC, K4_PUBLIC_LEN) != 0 ||
        auth__b64url_decode(s + K4_PUBLIC_LEN, len - K4_PUBLIC_LEN, pk, AUTH_PUBLIC_KEY_BYTES,
                            &n) != 0 ||
        n != AUTH_PUBLIC_KEY_BYTES)
        return rd_errf(err, RD_VALIDATION_FAILED, "key", "not a k4.public PASERK");
    return RD_OK;
}

rd_code auth_paserk_pid(const unsigned char *pk, size_t pk_len, char out[AUTH_KID_LEN + 1],
                        rd_err *err)
{
    char paserk[AUTH_PASERK_PUBLIC_LEN + 1];
    unsigned char msg[K4_PID_LEN + AUTH_PASERK_PUBLIC_LEN];
    unsigned char d[K4_PID_HASH_BYTES];
    rd_code rc = auth_paserk_public_encode(pk, pk_len, paserk, err);
    if (rc != RD_OK)
        return rc;
    if (auth__sodium_ready() != 0)
        return rd_errf(err, RD_INTERNAL, NULL, "crypto library unavailable");
    /* PASERK ID: h || base64url(BLAKE2b-264(h || paserk)), h = "k4.pid." */
    memcpy(msg, K4_PID, K4_PID_LEN);
    memcpy(msg + K4_PID_LEN, paserk, AUTH_PASERK_PUBLIC_LEN);
    if (crypto_generichash(d, sizeof d, msg, sizeof msg, NULL, 0) != 0)
        return rd_errf(err, RD_INTERNAL, NULL, "hashing failed");
    memcpy(out, K4_PID, K4_PID_LEN);
    auth__b64url_encode(d, sizeof d, out + K4_PID_LEN, AUTH_KID_LEN + 1 - K4_PID_LEN);
    return RD_OK;
}
