/* svc: the call core and what handlers see of it (DESIGN.md §2). A call
 * arrives through a transport — gRPC (service/svc_grpc.c) or the HTTP/JSON
 * gateway (service/gw_http.c) — and the core (service/svc_call.c) runs it
 * the same way for both: deadline check, the auth step, the request decoded
 * into the call's arena, then the method's handler on a worker thread
 * (small record writes whose credential is verified from memory run on the
 * gRPC completion-queue thread itself: see svc_handler). A handler ends the
 * call exactly once with one outcome (svc_reply, svc_fail, svc_end or
 * svc_finish), from any thread (a write finishes on the store's completer
 * thread, rd-completer); the transport renders it. Streaming methods use
 * svc_send, then svc_end. docs/internals/server.md has the threads and the
 * call lifecycle; docs/internals/request-walk.md follows one request. */
#ifndef SVC_H
#define SVC_H

#include <protobuf-c/protobuf-c.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "auth/auth.h"
#include "common/rd.h"
#include "store/store.h"

typedef struct svc_server svc_server;
typedef struct svc_tls svc_tls; /* service/svc_tls.h */
typedef struct svc_call svc_call;

/* Per-server context handed to every handler. Everything it points to
 * outlives the server. */
typedef struct svc_ctx {
    store *db;
    svc_server *server;
    /* Verification settings (keyring, pepper, store callbacks); NULL: every
     * call of a non-public method is UNAUTHENTICATED. */
    const auth_config *auth;
    auth_ratelimit *ratelimit; /* per principal id; NULL: no rate limit */
    const auth_signer *signer; /* signs MintToken tokens; NULL: MintToken fails */
    int max_bulk_ops;          /* BulkMutate: most operations per call; 0 = 100 */
    int max_watch_streams;     /* WatchChanges streams open per principal; 0 = 16 */
    int max_bulk_rows;         /* BulkMutate: records one call may touch; 0 = no limit */
    int max_bulk_ms;           /* BulkMutate: longest hold on the writer; 0 = no limit */
} svc_ctx;

/* Runs with the unpacked request (allocated in the call's arena) on a
 * worker thread — or, for CreateRecord, UpdateRecord, ReplaceRecord and
 * DeleteRecord called over gRPC with a request of at most 16 KiB,
 * uncompressed, and an API key found in the server's memory, on the
 * completion-queue thread, which every call's I/O waits for: handlers must
 * not block. Must eventually finish the call exactly once (unary and
 * server-stream methods; see svc_kind for bidi streams). */
typedef void (*svc_handler)(svc_call *call, const ProtobufCMessage *req);

/* How a method exchanges messages. */
typedef enum svc_kind {
    /* One request, one response: the handler finishes with svc_reply or
     * (a failure) svc_fail. */
    SVC_UNARY = 0,
    /* One request, any number of responses: the handler (or whatever it
     * hands the call to) sends with svc_send and ends with svc_end. The
     * call stays valid until svc_end. */
    SVC_SERVER_STREAM = 1,
    /* Messages both ways. The handler runs once per received message, one
     * at a time and in order, and may svc_send any number of answers before
     * it returns; it must not keep the call after returning (the arena is
     * reset between messages). The server finishes the call with OK once
     * the client has half-closed and every queued message is sent. A
     * handler that wants to end the stream early calls svc_end during
     * its run; later messages are then discarded. */
    SVC_BIDI_STREAM = 2,
} svc_kind;

/* One row per RPC: what it is, and the policy that belongs to it (read by
 * the call core and both transports instead of testing names). */
typedef struct svc_method {
    const char *path; /* "/recordd.v1.Records/CreateRecord" */
    const ProtobufCMessageDescriptor *req;
    const ProtobufCMessageDescriptor *resp;
    svc_handler handler;
    svc_kind kind; /* SVC_UNARY when left out */
    /* Runs without a credential (health, reflection). Every other method
     * authenticates before its handler runs (DESIGN.md §6). */
    bool public;
    /* Runs without a credential too (svc_call_principal is then NULL), but
     * a credential sent is authenticated as on any call (GetOpenApi: the
     * fixed API for anyone, the organisation's models for its members). */
    bool credential_optional;
    /* The codes the method answers beyond those every call can (bad
     * request, credential, capability, rate limit, deadline, unavailable,
     * internal), ended by RD_OK; NULL: none. The OpenAPI document lists
     * them per route (service/gw_openapi.c). */
    const rd_code *answers;
    /* The capability verb(s) the method needs (auth_verb bits; the handler
     * authorises with it against the model and group it touches). 0: not
     * one verb — public methods, BulkMutate (per operation), MintToken
     * (what it delegates). */
    unsigned can;
    /* The handler never waits (it checks against the in-memory schema and
     * queues a store_write), so a small gRPC request of it may run on the
     * completion-queue thread (svc_handler). */
    bool cq_fast_path;
    /* Answered whatever the load and while stopping, so probes see the
     * server's state rather than a refused call (health Check). */
    bool always_answered;
    /* HTTP: the success status when not 200 (201 for a create), and a
     * Location header naming the created record. */
    int http_status;
    bool http_location;
    /* HTTP: If-Match is checked against the version of the record replied
     * (a read: 412 when it does not match) rather than passed to the
     * method as expected versions. */
    bool http_if_match_on_reply;
    /* HTTP: the status of a reply that reports failed operations (its
     * total_failed field; 207 Multi-Status), and of a failure that carries
     * a rolled-back result (svc_outcome.bulk; 422): 0 = not applicable. */
    int http_partial_status;
    int http_rolled_back_status;
} svc_method;

