/* svc_metrics: process-wide request counters and latency histograms that
 * the server core records into for every transport (gRPC and HTTP), the
 * HTTP gateway's per-route counters, open streams, and their Prometheus
 * text rendering for GET /metrics (DESIGN.md §8). Recording is lock-free
 * (relaxed atomics on fixed arrays), so the hot path pays a few adds. */
#ifndef SVC_METRICS_H
#define SVC_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "store/store.h"

typedef enum svc_transport_kind {
    SVC_TRANSPORT_GRPC = 0,
    SVC_TRANSPORT_HTTP = 1,
} svc_transport_kind;

/* Most methods and HTTP routes counted; rows beyond are not recorded. */
enum { SVC_METRICS_MAX_METHODS = 64, SVC_METRICS_MAX_ROUTES = 64 };

/* A call of svc_methods[method] ended with grpc_code after dur_us. */
void svc_metrics_call(size_t method, svc_transport_kind t, int grpc_code, int64_t dur_us);
/* A stream opened (+1) or closed (-1). */
void svc_metrics_stream(svc_transport_kind t, int delta);
/* Names the HTTP routes ("PATCH /v1/models/{model}/{id}") by index; the
 * strings must outlive the process's metrics use. Route n_routes (the
 * next index) is "other" (no route: 404, 405, /healthz...). */
void svc_metrics_set_routes(const char *const *names, size_t n_routes);
/* An HTTP request on route (index as set, or >= n_routes for "other")
 * answered status after dur_us. */
void svc_metrics_http(size_t route, int status, int64_t dur_us);

/* Why the server answered a call without running its handler. */
typedef enum svc_refusal {
    SVC_REFUSED_NO_MESSAGE = 0, /* cancelled (reset) before its request message came */
    SVC_REFUSED_INFLIGHT = 1,   /* --max-inflight-calls reached */
    SVC_REFUSED_QUEUE_FULL = 2, /* the worker queue was full */
    SVC_N_REFUSALS = 3,
} svc_refusal;
void svc_metrics_refused(svc_refusal why);
/* A call ran its handler on the completion-queue thread (the fast path). */
void svc_metrics_cq_fast_path(void);

/* The Prometheus text exposition (version 0.0.4) of everything recorded,
 * plus the store's commit batch sizes when db is not NULL. malloc'd,
 * *len bytes; NULL when out of memory. */
char *svc_metrics_render(store *db, size_t *len);

#endif
