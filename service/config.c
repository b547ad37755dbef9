/* svc_config: parses the recordd binary's flags and their RECORDD_*
 * environment twins from one table, so a flag, its variable, its default
 * and its help line cannot drift apart. */
#include "service/config.h"

#include "service/svc_log.h"

#include <errno.h>
#include <limits.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

typedef enum opt_type { OPT_STRING, OPT_INT, OPT_SYNC, OPT_BOOL } opt_type;

typedef struct opt {
    const char *flag; /* without the leading "--" */
    const char *env;
    opt_type type;
    size_t offset; /* into svc_config */
    size_t size;   /* OPT_STRING: buffer size */
    long min, max; /* OPT_INT */
    const char *help;
} opt;

#define STR(field) OPT_STRING, offsetof(svc_config, field), sizeof(((svc_config *)0)->field), 0, 0
#define INT(field, lo, hi) OPT_INT, offsetof(svc_config, field), 0, lo, hi

static const opt opts[] = {
    {"grpc-listen", "RECORDD_GRPC_LISTEN", STR(grpc_listen),
     "gRPC listen address host:port (port 0 picks a free port) [127.0.0.1:50051]"},
    {"db", "RECORDD_DB", STR(db),
     "the database: a SQLite file (PATH or sqlite:PATH; its directory is created when "
     "missing) or PostgreSQL (postgres://USER@HOST:PORT/DB, a libpq URI; give the password "
     "in PGPASSFILE or PGPASSWORD, not in the URI) [./var/recordd.db]"},
    {"workers", "RECORDD_WORKERS", INT(workers, 1, 1024),
     "worker threads running handlers [number of CPUs, at least 2]"},
    {"db-pool-size", "RECORDD_DB_POOL_SIZE", INT(db_pool_size, 0, 10000),
     "PostgreSQL: the most read connections open at once; calls wait up to 5 s for a free "
     "one (besides: one writer connection, one for the change feed) [workers + 4]"},
    {"max-message-bytes", "RECORDD_MAX_MESSAGE_BYTES", INT(max_message_bytes, 1024, 1 << 30),
     "largest gRPC message received or sent, in bytes [4194304]"},
    {"sync", "RECORDD_SYNC", OPT_SYNC, offsetof(svc_config, sync_normal), 0, 0, 0,
     "durability: full (fsync every commit) or normal [full]"},
    {"shutdown-grace", "RECORDD_SHUTDOWN_GRACE", INT(shutdown_grace_s, 0, 3600),
     "seconds in-flight calls get to finish on SIGTERM/SIGINT [10]"},
    {"idempotency-ttl", "RECORDD_IDEMPOTENCY_TTL", INT(idempotency_ttl_s, 1, 30 * 86400),
     "seconds an idempotency key's stored outcome is replayed; then the key is free [86400]"},
    {"changes-retention", "RECORDD_CHANGES_RETENTION", INT(changes_retention_s, 0, 1 << 30),
     "seconds the change log (WatchChanges) keeps a change; 0 keeps it forever [604800]"},
    {"changes-max-rows", "RECORDD_CHANGES_MAX_ROWS", INT(changes_max_rows, 0, 2000000000),
     "most changes the change log keeps (the oldest go first); 0 = no cap [10000000]"},
    {"pepper-file", "RECORDD_PEPPER_FILE", STR(pepper_file),
     "secret for API-key hashes: 32 bytes as hex or base64 (`recordctl init`) [./var/pepper]"},
    {"signing-key", "RECORDD_SIGNING_KEY", STR(signing_key),
     "k4.secret file the server signs MintToken tokens with [./var/signing.key]"},
    {"trusted-keys", "RECORDD_TRUSTED_KEYS", STR(trusted_keys),
     "k4.public file or directory of them: keys tokens may be signed with; the signing key's "
     "own public key is always trusted [./var/trusted-keys]"},
    {"token-issuer", "RECORDD_TOKEN_ISSUER", STR(token_issuer),
     "iss claim minted tokens carry and accepted tokens must carry [recordd]"},
    {"token-audience", "RECORDD_TOKEN_AUDIENCE", STR(token_audience),
     "aud claim minted tokens carry and accepted tokens must carry [recordd]"},
    {"rate-limit", "RECORDD_RATE_LIMIT", INT(rate_limit, 0, 1000000),
     "requests per second per principal (an API key and its tokens share one); 0 = off [0]"},
    {"rate-burst", "RECORDD_RATE_BURST", INT(rate_burst, 0, 1000000),
     "requests a principal may make at once before --rate-limit applies; 0 = the rate [0]"},
    {"http-listen", "RECORDD_HTTP_LISTEN", STR(http_listen),
     "HTTP/JSON gateway listen address host:port (port 0 picks a free port); 'off' or an empty "
     "--http-listen disables it [127.0.0.1:8080]"},
    {"sse-keepalive", "RECORDD_SSE_KEEPALIVE", INT(sse_keepalive_s, 1, 3600),
     "seconds between keep-alive comments on Server-Sent Events streams [15]"},
    {"max-bulk-ops", "RECORDD_MAX_BULK_OPS", INT(max_bulk_ops, 1, 1000),
     "most operations one BulkMutate call may carry, at most 1000 [100]"},
    {"max-watch-streams-per-principal", "RECORDD_MAX_WATCH_STREAMS_PER_PRINCIPAL",
     INT(max_watch_streams_per_principal, 1, 100000),
     "WatchChanges streams (gRPC and SSE) one principal may have open at once [16]"},
    {"max-concurrent-streams", "RECORDD_MAX_CONCURRENT_STREAMS",
     INT(max_concurrent_streams, 1, 65536),
     "gRPC: most HTTP/2 streams (calls) one connection may have open at once [100]"},
    {"max-inflight-calls", "RECORDD_MAX_INFLIGHT_CALLS", INT(max_inflight_calls, 1, 1000000),
     "calls (gRPC and HTTP) the server holds at once (streams included, health checks "
     "excepted); more are refused RESOURCE_EXHAUSTED / 429 at once [4096]"},
    {"http-max-connections", "RECORDD_HTTP_MAX_CONNECTIONS", INT(http_max_connections, 1, 65536),
     "HTTP gateway: most connections open at once; more are closed on accept [1024]"},
    {"http-max-connections-per-ip", "RECORDD_HTTP_MAX_CONNECTIONS_PER_IP",
     INT(http_max_connections_per_ip, 1, 65536),
     "HTTP gateway: most connections open at once from one client address [128]"},
    {"max-bulk-rows", "RECORDD_MAX_BULK_ROWS", INT(max_bulk_rows, 1, 1000000),
     "most records one BulkMutate call (a dry run too) may touch; beyond it the call is refused "
     "whole (too_many_rows) [10000]"},
    {"max-bulk-ms", "RECORDD_MAX_BULK_MS", INT(max_bulk_ms, 1, 600000),
     "longest one BulkMutate call may hold the writer, in ms; beyond it the call is undone "
     "(deadline_exceeded) [2000]"},
    {"tls-cert", "RECORDD_TLS_CERT", STR(tls_cert),
     "PEM certificate chain (leaf first): serve TLS on the gRPC and the HTTP listener; the "
     "files are re-read when they change, no restart needed [none: plaintext]"},
    {"tls-key", "RECORDD_TLS_KEY", STR(tls_key), "PEM private key of --tls-cert"},
    {"tls-client-ca", "RECORDD_TLS_CLIENT_CA", STR(tls_client_ca),
     "PEM CA certificates that sign client certificates (mutual TLS) [none]"},
    {"tls-client-auth", "RECORDD_TLS_CLIENT_AUTH", STR(tls_client_auth),
     "client certificates: none, request (verified when sent) or require [require with "
     "--tls-client-ca, none without]"},
    {"allow-plaintext", "RECORDD_ALLOW_PLAINTEXT", OPT_BOOL, offsetof(svc_config, allow_plaintext),
     0, 0, 0,
     "true: no warning for plaintext on a non-loopback address (a mesh terminates TLS) "
     "[false]"},
    {"cors-origins", "RECORDD_CORS_ORIGINS", STR(cors_origins),
     "HTTP gateway: comma-separated origins (scheme://host[:port], exactly as browsers send "
     "them) whose pages may call the API; CORS headers go to these only [none: CORS off]"},
    {"log-level", "RECORDD_LOG_LEVEL", STR(log_level),
     "JSON log lines on stderr at or above: debug, info (one line per request), warn, error "
     "or off [info]"},
};

