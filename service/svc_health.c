/* grpc.health.v1.Health: Check and Watch, answered from the method table
 * and the server's state. "" and every service of the method table are
 * SERVING until shutdown starts, then NOT_SERVING; other names are unknown
 * (Check: NOT_FOUND; Watch: SERVICE_UNKNOWN, as the health protocol says). */
#include <grpc/status.h>

#include "grpc/health/v1/health.pb-c.h"
#include "service/receipt.h"
#include "service/server_int.h"

typedef Grpc__Health__V1__HealthCheckResponse__ServingStatus health_status;

#define ST_SERVING GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING
#define ST_NOT_SERVING GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING
#define ST_UNKNOWN GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVICE_UNKNOWN

static health_status status_of(svc_call *call, const char *service)
{
    if (service[0] != '\0' && !svc_service_known(service))
        return ST_UNKNOWN;
    return svc_server_serving(svc_call_ctx(call)->server) ? ST_SERVING : ST_NOT_SERVING;
}

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
        receipt_fail(call, &err);
        return;
    }
    Grpc__Health__V1__HealthCheckResponse resp = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
    resp.status = st;
    svc_reply(call, &resp.base);
}

/* The end of a Watch: shutdown (send the NOT_SERVING transition first) or
 * the client went away. arg is the last status sent, in the arena. */
static void watch_end(svc_call *call, void *arg)
{
    health_status *last = arg;
    if (svc_server_serving(svc_call_ctx(call)->server)) {
        svc_finish(call, GRPC_STATUS_CANCELLED, "watch ended", NULL, 0);
        return;
    }
    if (*last == ST_SERVING)
        send_status(call, ST_NOT_SERVING);
    svc_finish(call, GRPC_STATUS_UNAVAILABLE, "server is shutting down", NULL, 0);
}

void svc_health_watch(svc_call *call, const ProtobufCMessage *msg)
{
    const Grpc__Health__V1__HealthCheckRequest *req = (const void *)msg;
    health_status *last = rd_arena_alloc(svc_call_arena(call), sizeof *last);
    if (last == NULL) {
        rd_err err;
        rd_errf(&err, RD_INTERNAL, NULL, "out of memory");
        receipt_fail(call, &err);
        return;
    }
    *last = status_of(call, req->service);
    if (send_status(call, *last) != RD_OK || *last == ST_NOT_SERVING) {
        watch_end(call, last);
        return;
    }
    /* Nothing changes a status but shutdown, which ends the watch: from
     * here on watch_end owns the call. */
    if (!svc_call_on_end(call, watch_end, last))
        watch_end(call, last);
}
