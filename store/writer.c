/* writer.c: the single writer thread and group commit. store_submit queues
 * a write; the writer takes every queued write (up to max_batch), runs each
 * in its own SAVEPOINT inside one IMMEDIATE transaction, commits once (one
 * fsync for the batch) and only then hands the batch to the completer
 * thread, which runs the completions. The record writes themselves are in
 * record.c (store_record_apply). */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "store/store_int.h"

/* ---- queue ----------------------------------------------------------------------- */

static void init_outputs(store_write *w)
{
    rd_err_clear(&w->err);
    rd_random_id("tx_", w->server_tx_id, 20);
    w->last_sync_id = 0;
    w->ops = 0;
    w->affected = NULL;
    w->n_affected = 0;
    memset(&w->rec.record, 0, sizeof w->rec.record);
    w->push.revision = 0;
    w->push.changes = NULL;
    w->rec.current_version = 0;
    w->rec.conflicts = NULL;
    w->rec.held = false;
    w->idem_stored = false;
    w->replayed = false;
    w->replay = NULL;
    w->replay_len = 0;
    w->replay_status = 0;
}

/* Drops whatever a failed write had produced. */
static void reset_outputs(store_write *w)
{
    store_record_clear(&w->rec.record);
    free(w->affected);
    w->affected = NULL;
    w->n_affected = 0;
    json_decref(w->push.changes);
    w->push.changes = NULL;
    w->last_sync_id = 0;
    w->ops = 0;
    w->push.revision = 0;
    w->rec.current_version = 0;
    json_decref(w->rec.conflicts);
    w->rec.conflicts = NULL;
    w->rec.held = false;
    w->idem_stored = false;
    free(w->replay);
    w->replay = NULL;
    w->replay_len = 0;
    w->replayed = false;
}

/* Drops what an undone attempt at a batch left in w, and in its bulk
 * operations (their after-images and conflicts; run_op sets the rest
 * afresh), so the next attempt starts from the inputs alone. */
static void reset_attempt(store_write *w)
{
    for (size_t i = 0; w->op == STORE_OP_BULK && w->bulk != NULL && i < w->bulk->n_ops; i++) {
        store_write *ow = &w->bulk->ops[i].w;
        store_record_clear(&ow->rec.record);
        json_decref(ow->rec.conflicts);
        ow->rec.conflicts = NULL;
        ow->rec.held = false;
        ow->rec.current_version = 0;
        free(ow->affected);
        ow->affected = NULL;
        ow->n_affected = 0;
    }
    reset_outputs(w);
    init_outputs(w);
}

void store_submit(store *s, store_write *w)
{
    init_outputs(w);
    w->next_ = NULL;
    w->idem_next_ = NULL;
    w->idem_inflight_ = false;
    pthread_mutex_lock(&s->qmu);
    if (s->closing) {
        pthread_mutex_unlock(&s->qmu);
        rd_errf(&w->err, RD_UNAVAILABLE, NULL, "the store is shutting down");
        if (w->done != NULL)
            w->done(w);
        return;
    }
    if (w->idem_key != NULL && w->idem_key[0] != '\0' && !store_idem_enter(s, w)) {
        pthread_mutex_unlock(&s->qmu);
        rd_errf(&w->err, RD_IDEMPOTENCY_IN_PROGRESS, "idempotencyKey",
                "a request with this idempotency key is still in progress; retry later");
        if (w->done != NULL)
            w->done(w);
        return;
    }
    if (w->op == STORE_OP_PUSH_SCHEMA)
        store_schema_ref(w->push.schema);
    if (s->qtail != NULL)
        s->qtail->next_ = w;
    else
        s->qhead = w;
    s->qtail = w;
    pthread_cond_signal(&s->qcv);
    pthread_mutex_unlock(&s->qmu);
}

typedef struct waiter {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool done;
    void *ctx; /* the caller's ctx, restored afterwards */
} waiter;

static void wait_done(store_write *w)
{
    waiter *wt = w->ctx;
    pthread_mutex_lock(&wt->mu);
    wt->done = true;
    pthread_cond_signal(&wt->cv);
    pthread_mutex_unlock(&wt->mu);
}

rd_code store_submit_wait(store *s, store_write *w)
{
    waiter wt;
    pthread_mutex_init(&wt.mu, NULL);
    pthread_cond_init(&wt.cv, NULL);
    wt.done = false;
    wt.ctx = w->ctx;
    w->ctx = &wt;
    w->done = wait_done;
    store_submit(s, w);
    pthread_mutex_lock(&wt.mu);
    while (!wt.done)
        pthread_cond_wait(&wt.cv, &wt.mu);
    pthread_mutex_unlock(&wt.mu);
    pthread_mutex_destroy(&wt.mu);
    pthread_cond_destroy(&wt.cv);
    w->ctx = wt.ctx;
    w->done = NULL;
    return w->err.code;
}

/* ---- helpers --------------------------------------------------------------------- */

/* Runs a cached statement on the write connection that returns no rows. */
int store_wdefer(store *s, store_dbst *st)
{
    s->wmods++;
    if (!s->defer || atomic_load(&s->fault_countdown) > 0)
        return store_wstep(s, st);
    return store_db_defer(st);
}

/* wexec through store_wdefer. */
static int wexec_deferred(store *s, const char *sql)
{
    store_dbst *st = NULL;
    int rc = store_stmt_get(&s->wcache, sql, &st);
    if (rc != STORE_DB_OK)
        return rc;
    rc = store_wdefer(s, st);
    store_stmt_put(st);
    return rc == STORE_DB_DONE ? STORE_DB_OK : rc;
}

