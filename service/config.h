/* svc_config: the settings of the recordd binary. Every flag has a
 * RECORDD_* environment twin; a flag wins over the environment, the
 * environment over the default (DESIGN.md §9). */
#ifndef SVC_CONFIG_H
#define SVC_CONFIG_H

#include <stdbool.h>
#include <stdio.h>

#include "common/rd.h"

#define SVC_VERSION "0.1.0"
#define SVC_CORS_ORIGINS_MAX 64 /* entries of --cors-origins */
#define SVC_ORIGIN_MAX 253      /* bytes of one origin (longer Origin headers never match) */

typedef struct svc_config {
    char grpc_listen[256];               /* host:port; port 0 picks a free one */
    char db[1024];                       /* the database: a SQLite path or a PostgreSQL URI */
    int workers;                         /* worker threads, 1..1024 */
    int db_pool_size;                    /* PostgreSQL read connections; 0 = workers + 4 */
    int max_message_bytes;               /* gRPC receive and send limit */
    bool sync_normal;                    /* synchronous=NORMAL instead of FULL */
    int shutdown_grace_s;                /* seconds in-flight calls get on SIGTERM */
    int idempotency_ttl_s;               /* seconds a stored idempotent outcome is replayed */
    int changes_retention_s;             /* change log rows are kept this long (0 = forever) */
    int changes_max_rows;                /* and at most this many (0 = no cap) */
    char pepper_file[1024];              /* API-key hash secret (32 bytes, hex or base64) */
    char signing_key[1024];              /* k4.secret file: signs MintToken tokens */
    char trusted_keys[1024];             /* k4.public file or directory: token keyring */
    char token_issuer[256];              /* iss of minted and accepted tokens */
    char token_audience[256];            /* aud of minted and accepted tokens */
    int rate_limit;                      /* requests per second per principal; 0 = off */
    int rate_burst;                      /* bucket size; 0 = the rate */
    char http_listen[256];               /* HTTP/JSON gateway host:port, or "off" */
    int sse_keepalive_s;                 /* seconds between keep-alive comments on SSE streams */
    int max_bulk_ops;                    /* BulkMutate: most operations per call, 1..1000 */
    int max_bulk_rows;                   /* BulkMutate: records one call may touch */
    int max_bulk_ms;                     /* BulkMutate: longest hold on the writer, ms */
    int max_concurrent_streams;          /* gRPC: HTTP/2 streams per connection */
    int max_inflight_calls;              /* gRPC calls at once */
    int max_watch_streams_per_principal; /* WatchChanges streams one principal may hold */
    int http_max_connections;            /* HTTP gateway: open connections in all */
    int http_max_connections_per_ip;     /* HTTP gateway: open connections per client address */
    char tls_cert[1024];                 /* PEM certificate chain: TLS on both listeners */
    char tls_key[1024];                  /* its PEM private key */
    char tls_client_ca[1024];            /* PEM CAs that sign client certificates */
    char tls_client_auth[16];            /* none, request or require ("" = by the CA) */
    bool allow_plaintext;                /* no warning for plaintext on other addresses */
    char cors_origins[2048]; /* HTTP gateway: origins browsers may call from ("" = off) */
    char log_level[16];      /* debug, info, warn, error or off */
    bool help;               /* --help given: print usage, run nothing */
    bool version;            /* --version given */
} svc_config;

/* Looks an environment variable up; NULL when unset. */
typedef const char *(*svc_getenv_fn)(const char *name);

/* Fills *cfg from the defaults, then the environment (env; NULL = getenv;
 * empty values count as unset), then argv (--flag value or --flag=value).
 * On a bad value or an unknown flag returns RD_VALIDATION_FAILED with
 * err->field naming the flag or variable and err->msg a sentence for
 * humans; *cfg is then unspecified. */
rd_code svc_config_load(svc_config *cfg, int argc, char **argv, svc_getenv_fn env, rd_err *err);

/* Checks one --cors-origins entry (n bytes at s): an origin as a browser
 * sends it, scheme://host[:port] with scheme http or https, a lower-case
 * host (DNS name, IPv4 or [IPv6]) and no default port, path, query,
 * user info or wildcard. False with a reason in why. */
bool svc_config_origin_ok(const char *s, size_t n, char *why, size_t why_len);

/* Writes the --help text. */
void svc_config_usage(FILE *out);

/* Creates the directory that will hold the database file (and its
 * parents) when missing. RD_UNAVAILABLE with the reason on failure. */
rd_code svc_config_make_db_dir(const char *db_path, rd_err *err);

/* The address actually listened on: listen with its port replaced by
 * port, into buf. */
/* True when host:port names a loopback host (127.0.0.0/8, ::1, localhost). */
bool svc_config_is_loopback(const char *listen);

void svc_config_bound_address(const char *listen, int port, char *buf, size_t len);

#endif
