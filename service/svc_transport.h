/* svc_transport: what a transport gives the call core and what it may ask
 * of it. The core (service/svc_call.c) owns each call — its arena,
 * deadline, principal, outcome and references — and runs it the same way
 * whatever carried it: admission, a worker, deadline check, the auth step,
 * decode, the handler, the outcome. A transport (gRPC: service/svc_grpc.c;
 * HTTP/JSON: service/gw_http.c) only moves bytes: it supplies request
 * metadata, the peer's identity and the decoded request, and renders the
 * stream messages and the outcome the core hands back. Not for handlers:
 * they use service/svc.h. docs/internals/server.md, "Transports". */
#ifndef SVC_TRANSPORT_H
#define SVC_TRANSPORT_H

#include "service/svc.h"
#include "service/svc_metrics.h"

typedef struct svc_transport {
    svc_transport_kind kind; /* its label in /metrics and the request log */
    /* The first value of request metadata key (lowercase) as a pointer
     * and a length (need not be NUL-terminated); false when absent. Any
     * thread that runs the call; the value must stay valid for the call. */
    bool (*metadata)(void *arg, const char *key, const char **value, size_t *len);
    /* Whether the connection presented a verified client certificate whose
     * URI or DNS subject alternative name is id (credentials bound to a
     * client identity). */
    bool (*peer_presents)(void *arg, const char *id);
    /* On the worker, after the auth step: the request message in the
     * call's arena (svc_call_arena), or NULL with err set (the core then
     * fails the call with err). Bidi streams: the message just received. */
    ProtobufCMessage *(*decode)(void *arg, svc_call *call, rd_err *err);
    /* A stream message (packed size len, checked against the server's
     * limit), on the thread that called svc_send; msg is valid during the
     * callback only. RD_OK, or RD_RATE_LIMITED (the transport's queue is
     * full) or RD_UNAVAILABLE (the peer is gone): svc_send returns it. */
    rd_code (*send)(void *arg, svc_call *call, const ProtobufCMessage *msg, size_t len);
    /* Exactly once, on the thread that finished the call, after every
     * send: renders o (which, with what it points to, stays valid until
     * the release callback). Must not block. */
    void (*finish)(void *arg, svc_call *call, const svc_outcome *o);
    /* Server streams: the handler returned and the call is not finished —
     * the stream is accepted (HTTP sends its 200 and headers now). May
     * come after messages. Worker thread; must not block. May be NULL. */
    void (*started)(void *arg, svc_call *call);
    /* Bidi streams: a message was handled and the call goes on — read the
     * next one (or pause and call svc_call_read_on later). false when no
     * read can start: the core ends the call with OK. NULL for a transport
     * without bidi streams. */
    bool (*read_next)(void *arg, svc_call *call);
    /* The last reference is gone: the call (still readable: method,
     * outcome, principal, tx id) is freed after this returns. Any thread. */
    void (*release)(void *arg, svc_call *call);
} svc_transport;

/* A new call of m (a row of svc_methods; NULL for a method the transport
 * does not know, which can only be ended) with a deadline (µs since the
 * epoch, 0 = none). Counted in flight at once (svc_server_stop waits for
 * it). Two references: the owner's (dropped when the call is finished) and
 * the transport's (drop it with svc_call_release). NULL when out of
 * memory. */
svc_call *svc_call_new(svc_server *s, const svc_method *m, const svc_transport *tp, void *arg,
                       int64_t deadline_us);
/* Admission: false, with the call ended (UNAVAILABLE while the server
 * stops, RATE_LIMITED over --max-inflight-calls; always_answered methods
 * excepted), when the server will not run it. */
bool svc_call_admit(svc_call *call);
/* Runs an admitted unary or server-stream call: on a worker, or when
 * may_run_here and the method allows it (svc_method.cq_fast_path) and its
 * credential is verified from memory, on the calling thread. Ends it with
 * RATE_LIMITED when the work queue is full. */
void svc_call_dispatch(svc_call *call, bool may_run_here);
/* Bidi streams: a message arrived; a worker decodes and handles it
 * (dropped when the call is already ending). */
void svc_call_deliver(svc_call *call);
/* Bidi streams: the transport paused reading (read_next) and may read
 * again; the core calls read_next unless the call is ending. */
void svc_call_read_on(svc_call *call);
/* Hands the call a principal the transport already authenticated from the
 * same credential (before dispatch; the call takes ownership): the auth
 * step then skips verifying it again (rate limits still apply). */
void svc_call_set_principal(svc_call *call, auth_principal *p);
/* Ends the call with a bare status unless it is already finishing (the
 * transport's own ends: half-close, refusals). */
void svc_call_end_if_open(svc_call *call, rd_code code, const char *msg);
/* The peer went away: svc_call_cancelled turns true and the end callback of
 * a server stream runs (svc_call_on_end). Idempotent. Caller holds a
 * reference. */
void svc_call_cancel(svc_call *call);
/* References for a transport that touches the call outside its callbacks. */
void svc_call_hold(svc_call *call);
void svc_call_release(svc_call *call);

/* For the transport's rendering and request log. */
const svc_outcome *svc_call_outcome(const svc_call *call); /* NULL before finish */
const char *svc_call_tx_id(const svc_call *call);          /* "" when nothing was written */
int64_t svc_call_start_us(const svc_call *call);

/* gRPC: the listener's shutdown completed (grpc_server_shutdown_and_notify). */
void svc_server_transport_down(svc_server *s);

#endif
