/* svc_grpc: the gRPC transport (service/svc_grpc.c) — the listener over the
 * gRPC C core: one completion-queue thread accepts calls for the methods in
 * the method table, reads requests, runs batches and renders outcomes as
 * statuses. The call core (service/svc_call.c) starts and stops it; nothing
 * else uses this header. */
#ifndef SVC_GRPC_H
#define SVC_GRPC_H

#include "service/svc.h"

typedef struct svc_grpc svc_grpc;

/* Calls grpc_init, binds opt->listen (TLS when opt->tls), posts request
 * slots for every method and starts the completion-queue thread; calls
 * arrive into s. *bound_port gets the port bound. On failure everything is
 * undone (grpc_shutdown included). */
rd_code svc_grpc_start(svc_server *s, const svc_options *opt, svc_grpc **out, int *bound_port,
                       rd_err *err);
/* Stops accepting (GOAWAY); svc_server_transport_down is called once the
 * gRPC core reports the shutdown complete. */
void svc_grpc_shutdown(svc_grpc *g);
/* Cancels every call still open (after the grace period). */
void svc_grpc_cancel_all(svc_grpc *g);
/* After the shutdown completed and no call is in flight: drains the queue,
 * joins the thread, destroys the server, grpc_shutdown. */
void svc_grpc_free(svc_grpc *g);

#endif