enum { N_OPTS = sizeof opts / sizeof opts[0] };

static void defaults(svc_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    snprintf(cfg->grpc_listen, sizeof cfg->grpc_listen, "127.0.0.1:50051");
    snprintf(cfg->db, sizeof cfg->db, "./var/recordd.db");
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    cfg->workers = cpus < 2 ? 2 : cpus > 1024 ? 1024 : (int)cpus;
    cfg->max_message_bytes = 4 << 20;
    cfg->sync_normal = false;
    cfg->shutdown_grace_s = 10;
    cfg->idempotency_ttl_s = 86400;
    cfg->changes_retention_s = 604800;
    cfg->changes_max_rows = 10000000;
    snprintf(cfg->pepper_file, sizeof cfg->pepper_file, "./var/pepper");
    snprintf(cfg->signing_key, sizeof cfg->signing_key, "./var/signing.key");
    snprintf(cfg->trusted_keys, sizeof cfg->trusted_keys, "./var/trusted-keys");
    snprintf(cfg->token_issuer, sizeof cfg->token_issuer, "recordd");
    snprintf(cfg->token_audience, sizeof cfg->token_audience, "recordd");
    snprintf(cfg->http_listen, sizeof cfg->http_listen, "127.0.0.1:8080");
    cfg->sse_keepalive_s = 15;
    cfg->max_bulk_ops = 100;
    cfg->max_bulk_rows = 10000;
    cfg->max_bulk_ms = 2000;
    cfg->max_concurrent_streams = 100;
    cfg->max_watch_streams_per_principal = 16;
    cfg->max_inflight_calls = 4096;
    cfg->http_max_connections = 1024;
    cfg->http_max_connections_per_ip = 128;
    snprintf(cfg->log_level, sizeof cfg->log_level, "info");
}

