/* db_sqlite.c: the SQLite driver under the store (store/db.h). A thin pass
 * through: result codes, column types and placeholders are SQLite's own.
 * Opening sets what every connection shares (extended result codes, the
 * busy timeout) and, for the writer, the journal and durability settings. */
#include <fcntl.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "store/db.h"
#include "store/store_int.h"

_Static_assert(STORE_DB_ROW == SQLITE_ROW && STORE_DB_DONE == SQLITE_DONE &&
                   STORE_DB_BUSY == SQLITE_BUSY && STORE_DB_FULL == SQLITE_FULL &&
                   STORE_DB_CONSTRAINT_UNIQUE == SQLITE_CONSTRAINT_UNIQUE &&
                   STORE_DB_CONSTRAINT_PRIMARYKEY == SQLITE_CONSTRAINT_PRIMARYKEY &&
                   STORE_DB_MISMATCH == SQLITE_MISMATCH && STORE_DB_NOMEM == SQLITE_NOMEM &&
                   STORE_DB_ABORT == SQLITE_ABORT && STORE_DB_CANTOPEN == SQLITE_CANTOPEN &&
                   STORE_DB_INTEGER == SQLITE_INTEGER && STORE_DB_FLOAT == SQLITE_FLOAT &&
                   STORE_DB_TEXT == SQLITE_TEXT && STORE_DB_BLOB == SQLITE_BLOB &&
                   STORE_DB_NULL == SQLITE_NULL,
               "store/db.h's codes are SQLite's");

typedef struct sq_db {
    store_db base;
    sqlite3 *db;
} sq_db;

typedef struct sq_st {
    store_dbst base;
    sqlite3_stmt *st;
} sq_st;

static sqlite3 *H(store_db *db)
{
    return ((sq_db *)db)->db;
}

static sqlite3_stmt *S(store_dbst *st)
{
    return ((sq_st *)st)->st;
}

static sqlite3_destructor_type life(store_db_life l)
{
    return l == STORE_DB_TRANSIENT ? SQLITE_TRANSIENT : SQLITE_STATIC;
}

static void sq_close(store_db *db)
{
    sqlite3_close(H(db));
    free(db);
}

static int sq_exec(store_db *db, const char *sql)
{
    return sqlite3_exec(H(db), sql, NULL, NULL, NULL);
}

static int sq_prepare(store_db *db, const char *sql, store_dbst **out)
{
    sq_st *st = calloc(1, sizeof *st);
    *out = NULL;
    if (st == NULL)
        return SQLITE_NOMEM;
    int rc = sqlite3_prepare_v3(H(db), sql, -1, SQLITE_PREPARE_PERSISTENT, &st->st, NULL);
    if (rc != SQLITE_OK) {
        sqlite3_finalize(st->st);
        free(st);
        return rc;
    }
    st->base.db = db;
    *out = &st->base;
    return SQLITE_OK;
}

static void sq_finalize(store_dbst *st)
{
    sqlite3_finalize(S(st));
    free(st);
}

static void sq_reset(store_dbst *st)
{
    sqlite3_reset(S(st));
    sqlite3_clear_bindings(S(st));
}

static bool sq_busy(store_dbst *st)
{
    return sqlite3_stmt_busy(S(st)) != 0;
}

static int sq_bind_null(store_dbst *st, int i)
{
    return sqlite3_bind_null(S(st), i);
}

static int sq_bind_int64(store_dbst *st, int i, int64_t v)
{
    return sqlite3_bind_int64(S(st), i, v);
}

static int sq_bind_double(store_dbst *st, int i, double v)
{
    return sqlite3_bind_double(S(st), i, v);
}

static int sq_bind_text(store_dbst *st, int i, const char *s, int n, store_db_life l)
{
    return sqlite3_bind_text(S(st), i, s, n, life(l));
}

static int sq_bind_blob(store_dbst *st, int i, const void *p, int n, store_db_life l)
{
    return sqlite3_bind_blob(S(st), i, p, n, life(l));
}

static int sq_step(store_dbst *st)
{
    return sqlite3_step(S(st));
}

static bool sq_deferred_failed(store_db *db)
{
    (void)db;
    return false; /* SQLite runs every statement at once */
}

static int sq_column_count(store_dbst *st)
{
    return sqlite3_column_count(S(st));
}

static const char *sq_column_name(store_dbst *st, int i)
{
    return sqlite3_column_name(S(st), i);
}

static int sq_column_type(store_dbst *st, int i)
{
    return sqlite3_column_type(S(st), i);
}

static int64_t sq_column_int64(store_dbst *st, int i)
{
    return sqlite3_column_int64(S(st), i);
}

static double sq_column_double(store_dbst *st, int i)
{
    return sqlite3_column_double(S(st), i);
}

static const unsigned char *sq_column_text(store_dbst *st, int i)
{
    return sqlite3_column_text(S(st), i);
}

static const void *sq_column_blob(store_dbst *st, int i)
{
    return sqlite3_column_blob(S(st), i);
}

