/* svc: the gRPC server core (DESIGN.md §2). A completion-queue thread
 * accepts calls for the methods in the method table, reads the request,
 * and hands it to a worker thread, which unpacks it into the call's arena
 * and runs the method's handler. A handler finishes the call exactly once
 * with svc_reply or svc_fail, from any thread (a write finishes on the
 * store's writer thread). */
#ifndef SVC_H
#define SVC_H

#include <protobuf-c/protobuf-c.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/rd.h"
#include "store/store.h"

typedef struct svc_server svc_server;
typedef struct svc_call svc_call;

/* Per-server context handed to every handler. */
typedef struct svc_ctx {
    store *db;
    svc_server *server;
    const char *dev_org;   /* organisation used until auth lands */
    const char *dev_actor; /* principal id used until auth lands */
} svc_ctx;

/* Runs on a worker thread with the unpacked request (allocated in the
 * call's arena). Must eventually finish the call exactly once. */
typedef void (*svc_handler)(svc_call *call, const ProtobufCMessage *req);

/* One row per RPC. */
typedef struct svc_method {
    const char *path; /* "/recordd.v1.Records/CreateRecord" */
    const ProtobufCMessageDescriptor *req;
    const ProtobufCMessageDescriptor *resp;
    svc_handler handler;
} svc_method;

/* The method table (service/svc_methods.c). */
extern const svc_method svc_methods[];
extern const size_t svc_n_methods;

typedef struct svc_options {
    const char *listen;      /* "127.0.0.1:50051"; port 0 picks a free one */
    int workers;             /* worker threads (>= 1) */
    int max_message_bytes;   /* receive and send limit */
} svc_options;

/* Binds and starts serving. *bound_port gets the port actually bound. */
rd_code svc_server_start(const svc_options *opt, svc_ctx *ctx, svc_server **out, int *bound_port,
                         rd_err *err);
/* Health turns NOT_SERVING, new calls get UNAVAILABLE, in-flight calls get
 * up to grace_ms to finish, then the rest are cancelled; returns when every
 * thread has stopped. The store is left open (the caller closes it). */
void svc_server_stop(svc_server *s, int grace_ms);
/* Whether the server reports SERVING (not shutting down). */
bool svc_server_serving(const svc_server *s);

/* ---- calls ----------------------------------------------------------------- */
svc_ctx *svc_call_ctx(svc_call *call);
rd_arena *svc_call_arena(svc_call *call);
/* The call's deadline in µs since the epoch (CLOCK_REALTIME), 0 = none. */
int64_t svc_call_deadline_us(const svc_call *call);
/* Value of a request metadata key (lowercase), NUL-terminated in the arena,
 * or NULL. */
const char *svc_call_metadata(svc_call *call, const char *key);
const svc_method *svc_call_method(const svc_call *call);

/* Finishes with OK and resp (serialized at once; resp may live in the arena). */
void svc_reply(svc_call *call, const ProtobufCMessage *resp);
/* Finishes with a non-OK status. details: serialized google.rpc.Status for
 * grpc-status-details-bin (may be NULL). msg is the human message. */
void svc_fail(svc_call *call, int grpc_code, const char *msg, const void *details,
              size_t details_len);

#endif
