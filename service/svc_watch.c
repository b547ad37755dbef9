/* recordd.v1.Records/WatchChanges: the change feed (docs/API.md,
 * "WatchChanges"). The handler checks the request and parks the stream in a
 * list; one dispatcher thread serves every stream. The writer's commit hook
 * (store_on_commit) records the newest committed sync id and wakes the
 * dispatcher, which, for each stream whose cursor is behind, reads the
 * organisation's next log rows on its own read connection and queues them
 * with svc_send. Catch-up and live follow are the same loop over the same
 * cursor, so the feed has no gaps and no duplicates.
 *
 * Only the dispatcher finishes a stream. svc_call_on_end (cancel, deadline,
 * shutdown) just flags the stream and wakes the dispatcher; the flag is set
 * through the list under the mutex, and a stream leaves the list (and is
 * freed) only under that mutex, so a late end callback finds nothing.
 *
 * Slow consumers: the dispatcher never waits for a stream. When a stream's
 * send queue is full (svc_send: RD_RATE_LIMITED) its cursor stays put and
 * the rows are read again later; a queue that stays full for
 * WATCH_STALL_MS ends the stream with RESOURCE_EXHAUSTED naming the sync id
 * to resume from. Memory per stream is the server's bounded send queue.
 *
 * A stream opened with a token ends with UNAUTHENTICATED once the token's
 * exp has passed, before anything more is sent; it resumes with a fresh
 * token. (A revocation takes effect when the client reconnects.) */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "recordd/v1/records.pb-c.h"
#include "service/receipt.h"
#include "service/svc_auth.h"
#include "service/svc_authz.h"
#include "service/svc_convert.h"
#include "service/svc_handlers.h"
#include "service/svc_watch.h"

#define WATCH_BATCH 64      /* log rows read per stream per pass */
#define WATCH_STALL_MS 5000 /* a full send queue for this long ends the stream */
#define WATCH_RETRY_MS 20   /* how soon a stream with a full queue is retried */
#define WATCH_FILTER_MAX 64 /* entries of models / groups */
/* The dispatcher's arena for one message (reset after each): a change
 * carries a whole record, so it is capped like a call's arena at the
 * largest --max-message-bytes (1 GiB); blocks are taken only as needed. */
#define WATCH_ARENA (((size_t)64 << 20) + 8 * ((size_t)1 << 30))

typedef struct watcher {
    struct watcher *next;
    svc_call *call;
    char *org;
    char *principal; /* its id: streams are counted per principal */
    char **models;
    size_t n_models;
    char **groups;
    size_t n_groups;
    int64_t cursor;           /* every change up to here was sent or skipped */
    int64_t seen_gen;         /* the commit generation of the last read (-1: none yet) */
    bool more;                /* the last read filled a batch: read on */
    int64_t expires_us;       /* token exp + skew (µs since the epoch); 0: an API key */
    int64_t stalled_since_us; /* 0 = the send queue has room */
    bool ended;               /* the end callback ran (under W.mu) */
    bool finished;            /* the dispatcher finished the call */
} watcher;

static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv; /* CLOCK_MONOTONIC; set up when the thread starts */
    bool started;
    bool stopping; /* svc_watch_shutdown ran: no new streams */
    pthread_t thread;
    store *db;
    int64_t head;  /* the store's commit generation last signalled */
    bool kick;     /* a stream was added or ended */
    watcher *list; /* newest first; only the dispatcher unlinks */
} W = {.mu = PTHREAD_MUTEX_INITIALIZER};

/* Serialises starting and stopping the dispatcher. Lock order: start_mu,
 * then the store's completion mutex (store_on_commit) or W.mu; the writer
 * calls on_commit with the completion mutex held and takes W.mu. */
static pthread_mutex_t start_mu = PTHREAD_MUTEX_INITIALIZER;

static void watcher_free(watcher *w)
{
    if (w == NULL)
        return;
    for (size_t i = 0; i < w->n_models; i++)
        free(w->models[i]);
    for (size_t i = 0; i < w->n_groups; i++)
        free(w->groups[i]);
    free(w->models);
    free(w->groups);
    free(w->org);
    free(w->principal);
    free(w);
}

