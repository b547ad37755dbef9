/* svc_tls: certificate files, validated with GnuTLS, reloaded on change
 * (service/svc_tls.h). */
#include "service/svc_tls.h"

#include <errno.h>
#include <fcntl.h>
#include <gnutls/x509.h>
#include <jansson.h>
#include <pthread.h>
#include <sodium.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "service/svc_log.h"

#define TLS_FILE_MAX (1 << 20)     /* a PEM file larger than this is refused */
#define TLS_CHECK_US (1000 * 1000) /* the files are stat'ed at most this often */

const char svc_tls_gnutls_priorities[] =
    "SECURE128:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2:-CIPHER-ALL:+AES-128-GCM:+AES-256-GCM:"
    "+CHACHA20-POLY1305:-MAC-ALL:+AEAD:-KX-ALL:+ECDHE-ECDSA:+ECDHE-RSA:%SERVER_PRECEDENCE";

enum { F_CERT, F_KEY, F_CA, N_FILES };
static const char *const file_flag[N_FILES] = {"--tls-cert", "--tls-key", "--tls-client-ca"};

struct svc_tls_snap {
    atomic_int refs;
    uint64_t generation;
    char *pem[N_FILES]; /* pem[F_CA] NULL when no CA */
    size_t len[N_FILES];
    gnutls_certificate_credentials_t cred;
};

/* What a path resolves to, to notice a change without reading it. */
typedef struct file_id {
    bool ok;
    dev_t dev;
    ino_t ino;
    off_t size;
    struct timespec mtime;
} file_id;

struct svc_tls {
    char *path[N_FILES];
    svc_tls_client_auth mode;
    pthread_mutex_t mu;
    svc_tls_snap *cur;
    file_id ids[N_FILES];
    int64_t next_check_us;
    uint64_t grpc_generation; /* last version handed to gRPC's fetcher */
    char last_problem[512];   /* the reload failure last logged */
};

static int64_t mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static file_id identify(const char *path)
{
    file_id id = {0};
    struct stat st;
    if (path != NULL && stat(path, &st) == 0) {
        id.ok = true;
        id.dev = st.st_dev;
        id.ino = st.st_ino;
        id.size = st.st_size;
        id.mtime = st.st_mtim;
    }
    return id;
}

static bool same_id(const file_id *a, const file_id *b)
{
    return a->ok == b->ok && a->dev == b->dev && a->ino == b->ino && a->size == b->size &&
           a->mtime.tv_sec == b->mtime.tv_sec && a->mtime.tv_nsec == b->mtime.tv_nsec;
}

