/* store: recordd's storage on SQLite (DESIGN.md §5). Owns every SQL
 * statement and connection: the schema registry (one schema per
 * organisation), a table per (organisation, model), the sync log, and a
 * single writer thread that group-commits queued writes.
 *
 * Threads: store_open/store_close from one thread. Writes go through
 * store_submit from any thread; their completion runs on the writer thread.
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
} store_type;

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

typedef struct store_options {
    const char *path;    /* database file; its directory must exist */
    bool sync_normal;    /* synchronous=NORMAL instead of FULL */
    int max_batch;       /* most writes per group commit; 0 = default (256) */
} store_options;

rd_code store_open(const store_options *opt, store **out, rd_err *err);
/* Stops accepting writes, lets the writer finish every queued write (their
 * completions run), checkpoints the WAL and closes. */
void store_close(store *s);

/* The current schema of org (never NULL: revision 0 when nothing was pushed).
 * The caller releases it. */
store_schema *store_schema_get(store *s, const char *org);

/* ---- reads --------------------------------------------------------------- */

/* A read connection; use one per thread. */
rd_code store_conn_open(store *s, store_conn **out, rd_err *err);
void store_conn_close(store_conn *c);

/* Reads one record in one snapshot together with the highest committed sync
 * id (*read_at). RD_NOT_FOUND for an unknown model or id. */
rd_code store_get(store_conn *c, const char *org, const char *model, const char *id,
                  store_record *out, int64_t *read_at, rd_err *err);

/* ---- writes -------------------------------------------------------------- */

typedef enum store_op {
    STORE_OP_CREATE = 1,
    STORE_OP_UPDATE = 2, /* data is an RFC 7396 merge patch */
    STORE_OP_REPLACE = 3,
    STORE_OP_DELETE = 4,
    STORE_OP_PUSH_SCHEMA = 5,
} store_op;

typedef struct store_write store_write;
typedef void (*store_done_fn)(store_write *w);

/* One write. The caller fills the input part, keeps everything it points to
 * alive until done runs, and must not touch the struct in between. done
 * runs exactly once, on the writer thread, after the commit is durable (or
 * the write failed); it must not block. */
struct store_write {
    /* input */
    store_op op;
    const char *org;   /* organisation id */
    const char *actor; /* principal id, recorded as created_by/updated_by */
    const char *model;
    const char *id;    /* NULL or "" on create: the store generates one */
    const char *group; /* create only; "" = default group */
    json_t *data;      /* create/replace: full data; update: merge patch */
    bool has_expected_version;
    int64_t expected_version;
    int64_t deadline_us; /* 0 = none; past it the write is not applied */
    store_schema *schema; /* PUSH_SCHEMA: the new definition (store takes a ref) */
    bool force;           /* PUSH_SCHEMA: allow destructive changes */
    store_done_fn done;
    void *ctx; /* for the caller */

    /* output, valid when done runs */
    rd_err err;             /* err.code == RD_OK on success */
    char server_tx_id[40];  /* unique per write */
    int64_t last_sync_id;   /* sync id of this write; 0 when nothing written */
    int ops;                /* rows written */
    store_record record;    /* after-image for create/update/replace;
                               before-image for delete (the caller clears it) */
    int64_t schema_revision; /* PUSH_SCHEMA: the new revision */
    json_t *changes;         /* PUSH_SCHEMA: array of strings (caller decrefs) */

    store_write *next_; /* internal */
};

/* Queues w for the writer. Never blocks on I/O. When the store is closing,
 * done runs at once with RD_UNAVAILABLE. */
void store_submit(store *s, store_write *w);
/* Submits and waits for completion (for tools and tests); w->done must be
 * NULL. Returns w->err.code. */
rd_code store_submit_wait(store *s, store_write *w);

#endif