/* store_commit_fn: runs on the writer thread; a short lock, a signal. */
static void on_commit(void *arg, int64_t generation)
{
    (void)arg;
    pthread_mutex_lock(&W.mu);
    if (generation > W.head) {
        W.head = generation;
        pthread_cond_signal(&W.cv);
    }
    pthread_mutex_unlock(&W.mu);
}

/* svc_end_fn: flags the stream if it is still listed. */
static void on_end(svc_call *call, void *arg)
{
    (void)arg;
    pthread_mutex_lock(&W.mu);
    for (watcher *w = W.list; w != NULL; w = w->next)
        if (w->call == call) {
            w->ended = true;
            W.kick = true;
            pthread_cond_signal(&W.cv);
            break;
        }
    pthread_mutex_unlock(&W.mu);
}

static void finish(watcher *w, rd_code code, const char *msg)
{
    if (w->finished)
        return;
    w->finished = true;
    svc_end(w->call, code, msg);
}

static Recordd__V1__ChangeOp op_pb(store_op op)
{
    switch (op) {
    case STORE_OP_CREATE:
        return RECORDD__V1__CHANGE_OP__CREATE;
    case STORE_OP_UPDATE:
        return RECORDD__V1__CHANGE_OP__UPDATE;
    case STORE_OP_REPLACE:
        return RECORDD__V1__CHANGE_OP__REPLACE;
    default:
        return RECORDD__V1__CHANGE_OP__DELETE;
    }
}

/* Queues one event. RD_INTERNAL when the arena runs out. */
static rd_code send_change(watcher *w, rd_arena *a, const store_change *e)
{
    Recordd__V1__ChangeEvent ev = RECORDD__V1__CHANGE_EVENT__INIT;
    size_t n = json_array_size(e->fields);
    ev.sync_id = e->sync_id;
    ev.server_tx_id = (char *)e->server_tx_id;
    ev.model = (char *)e->model;
    ev.id = (char *)e->id;
    ev.op = op_pb(e->op);
    ev.group = (char *)e->group;
    ev.actor = (char *)e->actor;
    ev.data = svc_json_to_struct(a, e->data);
    ev.committed_at = svc_timestamp(a, e->committed_at_us);
    ev.fields = n > 0 ? rd_arena_alloc(a, n * sizeof *ev.fields) : NULL;
    if (ev.data == NULL || ev.committed_at == NULL || (n > 0 && ev.fields == NULL))
        return RD_INTERNAL;
    for (size_t i = 0; i < n; i++)
        ev.fields[i] = (char *)json_string_value(json_array_get(e->fields, i));
    ev.n_fields = n;
    return svc_send(w->call, &ev.base);
}

/* What serve left to do. */
typedef enum serve_next { SERVE_IDLE = 0, SERVE_MORE = 1, SERVE_STALLED = 2 } serve_next;

/* Serves one stream: when a commit came since its last read (gen, the
 * store's commit generation; sync ids are per organisation, so the read
 * itself finds the organisation's head), reads its next rows and queues
 * those the principal may read. SERVE_MORE: rows beyond one batch are
 * waiting; SERVE_STALLED: its send queue is full, retry in a while. */