int store_wstep(store *s, store_dbst *st)
{
    int left = atomic_load(&s->fault_countdown);
    if (left > 0) {
        if (left > 1 || !atomic_load(&s->fault_repeat))
            atomic_store(&s->fault_countdown, left - 1);
        if (left == 1)
            return atomic_load(&s->fault_rc);
    }
    return store_db_step(st);
}

void store_fault_arm(store *s, int nth, int rc, bool repeat)
{
    atomic_store(&s->fault_rc, rc);
    atomic_store(&s->fault_repeat, repeat);
    atomic_store(&s->fault_countdown, nth > 0 ? nth : 0);
}

void store_fault_disarm(store *s)
{
    atomic_store(&s->fault_countdown, 0);
}

static int wexec(store *s, const char *sql)
{
    store_dbst *st = NULL;
    int rc = store_stmt_get(&s->wcache, sql, &st);
    if (rc != STORE_DB_OK)
        return rc;
    rc = store_wstep(s, st);
    store_stmt_put(st);
    return rc == STORE_DB_DONE ? STORE_DB_OK : rc;
}

void store_fault_commit(store *s, int mode)
{
    atomic_store(&s->fault_commit, mode);
}

/* COMMIT, through store_fault_commit's injection. */
static int commit(store *s)
{
    int lost = atomic_exchange(&s->fault_commit, 0);
    if (lost == STORE_FAULT_COMMIT_LOST_BEFORE) {
        wexec(s, "ROLLBACK");
        return STORE_DB_CANTOPEN;
    }
    int rc = wexec(s, "COMMIT");
    return lost == STORE_FAULT_COMMIT_LOST_AFTER && rc == STORE_DB_OK ? STORE_DB_CANTOPEN : rc;
}

store_schema *store_writer_schema(store *s, const char *org)
{
    for (size_t i = 0; i < s->n_pending; i++)
        if (strcmp(s->pending[i].org, org) == 0)
            return store_schema_ref(s->pending[i].schema);
    return store_schema_get(s, org);
}

/* Remembers a schema pushed in this batch (takes over the reference). */
static bool pending_put(store *s, const char *org, store_schema *sch)
{
    for (size_t i = 0; i < s->n_pending; i++)
        if (strcmp(s->pending[i].org, org) == 0) {
            store_schema_release(s->pending[i].schema);
            s->pending[i].schema = sch;
            return true;
        }
    if (s->n_pending == s->cap_pending) {
        size_t cap = s->cap_pending ? s->cap_pending * 2 : 4;
        store_pending *n = realloc(s->pending, cap * sizeof *n);
        if (n == NULL)
            return false;
        s->pending = n;
        s->cap_pending = cap;
    }
    char *copy = strdup(org);
    if (copy == NULL)
        return false;
    s->pending[s->n_pending].org = copy;
    s->pending[s->n_pending].schema = sch;
    s->n_pending++;
    return true;
}

/* After COMMIT (publish) or after a failed batch (discard). */
static void pending_finish(store *s, bool publish)
{
    for (size_t i = 0; i < s->n_pending; i++) {
        if (publish)
            store_snap_publish(s, s->pending[i].org, s->pending[i].schema);
        else
            store_schema_release(s->pending[i].schema);
        free(s->pending[i].org);
    }
    s->n_pending = 0;
}

int store_wexec(store *s, const char *sql)
{
    return wexec(s, sql);
}

/* A replay is authorised again before its stored outcome is returned
 * (store_record_authorize_again; for a bulk, each of its by-id operations), so a stored
 * outcome never reaches a caller that could not have made the original
 * call: e.g. a token of the same principal with fewer capabilities. A
 * refusal drops the replay: the caller gets the refusal (never storable),
 * and the stored outcome stays as it was. */
static rd_code authorize_replay(store *s, store_write *w)
{
    rd_code code = RD_OK;
    if (w->op == STORE_OP_BULK && w->bulk != NULL) {
        for (size_t i = 0; code == RD_OK && i < w->bulk->n_ops; i++) {
            store_write *ow = &w->bulk->ops[i].w;
            if (w->bulk->ops[i].skip)
                continue;
            if (ow->org == NULL)
                ow->org = w->org;
            code = store_record_authorize_again(s, ow);
            if (code != RD_OK)
                w->err = ow->err;
        }
    } else {
        code = store_record_authorize_again(s, w);
    }
    if (code == RD_OK)
        return RD_OK;
    free(w->replay);
    w->replay = NULL;
    w->replayed = false;
    return code;
}

/* Executes one write inside its savepoint. *published gets a schema pushed
 * by it. */
static rd_code apply(store *s, store_write *w, store_schema **published)
{
    *published = NULL;
    if (w->op == STORE_OP_PUSH_SCHEMA)
        return store_push_schema(s, w, published);
    if (w->op == STORE_OP_CLAIM_ACQUIRE || w->op == STORE_OP_CLAIM_RELEASE)
        return store_claim_apply(s, w); /* claims: store/claims.c */
    if (w->op == STORE_OP_BULK)
        return store_bulk_apply(s, w); /* bulk: store/bulk.c */
    return store_record_apply(s, w);
}

/* ---- the batch ------------------------------------------------------------------------ */

