/* svc: the gRPC server core (DESIGN.md §2). A completion-queue thread
 * accepts calls for the methods in the method table, reads the request,
 * and hands it to a worker thread, which unpacks it into the call's arena
 * and runs the method's handler (small record writes whose credential is
 * verified from memory run on the completion-queue thread itself: see
 * svc_handler). A handler finishes the call exactly once with svc_reply or
 * svc_finish, from any thread (a write finishes on the store's completer
 * thread, rd-completer). Streaming methods use svc_send / svc_finish
 * (below). docs/internals/server.md has the threads and the call lifecycle. */
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
     * (a failure) svc_finish. */
    SVC_UNARY = 0,
    /* One request, any number of responses: the handler (or whatever it
     * hands the call to) sends with svc_send and ends with svc_finish. The
     * call stays valid until svc_finish. */
    SVC_SERVER_STREAM = 1,
    /* Messages both ways. The handler runs once per received message, one
     * at a time and in order, and may svc_send any number of answers before
     * it returns; it must not keep the call after returning (the arena is
     * reset between messages). The server finishes the call with OK once
     * the client has half-closed and every queued message is sent. A
     * handler that wants to end the stream early calls svc_finish during
     * its run; later messages are then discarded. */
    SVC_BIDI_STREAM = 2,
} svc_kind;

/* One row per RPC: what it is, and the policy that belongs to it (read by
 * the server core and the HTTP gateway instead of testing names). */