/* Checks host:port with a port in 0..65535 and a non-empty host. */
static bool listen_ok(const char *v)
{
    const char *colon = strrchr(v, ':');
    if (colon == NULL || colon == v || colon[1] == '\0')
        return false;
    char *end;
    errno = 0;
    long port = strtol(colon + 1, &end, 10);
    return errno == 0 && *end == '\0' && colon[1] >= '0' && colon[1] <= '9' && port >= 0 &&
           port <= 65535;
}

bool svc_config_origin_ok(const char *s, size_t n, char *why, size_t why_len)
{
    size_t scheme = n >= 7 && memcmp(s, "http://", 7) == 0    ? 7
                    : n >= 8 && memcmp(s, "https://", 8) == 0 ? 8
                                                              : 0;
    if (n > SVC_ORIGIN_MAX) {
        snprintf(why, why_len, "longer than %d characters", SVC_ORIGIN_MAX);
        return false;
    }
    if (scheme == 0) {
        snprintf(why, why_len, "an origin starts with http:// or https:// (lower case)%s",
                 n == 1 && s[0] == '*' ? "; the wildcard * is not accepted, list the origins" : "");
        return false;
    }
    const char *h = s + scheme, *end = s + n;
    const char *p = h;
    if (p < end && *p == '[') { /* an IPv6 literal */
        while (p < end && *p != ']') {
            bool ok = (*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f') || *p == ':' ||
                      *p == '.' || (p == h && *p == '[');
            if (!ok) {
                snprintf(why, why_len, "a bracketed IPv6 host holds lower-case hex, ':' and '.'");
                return false;
            }
            p++;
        }
        if (p == end || p - h < 3) {
            snprintf(why, why_len, "an IPv6 host is written [address]");
            return false;
        }
        p++;
    } else {
        while (p < end &&
               ((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '-' || *p == '.'))
            p++;
        if (p == h || h[0] == '.' || h[0] == '-' || p[-1] == '.' || p[-1] == '-') {
            snprintf(why, why_len, "the host must be a lower-case DNS name or an IP address");
            return false;
        }
    }
    if (p < end && *p == ':') {
        const char *d = ++p;
        long port = 0;
        while (p < end && *p >= '0' && *p <= '9' && p - d < 6)
            port = port * 10 + (*p++ - '0');
        if (p == d || d[0] == '0' || port > 65535 || p != end) {
            snprintf(why, why_len,
                     "the port must be a number from 1 to 65535, with nothing after it");
            return false;
        }
        if (port == (scheme == 7 ? 80 : 443)) {
            snprintf(why, why_len, "browsers leave the default port out of Origin: drop ':%ld'",
                     port);
            return false;
        }
    }
    if (p != end) {
        snprintf(why, why_len,
                 "an origin is scheme://host[:port] only (lower case, no path, no '/' at the "
                 "end, no user info)");
        return false;
    }
    return true;
}

/* Checks a --cors-origins list: comma-separated origins, spaces allowed
 * around the commas, none empty. */
static rd_code cors_origins_ok(const char *v, const char *source, rd_err *err)
{
    size_t count = 0;
    for (const char *p = v;; p++) {
        const char *e = p + strcspn(p, ",");
        const char *b = p;
        while (b < e && (*b == ' ' || *b == '\t'))
            b++;
        const char *t = e;
        while (t > b && (t[-1] == ' ' || t[-1] == '\t'))
            t--;
        char why[160];
        if (t == b)
            return rd_errf(err, RD_VALIDATION_FAILED, source,
                           "%s: an empty entry in the origin list", source);
        if (!svc_config_origin_ok(b, (size_t)(t - b), why, sizeof why))
            return rd_errf(err, RD_VALIDATION_FAILED, source, "%s: '%.*s' is not an origin: %s",
                           source, (int)(t - b > 200 ? 200 : t - b), b, why);
        if (++count > SVC_CORS_ORIGINS_MAX)
            return rd_errf(err, RD_VALIDATION_FAILED, source, "%s: more than %d origins", source,
                           SVC_CORS_ORIGINS_MAX);
        if (*e == '\0')
            return RD_OK;
        p = e;
    }
}

/* Stores value into the option's field. source names the flag ("--db") or
 * the variable ("RECORDD_DB") in errors. */
static rd_code set_value(svc_config *cfg, const opt *o, const char *value, const char *source,
                         rd_err *err)
{
    char *field = (char *)cfg + o->offset;
    switch (o->type) {
    case OPT_STRING:
        if (strcmp(o->flag, "http-listen") == 0 &&
            (value[0] == '\0' || strcmp(value, "off") == 0)) {
            snprintf(field, o->size, "off");
            return RD_OK;
        }
        if (strcmp(o->flag, "cors-origins") == 0 && value[0] == '\0') {
            field[0] = '\0'; /* CORS off */
            return RD_OK;
        }
        if (value[0] == '\0')
            return rd_errf(err, RD_VALIDATION_FAILED, source, "%s: must not be empty", source);
        if (strlen(value) >= o->size)
            return rd_errf(err, RD_VALIDATION_FAILED, source, "%s: longer than %zu characters",
                           source, o->size - 1);
        if ((strcmp(o->flag, "grpc-listen") == 0 || strcmp(o->flag, "http-listen") == 0) &&
            !listen_ok(value))
            return rd_errf(err, RD_VALIDATION_FAILED, source,
                           "%s: expected host:port with a port from 0 to 65535, got '%.100s'",
                           source, value);
        if (strcmp(o->flag, "tls-client-auth") == 0 && strcmp(value, "none") != 0 &&
            strcmp(value, "request") != 0 && strcmp(value, "require") != 0)
            return rd_errf(err, RD_VALIDATION_FAILED, source,
                           "%s: expected none, request or require, got '%.100s'", source, value);
        if (strcmp(o->flag, "cors-origins") == 0 && cors_origins_ok(value, source, err) != RD_OK)
            return err->code;
        svc_log_level level;
        if (strcmp(o->flag, "log-level") == 0 && !svc_log_parse_level(value, &level))
            return rd_errf(err, RD_VALIDATION_FAILED, source,
                           "%s: expected debug, info, warn, error or off, got '%.100s'", source,
                           value);
        memcpy(field, value, strlen(value) + 1);
        return RD_OK;
    case OPT_INT: {
        char *end;
        errno = 0;
        long v = strtol(value, &end, 10);
        if (errno != 0 || end == value || *end != '\0' || v < o->min || v > o->max)
            return rd_errf(err, RD_VALIDATION_FAILED, source,
                           "%s: expected an integer from %ld to %ld, got '%.100s'", source, o->min,
                           o->max, value);
        *(int *)(void *)field = (int)v;
        return RD_OK;
    }
    case OPT_SYNC:
        if (strcasecmp(value, "full") == 0)
            *(bool *)(void *)field = false;
        else if (strcasecmp(value, "normal") == 0)
            *(bool *)(void *)field = true;
        else
            return rd_errf(err, RD_VALIDATION_FAILED, source,
                           "%s: expected 'full' or 'normal', got '%.100s'", source, value);
        return RD_OK;
    case OPT_BOOL:
        if (strcasecmp(value, "true") == 0 || strcmp(value, "1") == 0)
            *(bool *)(void *)field = true;
        else if (strcasecmp(value, "false") == 0 || strcmp(value, "0") == 0)
            *(bool *)(void *)field = false;
        else
            return rd_errf(err, RD_VALIDATION_FAILED, source,
                           "%s: expected true or false, got '%.100s'", source, value);
        return RD_OK;
    }
    return rd_errf(err, RD_INTERNAL, source, "%s: unknown option type", source);
}

static const opt *find_flag(const char *name, size_t len)
{
    for (size_t i = 0; i < N_OPTS; i++)
        if (strlen(opts[i].flag) == len && memcmp(opts[i].flag, name, len) == 0)
            return &opts[i];
    return NULL;
}

static const char *real_getenv(const char *name)
{
    return getenv(name);
}

/* The flags that only make sense together: TLS files and the client-
 * certificate mode. */
static rd_code check_tls(const svc_config *cfg, rd_err *err)
{
    bool tls = cfg->tls_cert[0] != '\0' || cfg->tls_key[0] != '\0';
    if (tls && (cfg->tls_cert[0] == '\0' || cfg->tls_key[0] == '\0'))
        return rd_errf(err, RD_VALIDATION_FAILED, cfg->tls_cert[0] ? "--tls-key" : "--tls-cert",
                       "TLS needs both --tls-cert and --tls-key");
    if (!tls && (cfg->tls_client_ca[0] != '\0' || cfg->tls_client_auth[0] != '\0'))
        return rd_errf(err, RD_VALIDATION_FAILED,
                       cfg->tls_client_ca[0] ? "--tls-client-ca" : "--tls-client-auth",
                       "client certificates need TLS: give --tls-cert and --tls-key too");
    bool wants = strcmp(cfg->tls_client_auth, "request") == 0 ||
                 strcmp(cfg->tls_client_auth, "require") == 0;
    if (wants && cfg->tls_client_ca[0] == '\0')
        return rd_errf(err, RD_VALIDATION_FAILED, "--tls-client-auth",
                       "--tls-client-auth %s needs --tls-client-ca to verify client "
                       "certificates with",
                       cfg->tls_client_auth);
    if (strcmp(cfg->tls_client_auth, "none") == 0 && cfg->tls_client_ca[0] != '\0')
        return rd_errf(err, RD_VALIDATION_FAILED, "--tls-client-ca",
                       "--tls-client-ca is unused with --tls-client-auth none");
    return RD_OK;
}

rd_code svc_config_load(svc_config *cfg, int argc, char **argv, svc_getenv_fn env, rd_err *err)
{
    defaults(cfg);
    if (env == NULL)
        env = real_getenv;
    for (size_t i = 0; i < N_OPTS; i++) {
        const char *v = env(opts[i].env);
        if (v != NULL && v[0] != '\0' && set_value(cfg, &opts[i], v, opts[i].env, err) != RD_OK)
            return err->code;
    }
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            cfg->help = true;
            continue;
        }
        if (strcmp(arg, "--version") == 0 || strcmp(arg, "-V") == 0) {
            cfg->version = true;
            continue;
        }
        if (strncmp(arg, "--", 2) != 0)
            return rd_errf(err, RD_VALIDATION_FAILED, arg, "unexpected argument '%.100s'", arg);
        const char *name = arg + 2;
        const char *eq = strchr(name, '=');
        size_t name_len = eq ? (size_t)(eq - name) : strlen(name);
        const opt *o = find_flag(name, name_len);
        if (o == NULL)
            return rd_errf(err, RD_VALIDATION_FAILED, arg, "unknown flag '--%.*s'",
                           (int)(name_len > 100 ? 100 : name_len), name);
        const char *value = eq ? eq + 1 : NULL;
        if (value == NULL) {
            if (i + 1 >= argc)
                return rd_errf(err, RD_VALIDATION_FAILED, arg, "--%s: missing value", o->flag);
            value = argv[++i];
        }
        char source[64];
        snprintf(source, sizeof source, "--%s", o->flag);
        if (set_value(cfg, o, value, source, err) != RD_OK)
            return err->code;
    }
    return cfg->help || cfg->version ? RD_OK : check_tls(cfg, err);
}