/* Fails every write of the batch that had succeeded (the transaction did not
 * commit) with err. Nothing any write sealed was stored. */
static void fail_uncommitted(store_write *head, const rd_err *err)
{
    for (store_write *w = head; w != NULL; w = w->next_) {
        w->idem_stored = false;
        if (w->err.code != RD_OK)
            continue;
        reset_outputs(w);
        w->err = *err;
    }
}

/* Whether a refused write keeps its outputs for the caller's receipt: the
 * current version of a concurrency refusal, and the current image and the
 * conflicts of a stale one. */
static bool keeps_outputs(rd_code code)
{
    return code == RD_VERSION_CONFLICT || code == RD_STALE_CONTEXT || code == RD_CLAIMED;
}

/* A record write on PostgreSQL's deferring attempt at a batch runs without
 * its savepoint: a subtransaction per write is the dearest part of a batch
 * there. A write refused before it wrote anything (not found, a version or
 * claim refusal, a stale context) needs no undoing; one that fails after
 * writing cannot be undone alone, so the batch is run again the careful
 * way (s->redo; run_batch). */
static bool run_bare(store *s, store_write *w)
{
    store_schema *published = NULL;
    rd_code code = store_idem_lookup(s, w);
    if (code == RD_OK && w->replayed)
        code = authorize_replay(s, w);
    s->wmods = 0;
    if (code == RD_OK && !w->replayed)
        code = apply(s, w, &published);
    store_schema_release(published); /* record writes publish nothing */
    if (code != RD_OK && s->wmods > 0) {
        s->redo = true;
        return true;
    }
    if (store_idem_storable(w, code) && store_idem_save(s, w) != RD_OK) {
        code = w->err.code;
        s->redo = true; /* the write's rows are in, its outcome is not */
        return true;
    }
    if (code == RD_OK) {
        if (w->last_sync_id > s->sync_id)
            s->sync_id = w->last_sync_id;
    } else if (!keeps_outputs(code)) {
        reset_outputs(w);
    }
    return true;
}

/* Runs one write in its own savepoint: the idempotency lookup (a replay
 * executes nothing), the write, and for an idempotent write with a storable
 * outcome the sealed outcome, stored in the same savepoint (after undoing a
 * refused write). Returns false when the transaction is unusable and the
 * batch must be abandoned. */
static bool run_one(store *s, store_write *w)
{
    store_schema *published = NULL;
    bool undone = false;
    int rc;
    if (w->deadline_us != 0 && rd_now_us() > w->deadline_us) {
        rd_errf(&w->err, RD_DEADLINE_EXCEEDED, NULL,
                "the deadline passed before the write could be applied");
        return true;
    }
    if (s->defer && w->op >= STORE_OP_CREATE && w->op <= STORE_OP_DELETE)
        return run_bare(s, w);
    rc = wexec_deferred(s, "SAVEPOINT w");
    if (rc != STORE_DB_OK) {
        store_sql_err(s->wdb, rc, &w->err);
        return true;
    }
    rd_code code = store_idem_lookup(s, w);
    if (code == RD_OK && w->replayed)
        code = authorize_replay(s, w);
    if (code == RD_OK && !w->replayed)
        code = apply(s, w, &published);
    if (store_idem_storable(w, code)) {
        if (code != RD_OK) {
            if (wexec(s, "ROLLBACK TO w") != STORE_DB_OK)
                goto broken;
            undone = true;
        }
        if (store_idem_save(s, w) != RD_OK)
            code = w->err.code;
    }
    if (code == RD_OK) {
        rc = wexec_deferred(s, "RELEASE w");
        if (rc == STORE_DB_OK) {
            if (w->last_sync_id > s->sync_id)
                s->sync_id = w->last_sync_id;
            if (published != NULL && !pending_put(s, w->org, published)) {
                store_schema_release(published);
                reset_outputs(w);
                rd_errf(&w->err, RD_INTERNAL, NULL, "out of memory");
                return false;
            }
            return true;
        }
        code = store_sql_err(s->wdb, rc, &w->err);
    }
    /* a refusal whose outcome was stored keeps that row; anything else is
     * undone completely */
    bool keep_rows = undone && w->idem_stored;
    store_schema_release(published);
    if (!keeps_outputs(code))
        reset_outputs(w);
    rc = keep_rows ? STORE_DB_OK : wexec(s, "ROLLBACK TO w");
    if (rc == STORE_DB_OK)
        rc = wexec(s, "RELEASE w");
    return rc == STORE_DB_OK;
broken:
    store_schema_release(published);
    if (!keeps_outputs(code))
        reset_outputs(w);
    return false;
}

/* Takes every write of the batch out of the in-flight key set (after
 * COMMIT, so a retry that finds its key free also finds its outcome). */
static void leave_inflight(store *s, store_write *head)
{
    pthread_mutex_lock(&s->qmu);
    for (store_write *w = head; w != NULL; w = w->next_)
        store_idem_leave(s, w);
    pthread_mutex_unlock(&s->qmu);
}

const int STORE_BATCH_BOUNDS[STORE_BATCH_SLOTS - 1] = {1, 2, 4, 8, 16, 32, 64, 128};
const int STORE_COMMIT_BOUNDS_US[STORE_COMMIT_SLOTS - 1] = {100,  250,   500,   1000,  2500,
                                                            5000, 10000, 25000, 50000, 100000};

