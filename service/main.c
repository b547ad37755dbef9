/* recordd: the server binary. Reads the configuration, opens the store,
 * serves gRPC until SIGTERM/SIGINT, then stops gracefully (DESIGN.md §9):
 * health NOT_SERVING, no new calls, in-flight calls get the grace period,
 * the store drains its queued writes and closes. A second signal exits at
 * once; the store is crash-safe by its WAL. */
#include <jansson.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <sodium.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "service/config.h"
#include "service/gw_http.h"
#include "service/svc_auth.h"
#include "service/svc.h"
#include "service/svc_claims.h"
#include "service/svc_log.h"
#include "service/svc_tls.h"
#include "service/svc_watch.h"
#include "store/store.h"

/* Set by the signal thread: the first stop signal received. */
static pthread_mutex_t stop_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t stop_cond = PTHREAD_COND_INITIALIZER;
static int stop_signal;
/* The TLS files, when the server has any: SIGHUP looks at them at once. */
static svc_tls *sighup_tls;
/* Set by main once stopped: the next SIGHUP (sent by main) ends the thread. */
static bool signal_thread_quit;

/* One JSON log line on stderr (service/svc_log.h): {"time","level","msg"}
 * plus the members of extra (consumed; may be NULL). */
static void log_json(const char *level, const char *msg, json_t *extra)
{
    svc_log_level l = SVC_LOG_ERROR;
    svc_log_parse_level(level, &l);
    svc_log_json(l, msg, extra);
}

static void stop_signals(sigset_t *set)
{
    sigemptyset(set);
    sigaddset(set, SIGTERM);
    sigaddset(set, SIGINT);
    sigaddset(set, SIGHUP);
}

/* Waits for signals for the life of the process. The first SIGTERM/SIGINT
 * asks main to stop; the next one exits at once with 128 + signal number.
 * SIGHUP re-reads the TLS files when they changed (they are also looked at,
 * at most once a second, when connections arrive); without TLS it is
 * logged and ignored. */
static void *signal_main(void *arg)
{
    (void)arg;
    sigset_t set;
    stop_signals(&set);
    for (;;) {
        int sig = 0;
        if (sigwait(&set, &sig) != 0)
            continue;
        if (sig == SIGHUP) {
            pthread_mutex_lock(&stop_mu);
            bool quit = signal_thread_quit;
            pthread_mutex_unlock(&stop_mu);
            if (quit)
                break;
            if (sighup_tls != NULL) {
                log_json("info", "SIGHUP: looking at the TLS files", NULL);
                svc_tls_check_now(sighup_tls);
            } else {
                log_json("info", "SIGHUP ignored", NULL);
            }
            continue;
        }
        pthread_mutex_lock(&stop_mu);
        int first = stop_signal == 0;
        if (first) {
            stop_signal = sig;
            pthread_cond_signal(&stop_cond);
        }
        pthread_mutex_unlock(&stop_mu);
        if (!first) {
            log_json("warn", "second signal: exiting at once", json_pack("{s:i}", "signal", sig));
            _exit(128 + sig);
        }
    }
    return NULL;
}

/* store_remote_fn: what another recordd process on the same database did
 * (PostgreSQL, store/pg_listen.c). */
static void on_remote(void *arg, store_remote_kind kind, const char *org, const char *model,
                      const char *id)
{
    if (kind == STORE_REMOTE_CLAIM_RELEASED)
        svc_claims_remote_released(org, model, id);
    else if (kind == STORE_REMOTE_CREDENTIALS)
        svc_auth_credentials_changed(arg);
}