void svc_config_usage(FILE *out)
{
    fprintf(out, "Usage: recordd [flags]\n\n"
                 "recordd serves schema-driven records over gRPC (with reflection and health).\n\n"
                 "Flags (each has an environment twin; a flag wins over it):\n");
    for (size_t i = 0; i < N_OPTS; i++)
        fprintf(out, "  --%s VALUE  (env %s)\n        %s\n", opts[i].flag, opts[i].env,
                opts[i].help);
    fprintf(out, "  --help, -h\n        print this help and exit\n");
    fprintf(out, "  --version, -V\n        print the version and exit\n");
    fprintf(out, "\nSIGTERM or SIGINT stops serving gracefully; a second one exits at once.\n"
                 "Exit status: 0 after a clean stop, 1 when the server cannot start, 2 for bad "
                 "flags.\n");
}

rd_code svc_config_make_db_dir(const char *db_path, rd_err *err)
{
    char dir[sizeof((svc_config *)0)->db];
    if (snprintf(dir, sizeof dir, "%s", db_path) >= (int)sizeof dir)
        return rd_errf(err, RD_UNAVAILABLE, "db", "database path is too long");
    char *slash = strrchr(dir, '/');
    if (slash == NULL)
        return RD_OK; /* the current directory */
    *slash = '\0';
    /* create each component in turn, as mkdir -p does */
    for (char *p = dir + 1; *dir != '\0'; p++) {
        char saved = *p;
        if (saved != '/' && saved != '\0')
            continue;
        *p = '\0';
        struct stat st;
        if (stat(dir, &st) != 0) {
            if (mkdir(dir, 0750) != 0 && errno != EEXIST)
                return rd_errf(err, RD_UNAVAILABLE, "db", "cannot create directory %.200s: %s", dir,
                               strerror(errno));
        } else if (!S_ISDIR(st.st_mode)) {
            return rd_errf(err, RD_UNAVAILABLE, "db", "%.200s is not a directory", dir);
        }
        *p = saved;
        if (saved == '\0')
            break;
    }
    return RD_OK;
}

bool svc_config_is_loopback(const char *listen)
{
    const char *colon = strrchr(listen, ':');
    size_t n = colon ? (size_t)(colon - listen) : strlen(listen);
    char host[256];
    if (n >= sizeof host)
        return false;
    memcpy(host, listen, n);
    host[n] = '\0';
    if (host[0] == '[' && n >= 2 && host[n - 1] == ']') {
        memmove(host, host + 1, n - 2);
        host[n - 2] = '\0';
    }
    return strncmp(host, "127.", 4) == 0 || strcmp(host, "::1") == 0 ||
           strcmp(host, "localhost") == 0;
}

void svc_config_bound_address(const char *listen, int port, char *buf, size_t len)
{
    const char *colon = strrchr(listen, ':');
    int host_len = colon ? (int)(colon - listen) : (int)strlen(listen);
    snprintf(buf, len, "%.*s:%d", host_len, listen, port);
}
