/* The gRPC transport (svc_grpc.h, svc_transport.h) over the gRPC C core API.
 * One completion-queue thread accepts calls and completes batches; it never
 * touches SQLite. Each arriving call is one gcall — its tags, request
 * metadata, payload, send queue and status — bound to a call of the core
 * (service/svc_call.c), which runs it; this file moves its bytes: it
 * unpacks requests (inflating compressed ones with a bound), queues stream
 * messages one batch at a time, and renders the outcome as a status with
 * google.rpc.Status details (service/svc_status.h).
 * docs/internals/server.md describes threads, call lifecycle and shutdown. */
#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/slice.h>
#include <grpc/support/time.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "service/svc_grpc.h"
#include "service/svc_log.h"
#include "service/svc_metrics.h"
#include "service/svc_net.h"
#include "service/svc_convert.h"
#include "service/svc_status.h"
#include "service/svc_tls.h"
#include "service/svc_transport.h"

/* Outstanding request_call slots per registered method and for unregistered
 * methods. A slot is re-posted as soon as its call arrives; calls arriving
 * while every slot is taken wait inside gRPC. */
enum { PENDING_PER_METHOD = 16, PENDING_GENERIC = 2 };

/* Bidi streams read ahead only while the replies already queued for the
 * client stay under this many bytes: a client that sends requests without
 * reading the answers (40 reflection streams once took 450 MB) is simply
 * not read from until it drains its replies (on_send resumes the reading). */
enum { BIDI_READ_AHEAD_BYTES = 64 * 1024 };

/* The completion-queue thread decodes and handles only small, uncompressed
 * requests (svc_call_dispatch's may_run_here): a large one (a 2.7 MB
 * update) would hold every other call's I/O for its unpack and checks, and
 * a compressed one may inflate to --max-message-bytes. */
enum { CQ_FAST_PATH_MAX_BYTES = 16 * 1024 };

typedef enum tag_kind {
    TAG_REQUEST,  /* request_call / request_registered_call completed */
    TAG_RECV,     /* bidi: RECV_MESSAGE completed */
    TAG_SEND,     /* streams: SEND_MESSAGE (+ initial metadata) completed */
    TAG_CLOSE,    /* streams: RECV_CLOSE_ON_SERVER completed (call over or cancelled) */
    TAG_FINAL,    /* the status batch completed */
    TAG_SHUTDOWN, /* grpc_server_shutdown_and_notify completed */
} tag_kind;

typedef struct gtag {
    tag_kind kind;
} gtag;

/* A message queued by svc_send. */
typedef struct send_item {
    struct send_item *next;
    grpc_byte_buffer *bb;
    size_t len;
} send_item;

typedef struct gcall {
    svc_grpc *g;
    const svc_method *method; /* NULL: an unregistered method */
    size_t method_index;      /* row of svc_methods, for re-posting the slot */
    svc_call *call;           /* the core's call, once it arrived */

    /* filled by gRPC when the call arrives */
    grpc_call *gc;
    gpr_timespec deadline;
    grpc_metadata_array md;
    grpc_call_details details; /* unregistered methods only */
    grpc_byte_buffer *payload; /* the request, or the current bidi message */

    gtag t_request, t_recv, t_send, t_close, t_final;

    /* Everything below is guarded by mu; every grpc_call_start_batch on the
     * call runs under mu, which serialises batches as the core requires.
     * Each outstanding batch holds a reference on the core's call. */
    pthread_mutex_t mu;
    bool initial_md_sent;
    bool sending;        /* a SEND_MESSAGE batch is outstanding */
    bool status_set;     /* the outcome is rendered into status/trailer */
    bool final_started;  /* the status batch is started */
    bool peer_gone;      /* a batch failed: the client is gone */
    bool recv_paused;    /* bidi: not reading until the queued replies drain */
    int close_cancelled; /* out-argument of RECV_CLOSE_ON_SERVER */
    send_item *q_head, *q_tail;
    size_t q_len, q_bytes;
    grpc_byte_buffer *send_bb;  /* the message on the wire */
    grpc_byte_buffer *reply_bb; /* unary: the reply in the status batch */
    grpc_status_code status;
    grpc_slice status_msg;
    grpc_metadata trailer; /* grpc-status-details-bin, when has_trailer */
    bool has_trailer;
} gcall;

struct svc_grpc {
    svc_server *s;
    grpc_server *server;
    grpc_completion_queue *cq;
    void **registered; /* per row of svc_methods */
    size_t max_message_bytes;
    gtag t_shutdown;
    pthread_t cq_thread;
    bool cq_thread_started;
};

static const svc_transport GRPC_TRANSPORT;

#define GCALL_OF(tag, member) ((gcall *)((char *)(tag)-offsetof(gcall, member)))

/* ---- gcall memory ------------------------------------------------------------- */