/* Records the size of a batch for store_batch_stats_get. */
static void count_batch(store *s, const store_write *head)
{
    uint64_t n = 0;
    for (const store_write *w = head; w != NULL; w = w->next_)
        n++;
    int slot = 0;
    while (slot < STORE_BATCH_SLOTS - 1 && n > (uint64_t)STORE_BATCH_BOUNDS[slot])
        slot++;
    atomic_fetch_add_explicit(&s->batch_counts[slot], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&s->batches, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&s->batch_writes, n, memory_order_relaxed);
}

/* Records how long a COMMIT took for store_batch_stats_get. */
static void count_commit(store *s, int64_t us)
{
    int slot = 0;
    while (slot < STORE_COMMIT_SLOTS - 1 && us > STORE_COMMIT_BOUNDS_US[slot])
        slot++;
    atomic_fetch_add_explicit(&s->commit_counts[slot], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&s->commit_us, (uint64_t)(us > 0 ? us : 0), memory_order_relaxed);
}

void store_batch_stats_get(store *s, store_batch_stats *out)
{
    for (int i = 0; i < STORE_BATCH_SLOTS; i++)
        out->counts[i] = atomic_load_explicit(&s->batch_counts[i], memory_order_relaxed);
    for (int i = 0; i < STORE_COMMIT_SLOTS; i++)
        out->commit_counts[i] = atomic_load_explicit(&s->commit_counts[i], memory_order_relaxed);
    out->commit_us = atomic_load_explicit(&s->commit_us, memory_order_relaxed);
    out->batches = atomic_load_explicit(&s->batches, memory_order_relaxed);
    out->writes = atomic_load_explicit(&s->batch_writes, memory_order_relaxed);
    out->org_lock_batches = atomic_load_explicit(&s->org_lock_batches, memory_order_relaxed);
    out->org_lock_us = atomic_load_explicit(&s->org_lock_us, memory_order_relaxed);
}

/* ---- per-organisation sync ids --------------------------------------------------------
 * Each organisation has its own gap-free sequence of sync ids. The writer
 * keeps them in a table by org (loaded from _rd_org_seq on first use); the
 * counter of the write being run is swapped into s->sync_id, so every
 * write and bulk path takes and gives back ids as with one counter; a
 * failed batch puts every counter back. An organisation's head is its
 * newest log row (STORE_ORG_HEAD_SQL): nothing more is written per batch,
 * and the pruner records heads in _rd_org_seq before it deletes rows. */

static size_t org_slot(const store *s, const char *org)
{
    uint64_t h = 1469598103934665603ull;
    for (const unsigned char *p = (const unsigned char *)org; *p; p++)
        h = (h ^ *p) * 1099511628211ull;
    size_t i = (size_t)h & (s->org_seq_cap - 1);
    while (s->org_seqs[i] != NULL && strcmp(s->org_seqs[i]->org, org) != 0)
        i = (i + 1) & (s->org_seq_cap - 1);
    return i;
}

static bool org_grow(store *s)
{
    size_t cap = s->org_seq_cap ? s->org_seq_cap * 2 : 64;
    store_org_seq **old = s->org_seqs, **next = calloc(cap, sizeof *next);
    size_t old_cap = s->org_seq_cap;
    if (next == NULL)
        return false;
    s->org_seqs = next;
    s->org_seq_cap = cap;
    for (size_t i = 0; i < old_cap; i++)
        if (old[i] != NULL)
            s->org_seqs[org_slot(s, old[i]->org)] = old[i];
    free(old);
    return true;
}

/* org's counter, marked touched by the open batch; *fresh when it was
 * not known before (its values still to be set). NULL when out of memory. */
static store_org_seq *org_entry(store *s, const char *org, bool *fresh)
{
    *fresh = false;
    if ((s->org_seq_n + 1) * 2 > s->org_seq_cap && !org_grow(s))
        return NULL;
    size_t i = org_slot(s, org);
    store_org_seq *e = s->org_seqs[i];
    if (e == NULL) {
        e = calloc(1, sizeof *e);
        if (e == NULL || (e->org = strdup(org)) == NULL) {
            free(e);
            return NULL;
        }
        s->org_seqs[i] = e;
        s->org_seq_n++;
        *fresh = true;
    }
    if (!e->touched) {
        e->touched = true;
        e->next_touched = s->org_touched;
        s->org_touched = e;
    }
    return e;
}

/* org's counter, loaded on first use (the writer's transaction is open);
 * marked touched by the batch. NULL when out of memory or unreadable. */
static store_org_seq *org_enter(store *s, const char *org)
{
    if (s->org_seq_cap > 0 && s->org_seqs[org_slot(s, org)] != NULL) {
        bool fresh;
        return org_entry(s, org, &fresh);
    }
    store_dbst *st = NULL;
    int64_t v = s->seq_base;
    int rc = store_stmt_get(&s->wcache, STORE_ORG_HEAD_SQL, &st);
    if (rc == STORE_DB_OK) {
        store_db_bind_text(st, 1, org, -1, STORE_DB_STATIC);
        rc = store_wstep(s, st);
        if (rc == STORE_DB_ROW)
            v = store_db_column_int64(st, 0);
    }
    store_stmt_put(st);
    if (rc != STORE_DB_ROW && rc != STORE_DB_DONE)
        return NULL;
    bool fresh;
    store_org_seq *e = org_entry(s, org, &fresh);
    if (e != NULL)
        e->committed = e->pending = v;
    return e;
}