static serve_next serve(watcher *w, store_conn *conn, rd_arena *a, int64_t gen)
{
    if (w->finished || (w->seen_gen >= gen && !w->more && w->stalled_since_us == 0))
        return SERVE_IDLE;
    w->seen_gen = gen;
    if (w->expires_us != 0 && rd_now_us() >= w->expires_us) {
        /* nothing more is sent on an expired token's authority */
        char msg[128];
        snprintf(msg, sizeof msg,
                 "the token expired; reconnect with a fresh one and resume from sync id %lld",
                 (long long)w->cursor);
        finish(w, RD_TOKEN_EXPIRED, msg);
        return SERVE_IDLE;
    }
    store_changes_query q = {
        .org = w->org,
        .after = w->cursor,
        .upto = 0, /* the organisation's head in the read's snapshot */
        .models = (const char *const *)w->models,
        .n_models = w->n_models,
        .groups = (const char *const *)w->groups,
        .n_groups = w->n_groups,
        .limit = WATCH_BATCH,
    };
    store_change *ev = NULL;
    size_t n = 0;
    int64_t scanned = w->cursor;
    bool stalled = false;
    rd_err err;
    rd_err_clear(&err);
    if (store_changes_read(conn, &q, &ev, &n, &scanned, &err) != RD_OK) {
        finish(w, err.code, err.msg);
        return SERVE_IDLE;
    }
    const auth_principal *p = svc_call_principal(w->call);
    size_t i = 0;
    for (; i < n; i++) {
        rd_err deny;
        if (p == NULL || auth_allows(p, AUTH_READ, ev[i].model, ev[i].group, NULL, 0, NULL, NULL,
                                     &deny) != RD_OK) {
            w->cursor = ev[i].sync_id; /* not the caller's to see */
            continue;
        }
        rd_code rc = send_change(w, a, &ev[i]);
        rd_arena_reset(a);
        if (rc == RD_OK) {
            w->cursor = ev[i].sync_id;
            w->stalled_since_us = 0;
            continue;
        }
        if (rc == RD_RATE_LIMITED) {
            int64_t now = rd_now_us();
            if (w->stalled_since_us == 0)
                w->stalled_since_us = now;
            if (now - w->stalled_since_us >= (int64_t)WATCH_STALL_MS * 1000) {
                char msg[96];
                snprintf(msg, sizeof msg, "slow consumer; resume from sync id %lld",
                         (long long)w->cursor);
                finish(w, RD_RATE_LIMITED, msg);
            } else {
                stalled = true;
            }
        } else if (rc == RD_UNAVAILABLE) {
            finish(w, RD_CANCELLED, "watch ended");
        } else {
            finish(w, RD_INTERNAL, "a change could not be sent");
        }
        break;
    }
    if (i == n)
        w->cursor = scanned;
    w->more = n == q.limit || i < n;
    store_changes_free(ev, n);
    if (stalled)
        return SERVE_STALLED;
    return !w->finished && w->more ? SERVE_MORE : SERVE_IDLE;
}

/* Takes ended and finished streams out of the list (W.mu held) into *dead. */
static void reap_locked(watcher **dead)
{
    watcher **pp = &W.list;
    while (*pp != NULL) {
        watcher *w = *pp;
        if (w->ended || w->finished || W.stopping) {
            *pp = w->next;
            w->next = *dead;
            *dead = w;
        } else {
            pp = &w->next;
        }
    }
}

static void *dispatcher_main(void *arg)
{
    (void)arg;
    pthread_setname_np(pthread_self(), "rd-feed");
    rd_err err;
    rd_err_clear(&err);
    store_conn *conn = NULL;
    rd_arena *a = rd_arena_new(WATCH_ARENA);
    int64_t head = 0;
    bool conn_ok = a != NULL && store_conn_open(W.db, &conn, &err) == RD_OK;
    serve_next next = SERVE_IDLE;
    pthread_mutex_lock(&W.mu);
    head = W.head;
    for (;;) {
        /* a commit that came in while serving was signalled to nobody */
        if (W.stopping || W.kick || next == SERVE_MORE || W.head != head) {
            /* no wait */
        } else if (next == SERVE_IDLE) {
            pthread_cond_wait(&W.cv, &W.mu);
        } else {
            struct timespec ts;
            clock_gettime(CLOCK_MONOTONIC, &ts);
            ts.tv_nsec += (long)WATCH_RETRY_MS * 1000000L;
            ts.tv_sec += ts.tv_nsec / 1000000000L;
            ts.tv_nsec %= 1000000000L;
            pthread_cond_timedwait(&W.cv, &W.mu, &ts);
        }
        W.kick = false;
        watcher *dead = NULL;
        reap_locked(&dead);
        bool stopping = W.stopping;
        head = W.head;
        watcher *list = W.list;
        pthread_mutex_unlock(&W.mu);
        while (dead != NULL) {
            watcher *w = dead;
            dead = w->next;
            /* a finished call may be gone: only finish() may look at it */
            if (stopping)
                finish(w, RD_UNAVAILABLE, "server is shutting down");
            else if (w->ended && !w->finished)
                finish(w,
                       svc_server_serving(svc_call_ctx(w->call)->server) ? RD_CANCELLED
                                                                         : RD_UNAVAILABLE,
                       "watch ended");
            watcher_free(w);
        }
        if (stopping)
            break;
        next = SERVE_IDLE;
        for (watcher *w = list; w != NULL; w = w->next) {
            serve_next r = SERVE_IDLE;
            if (!conn_ok)
                finish(w, RD_UNAVAILABLE, "the change log cannot be read");
            else
                r = serve(w, conn, a, head);
            if (r == SERVE_MORE || (r == SERVE_STALLED && next == SERVE_IDLE))
                next = r;
        }
        pthread_mutex_lock(&W.mu);
        for (watcher *w = W.list; w != NULL; w = w->next)
            if (w->finished)
                W.kick = true; /* reap it on the next turn */
    }
    if (conn != NULL)
        store_conn_close(conn);
    rd_arena_free(a);
    return NULL;
}

