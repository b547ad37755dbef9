/* store: recordd's storage on SQLite or PostgreSQL (DESIGN.md §5; the
 * database driver is chosen by the target, store/db.h). Owns every SQL
 * statement and connection: the schema registry (one schema per
 * organisation), a table per (organisation, model), the sync log, and a
 * single writer thread that group-commits queued writes.
 *
 * Threads: store_open/store_close from one thread. Writes go through
 * store_submit from any thread; the writer thread applies and commits them,
 * and their completion (store_write.done) runs on the completer thread
 * (rd-completer), in commit order.
 * Reads use a store_conn, one per thread. Schema snapshots are immutable and
 * reference counted, safe to share between threads.
 *
 * Every function taking an organisation id scopes all it reads and writes to
 * that organisation: another organisation's data is invisible (NOT_FOUND). */
#ifndef STORE_H
#define STORE_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "common/rd.h"

typedef struct store store;
typedef struct store_conn store_conn;

/* ---- schema --------------------------------------------------------------
 * Field types; the numbers match recordd.v1.FieldType. */
typedef enum store_type {
    STORE_T_STRING = 1,
    STORE_T_INTEGER = 2,
    STORE_T_NUMBER = 3,
    STORE_T_BOOLEAN = 4,
    STORE_T_TIMESTAMP = 5, /* RFC 3339 string in data, stored as µs since epoch */
    STORE_T_JSON = 6,      /* any JSON value, stored as text */
    STORE_T_ENUM = 7,      /* one of enum_values */
    STORE_T_REFERENCE = 8, /* the id of a record of model `references`, stored as text */
} store_type;

/* What deleting a record does to the records whose REFERENCE fields point
 * at it; the numbers match recordd.v1.OnDelete (0 = RESTRICT). */
typedef enum store_on_delete {
    STORE_DEL_RESTRICT = 1, /* refused (RD_REFERENCED) while referenced */
    STORE_DEL_CASCADE = 2,  /* the referrers are deleted too, recursively */
    STORE_DEL_SET_NULL = 3, /* the referrers' field is cleared */
} store_on_delete;

typedef struct store_field {
    char *name;
    store_type type;
    bool required;
    uint32_t max_length; /* characters (code points); 0 = no limit */
    bool has_min, has_max;
    double min, max; /* numbers: value range; strings: not used */
    bool unique;
    json_t *default_value; /* NULL = no default */
    char **enum_values;
    size_t n_enum_values;
    bool immutable;
    char **writable_by; /* roles; empty = any writer */
    size_t n_writable_by;
    char *references;          /* REFERENCE: the target model's name; NULL otherwise */
    store_on_delete on_delete; /* REFERENCE: RESTRICT (default), CASCADE or SET_NULL */
} store_field;

typedef struct store_unique {
    char **fields;
    size_t n_fields;
} store_unique;

typedef struct store_model {
    char *name;
    store_field *fields;
    size_t n_fields;
    store_unique *unique_together;
    size_t n_unique_together;
} store_model;

/* An organisation's schema. Immutable once published; share it with
 * store_schema_ref and drop it with store_schema_release. */
typedef struct store_schema {
    int64_t revision; /* 0 = nothing pushed yet */
    store_model *models;
    size_t n_models;
    int refs_; /* internal */
} store_schema;

/* A new empty schema (revision 0, refcount 1) to fill in before pushing;
 * the caller allocates names/arrays with malloc (store_schema_release frees
 * them). */
store_schema *store_schema_new(void);
store_schema *store_schema_ref(store_schema *s);
void store_schema_release(store_schema *s);
const store_model *store_schema_model(const store_schema *s, const char *name);
const store_field *store_model_field(const store_model *m, const char *name);

/* Checks a schema definition: identifiers (^[A-Za-z][A-Za-z0-9_]{0,62}$, no
 * reserved/system names), duplicate models or fields, enum values present
 * for ENUM, defaults of the right type and within constraints, min <= max,
 * unique_together naming existing fields. On failure returns
 * RD_VALIDATION_FAILED with err->field set to "models[i].fields[j].name"
 * style paths. */
rd_code store_schema_validate(const store_schema *s, rd_err *err);

/* ---- record data ---------------------------------------------------------
 * Record data is a JSON object (jansson) mapping field name -> value. The
 * system fields (id, createdAt, updatedAt, organizationId, createdBy,
 * updatedBy, version, syncId, group, model, readAt) never appear in it. */

typedef enum store_check_mode {
    STORE_CHECK_CREATE,  /* full document: required fields present, defaults later */
    STORE_CHECK_REPLACE, /* same as create */
    STORE_CHECK_PATCH,   /* a merge patch: nulls allowed (clear), required not checked */
} store_check_mode;

/* Validates data against model: unknown fields -> RD_UNKNOWN_FIELD, system
 * fields -> RD_VALIDATION_FAILED ("server-managed"), types, enum values,
 * max_length, min/max, required (not in PATCH mode; a null for a required
 * field in PATCH is an error), JSON nesting deeper than STORE_MAX_DEPTH.
 * err->field names the field. Does not touch the database. */
rd_code store_check_data(const store_model *model, const json_t *data, store_check_mode mode,
                         rd_err *err);

#define STORE_MAX_DEPTH 32

/* RFC 7396: applies patch to target in place and returns the result (which
 * may be a different object than target when patch is not an object). The
 * caller owns the returned reference; target's reference is consumed. */
json_t *store_merge_patch(json_t *target, const json_t *patch);

/* ---- records ------------------------------------------------------------- */

typedef struct store_record {
    char id[129];
    char group[129];
    char created_by[129];
    char updated_by[129];
    int64_t version;
    int64_t sync_id;
    int64_t created_at_us;
    int64_t updated_at_us;
    json_t *data; /* owned; fields whose value is null are omitted */
} store_record;

/* Releases rec->data and zeroes *rec. */
void store_record_clear(store_record *rec);

/* ---- opening ------------------------------------------------------------- */

