/* store/db.h: the database driver under the store (internal to store/).
 *
 * Every file of store/ talks to its database through this interface: a
 * connection (store_db), prepared statements (store_dbst) with positional
 * parameters, rows read column by column, and result codes. A driver is a
 * table of functions (store_driver) chosen when a connection is opened,
 * from the target: "postgres://..." or "postgresql://..." opens PostgreSQL
 * through libpq (store/pg_db.c), anything else (a path, or "sqlite:PATH")
 * SQLite (store/db_sqlite.c). The store's logic (the writer's group
 * commit, versions, sync ids, claims, idempotency) is written once above
 * it; docs/internals/store.md says what a driver must guarantee.
 *
 * SQL given to store_db_prepare is the common dialect: positional
 * parameters "?1", "?2", ... (or "?" numbered left to right), standard
 * upserts (INSERT ... ON CONFLICT), RETURNING, NULLS FIRST/LAST, savepoints.
 * What differs (column types, the layout, transaction modes) is asked of
 * store_db_dialect.
 *
 * The result codes, column types and their numbers are SQLite's (so the
 * SQLite driver passes them through); the PostgreSQL driver maps SQLSTATEs
 * onto them. */
#ifndef STORE_DB_H
#define STORE_DB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum {
    STORE_DB_OK = 0,
    STORE_DB_ERROR = 1,
    STORE_DB_INTERNAL = 2,
    STORE_DB_ABORT = 4, /* not run: a deferred statement before it failed */
    STORE_DB_BUSY = 5,  /* locked, serialization failure, deadlock: retry */
    STORE_DB_LOCKED = 6,
    STORE_DB_NOMEM = 7,
    STORE_DB_FULL = 13,
    STORE_DB_CANTOPEN = 14, /* the server cannot be reached (connection lost) */
    STORE_DB_CONSTRAINT = 19,
    STORE_DB_MISMATCH = 20,
    STORE_DB_ROW = 100,
    STORE_DB_DONE = 101,
    STORE_DB_CONSTRAINT_PRIMARYKEY = 19 | (6 << 8),
    STORE_DB_CONSTRAINT_UNIQUE = 19 | (8 << 8),
};

/* Column types (store_db_column_type). */
enum {
    STORE_DB_INTEGER = 1,
    STORE_DB_FLOAT = 2,
    STORE_DB_TEXT = 3,
    STORE_DB_BLOB = 4,
    STORE_DB_NULL = 5,
};

/* Whether bound bytes are copied (TRANSIENT) or must stay valid until the
 * statement is reset (STATIC). */
typedef enum store_db_life {
    STORE_DB_STATIC = 0,
    STORE_DB_TRANSIENT = 1,
} store_db_life;

typedef enum store_dialect {
    STORE_DIALECT_SQLITE = 1,
    STORE_DIALECT_POSTGRES = 2,
} store_dialect;

typedef struct store_db store_db;
typedef struct store_dbst store_dbst;
typedef struct store_driver store_driver;

/* Each driver's connection and statement structs begin with these. */
struct store_db {
    const store_driver *drv;
};
struct store_dbst {
    store_db *db;
};

struct store_driver {
    const char *name;
    store_dialect dialect;
    void (*close)(store_db *db);
    int (*exec)(store_db *db, const char *sql);
    int (*prepare)(store_db *db, const char *sql, store_dbst **out);
    void (*finalize)(store_dbst *st);
    void (*reset)(store_dbst *st); /* ready to run again; bindings cleared */
    bool (*busy)(store_dbst *st);  /* stepped and not yet reset */
    int (*bind_null)(store_dbst *st, int idx);
    int (*bind_int64)(store_dbst *st, int idx, int64_t v);
    int (*bind_double)(store_dbst *st, int idx, double v);
    int (*bind_text)(store_dbst *st, int idx, const char *s, int n, store_db_life life);
    int (*bind_blob)(store_dbst *st, int idx, const void *p, int n, store_db_life life);
    int (*step)(store_dbst *st);
    /* Runs st, a statement whose only answer is "done", possibly without
     * waiting for it (PostgreSQL, inside a transaction: sent in pipeline
     * mode, answered with the next statement that waits). Returns
     * STORE_DB_DONE when sent; a failure shows later: the statement that
     * waits returns STORE_DB_ABORT and deferred_failed is true until
     * ROLLBACK. */
    int (*defer)(store_dbst *st);
    bool (*deferred_failed)(store_db *db);
    int (*column_count)(store_dbst *st);
    const char *(*column_name)(store_dbst *st, int i);
    int (*column_type)(store_dbst *st, int i);
    int64_t (*column_int64)(store_dbst *st, int i);
    double (*column_double)(store_dbst *st, int i);
    const unsigned char *(*column_text)(store_dbst *st, int i);
    const void *(*column_blob)(store_dbst *st, int i);
    int (*column_bytes)(store_dbst *st, int i);
    int64_t (*changes)(store_db *db);
    const char *(*errmsg)(store_db *db);
    int (*errcode)(store_db *db);     /* the code of the last failure */
    bool (*autocommit)(store_db *db); /* no transaction open */
};

