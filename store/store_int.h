/* store internals shared by the files of store/ (never included from outside
 * the module). The layout of struct store, the SQL string builder, the
 * prepared-statement cache, the one SQLite -> rd_code mapping, the table
 * naming rules and the row <-> JSON conversions. docs/internals/store.md has
 * the storage layout and the writer's group commit. */
#ifndef STORE_INT_H
#define STORE_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "store/db.h"
#include "store/store.h"

/* PRAGMA user_version of the layout this code writes. */
#define STORE_LAYOUT_VERSION 2 /* 2: sync ids per organisation (_rd_org_seq) */

#define STORE_MAX_MODELS 200
#define STORE_MAX_FIELDS 200
#define STORE_MAX_ENUM_VALUES 1000   /* values of one ENUM field */
#define STORE_MAX_WRITABLE_BY 64     /* roles in one field's writableBy */
#define STORE_MAX_UNIQUE_TOGETHER 64 /* uniqueTogether entries of one model */
#define STORE_MAX_UNIQUE_FIELDS 16   /* fields of one uniqueTogether entry */
#define STORE_ID_MAX 128
#define STORE_PG_NAME_MAX 63 /* PostgreSQL's longest identifier (bytes) */
#define STORE_ORG_MAX 64
#define STORE_DEFAULT_BATCH 256
#define STORE_BUSY_TIMEOUT_MS 5000
/* The writer's automatic checkpoint runs when the WAL reaches this many
 * frames (4 KiB pages: a WAL of up to about 32 MiB). */
#define STORE_WAL_CHECKPOINT_PAGES 8000
#define STORE_IDEM_BUCKETS 256
/* Most expired idempotency rows one prune deletes, and how often it runs. */
#define STORE_IDEM_PRUNE_ROWS 128 /* expired keys pruned once a second */
#define STORE_IDEM_PRUNE_MAX 4096 /* rows one prune deletes at most */

/* The pace of a table the writer prunes (expired idempotency keys, the
 * change log): how many rows were added since the last prune, and when the
 * last once-a-second prune ran. */
typedef struct store_prune_pace {
    int64_t last_us;
    int64_t added;
} store_prune_pace;
#define STORE_PRUNE_PER_ROW 2 /* rows pruned per row added: pruning keeps pace */
/* How many rows a prune may delete now: per_second once a second, plus
 * STORE_PRUNE_PER_ROW for each row added since the last prune, at most max;
 * 0 when nothing is owed. Resets the count it used. */
int64_t store_prune_budget(store_prune_pace *p, int64_t now_us, int64_t per_second, int64_t max);

/* ---- SQL text builder ----------------------------------------------------
 * A growable string with a hard cap; after an allocation failure or when the
 * cap is hit, oom is set and further appends do nothing. */
typedef struct store_sbuf {
    char *p;
    size_t len, cap;
    bool oom;
} store_sbuf;

#define STORE_SBUF_MAX (1u << 20)