static gcall *gcall_new(svc_grpc *g, const svc_method *m, size_t index)
{
    gcall *c = calloc(1, sizeof *c);
    if (c == NULL)
        return NULL;
    c->g = g;
    c->method = m;
    c->method_index = index;
    c->t_request.kind = TAG_REQUEST;
    c->t_recv.kind = TAG_RECV;
    c->t_send.kind = TAG_SEND;
    c->t_close.kind = TAG_CLOSE;
    c->t_final.kind = TAG_FINAL;
    grpc_metadata_array_init(&c->md);
    if (m == NULL)
        grpc_call_details_init(&c->details);
    c->status_msg = grpc_empty_slice();
    pthread_mutex_init(&c->mu, NULL);
    return c;
}

static void drop_queue(gcall *c)
{
    while (c->q_head != NULL) {
        send_item *it = c->q_head;
        c->q_head = it->next;
        grpc_byte_buffer_destroy(it->bb);
        free(it);
    }
    c->q_tail = NULL;
    c->q_len = 0;
    c->q_bytes = 0;
}

static void gcall_free(gcall *c)
{
    if (c->gc != NULL)
        grpc_call_unref(c->gc);
    grpc_metadata_array_destroy(&c->md);
    if (c->method == NULL)
        grpc_call_details_destroy(&c->details);
    if (c->payload != NULL)
        grpc_byte_buffer_destroy(c->payload);
    if (c->send_bb != NULL)
        grpc_byte_buffer_destroy(c->send_bb);
    if (c->reply_bb != NULL)
        grpc_byte_buffer_destroy(c->reply_bb);
    drop_queue(c);
    grpc_slice_unref(c->status_msg);
    if (c->has_trailer) {
        grpc_slice_unref(c->trailer.key);
        grpc_slice_unref(c->trailer.value);
    }
    pthread_mutex_destroy(&c->mu);
    free(c);
}

/* ---- batches (all under c->mu) -------------------------------------------------- */

/* Starts the status batch: initial metadata when not sent yet, the unary
 * reply, the status with its details, and for calls without an early
 * RECV_CLOSE_ON_SERVER that op too. */
static void start_final_locked(gcall *c)
{
    grpc_op ops[4];
    size_t n = 0;
    memset(ops, 0, sizeof ops);
    if (!c->initial_md_sent) {
        ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA;
        c->initial_md_sent = true;
    }
    if (c->reply_bb != NULL) {
        ops[n].op = GRPC_OP_SEND_MESSAGE;
        ops[n++].data.send_message.send_message = c->reply_bb;
    }
    ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
    ops[n].data.send_status_from_server.status = c->status;
    ops[n].data.send_status_from_server.status_details = &c->status_msg;
    if (c->has_trailer) {
        ops[n].data.send_status_from_server.trailing_metadata_count = 1;
        ops[n].data.send_status_from_server.trailing_metadata = &c->trailer;
    }
    n++;
    bool stream = c->method != NULL && c->method->kind != SVC_UNARY;
    if (!stream) {
        ops[n].op = GRPC_OP_RECV_CLOSE_ON_SERVER;
        ops[n++].data.recv_close_on_server.cancelled = &c->close_cancelled;
    }
    c->final_started = true;
    svc_call_hold(c->call);
    grpc_call_error e = grpc_call_start_batch(c->gc, ops, n, &c->t_final, NULL);
    if (e != GRPC_CALL_OK) {
        svc_call_release(c->call); /* the core's owner reference is still held */
        svc_log_json(SVC_LOG_ERROR, "status batch refused", json_pack("{s:i}", "code", (int)e));
    }
}

/* Puts the next queued message on the wire. */
static void start_send_locked(gcall *c)
{
    send_item *it = c->q_head;
    c->q_head = it->next;
    if (c->q_head == NULL)
        c->q_tail = NULL;
    c->q_len--;
    c->q_bytes -= it->len;
    c->send_bb = it->bb;
    free(it);

    grpc_op ops[2];
    size_t n = 0;
    memset(ops, 0, sizeof ops);
    if (!c->initial_md_sent) {
        ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA;
        c->initial_md_sent = true;
    }
    ops[n].op = GRPC_OP_SEND_MESSAGE;
    ops[n++].data.send_message.send_message = c->send_bb;
    c->sending = true;
    svc_call_hold(c->call);
    if (grpc_call_start_batch(c->gc, ops, n, &c->t_send, NULL) != GRPC_CALL_OK) {
        svc_call_release(c->call);
        c->sending = false;
        c->peer_gone = true;
        grpc_byte_buffer_destroy(c->send_bb);
        c->send_bb = NULL;
        drop_queue(c);
    }
}

/* Posts a single-op batch with tag t; false when the core refuses it. */
static bool start_one_locked(gcall *c, grpc_op_type type, gtag *t)
{
    grpc_op op;
    memset(&op, 0, sizeof op);
    op.op = type;
    if (type == GRPC_OP_RECV_MESSAGE)
        op.data.recv_message.recv_message = &c->payload;
    else
        op.data.recv_close_on_server.cancelled = &c->close_cancelled;
    svc_call_hold(c->call);
    if (grpc_call_start_batch(c->gc, &op, 1, t, NULL) != GRPC_CALL_OK) {
        svc_call_release(c->call);
        return false;
    }
    return true;
}