typedef struct svc_method {
    const char *path; /* "/recordd.v1.Records/CreateRecord" */
    const ProtobufCMessageDescriptor *req;
    const ProtobufCMessageDescriptor *resp;
    svc_handler handler;
    svc_kind kind; /* SVC_UNARY when left out */
    /* Runs without a credential (health, reflection). Every other method
     * authenticates before its handler runs (DESIGN.md §6). */
    bool public;
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
    /* HTTP: 207 Multi-Status when the reply reports failed operations
     * (its total_failed field). */
    bool http_multi_status;
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
 * after svc_reply / svc_finish it must not be touched (its arena
 * may already be gone). The accessors are for the call's current owner. */
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
 * public method. Handlers run only after authentication succeeded. */
const auth_principal *svc_call_principal(const svc_call *call);
/* The server's --max-message-bytes: the largest reply the call may send. */
int svc_call_max_message_bytes(const svc_call *call);
/* Remembers the capability a denied call needed (strings copied into the
 * arena), for the receipt module's PERMISSION_DENIED details; NULL forgets. */
void svc_call_set_required(svc_call *call, const auth_required *required);
/* The remembered capability, or NULL. */
const auth_required *svc_call_required(const svc_call *call);
/* The retry delay of a RD_RATE_LIMITED call in ms (0 when none), for
 * google.rpc.RetryInfo. */
int64_t svc_call_retry_after_ms(const svc_call *call);
/* Notes for the call's request log line (service/svc_log.h): the error
 * table code of its outcome, and the server tx id of the write it made. */
void svc_call_log_code(svc_call *call, rd_code code);
void svc_call_log_tx_id(svc_call *call, const char *server_tx_id);

/* Finishes with OK and resp (serialized at once; resp may live in the arena).
 * On a streaming call: svc_send(resp) then svc_finish with OK. */
void svc_reply(svc_call *call, const ProtobufCMessage *resp);
/* Finishes a unary call with OK and a reply that is already serialized
 * (bytes of the method's response type, copied at once): for replies that
 * must go out byte for byte as stored, such as idempotent replays. */
void svc_reply_raw(svc_call *call, const void *bytes, size_t len);

/* ---- streaming ---------------------------------------------------------------
 * Thread-safe: svc_send and svc_finish may be called from any thread, but
 * never after svc_finish (the caller serialises its own threads around
 * that). Messages go out in the order svc_send queued them; one is on the
 * wire at a time, the rest wait in a per-call queue. */

/* Most messages / bytes one call may have queued and not yet sent. */
#define SVC_SEND_QUEUE_MAX 256
#define SVC_SEND_QUEUE_MAX_BYTES (16u << 20)

/* Serializes msg at once (it may live in the arena) and queues it.
 * Returns RD_OK, or (msg dropped):
 *   RD_UNAVAILABLE  the peer is gone (cancelled, disconnected, deadline
 *                   passed) or the call is finishing: stop sending and
 *                   svc_finish;
 *   RD_RATE_LIMITED the queue is over SVC_SEND_QUEUE_MAX(_BYTES): the peer
 *                   reads too slowly; the caller may retry later or end
 *                   the stream (RESOURCE_EXHAUSTED);
 *   RD_INTERNAL     out of memory, msg is larger than the server's
 *                   max_message_bytes, or the call is unary. */
rd_code svc_send(svc_call *call, const ProtobufCMessage *msg);

/* Ends a call with grpc_code (0 = OK), msg (the human message, may be
 * NULL) and details (serialized google.rpc.Status for
 * grpc-status-details-bin, may be NULL): a unary call with no reply (a
 * failure), a streaming one once every queued message has been sent.
 * Exactly once per call, from any thread; copies its arguments. Never
 * blocks. */
void svc_finish(svc_call *call, int grpc_code, const char *msg, const void *details,
                size_t details_len);

/* Runs once when a server-stream call should end before its owner finished
 * it: the client cancelled or went away, the deadline passed (on the
 * completion-queue thread), or the server is stopping (on the thread in
 * svc_server_stop; svc_server_serving is then false). It must not block; it
 * may svc_send a last message and must see to it that svc_finish is
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

/* ---- other transports ---------------------------------------------------------
 * A transport other than gRPC (the HTTP/JSON gateway, service/gw_http.c)
 * runs a method through the same path as a gRPC call: deadline check, the
 * auth step (authenticate + rate limit), then the handler on a worker. It
 * supplies request metadata, a deadline and a decode callback that builds
 * the request message in the call's arena; the replies, stream messages
 * and the final status come back through its callbacks instead of gRPC
 * batches. docs/internals/server.md, "Other transports". */

/* How a transport's call ended. Pointers are valid during the callback only. */
typedef struct svc_outcome {
    int grpc_code;       /* 0 = OK */
    const char *msg;     /* human message, "" when none */
    const void *details; /* serialized google.rpc.Status, or NULL */
    size_t details_len;
    const void *reply; /* unary OK: the response message's bytes; else NULL */
    size_t reply_len;
    bool replayed; /* the reply is an idempotent replay (svc_call_set_replayed) */
    /* for the request log line (svc_log.h); valid during the callback only */
    int rd_code;              /* the error-table row of a failure, -1 when none was noted */
    const char *principal_id; /* NULL before authentication */
    const char *server_tx_id; /* "" when the call wrote nothing */
} svc_outcome;

typedef struct svc_transport {
    /* On the worker, after the auth step: the request message, allocated in
     * the call's arena (svc_call_arena), or NULL with err set (the call is
     * then failed with err through the receipt module). */
    ProtobufCMessage *(*decode)(void *arg, svc_call *call, rd_err *err);
    /* A server-stream message (bytes of the method's response type), on the
     * thread that called svc_send. RD_OK, or RD_RATE_LIMITED (the transport's
     * queue is full) or RD_UNAVAILABLE (the peer is gone): svc_send returns it. */
    rd_code (*message)(void *arg, const void *bytes, size_t len);
    /* Exactly once, on the thread that finished the call, after every
     * message. It must not block and must copy what it keeps. */
    void (*finish)(void *arg, const svc_outcome *out);
    /* Server streams: the handler returned and the call is not finished —
     * the stream is accepted (HTTP sends its 200 and headers now). May
     * come after messages. Worker thread; must not block. May be NULL. */
    void (*started)(void *arg);
    /* The call is gone (its last reference dropped): no callback follows.
     * Any thread. */
    void (*release)(void *arg);
} svc_transport;

/* Creates a call of m (a row of svc_methods) for tp/arg with a deadline
 * (µs since the epoch, 0 = none). The caller holds one reference (drop it
 * with svc_call_release) and must then either svc_call_start it or end it
 * unstarted with svc_finish (or receipt_fail). NULL when the server is
 * stopping, m is a bidi stream, or memory runs out. */
svc_call *svc_call_new_transport(svc_server *s, const svc_method *m, const svc_transport *tp,
                                 void *arg, int64_t deadline_us);
/* Hands the call a principal the transport already authenticated from the
 * same credential (before svc_call_start; the call takes ownership): the
 * auth step then skips verifying it again (rate limits still apply). */
void svc_call_set_principal(svc_call *call, auth_principal *p);
/* Hands the call the verified client certificate's URI/DNS names of its
 * connection, one per line (service/svc_tls.h), for credentials bound to
 * a client identity; copied. Before svc_call_start. False on out of
 * memory. */
bool svc_call_set_peer_ids(svc_call *call, const char *ids);
/* Adds request metadata (key lowercase; both copied into the arena) before
 * svc_call_start. false when out of memory. */
bool svc_call_add_metadata(svc_call *call, const char *key, const char *value);
/* Queues the call for a worker; tp->finish reports how it ended (overload
 * included). */
void svc_call_start(svc_call *call);
/* References for a transport that touches the call outside its callbacks. */
void svc_call_hold(svc_call *call);
void svc_call_release(svc_call *call);
/* The peer went away: svc_call_cancelled turns true and the end callback of
 * a server stream runs (svc_call_on_end). Idempotent. Caller holds a
 * reference. */
void svc_call_cancel(svc_call *call);
/* Marks the reply the owner is about to send as an idempotent replay, for
 * transports that show it (HTTP: Idempotent-Replayed: true). */
void svc_call_set_replayed(svc_call *call);

#endif