/* Starts the dispatcher for db on first use. The commit hook goes in
 * before the thread reads the log's head, so no commit is missed. false
 * when shutting down or out of resources. */
static bool ensure_started(store *db)
{
    bool ok = false;
    pthread_mutex_lock(&start_mu);
    pthread_mutex_lock(&W.mu);
    bool stopping = W.stopping, started = W.started;
    pthread_mutex_unlock(&W.mu);
    if (stopping || started) {
        ok = !stopping;
        goto done;
    }
    pthread_condattr_t attr;
    if (pthread_condattr_init(&attr) != 0)
        goto done;
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    int rc = pthread_cond_init(&W.cv, &attr);
    pthread_condattr_destroy(&attr);
    if (rc != 0)
        goto done;
    W.db = db;
    store_on_commit(db, on_commit, NULL);
    if (pthread_create(&W.thread, NULL, dispatcher_main, NULL) != 0) {
        store_on_commit(db, NULL, NULL);
        pthread_cond_destroy(&W.cv);
        goto done;
    }
    pthread_mutex_lock(&W.mu);
    W.started = true;
    pthread_mutex_unlock(&W.mu);
    ok = true;
done:
    pthread_mutex_unlock(&start_mu);
    return ok;
}

/* Copies list[0..n) into *out (malloc'd strings). */
static bool copy_list(char **const list, size_t n, char ***out)
{
    *out = n > 0 ? calloc(n, sizeof **out) : NULL;
    if (n > 0 && *out == NULL)
        return false;
    for (size_t i = 0; i < n; i++)
        if (((*out)[i] = strdup(list[i])) == NULL)
            return false;
    return true;
}

