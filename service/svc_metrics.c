/* svc_metrics: fixed arrays of relaxed atomic counters, recorded by the
 * call core (svc_call.c, both transports) and the HTTP gateway, rendered as
 * Prometheus text for GET /metrics. Nothing here allocates on the
 * recording path; rendering builds one malloc'd buffer. */
#include "service/svc_metrics.h"

#include <dirent.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "service/svc.h"
#include "service/config.h"
#include "service/svc_auth.h"

/* Latency bucket upper bounds in µs (Prometheus le in seconds). */
static const int64_t BOUNDS_US[] = {250,   500,    1000,   2500,   5000,    10000,   25000,
                                    50000, 100000, 250000, 500000, 1000000, 2500000, 10000000};
enum { N_BOUNDS = sizeof BOUNDS_US / sizeof BOUNDS_US[0], N_SLOTS = N_BOUNDS + 1 };
enum { N_TRANSPORTS = 2, N_GRPC_CODES = 17 };

/* HTTP statuses with their own counter; anything else counts as "other". */
static const int HTTP_STATUSES[] = {200, 201, 204, 207, 400, 401, 403, 404, 405, 406, 409,
                                    410, 412, 413, 415, 422, 429, 499, 500, 501, 503, 504};
enum {
    N_STATUSES = sizeof HTTP_STATUSES / sizeof HTTP_STATUSES[0],
    N_STATUS_SLOTS = N_STATUSES + 1
};

typedef struct histo {
    _Atomic uint64_t slots[N_SLOTS];
    _Atomic uint64_t sum_us;
} histo;

static struct {
    _Atomic uint64_t calls[SVC_METRICS_MAX_METHODS][N_TRANSPORTS][N_GRPC_CODES];
    histo call_lat[SVC_METRICS_MAX_METHODS][N_TRANSPORTS];
    _Atomic int64_t streams[N_TRANSPORTS];
    /* routes + 1: the last row is "other" */
    _Atomic uint64_t http[SVC_METRICS_MAX_ROUTES + 1][N_STATUS_SLOTS];
    histo http_lat[SVC_METRICS_MAX_ROUTES + 1];
    const char *const *route_names;
    size_t n_routes;
    _Atomic uint64_t refused[SVC_N_REFUSALS];
    _Atomic uint64_t cq_fast_path;
} M;

static const char *const REFUSAL_NAMES[SVC_N_REFUSALS] = {"no_message", "inflight_limit",
                                                          "queue_full"};

void svc_metrics_cq_fast_path(void)
{
    atomic_fetch_add_explicit(&M.cq_fast_path, 1, memory_order_relaxed);
}

void svc_metrics_refused(svc_refusal why)
{
    if ((unsigned)why < SVC_N_REFUSALS)
        atomic_fetch_add_explicit(&M.refused[why], 1, memory_order_relaxed);
}

static const char *const GRPC_CODE_NAMES[N_GRPC_CODES] = {
    "OK",        "CANCELLED",      "UNKNOWN",           "INVALID_ARGUMENT",   "DEADLINE_EXCEEDED",
    "NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
    "ABORTED",   "OUT_OF_RANGE",   "UNIMPLEMENTED",     "INTERNAL",           "UNAVAILABLE",
    "DATA_LOSS", "UNAUTHENTICATED"};

static void histo_add(histo *h, int64_t us)
{
    if (us < 0)
        us = 0;
    size_t i = 0;
    while (i < N_BOUNDS && us > BOUNDS_US[i])
        i++;
    atomic_fetch_add_explicit(&h->slots[i], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->sum_us, (uint64_t)us, memory_order_relaxed);
}

void svc_metrics_call(size_t method, svc_transport_kind t, int grpc_code, int64_t dur_us)
{
    if (method >= SVC_METRICS_MAX_METHODS || (unsigned)t >= N_TRANSPORTS)
        return;
    if (grpc_code < 0 || grpc_code >= N_GRPC_CODES)
        grpc_code = 2; /* UNKNOWN */
    atomic_fetch_add_explicit(&M.calls[method][t][grpc_code], 1, memory_order_relaxed);
    histo_add(&M.call_lat[method][t], dur_us);
}

void svc_metrics_stream(svc_transport_kind t, int delta)
{
    if ((unsigned)t < N_TRANSPORTS)
        atomic_fetch_add_explicit(&M.streams[t], delta, memory_order_relaxed);
}