/* ---- serialisation ---------------------------------------------------------------- */

/* len bytes as a new byte buffer (copied). */
static grpc_byte_buffer *bytes_buffer(const void *bytes, size_t len)
{
    grpc_slice slice = grpc_slice_from_copied_buffer(bytes, len);
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&slice, 1);
    grpc_slice_unref(slice);
    return bb;
}

/* msg, whose packed size is len, as a new byte buffer. */
static grpc_byte_buffer *pack(const ProtobufCMessage *msg, size_t len)
{
    grpc_slice slice = grpc_slice_malloc(len);
    protobuf_c_message_pack(msg, GRPC_SLICE_START_PTR(slice));
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&slice, 1);
    grpc_slice_unref(slice);
    return bb;
}

/* A compressed message (gzip or deflate, grpc-encoding) inflated into a
 * malloc'd buffer of at most limit bytes (*len): the server runs with the
 * core's decompression off (GRPC_ARG_ENABLE_PER_MESSAGE_DECOMPRESSION 0),
 * because the core inflates without bound before any size check — a 1.5 MB
 * gzip of zeros became 1.5 GB. The buffer grows with the output, so a small
 * message costs little. NULL with err set: RD_BODY_TOO_LARGE past limit,
 * RD_INVALID_BODY for a corrupt stream, RD_UNIMPLEMENTED for another
 * algorithm. */
static uint8_t *inflate_bounded(grpc_byte_buffer *bb, size_t limit, size_t *len, rd_err *err)
{
    grpc_compression_algorithm algo = bb->data.raw.compression;
    const grpc_slice_buffer *in = &bb->data.raw.slice_buffer;
    if (algo != GRPC_COMPRESS_GZIP && algo != GRPC_COMPRESS_DEFLATE) {
        rd_errf(err, RD_UNIMPLEMENTED, NULL, "message compression %d is not supported; use gzip",
                (int)algo);
        return NULL;
    }
    z_stream z;
    memset(&z, 0, sizeof z);
    if (inflateInit2(&z, algo == GRPC_COMPRESS_GZIP ? 16 + MAX_WBITS : MAX_WBITS) != Z_OK) {
        rd_errf(err, RD_INTERNAL, NULL, "out of memory");
        return NULL;
    }
    size_t cap = in->length < limit / 4 ? in->length * 4 + 1024 : limit + 1, n = 0;
    if (cap > limit + 1)
        cap = limit + 1;
    uint8_t *out = malloc(cap);
    int zr = Z_OK;
    for (size_t i = 0; out != NULL && i < in->count && zr != Z_STREAM_END; i++) {
        z.next_in = GRPC_SLICE_START_PTR(in->slices[i]);
        z.avail_in = (uInt)GRPC_SLICE_LENGTH(in->slices[i]);
        while (z.avail_in > 0 && zr != Z_STREAM_END) {
            if (n == cap) {
                if (cap > limit) { /* limit + 1 bytes: too large */
                    rd_errf(err, RD_BODY_TOO_LARGE, NULL,
                            "the decompressed message is larger than %zu bytes "
                            "(--max-message-bytes)",
                            limit);
                    goto fail;
                }
                size_t ncap = cap * 2 > limit + 1 ? limit + 1 : cap * 2;
                uint8_t *grown = realloc(out, ncap);
                if (grown == NULL) {
                    rd_errf(err, RD_INTERNAL, NULL, "out of memory");
                    goto fail;
                }
                out = grown;
                cap = ncap;
            }
            z.next_out = out + n;
            z.avail_out = (uInt)(cap - n);
            zr = inflate(&z, Z_NO_FLUSH);
            n = cap - z.avail_out;
            if (zr != Z_OK && zr != Z_STREAM_END && zr != Z_BUF_ERROR) {
                rd_errf(err, RD_INVALID_BODY, NULL, "the compressed message is corrupt");
                goto fail;
            }
        }
    }
    if (out == NULL || (zr != Z_STREAM_END && err->code == RD_OK)) {
        if (out == NULL)
            rd_errf(err, RD_INTERNAL, NULL, "out of memory");
        else
            rd_errf(err, RD_INVALID_BODY, NULL, "the compressed message is truncated");
        goto fail;
    }
    if (n > limit) {
        rd_errf(err, RD_BODY_TOO_LARGE, NULL,
                "the decompressed message is larger than %zu bytes (--max-message-bytes)", limit);
        goto fail;
    }
    inflateEnd(&z);
    *len = n;
    return out;
fail:
    inflateEnd(&z);
    free(out);
    return NULL;
}

/* Unpacks bb as a d into arena a. NULL with err set (RD_INVALID_BODY) when
 * the bytes are not a valid d. */
