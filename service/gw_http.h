/* gw_http: the HTTP/1.1 front door (DESIGN.md §2, §8). libmicrohttpd with
 * an epoll thread pool accepts requests, matches them against the routes
 * built from the google.api.http options (gw_route), and runs each one as
 * a call of the call core (svc_transport.h): the same request message
 * (decoded by gw_json on the worker, after the same auth step), the same
 * handler, the same outcome. Replies are rendered as proto3 JSON, errors as
 * problem+json (gw_render, gw_problem), server streams as Server-Sent
 * Events. Also /healthz, /readyz and /metrics. docs/API.md has the HTTP
 * contract, docs/internals/gateway.md how it works. */
#ifndef GW_HTTP_H
#define GW_HTTP_H

#include "common/rd.h"
#include "service/svc.h"

typedef struct gw_http gw_http;

typedef struct gw_http_options {
    const char *listen;         /* "127.0.0.1:8080"; port 0 picks a free one */
    int threads;                /* libmicrohttpd thread pool size (>= 1) */
    int keepalive_s;            /* seconds between SSE keep-alive comments */
    int max_message_bytes;      /* gRPC's limit: a larger request once encoded is 413 (0: none) */
    int max_connections;        /* open connections in all; more are closed on accept */
    int max_connections_per_ip; /* open connections from one client address */
    svc_tls *tls;               /* HTTPS with these files (outlive the gateway); NULL = HTTP */
    /* CORS: comma-separated origins (svc_config_origin_ok; checked at
     * start-up) whose pages may call the API; NULL or "" = CORS off. */
    const char *cors_origins;
} gw_http_options;

/* Builds the routes from the embedded descriptor set and starts serving on
 * opt->listen for ctx (whose server must be running and outlive the
 * gateway until gw_http_close). *bound_port gets the port bound.
 * RD_UNAVAILABLE when the address cannot be bound, RD_INTERNAL when the
 * routes cannot be built. */
rd_code gw_http_start(const gw_http_options *opt, svc_ctx *ctx, gw_http **out, int *bound_port,
                      rd_err *err);

/* From now on new requests get 503 and /readyz 503; requests already
 * running go on. Call it before svc_server_stop, which then waits for the
 * HTTP calls as for gRPC ones. */
void gw_http_close(gw_http *gw);

/* After svc_server_stop: stops the daemon, closes connections, frees gw. */
void gw_http_stop(gw_http *gw);

#endif
