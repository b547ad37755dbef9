/* The gRPC server core (svc.h) over the gRPC C core API. One completion-queue
 * thread accepts calls and completes batches; it never runs a handler or
 * touches SQLite. A pool of workers unpacks requests and runs handlers.
 * Each call is one svc_call: its tags, its arena, its send queue and a
 * reference count that frees it once nothing refers to it any more.
 * docs/internals/server.md describes threads, call lifecycle and shutdown. */
#include <errno.h>
#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/slice.h>
#include <grpc/support/time.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zlib.h>

#include "service/receipt.h"
#include "service/server_int.h"
#include "service/svc_convert.h"
#include "service/svc_auth.h"
#include "service/svc_handlers.h"
#include "service/svc_metrics.h"
#include "service/svc_log.h"
#include "service/svc_tls.h"

/* Outstanding request_call slots per registered method and for unregistered
 * methods. A slot is re-posted as soon as its call arrives; calls arriving
 * while every slot is taken wait inside gRPC. */
enum { PENDING_PER_METHOD = 16, PENDING_GENERIC = 2 };

/* Calls waiting for a worker. Beyond this the server sheds load with
 * RESOURCE_EXHAUSTED instead of queueing without bound. */
enum { WORK_QUEUE_MAX = 8192 };

/* How long svc_server_stop waits, once no call is in flight, for idle
 * clients to close their connections after the GOAWAY before closing them. */
enum { IDLE_LINGER_MS = 1000 };

/* How long no call may arrive or be in flight before svc_server_stop shuts
 * the transport down: until then new calls are refused with UNAVAILABLE by
 * the server itself, afterwards a call racing the GOAWAY is reset by the
 * core (CANCELLED on the client). */
enum { QUIET_MS = 100 };

/* Per-call arena: a base plus room for a decoded request of the largest
 * admitted size (decoded protobuf takes several times its wire size). */
#define ARENA_BASE_BYTES ((size_t)64 << 20)
#define ARENA_PER_MESSAGE_BYTE 8

typedef enum tag_kind {
    TAG_REQUEST,  /* request_call / request_registered_call completed */
    TAG_RECV,     /* bidi: RECV_MESSAGE completed */
    TAG_SEND,     /* streams: SEND_MESSAGE (+ initial metadata) completed */
    TAG_CLOSE,    /* streams: RECV_CLOSE_ON_SERVER completed (call over or cancelled) */
    TAG_FINAL,    /* the status batch completed */
    TAG_SHUTDOWN, /* grpc_server_shutdown_and_notify completed */
} tag_kind;

typedef struct svc_tag {
    tag_kind kind;
} svc_tag;

/* A message queued by svc_send. */
typedef struct send_item {
    struct send_item *next;
    grpc_byte_buffer *bb;
    size_t len;
} send_item;

/* One request metadata entry of another transport. */
typedef struct svc_md_kv {
    const char *key, *value;
} svc_md_kv;

struct svc_call {
    svc_server *server;
    const svc_method *method; /* NULL: an unregistered method */
    size_t method_index;      /* row of svc_methods, for re-posting the slot */

    /* filled by gRPC when the call arrives */
    grpc_call *call;
    gpr_timespec deadline;
    grpc_metadata_array md;
    grpc_call_details details; /* unregistered methods only */
    grpc_byte_buffer *payload; /* the request, or the current bidi message */

    rd_arena *arena;
    int64_t deadline_us;

    /* set by the auth step on the worker before the handler runs */
    auth_principal *principal; /* NULL on public methods */
    const char *peer_ids;      /* transport calls: the client certificate's names (arena) */
    auth_required required;    /* PERMISSION_DENIED details; strings in the arena */
    bool has_required;
    int64_t retry_after_ms; /* RD_RATE_LIMITED: RetryInfo */

    /* for the request log line (service/svc_log.h) */
    int64_t start_us;   /* arrival: latency metrics and the log line */
    int log_code;       /* rd_code of the outcome, -1 when none was noted */
    char log_tx_id[40]; /* server tx id of the write, "" when none */

    svc_tag t_request, t_recv, t_send, t_close, t_final;

    /* Everything below is guarded by mu; every grpc_call_start_batch on the
     * call runs under mu, which serialises batches as the core requires. */
    pthread_mutex_t mu;
    /* References: the owner (handler, or the server for bidi streams) until
     * the call is finished, one per outstanding batch, one while queued for
     * or running on a worker, one while svc_server_stop works on it. */
    int refs;
    bool initial_md_sent;
    bool sending;         /* a SEND_MESSAGE batch is outstanding */
    bool finishing;       /* the status is decided */
    bool final_started;   /* the status batch is started */
    bool peer_gone;       /* cancelled, disconnected or past its deadline */
    bool end_fired;       /* end_fn ran (or is running) */
    bool stop_requested;  /* svc_server_stop asked the stream to end */
    bool handler_running; /* bidi: a message is queued for or on a worker */
    int close_cancelled;  /* out-argument of RECV_CLOSE_ON_SERVER */
    send_item *q_head, *q_tail;
    size_t q_len, q_bytes;
    bool recv_paused;           /* bidi: not reading until the queued replies drain */
    grpc_byte_buffer *send_bb;  /* the message on the wire */
    grpc_byte_buffer *reply_bb; /* unary: the reply in the status batch */
    grpc_status_code status;
    grpc_slice status_msg;
    grpc_metadata trailer; /* grpc-status-details-bin, when has_trailer */
    bool has_trailer;
    svc_end_fn end_fn;
    void *end_arg;

    /* Another transport (svc_call_new_transport): NULL for gRPC calls. Its
     * request metadata lives in the arena. */
    const svc_transport *tp;
    void *tp_arg;
    svc_md_kv *xmd;
    size_t n_xmd, cap_xmd;
    bool replayed; /* svc_call_set_replayed */

    svc_call *next_work;             /* worker queue (server mu) */
    svc_call *live_prev, *live_next; /* open streams (server mu) */
    bool live;
};

struct svc_server {
    grpc_server *server;
    grpc_completion_queue *cq;
    void **registered; /* per row of svc_methods */
    svc_ctx *ctx;
    int max_message_bytes;
    size_t arena_cap;
    svc_reflection *reflection;
    svc_tag t_shutdown;
    atomic_bool stopping;

    pthread_t cq_thread;
    bool cq_thread_started;
    pthread_t *workers;
    int n_workers;

    pthread_mutex_t mu;        /* guards everything below */
    pthread_cond_t work_cond;  /* workers: work arrived or exit */
    pthread_cond_t state_cond; /* stop: shutdown_done or inflight changed */
    svc_call *work_head, *work_tail;
    size_t work_len;
    bool workers_exit;
    bool shutdown_done;
    size_t inflight;
    size_t max_inflight; /* --max-inflight-calls; 0 = no limit */
    size_t arrivals;     /* calls accepted so far, for svc_server_stop's quiet wait */
    svc_call *live;      /* streaming calls, for svc_server_stop */
};

#define CALL_OF(tag, member) ((svc_call *)((char *)(tag)-offsetof(svc_call, member)))

static void log_line(const char *level, const char *msg)
{
    svc_log_level l = SVC_LOG_ERROR;
    svc_log_parse_level(level, &l);
    svc_log_json(l, msg, NULL);
}

/* ---- call memory ------------------------------------------------------------ */