static int sq_column_bytes(store_dbst *st, int i)
{
    return sqlite3_column_bytes(S(st), i);
}

static int64_t sq_changes(store_db *db)
{
    return sqlite3_changes64(H(db));
}

static const char *sq_errmsg(store_db *db)
{
    return sqlite3_errmsg(H(db));
}

static int sq_errcode(store_db *db)
{
    return sqlite3_extended_errcode(H(db));
}

static bool sq_autocommit(store_db *db)
{
    return sqlite3_get_autocommit(H(db)) != 0;
}

static const store_driver sqlite_driver = {
    .name = "sqlite",
    .dialect = STORE_DIALECT_SQLITE,
    .close = sq_close,
    .exec = sq_exec,
    .prepare = sq_prepare,
    .finalize = sq_finalize,
    .reset = sq_reset,
    .busy = sq_busy,
    .bind_null = sq_bind_null,
    .bind_int64 = sq_bind_int64,
    .bind_double = sq_bind_double,
    .bind_text = sq_bind_text,
    .bind_blob = sq_bind_blob,
    .step = sq_step,
    .defer = sq_step,
    .deferred_failed = sq_deferred_failed,
    .column_count = sq_column_count,
    .column_name = sq_column_name,
    .column_type = sq_column_type,
    .column_int64 = sq_column_int64,
    .column_double = sq_column_double,
    .column_text = sq_column_text,
    .column_blob = sq_column_blob,
    .column_bytes = sq_column_bytes,
    .changes = sq_changes,
    .errmsg = sq_errmsg,
    .errcode = sq_errcode,
    .autocommit = sq_autocommit,
};

void store_create_private(const char *path)
{
    if (path == NULL || path[0] == '\0' || path[0] == ':' || strncmp(path, "file:", 5) == 0)
        return;
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd >= 0)
        close(fd);
}

/* The writer's settings: WAL, the durability asked for, savepoint journals
 * in memory (a bulk nests a savepoint per operation, and journalling each
 * page it touches to a temporary file made pwrite the largest cost of a
 * BulkMutate), and a checkpoint every STORE_WAL_CHECKPOINT_PAGES WAL frames
 * rather than SQLite's 1000: a checkpoint's cost (copy each distinct page,
 * fsync the database) hardly grows with the WAL's length, and it stalls the
 * writer (docs/PERFORMANCE.md). */
static int writer_setup(sqlite3 *db, bool sync_normal)
{
    int rc = sqlite3_exec(db, "PRAGMA journal_mode = WAL", NULL, NULL, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_exec(db,
                          sync_normal ? "PRAGMA synchronous = NORMAL" : "PRAGMA synchronous = FULL",
                          NULL, NULL, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_exec(db, "PRAGMA foreign_keys = OFF", NULL, NULL, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_exec(db, "PRAGMA temp_store = MEMORY", NULL, NULL, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_wal_autocheckpoint(db, STORE_WAL_CHECKPOINT_PAGES);
    return rc;
}

/* Readers open the file read-only; the writer and tools read-write, and a
 * database the writer creates is created 0600 (its -wal and -shm files
 * take the database file's mode). */
int store_sqlite_open(const char *path, const store_db_options *opt, store_db **out, char *msg,
                      size_t size)
{
    int flags = SQLITE_OPEN_NOMUTEX;
    *out = NULL;
    if (opt->role == STORE_DB_READER) {
        flags |= SQLITE_OPEN_READONLY;
    } else if (opt->role == STORE_DB_WRITER) {
        flags |= SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE;
        store_create_private(path);
    } else {
        flags |= SQLITE_OPEN_READWRITE;
    }
    sq_db *db = calloc(1, sizeof *db);
    if (db == NULL) {
        snprintf(msg, size, "out of memory");
        return SQLITE_NOMEM;
    }
    db->base.drv = &sqlite_driver;
    int rc = sqlite3_open_v2(path, &db->db, flags, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_extended_result_codes(db->db, 1);
        rc = sqlite3_busy_timeout(db->db, STORE_BUSY_TIMEOUT_MS);
    }
    if (rc == SQLITE_OK && opt->role == STORE_DB_WRITER)
        rc = writer_setup(db->db, opt->sync_normal);
    if (rc != SQLITE_OK) {
        snprintf(msg, size, "%s", db->db ? sqlite3_errmsg(db->db) : sqlite3_errstr(rc));
        sqlite3_close(db->db);
        free(db);
        return rc;
    }
    *out = &db->base;
    return SQLITE_OK;
}

const char *store_db_errstr(int rc)
{
    if (rc == STORE_DB_CANTOPEN)
        return "the database cannot be reached";
    return sqlite3_errstr(rc);
}

/* The SQLite handle under db (backup, the writer's checkpoint). */
sqlite3 *store_sqlite_handle(store_db *db)
{
    return db->drv == &sqlite_driver ? H(db) : NULL;
}
