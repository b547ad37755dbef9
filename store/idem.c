/* idem.c: idempotency keys (DESIGN.md §4). The in-flight set refuses a
 * second write with the same (org, key) while the first is queued; the
 * _rd_idempotency table keeps the sealed outcome (the caller's serialized
 * receipt and status) of each executed write, written by the writer in the
 * write's own savepoint so the outcome and the write commit together.
 * docs/internals/store.md, "Idempotency". */
#include <stdlib.h>
#include <string.h>

#include "store/store_int.h"

/* ---- in-flight set ------------------------------------------------------------------ */

static size_t bucket_of(const char *org, const char *key)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a over org, NUL, key */
    for (const unsigned char *p = (const unsigned char *)org; *p; p++)
        h = (h ^ *p) * 1099511628211ull;
    h *= 1099511628211ull;
    for (const unsigned char *p = (const unsigned char *)key; *p; p++)
        h = (h ^ *p) * 1099511628211ull;
    return (size_t)(h % STORE_IDEM_BUCKETS);
}

static bool same_key(const store_write *a, const store_write *b)
{
    return strcmp(a->org, b->org) == 0 && strcmp(a->idem_key, b->idem_key) == 0;
}

bool store_idem_enter(store *s, store_write *w)
{
    size_t b = bucket_of(w->org, w->idem_key);
    for (store_write *o = s->idem_inflight[b]; o != NULL; o = o->idem_next_)
        if (same_key(o, w))
            return false;
    w->idem_next_ = s->idem_inflight[b];
    s->idem_inflight[b] = w;
    w->idem_inflight_ = true;
    return true;
}

void store_idem_leave(store *s, store_write *w)
{
    if (!w->idem_inflight_)
        return;
    store_write **pp = &s->idem_inflight[bucket_of(w->org, w->idem_key)];
    while (*pp != NULL && *pp != w)
        pp = &(*pp)->idem_next_;
    if (*pp == w)
        *pp = w->idem_next_;
    w->idem_next_ = NULL;
    w->idem_inflight_ = false;
}

/* ---- the table ------------------------------------------------------------------------ */

void store_set_idempotency_ttl(store *s, int64_t seconds)
{
    __atomic_store_n(&s->idem_ttl_s, seconds > 0 ? seconds : 0, __ATOMIC_RELEASE);
}

/* The oldest created_at (µs) that is still live at now. */
static int64_t live_after(store *s, int64_t now)
{
    int64_t ttl = __atomic_load_n(&s->idem_ttl_s, __ATOMIC_ACQUIRE);
    if (ttl <= 0)
        ttl = STORE_IDEM_TTL_DEFAULT_S;
    return now - ttl * 1000000;
}

void store_idem_open(store *s)
{
    /* PostgreSQL databases have the table from their first open (pg_layout.c) */
    if (store_db_dialect(s->wdb) == STORE_DIALECT_POSTGRES) {
        s->idem_ready = true;
        return;
    }
    static const char *const sql[] = {
        "BEGIN IMMEDIATE",
        "CREATE TABLE IF NOT EXISTS _rd_idempotency ("
        " org TEXT NOT NULL, key TEXT NOT NULL, request_hash BLOB NOT NULL,"
        " receipt BLOB NOT NULL, grpc_code INTEGER NOT NULL, created_at INTEGER NOT NULL,"
        " PRIMARY KEY (org, key))",
        "CREATE INDEX IF NOT EXISTS \"_rd_idempotency:created_at\""
        " ON _rd_idempotency (created_at)",
        "COMMIT",
    };
    for (size_t i = 0; i < sizeof sql / sizeof sql[0]; i++)
        if (store_exec(s->wdb, sql[i]) != STORE_DB_OK) {
            if (!store_db_autocommit(s->wdb))
                store_exec(s->wdb, "ROLLBACK");
            return;
        }
    s->idem_ready = true;
}

static bool has_key(const store_write *w)
{
    return w->idem_key != NULL && w->idem_key[0] != '\0';
}

static rd_code not_ready(store_write *w)
{
    return rd_errf(&w->err, RD_INTERNAL, NULL, "the idempotency table is not available");
}

rd_code store_idem_lookup(store *s, store_write *w)
{
    static const char sql[] = "SELECT request_hash, receipt, grpc_code FROM _rd_idempotency"
                              " WHERE org = ?1 AND key = ?2 AND created_at > ?3";
    store_dbst *st = NULL;
    rd_code code = RD_OK;
    if (!has_key(w))
        return RD_OK;
    if (!s->idem_ready)
        return not_ready(w);
    int rc = store_stmt_get(&s->wcache, sql, &st);
    if (rc == STORE_DB_OK) {
        store_db_bind_text(st, 1, w->org, -1, STORE_DB_STATIC);
        store_db_bind_text(st, 2, w->idem_key, -1, STORE_DB_STATIC);
        store_db_bind_int64(st, 3, live_after(s, rd_now_us()));
        rc = store_wstep(s, st);
    }
    if (rc == STORE_DB_DONE)
        goto done;
    if (rc != STORE_DB_ROW) {
        code = store_sql_err(s->wdb, rc, &w->err);
        goto done;
    }
    const void *hash = store_db_column_blob(st, 0);
    if (store_db_column_bytes(st, 0) != STORE_IDEM_HASH_BYTES || hash == NULL ||
        memcmp(hash, w->idem_hash, STORE_IDEM_HASH_BYTES) != 0) {
        code = rd_errf(&w->err, RD_IDEMPOTENCY_KEY_REUSED, "idempotencyKey",
                       "the idempotency key was already used for a different request");
        goto done;
    }
    const void *bytes = store_db_column_blob(st, 1);
    size_t len = (size_t)store_db_column_bytes(st, 1);
    w->replay = malloc(len ? len : 1);
    if (w->replay == NULL) {
        code = rd_errf(&w->err, RD_INTERNAL, NULL, "out of memory");
        goto done;
    }
    if (len > 0)
        memcpy(w->replay, bytes, len);
    w->replay_len = len;
    w->replay_status = store_db_column_int64(st, 2);
    w->replayed = true;
done:
    store_stmt_put(st);
    return code;
}

