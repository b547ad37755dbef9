/* recordd.v1.Claims handlers: AcquireClaim and ReleaseClaim are writes that
 * go through the store's writer (store/claims.c) and finish in their done
 * callbacks. An acquire that may wait and finds the record claimed is
 * parked in the waiter registry below; the registry's timer thread
 * re-submits it when the blocking claim expires or a release of that record
 * commits, and fails it `claimed` when its wait is over. No worker or the
 * writer ever blocks on a waiting call. docs/internals/claims.md. */
#include <pthread.h>
#include <string.h>
#include <time.h>

#include "recordd/v1/claims.pb-c.h"
#include "service/receipt.h"
#include "service/svc_claims.h"
#include "service/svc_convert.h"
#include "service/svc_authz.h"
#include "service/svc_handlers.h"

#define BUCKETS 64

/* One AcquireClaim in flight; lives in the call's arena. While registered
 * it belongs to the registry, otherwise to whoever runs it (the writer's
 * queue, or the thread finishing it). */
typedef struct acquire_call {
    store_write w;
    svc_call *call;
    store *db;
    int64_t wait_until_us; /* 0: the call does not wait */
    int64_t submitted_us;  /* when its latest attempt went to the writer */
    /* registered only: */
    int64_t due_us; /* retry at: the blocking claim's expiry; 0 after a release */
    rd_err last;    /* the `claimed` error to finish with when the wait ends */
    unsigned bucket;
    struct acquire_call *next;
} acquire_call;

/* The waiter registry: waiting acquires by (org, model, id) hash, FIFO per
 * bucket, so that after a release the longest waiter is re-submitted (and
 * committed) first. */
static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv; /* CLOCK_REALTIME: due times are rd_now_us() values */
    acquire_call *buckets[BUCKETS];
    /* per bucket: when another process's release was last announced (a
     * waiter whose attempt began before it tries again at once: the
     * announcement may have come between its attempt and its parking) */
    int64_t released_us[BUCKETS];
    size_t n;
    bool closed;
    bool started;
    pthread_t timer;
} reg = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};

static unsigned key_bucket(const char *org, const char *model, const char *id)
{
    uint32_t h = 2166136261u;
    const char *parts[3] = {org, model, id};
    for (int i = 0; i < 3; i++) {
        for (const char *p = parts[i]; *p != '\0'; p++) {
            h ^= (unsigned char)*p;
            h *= 16777619u;
        }
        h ^= 0xff; /* separator: ("ab", "c") and ("a", "bc") differ */
        h *= 16777619u;
    }
    return h % BUCKETS;
}

static bool same_key(const acquire_call *ac, const char *org, const char *model, const char *id)
{
    return strcmp(ac->w.org, org) == 0 && strcmp(ac->w.rec.model, model) == 0 &&
           strcmp(ac->w.rec.id, id) == 0;
}

/* The earliest moment ac needs the timer: its retry or the end of its wait. */
static int64_t next_event(const acquire_call *ac)
{
    return ac->due_us < ac->wait_until_us ? ac->due_us : ac->wait_until_us;
}

/* ---- finishing ------------------------------------------------------------- */

static void acquire_fail(acquire_call *ac, const rd_err *e)
{
    rd_err err = *e; /* the call's arena, holding ac, goes with the call */
    svc_fail(ac->call, &err);
}

static Recordd__V1__Claim *claim_to_pb(rd_arena *a, const store_claim *c)
{
    Recordd__V1__Claim *out = rd_arena_alloc(a, sizeof *out);
    if (out == NULL)
        return NULL;
    recordd__v1__claim__init(out);
    out->claim_id = rd_arena_strdup(a, c->claim_id);
    out->model = rd_arena_strdup(a, c->model);
    out->id = rd_arena_strdup(a, c->id);
    out->holder = rd_arena_strdup(a, c->holder);
    out->expires_at = svc_timestamp(a, c->expires_at_us);
    if (out->claim_id == NULL || out->model == NULL || out->id == NULL || out->holder == NULL ||
        out->expires_at == NULL)
        return NULL;
    return out;
}

static void fail_oom(svc_call *call)
{
    rd_err err;
    rd_errf(&err, RD_INTERNAL, NULL, "out of memory");
    svc_fail(call, &err);
}

/* ---- registry ---------------------------------------------------------------- */

static void *timer_main(void *arg);

/* Parks ac until due_us (or a release of its record). RD_UNAVAILABLE (err
 * set) when the registry is closed or full, or the timer thread cannot
 * start. After RD_OK the caller must not touch ac again. */