int main(int argc, char **argv)
{
    svc_config cfg;
    rd_err err;
    store *db = NULL;
    svc_server *server = NULL;
    gw_http *gw = NULL;
    svc_auth *auth = NULL;
    svc_tls *tls = NULL;
    pthread_t sig_thread;
    bool sig_thread_started = false;
    int rc = 1;
    int64_t stop_start_us = 0;
    rd_err_clear(&err);
    /* Per-call arenas come and go at a high rate: keep freed memory in the
     * process instead of trimming it back to the kernel after every call. */
    mallopt(M_TRIM_THRESHOLD, 64 << 20);
    /* Setting one threshold turns glibc's adaptive mmap threshold off: keep
     * the large arena blocks of big calls (BulkMutate) in the heap too,
     * instead of an mmap + page faults + munmap (a TLB shootdown) per call. */
    mallopt(M_MMAP_THRESHOLD, 32 << 20);

    if (svc_config_load(&cfg, argc, argv, NULL, &err) != RD_OK) {
        fprintf(stderr, "recordd: %s\nTry 'recordd --help'.\n", err.msg);
        return 2;
    }
    for (int i = 1; i < argc; i++) /* the --db password, out of ps's sight */
        store_target_scrub(argv[i]);
    if (cfg.help) {
        svc_config_usage(stdout);
        return 0;
    }
    if (cfg.version) {
        printf("recordd %s\n", SVC_VERSION);
        return 0;
    }
    svc_log_level level = SVC_LOG_INFO;
    svc_log_parse_level(cfg.log_level, &level); /* checked by svc_config_load */
    svc_log_set_level(level);
    if (sodium_init() < 0) {
        log_json("error", "libsodium failed to initialise", NULL);
        return 1;
    }

    /* Before any thread exists (the store's writer, gRPC's), so that every
     * thread inherits the mask and only signal_main receives them. */
    sigset_t set;
    stop_signals(&set);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);

    if (cfg.tls_cert[0] != '\0') {
        svc_tls_options to = {.cert_file = cfg.tls_cert,
                              .key_file = cfg.tls_key,
                              .client_ca_file = cfg.tls_client_ca,
                              .client_auth = SVC_TLS_CLIENT_NONE};
        if (strcmp(cfg.tls_client_auth, "request") == 0)
            to.client_auth = SVC_TLS_CLIENT_REQUEST;
        else if (strcmp(cfg.tls_client_auth, "require") == 0 ||
                 (cfg.tls_client_auth[0] == '\0' && cfg.tls_client_ca[0] != '\0'))
            to.client_auth = SVC_TLS_CLIENT_REQUIRE;
        if (svc_tls_open(&to, &tls, &err) != RD_OK) {
            log_json("error", err.msg,
                     json_pack("{s:s,s:s}", "flag", err.field, "code", rd_code_str(err.code)));
            goto done;
        }
    } else if (!cfg.allow_plaintext) {
        const char *listens[2] = {cfg.grpc_listen, cfg.http_listen};
        for (int i = 0; i < 2; i++)
            if (strcmp(listens[i], "off") != 0 && !svc_config_is_loopback(listens[i]))
                log_json("warn",
                         "listening without TLS on a non-loopback address: API keys and tokens "
                         "cross the network in the clear. Give --tls-cert and --tls-key, or "
                         "--allow-plaintext true when a mesh terminates TLS",
                         json_pack("{s:s}", "listen", listens[i]));
    }

    char db_shown[sizeof cfg.db];
    store_target_redact(cfg.db, db_shown, sizeof db_shown);
    const char *db_file = store_target_file(cfg.db);
    if (db_file != NULL && svc_config_make_db_dir(db_file, &err) != RD_OK) {
        log_json("error", err.msg, json_pack("{s:s}", "db", db_shown));
        goto done;
    }
    store_options so = {.path = cfg.db,
                        .sync_normal = cfg.sync_normal,
                        .max_batch = 0,
                        .pool_size = cfg.db_pool_size > 0 ? cfg.db_pool_size : cfg.workers + 4};
    if (store_open(&so, &db, &err) != RD_OK) {
        log_json("error", "cannot open the database",
                 json_pack("{s:s,s:s,s:s}", "db", db_shown, "code", rd_code_str(err.code), "error",
                           err.msg));
        db = NULL;
        goto done;
    }
    store_set_idempotency_ttl(db, cfg.idempotency_ttl_s);
    store_set_changes_retention(db, cfg.changes_retention_s, cfg.changes_max_rows);

    svc_auth_options ao = {.pepper_file = cfg.pepper_file,
                           .signing_key = cfg.signing_key,
                           .trusted_keys = cfg.trusted_keys,
                           .issuer = cfg.token_issuer,
                           .audience = cfg.token_audience,
                           .rate_per_s = cfg.rate_limit,
                           .burst = cfg.rate_burst};
    if (svc_auth_open(&ao, db, &auth, &err) != RD_OK) {
        log_json("error", err.msg,
                 json_pack("{s:s,s:s}", "flag", err.field, "code", rd_code_str(err.code)));
        goto done;
    }
    store_on_remote(db, on_remote, auth);
    svc_ctx ctx = {.db = db,
                   .server = NULL,
                   .auth = &auth->cfg,
                   .ratelimit = auth->ratelimit,
                   .signer = auth->signer,
                   .max_bulk_ops = cfg.max_bulk_ops,
                   .max_watch_streams = cfg.max_watch_streams_per_principal,
                   .max_bulk_rows = cfg.max_bulk_rows,
                   .max_bulk_ms = cfg.max_bulk_ms};
    svc_options opt = {.listen = cfg.grpc_listen,
                       .workers = cfg.workers,
                       .max_message_bytes = cfg.max_message_bytes,
                       .max_concurrent_streams = cfg.max_concurrent_streams,
                       .max_inflight_calls = cfg.max_inflight_calls,
                       .tls = tls};
    int port = 0;
    if (svc_server_start(&opt, &ctx, &server, &port, &err) != RD_OK) {
        log_json("error", err.msg, json_pack("{s:s}", "grpc", cfg.grpc_listen));
        goto done;
    }
    char bound[300], http_bound[300] = "off";
    svc_config_bound_address(cfg.grpc_listen, port, bound, sizeof bound);
    if (strcmp(cfg.http_listen, "off") != 0) {
        gw_http_options go = {.listen = cfg.http_listen,
                              .threads = cfg.workers < 4 ? cfg.workers : 4,
                              .keepalive_s = cfg.sse_keepalive_s,
                              .max_message_bytes = cfg.max_message_bytes,
                              .max_connections = cfg.http_max_connections,
                              .max_connections_per_ip = cfg.http_max_connections_per_ip,
                              .tls = tls,
                              .cors_origins = cfg.cors_origins};
        int http_port = 0;
        if (gw_http_start(&go, &ctx, &gw, &http_port, &err) != RD_OK) {
            log_json("error", err.msg, json_pack("{s:s}", "http", cfg.http_listen));
            svc_server_stop(server, 0);
            goto done;
        }
        svc_config_bound_address(cfg.http_listen, http_port, http_bound, sizeof http_bound);
    }
    const char *tls_mode = tls == NULL                                               ? "off"
                           : svc_tls_client_auth_mode(tls) == SVC_TLS_CLIENT_REQUIRE ? "mutual"
                           : svc_tls_client_auth_mode(tls) == SVC_TLS_CLIENT_REQUEST ? "request"
                                                                                     : "on";
    log_json("info", "listening",
             json_pack("{s:s,s:s,s:s,s:s,s:i,s:s,s:s}", "grpc", bound, "http", http_bound, "tls",
                       tls_mode, "db", db_shown, "workers", cfg.workers, "sync",
                       cfg.sync_normal ? "normal" : "full", "version", SVC_VERSION));

    sighup_tls = tls;
    if (pthread_create(&sig_thread, NULL, signal_main, NULL) != 0) {
        log_json("error", "cannot start the signal thread", NULL);
        gw_http_close(gw);
        svc_server_stop(server, 0);
        gw_http_stop(gw);
        goto done;
    }
    sig_thread_started = true;

    pthread_mutex_lock(&stop_mu);
    while (stop_signal == 0)
        pthread_cond_wait(&stop_cond, &stop_mu);
    int sig = stop_signal;
    pthread_mutex_unlock(&stop_mu);
    stop_start_us = rd_now_us();

    log_json("info", "stopping",
             json_pack("{s:i,s:i,s:i}", "signal", sig, "grace_s", cfg.shutdown_grace_s, "inflight",
                       (int)svc_server_inflight(server)));
    svc_claims_shutdown(); /* waiting AcquireClaim calls end now, not after the grace */
    svc_watch_shutdown();  /* open WatchChanges streams end with UNAVAILABLE */
    gw_http_close(gw);     /* new HTTP requests get 503, as new gRPC calls get UNAVAILABLE */
    svc_server_stop(server, cfg.shutdown_grace_s * 1000);
    gw_http_stop(gw);
    rc = 0;
done:
    if (db != NULL)
        store_close(db);
    svc_auth_close(auth); /* after the workers (and their callbacks) stopped */
    if (sig_thread_started) {
        pthread_mutex_lock(&stop_mu);
        signal_thread_quit = true;
        pthread_mutex_unlock(&stop_mu);
        pthread_kill(sig_thread, SIGHUP);
        pthread_join(sig_thread, NULL);
    }
    svc_tls_free(tls); /* after both listeners and the signal thread stopped */
    if (rc == 0)
        log_json("info", "stopped",
                 json_pack("{s:I,s:i}", "stop_ms",
                           (json_int_t)((rd_now_us() - stop_start_us) / 1000), "exit_code", 0));
    return rc;
}