/* A database target: a SQLite file (a path, or "sqlite:PATH") or a
 * PostgreSQL database ("postgres://..." or "postgresql://...", a libpq URI,
 * several hosts allowed; the password from the URI, PGPASSWORD or
 * PGPASSFILE). */

/* The file a target names, or NULL when it names a database server. */
const char *store_target_file(const char *target);
/* target with any password in it replaced by "***": for logs, errors and
 * anything else printed. */
void store_target_redact(const char *target, char *out, size_t size);
/* Overwrites any password in s (a target, or a "--db=target" argument)
 * with '*' in place, so that ps does not show it once the process has
 * copied its arguments. */
void store_target_scrub(char *s);

typedef struct store_options {
    const char *path; /* the database target; a file's directory must exist */
    bool sync_normal; /* synchronous=NORMAL instead of FULL */
    int max_batch;    /* most writes per group commit; 0 = default (256) */
    /* a tool's store (recordctl): on PostgreSQL it does not listen to the
     * servers' notifications */
    bool tool;
    /* a database server: the most read connections open at once (threads
     * borrow one per call, store_thread_conn); 0 = 8. SQLite keeps one
     * per thread. */
    int pool_size;
} store_options;

rd_code store_open(const store_options *opt, store **out, rd_err *err);
/* Stops accepting writes, lets the writer finish every queued write (their
 * completions run), checkpoints the WAL and closes. */
void store_close(store *s);

/* The current schema of org (never NULL: revision 0 when nothing was pushed).
 * The caller releases it. */
store_schema *store_schema_get(store *s, const char *org);
/* Several processes on one database (PostgreSQL): another may have pushed
 * a schema whose announcement has not arrived yet. Reads org's newest
 * schema from the database (on the calling thread's read connection) and
 * publishes it; true when it is newer than seen. For paths that are about
 * to refuse a call because of the schema (an unknown model, invalid data):
 * they check again against the new one. Always false on SQLite. */
bool store_schema_refresh(store *s, const char *org, const store_schema *seen);
/* store_schema_get, refreshed (store_schema_refresh) when model is not in
 * the published snapshot. */
store_schema *store_schema_get_model(store *s, const char *org, const char *model);

/* ---- reads --------------------------------------------------------------- */

/* A read connection; use one per thread. */
rd_code store_conn_open(store *s, store_conn **out, rd_err *err);
void store_conn_close(store_conn *c);

/* The calling thread's read connection to s, opened on first use and
 * closed when the thread exits (so threads that use it must exit before s
 * closes: the server's workers do). A connection a thread kept from a store
 * closed since is replaced. NULL with err set when it cannot be opened. */
store_conn *store_thread_conn(store *s, rd_err *err);
/* The end of the calling thread's use of its read connection for now (the
 * end of a call): a pooled one (a database server's) goes back to the
 * pool; a thread's own SQLite connection stays. */
void store_conn_release(store *s);

/* Reads one record in one snapshot together with the highest committed sync
 * id (*read_at). RD_NOT_FOUND for an unknown model or id. */
rd_code store_get(store_conn *c, const char *org, const char *model, const char *id,
                  store_record *out, int64_t *read_at, rd_err *err);

/* A read snapshot spanning several reads: begins a read transaction on c
 * and takes org's head (*read_at). Until store_read_release, every read on
 * c (store_get, store_list, store_get_many) joins that transaction instead
 * of opening its own, so they all see one snapshot and report the same
 * read_at (for org). Release it before the call ends on every path (a
 * pooled connection returned to its pool drops it too). Errors:
 * RD_UNAVAILABLE, RD_INTERNAL (already held). */
rd_code store_read_hold(store_conn *c, const char *org, int64_t *read_at, rd_err *err);
/* Ends a hold (nothing when none is held). */
void store_read_release(store_conn *c);

/* Most ids bound per statement by store_get_many: three statement texts
 * per model (1, 8 or 64 ids, unused slots bound NULL), so the statement
 * cache reuses them. */
#define STORE_GET_MANY_CHUNK 64

/* Reads the records of model m (from a schema snapshot of org the caller
 * holds) whose ids are among ids[0..n) (distinct; invalid ids match
 * nothing) in one snapshot (a held one, else its own), with one
 * `_id IN (?1..?k)` statement per STORE_GET_MANY_CHUNK ids (k = 1, 8 or
 * 64, the fewest that hold what is left). out has room for n; *n_out records are filled, in no
 * particular order (missing ids are simply absent); the caller clears them (store_record_clear).
 * *read_at (may be NULL) gets the snapshot's head of org. Errors: RD_NOT_FOUND (model gone),
 * RD_UNAVAILABLE, RD_INTERNAL. */
rd_code store_get_many(store_conn *c, const char *org, const store_model *m, const char *const *ids,
                       size_t n, store_record *out, size_t *n_out, int64_t *read_at, rd_err *err);
/* How many statements store_get_many has run on c (tests: no N+1). */
uint64_t store_conn_get_many_queries(const store_conn *c);

