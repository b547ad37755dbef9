/* Token keys: the keyring of trusted public keys (kid -> Ed25519 key, several
 * at once for rotation, reloadable from PASERK files) and the signer that
 * holds the secret key MintToken signs with. */
#include "auth/auth_int.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char K4_SECRET[] = "k4.secret.";
enum { K4_SECRET_LEN = sizeof K4_SECRET - 1 };

/* ---- keyring ---------------------------------------------------------------- */

auth_keyring *auth_keyring_new(void)
{
    auth_keyring *kr = calloc(1, sizeof *kr);
    if (kr == NULL)
        return NULL;
    if (pthread_rwlock_init(&kr->lock, NULL) != 0) {
        free(kr);
        return NULL;
    }
    return kr;
}

void auth_keyring_free(auth_keyring *kr)
{
    if (kr == NULL)
        return;
    pthread_rwlock_destroy(&kr->lock);
    free(kr->v);
    free(kr);
}

/* A growing list of keys, deduplicated by kid. */
typedef struct keyset {
    auth__key *v;
    size_t n;
} keyset;

static rd_code keyset_add(keyset *ks, const unsigned char pk[AUTH_PUBLIC_KEY_BYTES],
                          char kid_out[AUTH_KID_LEN + 1], rd_err *err)
{
    char kid[AUTH_KID_LEN + 1];
    rd_code rc = auth_paserk_pid(pk, AUTH_PUBLIC_KEY_BYTES, kid, err);
    if (rc != RD_OK)
        return rc;
    if (kid_out != NULL)
        memcpy(kid_out, kid, sizeof kid);
    for (size_t i = 0; i < ks->n; i++)
        if (strcmp(ks->v[i].kid, kid) == 0)
            return RD_OK;
    if (ks->n >= AUTH__KEYRING_MAX)
        return rd_errf(err, RD_VALIDATION_FAILED, "keyring", "more than %d keys",
                       AUTH__KEYRING_MAX);
    auth__key *v = realloc(ks->v, (ks->n + 1) * sizeof *v);
    if (v == NULL)
        return rd_errf(err, RD_INTERNAL, NULL, "out of memory");
    ks->v = v;
    memcpy(v[ks->n].kid, kid, sizeof kid);
    memcpy(v[ks->n].pk, pk, AUTH_PUBLIC_KEY_BYTES);
    ks->n++;
    return RD_OK;
}

rd_code auth_keyring_add(auth_keyring *kr, const unsigned char pk[AUTH_PUBLIC_KEY_BYTES],
                         char kid_out[AUTH_KID_LEN + 1], rd_err *err)
{
    if (kr == NULL || pk == NULL)
        return rd_errf(err, RD_INTERNAL, NULL, "no keyring or key");
    pthread_rwlock_wrlock(&kr->lock);
    keyset ks = {kr->v, kr->n};
    rd_code rc = keyset_add(&ks, pk, kid_out, err);
    kr->v = ks.v;
    kr->n = ks.n;
    pthread_rwlock_unlock(&kr->lock);
    return rc;
}

rd_code auth_keyring_add_paserk(auth_keyring *kr, const char *paserk, size_t len, rd_err *err)
{
    unsigned char pk[AUTH_PUBLIC_KEY_BYTES];
    rd_code rc = auth_paserk_public_decode(paserk, len, pk, err);
    if (rc != RD_OK)
        return rc;
    return auth_keyring_add(kr, pk, NULL, err);
}

int auth_keyring_remove(auth_keyring *kr, const char *kid)
{
    int removed = 0;
    if (kr == NULL || kid == NULL)
        return 0;
    pthread_rwlock_wrlock(&kr->lock);
    for (size_t i = 0; i < kr->n; i++) {
        if (strcmp(kr->v[i].kid, kid) == 0) {
            kr->v[i] = kr->v[kr->n - 1];
            kr->n--;
            removed = 1;
            break;
        }
    }
    pthread_rwlock_unlock(&kr->lock);
    return removed;
}