static rd_code registry_add(acquire_call *ac, rd_err *err)
{
    rd_code code = RD_OK;
    pthread_mutex_lock(&reg.mu);
    if (reg.closed) {
        code = rd_errf(err, RD_UNAVAILABLE, NULL, "the server is shutting down");
        goto done;
    }
    if (reg.n >= SVC_CLAIM_WAITERS_MAX) {
        code = rd_errf(err, RD_UNAVAILABLE, NULL,
                       "too many calls are waiting for claims; retry later");
        goto done;
    }
    if (!reg.started) {
        if (pthread_create(&reg.timer, NULL, timer_main, NULL) != 0) {
            code = rd_errf(err, RD_UNAVAILABLE, NULL, "cannot start the claim timer");
            goto done;
        }
        reg.started = true;
    }
    ac->bucket = key_bucket(ac->w.org, ac->w.rec.model, ac->w.rec.id);
    if (ac->submitted_us <= reg.released_us[ac->bucket])
        ac->due_us = 0;
    ac->next = NULL;
    acquire_call **tail = &reg.buckets[ac->bucket];
    while (*tail != NULL)
        tail = &(*tail)->next;
    *tail = ac;
    reg.n++;
    pthread_cond_signal(&reg.cv);
done:
    pthread_mutex_unlock(&reg.mu);
    return code;
}

/* A release of (org, model, id) committed: its waiters are due now. */
static void registry_wake(const char *org, const char *model, const char *id)
{
    bool any = false;
    pthread_mutex_lock(&reg.mu);
    for (acquire_call *ac = reg.buckets[key_bucket(org, model, id)]; ac != NULL; ac = ac->next)
        if (same_key(ac, org, model, id)) {
            ac->due_us = 0;
            any = true;
        }
    if (any)
        pthread_cond_signal(&reg.cv);
    pthread_mutex_unlock(&reg.mu);
}

void svc_claims_remote_released(const char *org, const char *model, const char *id)
{
    if (org != NULL && model != NULL && id != NULL) {
        unsigned b = key_bucket(org, model, id);
        pthread_mutex_lock(&reg.mu);
        reg.released_us[b] = rd_now_us();
        pthread_mutex_unlock(&reg.mu);
        registry_wake(org, model, id);
        return;
    }
    pthread_mutex_lock(&reg.mu); /* anything may have been released */
    int64_t now = rd_now_us();
    for (int b = 0; b < BUCKETS; b++) {
        reg.released_us[b] = now;
        for (acquire_call *ac = reg.buckets[b]; ac != NULL; ac = ac->next)
            ac->due_us = 0;
    }
    pthread_cond_signal(&reg.cv);
    pthread_mutex_unlock(&reg.mu);
}

/* Unlinks every waiter for which pred(ac, now) holds, in bucket order, into
 * a list. Called with reg.mu held. */
static acquire_call *detach(bool (*pred)(const acquire_call *, int64_t), int64_t now)
{
    acquire_call *head = NULL, **out = &head;
    for (int b = 0; b < BUCKETS; b++) {
        acquire_call **pp = &reg.buckets[b];
        while (*pp != NULL) {
            acquire_call *ac = *pp;
            if (!pred(ac, now)) {
                pp = &ac->next;
                continue;
            }
            *pp = ac->next;
            ac->next = NULL;
            *out = ac;
            out = &ac->next;
            reg.n--;
        }
    }
    return head;
}

static bool is_due(const acquire_call *ac, int64_t now)
{
    return next_event(ac) <= now;
}

static bool any_waiter(const acquire_call *ac, int64_t now)
{
    (void)ac;
    (void)now;
    return true;
}

static void acquire_done(store_write *w);

/* A due waiter: its wait is over (finish `claimed`) or it tries again. */
static void retry_or_fail(acquire_call *ac)
{
    if (rd_now_us() >= ac->wait_until_us) {
        acquire_fail(ac, &ac->last);
        return;
    }
    memset(&ac->w.lease.out, 0, sizeof ac->w.lease.out);
    ac->submitted_us = rd_now_us();
    store_submit(ac->db, &ac->w); /* acquire_done runs again */
}

/* The timer thread: sleeps until the earliest due time or wait end among
 * the waiters (or a signal: a new waiter, a release, shutdown), then takes
 * the due waiters out and re-submits or fails them without the lock. */