static svc_call *call_new(svc_server *s, const svc_method *m, size_t index)
{
    svc_call *c = calloc(1, sizeof *c);
    if (c == NULL)
        return NULL;
    c->server = s;
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
    c->log_code = -1;
    pthread_mutex_init(&c->mu, NULL);
    return c;
}

static void drop_queue(svc_call *c)
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

/* Releases everything of a call that never arrived or whose last
 * reference is gone. */
static void call_destroy(svc_call *c)
{
    if (c->tp != NULL && c->tp->release != NULL)
        c->tp->release(c->tp_arg);
    if (c->call != NULL)
        grpc_call_unref(c->call);
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
    rd_arena_free(c->arena);
    auth_principal_free(c->principal);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

/* The request log line of a call that is over (service/svc_log.h). */
static void log_call(svc_call *c)
{
    if (c->tp != NULL) /* the transport logs its own requests (gw_http.c) */
        return;
    char path[256];
    const char *method = c->method != NULL ? c->method->path : path;
    if (c->method == NULL)
        snprintf(path, sizeof path, "%.*s", (int)GRPC_SLICE_LENGTH(c->details.method),
                 (const char *)GRPC_SLICE_START_PTR(c->details.method));
    char rid[129] = "";
    for (size_t i = 0; i < c->md.count; i++)
        if (grpc_slice_str_cmp(c->md.metadata[i].key, "x-request-id") == 0 &&
            GRPC_SLICE_LENGTH(c->md.metadata[i].value) < sizeof rid)
            snprintf(rid, sizeof rid, "%.*s", (int)GRPC_SLICE_LENGTH(c->md.metadata[i].value),
                     (const char *)GRPC_SLICE_START_PTR(c->md.metadata[i].value));
    svc_log_req r = {.transport = "grpc",
                     .method = method,
                     .rd_code = c->status == GRPC_STATUS_OK ? RD_OK : c->log_code,
                     .grpc_code = (int)c->status,
                     .duration_us = rd_now_us() - c->start_us,
                     .principal_id = c->principal ? auth_principal_id(c->principal) : NULL,
                     .server_tx_id = c->log_tx_id,
                     .request_id = rid,
                     .probe = strncmp(method, "/grpc.health.v1.Health/", 23) == 0};
    svc_log_request(&r);
}

/* The last reference is gone: the call leaves the server's books. */
static void call_free(svc_call *c)
{
    svc_server *s = c->server;
    log_call(c);
    pthread_mutex_lock(&s->mu);
    if (c->live) {
        svc_metrics_stream(c->tp != NULL ? SVC_TRANSPORT_HTTP : SVC_TRANSPORT_GRPC, -1);
        if (c->live_prev != NULL)
            c->live_prev->live_next = c->live_next;
        else
            s->live = c->live_next;
        if (c->live_next != NULL)
            c->live_next->live_prev = c->live_prev;
    }
    s->inflight--;
    if (s->inflight == 0)
        pthread_cond_broadcast(&s->state_cond);
    pthread_mutex_unlock(&s->mu);
    call_destroy(c);
}

static void call_unref(svc_call *c)
{
    pthread_mutex_lock(&c->mu);
    bool dead = --c->refs == 0;
    pthread_mutex_unlock(&c->mu);
    if (dead)
        call_free(c);
}

static bool is_stream(const svc_call *c)
{
    return c->method != NULL && c->method->kind != SVC_UNARY;
}

/* ---- batches (all under c->mu) ---------------------------------------------- */

/* Starts the status batch: initial metadata when not sent yet, the unary
 * reply, the status with its details, and for calls without an early
 * RECV_CLOSE_ON_SERVER that op too. */
static void start_final_locked(svc_call *c)
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
    if (!is_stream(c)) {
        ops[n].op = GRPC_OP_RECV_CLOSE_ON_SERVER;
        ops[n++].data.recv_close_on_server.cancelled = &c->close_cancelled;
    }
    c->final_started = true;
    c->refs++;
    grpc_call_error e = grpc_call_start_batch(c->call, ops, n, &c->t_final, NULL);
    if (e != GRPC_CALL_OK) {
        c->refs--; /* the owner still holds one */
        svc_log_json(SVC_LOG_ERROR, "status batch refused", json_pack("{s:i}", "code", (int)e));
    }
}

/* Puts the next queued message on the wire. */
static void start_send_locked(svc_call *c)
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
    c->refs++;
    if (grpc_call_start_batch(c->call, ops, n, &c->t_send, NULL) != GRPC_CALL_OK) {
        c->refs--;
        c->sending = false;
        c->peer_gone = true;
        grpc_byte_buffer_destroy(c->send_bb);
        c->send_bb = NULL;
        drop_queue(c);
    }
}

/* Posts a single-op batch with tag t; false when the core refuses it. */
static bool start_one_locked(svc_call *c, grpc_op_type type, svc_tag *t)
{
    grpc_op op;
    memset(&op, 0, sizeof op);
    op.op = type;
    if (type == GRPC_OP_RECV_MESSAGE)
        op.data.recv_message.recv_message = &c->payload;
    else
        op.data.recv_close_on_server.cancelled = &c->close_cancelled;
    c->refs++;
    if (grpc_call_start_batch(c->call, &op, 1, t, NULL) != GRPC_CALL_OK) {
        c->refs--;
        return false;
    }
    return true;
}

/* Decides the status. The caller still holds the owner reference and
 * drops it after unlocking. grpc_code outside 0..16 becomes UNKNOWN. */
static void set_status_locked(svc_call *c, int grpc_code, const char *msg, const void *details,
                              size_t details_len)
{
    c->finishing = true;
    if (c->method != NULL)
        svc_metrics_call(c->method_index, SVC_TRANSPORT_GRPC, grpc_code, rd_now_us() - c->start_us);
    c->status =
        grpc_code >= 0 && grpc_code <= 16 ? (grpc_status_code)grpc_code : GRPC_STATUS_UNKNOWN;
    grpc_slice_unref(c->status_msg);
    c->status_msg = msg != NULL ? grpc_slice_from_copied_string(msg) : grpc_empty_slice();
    if (details != NULL && details_len > 0) {
        c->trailer.key = grpc_slice_from_static_string("grpc-status-details-bin");
        c->trailer.value = grpc_slice_from_copied_buffer(details, details_len);
        c->has_trailer = true;
    }
    if (!c->sending)
        start_final_locked(c);
}

/* Finishes c (status, optional unary reply) and drops the owner reference.
 * A second finish on a live call is a caller bug; it is ignored. */
static void finish_ext(svc_call *c, const void *reply, size_t reply_len, int grpc_code,
                       const char *msg, const void *details, size_t details_len);

static void finish(svc_call *c, grpc_byte_buffer *reply, int grpc_code, const char *msg,
                   const void *details, size_t details_len)
{
    if (c->tp != NULL) { /* another transport: never a byte buffer */
        finish_ext(c, NULL, 0, grpc_code, msg, details, details_len);
        return;
    }
    pthread_mutex_lock(&c->mu);
    if (c->finishing) {
        pthread_mutex_unlock(&c->mu);
        if (reply != NULL)
            grpc_byte_buffer_destroy(reply);
        log_line("error", "a call was finished twice");
        return;
    }
    c->reply_bb = reply;
    set_status_locked(c, grpc_code, msg, details, details_len);
    pthread_mutex_unlock(&c->mu);
    call_unref(c);
}

