/* The call core (svc.h, svc_transport.h): the call object — its arena,
 * deadline, principal, outcome and references — admission, the worker
 * pool, the auth step and the run of a request or bidi message, whatever
 * transport carried the call. It knows neither gRPC nor HTTP: the gRPC
 * listener is service/svc_grpc.c, the HTTP/JSON gateway service/gw_http.c.
 * docs/internals/server.md describes threads, call lifecycle and shutdown. */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "service/server_int.h"
#include "service/svc_auth.h"
#include "service/svc_grpc.h"
#include "service/svc_log.h"
#include "service/svc_metrics.h"
#include "service/svc_transport.h"

/* Calls waiting for a worker. Beyond this the server sheds load with
 * RESOURCE_EXHAUSTED instead of queueing without bound. */
enum { WORK_QUEUE_MAX = 8192 };

/* How long svc_server_stop waits, once no call is in flight, for idle
 * clients to close their connections after the GOAWAY before closing them. */
enum { IDLE_LINGER_MS = 1000 };

/* How long no call may arrive or be in flight before svc_server_stop shuts
 * the listener down: until then new calls are refused with UNAVAILABLE by
 * the server itself, afterwards a call racing the GOAWAY is reset by the
 * gRPC core (CANCELLED on the client). */
enum { QUIET_MS = 100 };

/* Per-call arena: a base plus room for a decoded request of the largest
 * admitted size (decoded protobuf takes several times its wire size). */
#define ARENA_BASE_BYTES ((size_t)64 << 20)
#define ARENA_PER_MESSAGE_BYTE 8

struct svc_call {
    svc_server *server;
    const svc_method *method; /* NULL: a method the transport does not know */
    const svc_transport *tp;
    void *tp_arg;

    rd_arena *arena;
    int64_t deadline_us;
    int64_t start_us; /* arrival: latency metrics and the log line */

    /* set by the auth step before the handler runs */
    auth_principal *principal; /* NULL on public methods */
    auth_required required;    /* PERMISSION_DENIED details; strings in the arena */
    bool has_required;
    int64_t retry_after_ms; /* RD_RATE_LIMITED: RetryInfo */
    char tx_id[40];         /* server tx id of the write, "" when none */

    /* References: the owner (handler, or the server for bidi streams) until
     * the call is finished, the transport's, one while queued for or
     * running on a worker, and any the transport holds (svc_call_hold).
     * Atomic: taken and dropped several times per call, never waited on. */
    atomic_int refs;
    /* Admission, decided by svc_call_new under the server's mutex and acted
     * on by svc_call_admit: RD_OK, RD_UNAVAILABLE (stopping) or
     * RD_RATE_LIMITED (over --max-inflight-calls). */
    rd_code admission;

    /* Guarded by mu. */
    bool finishing;       /* the outcome is decided */
    bool peer_gone;       /* cancelled, disconnected or past its deadline */
    bool end_fired;       /* end_fn ran (or is running) */
    bool stop_requested;  /* svc_server_stop asked the stream to end */
    bool handler_running; /* bidi: a message is queued for or on a worker */
    svc_end_fn end_fn;
    void *end_arg;
    svc_outcome outcome; /* valid once finishing */

    svc_call *next_work;             /* worker queue (server mu), free list (cache_mu) */
    svc_call *live_prev, *live_next; /* open streams (server mu) */
    bool live;

    /* Last: a call taken from the server's free list is zeroed up to here
     * (its mutex and its reset arena are kept). */
    pthread_mutex_t mu;
};

/* Finished calls kept for reuse, with their mutex and first arena block:
 * a call then costs no allocation. */
enum { CALL_CACHE_MAX = 64 };

struct svc_server {
    svc_ctx *ctx;
    svc_grpc *grpc; /* the gRPC listener */
    int max_message_bytes;
    size_t arena_cap;
    svc_reflection *reflection;
    atomic_bool stopping;

    pthread_t *workers;
    int n_workers;