static ProtobufCMessage *unpack(rd_arena *a, size_t limit, const ProtobufCMessageDescriptor *d,
                                grpc_byte_buffer *bb, rd_err *err)
{
    ProtobufCMessage *msg = NULL;
    grpc_byte_buffer_reader reader;
    grpc_slice first = grpc_empty_slice();
    const uint8_t *buf = NULL;
    uint8_t *inflated = NULL;
    size_t len = 0;
    bool reader_ok = false;

    if (bb == NULL) {
        rd_errf(err, RD_INVALID_BODY, NULL, "request body is missing: expected a %s", d->name);
        goto done;
    }
    if (bb->type == GRPC_BB_RAW && bb->data.raw.compression != GRPC_COMPRESS_NONE) {
        inflated = inflate_bounded(bb, limit, &len, err);
        if (inflated == NULL)
            goto done;
        buf = inflated;
        goto parse;
    }
    if (!grpc_byte_buffer_reader_init(&reader, bb)) {
        rd_errf(err, RD_INVALID_BODY, NULL, "request body could not be decompressed");
        goto done;
    }
    reader_ok = true;
    size_t total = grpc_byte_buffer_length(reader.buffer_out);
    if (grpc_byte_buffer_reader_next(&reader, &first) && GRPC_SLICE_LENGTH(first) == total) {
        buf = GRPC_SLICE_START_PTR(first);
        len = total;
    } else {
        /* several slices: gather them into the arena */
        uint8_t *p = rd_arena_alloc(a, total ? total : 1);
        if (p == NULL) {
            rd_errf(err, RD_INVALID_BODY, NULL, "request body is too large");
            goto done;
        }
        size_t off = GRPC_SLICE_LENGTH(first);
        memcpy(p, GRPC_SLICE_START_PTR(first), off);
        grpc_slice s;
        while (grpc_byte_buffer_reader_next(&reader, &s)) {
            size_t n = GRPC_SLICE_LENGTH(s);
            if (n > total - off)
                n = total - off;
            memcpy(p + off, GRPC_SLICE_START_PTR(s), n);
            off += n;
            grpc_slice_unref(s);
        }
        buf = p;
        len = off;
    }
parse:
    if (svc_pb_precheck(d, buf, len, err) != RD_OK)
        goto done;
    ProtobufCAllocator alloc;
    rd_arena_pb_allocator(a, &alloc);
    msg = protobuf_c_message_unpack(d, &alloc, len, buf);
    if (msg == NULL)
        rd_errf(err, RD_INVALID_BODY, NULL, "request body is not a valid %s", d->name);
done:
    grpc_slice_unref(first);
    if (reader_ok)
        grpc_byte_buffer_reader_destroy(&reader);
    free(inflated); /* protobuf-c copied what it kept */
    return msg;
}

/* ---- the transport callbacks --------------------------------------------------------- */

static bool tp_metadata(void *arg, const char *key, const char **value, size_t *len)
{
    gcall *c = arg;
    for (size_t i = 0; i < c->md.count; i++) {
        const grpc_metadata *m = &c->md.metadata[i];
        if (grpc_slice_str_cmp(m->key, key) == 0) {
            *value = (const char *)GRPC_SLICE_START_PTR(m->value);
            *len = GRPC_SLICE_LENGTH(m->value);
            return true;
        }
    }
    return false;
}

/* From gRPC's auth context, filled only by a verifying handshake. */
static bool tp_peer_presents(void *arg, const char *id)
{
    gcall *c = arg;
    grpc_auth_context *ac = grpc_call_auth_context(c->gc);
    if (ac == NULL)
        return false;
    static const char *const names[] = {GRPC_PEER_URI_PROPERTY_NAME, GRPC_PEER_DNS_PROPERTY_NAME};
    size_t n = strlen(id);
    bool found = false;
    if (grpc_auth_context_peer_is_authenticated(ac))
        for (size_t i = 0; !found && i < sizeof names / sizeof names[0]; i++) {
            grpc_auth_property_iterator it =
                grpc_auth_context_find_properties_by_name(ac, names[i]);
            const grpc_auth_property *p;
            while (!found && (p = grpc_auth_property_iterator_next(&it)) != NULL)
                found = p->value_length == n && memcmp(p->value, id, n) == 0;
        }
    grpc_auth_context_release(ac);
    return found;
}

/* On a worker, or the CQ thread for the fast path; the payload is only
 * touched by whoever runs the call (bidi: one message at a time). */
static ProtobufCMessage *tp_decode(void *arg, svc_call *call, rd_err *err)
{
    gcall *c = arg;
    ProtobufCMessage *req =
        unpack(svc_call_arena(call), c->g->max_message_bytes, c->method->req, c->payload, err);
    if (c->payload != NULL) {
        grpc_byte_buffer_destroy(c->payload);
        c->payload = NULL;
    }
    return req;
}