/* ---- filters, ordering and listing (store/filter.c, store/list.c) ----------
 * One filter grammar for ListRecords and the by-filter bulk operations
 * (DESIGN.md §4), an AIP-160 subset:
 *
 *   filter  := ws* [ cmp ( ws+ "AND" ws+ cmp )* ] ws*
 *   cmp     := field ws* op ws* literal
 *   op      := "=" | "!=" | "<" | "<=" | ">" | ">="
 *   literal := string | number | "true" | "false" | "null"
 *   string  := '"' ( any byte but '"' and '\' | '\"' | '\\' )* '"'
 *   number  := [+-]? digit+ ( "." digit+ )?
 *
 * AND is case-sensitive (uppercase only). Fields: the model's fields and the
 * system fields id, version, syncId, group, createdAt, updatedAt. JSON
 * fields are not filterable. null goes only with = and != (IS NULL / IS NOT
 * NULL). STRING/ENUM/REFERENCE/id/group take strings; INTEGER/NUMBER/
 * version/syncId numbers; BOOLEAN true/false with = and != only; TIMESTAMP/
 * createdAt/updatedAt RFC 3339 strings. Whitespace is space, tab, CR, LF.
 *
 * A field may be a path through REFERENCE fields (no whitespace around the
 * dots):
 *
 *   field   := name ( "." name )*      name := [A-Za-z_][A-Za-z0-9_]*
 *
 * Every name but the last must be a REFERENCE field of the model reached so
 * far (the base model first); the last is any filterable field or system
 * field of the model the path ends in. At most STORE_FILTER_MAX_DEPTH
 * references are traversed (`a.b.c.field`). `city.name = "x"` matches the
 * records whose city is a record of the target model (in a group the
 * caller may read, store_filter_access) with that name: a semi-join
 * `"city" IN (SELECT _id FROM <cities> WHERE <groups> AND "name" = ?)`,
 * nested per reference. So `city.name != "x"` means "has a city whose name
 * is set and is not x", `city.name = null` "has a city whose name is
 * unset", and a record whose city is unset (or not readable) never
 * matches a comparison through it. In order_by a path traverses at most one
 * reference (`city.name desc`): the key is the referenced record's field,
 * null when the reference is unset or not readable. */

#define STORE_FILTER_MAX_LEN 4096 /* bytes of filter text */
#define STORE_FILTER_MAX_CONDS 64 /* comparisons per filter */
#define STORE_ORDER_MAX_TERMS 8   /* order_by terms, before the id tiebreak */
#define STORE_FILTER_MAX_DEPTH 3  /* references one filter path traverses */
#define STORE_LIST_MAX_LIMIT 1000 /* rows per store_list call */

typedef struct store_filter store_filter;
typedef struct store_order store_order;

/* Which records of the models a path traverses a parse may match: called
 * once per distinct model a path enters (not for the base model, which the
 * caller restricts itself), in order of appearance. Sets *all (every
 * group) or *groups[0..*n) (copied by the parser); any other return fails
 * the parse with that code and err (e.g. RD_PERMISSION_DENIED). */
typedef struct store_filter_access {
    rd_code (*groups)(void *ctx, const char *model, bool *all, const char ***groups, size_t *n,
                      rd_err *err);
    void *ctx;
} store_filter_access;

/* Parses text (NULL or blank = no condition) against model m of schema s
 * (s supplies the models a path reaches; org names their tables) into *out
 * (the caller's: store_filter_free). access NULL lets paths match in every
 * group. The result copies what it needs and references neither s, m nor
 * the access's groups. Errors: RD_VALIDATION_FAILED with err->field
 * "filter" and a message naming the 1-based byte position, the unknown
 * field or path segment, the non-REFERENCE segment, the path that is too
 * deep or the field whose type does not fit; access's errors; RD_INTERNAL
 * (out of memory). */
rd_code store_filter_parse(const store_schema *s, const char *org, const store_model *m,
                           const char *text, const store_filter_access *access, store_filter **out,
                           rd_err *err);
void store_filter_free(store_filter *f);
/* Number of comparisons (0 for a blank filter). */
size_t store_filter_conditions(const store_filter *f);
/* The compiled WHERE fragment: comparisons joined by AND with one "?" per
 * bound value, identifiers quoted, "TRUE" for no condition. Valid while f
 * lives. For tests and for the bulk operations that embed it. */
const char *store_filter_sql(const store_filter *f);

/* Parses an order_by: "term (, term)*", term := field ws+ ("asc"|"desc")?
 * (direction case-insensitive, default asc). Any field but JSON fields and
 * any of the filter's system fields, or a path through one REFERENCE field
 * of m to such a field of its target (s, org and access as for
 * store_filter_parse); a field at most once; at most STORE_ORDER_MAX_TERMS
 * terms. id always ends the order (appended as "id asc" unless given;
 * terms after it are refused). NULL or blank = "id". Errors:
 * RD_VALIDATION_FAILED with err->field "orderBy"; access's errors;
 * RD_INTERNAL. */
rd_code store_order_parse(const store_schema *s, const char *org, const store_model *m,
                          const char *text, const store_filter_access *access, store_order **out,
                          rd_err *err);
void store_order_free(store_order *o);
/* Number of sort keys including the id tiebreak (>= 1). */
size_t store_order_terms(const store_order *o);

/* One value of a sort key as SQLite stores it. */
typedef enum store_vtype {
    STORE_V_NULL = 0,
    STORE_V_INT = 1,
    STORE_V_REAL = 2,
    STORE_V_TEXT = 3,
} store_vtype;

typedef struct store_value {
    store_vtype type;
    int64_t i;
    double d;
    char *s; /* STORE_V_TEXT: NUL-terminated; owned by whoever filled it */
    size_t n;
} store_value;

/* One page of store_list. */
typedef struct store_page {
    store_record *records; /* n of them, malloc'd */
    size_t n;
    bool more;         /* rows follow the last one */
    store_value *last; /* when more: the sort key of the last record */
    size_t n_last;     /* store_order_terms(o) */
    int64_t read_at;   /* highest committed sync id of the snapshot */
} store_page;

/* Whether writes are failing for lack of disk space: the last batch hit a
 * full disk (SQLITE_FULL, answered RD_UNAVAILABLE), no batch has committed
 * since, and the database's file system still has less than
 * STORE_FULL_RECOVER_BYTES free. Readiness reports not ready meanwhile. */
#define STORE_FULL_RECOVER_BYTES ((uint64_t)8 << 20)
bool store_storage_full(store *s);
/* Whether the store can take writes: the disk is not full
 * (store_storage_full) and, for a database server, the calling thread's
 * read connection reaches it (one round trip; it reconnects with backoff
 * when it had lost the server). Readiness reports this. */
bool store_ready(store *s);
/* The size in bytes of the database file and of its write-ahead log (0
 * when absent), for /metrics. */