bool store_idem_storable(const store_write *w, rd_code code)
{
    if (!has_key(w) || w->replayed)
        return false;
    if (w->op == STORE_OP_BULK && code != RD_OK)
        return store_bulk_storable(w);
    switch (code) {
    case RD_OK:
    case RD_VERSION_CONFLICT:
    case RD_STALE_CONTEXT:
    case RD_CLAIMED:
        return true;
    default:
        return false;
    }
}

rd_code store_idem_save(store *s, store_write *w)
{
    static const char sql[] =
        "INSERT INTO _rd_idempotency (org, key, request_hash, receipt, grpc_code,"
        " created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (org, key) DO UPDATE SET"
        " request_hash = excluded.request_hash, receipt = excluded.receipt,"
        " grpc_code = excluded.grpc_code, created_at = excluded.created_at";
    store_sealed sealed = {0};
    store_dbst *st = NULL;
    if (!s->idem_ready)
        return not_ready(w);
    if (w->seal == NULL || !w->seal(w, &sealed) || sealed.bytes == NULL)
        return rd_errf(&w->err, RD_INTERNAL, NULL, "the outcome could not be sealed");
    int rc = store_stmt_get(&s->wcache, sql, &st);
    if (rc == STORE_DB_OK) {
        store_db_bind_text(st, 1, w->org, -1, STORE_DB_STATIC);
        store_db_bind_text(st, 2, w->idem_key, -1, STORE_DB_STATIC);
        store_db_bind_blob(st, 3, w->idem_hash, STORE_IDEM_HASH_BYTES, STORE_DB_STATIC);
        store_db_bind_blob(st, 4, sealed.bytes, (int)sealed.len, STORE_DB_STATIC);
        store_db_bind_int64(st, 5, sealed.status);
        store_db_bind_int64(st, 6, rd_now_us());
        rc = store_wstep(s, st);
    }
    store_stmt_put(st);
    if (rc != STORE_DB_DONE)
        return store_sql_err(s->wdb, rc, &w->err);
    w->idem_stored = true;
    s->idem_pace.added++;
    return RD_OK;
}

int64_t store_prune_budget(store_prune_pace *p, int64_t now_us, int64_t per_second, int64_t max)
{
    bool tick = now_us - p->last_us >= 1000000;
    int64_t n = (tick ? per_second : 0) + STORE_PRUNE_PER_ROW * p->added;
    if (n == 0)
        return 0;
    p->added = 0;
    if (tick)
        p->last_us = now_us;
    return n < max ? n : max;
}

void store_idem_prune(store *s)
{
#define IDEM_PRUNE_SQL                                                                             \
    "DELETE FROM _rd_idempotency WHERE (org, key) IN (SELECT org, key"                             \
    " FROM _rd_idempotency WHERE created_at <= ?1 ORDER BY created_at LIMIT ?2"
    /* PostgreSQL: rows another process's batch holds (pruning them, or
     * storing a key over an expired one) are left to a later prune */
    const char *sql = store_db_dialect(s->wdb) == STORE_DIALECT_POSTGRES ? IDEM_PRUNE_SQL
                          " FOR UPDATE SKIP LOCKED)"
                                                                         : IDEM_PRUNE_SQL ")";
    store_dbst *st = NULL;
    int64_t now = rd_now_us();
    /* pruning keeps up with any sustained rate of keyed writes (a fixed 128
     * a second did not), and each delete stays small (by the created_at
     * index) */
    if (!s->idem_ready)
        return;
    int64_t limit =
        store_prune_budget(&s->idem_pace, now, STORE_IDEM_PRUNE_ROWS, STORE_IDEM_PRUNE_MAX);
    if (limit == 0)
        return;
    if (store_exec(s->wdb, "SAVEPOINT prune") != STORE_DB_OK)
        return;
    int rc = store_stmt_get(&s->wcache, sql, &st);
    if (rc == STORE_DB_OK) {
        store_db_bind_int64(st, 1, live_after(s, now));
        store_db_bind_int64(st, 2, limit);
        rc = store_wstep(s, st);
    }
    store_stmt_put(st);
    if (rc != STORE_DB_DONE)
        store_exec(s->wdb, "ROLLBACK TO prune");
    store_exec(s->wdb, "RELEASE prune");
}