static rd_code tp_send(void *arg, svc_call *call, const ProtobufCMessage *msg, size_t len)
{
    gcall *c = arg;
    (void)call;
    grpc_byte_buffer *bb = pack(msg, len);
    send_item *it = malloc(sizeof *it);
    if (bb == NULL || it == NULL) {
        if (bb != NULL)
            grpc_byte_buffer_destroy(bb);
        free(it);
        return RD_INTERNAL;
    }
    it->next = NULL;
    it->bb = bb;
    it->len = len;

    rd_code rc = RD_OK;
    pthread_mutex_lock(&c->mu);
    if (c->status_set || c->peer_gone) {
        rc = RD_UNAVAILABLE;
    } else if (c->q_len >= SVC_SEND_QUEUE_MAX || c->q_bytes + len > SVC_SEND_QUEUE_MAX_BYTES) {
        rc = RD_RATE_LIMITED;
    } else {
        if (c->q_tail != NULL)
            c->q_tail->next = it;
        else
            c->q_head = it;
        c->q_tail = it;
        c->q_len++;
        c->q_bytes += len;
        if (!c->sending)
            start_send_locked(c);
    }
    pthread_mutex_unlock(&c->mu);
    if (rc != RD_OK) {
        grpc_byte_buffer_destroy(bb);
        free(it);
    }
    return rc;
}

/* Renders the outcome: the unary reply (the stored bytes of a replay as
 * they are, else the message packed), the status and its message, and
 * unless the outcome is a bare status, grpc-status-details-bin. */
static void tp_finish(void *arg, svc_call *call, const svc_outcome *o)
{
    gcall *c = arg;
    grpc_status_code status = (grpc_status_code)rd_code_grpc(o->err.code);
    const char *msg = o->err.msg;
    grpc_byte_buffer *reply = NULL;
    const uint8_t *details = NULL;
    size_t details_len = 0;
    if (status == GRPC_STATUS_OK && o->reply_bytes != NULL) {
        reply = bytes_buffer(o->reply_bytes, o->reply_len);
    } else if (status == GRPC_STATUS_OK && o->reply != NULL) {
        reply = pack(o->reply, protobuf_c_message_get_packed_size(o->reply));
    } else if (status != GRPC_STATUS_OK && !o->status_only) {
        details = svc_status_details(svc_call_arena(call), o, &details_len);
        if (details == NULL) {
            status = GRPC_STATUS_INTERNAL;
            msg = "out of memory building the error details";
        }
    }
    pthread_mutex_lock(&c->mu);
    c->status_set = true;
    c->status = status;
    c->reply_bb = reply;
    grpc_slice_unref(c->status_msg);
    c->status_msg = msg[0] != '\0' ? grpc_slice_from_copied_string(msg) : grpc_empty_slice();
    if (details != NULL && details_len > 0) {
        c->trailer.key = grpc_slice_from_static_string("grpc-status-details-bin");
        c->trailer.value = grpc_slice_from_copied_buffer((const char *)details, details_len);
        c->has_trailer = true;
    }
    if (!c->sending)
        start_final_locked(c);
    pthread_mutex_unlock(&c->mu);
}

/* Bidi: reads the next message, or pauses while too many replies wait. */
static bool tp_read_next(void *arg, svc_call *call)
{
    gcall *c = arg;
    (void)call;
    bool ok = true;
    pthread_mutex_lock(&c->mu);
    if (c->q_bytes > BIDI_READ_AHEAD_BYTES && !c->peer_gone) {
        c->recv_paused = true; /* on_send reads on once the replies drain */
    } else {
        c->recv_paused = false;
        ok = start_one_locked(c, GRPC_OP_RECV_MESSAGE, &c->t_recv);
    }
    pthread_mutex_unlock(&c->mu);
    return ok;
}

/* The request log line of a call that is over (service/svc_log.h). */
static void log_call(gcall *c, svc_call *call)
{
    char path[256];
    const char *method = c->method != NULL ? c->method->path : path;
    if (c->method == NULL)
        snprintf(path, sizeof path, "%.*s", (int)GRPC_SLICE_LENGTH(c->details.method),
                 (const char *)GRPC_SLICE_START_PTR(c->details.method));
    char rid[129] = "";
    const char *v;
    size_t n;
    if (tp_metadata(c, "x-request-id", &v, &n) && n < sizeof rid)
        snprintf(rid, sizeof rid, "%.*s", (int)n, v);
    const svc_outcome *o = svc_call_outcome(call);
    rd_code code = o != NULL ? o->err.code : RD_INTERNAL;
    const auth_principal *p = svc_call_principal(call);
    svc_log_req r = {.transport = "grpc",
                     .method = method,
                     .rd_code = code,
                     .grpc_code = (int)c->status,
                     .duration_us = rd_now_us() - svc_call_start_us(call),
                     .principal_id = p != NULL ? auth_principal_id(p) : NULL,
                     .server_tx_id = svc_call_tx_id(call),
                     .request_id = rid,
                     /* probes and tool discovery log at debug */
                     .probe = strncmp(method, "/grpc.health.v1.Health/", 23) == 0 ||
                              strncmp(method, "/grpc.reflection.", 17) == 0};
    svc_log_request(&r);
}

static void tp_release(void *arg, svc_call *call)
{
    gcall *c = arg;
    log_call(c, call);
    gcall_free(c);
}