void svc_metrics_set_routes(const char *const *names, size_t n_routes)
{
    M.route_names = names;
    M.n_routes = n_routes < SVC_METRICS_MAX_ROUTES ? n_routes : SVC_METRICS_MAX_ROUTES;
}

void svc_metrics_http(size_t route, int status, int64_t dur_us)
{
    if (route > M.n_routes)
        route = M.n_routes;
    size_t slot = N_STATUSES;
    for (size_t i = 0; i < N_STATUSES; i++)
        if (HTTP_STATUSES[i] == status) {
            slot = i;
            break;
        }
    atomic_fetch_add_explicit(&M.http[route][slot], 1, memory_order_relaxed);
    histo_add(&M.http_lat[route], dur_us);
}

/* ---- rendering ---------------------------------------------------------------- */

typedef struct buf {
    char *p;
    size_t len, cap;
    bool oom;
} buf;

static void put(buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(buf *b, const char *fmt, ...)
{
    if (b->oom)
        return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->oom = true;
            return;
        }
        if ((size_t)n < b->cap - b->len) {
            b->len += (size_t)n;
            return;
        }
        size_t cap = 2 * b->cap + (size_t)n;
        char *p = realloc(b->p, cap);
        if (p == NULL) {
            b->oom = true;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
}

/* One histogram's buckets, sum and count with the labels given (a
 * "k=\"v\"," prefix list without braces). */
static void put_histo(buf *b, const char *name, const char *labels, const histo *h)
{
    uint64_t cum = 0;
    for (size_t i = 0; i < N_SLOTS; i++) {
        cum += atomic_load_explicit(&h->slots[i], memory_order_relaxed);
        if (i < N_BOUNDS)
            put(b, "%s_bucket{%sle=\"%g\"} %llu\n", name, labels, (double)BOUNDS_US[i] / 1e6,
                (unsigned long long)cum);
        else
            put(b, "%s_bucket{%sle=\"+Inf\"} %llu\n", name, labels, (unsigned long long)cum);
    }
    /* labels end with ',' (or are empty): drop it for sum and count */
    int n = (int)(labels[0] ? strlen(labels) - 1 : 0);
    put(b, "%s_sum{%.*s} %.6f\n", name, n, labels,
        (double)atomic_load_explicit(&h->sum_us, memory_order_relaxed) / 1e6);
    put(b, "%s_count{%.*s} %llu\n", name, n, labels, (unsigned long long)cum);
}

/* An unlabelled histogram from per-slot counts (not cumulative): slot i
 * holds values up to bounds[i] (the last slot: larger), each bound printed
 * times scale. */
static void put_counts(buf *b, const char *name, const uint64_t *counts, const int *bounds,
                       int slots, double scale, double sum)
{
    uint64_t cum = 0;
    for (int i = 0; i < slots; i++) {
        cum += counts[i];
        if (i < slots - 1)
            put(b, "%s_bucket{le=\"%g\"} %llu\n", name, bounds[i] * scale, (unsigned long long)cum);
        else
            put(b, "%s_bucket{le=\"+Inf\"} %llu\n", name, (unsigned long long)cum);
    }
    put(b, "%s_sum %.6f\n%s_count %llu\n", name, sum, name, (unsigned long long)cum);
}

static uint64_t histo_count(const histo *h)
{
    uint64_t n = 0;
    for (size_t i = 0; i < N_SLOTS; i++)
        n += atomic_load_explicit(&h->slots[i], memory_order_relaxed);
    return n;
}

static const char *const TRANSPORT_NAMES[N_TRANSPORTS] = {"grpc", "http"};

/* store_org_bounds_fn: one organisation's two gauges (ids are
 * [A-Za-z0-9_-], safe as label values). */
static void put_org_bounds(void *arg, const char *org, int64_t oldest, int64_t newest)
{
    put(arg,
        "recordd_changes_sync_id{organization=\"%s\",end=\"oldest\"} %lld\n"
        "recordd_changes_sync_id{organization=\"%s\",end=\"newest\"} %lld\n",
        org, (long long)oldest, org, (long long)newest);
}

/* The process metrics Prometheus clients export (CPU, resident memory,
 * open file descriptors) and the build. */
static void put_process(buf *b)
{
    struct rusage ru;
    double cpu = 0;
    if (getrusage(RUSAGE_SELF, &ru) == 0)
        cpu = (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
              ru.ru_stime.tv_usec / 1e6;
    long long rss = 0, pages = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f != NULL) {
        if (fscanf(f, "%*s %lld", &pages) == 1)
            rss = pages * (long long)sysconf(_SC_PAGESIZE);
        fclose(f);
    }
    long long fds = 0;
    DIR *d = opendir("/proc/self/fd");
    for (struct dirent *e; d != NULL && (e = readdir(d)) != NULL;)
        fds += e->d_name[0] != '.';
    if (d != NULL) {
        closedir(d);
        fds--; /* the directory's own descriptor */
    }
    put(b,
        "# HELP process_cpu_seconds_total User and system CPU time spent, in seconds.\n"
        "# TYPE process_cpu_seconds_total counter\n"
        "process_cpu_seconds_total %.3f\n"
        "# HELP process_resident_memory_bytes Resident memory size in bytes.\n"
        "# TYPE process_resident_memory_bytes gauge\n"
        "process_resident_memory_bytes %lld\n"
        "# HELP process_open_fds Open file descriptors.\n"
        "# TYPE process_open_fds gauge\n"
        "process_open_fds %lld\n"
        "# HELP recordd_build_info The running build (always 1).\n"
        "# TYPE recordd_build_info gauge\n"
        "recordd_build_info{version=\"%s\"} 1\n",
        cpu, rss, fds, SVC_VERSION);
}

char *svc_metrics_render(store *db, size_t *len)
{
    buf b = {malloc(16384), 0, 16384, false};
    if (b.p == NULL)
        return NULL;
    char labels[512];
    size_t n_methods =
        svc_n_methods < SVC_METRICS_MAX_METHODS ? svc_n_methods : SVC_METRICS_MAX_METHODS;

    put(&b, "# HELP recordd_requests_total Calls by transport, method and gRPC status code.\n"
            "# TYPE recordd_requests_total counter\n");
    for (size_t m = 0; m < n_methods; m++)
        for (int t = 0; t < N_TRANSPORTS; t++)
            for (int c = 0; c < N_GRPC_CODES; c++) {
                uint64_t v = atomic_load_explicit(&M.calls[m][t][c], memory_order_relaxed);
                if (v > 0)
                    put(&b,
                        "recordd_requests_total{transport=\"%s\",method=\"%s\",code=\"%s\"} "
                        "%llu\n",
                        TRANSPORT_NAMES[t], svc_methods[m].path, GRPC_CODE_NAMES[c],
                        (unsigned long long)v);
            }
    put(&b, "# HELP recordd_request_duration_seconds Call latency from arrival to status.\n"
            "# TYPE recordd_request_duration_seconds histogram\n");
    for (size_t m = 0; m < n_methods; m++)
        for (int t = 0; t < N_TRANSPORTS; t++) {
            if (histo_count(&M.call_lat[m][t]) == 0)
                continue;
            snprintf(labels, sizeof labels, "transport=\"%s\",method=\"%s\",", TRANSPORT_NAMES[t],
                     svc_methods[m].path);
            put_histo(&b, "recordd_request_duration_seconds", labels, &M.call_lat[m][t]);
        }

    put(&b, "# HELP recordd_http_requests_total HTTP requests by route and status.\n"
            "# TYPE recordd_http_requests_total counter\n");
    for (size_t r = 0; r <= M.n_routes; r++)
        for (size_t s = 0; s < N_STATUS_SLOTS; s++) {
            uint64_t v = atomic_load_explicit(&M.http[r][s], memory_order_relaxed);
            if (v == 0)
                continue;
            const char *route = r < M.n_routes ? M.route_names[r] : "other";
            if (s < N_STATUSES)
                put(&b, "recordd_http_requests_total{route=\"%s\",code=\"%d\"} %llu\n", route,
                    HTTP_STATUSES[s], (unsigned long long)v);
            else
                put(&b, "recordd_http_requests_total{route=\"%s\",code=\"other\"} %llu\n", route,
                    (unsigned long long)v);
        }
    put(&b, "# HELP recordd_http_request_duration_seconds HTTP request latency by route.\n"
            "# TYPE recordd_http_request_duration_seconds histogram\n");
    for (size_t r = 0; r <= M.n_routes; r++) {
        if (histo_count(&M.http_lat[r]) == 0)
            continue;
        snprintf(labels, sizeof labels, "route=\"%s\",",
                 r < M.n_routes ? M.route_names[r] : "other");
        put_histo(&b, "recordd_http_request_duration_seconds", labels, &M.http_lat[r]);
    }

    put(&b, "# HELP recordd_open_streams Server-streaming calls open now.\n"
            "# TYPE recordd_open_streams gauge\n");
    for (int t = 0; t < N_TRANSPORTS; t++)
        put(&b, "recordd_open_streams{transport=\"%s\"} %lld\n", TRANSPORT_NAMES[t],
            (long long)atomic_load_explicit(&M.streams[t], memory_order_relaxed));

    put(&b, "# HELP recordd_calls_refused_total gRPC calls answered without running a handler.\n"
            "# TYPE recordd_calls_refused_total counter\n");
    for (int r = 0; r < SVC_N_REFUSALS; r++)
        put(&b, "recordd_calls_refused_total{reason=\"%s\"} %llu\n", REFUSAL_NAMES[r],
            (unsigned long long)atomic_load_explicit(&M.refused[r], memory_order_relaxed));

    put(&b,
        "# HELP recordd_cq_fast_path_total Small record writes handled on the "
        "completion-queue thread instead of a worker.\n"
        "# TYPE recordd_cq_fast_path_total counter\n"
        "recordd_cq_fast_path_total %llu\n",
        (unsigned long long)atomic_load_explicit(&M.cq_fast_path, memory_order_relaxed));

    rd_err err;
    store_conn *conn = db != NULL ? store_thread_conn(db, &err) : NULL;
    int64_t rows = 0;
    buf orgs = {0};
    if (conn != NULL &&
        store_changes_stats(conn, &rows, 100, put_org_bounds, &orgs, &err) == RD_OK) {
        put(&b,
            "# HELP recordd_changes_log_rows Changes the change log holds (retention: "
            "--changes-retention, --changes-max-rows).\n"
            "# TYPE recordd_changes_log_rows gauge\n"
            "recordd_changes_log_rows %lld\n",
            (long long)rows);
        put(&b,
            "# HELP recordd_changes_sync_id Per organisation (the first 100 by id): the "
            "oldest sync id the change feed can still serve, and the newest committed.\n"
            "# TYPE recordd_changes_sync_id gauge\n"
            "%s",
            orgs.p != NULL ? orgs.p : "");
    }
    free(orgs.p);
    if (conn != NULL)
        store_conn_release(db);

    if (db != NULL) {
        store_batch_stats st;
        store_batch_stats_get(db, &st);
        put(&b, "# HELP recordd_commit_batch_size Writes per group-commit transaction.\n"
                "# TYPE recordd_commit_batch_size histogram\n");
        put_counts(&b, "recordd_commit_batch_size", st.counts, STORE_BATCH_BOUNDS,
                   STORE_BATCH_SLOTS, 1, (double)st.writes);
        put(&b, "# HELP recordd_commit_duration_seconds Time each group-commit COMMIT took"
                " (WAL write and fsync).\n"
                "# TYPE recordd_commit_duration_seconds histogram\n");
        put_counts(&b, "recordd_commit_duration_seconds", st.commit_counts, STORE_COMMIT_BOUNDS_US,
                   STORE_COMMIT_SLOTS, 1e-6, st.commit_us / 1e6);
        if (st.org_lock_batches > 0 || store_pg_listening(db))
            put(&b,
                "# HELP recordd_org_lock_hold_seconds PostgreSQL: how long batches held their "
                "organisations' sync-id counter rows (from the lock to the end of COMMIT).\n"
                "# TYPE recordd_org_lock_hold_seconds summary\n"
                "recordd_org_lock_hold_seconds_sum %.6f\n"
                "recordd_org_lock_hold_seconds_count %llu\n"
                "# HELP recordd_peer_listener_up PostgreSQL: 1 while this process listens to "
                "the other recordd processes' notifications.\n"
                "# TYPE recordd_peer_listener_up gauge\n"
                "recordd_peer_listener_up %d\n",
                st.org_lock_us / 1e6, (unsigned long long)st.org_lock_batches,
                store_pg_listening(db) ? 1 : 0);
    }
    if (db != NULL) {
        int64_t db_bytes = 0, wal_bytes = 0;
        store_file_sizes(db, &db_bytes, &wal_bytes);
        put(&b,
            "# HELP recordd_database_bytes Size of the database file and of its write-ahead log.\n"
            "# TYPE recordd_database_bytes gauge\n"
            "recordd_database_bytes{file=\"db\"} %lld\n"
            "recordd_database_bytes{file=\"wal\"} %lld\n",
            (long long)db_bytes, (long long)wal_bytes);
    }
    put_process(&b);
    if (b.oom) {
        free(b.p);
        return NULL;
    }
    *len = b.len;
    return b.p;
}