static void *timer_main(void *arg)
{
    (void)arg;
    pthread_setname_np(pthread_self(), "rd-claims");
    pthread_mutex_lock(&reg.mu);
    while (!reg.closed) {
        int64_t now = rd_now_us();
        acquire_call *due = detach(is_due, now);
        if (due != NULL) {
            pthread_mutex_unlock(&reg.mu);
            for (acquire_call *ac = due, *next; ac != NULL; ac = next) {
                next = ac->next;
                retry_or_fail(ac);
            }
            pthread_mutex_lock(&reg.mu);
            continue;
        }
        int64_t wake = INT64_MAX;
        for (int b = 0; b < BUCKETS; b++)
            for (acquire_call *ac = reg.buckets[b]; ac != NULL; ac = ac->next)
                if (next_event(ac) < wake)
                    wake = next_event(ac);
        if (wake == INT64_MAX) {
            pthread_cond_wait(&reg.cv, &reg.mu);
            continue;
        }
        struct timespec ts = {.tv_sec = (time_t)(wake / 1000000),
                              .tv_nsec = (long)(wake % 1000000) * 1000};
        pthread_cond_timedwait(&reg.cv, &reg.mu, &ts);
    }
    pthread_mutex_unlock(&reg.mu);
    return NULL;
}

void svc_claims_shutdown(void)
{
    pthread_mutex_lock(&reg.mu);
    reg.closed = true;
    acquire_call *left = detach(any_waiter, 0);
    bool started = reg.started;
    reg.started = false;
    pthread_cond_signal(&reg.cv);
    pthread_mutex_unlock(&reg.mu);
    if (started)
        pthread_join(reg.timer, NULL);
    rd_err err;
    rd_errf(&err, RD_UNAVAILABLE, NULL, "the server is shutting down");
    for (acquire_call *ac = left, *next; ac != NULL; ac = next) {
        next = ac->next;
        acquire_fail(ac, &err);
    }
}

/* ---- AcquireClaim --------------------------------------------------------------- */

/* Runs on the store's completer thread (or in store_submit when the store is
 * closing). */
static void acquire_done(store_write *w)
{
    acquire_call *ac = w->ctx;
    rd_err err = w->err;
    if (err.code == RD_OK) {
        Recordd__V1__Claim *out = claim_to_pb(svc_call_arena(ac->call), &w->lease.out);
        if (out == NULL)
            fail_oom(ac->call);
        else
            svc_reply(ac->call, &out->base);
        return;
    }
    if (err.code == RD_CLAIMED && ac->wait_until_us > rd_now_us()) {
        ac->last = err;
        ac->due_us = w->lease.out.expires_at_us;
        if (registry_add(ac, &err) == RD_OK)
            return; /* ac belongs to the registry now */
    }
    acquire_fail(ac, &err);
}

/* The store's authorize callback for claims (writer thread, inside the
 * claim's transaction): update on the group of the record being claimed or
 * released, as the writer reads it; a missing record needs update on the
 * model in some group (the claim then reports not_found). */
static rd_code claim_authorize(svc_call *call, store_write *w, const char *group, rd_err *err)
{
    auth_verb can = svc_call_method(call)->can;
    if (group == NULL)
        return svc_authz_model(call, can, w->rec.model, err);
    return svc_authz(call, can, w->rec.model, group, NULL, 0, NULL, err);
}

static rd_code acquire_authorize(store_write *w, const char *group, rd_err *err)
{
    return claim_authorize(((acquire_call *)w->ctx)->call, w, group, err);
}