void store_file_sizes(store *s, int64_t *db_bytes, int64_t *wal_bytes);

/* Frees everything a page holds (records, key texts) and zeroes it. */
void store_page_free(store_page *p);

/* Lists up to limit (1..STORE_LIST_MAX_LIMIT) records of model m (from a
 * schema snapshot of org the caller holds) matching f (NULL = all), in
 * order o (NULL = id asc), strictly after the sort key after[0..n_after)
 * (NULL = from the start; n_after must be store_order_terms(o)), and only
 * in groups[0..n_groups) (groups NULL = every group). With max_bytes > 0
 * the page also ends before a row that would take the rows' stored size
 * (every column's bytes, plus 8 each) past max_bytes; it always holds at
 * least one row, and `more`/`last` then continue at the row left out. Rows
 * and read_at
 * come from one read transaction on c (keyset pagination: rows inserted or
 * changed behind the cursor do not shift later pages). *out is the
 * caller's (store_page_free) on RD_OK. Errors: RD_NOT_FOUND (model gone),
 * RD_VALIDATION_FAILED (limit, key length), RD_UNAVAILABLE, RD_INTERNAL. */
rd_code store_list(store_conn *c, const char *org, const store_model *m, const store_filter *f,
                   const store_order *o, const store_value *after, size_t n_after, size_t limit,
                   size_t max_bytes, const char *const *groups, size_t n_groups, store_page *out,
                   rd_err *err);

/* ---- writes -------------------------------------------------------------- */

typedef enum store_op {
    STORE_OP_CREATE = 1,
    STORE_OP_UPDATE = 2, /* data is an RFC 7396 merge patch */
    STORE_OP_REPLACE = 3,
    STORE_OP_DELETE = 4,
    STORE_OP_PUSH_SCHEMA = 5,
    STORE_OP_CLAIM_ACQUIRE = 6, /* store/claims.c; no sync log row */
    STORE_OP_CLAIM_RELEASE = 7,
    STORE_OP_BULK = 8,         /* store/bulk.c: w->bulk, many operations in one savepoint */
    STORE_OP_UPDATE_WHERE = 9, /* only inside a bulk: merge patch by filter */
    STORE_OP_DELETE_WHERE = 10,
} store_op;

/* A claim: a lease by one principal (holder = the write's actor) on one
 * record (org, model, id), stored in _rd_claims (store/claims.c,
 * docs/internals/claims.md). Claim writes go through the writer like record
 * writes but append nothing to the sync log.
 *
 * CLAIM_ACQUIRE (org, actor, rec.model, rec.id, lease.ttl_s, rec.claim): the
 * record must exist (RD_NOT_FOUND); lease.ttl_s outside 1..STORE_CLAIM_TTL_MAX_S is
 * RD_VALIDATION_FAILED. With claim NULL/"": a new claim when the record has
 * no live claim (an expired one is replaced), else RD_CLAIMED, whoever asks
 * (one principal may run many workers). With claim set: renews that live
 * claim (same id, expires now + ttl) when the actor holds it, else
 * RD_CLAIMED. lease.out gets the claim; on RD_CLAIMED the blocking claim
 * (holder and expiry, never its id).
 *
 * CLAIM_RELEASE (org, actor, rec.claim; rec.model and rec.id optional): deletes the live
 * claim. RD_NOT_FOUND when no live claim of org has that id (or it is on
 * another model/id than the ones given); RD_CLAIMED when the actor is not
 * its holder. lease.out gets the claim as it was. */
typedef struct store_claim {
    char claim_id[48];
    char model[64];
    char id[129];
    char holder[129];
    int64_t expires_at_us; /* µs since the epoch */
} store_claim;

#define STORE_CLAIM_TTL_MAX_S 3600

typedef struct store_write store_write;
typedef void (*store_done_fn)(store_write *w);

/* A record a delete changed besides the one it named: a referrer deleted
 * by an onDelete CASCADE field (op STORE_OP_DELETE) or cleared by a
 * SET_NULL one (op STORE_OP_UPDATE), with the sync id its change took. */
typedef struct store_affected {
    char model[64];
    char id[129];
    store_op op;
    int64_t sync_id;
} store_affected;

/* The most affected records a write (or a bulk's receipt) lists; ops
 * counts them all. */
#define STORE_AFFECTED_MAX 100
typedef struct store_bulk store_bulk;

/* What a write does when a field it writes changed after its read_at
 * (DESIGN.md §4); the numbers match recordd.v1.OnStale minus one. */
typedef enum store_on_stale {
    STORE_STALE_REJECT = 0,    /* RD_STALE_CONTEXT, not applied */
    STORE_STALE_OVERWRITE = 1, /* applied: last writer wins */
    STORE_STALE_NOTIFY = 2,    /* not applied; w->rec.held with the conflict */
} store_on_stale;

/* Idempotency keys (store/idem.c, docs/internals/store.md). */
#define STORE_IDEM_KEY_MAX 255
#define STORE_IDEM_HASH_BYTES 32
#define STORE_IDEM_TTL_DEFAULT_S 86400

/* The outcome of an idempotent write as the caller will send it: bytes
 * stored verbatim (the serialized receipt) and a caller-defined status
 * (the gRPC code). */
typedef struct store_sealed {
    const void *bytes;
    size_t len;
    int status;
} store_sealed;

/* Runs on the writer thread inside the write's savepoint once its outcome
 * is known (applied, or refused by a concurrency check: version_conflict,
 * stale_context, held, claimed) and before anything is committed. Fills
 * *out with bytes that stay valid until done has run. Returns false when
 * it cannot (out of memory): the write then fails with RD_INTERNAL. */
typedef bool (*store_seal_fn)(store_write *w, store_sealed *out);

/* The part of a write that addresses one record: CREATE, UPDATE, REPLACE,
 * DELETE (also as a bulk operation) and the record a claim is about. */