static const svc_transport GRPC_TRANSPORT = {
    .kind = SVC_TRANSPORT_GRPC,
    .metadata = tp_metadata,
    .peer_presents = tp_peer_presents,
    .decode = tp_decode,
    .send = tp_send,
    .finish = tp_finish,
    .read_next = tp_read_next,
    .release = tp_release,
};

/* ---- completion-queue thread ----------------------------------------------------------- */

static grpc_call_error post_request(svc_grpc *g, const svc_method *m, size_t index)
{
    gcall *c = gcall_new(g, m, index);
    if (c == NULL)
        return GRPC_CALL_ERROR;
    grpc_call_error e;
    if (m == NULL) {
        e = grpc_server_request_call(g->server, &c->gc, &c->details, &c->md, g->cq, g->cq,
                                     &c->t_request);
    } else {
        bool with_payload = m->kind != SVC_BIDI_STREAM;
        e = grpc_server_request_registered_call(
            g->server, g->registered[index], &c->gc, &c->deadline, &c->md,
            with_payload ? &c->payload : NULL, g->cq, g->cq, &c->t_request);
    }
    if (e != GRPC_CALL_OK)
        gcall_free(c);
    return e;
}

static int64_t deadline_us(gpr_timespec t)
{
    gpr_timespec rt = gpr_convert_clock_type(t, GPR_CLOCK_REALTIME);
    if (gpr_time_cmp(rt, gpr_inf_future(GPR_CLOCK_REALTIME)) >= 0 || rt.tv_sec <= 0 ||
        rt.tv_sec > INT64_MAX / 1000000 - 1)
        return 0;
    return rt.tv_sec * 1000000 + rt.tv_nsec / 1000;
}

static bool small_plain_payload(const gcall *c)
{
    return c->payload != NULL && c->payload->type == GRPC_BB_RAW &&
           c->payload->data.raw.compression == GRPC_COMPRESS_NONE &&
           c->payload->data.raw.slice_buffer.length <= CQ_FAST_PATH_MAX_BYTES;
}

/* A call arrived (ok) or its slot was cancelled by shutdown (!ok). */
static void on_request(svc_grpc *g, gcall *c, bool ok)
{
    if (!ok) {
        gcall_free(c);
        return;
    }
    /* Re-posted while stopping too: a call that finds no slot before
     * grpc_server_shutdown_and_notify is dropped by the core (the client sees
     * CANCELLED), one that finds a slot is refused UNAVAILABLE by admission.
     * After the shutdown a new slot completes at once with ok = 0. */
    if (post_request(g, c->method, c->method_index) != GRPC_CALL_OK)
        svc_log_json(SVC_LOG_ERROR, "could not post a request slot", NULL);

    svc_call *call =
        svc_call_new(g->s, c->method, &GRPC_TRANSPORT, c, c->method ? deadline_us(c->deadline) : 0);
    if (call == NULL) {
        grpc_call_cancel_with_status(c->gc, GRPC_STATUS_RESOURCE_EXHAUSTED,
                                     "server is out of memory", NULL);
        gcall_free(c);
        return;
    }
    c->call = call;
    if (c->method == NULL) {
        char msg[256];
        grpc_slice m = c->details.method;
        snprintf(msg, sizeof msg, "unknown method %.*s",
                 (int)(GRPC_SLICE_LENGTH(m) > 200 ? 200 : GRPC_SLICE_LENGTH(m)),
                 (const char *)GRPC_SLICE_START_PTR(m));
        svc_end(call, RD_UNIMPLEMENTED, msg);
    } else if (svc_call_admit(call)) {
        /* A unary or server-stream call arrives with its request message
         * read; none means the client cancelled (reset the stream) before
         * sending it: answer at once, on this thread, instead of queueing
         * work for nobody (HTTP/2 rapid reset). An empty message is a
         * payload, not NULL. */
        if (c->method->kind != SVC_BIDI_STREAM && c->payload == NULL) {
            svc_metrics_refused(SVC_REFUSED_NO_MESSAGE);
            svc_end(call, RD_CANCELLED, "the call was cancelled before its request arrived");
        } else if (c->method->kind == SVC_UNARY) {
            svc_call_dispatch(call, small_plain_payload(c));
        } else {
            pthread_mutex_lock(&c->mu);
            bool started = start_one_locked(c, GRPC_OP_RECV_CLOSE_ON_SERVER, &c->t_close);
            /* svc_server_stop may already have ended an idle bidi stream */
            if (started && c->method->kind == SVC_BIDI_STREAM && !c->status_set)
                started = start_one_locked(c, GRPC_OP_RECV_MESSAGE, &c->t_recv);
            pthread_mutex_unlock(&c->mu);
            if (!started)
                svc_call_end_if_open(call, RD_INTERNAL, "could not start the stream");
            else if (c->method->kind == SVC_SERVER_STREAM)
                svc_call_dispatch(call, false);
            /* bidi: the core owns it until a message arrives */
        }
    }
    svc_call_release(call); /* the transport's reference: batches hold their own */
}