    pthread_mutex_t mu;        /* guards everything below up to cache_mu */
    pthread_cond_t work_cond;  /* workers: work arrived or exit */
    pthread_cond_t state_cond; /* stop: transport_down or inflight changed */
    svc_call *work_head, *work_tail;
    size_t work_len;
    bool workers_exit;
    bool transport_down; /* the gRPC listener's shutdown completed */
    size_t inflight;
    size_t max_inflight; /* --max-inflight-calls; 0 = no limit */
    size_t arrivals;     /* calls accepted so far, for svc_server_stop's quiet wait */
    svc_call *live;      /* streaming calls, for svc_server_stop */

    pthread_mutex_t cache_mu; /* guards the free list */
    svc_call *cache;
    size_t n_cache;
};

static bool is_stream(const svc_call *c)
{
    return c->method != NULL && c->method->kind != SVC_UNARY;
}

/* ---- references --------------------------------------------------------------- */

static void call_destroy(svc_call *c)
{
    rd_arena_free(c->arena);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

/* A call from the free list (zeroed, its arena reset) or a new one. */
static svc_call *call_alloc(svc_server *s)
{
    pthread_mutex_lock(&s->cache_mu);
    svc_call *c = s->cache;
    if (c != NULL) {
        s->cache = c->next_work;
        s->n_cache--;
    }
    pthread_mutex_unlock(&s->cache_mu);
    if (c != NULL) {
        rd_arena *a = c->arena;
        memset(c, 0, offsetof(svc_call, mu));
        c->arena = a;
        return c;
    }
    c = calloc(1, sizeof *c);
    if (c == NULL)
        return NULL;
    c->arena = rd_arena_new(s->arena_cap);
    if (c->arena == NULL) {
        free(c);
        return NULL;
    }
    pthread_mutex_init(&c->mu, NULL);
    return c;
}

/* The last reference is gone: the call leaves the server's books. */
static void call_free(svc_call *c)
{
    svc_server *s = c->server;
    c->tp->release(c->tp_arg, c);
    pthread_mutex_lock(&s->mu);
    if (c->live) {
        svc_metrics_stream(c->tp->kind, -1);
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
    auth_principal_free(c->principal);
    rd_arena_reset(c->arena); /* its cleanups run now, as when it is freed */
    pthread_mutex_lock(&s->cache_mu);
    bool kept = s->n_cache < CALL_CACHE_MAX;
    if (kept) {
        c->next_work = s->cache;
        s->cache = c;
        s->n_cache++;
    }
    pthread_mutex_unlock(&s->cache_mu);
    if (!kept)
        call_destroy(c);
}

void svc_call_hold(svc_call *call)
{
    atomic_fetch_add_explicit(&call->refs, 1, memory_order_relaxed);
}

void svc_call_release(svc_call *call)
{
    if (atomic_fetch_sub_explicit(&call->refs, 1, memory_order_acq_rel) == 1)
        call_free(call);
}

svc_call *svc_call_new(svc_server *s, const svc_method *m, const svc_transport *tp, void *arg,
                       int64_t deadline_us)
{
    svc_call *c = call_alloc(s);
    if (c == NULL)
        return NULL;
    c->server = s;
    c->method = m;
    c->tp = tp;
    c->tp_arg = arg;
    c->deadline_us = deadline_us;
    c->start_us = rd_now_us();
    atomic_init(&c->refs, 2); /* the owner's and the transport's */
    /* Stopping is read under s->mu, where svc_server_stop sets it, so a
     * stream is either listed before stop_streams looks or refused by
     * svc_call_admit. Health checks are answered whatever the load and
     * while stopping (NOT_SERVING), so probes see the server's state. */
    bool answered = m != NULL && m->always_answered;
    pthread_mutex_lock(&s->mu);
    s->inflight++;
    s->arrivals++;
    c->admission = atomic_load(&s->stopping) && !answered ? RD_UNAVAILABLE
                   : s->max_inflight > 0 && s->inflight > s->max_inflight && !answered
                       ? RD_RATE_LIMITED
                       : RD_OK;
    if (c->admission != RD_UNAVAILABLE && is_stream(c)) {
        svc_metrics_stream(tp->kind, 1);
        c->live = true;
        c->live_next = s->live;
        if (s->live != NULL)
            s->live->live_prev = c;
        s->live = c;
    }
    pthread_mutex_unlock(&s->mu);
    return c;
}

/* ---- finishing ------------------------------------------------------------------ */

/* Decides the outcome, hands it to the transport and drops the owner
 * reference. quiet: a call already finishing is left alone (the
 * transport's and the server's own ends race with handlers); otherwise a
 * second finish is a caller bug, logged and ignored. */
static void finish(svc_call *c, const svc_outcome *o, bool quiet)
{
    pthread_mutex_lock(&c->mu);
    if (c->finishing) {
        pthread_mutex_unlock(&c->mu);
        if (!quiet)
            svc_log_json(SVC_LOG_ERROR, "a call was finished twice", NULL);
        return;
    }
    c->finishing = true;
    c->outcome = *o;
    pthread_mutex_unlock(&c->mu);

    svc_outcome *out = &c->outcome;
    if (out->err.code == RD_PERMISSION_DENIED && out->can == NULL && out->bulk == NULL &&
        c->has_required) {
        out->can = auth_verb_str(c->required.can);
        out->model = c->required.model;
        out->group = c->required.group;
    }
    if (out->retry_after_ms == 0 && out->err.code == RD_RATE_LIMITED)
        out->retry_after_ms = c->retry_after_ms;
    /* an unavailable store (busy, disk full, shutting down) is worth a
     * retry after a second */
    if (out->retry_after_ms == 0 && out->err.code == RD_UNAVAILABLE && !out->status_only)
        out->retry_after_ms = 1000;
    if (c->method != NULL)
        svc_metrics_call((size_t)(c->method - svc_methods), c->tp->kind,
                         rd_code_grpc(out->err.code), rd_now_us() - c->start_us);
    c->tp->finish(c->tp_arg, c, out);
    svc_call_release(c);
}

void svc_finish(svc_call *call, const svc_outcome *o)
{
    finish(call, o, false);
}

void svc_fail(svc_call *call, const rd_err *err)
{
    svc_outcome o = {.err = *err};
    finish(call, &o, false);
}

static void end(svc_call *c, rd_code code, const char *msg, bool quiet)
{
    svc_outcome o = {.status_only = true};
    rd_errf(&o.err, code, NULL, "%s", msg != NULL ? msg : "");
    finish(c, &o, quiet);
}

void svc_end(svc_call *call, rd_code code, const char *msg)
{
    end(call, code, msg, false);
}

void svc_call_end_if_open(svc_call *call, rd_code code, const char *msg)
{
    end(call, code, msg, true);
}

void svc_reply(svc_call *call, const ProtobufCMessage *resp)
{
    if (is_stream(call)) {
        svc_send(call, resp);
        svc_end(call, RD_OK, NULL);
        return;
    }
    svc_outcome o = {.reply = resp};
    finish(call, &o, false);
}

/* ---- the auth step ---------------------------------------------------------------- */

static bool md_find(const svc_call *c, const char *key, const char **value, size_t *len)
{
    return c->tp->metadata(c->tp_arg, key, value, len);
}

/* The auth step (DESIGN.md §6), the one place a credential is checked:
 * unless the method is public (or credential_optional and called without
 * one), authenticates the first `authorization`
 * value (API key or token) into c->principal, checks a client identity the
 * credential is bound to against the connection's certificate, then takes
 * one token from the principal's rate-limit bucket. On failure the call is
 * finished (UNAUTHENTICATED, token_expired, RESOURCE_EXHAUSTED with
 * RetryInfo) and false returned. Nothing is logged: the credential never
 * leaves here. */
static bool authenticate(svc_call *c)
{
    const svc_ctx *ctx = c->server->ctx;
    const char *value = NULL;
    size_t len = 0;
    rd_err err;
    rd_err_clear(&err);
    if (c->method->public)
        return true;
    if (c->principal == NULL) { /* else: authenticated_from_memory or the transport */
        md_find(c, "authorization", &value, &len);
        if (c->method->credential_optional && len == 0)
            return true;
        if (ctx->auth == NULL) {
            rd_errf(&err, RD_UNAUTHENTICATED, NULL,
                    "this server is configured without credentials");
            goto fail;
        }
        if (auth_authenticate(ctx->auth, value, len, &c->principal, &err) != RD_OK)
            goto fail;
    }
    const char *bound = auth_principal_client_id(c->principal);
    if (bound != NULL && !c->tp->peer_presents(c->tp_arg, bound)) {
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
    svc_fail(c, &err);
    return false;
}

/* A thread that must not wait on SQLite (the gRPC completion-queue thread)
 * authenticates a call only from memory (a cached API key, see
 * svc_auth_memory_only_begin). True with c->principal set; false, the call
 * untouched, when the credential needs the store or fails — a worker then
 * does the whole auth step (and reports the failure). The rate limit is
 * taken later by authenticate, as for every call. */
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

/* ---- running ----------------------------------------------------------------------- */

/* Unary and server-stream calls: deadline check, auth, decode, handler. */
static void run_request(svc_call *c)
{
    rd_err err;
    rd_err_clear(&err);
    if (c->deadline_us != 0 && rd_now_us() >= c->deadline_us) {
        rd_errf(&err, RD_DEADLINE_EXCEEDED, NULL, "the deadline passed before the call started");
        svc_fail(c, &err);
        return;
    }
    if (!authenticate(c))
        return;
    ProtobufCMessage *req = c->tp->decode(c->tp_arg, c, &err);
    if (req == NULL) {
        svc_fail(c, &err);
        return;
    }
    c->method->handler(c, req);
    if (c->tp->started != NULL && is_stream(c)) {
        /* the work reference keeps c alive */
        pthread_mutex_lock(&c->mu);
        bool finishing = c->finishing;
        pthread_mutex_unlock(&c->mu);
        if (!finishing)
            c->tp->started(c->tp_arg, c);
    }
}

void svc_call_read_on(svc_call *c)
{
    pthread_mutex_lock(&c->mu);
    bool finishing = c->finishing, stop = c->stop_requested, gone = c->peer_gone;
    pthread_mutex_unlock(&c->mu);
    if (finishing)
        return;
    if (stop)
        svc_call_end_if_open(c, RD_UNAVAILABLE, "server is shutting down");
    else if (gone)
        svc_call_end_if_open(c, RD_CANCELLED, "the client went away");
    else if (!c->tp->read_next(c->tp_arg, c))
        svc_call_end_if_open(c, RD_OK, NULL);
}

/* Bidi streams: one received message, then the next read (or the end). */
static void run_message(svc_call *c)
{
    rd_err err;
    rd_err_clear(&err);
    c->has_required = false;
    if (authenticate(c)) { /* else finished */
        ProtobufCMessage *req = c->tp->decode(c->tp_arg, c, &err);
        if (req != NULL)
            c->method->handler(c, req);
        else
            svc_fail(c, &err);
    }
    rd_arena_reset(c->arena);
    pthread_mutex_lock(&c->mu);
    c->handler_running = false;
    pthread_mutex_unlock(&c->mu);
    svc_call_read_on(c);
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
        if (s->ctx->db != NULL) /* a pooled database connection serves the next call */
            store_conn_release(s->ctx->db);
        svc_call_release(c); /* the work reference */
    }
    return NULL;
}

/* Queues c for a worker, taking a reference. false when the queue is full
 * and bounded is set. */
static bool enqueue_work(svc_call *c, bool bounded)
{
    svc_server *s = c->server;
    svc_call_hold(c);
    pthread_mutex_lock(&s->mu);
    if (bounded && s->work_len >= WORK_QUEUE_MAX) {
        pthread_mutex_unlock(&s->mu);
        svc_call_release(c);
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

bool svc_call_admit(svc_call *c)
{
    if (c->admission == RD_UNAVAILABLE) {
        svc_end(c, RD_UNAVAILABLE, "server is shutting down");
        return false;
    }
    if (c->admission == RD_RATE_LIMITED) {
        svc_metrics_refused(SVC_REFUSED_INFLIGHT);
        svc_end(c, RD_RATE_LIMITED,
                "server is overloaded: too many calls in flight (--max-inflight-calls)");
        return false;
    }
    return true;
}

void svc_call_dispatch(svc_call *c, bool may_run_here)
{
    /* Unary record writes run their auth step, decode and handler on the
     * transport's thread instead of a worker when their credential is
     * verified from memory: the handlers never wait (they check against the
     * in-memory schema and queue to the writer), and the hand-off to a
     * worker was a futex wake-up and a context switch per write
     * (docs/PERFORMANCE.md). Which methods may: svc_method.cq_fast_path;
     * which requests (small, uncompressed): the transport's may_run_here. */
    if (may_run_here && c->method->cq_fast_path && c->method->kind == SVC_UNARY &&
        authenticated_from_memory(c)) {
        svc_metrics_cq_fast_path();
        svc_call_hold(c); /* as a worker's reference */
        run_request(c);
        svc_call_release(c);
        return;
    }
    if (!enqueue_work(c, true)) {
        svc_metrics_refused(SVC_REFUSED_QUEUE_FULL);
        svc_end(c, RD_RATE_LIMITED, "server is overloaded");
    }
}

void svc_call_deliver(svc_call *c)
{
    pthread_mutex_lock(&c->mu);
    bool run = !c->finishing;
    c->handler_running = run;
    pthread_mutex_unlock(&c->mu);
    if (run)
        enqueue_work(c, false);
}

/* ---- streams ------------------------------------------------------------------------ */

rd_code svc_send(svc_call *call, const ProtobufCMessage *msg)
{
    if (!is_stream(call))
        return RD_INTERNAL;
    size_t len = protobuf_c_message_get_packed_size(msg);
    if (len > (size_t)call->server->max_message_bytes)
        return RD_INTERNAL; /* gRPC would fail the whole stream */
    pthread_mutex_lock(&call->mu);
    bool gone = call->finishing || call->peer_gone;
    pthread_mutex_unlock(&call->mu);
    if (gone)
        return RD_UNAVAILABLE;
    rd_code rc = call->tp->send(call->tp_arg, call, msg, len);
    if (rc == RD_UNAVAILABLE) {
        pthread_mutex_lock(&call->mu);
        call->peer_gone = true;
        pthread_mutex_unlock(&call->mu);
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

bool svc_call_cancelled(svc_call *call)
{
    pthread_mutex_lock(&call->mu);
    bool gone = call->peer_gone;
    pthread_mutex_unlock(&call->mu);
    return gone;
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

/* ---- accessors ---------------------------------------------------------------------- */

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

void svc_call_set_principal(svc_call *call, auth_principal *p)
{
    auth_principal_free(call->principal);
    call->principal = p;
}

int svc_call_max_message_bytes(const svc_call *call)
{
    return call->server->max_message_bytes;
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

void svc_call_log_tx_id(svc_call *call, const char *server_tx_id)
{
    snprintf(call->tx_id, sizeof call->tx_id, "%s", server_tx_id ? server_tx_id : "");
}

const char *svc_call_metadata(svc_call *call, const char *key)
{
    const char *value;
    size_t len;
    if (!md_find(call, key, &value, &len))
        return NULL;
    return rd_arena_strndup(call->arena, value, len);
}

const svc_outcome *svc_call_outcome(const svc_call *call)
{
    return call->finishing ? &call->outcome : NULL;
}

const char *svc_call_tx_id(const svc_call *call)
{
    return call->tx_id;
}

int64_t svc_call_start_us(const svc_call *call)
{
    return call->start_us;
}

/* ---- the server ----------------------------------------------------------------------- */

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

void svc_server_transport_down(svc_server *s)
{
    pthread_mutex_lock(&s->mu);
    s->transport_down = true;
    pthread_cond_broadcast(&s->state_cond);
    pthread_mutex_unlock(&s->mu);
}

static void server_free(svc_server *s)
{
    while (s->cache != NULL) {
        svc_call *c = s->cache;
        s->cache = c->next_work;
        call_destroy(c);
    }
    pthread_mutex_destroy(&s->cache_mu);
    svc_reflection_close(s->reflection);
    free(s->workers);
    pthread_cond_destroy(&s->work_cond);
    pthread_cond_destroy(&s->state_cond);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

rd_code svc_server_start(const svc_options *opt, svc_ctx *ctx, svc_server **out, int *bound_port,
                         rd_err *err)
{
    *out = NULL;
    if (opt->workers < 1 || opt->max_message_bytes < 1)
        return rd_errf(err, RD_INTERNAL, NULL, "workers and max_message_bytes must be positive");
    svc_server *s = calloc(1, sizeof *s);
    if (s == NULL)
        return rd_errf(err, RD_INTERNAL, NULL, "out of memory");
    pthread_mutex_init(&s->mu, NULL);
    pthread_mutex_init(&s->cache_mu, NULL);
    pthread_cond_init(&s->work_cond, NULL);
    pthread_cond_init(&s->state_cond, NULL);
    atomic_init(&s->stopping, false);
    s->ctx = ctx;
    ctx->server = s;
    s->max_message_bytes = opt->max_message_bytes;
    s->max_inflight = opt->max_inflight_calls > 0 ? (size_t)opt->max_inflight_calls : 0;
    s->arena_cap = ARENA_BASE_BYTES + ARENA_PER_MESSAGE_BYTE * (size_t)opt->max_message_bytes;
    s->workers = calloc((size_t)opt->workers, sizeof *s->workers);
    if (s->workers == NULL) {
        server_free(s);
        return rd_errf(err, RD_INTERNAL, NULL, "out of memory");
    }
    if (svc_reflection_open(&s->reflection, err) != RD_OK) {
        server_free(s);
        return err->code;
    }
    if (svc_grpc_start(s, opt, &s->grpc, bound_port, err) != RD_OK) {
        server_free(s);
        return err->code;
    }
    for (int i = 0; i < opt->workers; i++) {
        if (pthread_create(&s->workers[i], NULL, worker_main, s) != 0) {
            rd_errf(err, RD_INTERNAL, NULL, "cannot start worker thread %d", i);
            svc_server_stop(s, 0);
            return err->code;
        }
        s->n_workers++;
    }
    *out = s;
    return RD_OK;
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
        /* a reference unless it is 0: then the call is being freed, waiting
         * for s->mu in call_free */
        int refs = atomic_load(&c->refs);
        while (refs > 0 && !atomic_compare_exchange_weak(&c->refs, &refs, refs + 1))
            ;
        if (refs > 0) {
            pthread_mutex_lock(&c->mu);
            c->stop_requested = true;
            pthread_mutex_unlock(&c->mu);
            list[n++] = c;
        }
    }
    pthread_mutex_unlock(&s->mu);

    for (size_t i = 0; i < n; i++) {
        svc_call *c = list[i];
        svc_end_fn fn = NULL;
        void *arg = NULL;
        bool idle_bidi = false;
        pthread_mutex_lock(&c->mu);
        if (!c->finishing && c->method->kind == SVC_SERVER_STREAM && c->end_fn != NULL &&
            !c->end_fired) {
            c->end_fired = true;
            fn = c->end_fn;
            arg = c->end_arg;
        } else if (!c->finishing && c->method->kind == SVC_BIDI_STREAM && !c->handler_running) {
            idle_bidi = true;
        }
        pthread_mutex_unlock(&c->mu);
        if (fn != NULL)
            fn(c, arg);
        if (idle_bidi)
            svc_call_end_if_open(c, RD_UNAVAILABLE, "server is shutting down");
        svc_call_release(c); /* ours */
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

static bool down_or_idle(const svc_server *s)
{
    return s->transport_down || s->inflight == 0;
}

static bool down(const svc_server *s)
{
    return s->transport_down;
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
    svc_grpc_shutdown(s->grpc);
    pthread_mutex_lock(&s->mu);
    wait_state(s, down_or_idle, &grace_end);
    size_t left = s->inflight;
    if (!s->transport_down && left == 0) {
        linger_end = deadline_in(IDLE_LINGER_MS);
        wait_state(s, down, ts_before(&linger_end, &grace_end) ? &linger_end : &grace_end);
    }
    bool done = s->transport_down;
    pthread_mutex_unlock(&s->mu);
    if (!done) {
        if (left > 0)
            svc_log_json(SVC_LOG_WARN, "grace period over: cancelling the calls still running",
                         NULL);
        svc_grpc_cancel_all(s->grpc);
        pthread_mutex_lock(&s->mu);
        wait_state(s, down, NULL);
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
    svc_grpc_free(s->grpc);
    server_free(s);
}
