/* grpc.health.v1.Health: Check and Watch, answered from the method table
 * and the server's state. "" and every service of the method table are
 * SERVING until shutdown starts, then NOT_SERVING. Two names for
 * Kubernetes probes: "readiness" is the same (the store is open and the
 * server is not draining), "liveness" is SERVING as long as the process
 * answers at all. Other names are unknown (Check: NOT_FOUND; Watch:
 * SERVICE_UNKNOWN, as the health protocol says). */
#include <string.h>

#include "grpc/health/v1/health.pb-c.h"
#include "service/receipt.h"
#include "service/server_int.h"

typedef Grpc__Health__V1__HealthCheckResponse__ServingStatus health_status;

#define ST_SERVING GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING
#define ST_NOT_SERVING GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING
#define ST_UNKNOWN GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVICE_UNKNOWN

static health_status status_of(svc_call *call, const char *service)
{
    if (strcmp(service, "liveness") == 0)
        return ST_SERVING;
    if (service[0] != '\0' && strcmp(service, "readiness") != 0 && !svc_service_known(service))
        return ST_UNKNOWN;
    /* the store opens before the server starts and closes after it stopped */
    const svc_ctx *ctx = svc_call_ctx(call);
    if (ctx->db == NULL || !svc_server_serving(ctx->server))
        return ST_NOT_SERVING;
    /* a full disk, or a database server out of reach, fails every write:
     * not ready until that passes (liveness stays SERVING: a restart
     * would not help) */
    if (strcmp(service, "readiness") == 0 && !store_ready(ctx->db))
        return ST_NOT_SERVING;
    return ST_SERVING;
}

/* A Watch in progress: its service name and the last status sent. */
typedef struct watch_state {
    const char *service; /* in the arena */
    health_status last;
} watch_state;

static rd_code send_status(svc_call *call, health_status st)
{
    Grpc__Health__V1__HealthCheckResponse resp = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
    resp.status = st;
    return svc_send(call, &resp.base);
}

void svc_health_check(svc_call *call, const ProtobufCMessage *msg)
{
    const Grpc__Health__V1__HealthCheckRequest *req = (const void *)msg;
    health_status st = status_of(call, req->service);
    if (st == ST_UNKNOWN) {
        rd_err err;
        rd_errf(&err, RD_NOT_FOUND, "service", "unknown service '%.100s'", req->service);
        svc_fail(call, &err);
        return;
    }
    Grpc__Health__V1__HealthCheckResponse *resp =
        rd_arena_alloc(svc_call_arena(call), sizeof *resp);
    if (resp == NULL) {
        rd_err err;
        rd_errf(&err, RD_INTERNAL, NULL, "out of memory");
        svc_fail(call, &err);
        return;
    }
    grpc__health__v1__health_check_response__init(resp);
    resp->status = st;
    svc_reply(call, &resp->base);
}

/* The end of a Watch: shutdown (send the NOT_SERVING transition first,
 * unless the service stays SERVING to the end, as "liveness" does) or the
 * client went away. arg is the watch_state, in the arena. */
static void watch_end(svc_call *call, void *arg)
{
    watch_state *w = arg;
    if (svc_server_serving(svc_call_ctx(call)->server)) {
        svc_end(call, RD_CANCELLED, "watch ended");
        return;
    }
    health_status now = status_of(call, w->service);
    if (w->last != now)
        send_status(call, now);
    svc_end(call, RD_UNAVAILABLE, "server is shutting down");
}

void svc_health_watch(svc_call *call, const ProtobufCMessage *msg)
{
    const Grpc__Health__V1__HealthCheckRequest *req = (const void *)msg;
    watch_state *w = rd_arena_alloc(svc_call_arena(call), sizeof *w);
    if (w == NULL) {
        rd_err err;
        rd_errf(&err, RD_INTERNAL, NULL, "out of memory");
        svc_fail(call, &err);
        return;
    }
    w->service = req->service; /* unpacked into the arena */
    w->last = status_of(call, req->service);
    if (send_status(call, w->last) != RD_OK || w->last == ST_NOT_SERVING) {
        watch_end(call, w);
        return;
    }
    /* Nothing changes a status but shutdown, which ends the watch: from
     * here on watch_end owns the call. */
    if (!svc_call_on_end(call, watch_end, w))
        watch_end(call, w);
}