size_t auth_keyring_count(const auth_keyring *kr)
{
    if (kr == NULL)
        return 0;
    auth_keyring *m = (auth_keyring *)kr; /* the lock is not part of the value */
    pthread_rwlock_rdlock(&m->lock);
    size_t n = m->n;
    pthread_rwlock_unlock(&m->lock);
    return n;
}

int auth__keyring_lookup(auth_keyring *kr, const char *kid, size_t kid_len,
                         unsigned char pk[AUTH_PUBLIC_KEY_BYTES])
{
    int found = -1;
    if (kr == NULL || kid_len != AUTH_KID_LEN)
        return -1;
    pthread_rwlock_rdlock(&kr->lock);
    for (size_t i = 0; i < kr->n; i++) {
        if (memcmp(kr->v[i].kid, kid, AUTH_KID_LEN) == 0) {
            memcpy(pk, kr->v[i].pk, AUTH_PUBLIC_KEY_BYTES);
            found = 0;
            break;
        }
    }
    pthread_rwlock_unlock(&kr->lock);
    return found;
}

/* Reads a whole regular file of at most AUTH__FILE_MAX bytes into a
 * malloc'd NUL-terminated buffer. */
static rd_code read_small_file(const char *path, char **out, size_t *out_len, rd_err *err)
{
    rd_code rc = RD_INTERNAL;
    char *buf = NULL;
    size_t len = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    *out = NULL;
    if (fd < 0) {
        rd_errf(err, rc, NULL, "cannot open %s: %s", path, strerror(errno));
        goto done;
    }
    buf = malloc(AUTH__FILE_MAX + 1);
    if (buf == NULL) {
        rd_errf(err, rc, NULL, "out of memory");
        goto done;
    }
    for (;;) {
        ssize_t n = read(fd, buf + len, AUTH__FILE_MAX + 1 - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            rd_errf(err, rc, NULL, "cannot read %s: %s", path, strerror(errno));
            goto done;
        }
        if (n == 0)
            break;
        len += (size_t)n;
        if (len > AUTH__FILE_MAX) {
            rc = rd_errf(err, RD_VALIDATION_FAILED, "keyring", "%s is larger than %d bytes", path,
                         AUTH__FILE_MAX);
            goto done;
        }
    }
    buf[len] = '\0';
    *out = buf;
    *out_len = len;
    buf = NULL;
    rc = RD_OK;
done:
    if (buf != NULL) {
        sodium_memzero(buf, AUTH__FILE_MAX + 1);
        free(buf);
    }
    if (fd >= 0)
        close(fd);
    return rc;
}

static int is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\r';
}

/* Parses "k4.public.…" lines of one file into ks. */
static rd_code load_file(keyset *ks, const char *path, rd_err *err)
{
    char *buf = NULL;
    size_t len = 0;
    rd_code rc = read_small_file(path, &buf, &len, err);
    if (rc != RD_OK)
        return rc;
    size_t line = 0;
    const char *p = buf, *end = buf + len;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *eol = nl ? nl : end;
        const char *s = p, *e = eol;
        line++;
        p = nl ? nl + 1 : end;
        while (s < e && is_space(*s))
            s++;
        while (e > s && is_space(e[-1]))
            e--;
        if (s == e || *s == '#')
            continue;
        unsigned char pk[AUTH_PUBLIC_KEY_BYTES];
        if (auth_paserk_public_decode(s, (size_t)(e - s), pk, NULL) != RD_OK) {
            rc = rd_errf(err, RD_VALIDATION_FAILED, "keyring",
                         "%s line %zu: expected a k4.public PASERK", path, line);
            goto done;
        }
        rc = keyset_add(ks, pk, NULL, err);
        if (rc != RD_OK)
            goto done;
    }
    rc = RD_OK;
done:
    free(buf);
    return rc;
}