/* The method table (service/svc_methods.c). */
extern const svc_method svc_methods[];
extern const size_t svc_n_methods;

typedef struct svc_options {
    const char *listen;         /* "127.0.0.1:50051"; port 0 picks a free one */
    int workers;                /* worker threads (>= 1) */
    int max_message_bytes;      /* receive and send limit */
    int max_concurrent_streams; /* HTTP/2 streams per connection; 0 = 100 */
    int max_inflight_calls;     /* calls at once (health checks excepted); 0 = no limit */
    svc_tls *tls;               /* certificate files (outlive the server); NULL = plaintext */
} svc_options;

/* Binds and starts serving; sets ctx->server (ctx must outlive the
 * server). *bound_port gets the port actually bound. Binding a port that
 * another process (or server) holds fails with RD_UNAVAILABLE: SO_REUSEPORT
 * is off. Calls grpc_init; the matching grpc_shutdown is in
 * svc_server_stop. Block the signals you want to sigwait for before calling
 * this: the server's threads inherit the mask. */
rd_code svc_server_start(const svc_options *opt, svc_ctx *ctx, svc_server **out, int *bound_port,
                         rd_err *err);
/* Health turns NOT_SERVING, new calls get UNAVAILABLE, in-flight calls get
 * up to grace_ms to finish, then the rest are cancelled; returns when every
 * thread has stopped. Streams are asked to end at once (svc_call_on_end
 * callbacks run; idle bidi streams end with UNAVAILABLE). The store is left
 * open (the caller closes it). Frees s. */
void svc_server_stop(svc_server *s, int grace_ms);
/* Whether the server reports SERVING (not shutting down). Any thread. */
bool svc_server_serving(const svc_server *s);
/* Calls accepted and not yet released (handlers running, replies being
 * sent, open streams). Any thread. */
size_t svc_server_inflight(svc_server *s);

/* ---- calls -----------------------------------------------------------------
 * A svc_call is valid from the handler's start until the call is finished;
 * after svc_reply / svc_fail / svc_end / svc_finish it must not be
 * touched (its arena may already be gone). The accessors are for the call's current owner. */
svc_ctx *svc_call_ctx(svc_call *call);
rd_arena *svc_call_arena(svc_call *call);
/* The call's deadline in µs since the epoch (CLOCK_REALTIME), 0 = none. */
int64_t svc_call_deadline_us(const svc_call *call);
/* Value of a request metadata key (lowercase), NUL-terminated in the arena,
 * or NULL (also when out of memory). The first value when repeated. */
const char *svc_call_metadata(svc_call *call, const char *key);
const svc_method *svc_call_method(const svc_call *call);
/* The organisation the call acts in and the principal id it acts as
 * (recorded as created_by / updated_by): the authenticated principal's org
 * and id (for a token, the key that minted it). Every store call takes them
 * from here, never from the request. "" on a public method. */
const char *svc_call_org(const svc_call *call);
const char *svc_call_actor(const svc_call *call);
/* The authenticated principal, owned by the call (freed with it); NULL on a
 * public method and on a credential_optional one called without a
 * credential. Handlers run only after authentication succeeded. */
const auth_principal *svc_call_principal(const svc_call *call);
/* The server's --max-message-bytes: the largest reply the call may send. */
int svc_call_max_message_bytes(const svc_call *call);
/* Remembers the capability a denied call needed (strings copied into the
 * arena): a PERMISSION_DENIED outcome carries it (svc_outcome.can/model/
 * group; the receipt's required_capability); NULL forgets. */
void svc_call_set_required(svc_call *call, const auth_required *required);
/* The remembered capability, or NULL. */
const auth_required *svc_call_required(const svc_call *call);
/* Notes the server tx id of the write the call made, for its request log
 * line (service/svc_log.h); copied. */
void svc_call_log_tx_id(svc_call *call, const char *server_tx_id);