typedef struct store_record_write {
    /* input */
    const char *model;
    const char *id;    /* NULL or "" on create: the store generates one */
    const char *group; /* create only; "" = default group */
    json_t *data;      /* create/replace: full data; update: merge patch */
    bool has_expected_version;
    int64_t expected_version;
    /* create/update/replace: a unique-constraint refusal (duplicate_record)
     * names neither the field nor the value, for a caller that may not read
     * every sync group of the model (docs/API.md, duplicate_record) */
    bool redact_duplicates;
    /* update/replace/delete: when n_expected_versions > 0, the record must be
     * at one of these versions (not together with has_expected_version) */
    const int64_t *expected_versions;
    size_t n_expected_versions;
    /* update/replace/delete: the id of the caller's claim on the record (NULL
     * or "" = none), checked by store_claim_check; CLAIM_ACQUIRE: a live
     * claim to renew; CLAIM_RELEASE: the claim to release */
    const char *claim;
    /* update/replace/delete: per-field staleness. With has_read_at, the write
     * is stale when a field it writes (update: the patch's fields; replace
     * and delete: every field) changed after read_at; on_stale decides. */
    bool has_read_at;
    int64_t read_at;
    store_on_stale on_stale;

    /* output, valid when done runs */
    store_record record; /* after-image for create/update/replace;
                            before-image for delete (the caller clears it) */
    /* Refused by a concurrency check (version_conflict, stale_context, held,
     * claimed): current_version is the record's version. Stale (and held):
     * record is the current image (the caller clears it). */
    int64_t current_version;
    /* Stale (RD_STALE_CONTEXT): the written fields that changed after
     * read_at, an array of names in schema order (caller decrefs). held is
     * true when on_stale was NOTIFY: the write was held, not failed. */
    json_t *conflicts;
    bool held;
} store_record_write;

/* The part of a PUSH_SCHEMA write. */
typedef struct store_push_write {
    store_schema *schema; /* input: the new definition (store takes a ref) */
    bool force;           /* input: allow destructive changes */
    /* input: refuse the push (RD_VERSION_CONFLICT) unless the schema is at
     * this revision; -1 matches none */
    bool has_expected_revision;
    int64_t expected_revision;
    bool merge;       /* input: merge into the current schema (store_push_schema) */
    int64_t revision; /* output: the new revision */
    json_t *changes;  /* output: array of strings (caller decrefs) */
} store_push_write;

/* The part of a CLAIM_ACQUIRE / CLAIM_RELEASE write (the record and the
 * claim id are in the record part). */
typedef struct store_lease_write {
    int ttl_s;       /* input, CLAIM_ACQUIRE: 1..STORE_CLAIM_TTL_MAX_S */
    store_claim out; /* output: see store_claim; zero it before submitting */
} store_lease_write;

/* One write: a header every operation has, then the part of its kind of
 * operation (rec, push, lease or bulk). The caller fills the input parts,
 * keeps everything they point to alive until done runs, and must not touch
 * the struct in between. done runs exactly once, on the completer thread
 * (rd-completer, not the writer: the writer goes on to the next batch
 * meanwhile), after the commit is durable (or the write failed), in commit
 * order; it must not block. */
struct store_write {
    /* ---- the header -------------------------------------------------------- */
    store_op op;
    const char *org;     /* organisation id */
    const char *actor;   /* principal id, recorded as created_by/updated_by */
    int64_t deadline_us; /* 0 = none; past it the write is not applied */
    /* Idempotency (any record write): with idem_key set (1..STORE_IDEM_KEY_MAX
     * bytes), store_submit refuses a second write with the same (org, key)
     * while the first is queued (RD_IDEMPOTENCY_IN_PROGRESS); the writer
     * replays a stored outcome for (org, key) younger than the TTL when
     * idem_hash matches (w->replayed) or refuses the write when it does not
     * (RD_IDEMPOTENCY_KEY_REUSED); otherwise it executes the write and, when
     * the outcome is storable, stores what seal returns in the same
     * savepoint. seal is required with idem_key. */
    const char *idem_key;
    uint8_t idem_hash[STORE_IDEM_HASH_BYTES];
    store_seal_fn seal;
    /* update/replace/delete and claims: runs on the writer thread once the
     * record is looked up, before any other check, with the record's sync
     * group, or NULL when the record does not exist; a code other than RD_OK
     * (with err filled) rejects the write. NULL = no check. */
    rd_code (*authorize)(store_write *w, const char *group, rd_err *err);
    /* DELETE (also by filter): runs on the writer thread for each record the
     * delete would change besides its own (REFERENCE fields, store/record.c
     * "references"), before anything is written: m and group are the
     * record's, op STORE_OP_DELETE (onDelete CASCADE, field NULL) or
     * STORE_OP_UPDATE (SET_NULL, field the one cleared). A code other than
     * RD_OK (with err filled) refuses the whole delete. NULL = allowed. */
    rd_code (*authorize_other)(store_write *w, const store_model *m, store_op op, const char *group,
                               const char *field, rd_err *err);
    /* DELETE refused because records refer to it (RD_REFERENCED): whether
     * the caller may read a record of m in group, so that the refusal
     * names as its example only a record the caller may see. NULL = any. */
    bool (*may_read)(store_write *w, const store_model *m, const char *group);
    store_done_fn done;
    void *ctx; /* for the caller */

    /* output, valid when done runs */
    rd_err err;            /* err.code == RD_OK on success */
    char server_tx_id[40]; /* unique per write */
    int64_t last_sync_id;  /* sync id of this write; 0 when nothing written */
    int ops;               /* rows written */
    /* a delete that cascaded: the first STORE_AFFECTED_MAX of the other
     * records it changed, in the order written (malloc'd; the caller frees
     * it; the writer frees it when the write fails); ops counts them all */
    store_affected *affected;
    size_t n_affected;
    /* Idempotency: idem_stored = the sealed outcome was committed with the
     * write; replayed = an earlier outcome was found and nothing executed:
     * replay (malloc'd, caller frees) holds its bytes, replay_status its
     * status. */
    bool idem_stored;
    bool replayed;
    void *replay;
    size_t replay_len;
    int replay_status;