static int cmp_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static rd_code load_dir(keyset *ks, const char *path, rd_err *err)
{
    rd_code rc = RD_OK;
    char **names = NULL;
    size_t n = 0;
    DIR *d = opendir(path);
    if (d == NULL)
        return rd_errf(err, RD_INTERNAL, NULL, "cannot open %s: %s", path, strerror(errno));
    for (;;) {
        errno = 0;
        struct dirent *de = readdir(d);
        if (de == NULL)
            break;
        if (de->d_name[0] == '.')
            continue;
        if (n >= 1024) {
            rc = rd_errf(err, RD_VALIDATION_FAILED, "keyring", "%s has too many entries", path);
            goto done;
        }
        char **nn = realloc(names, (n + 1) * sizeof *nn);
        if (nn == NULL) {
            rc = rd_errf(err, RD_INTERNAL, NULL, "out of memory");
            goto done;
        }
        names = nn;
        names[n] = strdup(de->d_name);
        if (names[n] == NULL) {
            rc = rd_errf(err, RD_INTERNAL, NULL, "out of memory");
            goto done;
        }
        n++;
    }
    if (errno != 0) {
        rc = rd_errf(err, RD_INTERNAL, NULL, "cannot list %s: %s", path, strerror(errno));
        goto done;
    }
    if (n > 0)
        qsort(names, n, sizeof *names, cmp_names);
    for (size_t i = 0; i < n; i++) {
        char full[4096];
        struct stat st;
        int w = snprintf(full, sizeof full, "%s/%s", path, names[i]);
        if (w < 0 || (size_t)w >= sizeof full) {
            rc = rd_errf(err, RD_INTERNAL, NULL, "path too long in %s", path);
            goto done;
        }
        if (stat(full, &st) != 0 || !S_ISREG(st.st_mode))
            continue;
        rc = load_file(ks, full, err);
        if (rc != RD_OK)
            goto done;
    }
done:
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
    closedir(d);
    return rc;
}

rd_code auth_keyring_load(auth_keyring *kr, const char *path, rd_err *err)
{
    keyset ks = {NULL, 0};
    struct stat st;
    rd_code rc;
    if (kr == NULL || path == NULL)
        return rd_errf(err, RD_INTERNAL, NULL, "no keyring or path");
    if (stat(path, &st) != 0)
        return rd_errf(err, RD_INTERNAL, NULL, "cannot open %s: %s", path, strerror(errno));
    if (S_ISDIR(st.st_mode))
        rc = load_dir(&ks, path, err);
    else
        rc = load_file(&ks, path, err);
    if (rc == RD_OK && ks.n == 0)
        rc = rd_errf(err, RD_VALIDATION_FAILED, "keyring", "%s holds no keys", path);
    if (rc != RD_OK) {
        free(ks.v);
        return rc;
    }
    pthread_rwlock_wrlock(&kr->lock);
    auth__key *old = kr->v;
    kr->v = ks.v;
    kr->n = ks.n;
    pthread_rwlock_unlock(&kr->lock);
    free(old);
    return RD_OK;
}

/* ---- signer ------------------------------------------------------------------ */

/* A signer from a 64-byte secret key (seed || pk) checked for consistency. */
static rd_code signer_new(const unsigned char seed[AUTH_SEED_BYTES], const unsigned char *expect_pk,
                          auth_signer **out, rd_err *err)
{
    rd_code rc = RD_INTERNAL;
    auth_signer *s = NULL;
    *out = NULL;
    if (auth__sodium_ready() != 0) {
        rd_errf(err, rc, NULL, "crypto library unavailable");
        goto done;
    }
    s = calloc(1, sizeof *s);
    if (s == NULL) {
        rd_errf(err, rc, NULL, "out of memory");
        goto done;
    }
    s->sk = sodium_malloc(AUTH__SECRET_KEY_BYTES);
    if (s->sk == NULL) {
        rd_errf(err, rc, NULL, "out of memory");
        goto done;
    }
    if (crypto_sign_seed_keypair(s->pk, s->sk, seed) != 0) {
        rd_errf(err, rc, NULL, "key derivation failed");
        goto done;
    }
    if (expect_pk != NULL && sodium_memcmp(expect_pk, s->pk, AUTH_PUBLIC_KEY_BYTES) != 0) {
        rc = rd_errf(err, RD_VALIDATION_FAILED, "key", "secret key does not match its public half");
        goto done;
    }
    rc = auth_paserk_pid(s->pk, AUTH_PUBLIC_KEY_BYTES, s->kid, err);
    if (rc != RD_OK)
        goto done;
    *out = s;
    s = NULL;
    rc = RD_OK;
done:
    auth_signer_free(s);
    return rc;
}