void store_sbuf_add(store_sbuf *b, const char *s);
/* Appends s[0..n). */
void store_sbuf_addn(store_sbuf *b, const char *s, size_t n);
void store_sbuf_addf(store_sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Appends name as a double-quoted SQL identifier ('"' doubled). */
void store_sbuf_ident(store_sbuf *b, const char *name);
/* Appends the quoted identifier prefix + name ("_s_age"). */
void store_sbuf_ident2(store_sbuf *b, const char *prefix, const char *name);
void store_sbuf_free(store_sbuf *b);

/* ---- prepared-statement cache --------------------------------------------
 * A small LRU of statements keyed by SQL text, one per connection. A
 * statement returned by store_stmt_get is reset and unbound; give it back
 * with store_stmt_put (reset + clear bindings) before the next use. */
#define STORE_STMT_CACHE 64

typedef struct store_stmt_ent {
    uint64_t hash;
    uint64_t used;
    char *sql;
    store_dbst *st;
} store_stmt_ent;

typedef struct store_stmt_cache {
    store_db *db;
    uint64_t tick;
    store_stmt_ent ent[STORE_STMT_CACHE];
} store_stmt_cache;

/* *out = the cached (or newly prepared) statement for sql. Returns an
 * SQLite result code. */
int store_stmt_get(store_stmt_cache *c, const char *sql, store_dbst **out);

/* store_db_step for the writer connection, through the fault injector: when
 * armed and its countdown reaches this step, the step does not run and
 * returns the armed code (STORE_DB_BUSY, STORE_DB_NOMEM, STORE_DB_FULL, …). Every
 * statement the writer runs goes through it (records, sync log, idempotency
 * keys, BEGIN/SAVEPOINT/COMMIT), so tests can fail the Nth one. */
int store_wstep(store *s, store_dbst *st);
/* store_wstep for a statement whose only answer is "done": deferred
 * (store_db_defer) while the writer's batch defers (PostgreSQL's first
 * attempt) and no fault is armed. STORE_DB_DONE when sent. */
int store_wdefer(store *s, store_dbst *st);

/* Tests (SQLite's own style): the nth writer step from now on (1 = the next)
 * fails with rc; with repeat, every step after it too, until
 * store_fault_disarm. */
void store_fault_arm(store *s, int nth, int rc, bool repeat);
void store_fault_disarm(store *s);
/* Tests: the next batch's COMMIT loses its answer, as when the connection
 * breaks during COMMIT: AFTER runs the COMMIT and then reports the
 * connection lost, BEFORE rolls back instead and reports the same. */
enum { STORE_FAULT_COMMIT_LOST_AFTER = 1, STORE_FAULT_COMMIT_LOST_BEFORE = 2 };
void store_fault_commit(store *s, int mode);
/* Creates path as an empty file with mode 0600 unless it exists (or is not
 * a plain path: "", ":memory:", a "file:" URI), so that SQLite opening it
 * makes a database nobody else may read. */
void store_create_private(const char *path);
/* The directory of path into dir (size bytes): "." for a bare name, "/"
 * for a file at the root. */
void store_dir_of(const char *path, char *dir, size_t size);
void store_stmt_put(store_dbst *st);
void store_stmt_cache_clear(store_stmt_cache *c);

/* ---- errors ----------------------------------------------------------------
 * THE mapping from an SQLite result to an rd_code: BUSY/LOCKED ->
 * RD_UNAVAILABLE, CONSTRAINT_UNIQUE/PRIMARYKEY -> RD_DUPLICATE_RECORD with
 * err->field naming the column(s) ("id" for the primary key), anything else
 * -> RD_INTERNAL. Messages carry column names and SQLite's generic result
 * text, never data values. */
rd_code store_sql_err(store_db *db, int rc, rd_err *err);

/* Runs one statement that returns no rows, without caching it (DDL,
 * transaction control). Returns an SQLite result code. */
int store_exec(store_db *db, const char *sql);

/* ---- the store ----------------------------------------------------------- */

/* One organisation's published schema. */
typedef struct store_snap {
    char *org;
    store_schema *schema;
} store_snap;

/* A schema pushed in the batch being written, published after COMMIT. */
typedef struct store_pending {
    char *org;
    store_schema *schema;
} store_pending;

/* One organisation's sync-id counter in the writer: committed = its
 * newest committed sync id, pending = the newest taken in the open batch. */
typedef struct store_org_seq {
    char *org;
    int64_t committed, pending;
    struct store_org_seq *next_touched; /* the open batch's organisations */
    bool touched;
} store_org_seq;

struct store {
    char *path;
    /* fault injection (store_fault_arm): steps left before the failing one
     * (0 = disarmed), the code it fails with, and whether every later step
     * fails too */
    _Atomic int fault_countdown;
    _Atomic int fault_rc;
    _Atomic bool fault_repeat;
    _Atomic int fault_commit; /* store_fault_commit */
    uint64_t serial;          /* unique per store_open in this process (store_thread_conn) */
    /* the last batch failed because the disk is full (writer sets it, any
     * thread reads it: store_storage_full) */
    _Atomic bool full;
    bool sync_normal;
    int max_batch;

    /* writer: the write connection and everything below is touched only by
     * the writer thread once it runs (and by open/close around it). */
    store_db *wdb;
    store_stmt_cache wcache;
    /* the sync-id counter of the organisation of the write running now
     * (writer.c swaps it in and out of org_seqs around each write) */
    int64_t sync_id;
    int64_t seq_base;         /* where a new organisation's sync ids start */
    store_org_seq **org_seqs; /* open-addressing table by org, org_seq_cap slots */
    size_t org_seq_cap, org_seq_n;
    store_org_seq *org_touched; /* organisations the open batch wrote to */
    int64_t commit_gen;         /* batches committed that wrote log rows */
    int64_t pg_pruned_us;       /* PostgreSQL: when _rd_commits was last pruned */
    bool defer;                 /* writer: this attempt at the batch defers (store_wdefer) */
    bool redo;                  /* writer: the attempt must be undone and run again */
    int64_t wmods;              /* writer: statements store_wdefer ran (run_bare) */
    /* no claim is live from this time on (the latest expiry ever written,
     * kept even when that write rolled back): until then every update,
     * replace and delete looks its record's claim up (claims.c) */
    int64_t claims_until_us;
    store_pending *pending; /* schemas pushed in the current batch */
    size_t n_pending, cap_pending;
    pthread_t writer;
    bool writer_started;

    /* completions: finished batches wait here for the completer thread,
     * which runs their done callbacks (replies go out on the wire there) so
     * the writer can begin the next transaction at once. Order is kept. */
    pthread_mutex_t cmu;
    pthread_cond_t ccv;
    store_write *chead, *ctail;
    bool cclosing;
    pthread_t completer;
    bool completer_started;
    /* the change feed's commit hook (store_on_commit), guarded by cmu and
     * called with it held */
    store_commit_fn commit_fn;
    void *commit_arg;
    /* what other processes did (store_on_remote), guarded by cmu */
    store_remote_fn remote_fn;
    void *remote_arg;
    /* PostgreSQL: this process among those on the database (the "o" line
     * of its notifications), and the thread that listens to the others */
    char origin[24];
    struct store_pg_listener *listener;
    /* PostgreSQL: how long batches held their organisations' counter rows
     * (from the lock to the end of COMMIT), for /metrics */
    _Atomic uint64_t org_lock_us, org_lock_batches;

    /* queue */
    pthread_mutex_t qmu;
    pthread_cond_t qcv;
    store_write *qhead, *qtail;
    bool closing;

    /* idempotency (idem.c): the keys of queued idempotent writes, chained
     * through store_write.idem_next_, guarded by qmu. */
    store_write *idem_inflight[STORE_IDEM_BUCKETS];
    _Atomic uint64_t batch_counts[STORE_BATCH_SLOTS]; /* store_batch_stats_get */
    _Atomic uint64_t batches, batch_writes;
    _Atomic uint64_t commit_counts[STORE_COMMIT_SLOTS], commit_us;
    int64_t idem_ttl_s;         /* 0 = default; read and set atomically */
    int64_t log_retention_s;    /* change log: keep rows this young (0 = forever); atomic */
    int64_t log_max_rows;       /* change log: keep at most this many rows (0 = no cap); atomic */
    store_prune_pace log_pace;  /* writer: the change log's pruning */
    int64_t log_rows;           /* writer: rows the log holds (about: rolled-back rows too) */
    int64_t log_oldest_us;      /* writer: committed_at of the oldest row; 0 = none */
    bool idem_ready;            /* writer: _rd_idempotency exists */
    store_prune_pace idem_pace; /* writer: expired keys' pruning */

    /* a database server's read connections (store.c): at most pool_max
     * open (0: one per thread, SQLite), the idle ones chained */
    pthread_mutex_t pmu;
    pthread_cond_t pcv;
    struct store_conn *idle;
    int pool_open, pool_max;

    /* published schema snapshots */
    pthread_mutex_t smu;
    store_snap *snaps;
    size_t n_snaps, cap_snaps;
    store_schema *empty; /* revision 0, handed out for unknown orgs */
};

struct store_conn {
    store *s;
    uint64_t serial; /* s->serial when opened */
    bool pooled;     /* from s's pool (store_thread_conn) */
    struct store_conn *next_idle;
    store_db *db;
    store_stmt_cache cache;
    /* store_read_hold: a read transaction is open and the reads on c join
     * it (BEGIN, COMMIT and ROLLBACK through store_conn_exec are skipped);
     * held_at is the head of held_org in it */
    bool held;
    int64_t held_at;
    char held_org[72];
    uint64_t get_many_queries; /* statements store_get_many ran on c */
};

/* A read connection for a moment, never waiting: the calling thread's own
 * (*borrowed false), else a free one of the pool (*borrowed true: give it
 * back with store_conn_give_back), else NULL. For the store's own short
 * reads from threads that may hold none (a transport's thread). */
store_conn *store_conn_borrow(store *s, bool *borrowed);
void store_conn_give_back(store_conn *c);

/* ---- names ----------------------------------------------------------------- */

/* 1 when org is a usable organisation id: ^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$
 * without "__" (so table names cannot collide across organisations). */
int store_org_valid(const char *org);
/* Whether store_sql_err saw STORE_DB_FULL on this thread since the last call;
 * clears the flag. The writer asks once per batch. */
bool store_sql_err_took_full(void);
/* Organisation ids are case-insensitive where SQLite names tables after
 * them: 1 (other = its id) when an organisation with a key or a schema
 * differs from org only in case, 0 when none does, -1 on a SQLite error. */
int store_org_case_variant(store_db *db, const char *org, char *other, size_t other_size);
/* 1 when s matches ^[A-Za-z][A-Za-z0-9_]{0,62}$. */
int store_ident_valid(const char *s);
/* 1 when s is 1..128 bytes of [A-Za-z0-9._~:-] (record ids and groups). */
int store_id_valid(const char *s);
/* 1 when name is a system field name (case-insensitive). */
int store_is_system_field(const char *name);
/* Appends the quoted table name of (org, model): "r_<org>__<model>". */
void store_sbuf_table(store_sbuf *b, const char *org, const char *model);

/* ---- schema internals (schema.c) ---------------------------------------- */

/* Canonical JSON of s without its revision (the form stored in
 * _rd_schema.doc). NULL when out of memory. */
json_t *store_schema_to_json(const store_schema *s);
/* Builds a schema (refcount 1) from the canonical JSON. NULL on malformed
 * input or out of memory. */
store_schema *store_schema_from_json(const json_t *doc, int64_t revision);
/* Canonical JSON of one field (the member of a model's "fields"). */
json_t *store_field_to_json(const store_field *f);
const char *store_type_name(store_type t);
/* "RESTRICT", "CASCADE" or "SET_NULL" (anything else reads as RESTRICT). */
const char *store_on_delete_name(store_on_delete d);
/* The published snapshot for org, swapped in under the mutex; takes over
 * the caller's reference to schema. */
void store_snap_publish(store *s, const char *org, store_schema *schema);
void store_snaps_free(store *s);
/* Reads org's newest schema (org NULL: every organisation's) through c's
 * connection and publishes each that is newer than its published one: a
 * push another process made (pg_listen.c, and the writer under its lock). */
rd_code store_schema_reload(store *s, store_stmt_cache *c, const char *org, rd_err *err);

/* ---- data internals (data.c) ---------------------------------------------- */

/* Checks one non-null value against field f's type and constraints; the
 * message starts with the field name. */
rd_code store_check_value(const store_field *f, const json_t *v, rd_err *err);
/* Checks every value in data (types, enum, length, range, system and
 * unknown fields, depth; nulls for required fields in PATCH mode) but not
 * the presence of required fields. */
rd_code store_check_values(const store_model *m, const json_t *data, store_check_mode mode,
                           rd_err *err);
/* Checks that every required field of m is present and non-null in data
 * (a complete document: defaults already applied). */
rd_code store_check_required(const store_model *m, const json_t *data, rd_err *err);
/* Nesting depth of v: 0 for a scalar, 1 + the deepest child for an array or
 * object; stops counting past limit. */
int store_json_depth(const json_t *v, int limit);
/* The stored form of a valid value of field f as JSON (INTEGER as integer,
 * NUMBER as real, TIMESTAMP as canonical RFC 3339 in UTC; others as is).
 * New reference; NULL for null or out of memory. */
json_t *store_normalize(const store_field *f, const json_t *v);

/* ---- rows (store.c) --------------------------------------------------------- */

/* Binds the value of field f (a valid, non-null value) or NULL (v NULL or
 * json null) to parameter idx. Returns an SQLite result code. */
int store_bind_value(store_dbst *st, int idx, const store_field *f, const json_t *v);
/* Fills out from the current row of a "SELECT *" over a model table: system
 * columns and the data object (null columns omitted). Columns without a
 * field in m are ignored. Returns RD_OK or RD_INTERNAL. */
rd_code store_row_read(store_dbst *st, const store_model *m, store_record *out, rd_err *err);

/* ---- filters and order (filter.c), for list.c and bulk writes ----------------- */

/* Binds v to parameter idx (texts STORE_DB_STATIC: v must outlive the
 * statement's use). Returns an SQLite result code. */
int store_value_bind(store_dbst *st, int idx, const store_value *v);
/* Binds f's values, in the order of store_filter_sql's placeholders,
 * starting at *idx (advanced past them). f NULL binds nothing. */
int store_filter_bind(const store_filter *f, store_dbst *st, int *idx);
/* Column (unquoted) and direction of sort key i < store_order_terms(o);
 * o NULL is "_id" ascending. For a key through a reference, the column of
 * the referenced model. */
const char *store_order_col(const store_order *o, size_t i, bool *desc);
/* Whether some sort key of o goes through a reference (a correlated
 * subquery: list.c then selects the keys in a subquery and orders by them). */
bool store_order_has_path(const store_order *o);
/* Appends sort key i as an SQL expression over the base model's table:
 * its quoted column, or for a path (SELECT "_o"."col" FROM <target> AS "_o"
 * WHERE "_o"._id = <table>."ref" [AND "_o"._group IN (?, ...)]). */
void store_order_key_sql(store_sbuf *b, const store_order *o, size_t i);
/* Binds the placeholders of store_order_key_sql(o, i) from *idx on. */
int store_order_key_bind(const store_order *o, size_t i, store_dbst *st, int *idx);

/* ---- writer (writer.c) / DDL (ddl.c) ---------------------------------------- */

/* Runs a cached statement that returns no rows on a read connection. */
int store_conn_exec(store_conn *c, const char *sql);
/* Begins a read transaction on c and reads org's highest committed sync id
 * in its snapshot into *read_at (store_org_head), so what the caller reads next matches it. The
 * caller COMMITs (or ROLLBACKs) with store_conn_exec. SQLite result code. */
int store_conn_begin(store_conn *c, const char *org, int64_t *read_at);
/* org's newest committed sync id in c's snapshot (_rd_org_seq; an
 * organisation that never wrote: where new ones start). */
int store_org_head(store_conn *c, const char *org, int64_t *head);
/* org's newest committed sync id: its newest log row, or what _rd_org_seq
 * remembers (written when the log's rows of an organisation are pruned;
 * '*': where an organisation that never wrote starts), whichever is higher.
 * ?1 = org. */
#define STORE_ORG_HEAD_SQL                                                                         \
    "SELECT max(coalesce((SELECT max(sync_id) FROM _rd_sync_log WHERE org = ?1), 0),"              \
    " coalesce((SELECT sync_id FROM _rd_org_seq WHERE org = ?1),"                                  \
    " (SELECT sync_id FROM _rd_org_seq WHERE org = '*'), 0))"

/* pg_layout.c: creates recordd's system tables on a PostgreSQL database
 * (or checks them), the counterpart of the SQLite layout in store.c. */
rd_code store_pg_layout(store_db *db, rd_err *err);
/* pg_listen.c: starts the thread that listens to the other recordd
 * processes on s's PostgreSQL database (a no-op elsewhere), and stops it
 * (no-op when not started). */
rd_code store_pg_listen_start(store *s, rd_err *err);
void store_pg_listen_stop(store *s);
/* The notification channel, and the longest payload a batch sends (a
 * longer one becomes "*": PostgreSQL takes up to 8000 bytes). */
#define STORE_PG_CHANNEL "recordd"
#define STORE_PG_PAYLOAD_MAX 7900
/* Runs the commit hook as after a commit of this process's (another
 * process's commit was announced). */
void store_commit_signal(store *s);

void *store_writer_main(void *arg);
/* The completer thread: runs the done callbacks of finished batches.
 * store_completer_stop lets it finish every queued completion and joins it
 * (no-op when it was never started). */
void *store_completer_main(void *arg);
void store_completer_stop(store *s);
/* The schema of org as the writer sees it right now: pushed earlier in the
 * current batch, else published. New reference. */
store_schema *store_writer_schema(store *s, const char *org);
/* Executes a PUSH_SCHEMA write inside the writer's savepoint: validates,
 * applies the DDL, records the revision. *published gets the new snapshot
 * (NULL when the push changed nothing), to publish after COMMIT. */
rd_code store_push_schema(store *s, store_write *w, store_schema **published);

/* Runs a cached statement that returns no rows on the write connection
 * (writer thread). SQLite result code. */
int store_wexec(store *s, const char *sql);
/* record.c: executes one record write (CREATE, UPDATE, REPLACE, DELETE) inside the
 * caller's savepoint, with the sync id s->sync_id + 1: what the writer does
 * for a single write, without the savepoint, idempotency or deadline. The
 * caller advances s->sync_id to w->last_sync_id once it keeps the write. */
rd_code store_record_apply(store *s, store_write *w);
/* record.c: authorises w (an UPDATE, REPLACE or DELETE by id with an
 * authorize callback; anything else passes) against the record as it is
 * now, as the write itself would be (a replay is authorised again before
 * its stored outcome is returned). w->err is left as it was when it
 * passes. */
rd_code store_record_authorize_again(store *s, store_write *w);
/* Executes a BULK write (store.h, "bulk writes") inside its savepoint.
 * Leaves s->sync_id as it found it; w->last_sync_id is the highest sync id
 * the bulk took (0 when it was undone). */
rd_code store_bulk_apply(store *s, store_write *w);
/* Whether the failed ALL_OR_NOTHING bulk w failed only concurrency checks
 * (its outcome is then stored with an idempotency key). */
bool store_bulk_storable(const store_write *w);

/* ---- claims (claims.c) --------------------------------------------------------
 * Writer thread only: both use the write connection inside the current
 * write's savepoint. */

/* Executes a CLAIM_ACQUIRE or CLAIM_RELEASE write (rules in store.h, at
 * store_claim); fills w->lease.out and w->err. */
rd_code store_claim_apply(store *s, store_write *w);

/* The claim rule for a write to record (org, model, id) by actor carrying
 * claim (NULL or "" = none) at now_us:
 *   - no live claim on the record, no claim given         -> RD_OK
 *   - a live claim, claim empty or another id             -> RD_CLAIMED
 *     "record is claimed by <holder> until <RFC 3339>"
 *   - claim matches the live claim, actor is not holder   -> RD_CLAIMED
 *     (only the principal that took a claim may use its id)
 *   - claim matches the live claim, actor is the holder   -> RD_OK
 *   - claim given but no live claim has it (expired, released, unknown)
 *                                                         -> RD_CLAIMED
 *     "claim expired or unknown", err->field "claim"
 * A claim is live while now_us < expires_at. Errors of SQLite map through
 * store_sql_err. */
rd_code store_claim_check(store *s, const char *org, const char *model, const char *id,
                          const char *claim, const char *actor, int64_t now_us, rd_err *err);

/* ---- idempotency (idem.c) ----------------------------------------------------
 * The in-flight set: enter/leave are called with qmu held. enter returns
 * false when (w->org, w->idem_key) is already in flight. */
bool store_idem_enter(store *s, store_write *w);
void store_idem_leave(store *s, store_write *w);
/* Writer start: creates _rd_idempotency and its index when missing (layout
 * version 1 databases gain them without a migration). On failure
 * idempotent writes fail with RD_INTERNAL. */
void store_idem_open(store *s);
/* Inside the write's savepoint, before it executes: RD_OK with
 * w->replayed set (and w->replay filled) when a live stored outcome has the
 * same request hash, RD_IDEMPOTENCY_KEY_REUSED when its hash differs, RD_OK
 * when there is none. Does nothing without w->idem_key. */
rd_code store_idem_lookup(store *s, store_write *w);
/* Whether the outcome code of w is stored: applied writes and concurrency
 * refusals (version_conflict, stale_context incl. held, claimed); never
 * replays, validation, auth, rate limits or transient failures. */
bool store_idem_storable(const store_write *w, rd_code code);
/* Seals w (w->seal) and inserts (org, key, hash, bytes, status, now),
 * replacing an expired row. Sets w->idem_stored. On failure sets w->err
 * (RD_INTERNAL, or the mapped SQLite error) and returns it. */
rd_code store_idem_save(store *s, store_write *w);
/* Deletes expired rows inside the open batch transaction, in its own
 * savepoint, at the pace store_prune_budget sets (STORE_IDEM_PRUNE_ROWS a
 * second, at most STORE_IDEM_PRUNE_MAX at once). Errors are ignored (tried
 * again later). */
void store_idem_prune(store *s);
/* store_set_changes_retention's pruning, run by the writer in every batch
 * (store/changes.c). */
#define STORE_LOG_PRUNE_ROWS 1024
#define STORE_LOG_PRUNE_MAX 8192
void store_changes_prune(store *s);
/* Reads the log's size and oldest time into s (rowid ends: O(1)); at open
 * and after each prune. */
void store_changes_measure(store *s);

#endif