/* ---- outcomes -----------------------------------------------------------------
 * A call ends with one outcome value, which the call's transport renders:
 * gRPC as a status with google.rpc.Status details (ErrorInfo, BadRequest,
 * RetryInfo, the receipt and bulk result as Any), HTTP as the reply in JSON
 * or application/problem+json. Everything an outcome points to must stay
 * valid until the call is released: keep it in the call's arena (or
 * register its release with rd_arena_on_release). */

/* A {key, value} pair of an outcome (field violations, ErrorInfo metadata). */
typedef struct svc_kv {
    const char *key, *value;
} svc_kv;

typedef struct svc_outcome {
    rd_err err; /* RD_OK: success; else the code, the field at fault, the message */
    /* A bare status (no google.rpc details, no problem members beyond the
     * code): the server's own refusals and the end of a stream. */
    bool status_only;
    /* Success of a unary call: the response message, and when it was
     * stored serialized (an idempotent replay) those bytes too, which gRPC
     * sends byte for byte. */
    const ProtobufCMessage *reply;
    const void *reply_bytes;
    size_t reply_len;
    bool replayed; /* the reply (or failure) repeats a stored outcome */
    /* Failure: the rejected write's CommitReceipt, and for a rolled-back
     * BulkMutate its BulkMutateResponse. */
    const ProtobufCMessage *receipt;
    const ProtobufCMessage *bulk;
    /* Failure: field violations (key = field, value = description) that
     * replace the one err.field would make (BulkMutate: one per failed
     * operation), and more ErrorInfo metadata. */
    const svc_kv *violations;
    size_t n_violations;
    const svc_kv *info;
    size_t n_info;
    /* PERMISSION_DENIED: the capability that would have allowed it (NULL:
     * the one the call noted with svc_call_set_required). */
    const char *can, *model, *group;
    /* How long to wait before retrying, ms; 0: RATE_LIMITED takes the
     * call's noted delay, UNAVAILABLE 1 s unless status_only. */
    int64_t retry_after_ms;
} svc_outcome;

/* Finishes a unary call with OK and resp (resp and what it points to must
 * live until the call is released: the call's arena). On a streaming call:
 * svc_send(resp), then svc_end with RD_OK. */
void svc_reply(svc_call *call, const ProtobufCMessage *resp);
/* Finishes the call with an error: err's code, field and message, with
 * the capability and retry delay the call noted. */
void svc_fail(svc_call *call, const rd_err *err);
/* Ends the call with a bare status (msg may be NULL): a stream once every
 * queued message has been sent, or a unary call without a reply. */
void svc_end(svc_call *call, rd_code code, const char *msg);
/* Finishes the call with *o (copied; what it points to is not). Exactly
 * one of svc_reply / svc_fail / svc_end / svc_finish per call, from any
 * thread; never blocks. */
void svc_finish(svc_call *call, const svc_outcome *o);

/* ---- streaming ---------------------------------------------------------------
 * Thread-safe: svc_send and svc_end may be called from any thread, but
 * never after svc_end (the caller serialises its own threads around
 * that). Messages go out in the order svc_send queued them; one is on the
 * wire at a time, the rest wait in a per-call queue. */

/* Most messages / bytes one call may have queued and not yet sent. */
#define SVC_SEND_QUEUE_MAX 256
#define SVC_SEND_QUEUE_MAX_BYTES (16u << 20)

/* Serializes msg at once (it may live in the arena) and queues it.
 * Returns RD_OK, or (msg dropped):
 *   RD_UNAVAILABLE  the peer is gone (cancelled, disconnected, deadline
 *                   passed) or the call is finishing: stop sending and
 *                   svc_end;
 *   RD_RATE_LIMITED the queue is over SVC_SEND_QUEUE_MAX(_BYTES): the peer
 *                   reads too slowly; the caller may retry later or end
 *                   the stream (RESOURCE_EXHAUSTED);
 *   RD_INTERNAL     out of memory, msg is larger than the server's
 *                   max_message_bytes, or the call is unary. */
rd_code svc_send(svc_call *call, const ProtobufCMessage *msg);

/* Runs once when a server-stream call should end before its owner finished
 * it: the client cancelled or went away, the deadline passed (on the
 * completion-queue thread), or the server is stopping (on the thread in
 * svc_server_stop; svc_server_serving is then false). It must not block; it
 * may svc_send a last message and must see to it that svc_end is
 * called. */
typedef void (*svc_end_fn)(svc_call *call, void *arg);

/* Registers fn for a server-stream call (one per call; a second replaces
 * the first). Returns false, and fn will never run, when the stream should
 * already end or the call is not a server stream — then the caller
 * finishes it itself. After true, the call may be finished by fn on another
 * thread at any moment: a caller that keeps using the call must synchronise
 * with fn itself. */
bool svc_call_on_end(svc_call *call, svc_end_fn fn, void *arg);

/* Whether the peer is gone (cancelled, disconnected, deadline passed). */
bool svc_call_cancelled(svc_call *call);

#endif