rd_code auth_signer_generate(auth_signer **out, rd_err *err)
{
    unsigned char seed[AUTH_SEED_BYTES];
    *out = NULL;
    if (auth__sodium_ready() != 0)
        return rd_errf(err, RD_INTERNAL, NULL, "crypto library unavailable");
    randombytes_buf(seed, sizeof seed);
    rd_code rc = signer_new(seed, NULL, out, err);
    sodium_memzero(seed, sizeof seed);
    return rc;
}

rd_code auth_signer_from_seed(const unsigned char seed[AUTH_SEED_BYTES], auth_signer **out,
                              rd_err *err)
{
    return signer_new(seed, NULL, out, err);
}

rd_code auth_signer_from_paserk(const char *s, size_t len, auth_signer **out, rd_err *err)
{
    unsigned char sk[AUTH__SECRET_KEY_BYTES];
    size_t n = 0;
    rd_code rc;
    *out = NULL;
    if (s == NULL || len != AUTH_PASERK_SECRET_LEN || memcmp(s, K4_SECRET, K4_SECRET_LEN) != 0 ||
        auth__b64url_decode(s + K4_SECRET_LEN, len - K4_SECRET_LEN, sk, sizeof sk, &n) != 0 ||
        n != sizeof sk) {
        rc = rd_errf(err, RD_VALIDATION_FAILED, "key", "not a k4.secret PASERK");
        goto done;
    }
    rc = signer_new(sk, sk + AUTH_SEED_BYTES, out, err);
done:
    sodium_memzero(sk, sizeof sk);
    return rc;
}

rd_code auth_signer_load(const char *path, auth_signer **out, rd_err *err)
{
    char *buf = NULL;
    size_t len = 0;
    *out = NULL;
    if (path == NULL)
        return rd_errf(err, RD_INTERNAL, NULL, "no key path");
    rd_code rc = read_small_file(path, &buf, &len, err);
    if (rc != RD_OK)
        return rc;
    size_t e = len;
    while (e > 0 && (is_space(buf[e - 1]) || buf[e - 1] == '\n'))
        e--;
    rc = auth_signer_from_paserk(buf, e, out, err);
    if (rc == RD_VALIDATION_FAILED)
        rd_errf(err, rc, "key", "%s: expected one k4.secret PASERK", path);
    sodium_memzero(buf, len);
    free(buf);
    return rc;
}

void auth_signer_free(auth_signer *s)
{
    if (s == NULL)
        return;
    sodium_free(s->sk); /* wipes before release */
    sodium_memzero(s, sizeof *s);
    free(s);
}

const char *auth_signer_kid(const auth_signer *s)
{
    return s->kid;
}

void auth_signer_public_key(const auth_signer *s, unsigned char pk[AUTH_PUBLIC_KEY_BYTES])
{
    memcpy(pk, s->pk, AUTH_PUBLIC_KEY_BYTES);
}

void auth_signer_public_paserk(const auth_signer *s, char out[AUTH_PASERK_PUBLIC_LEN + 1])
{
    auth_paserk_public_encode(s->pk, AUTH_PUBLIC_KEY_BYTES, out, NULL);
}

rd_code auth_signer_export_secret(const auth_signer *s, char *out, size_t out_len, rd_err *err)
{
    if (s == NULL || out == NULL || out_len <= AUTH_PASERK_SECRET_LEN)
        return rd_errf(err, RD_INTERNAL, NULL, "buffer too small for a k4.secret PASERK");
    memcpy(out, K4_SECRET, K4_SECRET_LEN);
    auth__b64url_encode(s->sk, AUTH__SECRET_KEY_BYTES, out + K4_SECRET_LEN,
                        out_len - K4_SECRET_LEN);
    return RD_OK;
}