/* ---- serialisation ------------------------------------------------------------ */

/* msg, whose packed size is len, as a new byte buffer; NULL when out of
 * memory. */
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

/* Unpacks bb as a d into the call's arena. NULL with err set (RD_INVALID_BODY)
 * when the bytes are not a valid d. */
static ProtobufCMessage *unpack(svc_call *c, const ProtobufCMessageDescriptor *d,
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
        inflated = inflate_bounded(bb, (size_t)c->server->max_message_bytes, &len, err);
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
        uint8_t *p = rd_arena_alloc(c->arena, total ? total : 1);
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
    rd_arena_pb_allocator(c->arena, &alloc);
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

/* ---- workers ---------------------------------------------------------------- */

/* Queues c for a worker, taking a reference. false when the queue is full
 * and bounded is set. */
static bool enqueue_work(svc_call *c, bool bounded)
{
    svc_server *s = c->server;
    pthread_mutex_lock(&c->mu);
    c->refs++;
    pthread_mutex_unlock(&c->mu);
    pthread_mutex_lock(&s->mu);
    if (bounded && s->work_len >= WORK_QUEUE_MAX) {
        pthread_mutex_unlock(&s->mu);
        call_unref(c);
        return false;
    }
    c->next_work = NULL;
    if (s->work_tail != NULL)
        s->work_tail->next_work = c;
    else
        s->work_head = c;
    s->work_tail = c;
    s->work_len++;
    pthread_cond_signal(&s->work_cond);
    pthread_mutex_unlock(&s->mu);
    return true;
}

/* The first value of request metadata key (lowercase) as a pointer and a
 * length (not NUL-terminated for gRPC); false when absent. */
static bool md_find(const svc_call *c, const char *key, const char **value, size_t *len)
{
    if (c->tp != NULL) {
        for (size_t i = 0; i < c->n_xmd; i++)
            if (strcmp(c->xmd[i].key, key) == 0) {
                *value = c->xmd[i].value;
                *len = strlen(*value);
                return true;
            }
        return false;
    }
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

/* Whether the call's connection presented a verified client certificate
 * whose URI or DNS subject alternative name is id: from gRPC's auth
 * context (filled only by a verifying handshake), or the names the HTTP
 * transport handed over (svc_call_set_peer_ids). */
static bool peer_presents(svc_call *c, const char *id)
{
    if (c->tp != NULL)
        return c->peer_ids != NULL && svc_tls_ids_contain(c->peer_ids, id);
    grpc_auth_context *ac = grpc_call_auth_context(c->call);
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

/* The auth step (DESIGN.md §6), the one place a credential is checked:
 * unless the method is public, authenticates the first `authorization`
 * value (API key or token) into c->principal, then takes one token from the
 * principal's rate-limit bucket. On failure the call is finished
 * (UNAUTHENTICATED, token_expired, RESOURCE_EXHAUSTED with RetryInfo) and
 * false returned. Nothing is logged: the credential never leaves here. */
static bool authenticate(svc_call *c)
{
    const svc_ctx *ctx = c->server->ctx;
    const char *value = NULL;
    size_t len = 0;
    rd_err err;
    rd_err_clear(&err);
    if (c->method->public)
        return true;
    if (c->principal == NULL) { /* else: authenticated_from_memory */
        md_find(c, "authorization", &value, &len);
        if (ctx->auth == NULL) {
            rd_errf(&err, RD_UNAUTHENTICATED, NULL,
                    "this server is configured without credentials");
            goto fail;
        }
        if (auth_authenticate(ctx->auth, value, len, &c->principal, &err) != RD_OK)
            goto fail;
    }
    const char *bound = auth_principal_client_id(c->principal);
    if (bound != NULL && !peer_presents(c, bound)) {
        rd_errf(&err, RD_UNAUTHENTICATED, NULL,
                "this credential is bound to a client certificate identity that this "
                "connection did not present (mutual TLS)");
        goto fail;
    }
    if (ctx->ratelimit != NULL &&
        auth_ratelimit_take(ctx->ratelimit, auth_principal_id(c->principal), 1, &c->retry_after_ms,
                            &err) != RD_OK)
        goto fail;
    return true;
fail:
    receipt_fail(c, &err);
    return false;
}

/* The completion-queue thread never waits on SQLite: it authenticates a
 * call only from memory (a cached API key, see svc_auth_memory_only_begin).
 * True with c->principal set; false, the call untouched, when the
 * credential needs the store or fails — a worker then does the whole auth
 * step (and reports the failure). The rate limit is taken later by
 * authenticate, as for every call. */
static bool authenticated_from_memory(svc_call *c)
{
    const svc_ctx *ctx = c->server->ctx;
    const char *value = NULL;
    size_t len = 0;
    rd_err err;
    auth_kind kind;
    const char *cred;
    size_t cred_len;
    if (ctx->auth == NULL)
        return false;
    md_find(c, "authorization", &value, &len);
    /* only API keys are cached: a token's signature check and revocation
     * read belong on a worker */
    if (auth_classify(value, len, &kind, &cred, &cred_len, &err) != RD_OK ||
        kind != AUTH_KIND_API_KEY)
        return false;
    svc_auth_memory_only_begin();
    rd_code code = auth_authenticate(ctx->auth, value, len, &c->principal, &err);
    bool needed_store = svc_auth_memory_only_end();
    if (code == RD_OK && !needed_store)
        return true;
    auth_principal_free(c->principal);
    c->principal = NULL;
    return false;
}

/* Unary and server-stream calls: deadline check, auth, unpack, handler. */
static void run_request(svc_call *c)
{
    rd_err err;
    rd_err_clear(&err);
    if (c->deadline_us != 0 && rd_now_us() >= c->deadline_us) {
        rd_errf(&err, RD_DEADLINE_EXCEEDED, NULL, "the deadline passed before the call started");
        receipt_fail(c, &err);
        return;
    }
    if (!authenticate(c))
        return;
    ProtobufCMessage *req = c->tp != NULL ? c->tp->decode(c->tp_arg, c, &err)
                                          : unpack(c, c->method->req, c->payload, &err);
    if (c->payload != NULL) {
        grpc_byte_buffer_destroy(c->payload);
        c->payload = NULL;
    }
    if (req == NULL) {
        receipt_fail(c, &err);
        return;
    }
    c->method->handler(c, req);
    if (c->tp != NULL && c->tp->started != NULL && is_stream(c)) {
        /* the work reference keeps c, and through it tp_arg, alive */
        pthread_mutex_lock(&c->mu);
        bool finishing = c->finishing;
        pthread_mutex_unlock(&c->mu);
        if (!finishing)
            c->tp->started(c->tp_arg);
    }
}

/* Bidi streams read ahead only while the replies already queued for the
 * client stay under this many bytes: a client that sends requests without
 * reading the answers (40 reflection streams once took 450 MB) is simply
 * not read from until it drains its replies (on_send resumes the reading). */
enum { BIDI_READ_AHEAD_BYTES = 64 * 1024 };

/* Bidi, after a message was handled (c->mu held): reads the next one, or
 * pauses while too many replies wait, or ends the call. true when the
 * caller must drop the owner reference (the status is set). */
static bool read_next_locked(svc_call *c)
{
    if (c->finishing)
        return false;
    if (c->stop_requested) {
        set_status_locked(c, GRPC_STATUS_UNAVAILABLE, "server is shutting down", NULL, 0);
        return true;
    }
    if (c->peer_gone) {
        set_status_locked(c, GRPC_STATUS_CANCELLED, "the client went away", NULL, 0);
        return true;
    }
    if (c->q_bytes > BIDI_READ_AHEAD_BYTES) {
        c->recv_paused = true; /* on_send reads on once the replies drain */
        return false;
    }
    c->recv_paused = false;
    if (!start_one_locked(c, GRPC_OP_RECV_MESSAGE, &c->t_recv)) {
        set_status_locked(c, GRPC_STATUS_OK, NULL, NULL, 0);
        return true;
    }
    return false;
}

/* Bidi streams: one received message, then the next read (or the end). */
static void run_message(svc_call *c)
{
    rd_err err;
    rd_err_clear(&err);
    c->has_required = false;
    bool authed = authenticate(c); /* finishes the call when false */
    ProtobufCMessage *req = authed ? unpack(c, c->method->req, c->payload, &err) : NULL;
    grpc_byte_buffer_destroy(c->payload);
    c->payload = NULL;
    if (req != NULL)
        c->method->handler(c, req);
    else if (authed)
        receipt_fail(c, &err);

    pthread_mutex_lock(&c->mu);
    c->handler_running = false;
    rd_arena_reset(c->arena);
    bool owner_done = read_next_locked(c);
    pthread_mutex_unlock(&c->mu);
    if (owner_done)
        call_unref(c);
}

static void *worker_main(void *arg)
{
    svc_server *s = arg;
    pthread_setname_np(pthread_self(), "rd-worker");
    for (;;) {
        pthread_mutex_lock(&s->mu);
        while (s->work_head == NULL && !s->workers_exit)
            pthread_cond_wait(&s->work_cond, &s->mu);
        svc_call *c = s->work_head;
        if (c == NULL) {
            pthread_mutex_unlock(&s->mu);
            break;
        }
        s->work_head = c->next_work;
        if (s->work_head == NULL)
            s->work_tail = NULL;
        s->work_len--;
        pthread_mutex_unlock(&s->mu);

        if (c->method->kind == SVC_BIDI_STREAM)
            run_message(c);
        else
            run_request(c);
        call_unref(c); /* the work reference */
    }
    return NULL;
}

/* ---- completion-queue thread -------------------------------------------------- */

static grpc_call_error post_request(svc_server *s, const svc_method *m, size_t index)
{
    svc_call *c = call_new(s, m, index);
    if (c == NULL)
        return GRPC_CALL_ERROR;
    grpc_call_error e;
    if (m == NULL) {
        e = grpc_server_request_call(s->server, &c->call, &c->details, &c->md, s->cq, s->cq,
                                     &c->t_request);
    } else {
        bool with_payload = m->kind != SVC_BIDI_STREAM;
        e = grpc_server_request_registered_call(
            s->server, s->registered[index], &c->call, &c->deadline, &c->md,
            with_payload ? &c->payload : NULL, s->cq, s->cq, &c->t_request);
    }
    if (e != GRPC_CALL_OK)
        call_destroy(c);
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

/* Answers a call the server will not run (unknown method, overload, out
 * of memory) with a status only. */
static void reject(svc_call *c, grpc_status_code code, const char *msg)
{
    finish(c, NULL, code, msg, NULL, 0);
}

/* Unary record writes run their auth step, unpack and handler on the
 * completion-queue thread instead of a worker when their credential is
 * verified from memory (authenticated_from_memory): the handlers never wait
 * (they check against the in-memory schema and queue to the writer), and
 * the hand-off to a worker was a futex wake-up and a context switch per
 * write (docs/PERFORMANCE.md). A credential that needs a store read goes
 * to a worker as before. Which methods may: svc_method.cq_fast_path.
 *
 * The CQ thread unpacks and handles only small, uncompressed requests: a
 * large one (a 2.7 MB update) would hold every other call's I/O for its
 * unpack and checks, and a compressed one may inflate to --max-message-bytes.
 * Those go to a worker. */
enum { CQ_FAST_PATH_MAX_BYTES = 16 * 1024 };

static bool small_plain_payload(const svc_call *c)
{
    return c->payload != NULL && c->payload->type == GRPC_BB_RAW &&
           c->payload->data.raw.compression == GRPC_COMPRESS_NONE &&
           c->payload->data.raw.slice_buffer.length <= CQ_FAST_PATH_MAX_BYTES;
}

/* A call arrived (ok) or its slot was cancelled by shutdown (!ok). */
static void on_request(svc_server *s, svc_call *c, bool ok)
{
    if (!ok) {
        call_destroy(c);
        return;
    }
    /* Re-posted while stopping too: a call that finds no slot before
     * grpc_server_shutdown_and_notify is dropped by the core (the client sees
     * CANCELLED), one that finds a slot is refused UNAVAILABLE below. After
     * the shutdown a new slot completes at once with ok = 0. */
    if (post_request(s, c->method, c->method_index) != GRPC_CALL_OK)
        log_line("error", "could not post a request slot");

    c->refs = 1; /* the owner's */
    c->start_us = rd_now_us();
    if (c->method != NULL) {
        c->deadline_us = deadline_us(c->deadline);
        c->arena = rd_arena_new(s->arena_cap);
    }
    /* Stopping is read under s->mu, where svc_server_stop sets it, so a
     * stream is either listed before stop_streams looks or refused here. */
    bool refused, over_limit;
    pthread_mutex_lock(&s->mu);
    s->inflight++;
    s->arrivals++;
    /* health checks are answered whatever the load, so probes see it */
    over_limit = s->max_inflight > 0 && s->inflight > s->max_inflight && c->method != NULL &&
                 !c->method->always_answered;
    /* while stopping, a health Check is still answered (NOT_SERVING), so a
     * probe sees the drain rather than a refused call */
    refused = atomic_load(&s->stopping) && (c->method == NULL || !c->method->always_answered);
    if (!refused && is_stream(c)) {
        svc_metrics_stream(SVC_TRANSPORT_GRPC, 1);
        c->live = true;
        c->live_next = s->live;
        if (s->live != NULL)
            s->live->live_prev = c;
        s->live = c;
    }
    pthread_mutex_unlock(&s->mu);

    if (c->method == NULL) {
        char msg[256];
        grpc_slice m = c->details.method;
        snprintf(msg, sizeof msg, "unknown method %.*s",
                 (int)(GRPC_SLICE_LENGTH(m) > 200 ? 200 : GRPC_SLICE_LENGTH(m)),
                 (const char *)GRPC_SLICE_START_PTR(m));
        reject(c, GRPC_STATUS_UNIMPLEMENTED, msg);
        return;
    }
    if (refused) {
        reject(c, GRPC_STATUS_UNAVAILABLE, "server is shutting down");
        return;
    }
    if (c->arena == NULL) {
        reject(c, GRPC_STATUS_RESOURCE_EXHAUSTED, "server is out of memory");
        return;
    }
    /* A unary or server-stream call arrives with its request message read;
     * none means the client cancelled (reset the stream) before sending it:
     * answer at once, on this thread, instead of queueing work for nobody
     * (HTTP/2 rapid reset). An empty message is a payload, not NULL. */
    if (c->method->kind != SVC_BIDI_STREAM && c->payload == NULL) {
        svc_metrics_refused(SVC_REFUSED_NO_MESSAGE);
        reject(c, GRPC_STATUS_CANCELLED, "the call was cancelled before its request arrived");
        return;
    }
    if (over_limit) {
        svc_metrics_refused(SVC_REFUSED_INFLIGHT);
        reject(c, GRPC_STATUS_RESOURCE_EXHAUSTED,
               "server is overloaded: too many calls in flight (--max-inflight-calls)");
        return;
    }
    if (is_stream(c)) {
        /* stop_streams may already have finished an idle bidi stream */
        bool started;
        pthread_mutex_lock(&c->mu);
        started = start_one_locked(c, GRPC_OP_RECV_CLOSE_ON_SERVER, &c->t_close);
        if (started && c->method->kind == SVC_BIDI_STREAM && !c->finishing)
            started = start_one_locked(c, GRPC_OP_RECV_MESSAGE, &c->t_recv);
        bool finishing = c->finishing;
        pthread_mutex_unlock(&c->mu);
        if (!started && !finishing) {
            reject(c, GRPC_STATUS_INTERNAL, "could not start the stream");
            return;
        }
        if (c->method->kind == SVC_BIDI_STREAM)
            return; /* the server owns it until a message arrives */
    }
    if (c->method->cq_fast_path && c->method->kind == SVC_UNARY && small_plain_payload(c) &&
        authenticated_from_memory(c)) {
        /* as a worker would, with the same work reference */
        svc_metrics_cq_fast_path();
        pthread_mutex_lock(&c->mu);
        c->refs++;
        pthread_mutex_unlock(&c->mu);
        run_request(c);
        call_unref(c);
        return;
    }
    if (!enqueue_work(c, true)) {
        svc_metrics_refused(SVC_REFUSED_QUEUE_FULL);
        reject(c, GRPC_STATUS_RESOURCE_EXHAUSTED, "server is overloaded");
    }
}

/* Bidi: a message arrived (payload set), or the client half-closed or the
 * call failed (payload NULL). */
static void on_recv(svc_call *c, bool ok)
{
    bool run = false, owner_done = false;
    pthread_mutex_lock(&c->mu);
    if (ok && c->payload != NULL && !c->finishing) {
        c->handler_running = true;
        run = true;
    } else {
        if (c->payload != NULL) {
            grpc_byte_buffer_destroy(c->payload);
            c->payload = NULL;
        }
        if (!c->finishing) {
            set_status_locked(c, GRPC_STATUS_OK, NULL, NULL, 0);
            owner_done = true;
        }
    }
    pthread_mutex_unlock(&c->mu);
    if (run)
        enqueue_work(c, false);
    if (owner_done)
        call_unref(c);
    call_unref(c); /* the RECV batch */
}

static void on_send(svc_call *c, bool ok)
{
    bool owner_done = false;
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
    if (c->recv_paused && (c->q_bytes <= BIDI_READ_AHEAD_BYTES || c->peer_gone))
        owner_done = read_next_locked(c);
    if (!c->sending && c->finishing && !c->final_started)
        start_final_locked(c);
    pthread_mutex_unlock(&c->mu);
    if (owner_done)
        call_unref(c);
    call_unref(c); /* the SEND batch */
}

/* Streams: the call is over (after our status) or was cancelled. */
static void on_close(svc_call *c, bool ok)
{
    svc_end_fn fn = NULL;
    void *arg = NULL;
    pthread_mutex_lock(&c->mu);
    if (!ok || c->close_cancelled) {
        c->peer_gone = true;
        drop_queue(c);
        if (c->end_fn != NULL && !c->end_fired && !c->finishing) {
            c->end_fired = true;
            fn = c->end_fn;
            arg = c->end_arg;
        }
    }
    pthread_mutex_unlock(&c->mu);
    if (fn != NULL)
        fn(c, arg); /* the CLOSE reference keeps c alive meanwhile */
    call_unref(c);
}

static void *cq_main(void *arg)
{
    svc_server *s = arg;
    pthread_setname_np(pthread_self(), "rd-cq");
    for (;;) {
        grpc_event ev = grpc_completion_queue_next(s->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        if (ev.type == GRPC_QUEUE_SHUTDOWN)
            break;
        if (ev.type != GRPC_OP_COMPLETE)
            continue;
        svc_tag *t = ev.tag;
        bool ok = ev.success != 0;
        switch (t->kind) {
        case TAG_REQUEST:
            on_request(s, CALL_OF(t, t_request), ok);
            break;
        case TAG_RECV:
            on_recv(CALL_OF(t, t_recv), ok);
            break;
        case TAG_SEND:
            on_send(CALL_OF(t, t_send), ok);
            break;
        case TAG_CLOSE:
            on_close(CALL_OF(t, t_close), ok);
            break;
        case TAG_FINAL:
            call_unref(CALL_OF(t, t_final));
            break;
        case TAG_SHUTDOWN:
            pthread_mutex_lock(&s->mu);
            s->shutdown_done = true;
            pthread_cond_broadcast(&s->state_cond);
            pthread_mutex_unlock(&s->mu);
            break;
        }
    }
    return NULL;
}

/* ---- public: calls ---------------------------------------------------------- */

svc_ctx *svc_call_ctx(svc_call *call)
{
    return call->server->ctx;
}

rd_arena *svc_call_arena(svc_call *call)
{
    return call->arena;
}

int64_t svc_call_deadline_us(const svc_call *call)
{
    return call->deadline_us;
}

const svc_method *svc_call_method(const svc_call *call)
{
    return call->method;
}

const char *svc_call_org(const svc_call *call)
{
    return call->principal != NULL ? auth_principal_org(call->principal) : "";
}

const char *svc_call_actor(const svc_call *call)
{
    return call->principal != NULL ? auth_principal_id(call->principal) : "";
}

const auth_principal *svc_call_principal(const svc_call *call)
{
    return call->principal;
}

void svc_call_set_required(svc_call *call, const auth_required *required)
{
    call->has_required = false;
    if (required == NULL || required->can == 0)
        return;
    call->required.can = required->can;
    call->required.model = rd_arena_strdup(call->arena, required->model ? required->model : "");
    call->required.group = rd_arena_strdup(call->arena, required->group ? required->group : "");
    call->required.field =
        required->field != NULL ? rd_arena_strdup(call->arena, required->field) : NULL;
    call->has_required = call->required.model != NULL && call->required.group != NULL;
}

const auth_required *svc_call_required(const svc_call *call)
{
    return call->has_required ? &call->required : NULL;
}

int64_t svc_call_retry_after_ms(const svc_call *call)
{
    return call->retry_after_ms;
}

void svc_call_log_code(svc_call *call, rd_code code)
{
    call->log_code = (int)code;
}

void svc_call_log_tx_id(svc_call *call, const char *server_tx_id)
{
    snprintf(call->log_tx_id, sizeof call->log_tx_id, "%s", server_tx_id ? server_tx_id : "");
}

const char *svc_call_metadata(svc_call *call, const char *key)
{
    const char *value;
    size_t len;
    if (!md_find(call, key, &value, &len))
        return NULL;
    return call->tp != NULL ? value : rd_arena_strndup(call->arena, value, len);
}

void svc_reply(svc_call *call, const ProtobufCMessage *resp)
{
    if (is_stream(call)) {
        svc_send(call, resp);
        svc_finish(call, GRPC_STATUS_OK, NULL, NULL, 0);
        return;
    }
    if (call->tp != NULL) {
        size_t len = protobuf_c_message_get_packed_size(resp);
        uint8_t *buf = malloc(len ? len : 1);
        if (buf == NULL) {
            finish(call, NULL, GRPC_STATUS_INTERNAL, "out of memory serializing the reply", NULL,
                   0);
            return;
        }
        protobuf_c_message_pack(resp, buf);
        finish_ext(call, buf, len, GRPC_STATUS_OK, NULL, NULL, 0);
        free(buf);
        return;
    }
    grpc_byte_buffer *bb = pack(resp, protobuf_c_message_get_packed_size(resp));
    if (bb == NULL) {
        finish(call, NULL, GRPC_STATUS_INTERNAL, "out of memory serializing the reply", NULL, 0);
        return;
    }
    finish(call, bb, GRPC_STATUS_OK, NULL, NULL, 0);
}

void svc_reply_raw(svc_call *call, const void *bytes, size_t len)
{
    if (is_stream(call)) {
        finish(call, NULL, GRPC_STATUS_INTERNAL, "a raw reply on a streaming call", NULL, 0);
        return;
    }
    if (call->tp != NULL) {
        finish_ext(call, bytes, len, GRPC_STATUS_OK, NULL, NULL, 0);
        return;
    }
    grpc_slice slice = grpc_slice_from_copied_buffer(bytes, len);
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&slice, 1);
    grpc_slice_unref(slice);
    if (bb == NULL) {
        finish(call, NULL, GRPC_STATUS_INTERNAL, "out of memory copying the reply", NULL, 0);
        return;
    }
    finish(call, bb, GRPC_STATUS_OK, NULL, NULL, 0);
}

void svc_finish(svc_call *call, int grpc_code, const char *msg, const void *details,
                size_t details_len)
{
    finish(call, NULL, grpc_code, msg, details, details_len);
}

/* svc_send on another transport: the message goes to its callback at once
 * (the caller serialises svc_send and svc_finish, so order is kept). */
static rd_code send_ext(svc_call *call, const ProtobufCMessage *msg, size_t len)
{
    pthread_mutex_lock(&call->mu);
    bool gone = call->finishing || call->peer_gone;
    pthread_mutex_unlock(&call->mu);
    if (gone)
        return RD_UNAVAILABLE;
    uint8_t *buf = malloc(len ? len : 1);
    if (buf == NULL)
        return RD_INTERNAL;
    protobuf_c_message_pack(msg, buf);
    rd_code rc = call->tp->message(call->tp_arg, buf, len);
    free(buf);
    if (rc == RD_UNAVAILABLE) {
        pthread_mutex_lock(&call->mu);
        call->peer_gone = true;
        pthread_mutex_unlock(&call->mu);
    }
    return rc;
}

rd_code svc_send(svc_call *call, const ProtobufCMessage *msg)
{
    if (!is_stream(call))
        return RD_INTERNAL;
    size_t len = protobuf_c_message_get_packed_size(msg);
    if (len > (size_t)call->server->max_message_bytes)
        return RD_INTERNAL; /* gRPC would fail the whole stream */
    if (call->tp != NULL)
        return send_ext(call, msg, len);
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
    pthread_mutex_lock(&call->mu);
    if (call->finishing || call->peer_gone) {
        rc = RD_UNAVAILABLE;
    } else if (call->q_len >= SVC_SEND_QUEUE_MAX ||
               call->q_bytes + len > SVC_SEND_QUEUE_MAX_BYTES) {
        rc = RD_RATE_LIMITED;
    } else {
        if (call->q_tail != NULL)
            call->q_tail->next = it;
        else
            call->q_head = it;
        call->q_tail = it;
        call->q_len++;
        call->q_bytes += len;
        if (!call->sending)
            start_send_locked(call);
    }
    pthread_mutex_unlock(&call->mu);
    if (rc != RD_OK) {
        grpc_byte_buffer_destroy(bb);
        free(it);
    }
    return rc;
}

bool svc_call_on_end(svc_call *call, svc_end_fn fn, void *arg)
{
    bool ok = false;
    pthread_mutex_lock(&call->mu);
    if (call->method->kind == SVC_SERVER_STREAM && !call->peer_gone && !call->stop_requested &&
        !call->finishing) {
        call->end_fn = fn;
        call->end_arg = arg;
        ok = true;
    }
    pthread_mutex_unlock(&call->mu);
    return ok;
}

void svc_call_set_principal(svc_call *call, auth_principal *p)
{
    auth_principal_free(call->principal);
    call->principal = p;
}

bool svc_call_set_peer_ids(svc_call *call, const char *ids)
{
    call->peer_ids = rd_arena_strdup(call->arena, ids);
    return call->peer_ids != NULL;
}

int svc_call_max_message_bytes(const svc_call *call)
{
    return call->server->max_message_bytes;
}

bool svc_call_cancelled(svc_call *call)
{
    pthread_mutex_lock(&call->mu);
    bool gone = call->peer_gone;
    pthread_mutex_unlock(&call->mu);
    return gone;
}

/* ---- public: other transports ------------------------------------------------ */

/* Finishes a call of another transport: the outcome goes to its callback
 * (reply: the unary reply's bytes or NULL), then the owner reference goes. */
static void finish_ext(svc_call *c, const void *reply, size_t reply_len, int grpc_code,
                       const char *msg, const void *details, size_t details_len)
{
    pthread_mutex_lock(&c->mu);
    if (c->finishing) {
        pthread_mutex_unlock(&c->mu);
        log_line("error", "a call was finished twice");
        return;
    }
    c->finishing = true;
    /* the status, as a gRPC call records it (read by whatever logs the call) */
    c->status =
        grpc_code >= 0 && grpc_code <= 16 ? (grpc_status_code)grpc_code : GRPC_STATUS_UNKNOWN;
    pthread_mutex_unlock(&c->mu);
    svc_metrics_call(c->method_index, SVC_TRANSPORT_HTTP, grpc_code, rd_now_us() - c->start_us);
    svc_outcome o = {.grpc_code = grpc_code >= 0 && grpc_code <= 16 ? grpc_code : 2,
                     .msg = msg != NULL ? msg : "",
                     .details = details_len > 0 ? details : NULL,
                     .details_len = details_len,
                     .reply = reply,
                     .reply_len = reply_len,
                     .replayed = c->replayed,
                     .rd_code = grpc_code == 0 ? RD_OK : c->log_code,
                     .principal_id = c->principal ? auth_principal_id(c->principal) : NULL,
                     .server_tx_id = c->log_tx_id};
    c->tp->finish(c->tp_arg, &o);
    call_unref(c);
}

svc_call *svc_call_new_transport(svc_server *s, const svc_method *m, const svc_transport *tp,
                                 void *arg, int64_t deadline_us)
{
    if (m < svc_methods || m >= svc_methods + svc_n_methods || m->kind == SVC_BIDI_STREAM)
        return NULL;
    svc_call *c = call_new(s, m, (size_t)(m - svc_methods));
    if (c == NULL)
        return NULL;
    c->tp = tp;
    c->tp_arg = arg;
    c->deadline_us = deadline_us;
    c->start_us = rd_now_us();
    c->arena = rd_arena_new(s->arena_cap);
    if (c->arena == NULL) {
        c->tp = NULL;
        call_destroy(c);
        return NULL;
    }
    c->refs = 2; /* the owner's and the transport's */
    bool refused;
    pthread_mutex_lock(&s->mu);
    refused = atomic_load(&s->stopping);
    if (!refused) {
        s->inflight++;
        s->arrivals++;
        if (is_stream(c)) {
            svc_metrics_stream(SVC_TRANSPORT_HTTP, 1);
            c->live = true;
            c->live_next = s->live;
            if (s->live != NULL)
                s->live->live_prev = c;
            s->live = c;
        }
    }
    pthread_mutex_unlock(&s->mu);
    if (refused) {
        c->tp = NULL; /* never handed out: no release callback */
        call_destroy(c);
        return NULL;
    }
    return c;
}

bool svc_call_add_metadata(svc_call *call, const char *key, const char *value)
{
    if (call->n_xmd == call->cap_xmd) {
        size_t cap = call->cap_xmd ? 2 * call->cap_xmd : 8;
        svc_md_kv *n = rd_arena_alloc(call->arena, cap * sizeof *n);
        if (n == NULL)
            return false;
        if (call->n_xmd > 0)
            memcpy(n, call->xmd, call->n_xmd * sizeof *n);
        call->xmd = n;
        call->cap_xmd = cap;
    }
    svc_md_kv kv = {rd_arena_strdup(call->arena, key), rd_arena_strdup(call->arena, value)};
    if (kv.key == NULL || kv.value == NULL)
        return false;
    call->xmd[call->n_xmd++] = kv;
    return true;
}

void svc_call_start(svc_call *call)
{
    if (!enqueue_work(call, true))
        finish(call, NULL, GRPC_STATUS_RESOURCE_EXHAUSTED, "server is overloaded", NULL, 0);
}

void svc_call_hold(svc_call *call)
{
    pthread_mutex_lock(&call->mu);
    call->refs++;
    pthread_mutex_unlock(&call->mu);
}

void svc_call_release(svc_call *call)
{
    call_unref(call);
}

void svc_call_cancel(svc_call *call)
{
    svc_end_fn fn = NULL;
    void *arg = NULL;
    pthread_mutex_lock(&call->mu);
    if (!call->peer_gone) {
        call->peer_gone = true;
        if (call->end_fn != NULL && !call->end_fired && !call->finishing) {
            call->end_fired = true;
            fn = call->end_fn;
            arg = call->end_arg;
        }
    }
    pthread_mutex_unlock(&call->mu);
    if (fn != NULL)
        fn(call, arg);
}

void svc_call_set_replayed(svc_call *call)
{
    call->replayed = true;
}

/* ---- public: server ----------------------------------------------------------- */

bool svc_server_serving(const svc_server *s)
{
    return !atomic_load(&s->stopping);
}

size_t svc_server_inflight(svc_server *s)
{
    pthread_mutex_lock(&s->mu);
    size_t n = s->inflight;
    pthread_mutex_unlock(&s->mu);
    return n;
}

const svc_reflection *svc_server_reflection(const svc_server *s)
{
    return s->reflection;
}

/* Shuts the completion queue down, drains it and destroys server and queue
 * (after the server's shutdown completed). */
static void drain_and_destroy(svc_server *s)
{
    if (s->cq_thread_started) {
        grpc_completion_queue_shutdown(s->cq);
        pthread_join(s->cq_thread, NULL);
    } else if (s->cq != NULL) {
        grpc_completion_queue_shutdown(s->cq);
        for (;;) {
            grpc_event ev =
                grpc_completion_queue_next(s->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
            if (ev.type == GRPC_QUEUE_SHUTDOWN)
                break;
            if (ev.type == GRPC_OP_COMPLETE && ((svc_tag *)ev.tag)->kind == TAG_REQUEST)
                call_destroy(CALL_OF(ev.tag, t_request));
        }
    }
    if (s->server != NULL)
        grpc_server_destroy(s->server);
    if (s->cq != NULL)
        grpc_completion_queue_destroy(s->cq);
}

static void server_free(svc_server *s)
{
    svc_reflection_close(s->reflection);
    free(s->registered);
    free(s->workers);
    pthread_cond_destroy(&s->work_cond);
    pthread_cond_destroy(&s->state_cond);
    pthread_mutex_destroy(&s->mu);
    free(s);
    grpc_shutdown_blocking();
}

/* Shutdown of a server whose threads never started: nothing is in flight. */
static void abort_start(svc_server *s)
{
    if (s->server != NULL) {
        grpc_server_shutdown_and_notify(s->server, s->cq, &s->t_shutdown);
        for (;;) {
            grpc_event ev =
                grpc_completion_queue_next(s->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
            if (ev.type == GRPC_OP_COMPLETE && ev.tag == &s->t_shutdown)
                break;
            if (ev.type == GRPC_OP_COMPLETE && ((svc_tag *)ev.tag)->kind == TAG_REQUEST)
                call_destroy(CALL_OF(ev.tag, t_request));
        }
    }
    drain_and_destroy(s);
    server_free(s);
}

rd_code svc_server_start(const svc_options *opt, svc_ctx *ctx, svc_server **out, int *bound_port,
                         rd_err *err)
{
    *out = NULL;
    if (opt->workers < 1 || opt->max_message_bytes < 1)
        return rd_errf(err, RD_INTERNAL, NULL, "workers and max_message_bytes must be positive");
    grpc_init();
    svc_server *s = calloc(1, sizeof *s);
    if (s == NULL) {
        grpc_shutdown_blocking();
        return rd_errf(err, RD_INTERNAL, NULL, "out of memory");
    }
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->work_cond, NULL);
    pthread_cond_init(&s->state_cond, NULL);
    atomic_init(&s->stopping, false);
    s->t_shutdown.kind = TAG_SHUTDOWN;
    s->ctx = ctx;
    ctx->server = s;
    s->max_message_bytes = opt->max_message_bytes;
    s->max_inflight = opt->max_inflight_calls > 0 ? (size_t)opt->max_inflight_calls : 0;
    s->arena_cap = ARENA_BASE_BYTES + ARENA_PER_MESSAGE_BYTE * (size_t)opt->max_message_bytes;
    s->registered = calloc(svc_n_methods ? svc_n_methods : 1, sizeof *s->registered);
    s->workers = calloc((size_t)opt->workers, sizeof *s->workers);
    if (s->registered == NULL || s->workers == NULL) {
        rd_errf(err, RD_INTERNAL, NULL, "out of memory");
        goto fail;
    }
    if (svc_reflection_open(&s->reflection, err) != RD_OK)
        goto fail;

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

    s->cq = grpc_completion_queue_create_for_next(NULL);
    s->server = grpc_server_create(&cargs, NULL);
    grpc_server_register_completion_queue(s->server, s->cq, NULL);
    for (size_t i = 0; i < svc_n_methods; i++) {
        const svc_method *m = &svc_methods[i];
        grpc_server_register_method_payload_handling ph =
            m->kind == SVC_BIDI_STREAM ? GRPC_SRM_PAYLOAD_NONE
                                       : GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER;
        s->registered[i] = grpc_server_register_method(s->server, m->path, NULL, ph, 0);
        if (s->registered[i] == NULL) {
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
    int port = grpc_server_add_http2_port(s->server, opt->listen, creds);
    grpc_server_credentials_release(creds);
    if (port == 0) {
        rd_errf(err, RD_UNAVAILABLE, "grpc_listen",
                "cannot listen on %s: address in use, not local or malformed", opt->listen);
        goto fail;
    }
    grpc_server_start(s->server);

    for (size_t i = 0; i < svc_n_methods; i++)
        for (int k = 0; k < PENDING_PER_METHOD; k++)
            if (post_request(s, &svc_methods[i], i) != GRPC_CALL_OK) {
                rd_errf(err, RD_INTERNAL, NULL, "cannot request calls for %s", svc_methods[i].path);
                goto fail;
            }
    for (int k = 0; k < PENDING_GENERIC; k++)
        if (post_request(s, NULL, 0) != GRPC_CALL_OK) {
            rd_errf(err, RD_INTERNAL, NULL, "cannot request calls for unknown methods");
            goto fail;
        }

    if (pthread_create(&s->cq_thread, NULL, cq_main, s) != 0) {
        rd_errf(err, RD_INTERNAL, NULL, "cannot start the completion-queue thread");
        goto fail;
    }
    s->cq_thread_started = true;
    for (int i = 0; i < opt->workers; i++) {
        if (pthread_create(&s->workers[i], NULL, worker_main, s) != 0) {
            rd_errf(err, RD_INTERNAL, NULL, "cannot start worker thread %d", i);
            svc_server_stop(s, 0);
            return err->code;
        }
        s->n_workers++;
    }
    *bound_port = port;
    *out = s;
    return RD_OK;
fail:
    abort_start(s);
    return err->code;
}

/* Asks every open stream to end: end callbacks of server streams run, idle
 * bidi streams finish with UNAVAILABLE (busy ones after their handler). */
static void stop_streams(svc_server *s)
{
    size_t n = 0, cap = 0;
    svc_call **list = NULL;
    pthread_mutex_lock(&s->mu);
    for (svc_call *c = s->live; c != NULL; c = c->live_next)
        cap++;
    list = cap ? malloc(cap * sizeof *list) : NULL;
    for (svc_call *c = s->live; c != NULL && list != NULL; c = c->live_next) {
        pthread_mutex_lock(&c->mu);
        if (c->refs > 0) { /* 0: being freed, waiting for s->mu */
            c->stop_requested = true;
            c->refs++;
            list[n++] = c;
        }
        pthread_mutex_unlock(&c->mu);
    }
    pthread_mutex_unlock(&s->mu);

    for (size_t i = 0; i < n; i++) {
        svc_call *c = list[i];
        svc_end_fn fn = NULL;
        void *arg = NULL;
        bool owner_done = false;
        pthread_mutex_lock(&c->mu);
        if (!c->finishing && c->method->kind == SVC_SERVER_STREAM && c->end_fn != NULL &&
            !c->end_fired) {
            c->end_fired = true;
            fn = c->end_fn;
            arg = c->end_arg;
        } else if (!c->finishing && c->method->kind == SVC_BIDI_STREAM && !c->handler_running) {
            set_status_locked(c, GRPC_STATUS_UNAVAILABLE, "server is shutting down", NULL, 0);
            owner_done = true;
        }
        pthread_mutex_unlock(&c->mu);
        if (fn != NULL)
            fn(c, arg);
        if (owner_done)
            call_unref(c);
        call_unref(c); /* ours */
    }
    free(list);
}

/* Waits on state_cond until pred holds or the absolute deadline passes
 * (NULL: no deadline). Returns pred's final value. Called with s->mu held. */
static bool wait_state(svc_server *s, bool (*pred)(const svc_server *),
                       const struct timespec *until)
{
    while (!pred(s)) {
        if (until == NULL) {
            pthread_cond_wait(&s->state_cond, &s->mu);
        } else if (pthread_cond_timedwait(&s->state_cond, &s->mu, until) == ETIMEDOUT) {
            return pred(s);
        }
    }
    return true;
}

/* CLOCK_REALTIME now + ms (ms <= 0: now). */
static struct timespec deadline_in(int ms)
{
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    if (ms > 0) {
        t.tv_sec += ms / 1000;
        t.tv_nsec += (long)(ms % 1000) * 1000000L;
        if (t.tv_nsec >= 1000000000L) {
            t.tv_sec++;
            t.tv_nsec -= 1000000000L;
        }
    }
    return t;
}

static bool ts_before(const struct timespec *a, const struct timespec *b)
{
    return a->tv_sec < b->tv_sec || (a->tv_sec == b->tv_sec && a->tv_nsec < b->tv_nsec);
}

static bool shutdown_or_idle(const svc_server *s)
{
    return s->shutdown_done || s->inflight == 0;
}

static bool shutdown_done(const svc_server *s)
{
    return s->shutdown_done;
}

static bool nothing_inflight(const svc_server *s)
{
    return s->inflight == 0;
}

void svc_server_stop(svc_server *s, int grace_ms)
{
    if (s == NULL)
        return;
    pthread_mutex_lock(&s->mu);
    atomic_store(&s->stopping, true);
    pthread_mutex_unlock(&s->mu);
    stop_streams(s);

    /* Phase 0, within the grace period: calls still arriving are refused
     * UNAVAILABLE until nothing has been in flight for QUIET_MS. Phase 1,
     * up to the grace period: in-flight calls finish. Phase 2, up to
     * IDLE_LINGER_MS more: idle clients close their connections after the
     * GOAWAY. Then whatever is left is cancelled and disconnected. */
    struct timespec grace_end = deadline_in(grace_ms), linger_end;
    pthread_mutex_lock(&s->mu);
    for (;;) {
        if (!wait_state(s, nothing_inflight, &grace_end))
            break;
        size_t seen = s->arrivals;
        struct timespec quiet_end = deadline_in(QUIET_MS);
        if (!ts_before(&quiet_end, &grace_end))
            break;
        pthread_mutex_unlock(&s->mu);
        nanosleep(&(struct timespec){0, QUIET_MS * 1000000L}, NULL);
        pthread_mutex_lock(&s->mu);
        if (s->arrivals == seen && s->inflight == 0)
            break;
    }
    pthread_mutex_unlock(&s->mu);
    grpc_server_shutdown_and_notify(s->server, s->cq, &s->t_shutdown);
    pthread_mutex_lock(&s->mu);
    wait_state(s, shutdown_or_idle, &grace_end);
    size_t left = s->inflight;
    if (!s->shutdown_done && left == 0) {
        linger_end = deadline_in(IDLE_LINGER_MS);
        wait_state(s, shutdown_done, ts_before(&linger_end, &grace_end) ? &linger_end : &grace_end);
    }
    bool done = s->shutdown_done;
    pthread_mutex_unlock(&s->mu);
    if (!done) {
        if (left > 0)
            log_line("warn", "grace period over: cancelling the calls still running");
        grpc_server_cancel_all_calls(s->server);
        pthread_mutex_lock(&s->mu);
        wait_state(s, shutdown_done, NULL);
        pthread_mutex_unlock(&s->mu);
    }

    /* Handlers of cancelled calls may still be finishing (a write waiting
     * for its commit); their batches complete at once. */
    pthread_mutex_lock(&s->mu);
    wait_state(s, nothing_inflight, NULL);
    s->workers_exit = true;
    pthread_cond_broadcast(&s->work_cond);
    pthread_mutex_unlock(&s->mu);
    for (int i = 0; i < s->n_workers; i++)
        pthread_join(s->workers[i], NULL);
    drain_and_destroy(s);
    server_free(s);
}