void svc_acquire_claim(svc_call *call, const ProtobufCMessage *msg)
{
    const Recordd__V1__AcquireClaimRequest *req = (const void *)msg;
    svc_ctx *ctx = svc_call_ctx(call);
    rd_err err;
    rd_err_clear(&err);
    if (req->model == NULL || req->model[0] == '\0') {
        rd_errf(&err, RD_VALIDATION_FAILED, "model", "model is required");
        goto fail;
    }
    if (req->id == NULL || req->id[0] == '\0') {
        rd_errf(&err, RD_VALIDATION_FAILED, "id", "id is required");
        goto fail;
    }
    if (req->ttl_seconds < 1 || req->ttl_seconds > STORE_CLAIM_TTL_MAX_S) {
        rd_errf(&err, RD_VALIDATION_FAILED, "ttlSeconds", "ttlSeconds must be between 1 and %d",
                STORE_CLAIM_TTL_MAX_S);
        goto fail;
    }
    if (req->wait_seconds < 0 || req->wait_seconds > SVC_CLAIM_WAIT_MAX_S) {
        rd_errf(&err, RD_VALIDATION_FAILED, "waitSeconds", "waitSeconds must be between 0 and %d",
                SVC_CLAIM_WAIT_MAX_S);
        goto fail;
    }
    /* a claim guards updates: taking one needs update on the record's
     * group, checked by the writer (acquire_authorize); here only the model */
    if (svc_authz_model(call, svc_call_method(call)->can, req->model, &err) != RD_OK)
        goto fail;
    acquire_call *ac = rd_arena_calloc(svc_call_arena(call), sizeof *ac);
    if (ac == NULL) {
        rd_errf(&err, RD_INTERNAL, NULL, "out of memory");
        goto fail;
    }
    bool renew = req->claim_id != NULL && req->claim_id[0] != '\0';
    int64_t deadline = svc_call_deadline_us(call);
    ac->call = call;
    ac->db = ctx->db;
    if (req->wait_seconds > 0 && !renew) {
        ac->wait_until_us = rd_now_us() + (int64_t)req->wait_seconds * 1000000;
        if (deadline != 0 && deadline < ac->wait_until_us)
            ac->wait_until_us = deadline;
    }
    ac->w.op = STORE_OP_CLAIM_ACQUIRE;
    ac->w.org = svc_call_org(call);
    ac->w.actor = svc_call_actor(call);
    ac->w.rec.model = req->model;
    ac->w.rec.id = req->id;
    ac->w.rec.claim = renew ? req->claim_id : NULL;
    ac->w.lease.ttl_s = req->ttl_seconds;
    ac->w.deadline_us = deadline;
    ac->w.authorize = acquire_authorize;
    ac->w.done = acquire_done;
    ac->w.ctx = ac;
    ac->submitted_us = rd_now_us();
    store_submit(ctx->db, &ac->w);
    return;
fail:
    svc_fail(call, &err);
}

/* ---- ReleaseClaim ------------------------------------------------------------------ */

typedef struct release_call {
    store_write w;
    svc_call *call;
} release_call;

static rd_code release_authorize(store_write *w, const char *group, rd_err *err)
{
    return claim_authorize(((release_call *)w->ctx)->call, w, group, err);
}

static void release_done(store_write *w)
{
    release_call *rc = w->ctx;
    rd_err err = w->err;
    if (err.code != RD_OK) {
        svc_fail(rc->call, &err);
        return;
    }
    registry_wake(w->org, w->lease.out.model, w->lease.out.id);
    rd_arena *a = svc_call_arena(rc->call);
    Recordd__V1__ReleaseClaimResponse *resp = rd_arena_alloc(a, sizeof *resp);
    if (resp != NULL) {
        recordd__v1__release_claim_response__init(resp);
        resp->released = true;
        resp->claim = claim_to_pb(a, &w->lease.out);
    }
    if (resp == NULL || resp->claim == NULL)
        fail_oom(rc->call);
    else
        svc_reply(rc->call, &resp->base);
}

void svc_release_claim(svc_call *call, const ProtobufCMessage *msg)
{
    const Recordd__V1__ReleaseClaimRequest *req = (const void *)msg;
    svc_ctx *ctx = svc_call_ctx(call);
    rd_err err;
    rd_err_clear(&err);
    if (req->claim_id == NULL || req->claim_id[0] == '\0') {
        rd_errf(&err, RD_VALIDATION_FAILED, "claimId", "claimId is required");
        goto fail;
    }
    /* only the holder may release (the store checks), with update on the
     * claimed record's group (checked by the writer, release_authorize);
     * here update on the named model, or somewhere */
    bool named = req->model != NULL && req->model[0] != '\0';
    auth_verb can = svc_call_method(call)->can;
    if ((named ? svc_authz_model(call, can, req->model, &err) : svc_authz_any(call, can, &err)) !=
        RD_OK)
        goto fail;
    release_call *rc = rd_arena_calloc(svc_call_arena(call), sizeof *rc);
    if (rc == NULL) {
        rd_errf(&err, RD_INTERNAL, NULL, "out of memory");
        goto fail;
    }
    rc->call = call;
    rc->w.op = STORE_OP_CLAIM_RELEASE;
    rc->w.org = svc_call_org(call);
    rc->w.actor = svc_call_actor(call);
    rc->w.rec.model = req->model;
    rc->w.rec.id = req->id;
    rc->w.rec.claim = req->claim_id;
    rc->w.deadline_us = svc_call_deadline_us(call);
    rc->w.authorize = release_authorize;
    rc->w.done = release_done;
    rc->w.ctx = rc;
    store_submit(ctx->db, &rc->w);
    return;
fail:
    svc_fail(call, &err);
}