    /* ---- the part of the operation --------------------------------------------- */
    store_record_write rec;  /* CREATE, UPDATE, REPLACE, DELETE; CLAIM_*: the record */
    store_push_write push;   /* PUSH_SCHEMA */
    store_lease_write lease; /* CLAIM_ACQUIRE, CLAIM_RELEASE */
    store_bulk *bulk;        /* BULK: the operations and their outcomes (store_bulk) */

    store_write *next_;      /* internal */
    store_write *idem_next_; /* internal: chain of the in-flight key set */
    bool idem_inflight_;     /* internal: w is in the in-flight key set */
};

/* ---- bulk writes (store/bulk.c) --------------------------------------------
 * A BULK write (w->op STORE_OP_BULK, w->bulk) runs many record operations
 * inside the one savepoint the writer gives every write, so it shares the
 * group commit (and its fsync) with concurrent single writes, and a failing
 * bulk never affects them. Each operation runs in its own nested savepoint,
 * in request order, and sees the effects of the earlier ones:
 *
 *   CREATE / UPDATE / REPLACE / DELETE by id: exactly as a single write with
 *     the same inputs (op->w: model, id, group, data, expected_version,
 *     read_at/on_stale, claim, authorize, ctx). UPDATE, REPLACE and DELETE of
 *     an id that does not exist set op->missing; that is not a failure.
 *     A stale write with on_stale NOTIFY sets op->w.held: not applied, not
 *     a failure.
 *   UPDATE_WHERE / DELETE_WHERE: op->filter (the store_filter_parse grammar,
 *     parsed against the writer's schema with op->access for the models a
 *     path traverses, called on the writer thread; no condition ->
 *     RD_FILTER_REQUIRED,
 *     field "filter") selects the records of op->w.model, only in groups
 *     [0..n_groups) when groups is not NULL; more than max_affected (or
 *     STORE_BULK_MAX_AFFECTED) of them -> RD_VALIDATION_FAILED, field
 *     "maxAffected", nothing written. Each record is then updated (op->w.data
 *     as a merge patch, checked once up front) or deleted as by id, through
 *     op->w.authorize with its group; the first failure fails the operation
 *     and undoes its other records.
 *
 * Every record written appends its own sync-log row with the bulk's
 * server_tx_id and takes the next sync id. Modes:
 *   ALL_OR_NOTHING: every operation runs (so every failure is found); when
 *     one failed, all are undone and the write fails with the chosen failing
 *     operation's error (the first PERMISSION_DENIED one, else the first);
 *     err_index says which.
 *   BEST_EFFORT: a failed operation is undone alone; the write succeeds.
 * dry_run: everything runs and is undone: the outcomes say what would
 * happen; no sync id is consumed (last_sync_id 0, ops = rows that would be
 * written). The write's ops is the number of records written, last_sync_id
 * the highest sync id taken. With an idempotency key, an ALL_OR_NOTHING
 * failure is stored only when every failing operation failed a concurrency
 * check (version_conflict, stale_context, claimed). */

#define STORE_BULK_MAX_OPS 1000       /* operations per bulk */
#define STORE_BULK_MAX_AFFECTED 10000 /* records one by-filter operation may write */

typedef enum store_bulk_mode {
    STORE_BULK_ALL_OR_NOTHING = 0,
    STORE_BULK_BEST_EFFORT = 1,
} store_bulk_mode;

typedef struct store_bulk_op {
    /* input: op->w.op is CREATE, UPDATE, REPLACE, DELETE, UPDATE_WHERE or
     * DELETE_WHERE; org, actor and server_tx_id come from the bulk's write;
     * idem_key, seal, done and deadline_us are not used. Output: op->w.err,
     * record (after-image, create: the id), current_version, conflicts and
     * held as for a single write (the caller clears record and conflicts). */
    store_write w;
    const char *filter; /* by filter */
    bool has_max_affected;
    int64_t max_affected;      /* >= 0 */
    const char *const *groups; /* by filter: NULL = every group */
    size_t n_groups;
    /* by filter: the models a path traverses (NULL = every group of each) */
    const store_filter_access *access;
    /* input: failed before reaching the store (w.err says why); not run,
     * counts as a failure */
    bool skip;
    /* output */
    bool failed;      /* the operation failed (w.err) */
    bool missing;     /* by id: no such record; not a failure */
    int64_t affected; /* records written, or that would be in a dry run */
} store_bulk_op;

struct store_bulk {
    /* input */
    store_bulk_op *ops;
    size_t n_ops; /* 1..STORE_BULK_MAX_OPS */
    store_bulk_mode mode;
    bool dry_run;
    /* bounds (0 = none): records the whole bulk may touch (by-id operations
     * count one each, by-filter ones every record they select, dry runs
     * alike), and how long it may hold the writer. Exceeding either undoes
     * the whole bulk: RD_TOO_MANY_ROWS (field "operations"), or
     * RD_DEADLINE_EXCEEDED; so does the call's own deadline (w->deadline_us),
     * checked between records. */
    int64_t max_rows;
    int64_t max_us;
    /* output */
    bool executed;    /* the operations ran (not refused as a whole) */
    bool applied;     /* the outcome is in the transaction (not undone) */
    size_t n_failed;  /* operations that failed */
    size_t err_index; /* ALL_OR_NOTHING failure: the operation w->err is from */
    int64_t rows;     /* records written (dry run: that would be) */
    int64_t touched;  /* records counted against max_rows */
    int64_t until_us; /* internal: when the bulk must stop (0 = never) */
    rd_code outcome;  /* what the bulk returned (w->err.code unless the commit failed) */
};

/* Queues w for the writer. Never blocks on I/O. When the store is closing,
 * done runs at once with RD_UNAVAILABLE; when w->idem_key is already in
 * flight for w->org, at once with RD_IDEMPOTENCY_IN_PROGRESS. */
void store_submit(store *s, store_write *w);