/* Reads path into a new NUL-terminated buffer (in *out, length in *len). */
static rd_code read_pem(const char *path, int which, char **out, size_t *len, rd_err *err)
{
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return rd_errf(err, RD_VALIDATION_FAILED, file_flag[which], "%s: cannot read %.300s: %s",
                       file_flag[which], path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size > TLS_FILE_MAX) {
        close(fd);
        return rd_errf(err, RD_VALIDATION_FAILED, file_flag[which],
                       "%s: %.300s is not a regular file of at most %d bytes", file_flag[which],
                       path, TLS_FILE_MAX);
    }
    char *buf = malloc((size_t)st.st_size + 1);
    if (buf == NULL) {
        close(fd);
        return rd_errf(err, RD_INTERNAL, NULL, "out of memory");
    }
    size_t n = 0;
    while (n < (size_t)st.st_size) {
        ssize_t r = read(fd, buf + n, (size_t)st.st_size - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        n += (size_t)r;
    }
    close(fd);
    buf[n] = '\0';
    if (n == 0) {
        free(buf);
        return rd_errf(err, RD_VALIDATION_FAILED, file_flag[which], "%s: %.300s is empty",
                       file_flag[which], path);
    }
    *out = buf;
    *len = n;
    return RD_OK;
}

static void snap_free(svc_tls_snap *s)
{
    if (s == NULL)
        return;
    if (s->cred != NULL)
        gnutls_certificate_free_credentials(s->cred);
    for (int i = 0; i < N_FILES; i++) {
        if (s->pem[i] != NULL)
            sodium_memzero(s->pem[i], s->len[i]);
        free(s->pem[i]);
    }
    free(s);
}

static void format_time(time_t t, char *buf, size_t len)
{
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* The leaf certificate must parse and be valid now. */
static rd_code check_cert(const char *path, const char *pem, size_t len, rd_err *err)
{
    gnutls_datum_t d = {(unsigned char *)pem, (unsigned)len};
    gnutls_x509_crt_t *crts = NULL;
    unsigned n = 0;
    int r = gnutls_x509_crt_list_import2(&crts, &n, &d, GNUTLS_X509_FMT_PEM, 0);
    if (r < 0 || n == 0)
        return rd_errf(err, RD_VALIDATION_FAILED, file_flag[F_CERT],
                       "--tls-cert: %.300s holds no PEM certificate (%s)", path,
                       r < 0 ? gnutls_strerror(r) : "empty");
    time_t now = time(NULL);
    time_t not_after = gnutls_x509_crt_get_expiration_time(crts[0]);
    time_t not_before = gnutls_x509_crt_get_activation_time(crts[0]);
    for (unsigned i = 0; i < n; i++)
        gnutls_x509_crt_deinit(crts[i]);
    gnutls_free(crts);
    char when[32];
    if (not_after != (time_t)-1 && not_after < now) {
        format_time(not_after, when, sizeof when);
        return rd_errf(err, RD_VALIDATION_FAILED, file_flag[F_CERT],
                       "--tls-cert: the certificate in %.300s expired at %s", path, when);
    }
    if (not_before != (time_t)-1 && not_before > now) {
        format_time(not_before, when, sizeof when);
        return rd_errf(err, RD_VALIDATION_FAILED, file_flag[F_CERT],
                       "--tls-cert: the certificate in %.300s is not valid before %s", path, when);
    }
    return RD_OK;
}

static rd_code check_key(const char *path, const char *pem, size_t len, rd_err *err)
{
    gnutls_x509_privkey_t key;
    if (gnutls_x509_privkey_init(&key) < 0)
        return rd_errf(err, RD_INTERNAL, NULL, "out of memory");
    gnutls_datum_t d = {(unsigned char *)pem, (unsigned)len};
    int r = gnutls_x509_privkey_import2(key, &d, GNUTLS_X509_FMT_PEM, NULL, GNUTLS_PKCS_PLAIN);
    gnutls_x509_privkey_deinit(key);
    if (r < 0)
        return rd_errf(err, RD_VALIDATION_FAILED, file_flag[F_KEY],
                       "--tls-key: %.300s holds no unencrypted PEM private key (%s)", path,
                       gnutls_strerror(r));
    return RD_OK;
}

/* Reads and validates the files into a new snapshot. */
static rd_code load(const svc_tls *t, uint64_t generation, svc_tls_snap **out, rd_err *err)
{
    *out = NULL;
    svc_tls_snap *s = calloc(1, sizeof *s);
    if (s == NULL)
        return rd_errf(err, RD_INTERNAL, NULL, "out of memory");
    atomic_init(&s->refs, 1);
    s->generation = generation;
    for (int i = 0; i < N_FILES; i++)
        if (t->path[i] != NULL && read_pem(t->path[i], i, &s->pem[i], &s->len[i], err) != RD_OK)
            goto fail;
    if (check_cert(t->path[F_CERT], s->pem[F_CERT], s->len[F_CERT], err) != RD_OK ||
        check_key(t->path[F_KEY], s->pem[F_KEY], s->len[F_KEY], err) != RD_OK)
        goto fail;
    if (gnutls_certificate_allocate_credentials(&s->cred) < 0) {
        s->cred = NULL;
        rd_errf(err, RD_INTERNAL, NULL, "out of memory");
        goto fail;
    }
    gnutls_datum_t cd = {(unsigned char *)s->pem[F_CERT], (unsigned)s->len[F_CERT]};
    gnutls_datum_t kd = {(unsigned char *)s->pem[F_KEY], (unsigned)s->len[F_KEY]};
    int r = gnutls_certificate_set_x509_key_mem2(s->cred, &cd, &kd, GNUTLS_X509_FMT_PEM, NULL,
                                                 GNUTLS_PKCS_PLAIN);
    if (r == GNUTLS_E_CERTIFICATE_KEY_MISMATCH) {
        rd_errf(err, RD_VALIDATION_FAILED, file_flag[F_KEY],
                "--tls-key: the key in %.300s does not belong to the certificate in %.300s",
                t->path[F_KEY], t->path[F_CERT]);
        goto fail;
    }
    if (r < 0) {
        rd_errf(err, RD_VALIDATION_FAILED, file_flag[F_CERT],
                "--tls-cert: %.300s and %.300s cannot be used together (%s)", t->path[F_CERT],
                t->path[F_KEY], gnutls_strerror(r));
        goto fail;
    }
    if (s->pem[F_CA] != NULL) {
        gnutls_datum_t ad = {(unsigned char *)s->pem[F_CA], (unsigned)s->len[F_CA]};
        r = gnutls_certificate_set_x509_trust_mem(s->cred, &ad, GNUTLS_X509_FMT_PEM);
        if (r <= 0) {
            rd_errf(err, RD_VALIDATION_FAILED, file_flag[F_CA],
                    "--tls-client-ca: %.300s holds no PEM CA certificate (%s)", t->path[F_CA],
                    r < 0 ? gnutls_strerror(r) : "empty");
            goto fail;
        }
    }
    *out = s;
    return RD_OK;
fail:
    snap_free(s);
    return err->code;
}

rd_code svc_tls_open(const svc_tls_options *opt, svc_tls **out, rd_err *err)
{
    *out = NULL;
    svc_tls *t = calloc(1, sizeof *t);
    if (t == NULL)
        return rd_errf(err, RD_INTERNAL, NULL, "out of memory");
    pthread_mutex_init(&t->mu, NULL);
    const char *paths[N_FILES] = {opt->cert_file, opt->key_file, opt->client_ca_file};
    for (int i = 0; i < N_FILES; i++)
        if (paths[i] != NULL && paths[i][0] != '\0' && (t->path[i] = strdup(paths[i])) == NULL) {
            svc_tls_free(t);
            return rd_errf(err, RD_INTERNAL, NULL, "out of memory");
        }
    if (t->path[F_CERT] == NULL || t->path[F_KEY] == NULL) {
        svc_tls_free(t);
        return rd_errf(err, RD_VALIDATION_FAILED, t->path[F_CERT] ? "--tls-key" : "--tls-cert",
                       "TLS needs both --tls-cert and --tls-key");
    }
    t->mode = opt->client_auth;
    for (int i = 0; i < N_FILES; i++)
        t->ids[i] = identify(t->path[i]);
    if (load(t, 1, &t->cur, err) != RD_OK) {
        svc_tls_free(t);
        return err->code;
    }
    t->next_check_us = mono_us() + TLS_CHECK_US;
    *out = t;
    return RD_OK;
}

void svc_tls_free(svc_tls *t)
{
    if (t == NULL)
        return;
    svc_tls_snap_release(t->cur);
    pthread_mutex_destroy(&t->mu);
    for (int i = 0; i < N_FILES; i++)
        free(t->path[i]);
    free(t);
}

svc_tls_client_auth svc_tls_client_auth_mode(const svc_tls *t)
{
    return t->mode;
}

/* Under t->mu: when the files changed since the last look, loads them and
 * makes the result current; logs a failure once per distinct problem. */
static void maybe_reload_locked(svc_tls *t)
{
    int64_t now = mono_us();
    if (now < t->next_check_us)
        return;
    t->next_check_us = now + TLS_CHECK_US;
    file_id ids[N_FILES];
    bool changed = false;
    for (int i = 0; i < N_FILES; i++) {
        ids[i] = identify(t->path[i]);
        changed |= !same_id(&ids[i], &t->ids[i]);
    }
    if (!changed)
        return;
    rd_err err;
    rd_err_clear(&err);
    svc_tls_snap *s = NULL;
    if (load(t, t->cur->generation + 1, &s, &err) != RD_OK) {
        /* keep looking: the next change may complete the set */
        if (strcmp(err.msg, t->last_problem) != 0) {
            snprintf(t->last_problem, sizeof t->last_problem, "%s", err.msg);
            svc_log_json(SVC_LOG_WARN,
                         "TLS files changed but cannot be used; still serving the "
                         "previous certificate",
                         json_pack("{s:s}", "error", err.msg));
        }
        return;
    }
    memcpy(t->ids, ids, sizeof ids);
    t->last_problem[0] = '\0';
    bool same = true;
    for (int i = 0; i < N_FILES; i++)
        same &= s->len[i] == t->cur->len[i] &&
                (s->len[i] == 0 || memcmp(s->pem[i], t->cur->pem[i], s->len[i]) == 0);
    if (same) { /* touched, not changed */
        snap_free(s);
        return;
    }
    svc_tls_snap_release(t->cur);
    t->cur = s;
    svc_log_json(SVC_LOG_INFO, "TLS certificate reloaded",
                 json_pack("{s:I}", "generation", (json_int_t)s->generation));
}

svc_tls_snap *svc_tls_current(svc_tls *t)
{
    pthread_mutex_lock(&t->mu);
    maybe_reload_locked(t);
    svc_tls_snap *s = t->cur;
    atomic_fetch_add(&s->refs, 1);
    pthread_mutex_unlock(&t->mu);
    return s;
}

void svc_tls_check_now(svc_tls *t)
{
    pthread_mutex_lock(&t->mu);
    t->next_check_us = 0;
    maybe_reload_locked(t);
    pthread_mutex_unlock(&t->mu);
}

void svc_tls_snap_release(svc_tls_snap *s)
{
    if (s != NULL && atomic_fetch_sub(&s->refs, 1) == 1)
        snap_free(s);
}

const char *svc_tls_snap_cert_pem(const svc_tls_snap *s)
{
    return s->pem[F_CERT];
}

const char *svc_tls_snap_key_pem(const svc_tls_snap *s)
{
    return s->pem[F_KEY];
}

gnutls_certificate_credentials_t svc_tls_snap_gnutls(const svc_tls_snap *s)
{
    return s->cred;
}

/* gRPC asks on every new handshake; the answer is "unchanged" unless a
 * newer version exists than the one it holds. */
static grpc_ssl_certificate_config_reload_status
grpc_fetch(void *user_data, grpc_ssl_server_certificate_config **config)
{
    svc_tls *t = user_data;
    svc_tls_snap *s = svc_tls_current(t);
    pthread_mutex_lock(&t->mu);
    bool fresh = s->generation != t->grpc_generation;
    if (fresh)
        t->grpc_generation = s->generation;
    pthread_mutex_unlock(&t->mu);
    grpc_ssl_certificate_config_reload_status st = GRPC_SSL_CERTIFICATE_CONFIG_RELOAD_UNCHANGED;
    if (fresh) {
        grpc_ssl_pem_key_cert_pair pair = {s->pem[F_KEY], s->pem[F_CERT]};
        /* gRPC insists on a CA list; without client certificates it is
         * never used (no CertificateRequest is sent), so the server's own
         * chain stands in */
        const char *roots = s->pem[F_CA] != NULL ? s->pem[F_CA] : s->pem[F_CERT];
        *config = grpc_ssl_server_certificate_config_create(roots, &pair, 1);
        st = *config != NULL ? GRPC_SSL_CERTIFICATE_CONFIG_RELOAD_NEW
                             : GRPC_SSL_CERTIFICATE_CONFIG_RELOAD_FAIL;
    }
    svc_tls_snap_release(s);
    return st;
}

grpc_server_credentials *svc_tls_grpc_credentials(svc_tls *t)
{
    grpc_ssl_client_certificate_request_type req =
        t->mode == SVC_TLS_CLIENT_REQUIRE
            ? GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY
        : t->mode == SVC_TLS_CLIENT_REQUEST ? GRPC_SSL_REQUEST_CLIENT_CERTIFICATE_AND_VERIFY
                                            : GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE;
    pthread_mutex_lock(&t->mu);
    t->grpc_generation = 0; /* a new fetcher starts with nothing */
    pthread_mutex_unlock(&t->mu);
    grpc_ssl_server_credentials_options *o =
        grpc_ssl_server_credentials_create_options_using_config_fetcher(req, grpc_fetch, t);
    if (o == NULL)
        return NULL;
    return grpc_ssl_server_credentials_create_with_options(o); /* takes o */
}

/* The URI and DNS subject alternative names of a DER certificate, one per
 * line, as many as fit in ids. */
static void peer_identities(const gnutls_datum_t *der, char *ids, size_t ids_len)
{
    size_t used = 0;
    ids[0] = '\0';
    gnutls_x509_crt_t crt;
    if (gnutls_x509_crt_init(&crt) < 0)
        return;
    if (gnutls_x509_crt_import(crt, der, GNUTLS_X509_FMT_DER) >= 0) {
        for (unsigned i = 0; i < 64; i++) {
            char buf[512];
            size_t len = sizeof buf - 1;
            int type = gnutls_x509_crt_get_subject_alt_name(crt, i, buf, &len, NULL);
            if (type == GNUTLS_E_REQUESTED_DATA_NOT_AVAILABLE)
                break;
            if ((type != GNUTLS_SAN_URI && type != GNUTLS_SAN_DNSNAME) || len == 0 ||
                memchr(buf, '\n', len) != NULL || used + len + 2 > ids_len)
                continue;
            memcpy(ids + used, buf, len);
            used += len;
            ids[used++] = '\n';
            ids[used] = '\0';
        }
    }
    gnutls_x509_crt_deinit(crt);
}

bool svc_tls_check_peer(gnutls_session_t session, svc_tls_client_auth mode, char *ids,
                        size_t ids_len)
{
    ids[0] = '\0';
    unsigned n = 0;
    const gnutls_datum_t *certs = gnutls_certificate_get_peers(session, &n);
    if (certs == NULL || n == 0)
        return mode != SVC_TLS_CLIENT_REQUIRE;
    unsigned status = 0;
    if (gnutls_certificate_verify_peers2(session, &status) < 0 || status != 0)
        return false;
    peer_identities(&certs[0], ids, ids_len);
    return true;
}

bool svc_tls_ids_contain(const char *ids, const char *id)
{
    size_t n = strlen(id);
    for (const char *line = ids; line != NULL && *line != '\0';) {
        const char *end = strchr(line, '\n');
        size_t len = end != NULL ? (size_t)(end - line) : strlen(line);
        if (len == n && memcmp(line, id, n) == 0)
            return true;
        line = end != NULL ? end + 1 : NULL;
    }
    return false;
}