void svc_watch_changes(svc_call *call, const ProtobufCMessage *msg)
{
    const Recordd__V1__WatchChangesRequest *req = (const void *)msg;
    svc_ctx *ctx = svc_call_ctx(call);
    watcher *w = NULL;
    rd_err err;
    rd_err_clear(&err);
    if (req->since_sync_id < 0) {
        rd_errf(&err, RD_VALIDATION_FAILED, "sinceSyncId", "sinceSyncId must not be negative");
        goto fail;
    }
    if (req->n_models > WATCH_FILTER_MAX || req->n_groups > WATCH_FILTER_MAX) {
        rd_errf(&err, RD_VALIDATION_FAILED, req->n_models > WATCH_FILTER_MAX ? "models" : "groups",
                "at most %d models and %d groups", WATCH_FILTER_MAX, WATCH_FILTER_MAX);
        goto fail;
    }
    /* reading the feed needs read: on every model asked for, or (no list)
     * on some model; events are then filtered to what the caller may read */
    for (size_t i = 0; i < req->n_models; i++)
        if (svc_authz_model(call, svc_call_method(call)->can, req->models[i], &err) != RD_OK)
            goto fail;
    if (req->n_models == 0 && svc_authz_any(call, svc_call_method(call)->can, &err) != RD_OK)
        goto fail;
    /* retention: the log holds every sync id from its oldest row on */
    store_conn *conn = store_thread_conn(ctx->db, &err);
    int64_t oldest = 0, head = 0;
    if (conn == NULL ||
        store_changes_bounds(conn, svc_call_org(call), &oldest, &head, &err) != RD_OK)
        goto fail;
    if (req->since_sync_id < oldest - 1) {
        rd_errf(&err, RD_SYNC_ID_EXPIRED, "sinceSyncId",
                "sinceSyncId %lld is older than the change log's retention; the oldest available"
                " sync id is %lld (resume from %lld)",
                (long long)req->since_sync_id, (long long)oldest, (long long)(oldest - 1));
        goto fail;
    }
    w = calloc(1, sizeof *w);
    const auth_principal *who = svc_call_principal(call);
    bool ok = w != NULL && (w->org = strdup(svc_call_org(call))) != NULL &&
              (w->principal = strdup(who != NULL ? auth_principal_id(who) : "")) != NULL;
    if (ok) {
        /* the lists are calloc'd: a partial copy frees cleanly */
        ok = copy_list(req->models, req->n_models, &w->models);
        w->n_models = w->models != NULL ? req->n_models : 0;
        ok = ok && copy_list(req->groups, req->n_groups, &w->groups);
        w->n_groups = w->groups != NULL ? req->n_groups : 0;
    }
    if (!ok) {
        rd_errf(&err, RD_INTERNAL, NULL, "out of memory");
        goto fail;
    }
    w->call = call;
    w->cursor = req->since_sync_id;
    w->seen_gen = -1; /* read at once */
    /* the token's exp with the skew its verification allows */
    w->expires_us = auth_principal_expires_us(svc_call_principal(call));
    if (w->expires_us != 0 && ctx->auth != NULL)
        w->expires_us += ctx->auth->skew_s * 1000000;
    if (!ensure_started(ctx->db)) {
        rd_errf(&err, RD_UNAVAILABLE, NULL, "server is shutting down");
        goto fail;
    }
    pthread_mutex_lock(&W.mu);
    if (W.stopping) {
        pthread_mutex_unlock(&W.mu);
        rd_errf(&err, RD_UNAVAILABLE, NULL, "server is shutting down");
        goto fail;
    }
    /* at most max_watch_streams open streams per principal (an API key and
     * its tokens count together), so one caller cannot hold the dispatcher */
    int cap = ctx->max_watch_streams > 0 ? ctx->max_watch_streams : 16;
    int open_streams = 0;
    for (watcher *o = W.list; o != NULL; o = o->next)
        if (!o->ended && !o->finished && strcmp(o->org, w->org) == 0 &&
            strcmp(o->principal, w->principal) == 0)
            open_streams++;
    if (open_streams >= cap) {
        pthread_mutex_unlock(&W.mu);
        rd_errf(&err, RD_RATE_LIMITED, NULL,
                "this principal already has %d open WatchChanges streams, the most allowed "
                "(--max-watch-streams-per-principal); close one first",
                open_streams);
        goto fail;
    }
    /* Registered under W.mu: the callback, should it run at once on another
     * thread, waits for the mutex and then finds the stream listed. */
    if (!svc_call_on_end(call, on_end, NULL)) {
        pthread_mutex_unlock(&W.mu);
        watcher_free(w);
        svc_end(call, RD_CANCELLED, "watch ended");
        return;
    }
    w->next = W.list;
    W.list = w;
    W.kick = true;
    pthread_cond_signal(&W.cv);
    pthread_mutex_unlock(&W.mu);
    return; /* the dispatcher owns the call from here on */
fail:
    watcher_free(w);
    svc_fail(call, &err);
}

void svc_watch_shutdown(void)
{
    pthread_mutex_lock(&start_mu);
    pthread_mutex_lock(&W.mu);
    bool started = W.started;
    W.stopping = true;
    if (started)
        pthread_cond_signal(&W.cv);
    pthread_mutex_unlock(&W.mu);
    if (started) {
        store_on_commit(W.db, NULL, NULL);
        pthread_join(W.thread, NULL);
        pthread_mutex_lock(&W.mu);
        W.started = false;
        pthread_mutex_unlock(&W.mu);
        pthread_cond_destroy(&W.cv);
    }
    pthread_mutex_unlock(&start_mu);
}