/* Sets how long stored idempotent outcomes are replayed (seconds, >= 1;
 * default STORE_IDEM_TTL_DEFAULT_S). Older ones count as absent and are
 * pruned by the writer a few at a time. Call before submitting writes. */
void store_set_idempotency_ttl(store *s, int64_t seconds);
/* The change log's retention: rows older than seconds, and the oldest rows
 * beyond max_rows, are pruned by the writer in small batches (0 = keep).
 * The newest row is always kept. A feed cursor behind the oldest row left
 * gets RD_SYNC_ID_EXPIRED. */
void store_set_changes_retention(store *s, int64_t seconds, int64_t max_rows);
/* Submits and waits for completion (for tools and tests); w->done must be
 * NULL. Returns w->err.code. */
rd_code store_submit_wait(store *s, store_write *w);

/* ---- API keys and revocations (store/keys.c) ------------------------------
 * _rd_api_keys holds one row per API key: its id, the keyed hash of the key
 * (never the key), organisation, role, capabilities (JSON text) and
 * revocation time; _rd_revoked_tokens the revoked token ids. Lookups run on a
 * read connection with indexed statements and cache nothing, so a
 * revocation counts from its commit on (also across processes); callers
 * that cache (service/svc_auth.c) check store_auth_gen.
 *
 * Writes (insert, revoke) run on their own short-lived connection, not
 * through the writer: they are for tools (recordctl) and tests, never the
 * request path. SQLite's write lock (with the busy timeout) serialises them
 * with the writer of a server running on the same database file. */

#define STORE_KEY_HASH_BYTES 32
#define STORE_KEY_ID_MAX 64
#define STORE_ROLE_MAX 64
#define STORE_JTI_MAX 256
#define STORE_CLIENT_ID_MAX 255

typedef struct store_api_key {
    char key_id[STORE_KEY_ID_MAX + 1];
    char org[65];
    char role[STORE_ROLE_MAX + 1];
    char *caps; /* JSON text, malloc'd (store_api_key_clear frees it) */
    char client_id[STORE_CLIENT_ID_MAX + 1]; /* client certificate identity; "" = unbound */
    int64_t created_at_us;
    int64_t revoked_at_us; /* 0 = live */
} store_api_key;

/* Frees k->caps and zeroes *k. */
void store_api_key_clear(store_api_key *k);

/* Records a new key. key_id: 1..STORE_KEY_ID_MAX bytes of [A-Za-z0-9._~:-];
 * org: a valid organisation id; role: 1..STORE_ROLE_MAX bytes; caps: JSON
 * text (the caller validated it); client_id: the client certificate
 * identity the key is bound to (1..STORE_CLIENT_ID_MAX bytes), or NULL.
 * Errors: RD_VALIDATION_FAILED (field key_id, org, role or client_id),
 * RD_DUPLICATE_RECORD (id or hash exists), RD_UNAVAILABLE (database busy),
 * RD_INTERNAL. */
rd_code store_key_insert(store *s, const char *key_id,
                         const unsigned char hash[STORE_KEY_HASH_BYTES], const char *org,
                         const char *role, const char *caps, const char *client_id, rd_err *err);

/* Marks key_id revoked (now). Revoking twice keeps the first time.
 * Errors: RD_NOT_FOUND (unknown id), RD_UNAVAILABLE, RD_INTERNAL. */
rd_code store_key_revoke(store *s, const char *key_id, rd_err *err);

/* Records token id jti (1..STORE_JTI_MAX bytes) as revoked. Idempotent.
 * Errors: RD_VALIDATION_FAILED (field jti), RD_UNAVAILABLE, RD_INTERNAL. */
rd_code store_token_revoke(store *s, const char *jti, rd_err *err);

/* Finds the key whose stored hash is hash (unique index), revoked or not:
 * the caller decides (out->revoked_at_us). The hash bytes are compared again
 * in constant time after the lookup. Errors: RD_NOT_FOUND, RD_UNAVAILABLE,
 * RD_INTERNAL. *out is the caller's (store_api_key_clear) on RD_OK. */
rd_code store_key_lookup(store_conn *c, const unsigned char hash[STORE_KEY_HASH_BYTES],
                         store_api_key *out, rd_err *err);

/* The keys of org (every key when org is NULL), oldest first, in a malloc'd
 * array of *n entries; release with store_api_keys_free. */
rd_code store_key_list(store_conn *c, const char *org, store_api_key **out, size_t *n, rd_err *err);
void store_api_keys_free(store_api_key *keys, size_t n);

/* 1 when token id jti is revoked or sub names a revoked key, 0 when neither,
 * -1 when the store cannot tell (callers fail closed). sub may be NULL. */
int store_is_revoked(store_conn *c, const char *jti, const char *sub);

/* The credential generation: a counter that every committed change to
 * _rd_api_keys (update, delete) or _rd_revoked_tokens (insert, delete)
 * raises in its own transaction (triggers made with the layout), whichever
 * process or tool makes it. A cache of verified credentials stays valid
 * while the generation it was filled at is current. One indexed read.
 * Errors: RD_UNAVAILABLE, RD_INTERNAL. */
rd_code store_auth_gen(store_conn *c, int64_t *gen, rd_err *err);

/* ---- change feed (store/changes.c) ----------------------------------------
 * Reads over _rd_sync_log for WatchChanges (docs/internals/store.md, "Change
 * feed"). Sync ids are global and gap-free; one organisation's rows
 * interleave with the others'. Every row keeps the values its change wrote
 * (column data); the log is never pruned, so retention is unbounded. */

#define STORE_CHANGES_MAX_LIMIT 1024

/* One committed change of one record. */
typedef struct store_change {
    int64_t sync_id;
    char server_tx_id[40];
    char model[64];
    char id[129];
    store_op op; /* STORE_OP_CREATE, _UPDATE, _REPLACE or _DELETE */
    char group[129];
    char actor[129];
    int64_t committed_at_us;
    json_t *fields; /* array of field names (owned) */
    /* object (owned): the values of fields as this change wrote them (null =
     * cleared); empty for DELETE and for rows logged before the data column
     * existed */
    json_t *data;
} store_change;