/* Drops every counter: each is read again from the database on its next
 * use (after a lost connection, another process may have written). */
static void org_seqs_forget(store *s)
{
    for (size_t i = 0; i < s->org_seq_cap; i++)
        if (s->org_seqs[i] != NULL) {
            free(s->org_seqs[i]->org);
            free(s->org_seqs[i]);
            s->org_seqs[i] = NULL;
        }
    s->org_seq_n = 0;
}

/* Ends the batch for the touched counters: committed or put back. true when
 * some organisation advanced. */
static bool org_seqs_finish(store *s, bool committed)
{
    bool advanced = false;
    for (store_org_seq *e = s->org_touched, *next; e != NULL; e = next) {
        next = e->next_touched;
        if (committed) {
            advanced = advanced || e->pending > e->committed;
            e->committed = e->pending;
        } else {
            e->pending = e->committed;
        }
        e->touched = false;
        e->next_touched = NULL;
    }
    s->org_touched = NULL;
    return advanced;
}

/* ---- PostgreSQL: ordering and the commit's outcome -----------------------------------
 * The last statements of a batch on PostgreSQL write, for every
 * organisation it touched, its newest sync id into _rd_org_seq: the row
 * stays locked until COMMIT, so two transactions can never hand out the
 * same organisation's ids out of commit order (docs/internals/store.md,
 * "Sync ids on PostgreSQL"), and organisations do not wait for each other.
 * Then a row with the batch's token goes into _rd_commits, so that when the
 * connection breaks during COMMIT the writer can ask, once reconnected,
 * whether the batch committed: it answers CONFIRMED or a retryable error,
 * never a guess. Rows older than STORE_PG_COMMITS_KEEP_S are pruned. */
#define STORE_PG_COMMITS_KEEP_S 600
#define STORE_PG_RESOLVE_US 2000000 /* the longest the writer asks */

static bool is_pg(const store *s)
{
    return store_db_dialect(s->wdb) == STORE_DIALECT_POSTGRES;
}

/* ---- PostgreSQL: several processes on one database ----------------------------------
 * Each attempt at a batch first locks the _rd_org_seq row of every
 * organisation it writes to, in the order of their names (two batches
 * never wait for each other in a cycle), and only then reads, per
 * organisation, its newest sync id, its newest schema revision and its
 * latest claim expiry. A batch of another process that wrote the same
 * organisation committed before the lock was granted, and every later
 * statement of this batch (READ COMMITTED: a snapshot per statement) sees
 * what it wrote: sync ids continue its sequence, a schema it pushed is
 * published here before any write is checked, a claim it took is looked
 * up, an idempotency key it stored is found. The lock is held to COMMIT
 * (docs/internals/store.md, "Several processes"). */