/* How a connection is used: the writer's (creates the layout, writes),
 * a reader's (snapshots), or a tool's short-lived one (keys, revocations). */
typedef enum store_db_role {
    STORE_DB_WRITER = 1,
    STORE_DB_READER = 2,
    STORE_DB_TOOL = 3,
} store_db_role;

typedef struct store_db_options {
    store_db_role role;
    bool sync_normal; /* SQLite: synchronous=NORMAL instead of FULL */
} store_db_options;

/* Opens target (see above). On failure returns a result code, *out NULL,
 * and msg (size bytes) says why without the target's password. */
int store_db_open(const char *target, const store_db_options *opt, store_db **out, char *msg,
                  size_t size);

/* The SQLite handle under db, NULL for another driver (the online backup,
 * tests that inspect the file). */
struct sqlite3;
struct sqlite3 *store_sqlite_handle(store_db *db);

/* 1 when target names a PostgreSQL database (postgres:// or postgresql://). */
int store_db_is_postgres(const char *target);

/* The drivers (db_sqlite.c, pg_db.c). */
int store_sqlite_open(const char *path, const store_db_options *opt, store_db **out, char *msg,
                      size_t size);
int store_pg_open(const char *uri, const store_db_options *opt, store_db **out, char *msg,
                  size_t size);

static inline store_dialect store_db_dialect(const store_db *db)
{
    return db->drv->dialect;
}
static inline void store_db_close(store_db *db)
{
    if (db != NULL)
        db->drv->close(db);
}
static inline int store_db_exec(store_db *db, const char *sql)
{
    return db->drv->exec(db, sql);
}
static inline int store_db_prepare(store_db *db, const char *sql, store_dbst **out)
{
    return db->drv->prepare(db, sql, out);
}
static inline void store_db_finalize(store_dbst *st)
{
    if (st != NULL)
        st->db->drv->finalize(st);
}
static inline void store_db_reset(store_dbst *st)
{
    st->db->drv->reset(st);
}
static inline bool store_db_busy(store_dbst *st)
{
    return st->db->drv->busy(st);
}
static inline int store_db_bind_null(store_dbst *st, int idx)
{
    return st->db->drv->bind_null(st, idx);
}
static inline int store_db_bind_int64(store_dbst *st, int idx, int64_t v)
{
    return st->db->drv->bind_int64(st, idx, v);
}
static inline int store_db_bind_double(store_dbst *st, int idx, double v)
{
    return st->db->drv->bind_double(st, idx, v);
}
static inline int store_db_bind_text(store_dbst *st, int idx, const char *s, int n,
                                     store_db_life life)
{
    return st->db->drv->bind_text(st, idx, s, n, life);
}
static inline int store_db_bind_blob(store_dbst *st, int idx, const void *p, int n,
                                     store_db_life life)
{
    return st->db->drv->bind_blob(st, idx, p, n, life);
}
static inline int store_db_step(store_dbst *st)
{
    return st->db->drv->step(st);
}
static inline int store_db_defer(store_dbst *st)
{
    return st->db->drv->defer(st);
}
static inline bool store_db_deferred_failed(store_db *db)
{
    return db->drv->deferred_failed(db);
}
static inline int store_db_column_count(store_dbst *st)
{
    return st->db->drv->column_count(st);
}
static inline const char *store_db_column_name(store_dbst *st, int i)
{
    return st->db->drv->column_name(st, i);
}
static inline int store_db_column_type(store_dbst *st, int i)
{
    return st->db->drv->column_type(st, i);
}
static inline int64_t store_db_column_int64(store_dbst *st, int i)
{
    return st->db->drv->column_int64(st, i);
}
static inline double store_db_column_double(store_dbst *st, int i)
{
    return st->db->drv->column_double(st, i);
}
static inline const unsigned char *store_db_column_text(store_dbst *st, int i)
{
    return st->db->drv->column_text(st, i);
}
static inline const void *store_db_column_blob(store_dbst *st, int i)
{
    return st->db->drv->column_blob(st, i);
}
static inline int store_db_column_bytes(store_dbst *st, int i)
{
    return st->db->drv->column_bytes(st, i);
}
static inline int64_t store_db_changes(store_db *db)
{
    return db->drv->changes(db);
}
static inline const char *store_db_errmsg(store_db *db)
{
    return db->drv->errmsg(db);
}
static inline int store_db_errcode(store_db *db)
{
    return db->drv->errcode(db);
}
static inline bool store_db_autocommit(store_db *db)
{
    return db->drv->autocommit(db);
}
/* A short generic text for a result code. */
const char *store_db_errstr(int rc);

#endif