/* Frees ch[0..n) and the array. ch may be NULL. */
void store_changes_free(store_change *ch, size_t n);

typedef struct store_changes_query {
    const char *org;
    int64_t after;             /* cursor: rows with a sync id above it (>= 0) */
    int64_t upto;              /* and at most this one; 0 = the newest committed */
    const char *const *models; /* n_models names; 0 = every model */
    size_t n_models;
    const char *const *groups; /* n_groups names; 0 = every group */
    size_t n_groups;
    size_t limit; /* most rows returned, 1..STORE_CHANGES_MAX_LIMIT */
} store_changes_query;

/* Reads, in one snapshot and in sync-id order, the rows of q->org after
 * q->after that match the filters, at most q->limit of them, into a
 * malloc'd array *out of *n (store_changes_free; NULL when *n is 0).
 * *scanned_to is the new cursor: every row of the log up to it has been
 * examined (the last returned row when the page is full, else the newest
 * committed sync id within q->upto, never below q->after), so reading on
 * from it misses nothing and repeats nothing. Errors: RD_UNAVAILABLE,
 * RD_INTERNAL (also for a limit outside the range or a negative cursor). */
rd_code store_changes_read(store_conn *c, const store_changes_query *q, store_change **out,
                           size_t *n, int64_t *scanned_to, rd_err *err);

/* org's oldest sync id still in the log and its newest committed one, in one
 * snapshot (sync ids are per organisation; with no row left, oldest is
 * head + 1). A cursor below oldest - 1 has lost changes to retention. */
rd_code store_changes_bounds(store_conn *c, const char *org, int64_t *oldest, int64_t *head,
                             rd_err *err);

/* The change log's size for /metrics: *rows it holds, and for the first
 * max_orgs organisations by id, each one's oldest sync id still held and
 * newest committed one (fn per organisation; oldest = newest + 1 when none
 * is held). One snapshot. */
typedef void (*store_org_bounds_fn)(void *arg, const char *org, int64_t oldest, int64_t newest);
rd_code store_changes_stats(store_conn *c, int64_t *rows, size_t max_orgs, store_org_bounds_fn fn,
                            void *arg, rd_err *err);

/* Runs on the writer thread after each successful COMMIT that wrote sync
 * log rows, with a generation that grows with every such commit (sync ids
 * are per organisation: readers look at their own). Must not block (take a
 * short lock and signal at most). */
typedef void (*store_commit_fn)(void *arg, int64_t generation);

/* Sets (fn NULL: clears) the commit hook. Any thread; once it returns, an
 * earlier hook is no longer running and will not run again. */
void store_on_commit(store *s, store_commit_fn fn, void *arg);

/* ---- several processes on one database (PostgreSQL; store/pg_listen.c) ------
 * Commits of other recordd processes on the same database run the commit
 * hook above; their schema pushes are published by the store itself. What
 * else they did reaches the remote hook: a claim released (org, model,
 * id), or keys or revocations changed (names NULL). After the listener
 * (re)connects, anything may have changed: both kinds run with names NULL
 * (every claim, every credential). Runs on the listener thread with a
 * store lock held: must not block. fn NULL clears the hook; once
 * store_on_remote returns, an earlier hook is not running. */
typedef enum store_remote_kind {
    STORE_REMOTE_CLAIM_RELEASED = 1,
    STORE_REMOTE_CREDENTIALS = 2,
} store_remote_kind;
typedef void (*store_remote_fn)(void *arg, store_remote_kind kind, const char *org,
                                const char *model, const char *id);
void store_on_remote(store *s, store_remote_fn fn, void *arg);
/* Whether the listener is connected (false on SQLite, which has none). */
bool store_pg_listening(store *s);

/* Group-commit batch sizes since open, for /metrics: transactions by the
 * number of writes they carried, counts[i] for sizes up to
 * STORE_BATCH_BOUNDS[i] (the last slot: larger), and the totals. Also how
 * long each transaction's COMMIT took (writing the WAL and, with
 * synchronous=FULL, the fsync: the disk's latency as the writer sees it),
 * commit_counts[i] for up to STORE_COMMIT_BOUNDS_US[i] microseconds. Any
 * thread; the counters are read one by one (relaxed). */
enum { STORE_BATCH_SLOTS = 9, STORE_COMMIT_SLOTS = 11 };
extern const int STORE_BATCH_BOUNDS[STORE_BATCH_SLOTS - 1];
extern const int STORE_COMMIT_BOUNDS_US[STORE_COMMIT_SLOTS - 1];
typedef struct store_batch_stats {
    uint64_t counts[STORE_BATCH_SLOTS];
    uint64_t batches, writes;
    uint64_t commit_counts[STORE_COMMIT_SLOTS];
    uint64_t commit_us; /* sum */
    /* PostgreSQL: batches that locked their organisations' counter rows,
     * and how long they held them in all (lock to end of COMMIT) */
    uint64_t org_lock_batches, org_lock_us;
} store_batch_stats;
void store_batch_stats_get(store *s, store_batch_stats *out);

/* ---- online backup (store/backup.c) ---------------------------------------- */

/* Copies the database at db_path, which a server may be serving, into a new
 * file out_path: one consistent snapshot (SQLite's backup API inside one
 * read transaction; in WAL mode writers go on meanwhile), written to
 * out_path.tmp, checked with PRAGMA integrity_check, fsynced, then linked
 * as out_path.
 * Never overwrites: RD_VALIDATION_FAILED when out_path exists;
 * RD_UNAVAILABLE when the source cannot be read or the copy written;
 * RD_INTERNAL when the copy fails its check. *pages (may be NULL) gets the
 * page count copied. */
rd_code store_backup(const char *db_path, const char *out_path, int64_t *pages, rd_err *err);

#endif