static int cmp_org(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static int pg_lock_orgs(store *s, store_write *head, rd_err *err)
{
    static const char lock_sql[] =
        "INSERT INTO _rd_org_seq (org, sync_id) VALUES (?1,"
        " coalesce((SELECT sync_id FROM _rd_org_seq WHERE org = '*'), 0))"
        " ON CONFLICT (org) DO UPDATE SET sync_id = _rd_org_seq.sync_id";
    static const char read_sql[] =
        "SELECT sync_id, coalesce((SELECT max(revision) FROM _rd_schema WHERE org = ?1), 0),"
        " coalesce((SELECT max(expires_at) FROM _rd_claims WHERE org = ?1), 0)"
        " FROM _rd_org_seq WHERE org = ?1";
    size_t n = 0, k = 0;
    for (store_write *w = head; w != NULL; w = w->next_)
        n++;
    const char **orgs = malloc((n ? n : 1) * sizeof *orgs);
    if (orgs == NULL) {
        rd_errf(err, RD_INTERNAL, NULL, "out of memory");
        return STORE_DB_NOMEM;
    }
    for (store_write *w = head; w != NULL; w = w->next_)
        if (w->org != NULL && w->org[0] != '\0')
            orgs[k++] = w->org;
    qsort(orgs, k, sizeof *orgs, cmp_org);
    int rc = STORE_DB_OK;
    /* the locks first (deferred: one round trip for the lot), then the reads */
    for (size_t i = 0; i < k && rc == STORE_DB_OK; i++) {
        if (i > 0 && strcmp(orgs[i], orgs[i - 1]) == 0)
            continue;
        store_dbst *st = NULL;
        rc = store_stmt_get(&s->wcache, lock_sql, &st);
        if (rc == STORE_DB_OK) {
            store_db_bind_text(st, 1, orgs[i], -1, STORE_DB_STATIC);
            rc = store_wdefer(s, st);
            rc = rc == STORE_DB_DONE ? STORE_DB_OK : rc;
        }
        store_stmt_put(st);
    }
    for (size_t i = 0; i < k && rc == STORE_DB_OK; i++) {
        if (i > 0 && strcmp(orgs[i], orgs[i - 1]) == 0)
            continue;
        store_dbst *st = NULL;
        int64_t seq = 0, revision = 0, claims = 0;
        rc = store_stmt_get(&s->wcache, read_sql, &st);
        if (rc == STORE_DB_OK) {
            store_db_bind_text(st, 1, orgs[i], -1, STORE_DB_STATIC);
            rc = store_wstep(s, st);
            if (rc == STORE_DB_ROW) {
                seq = store_db_column_int64(st, 0);
                revision = store_db_column_int64(st, 1);
                claims = store_db_column_int64(st, 2);
                rc = STORE_DB_OK;
            } else if (rc == STORE_DB_DONE || store_db_deferred_failed(s->wdb)) {
                rc = STORE_DB_ERROR;
            }
        }
        store_stmt_put(st);
        if (rc != STORE_DB_OK)
            break;
        bool fresh;
        store_org_seq *e = org_entry(s, orgs[i], &fresh);
        if (e == NULL) {
            rd_errf(err, RD_INTERNAL, NULL, "out of memory");
            rc = STORE_DB_NOMEM;
            break;
        }
        e->committed = e->pending = seq;
        if (claims > s->claims_until_us)
            s->claims_until_us = claims;
        store_schema *now = store_schema_get(s, orgs[i]);
        bool stale = revision > now->revision;
        store_schema_release(now);
        if (stale && store_schema_reload(s, &s->wcache, orgs[i], err) != RD_OK)
            rc = STORE_DB_ERROR;
    }
    free(orgs);
    return rc;
}

/* While the batch waited for its organisations' locks (another process's
 * batch held them), more writes may have queued: those of the organisations
 * it now holds (and those of none) join it, up to max_batch, in queue
 * order, so that batches grow with the wait and one organisation's
 * throughput across processes does not fall with their number. Writes of
 * other organisations stay queued (locking them now could deadlock). */
static void pg_grow_batch(store *s, store_write *head)
{
    size_t n = 0;
    store_write *tail = head;
    for (store_write *w = head; w != NULL; w = w->next_) {
        n++;
        tail = w;
    }
    pthread_mutex_lock(&s->qmu);
    store_write **pp = &s->qhead, *last = NULL;
    while (*pp != NULL && n < (size_t)s->max_batch) {
        store_write *w = *pp;
        bool held = w->org == NULL || w->org[0] == '\0';
        if (!held && s->org_seq_cap > 0) {
            store_org_seq *e = s->org_seqs[org_slot(s, w->org)];
            held = e != NULL && e->touched;
        }
        if (!held) {
            last = w;
            pp = &w->next_;
            continue;
        }
        *pp = w->next_;
        w->next_ = NULL;
        tail->next_ = w;
        tail = w;
        n++;
    }
    if (*pp == NULL)
        s->qtail = last;
    pthread_mutex_unlock(&s->qmu);
}

/* The batch's notification for the other processes (pg_listen.c): what it
 * changed that they must act on. "" when nothing. */
static void pg_payload(store *s, store_write *head, store_sbuf *b)
{
    store_sbuf_addf(b, "o %s\n", s->origin);
    size_t empty = b->len;
    for (store_org_seq *e = s->org_touched; e != NULL; e = e->next_touched)
        if (e->pending > e->committed)
            store_sbuf_addf(b, "c %s\n", e->org);
    for (size_t i = 0; i < s->n_pending; i++)
        store_sbuf_addf(b, "s %s\n", s->pending[i].org);
    for (store_write *w = head; w != NULL; w = w->next_)
        if (w->op == STORE_OP_CLAIM_RELEASE && w->err.code == RD_OK)
            store_sbuf_addf(b, "r %s %s %s\n", w->org, w->lease.out.model, w->lease.out.id);
    if (b->len == empty) {
        b->len = 0;
    } else if (b->oom || b->len > STORE_PG_PAYLOAD_MAX) {
        b->len = 0;
        b->oom = false;
        store_sbuf_addf(b, "o %s\n*\n", s->origin);
    }
    if (b->p != NULL)
        b->p[b->len] = '\0';
}

static int pg_batch_end(store *s, store_write *head, const char *token)
{
    static const char seq_sql[] =
        "INSERT INTO _rd_org_seq (org, sync_id) VALUES (?1, ?2) ON CONFLICT (org)"
        " DO UPDATE SET sync_id = max(_rd_org_seq.sync_id, excluded.sync_id)";
    static const char token_sql[] = "INSERT INTO _rd_commits (token, at) VALUES (?1, ?2)";
    /* the same, with the batch's notification: sent if and when it commits */
    static const char notify_sql[] =
        "INSERT INTO _rd_commits (token, at) SELECT CAST(?1 AS TEXT), CAST(?2 AS BIGINT)"
        " FROM (SELECT pg_notify('" STORE_PG_CHANNEL "', CAST(?3 AS TEXT))) AS n";
    static const char prune_sql[] = "DELETE FROM _rd_commits WHERE token IN (SELECT token"
                                    " FROM _rd_commits WHERE at < ?1 FOR UPDATE SKIP LOCKED)";
    store_dbst *st = NULL;
    int rc = STORE_DB_DONE;
    for (store_org_seq *e = s->org_touched; e != NULL && rc == STORE_DB_DONE; e = e->next_touched) {
        if (e->pending == e->committed)
            continue;
        rc = store_stmt_get(&s->wcache, seq_sql, &st);
        if (rc == STORE_DB_OK) {
            store_db_bind_text(st, 1, e->org, -1, STORE_DB_STATIC);
            store_db_bind_int64(st, 2, e->pending);
            rc = store_wdefer(s, st);
        }
        store_stmt_put(st);
        st = NULL;
    }
    int64_t now = rd_now_us();
    if (rc == STORE_DB_DONE && now - s->pg_pruned_us > 60 * 1000000) {
        rc = store_stmt_get(&s->wcache, prune_sql, &st);
        if (rc == STORE_DB_OK) {
            store_db_bind_int64(st, 1, now - (int64_t)STORE_PG_COMMITS_KEEP_S * 1000000);
            rc = store_wdefer(s, st);
        }
        store_stmt_put(st);
        st = NULL;
        s->pg_pruned_us = now;
    }
    if (rc == STORE_DB_DONE) {
        store_sbuf payload = {0};
        pg_payload(s, head, &payload);
        rc = store_stmt_get(&s->wcache, payload.len > 0 ? notify_sql : token_sql, &st);
        if (rc == STORE_DB_OK) {
            store_db_bind_text(st, 1, token, -1, STORE_DB_STATIC);
            store_db_bind_int64(st, 2, now);
            if (payload.len > 0)
                store_db_bind_text(st, 3, payload.p, (int)payload.len, STORE_DB_TRANSIENT);
            rc = store_wdefer(s, st);
        }
        store_stmt_put(st);
        store_sbuf_free(&payload);
    }
    return rc == STORE_DB_DONE ? STORE_DB_OK : rc;
}

/* After a COMMIT whose answer was lost with the connection: reconnects
 * (the driver does on the next statement) and looks the batch's token up,
 * every 100 ms for STORE_PG_RESOLVE_US at most, and not past the earliest
 * deadline of the batch's writes (their callers must hear before it).
 * STORE_DB_OK when it committed, STORE_DB_DONE when it did not, else the
 * outcome stays unknown (the database is still unreachable). */
static int pg_commit_outcome(store *s, store_write *head, const char *token)
{
    static const char sql[] = "SELECT 1 FROM _rd_commits WHERE token = ?1";
    int64_t until = rd_now_us() + STORE_PG_RESOLVE_US;
    for (store_write *w = head; w != NULL; w = w->next_)
        if (w->deadline_us != 0 && w->deadline_us - 50000 < until)
            until = w->deadline_us - 50000;
    for (int i = 0; i == 0 || rd_now_us() < until; i++) {
        store_dbst *st = NULL;
        int rc = store_stmt_get(&s->wcache, sql, &st);
        if (rc == STORE_DB_OK) {
            store_db_bind_text(st, 1, token, -1, STORE_DB_STATIC);
            rc = store_wstep(s, st);
        }
        store_stmt_put(st);
        if (rc == STORE_DB_ROW)
            return STORE_DB_OK;
        if (rc == STORE_DB_DONE)
            return STORE_DB_DONE;
        if (rd_now_us() + 100000 > until)
            break;
        nanosleep(&(struct timespec){.tv_nsec = 100 * 1000 * 1000}, NULL);
    }
    return STORE_DB_CANTOPEN;
}

/* One group commit: every write in its own savepoint, one COMMIT, then the
 * completions in order. */
static void run_batch(store *s, store_write *head)
{
    bool broken = false, advanced = false;
    rd_err err;
    rd_err_clear(&err);
    store_sql_err_took_full(); /* from here on: did this batch hit a full disk? */
    int rc;
    int64_t locked_us = 0;
    char token[32] = "";
    for (int attempt = 0;; attempt++) {
        /* on PostgreSQL the first attempt defers what it can (pg_db.c); a
         * batch whose deferred statement failed is undone and runs again,
         * waiting for every answer, so each write meets its error itself */
        s->defer = attempt == 0 && is_pg(s);
        s->redo = false;
        bool again = false;
        rc = wexec(s, "BEGIN IMMEDIATE");
        if (rc == STORE_DB_OK && is_pg(s)) {
            rc = pg_lock_orgs(s, head, &err);
            locked_us = rd_now_us();
            if (rc == STORE_DB_OK && attempt == 0)
                pg_grow_batch(s, head);
        }
        if (rc != STORE_DB_OK) {
            s->defer = false;
            if (err.code == RD_OK)
                store_sql_err(s->wdb, rc, &err);
            if (!store_db_autocommit(s->wdb))
                wexec(s, "ROLLBACK");
            org_seqs_finish(s, false);
            fail_uncommitted(head, &err);
            goto complete;
        }
        for (store_write *w = head; w != NULL && !again; w = w->next_) {
            if (broken) {
                rd_errf(&w->err, RD_INTERNAL, NULL, "the batch was rolled back");
                continue;
            }
            store_org_seq *e = w->org != NULL && w->org[0] != '\0' ? org_enter(s, w->org) : NULL;
            if (w->org != NULL && w->org[0] != '\0' && e == NULL) {
                rd_errf(&w->err, RD_INTERNAL, NULL,
                        "the organisation's sync ids could not be read");
                continue;
            }
            s->sync_id = e != NULL ? e->pending : 0;
            if (!run_one(s, w))
                broken = true;
            if (e != NULL)
                e->pending = s->sync_id;
            again = store_db_deferred_failed(s->wdb) || s->redo;
        }
        if (!broken && !again) {
            store_idem_prune(s);
            store_changes_prune(s);
            rc = STORE_DB_OK;
            if (is_pg(s)) {
                rd_random_id("bt_", token, 20);
                rc = pg_batch_end(s, head, token);
            }
            int64_t t0 = rd_now_us();
            if (rc == STORE_DB_OK)
                rc = commit(s);
            count_commit(s, rd_now_us() - t0);
            if (locked_us != 0) {
                atomic_fetch_add_explicit(&s->org_lock_us, (uint64_t)(rd_now_us() - locked_us),
                                          memory_order_relaxed);
                atomic_fetch_add_explicit(&s->org_lock_batches, 1, memory_order_relaxed);
            }
            again = rc == STORE_DB_ABORT && store_db_deferred_failed(s->wdb);
            if (rc == STORE_DB_CANTOPEN && token[0] != '\0') {
                /* the connection broke: did the COMMIT reach the server? */
                rc = pg_commit_outcome(s, head, token);
                if (rc == STORE_DB_DONE)
                    rc = STORE_DB_CANTOPEN; /* rolled back: retryable */
                else if (rc != STORE_DB_OK)
                    rd_errf(&err, RD_UNAVAILABLE, NULL,
                            "the connection to the database was lost during COMMIT and the "
                            "outcome could not be learnt; retry with the same idempotency key");
            }
            if (!again && rc != STORE_DB_OK && err.code == RD_OK) {
                store_sql_err(s->wdb, rc, &err);
                if (err.code != RD_UNAVAILABLE)
                    rd_errf(&err, RD_INTERNAL, NULL, "the commit failed: %s", store_db_errstr(rc));
            }
        } else if (!again) {
            rd_errf(&err, RD_INTERNAL, NULL, "the batch was rolled back");
        }
        if (!again)
            break;
        /* undo the attempt: nothing of it stays */
        wexec(s, "ROLLBACK");
        org_seqs_finish(s, false);
        pending_finish(s, false);
        for (store_write *w = head; w != NULL; w = w->next_)
            reset_attempt(w);
        broken = false;
        rd_err_clear(&err);
        token[0] = '\0';
    }
    s->defer = false;
    if (broken || err.code != RD_OK) {
        if (!store_db_autocommit(s->wdb))
            wexec(s, "ROLLBACK");
        fail_uncommitted(head, &err);
        org_seqs_finish(s, false);
        pending_finish(s, false);
        /* after a lost connection, what this process remembers of the
         * database may be stale: read the counters afresh */
        if (store_db_errcode(s->wdb) == STORE_DB_CANTOPEN || err.code == RD_UNAVAILABLE) {
            org_seqs_forget(s);
        }
    } else {
        advanced = org_seqs_finish(s, true);
        pending_finish(s, true);
    }
complete:
    count_batch(s, head);
    /* a committed batch proves there is room again; one that hit a full disk
     * makes the store not ready (store_storage_full) until then */
    if (store_sql_err_took_full())
        atomic_store(&s->full, true);
    else if (!broken && err.code == RD_OK)
        atomic_store(&s->full, false);
    leave_inflight(s, head);
    store_write *tail = head;
    for (store_write *w = head; w != NULL; w = w->next_) {
        if (w->op == STORE_OP_PUSH_SCHEMA)
            store_schema_release(w->push.schema);
        tail = w;
    }
    pthread_mutex_lock(&s->cmu);
    if (advanced)
        s->commit_gen++;
    if (s->commit_fn != NULL && advanced)
        s->commit_fn(s->commit_arg, s->commit_gen);
    if (s->ctail != NULL)
        s->ctail->next_ = head;
    else
        s->chead = head;
    s->ctail = tail;
    pthread_cond_signal(&s->ccv);
    pthread_mutex_unlock(&s->cmu);
}

void store_commit_signal(store *s)
{
    pthread_mutex_lock(&s->cmu);
    s->commit_gen++;
    if (s->commit_fn != NULL)
        s->commit_fn(s->commit_arg, s->commit_gen);
    pthread_mutex_unlock(&s->cmu);
}

void *store_completer_main(void *arg)
{
    store *s = arg;
    pthread_setname_np(pthread_self(), "rd-completer");
    pthread_mutex_lock(&s->cmu);
    for (;;) {
        while (s->chead == NULL && !s->cclosing)
            pthread_cond_wait(&s->ccv, &s->cmu);
        if (s->chead == NULL)
            break;
        store_write *w = s->chead;
        s->chead = s->ctail = NULL;
        pthread_mutex_unlock(&s->cmu);
        while (w != NULL) {
            store_write *next = w->next_;
            w->next_ = NULL;
            if (w->done != NULL)
                w->done(w);
            w = next;
        }
        pthread_mutex_lock(&s->cmu);
    }
    pthread_mutex_unlock(&s->cmu);
    return NULL;
}

void store_completer_stop(store *s)
{
    if (s == NULL || !s->completer_started)
        return;
    pthread_mutex_lock(&s->cmu);
    s->cclosing = true;
    pthread_cond_signal(&s->ccv);
    pthread_mutex_unlock(&s->cmu);
    pthread_join(s->completer, NULL);
    s->completer_started = false;
}

void *store_writer_main(void *arg)
{
    store *s = arg;
    pthread_setname_np(pthread_self(), "rd-writer");
    store_idem_open(s);
    pthread_mutex_lock(&s->qmu);
    for (;;) {
        while (s->qhead == NULL && !s->closing)
            pthread_cond_wait(&s->qcv, &s->qmu);
        if (s->qhead == NULL)
            break;
        store_write *head = s->qhead, *tail = head;
        for (int n = 1; n < s->max_batch && tail->next_ != NULL; n++)
            tail = tail->next_;
        s->qhead = tail->next_;
        if (s->qhead == NULL)
            s->qtail = NULL;
        tail->next_ = NULL;
        pthread_mutex_unlock(&s->qmu);
        run_batch(s, head);
        pthread_mutex_lock(&s->qmu);
    }
    pthread_mutex_unlock(&s->qmu);
    return NULL;
}
