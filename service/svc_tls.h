/* svc_tls: the server's certificate, key and client CA, read from PEM
 * files and re-read when the files change, for both listeners.
 *
 * A svc_tls watches the files; a svc_tls_snap is one version of them,
 * validated and immutable, reference counted so that a listener can keep
 * the version a connection started with while a newer one is served to
 * new connections. Rotation needs no restart: svc_tls_current checks the
 * files (at most once a second, by stat: device, inode, size and mtime of
 * what each path resolves to, so the symlink swap Kubernetes does for a
 * Secret volume is seen) and, when they changed and the new set is valid,
 * makes it current. A new set that is incomplete or invalid (half-written,
 * mismatched, expired) is logged once and the current one kept.
 *
 * Thread-safe: svc_tls_current and the snapshot functions may be called
 * from any thread. */
#ifndef SVC_TLS_H
#define SVC_TLS_H

#include <gnutls/gnutls.h>
#include <grpc/grpc_security.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/rd.h"

typedef enum svc_tls_client_auth {
    SVC_TLS_CLIENT_NONE,    /* no client certificate asked for */
    SVC_TLS_CLIENT_REQUEST, /* asked for; verified when one is sent */
    SVC_TLS_CLIENT_REQUIRE, /* a verified client certificate is required (mTLS) */
} svc_tls_client_auth;

typedef struct svc_tls_options {
    const char *cert_file;      /* PEM certificate chain, leaf first */
    const char *key_file;       /* PEM private key of the leaf */
    const char *client_ca_file; /* PEM CA certificates for client certificates, or NULL */
    svc_tls_client_auth client_auth;
} svc_tls_options;

typedef struct svc_tls svc_tls;
typedef struct svc_tls_snap svc_tls_snap;

/* Reads and validates the files: each must be readable PEM, the key must
 * belong to the certificate, the certificate must be valid now, and the
 * CA file (when given) must hold at least one certificate.
 * Errors: RD_VALIDATION_FAILED with err->field the flag of the file at
 * fault ("--tls-cert", "--tls-key", "--tls-client-ca") and err->msg naming
 * the file and the problem; RD_INTERNAL (out of memory). */
rd_code svc_tls_open(const svc_tls_options *opt, svc_tls **out, rd_err *err);
void svc_tls_free(svc_tls *t); /* after every snapshot was released */

svc_tls_client_auth svc_tls_client_auth_mode(const svc_tls *t);

/* The current version (reloaded first when the files changed), with a
 * reference the caller drops with svc_tls_snap_release. Never NULL. */
svc_tls_snap *svc_tls_current(svc_tls *t);
void svc_tls_snap_release(svc_tls_snap *s);

/* Looks at the files now, ignoring the once-a-second pace (SIGHUP), and
 * reloads them when they changed; the result is logged as for any
 * reload. */
void svc_tls_check_now(svc_tls *t);

/* NUL-terminated PEM text of the certificate chain and the key, valid
 * while the snapshot lives. */
const char *svc_tls_snap_cert_pem(const svc_tls_snap *s);
const char *svc_tls_snap_key_pem(const svc_tls_snap *s);
/* GnuTLS credentials holding the certificate, key and client CA, for the
 * HTTPS listener; valid while the snapshot lives. */
gnutls_certificate_credentials_t svc_tls_snap_gnutls(const svc_tls_snap *s);

/* gRPC server credentials whose certificate-config fetcher serves the
 * current version to each new handshake (open connections keep theirs).
 * t must outlive the server. NULL on failure. */
grpc_server_credentials *svc_tls_grpc_credentials(svc_tls *t);

/* The GnuTLS priority string of the HTTPS listener: TLS 1.2 and 1.3 only,
 * AEAD ciphers with forward secrecy. */
extern const char svc_tls_gnutls_priorities[];

/* Checks the HTTPS client certificate of session against the mode: with
 * a certificate, it must verify against the snapshot's CA; without one,
 * only SVC_TLS_CLIENT_REQUIRE refuses. On success, when verified, the
 * certificate's URI and DNS subject alternative names go to ids, one per
 * line (those that fit; empty when none). Returns false when the
 * connection must be refused. */
bool svc_tls_check_peer(gnutls_session_t session, svc_tls_client_auth mode, char *ids,
                        size_t ids_len);

/* Whether the line list ids (as svc_tls_check_peer writes it) holds id. */
bool svc_tls_ids_contain(const char *ids, const char *id);

#endif