/* Bidi: a message arrived (payload set), or the client half-closed or the
 * call failed (payload NULL). */
static void on_recv(gcall *c, bool ok)
{
    pthread_mutex_lock(&c->mu);
    bool run = ok && c->payload != NULL && !c->status_set;
    if (!run && c->payload != NULL) {
        grpc_byte_buffer_destroy(c->payload);
        c->payload = NULL;
    }
    pthread_mutex_unlock(&c->mu);
    if (run)
        svc_call_deliver(c->call);
    else
        svc_call_end_if_open(c->call, RD_OK, NULL);
    svc_call_release(c->call); /* the RECV batch */
}

static void on_send(gcall *c, bool ok)
{
    svc_call *call = c->call;
    pthread_mutex_lock(&c->mu);
    grpc_byte_buffer_destroy(c->send_bb);
    c->send_bb = NULL;
    c->sending = false;
    if (!ok) {
        c->peer_gone = true;
        drop_queue(c);
    }
    if (c->q_head != NULL)
        start_send_locked(c);
    /* a bidi stream paused for its replies reads on once they drained */
    bool read_on = c->recv_paused && (c->q_bytes <= BIDI_READ_AHEAD_BYTES || c->peer_gone);
    if (read_on)
        c->recv_paused = false;
    if (!c->sending && c->status_set && !c->final_started)
        start_final_locked(c);
    bool gone = c->peer_gone;
    pthread_mutex_unlock(&c->mu);
    if (gone)
        svc_call_cancel(call);
    if (read_on)
        svc_call_read_on(call);
    svc_call_release(call); /* the SEND batch */
}

/* Streams: the call is over (after our status) or was cancelled. */
static void on_close(gcall *c, bool ok)
{
    pthread_mutex_lock(&c->mu);
    bool gone = !ok || c->close_cancelled;
    if (gone) {
        c->peer_gone = true;
        drop_queue(c);
    }
    pthread_mutex_unlock(&c->mu);
    if (gone)
        svc_call_cancel(c->call); /* the CLOSE reference keeps the call alive */
    svc_call_release(c->call);
}

static void *cq_main(void *arg)
{
    svc_grpc *g = arg;
    pthread_setname_np(pthread_self(), "rd-cq");
    for (;;) {
        grpc_event ev = grpc_completion_queue_next(g->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        if (ev.type == GRPC_QUEUE_SHUTDOWN)
            break;
        if (ev.type != GRPC_OP_COMPLETE)
            continue;
        gtag *t = ev.tag;
        bool ok = ev.success != 0;
        switch (t->kind) {
        case TAG_REQUEST:
            on_request(g, GCALL_OF(t, t_request), ok);
            break;
        case TAG_RECV:
            on_recv(GCALL_OF(t, t_recv), ok);
            break;
        case TAG_SEND:
            on_send(GCALL_OF(t, t_send), ok);
            break;
        case TAG_CLOSE:
            on_close(GCALL_OF(t, t_close), ok);
            break;
        case TAG_FINAL:
            svc_call_release(GCALL_OF(t, t_final)->call);
            break;
        case TAG_SHUTDOWN:
            svc_server_transport_down(g->s);
            break;
        }
    }
    return NULL;
}

/* ---- the listener ------------------------------------------------------------------------ */

/* Shuts the completion queue down, drains it (slots that never got a call)
 * and destroys server and queue. */
static void drain_and_destroy(svc_grpc *g)
{
    if (g->cq_thread_started) {
        grpc_completion_queue_shutdown(g->cq);
        pthread_join(g->cq_thread, NULL);
    } else if (g->cq != NULL) {
        grpc_completion_queue_shutdown(g->cq);
        for (;;) {
            grpc_event ev =
                grpc_completion_queue_next(g->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
            if (ev.type == GRPC_QUEUE_SHUTDOWN)
                break;
            if (ev.type == GRPC_OP_COMPLETE && ((gtag *)ev.tag)->kind == TAG_REQUEST)
                gcall_free(GCALL_OF(ev.tag, t_request));
        }
    }
    if (g->server != NULL)
        grpc_server_destroy(g->server);
    if (g->cq != NULL)
        grpc_completion_queue_destroy(g->cq);
}

void svc_grpc_free(svc_grpc *g)
{
    if (g == NULL)
        return;
    drain_and_destroy(g);
    free(g->registered);
    free(g);
    grpc_shutdown_blocking();
}

/* Shutdown of a listener whose thread never started: nothing is in flight. */
static void abort_start(svc_grpc *g)
{
    if (g->server != NULL) {
        grpc_server_shutdown_and_notify(g->server, g->cq, &g->t_shutdown);
        for (;;) {
            grpc_event ev =
                grpc_completion_queue_next(g->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
            if (ev.type == GRPC_OP_COMPLETE && ev.tag == &g->t_shutdown)
                break;
            if (ev.type == GRPC_OP_COMPLETE && ((gtag *)ev.tag)->kind == TAG_REQUEST)
                gcall_free(GCALL_OF(ev.tag, t_request));
        }
    }
    svc_grpc_free(g);
}

rd_code svc_grpc_start(svc_server *s, const svc_options *opt, svc_grpc **out, int *bound_port,
                       rd_err *err)
{
    *out = NULL;
    grpc_init();
    svc_grpc *g = calloc(1, sizeof *g);
    if (g == NULL) {
        grpc_shutdown_blocking();
        return rd_errf(err, RD_INTERNAL, NULL, "out of memory");
    }
    g->s = s;
    g->t_shutdown.kind = TAG_SHUTDOWN;
    g->max_message_bytes = (size_t)opt->max_message_bytes;
    g->registered = calloc(svc_n_methods ? svc_n_methods : 1, sizeof *g->registered);
    if (g->registered == NULL) {
        rd_errf(err, RD_INTERNAL, NULL, "out of memory");
        goto fail;
    }

    grpc_arg args[5];
    memset(args, 0, sizeof args);
    args[0].type = GRPC_ARG_INTEGER;
    args[0].key = GRPC_ARG_ALLOW_REUSEPORT;
    args[0].value.integer = 0;
    args[1].type = GRPC_ARG_INTEGER;
    args[1].key = GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH;
    args[1].value.integer = opt->max_message_bytes;
    args[2].type = GRPC_ARG_INTEGER;
    args[2].key = GRPC_ARG_MAX_SEND_MESSAGE_LENGTH;
    args[2].value.integer = opt->max_message_bytes;
    /* compressed requests are inflated by unpack, with a bound */
    args[3].type = GRPC_ARG_INTEGER;
    args[3].key = GRPC_ARG_ENABLE_PER_MESSAGE_DECOMPRESSION;
    args[3].value.integer = 0;
    /* HTTP/2 streams one connection may have open (rapid-reset floods) */
    args[4].type = GRPC_ARG_INTEGER;
    args[4].key = GRPC_ARG_MAX_CONCURRENT_STREAMS;
    args[4].value.integer = opt->max_concurrent_streams > 0 ? opt->max_concurrent_streams : 100;
    grpc_channel_args cargs = {5, args};

    g->cq = grpc_completion_queue_create_for_next(NULL);
    g->server = grpc_server_create(&cargs, NULL);
    grpc_server_register_completion_queue(g->server, g->cq, NULL);
    for (size_t i = 0; i < svc_n_methods; i++) {
        const svc_method *m = &svc_methods[i];
        grpc_server_register_method_payload_handling ph =
            m->kind == SVC_BIDI_STREAM ? GRPC_SRM_PAYLOAD_NONE
                                       : GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER;
        g->registered[i] = grpc_server_register_method(g->server, m->path, NULL, ph, 0);
        if (g->registered[i] == NULL) {
            rd_errf(err, RD_INTERNAL, NULL, "cannot register method %s", m->path);
            goto fail;
        }
    }
    grpc_server_credentials *creds = opt->tls != NULL ? svc_tls_grpc_credentials(opt->tls)
                                                      : grpc_insecure_server_credentials_create();
    if (creds == NULL) {
        rd_errf(err, RD_INTERNAL, "grpc_listen", "cannot create the TLS credentials");
        goto fail;
    }
    int port = grpc_server_add_http2_port(g->server, opt->listen, creds);
    grpc_server_credentials_release(creds);
    if (port == 0) {
        char why[256];
        rd_errf(err, RD_UNAVAILABLE, "grpc_listen", "cannot listen on %s: %s", opt->listen,
                svc_listen_cause(opt->listen, why, sizeof why));
        goto fail;
    }
    grpc_server_start(g->server);

    for (size_t i = 0; i < svc_n_methods; i++)
        for (int k = 0; k < PENDING_PER_METHOD; k++)
            if (post_request(g, &svc_methods[i], i) != GRPC_CALL_OK) {
                rd_errf(err, RD_INTERNAL, NULL, "cannot request calls for %s", svc_methods[i].path);
                goto fail;
            }
    for (int k = 0; k < PENDING_GENERIC; k++)
        if (post_request(g, NULL, 0) != GRPC_CALL_OK) {
            rd_errf(err, RD_INTERNAL, NULL, "cannot request calls for unknown methods");
            goto fail;
        }

    if (pthread_create(&g->cq_thread, NULL, cq_main, g) != 0) {
        rd_errf(err, RD_INTERNAL, NULL, "cannot start the completion-queue thread");
        goto fail;
    }
    g->cq_thread_started = true;
    *bound_port = port;
    *out = g;
    return RD_OK;
fail:
    abort_start(g);
    return err->code;
}

void svc_grpc_shutdown(svc_grpc *g)
{
    grpc_server_shutdown_and_notify(g->server, g->cq, &g->t_shutdown);
}

void svc_grpc_cancel_all(svc_grpc *g)
{
    grpc_server_cancel_all_calls(g->server);
}
