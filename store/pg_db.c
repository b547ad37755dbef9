/* pg_db.c: the PostgreSQL driver under the store (store/db.h), on libpq.
 *
 * The store's SQL and what it expects of results are SQLite's; this driver
 * makes PostgreSQL behave the same where the store depends on it:
 *  - placeholders "?N" and "?" become "$N" (outside quotes and comments);
 *  - statements are prepared on the server once per session, and prepared
 *    again transparently after a reconnection (each statement remembers
 *    the session, the "epoch", it was prepared in);
 *  - a reader's BEGIN takes one snapshot for the whole transaction
 *    (REPEATABLE READ), as an SQLite read transaction does, and the
 *    writer's BEGIN IMMEDIATE becomes a plain BEGIN;
 *  - SQLSTATEs map onto SQLite's result codes, and a unique violation's
 *    message is rewritten as SQLite's "UNIQUE constraint failed: t.a, t.b";
 *  - results come back as text and are read per column type (bool as 1/0,
 *    bytea decoded).
 * PostgreSQL refuses to run a prepared statement whose result columns a
 * schema change altered (SQLite prepares it again): statements prepared
 * before DDL ran through any connection of the process are prepared anew,
 * and one a schema change elsewhere made stale is retried outside a
 * transaction, or reported busy (retry the transaction) inside one.
 * A lost connection is re-established by the next command, only when the
 * caller has no transaction open, with backoff between failed attempts
 * (from 100 ms to 1 s; a command in between fails at once); one the server
 * closed while it sat idle is noticed before a command is sent to it
 * (read_idle). Inside a transaction, every command fails with
 * STORE_DB_CANTOPEN until the caller ends it: ROLLBACK then succeeds
 * (nothing is open any more), COMMIT fails but ends it too. Statements the
 * writer does not need an answer from at once are deferred in pipeline
 * mode ("deferred statements" below). */
#include <ctype.h>
#include <inttypes.h>
#include <math.h>
#include <poll.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <libpq-fe.h>

#include "common/rd.h"
#include "store/db.h"
#include "store/pg_int.h"

/* Type OIDs (catalog/pg_type_d.h is not part of libpq's headers). */
enum {
    PG_BOOLOID = 16,
    PG_BYTEAOID = 17,
    PG_INT8OID = 20,
    PG_INT2OID = 21,
    PG_INT4OID = 23,
    PG_TEXTOID = 25,
    PG_OIDOID = 26,
    PG_FLOAT4OID = 700,
    PG_FLOAT8OID = 701,
    PG_NUMERICOID = 1700,
};

/* SQLite's largest parameter number (the common dialect runs on both). */
enum { PG_MAX_PARAMS = 32766 };

/* Bumped by DDL and by the end of a transaction that ran some: statements
 * prepared at an older generation are prepared again before they run. */
static atomic_uint schema_gen;

/* Transaction control, which exec and step treat alike (see run_simple). */
typedef enum pg_kind {
    PG_PLAIN,
    PG_BEGIN,
    PG_COMMIT,
    PG_ROLLBACK,
} pg_kind;

typedef struct pg_db {
    store_db base;
    PGconn *conn;
    store_db_role role;
    bool txn;           /* a transaction is open, as the caller sees it */
    bool ddl;           /* ...and it changed the schema */
    unsigned epoch;     /* bumped by each reconnection: prepared statements are gone */
    unsigned next_name; /* statements are named s1, s2, ... */
    int64_t changes;
    int errcode;
    char errmsg[1024];
    unsigned *dead; /* statements to DEALLOCATE before the next command */
    size_t ndead, capdead;
    /* deferred statements (pg_defer): sent in pipeline mode, their results
     * read by the next statement that waits */
    bool pipe;
    int npending;        /* results owed: deferred prepares and statements */
    struct pg_st **owed; /* per result owed: the statement a prepare is for, or NULL */
    int cap_owed;
    bool deferred_failed; /* one failed: the transaction is aborted */
    bool broken;          /* a pipeline broke off: reset before the next command */
    int64_t retry_at_us;  /* after a failed reconnection: no attempt before */
    int64_t backoff_us;   /* the wait after the last failed attempt */
} pg_db;

/* Reconnection backoff: from 100 ms, doubling up to 1 s, so a call fails
 * at once (CANTOPEN) while the server is away and one is served within
 * about a second of its return. */
#define PG_BACKOFF_MIN_US 100000
#define PG_BACKOFF_MAX_US 1000000

typedef struct pg_param {
    char *owned;  /* a copy the statement frees */
    char num[32]; /* a number's text */
} pg_param;

typedef struct pg_blob {
    unsigned char *p; /* a bytea cell decoded, NUL-terminated */
    size_t n;
} pg_blob;

typedef struct pg_st {
    store_dbst base;
    pg_kind kind;
    char *sql; /* in PostgreSQL's dialect */
    unsigned id;
    char name[16];
    unsigned epoch; /* the session it was prepared in; 0: not yet */
    unsigned gen;   /* schema_gen when it was prepared */
    int nparams;
    Oid *types; /* 0 (inferred by the server), text for numbers the SQL skips */
    const char **vals;
    int *lens;
    int *fmts;
    pg_param *params;
    PGresult *res;
    int row;
    bool stepped, done;
    pg_blob *blobs; /* per column, for the current row */
} pg_st;

static pg_db *pgdb(store_db *db)
{
    return (pg_db *)db;
}

static pg_st *pgst(store_dbst *st)
{
    return (pg_st *)st;
}

/* Lost, or left unusable by a pipeline that broke off (db->broken): the
 * next command outside a transaction reconnects. */
static bool conn_bad(pg_db *db)
{
    return db->broken || PQstatus(db->conn) != CONNECTION_OK;
}

/* ---- errors ---------------------------------------------------------------- */

__attribute__((format(printf, 3, 4))) static int fail(pg_db *db, int rc, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(db->errmsg, sizeof db->errmsg, fmt, ap);
    va_end(ap);
    db->errcode = rc;
    return rc;
}

/* libpq's messages span lines and end with one: out gets them on one,
 * each run of white space made one space. */
static void one_line(char *out, size_t size, const char *msg)
{
    size_t n = 0;
    for (const char *p = msg != NULL ? msg : ""; *p != '\0' && n + 1 < size; p++) {
        bool space = isspace((unsigned char)*p);
        if (!space || (n > 0 && out[n - 1] != ' '))
            out[n++] = space ? ' ' : *p;
    }
    while (n > 0 && out[n - 1] == ' ')
        n--;
    if (size > 0)
        out[n] = '\0';
}

static int connection_lost(pg_db *db)
{
    char why[512];
    one_line(why, sizeof why, PQerrorMessage(db->conn));
    return fail(db, STORE_DB_CANTOPEN, "the connection to the database was lost: %s", why);
}

static bool ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

/* Appends "table.col" for each column of a unique violation's DETAIL,
 * "Key (a, \"B\")=(1, x) already exists.", to out; only the names, never
 * the values. False when DETAIL has no such list (the user may not see the
 * key's columns). */
static bool key_columns(const char *detail, const char *table, char *out, size_t size)
{
    const char *p = detail != NULL ? strchr(detail, '(') : NULL;
    const char *end = p != NULL ? strstr(p, ")=(") : NULL;
    size_t n = 0;
    if (end == NULL)
        return false;
    out[0] = '\0';
    for (p++; p < end && n + 1 < size;) {
        while (*p == ' ')
            p++;
        /* an item ends at a comma outside parentheses */
        const char *stop = p;
        for (int depth = 0; stop < end && (depth > 0 || *stop != ','); stop++)
            depth += *stop == '(' ? 1 : *stop == ')' ? -1 : 0;
        const char *col = p;
        size_t len = (size_t)(stop - p);
        /* a text column's key is its hash: _rd_key(col) or _rd_key((col)::text) */
        if (len > 9 && strncmp(col, "_rd_key(", 8) == 0 && col[len - 1] == ')') {
            col += 8;
            len -= 9;
            if (len > 6 && strncmp(col + len - 6, "::text", 6) == 0)
                len -= 6;
            if (len > 2 && col[0] == '(' && col[len - 1] == ')') {
                col++;
                len -= 2;
            }
        }
        if (len >= 2 && col[0] == '"' && col[len - 1] == '"') {
            col++;
            len -= 2;
        }
        n += (size_t)snprintf(out + n, size - n, "%s%s.%.*s", n > 0 ? ", " : "", table, (int)len,
                              col);
        p = stop < end ? stop + 1 : end;
    }
    return n > 0 && n < size;
}

static int unique_violation(pg_db *db, const PGresult *res)
{
    const char *cons = PQresultErrorField(res, PG_DIAG_CONSTRAINT_NAME);
    const char *table = PQresultErrorField(res, PG_DIAG_TABLE_NAME);
    const char *detail = PQresultErrorField(res, PG_DIAG_MESSAGE_DETAIL);
    int rc = cons != NULL && ends_with(cons, "_pkey") ? STORE_DB_CONSTRAINT_PRIMARYKEY
                                                      : STORE_DB_CONSTRAINT_UNIQUE;
    char cols[512];
    if (table != NULL && key_columns(detail, table, cols, sizeof cols))
        return fail(db, rc, "UNIQUE constraint failed: %s", cols);
    /* SQLite's words for an index whose columns it cannot name */
    return fail(db, rc, "UNIQUE constraint failed: index '%s'", cons != NULL ? cons : "?");
}

static const struct {
    const char *state;
    int rc;
} pg_states[] = {
    {"40001", STORE_DB_BUSY},     /* serialization_failure */
    {"40P01", STORE_DB_BUSY},     /* deadlock_detected */
    {"55P03", STORE_DB_BUSY},     /* lock_not_available */
    {"55006", STORE_DB_BUSY},     /* object_in_use */
    {"53100", STORE_DB_FULL},     /* disk_full */
    {"53200", STORE_DB_NOMEM},    /* out_of_memory */
    {"57P01", STORE_DB_CANTOPEN}, /* admin_shutdown */
    {"57P02", STORE_DB_CANTOPEN}, /* crash_shutdown */
    {"57P03", STORE_DB_CANTOPEN}, /* cannot_connect_now */
};

static int state_code(const char *state)
{
    if (strncmp(state, "23", 2) == 0)
        return STORE_DB_CONSTRAINT;
    if (strncmp(state, "08", 2) == 0)
        return STORE_DB_CANTOPEN;
    for (size_t i = 0; i < sizeof pg_states / sizeof pg_states[0]; i++)
        if (strcmp(state, pg_states[i].state) == 0)
            return pg_states[i].rc;
    return STORE_DB_ERROR;
}

/* SQLite counts the rows of the last INSERT, UPDATE or DELETE only. */
static void note_changes(pg_db *db, PGresult *res)
{
    static const char *const tags[] = {"INSERT ", "UPDATE ", "DELETE ", "MERGE "};
    const char *tag = PQcmdStatus(res);
    for (size_t i = 0; tag != NULL && i < sizeof tags / sizeof tags[0]; i++)
        if (strncmp(tag, tags[i], strlen(tags[i])) == 0)
            db->changes = strtoll(PQcmdTuples(res), NULL, 10);
}

/* The result code of a command's result (NULL: libpq could not send it). */
static int result_code(pg_db *db, PGresult *res)
{
    ExecStatusType s = res != NULL ? PQresultStatus(res) : PGRES_FATAL_ERROR;
    if (s == PGRES_COMMAND_OK || s == PGRES_TUPLES_OK || s == PGRES_EMPTY_QUERY) {
        note_changes(db, res);
        return STORE_DB_OK;
    }
    if (res == NULL || conn_bad(db))
        return connection_lost(db);
    const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    const char *msg = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
    if (state != NULL && strcmp(state, "23505") == 0)
        return unique_violation(db, res);
    /* the store tells a model dropped meanwhile by SQLite's words */
    if (state != NULL && strcmp(state, "42P01") == 0 && msg != NULL)
        return fail(db, STORE_DB_ERROR, "no such table: %s", msg);
    if (msg == NULL) { /* libpq's own, or a result it does not expect (COPY) */
        char why[512];
        one_line(why, sizeof why,
                 s == PGRES_FATAL_ERROR ? PQerrorMessage(db->conn) : PQresStatus(s));
        return fail(db, STORE_DB_ERROR, "%s", why);
    }
    return fail(db, state != NULL ? state_code(state) : STORE_DB_ERROR, "%s", msg);
}

/* ---- running commands -------------------------------------------------------- */

/* The caller's transaction state. The end of a transaction that changed
 * the schema makes every connection's statements prepare again. */
static void set_txn(pg_db *db, bool open)
{
    db->txn = open;
    if (!open && db->ddl) {
        db->ddl = false;
        atomic_fetch_add(&schema_gen, 1);
    }
}

/* A server statement to DEALLOCATE before the next command: not now, as
 * in an aborted transaction it would fail (and with it the caller's
 * ROLLBACK TO). The list empties at every command outside one. */
static void queue_dead(pg_db *db, unsigned id)
{
    if (db->ndead == db->capdead) {
        size_t cap = db->capdead ? db->capdead * 2 : 16;
        unsigned *d = realloc(db->dead, cap * sizeof *d);
        if (d == NULL)
            return; /* one statement left until the session ends */
        db->dead = d;
        db->capdead = cap;
    }
    db->dead[db->ndead++] = id;
}

static void flush_dead(pg_db *db)
{
    while (db->ndead > 0) {
        char sql[32];
        snprintf(sql, sizeof sql, "DEALLOCATE s%u", db->dead[--db->ndead]);
        PQclear(PQexec(db->conn, sql));
    }
}

/* A connection that sat idle may have been closed by the server meanwhile
 * (a restart, a failover), which libpq learns only when it next reads. So
 * before a command on an idle connection, what the server sent is read
 * without waiting: typically a message saying why it ends the session
 * (libpq hands it to the notice processor) and then the end of the
 * stream, which marks the connection lost; the command then goes to a new
 * session instead of failing on the dead one. One poll() when nothing
 * came. */
static void read_idle(pg_db *db)
{
    struct pollfd p = {.fd = PQsocket(db->conn), .events = POLLIN};
    for (int i = 0; i < 4 && poll(&p, 1, 0) == 1; i++) {
        if (PQconsumeInput(db->conn) != 1)
            return;               /* the end of the stream: CONNECTION_BAD */
        (void)PQisBusy(db->conn); /* parses it: a notice, a parameter status */
    }
}

/* Before each command: the lost-transaction rule, else one attempt to
 * reconnect, and the deferred DEALLOCATEs. Returns STORE_DB_OK to go on,
 * STORE_DB_DONE when the command is answered already, or an error. */
static int before(pg_db *db, pg_kind kind)
{
    if (!db->txn && !db->pipe && !conn_bad(db) && PQtransactionStatus(db->conn) == PQTRANS_IDLE)
        read_idle(db);
    if (!conn_bad(db)) {
        /* not inside a transaction: a DEALLOCATE that fails would abort it */
        if (!db->pipe && PQtransactionStatus(db->conn) == PQTRANS_IDLE)
            flush_dead(db);
        return STORE_DB_OK;
    }
    if (kind == PG_ROLLBACK) { /* what was open went with the session */
        set_txn(db, false);
        return STORE_DB_DONE;
    }
    if (db->txn) {
        if (kind != PG_COMMIT)
            return fail(db, STORE_DB_CANTOPEN,
                        "the connection to the database was lost inside a transaction; roll it "
                        "back");
        set_txn(db, false);
        return fail(db, STORE_DB_CANTOPEN,
                    "the connection to the database was lost: the transaction was rolled back");
    }
    int64_t now = rd_now_us();
    if (now < db->retry_at_us)
        return fail(db, STORE_DB_CANTOPEN, "the database is unreachable; reconnecting");
    db->broken = false;
    PQreset(db->conn);
    if (conn_bad(db)) {
        char why[512];
        one_line(why, sizeof why, PQerrorMessage(db->conn));
        db->backoff_us = db->backoff_us == 0 ? PG_BACKOFF_MIN_US : 2 * db->backoff_us;
        if (db->backoff_us > PG_BACKOFF_MAX_US)
            db->backoff_us = PG_BACKOFF_MAX_US;
        db->retry_at_us = rd_now_us() + db->backoff_us;
        return fail(db, STORE_DB_CANTOPEN, "cannot reconnect to the database: %s", why);
    }
    if (PQpipelineStatus(db->conn) != PQ_PIPELINE_OFF)
        PQexitPipelineMode(db->conn);
    db->backoff_us = db->retry_at_us = 0;
    db->pipe = db->deferred_failed = db->broken = false;
    db->npending = 0;
    db->epoch++;
    db->ndead = 0; /* the old session's statements went with it */
    return STORE_DB_OK;
}

/* After each command: the result's code, and whether the caller's
 * transaction is still open (on a lost connection: until it ends it). */
static int after(pg_db *db, pg_kind kind, PGresult *res)
{
    int rc = result_code(db, res);
    /* PostgreSQL answers the COMMIT of an aborted transaction "ROLLBACK" */
    if (rc == STORE_DB_OK && kind == PG_COMMIT && strcmp(PQcmdStatus(res), "ROLLBACK") == 0)
        rc = fail(db, STORE_DB_ERROR, "the transaction was rolled back: a statement in it failed");
    if (!conn_bad(db)) {
        PGTransactionStatusType t = PQtransactionStatus(db->conn);
        set_txn(db, t == PQTRANS_INTRANS || t == PQTRANS_INERROR);
    } else if (kind == PG_COMMIT || kind == PG_ROLLBACK) {
        set_txn(db, false);
        if (kind == PG_ROLLBACK)
            rc = STORE_DB_OK;
    }
    return rc;
}

static int pipe_flush(pg_db *db);
static int run_piped(pg_db *db, pg_st *st);

/* A statement without parameters (transaction control, exec's), through
 * the simple protocol. */
static int run_simple(pg_db *db, pg_kind kind, const char *sql)
{
    int rc = pipe_flush(db);
    if (rc != STORE_DB_OK && !(rc == STORE_DB_ABORT && kind == PG_ROLLBACK))
        return rc;
    if (kind == PG_ROLLBACK)
        db->deferred_failed = false;
    rc = before(db, kind);
    if (rc != STORE_DB_OK)
        return rc == STORE_DB_DONE ? STORE_DB_OK : rc;
    PGresult *res = PQexec(db->conn, sql);
    rc = after(db, kind, res);
    PQclear(res);
    return rc;
}

static pg_kind kind_of(const char *sql)
{
    if (strcasecmp(sql, "BEGIN") == 0 || strcasecmp(sql, "BEGIN IMMEDIATE") == 0)
        return PG_BEGIN;
    if (strcasecmp(sql, "COMMIT") == 0 || strcasecmp(sql, "END") == 0)
        return PG_COMMIT;
    if (strcasecmp(sql, "ROLLBACK") == 0)
        return PG_ROLLBACK;
    return PG_PLAIN;
}

/* SQLite's BEGIN IMMEDIATE (the writer's) is PostgreSQL's BEGIN; a
 * reader's BEGIN must see one snapshot throughout, as SQLite's does. */
static const char *begin_sql(const pg_db *db, const char *sql)
{
    if (strcasecmp(sql, "BEGIN") == 0 && db->role == STORE_DB_READER)
        return "BEGIN ISOLATION LEVEL REPEATABLE READ";
    return "BEGIN";
}

static bool is_ddl(const char *sql)
{
    static const char *const verbs[] = {"CREATE", "ALTER", "DROP"};
    sql += strspn(sql, " \t\r\n");
    for (size_t i = 0; i < sizeof verbs / sizeof verbs[0]; i++) {
        size_t n = strlen(verbs[i]);
        if (strncasecmp(sql, verbs[i], n) == 0 && !isalnum((unsigned char)sql[n]))
            return true;
    }
    return false;
}

static int pg_exec(store_db *base, const char *sql)
{
    pg_db *db = pgdb(base);
    pg_kind kind = kind_of(sql);
    int rc = run_simple(db, kind, kind == PG_BEGIN ? begin_sql(db, sql) : sql);
    if (is_ddl(sql)) {
        atomic_fetch_add(&schema_gen, 1); /* this connection's statements */
        if (db->txn)
            db->ddl = true; /* the others' when it commits (set_txn) */
    }
    return rc;
}

/* ---- statements ---------------------------------------------------------------- */

/* Translates SQLite's placeholders into PostgreSQL's: "?N" -> "$N", a bare
 * "?" -> "$k" numbered as SQLite does (one past the largest so far). Quoted
 * strings, quoted identifiers and comments are copied as they are. used
 * gets a bit per parameter number; *max the largest. */
static char *translate(const char *sql, unsigned char *used, int *max)
{
    char *out = malloc(strlen(sql) * 6 + 1); /* "?" -> "$32766" at most */
    size_t o = 0;
    char quote = 0;
    if (out == NULL)
        return NULL;
    *max = 0;
    for (const char *p = sql; *p != '\0';) {
        size_t n = 1;
        if (quote != 0) {
            quote = *p == quote ? 0 : quote;
        } else if (*p == '\'' || *p == '"') {
            quote = *p;
        } else if (p[0] == '-' && p[1] == '-') {
            n = strcspn(p, "\n");
        } else if (p[0] == '/' && p[1] == '*') {
            const char *e = strstr(p + 2, "*/");
            n = e != NULL ? (size_t)(e + 2 - p) : strlen(p);
        } else if (*p == '?') {
            n = strspn(p + 1, "0123456789"); /* "?N", or n = 0: a bare "?" */
            long idx = n > 0 ? strtol(p + 1, NULL, 10) : *max + 1;
            if (idx < 1 || idx > PG_MAX_PARAMS) {
                free(out);
                *max = -1;
                return NULL;
            }
            *max = idx > *max ? (int)idx : *max;
            used[idx / 8] |= (unsigned char)(1u << (idx % 8));
            o += (size_t)sprintf(out + o, "$%ld", idx);
            p += n + 1;
            continue;
        }
        memcpy(out + o, p, n);
        o += n;
        p += n;
    }
    out[o] = '\0';
    return out;
}

static void *calloc0(size_t n, size_t size)
{
    return n > 0 ? calloc(n, size) : NULL;
}

/* st->sql and the parameter arrays for sql. */
static int compile(pg_db *db, pg_st *st, const char *sql)
{
    unsigned char used[PG_MAX_PARAMS / 8 + 1] = {0};
    if (st->kind != PG_PLAIN) {
        st->sql = strdup(st->kind == PG_BEGIN ? begin_sql(db, sql) : sql);
        return st->sql != NULL ? STORE_DB_OK : fail(db, STORE_DB_NOMEM, "out of memory");
    }
    st->sql = translate(sql, used, &st->nparams);
    if (st->nparams < 0)
        return fail(db, STORE_DB_ERROR, "variable number must be between ?1 and ?%d",
                    PG_MAX_PARAMS);
    size_t n = (size_t)st->nparams;
    st->types = calloc0(n, sizeof *st->types);
    st->vals = calloc0(n, sizeof *st->vals);
    st->lens = calloc0(n, sizeof *st->lens);
    st->fmts = calloc0(n, sizeof *st->fmts);
    st->params = calloc0(n, sizeof *st->params);
    if (st->sql == NULL || (n > 0 && (st->types == NULL || st->vals == NULL || st->lens == NULL ||
                                      st->fmts == NULL || st->params == NULL)))
        return fail(db, STORE_DB_NOMEM, "out of memory");
    /* the server cannot infer the type of a parameter the SQL does not use */
    for (int i = 1; i <= st->nparams; i++)
        if ((used[i / 8] & (1u << (i % 8))) == 0)
            st->types[i - 1] = PG_TEXTOID;
    return STORE_DB_OK;
}

static int server_prepare(pg_db *db, pg_st *st)
{
    st->gen = atomic_load(&schema_gen);
    PGresult *res = PQprepare(db->conn, st->name, st->sql, st->nparams, st->types);
    int rc = after(db, PG_PLAIN, res);
    PQclear(res);
    if (rc == STORE_DB_OK)
        st->epoch = db->epoch;
    return rc;
}

static void clear_blobs(pg_st *st)
{
    for (int i = 0; st->blobs != NULL && i < PQnfields(st->res); i++) {
        free(st->blobs[i].p);
        st->blobs[i].p = NULL;
    }
}

static void clear_result(pg_st *st)
{
    clear_blobs(st);
    free(st->blobs);
    st->blobs = NULL;
    PQclear(st->res);
    st->res = NULL;
}

static void clear_params(pg_st *st)
{
    for (int i = 0; i < st->nparams; i++) {
        free(st->params[i].owned);
        st->params[i].owned = NULL;
        st->vals[i] = NULL;
        st->lens[i] = 0;
        st->fmts[i] = 0;
    }
}

static void free_st(pg_st *st)
{
    clear_result(st);
    if (st->params != NULL)
        clear_params(st);
    free(st->sql);
    free(st->types);
    free(st->vals);
    free(st->lens);
    free(st->fmts);
    free(st->params);
    free(st);
}

/* Statements are prepared at once, so that errors show at prepare as with
 * SQLite, unless the connection cannot take a command now (lost, or in an
 * aborted transaction): then the first step prepares it. */
static int pg_prepare(store_db *base, const char *sql, store_dbst **out)
{
    pg_db *db = pgdb(base);
    pg_st *st = calloc(1, sizeof *st);
    *out = NULL;
    if (st == NULL)
        return fail(db, STORE_DB_NOMEM, "out of memory");
    st->base.db = base;
    st->kind = kind_of(sql);
    st->id = ++db->next_name;
    snprintf(st->name, sizeof st->name, "s%u", st->id);
    int rc = compile(db, st, sql);
    if (rc == STORE_DB_OK && st->kind == PG_PLAIN && !conn_bad(db) && !db->pipe &&
        PQtransactionStatus(db->conn) != PQTRANS_INERROR)
        rc = server_prepare(db, st);
    if (rc != STORE_DB_OK) {
        free_st(st);
        return rc;
    }
    *out = &st->base;
    return STORE_DB_OK;
}

/* Gives st a new name, so that it is prepared again; the server drops the
 * old one before the next command. */
static void forget(pg_db *db, pg_st *st)
{
    if (st->epoch == db->epoch)
        queue_dead(db, st->id);
    st->epoch = 0;
    st->id = ++db->next_name;
    snprintf(st->name, sizeof st->name, "s%u", st->id);
}

static void pg_finalize(store_dbst *base)
{
    pg_st *st = pgst(base);
    pg_db *db = pgdb(base->db);
    for (int i = 0; i < db->npending; i++) /* its prepare may be owed */
        if (db->owed[i] == st)
            db->owed[i] = NULL;
    if (st->epoch == db->epoch)
        queue_dead(db, st->id);
    free_st(st);
}

static void pg_reset(store_dbst *base)
{
    pg_st *st = pgst(base);
    clear_result(st);
    clear_params(st);
    st->stepped = st->done = false;
}

static bool pg_busy(store_dbst *st)
{
    return pgst(st)->stepped;
}

/* ---- binding ------------------------------------------------------------------- */

/* Parameter idx (1-based) emptied for a new value; NULL when out of range. */
static pg_param *param_slot(pg_st *st, int idx)
{
    if (idx < 1 || idx > st->nparams) {
        fail(pgdb(st->base.db), STORE_DB_ERROR, "parameter index %d out of range (1..%d)", idx,
             st->nparams);
        return NULL;
    }
    int i = idx - 1;
    free(st->params[i].owned);
    st->params[i].owned = NULL;
    st->vals[i] = NULL;
    st->lens[i] = 0;
    st->fmts[i] = 0;
    return &st->params[i];
}

/* Text-format parameters are NUL-terminated strings: n bytes of s copied
 * unless they are the whole string and stay put. */
static int set_bytes(pg_st *st, int idx, const char *s, int n, store_db_life life, int fmt)
{
    pg_param *p = param_slot(st, idx);
    if (p == NULL)
        return STORE_DB_ERROR;
    if (s == NULL) /* SQLite binds NULL for a NULL pointer */
        return STORE_DB_OK;
    if (fmt == 0 && n < 0 && life == STORE_DB_STATIC) {
        st->vals[idx - 1] = s;
        return STORE_DB_OK;
    }
    if (n < 0)
        n = (int)strlen(s);
    if (fmt == 1 && life == STORE_DB_STATIC) {
        st->vals[idx - 1] = n > 0 ? s : "";
    } else {
        if ((p->owned = malloc((size_t)n + 1)) == NULL)
            return fail(pgdb(st->base.db), STORE_DB_NOMEM, "out of memory");
        memcpy(p->owned, s, (size_t)n);
        p->owned[n] = '\0';
        st->vals[idx - 1] = p->owned;
    }
    st->lens[idx - 1] = n;
    st->fmts[idx - 1] = fmt;
    return STORE_DB_OK;
}

static int pg_bind_null(store_dbst *st, int idx)
{
    return param_slot(pgst(st), idx) != NULL ? STORE_DB_OK : STORE_DB_ERROR;
}

static int pg_bind_int64(store_dbst *base, int idx, int64_t v)
{
    pg_st *st = pgst(base);
    pg_param *p = param_slot(st, idx);
    if (p == NULL)
        return STORE_DB_ERROR;
    snprintf(p->num, sizeof p->num, "%" PRId64, v);
    st->vals[idx - 1] = p->num;
    return STORE_DB_OK;
}

/* The shortest text that reads back as v (0.1 stays "0.1" should the
 * server take it as numeric), in PostgreSQL's spelling of NaN and inf. */
static void format_double(char *buf, size_t size, double v)
{
    if (isnan(v)) {
        snprintf(buf, size, "NaN");
        return;
    }
    if (isinf(v)) {
        snprintf(buf, size, v > 0 ? "Infinity" : "-Infinity");
        return;
    }
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(buf, size, "%.*g", prec, v);
        if (strtod(buf, NULL) == v)
            return;
    }
}

static int pg_bind_double(store_dbst *base, int idx, double v)
{
    pg_st *st = pgst(base);
    pg_param *p = param_slot(st, idx);
    if (p == NULL)
        return STORE_DB_ERROR;
    format_double(p->num, sizeof p->num, v);
    st->vals[idx - 1] = p->num;
    return STORE_DB_OK;
}

static int pg_bind_text(store_dbst *st, int idx, const char *s, int n, store_db_life life)
{
    return set_bytes(pgst(st), idx, s, n, life, 0);
}

/* Sent in binary: the server takes the bytes as they are for a bytea. */
static int pg_bind_blob(store_dbst *st, int idx, const void *p, int n, store_db_life life)
{
    if (n < 0)
        return fail(pgdb(st->db), STORE_DB_ERROR, "negative blob length");
    return set_bytes(pgst(st), idx, p, n, life, 1);
}

/* ---- stepping ------------------------------------------------------------------ */

/* PostgreSQL's refusal to run a plan whose result columns a schema change
 * altered. */
static bool stale_plan(const PGresult *res)
{
    const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    const char *msg = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
    return state != NULL && strcmp(state, "0A000") == 0 && msg != NULL &&
           strstr(msg, "cached plan") != NULL;
}

/* Keeps a row set in st->res for stepping, with room for decoded blobs. */
static int keep_rows(pg_db *db, pg_st *st, PGresult *res)
{
    st->blobs = calloc0((size_t)PQnfields(res), sizeof *st->blobs);
    if (PQnfields(res) > 0 && st->blobs == NULL) {
        PQclear(res);
        return fail(db, STORE_DB_NOMEM, "out of memory");
    }
    st->res = res;
    return STORE_DB_OK;
}

/* One run of a plain statement, prepared first in a new session or after
 * a schema change; a row set stays in st->res. */
static int run_prepared(pg_db *db, pg_st *st, bool *stale)
{
    int rc = STORE_DB_OK;
    *stale = false;
    if (st->epoch == db->epoch && st->gen != atomic_load(&schema_gen))
        forget(db, st);
    if (st->epoch != db->epoch && (rc = server_prepare(db, st)) != STORE_DB_OK)
        return rc;
    PGresult *res =
        PQexecPrepared(db->conn, st->name, st->nparams, st->vals, st->lens, st->fmts, 0);
    *stale = stale_plan(res);
    rc = after(db, PG_PLAIN, res);
    if (rc != STORE_DB_OK || PQresultStatus(res) != PGRES_TUPLES_OK) {
        PQclear(res);
        return rc;
    }
    return keep_rows(db, st, res);
}

/* A plan made stale by a schema change another process made is prepared
 * again and run once more when no transaction is open (nothing ran);
 * inside one, the transaction is aborted: busy, its retry will work. */
static int execute(pg_db *db, pg_st *st)
{
    int rc = before(db, PG_PLAIN);
    if (rc != STORE_DB_OK)
        return rc;
    if (db->pipe)
        return run_piped(db, st);
    bool in_txn = db->txn, stale;
    rc = run_prepared(db, st, &stale);
    if (!stale)
        return rc;
    forget(db, st);
    if (in_txn)
        return fail(db, STORE_DB_BUSY, "a table changed under a prepared statement; retry");
    return run_prepared(db, st, &stale);
}

/* ---- deferred statements ----------------------------------------------------------
 * The writer runs the statements whose only answer is "done" (savepoints,
 * its record writes and log rows) through pg_defer: each is sent at once in
 * libpq's pipeline mode and its result read when a statement that must
 * wait for its own answer runs, which joins the same pipeline; so a write
 * costs one round trip, not five. A deferred statement that failed leaves
 * the transaction unusable: the waiting statement returns STORE_DB_ABORT,
 * and deferred_failed() says so until ROLLBACK; the writer then runs its
 * batch again without deferring (writer.c). A lost connection is not such
 * a failure: it is CANTOPEN, as always. */

/* Notes one more result owed; st when it is st's preparation. */
static int owe(pg_db *db, pg_st *st)
{
    if (db->npending == db->cap_owed) {
        int cap = db->cap_owed ? 2 * db->cap_owed : 64;
        pg_st **o = realloc(db->owed, (size_t)cap * sizeof *o);
        if (o == NULL)
            return fail(db, STORE_DB_NOMEM, "out of memory");
        db->owed = o;
        db->cap_owed = cap;
    }
    db->owed[db->npending++] = st;
    return STORE_DB_OK;
}

static int pipe_enter(pg_db *db)
{
    if (db->pipe)
        return STORE_DB_OK;
    if (PQenterPipelineMode(db->conn) != 1)
        return fail(db, STORE_DB_ERROR, "cannot enter pipeline mode");
    db->pipe = true;
    db->npending = 0;
    return STORE_DB_OK;
}

/* Queues st's preparation when its session lacks it (its answer is owed
 * like a deferred statement's). */
static int pipe_prepare(pg_db *db, pg_st *st)
{
    if (st->epoch == db->epoch && st->gen != atomic_load(&schema_gen))
        forget(db, st);
    if (st->epoch == db->epoch)
        return STORE_DB_OK;
    st->gen = atomic_load(&schema_gen);
    if (PQsendPrepare(db->conn, st->name, st->sql, st->nparams, st->types) != 1)
        return connection_lost(db);
    st->epoch = db->epoch; /* taken back if the prepare does not run (pipe_collect) */
    return owe(db, st);
}

/* Sends a sync and reads every answer owed, in order: the deferred ones
 * (the first failure is noted), then, when mine is not NULL, the waiting
 * statement's own into *mine, then the sync's. Leaves pipeline mode. */
static int pipe_collect(pg_db *db, PGresult **mine)
{
    int rc = STORE_DB_OK;
    int owed = db->npending + (mine != NULL ? 1 : 0);
    if (PQpipelineSync(db->conn) != 1)
        rc = connection_lost(db);
    for (int i = 0; i < owed && rc == STORE_DB_OK; i++) {
        PGresult *r = PQgetResult(db->conn);
        if (r == NULL) {
            rc = connection_lost(db);
            break;
        }
        PQclear(PQgetResult(db->conn)); /* the NULL that ends each query's results */
        if (mine != NULL && i == owed - 1) {
            *mine = r;
            break;
        }
        /* a prepare that failed, or was skipped after a failure, made nothing */
        if (db->owed[i] != NULL && PQresultStatus(r) != PGRES_COMMAND_OK)
            db->owed[i]->epoch = 0;
        if (PQresultStatus(r) == PGRES_FATAL_ERROR && !db->deferred_failed) {
            int code = result_code(db, r);
            if (code == STORE_DB_CANTOPEN)
                rc = code;
            else
                db->deferred_failed = true;
        }
        PQclear(r);
    }
    for (int tries = 0; rc == STORE_DB_OK && tries < 4; tries++) {
        PGresult *r = PQgetResult(db->conn);
        if (r == NULL && conn_bad(db))
            rc = connection_lost(db);
        ExecStatusType t = r != NULL ? PQresultStatus(r) : PGRES_EMPTY_QUERY;
        PQclear(r);
        if (t == PGRES_PIPELINE_SYNC)
            break;
    }
    /* a pipeline that broke off (the server went away mid-answer, often
     * before libpq saw the socket close) leaves libpq in pipeline mode,
     * where every later command would fail: the connection is reset */
    if (rc == STORE_DB_OK && PQexitPipelineMode(db->conn) != 1)
        rc = fail(db, STORE_DB_CANTOPEN, "cannot leave pipeline mode");
    if (rc == STORE_DB_CANTOPEN || PQpipelineStatus(db->conn) != PQ_PIPELINE_OFF)
        db->broken = true;
    db->pipe = false;
    db->npending = 0;
    if (rc != STORE_DB_OK && mine != NULL) {
        PQclear(*mine);
        *mine = NULL;
    }
    return rc;
}

/* Before a statement that waits: the answers owed. STORE_DB_ABORT when a
 * deferred statement failed. */
static int pipe_flush(pg_db *db)
{
    if (!db->pipe)
        return STORE_DB_OK;
    int rc = pipe_collect(db, NULL);
    return rc == STORE_DB_OK && db->deferred_failed ? STORE_DB_ABORT : rc;
}

/* A plain statement that waits for its answer, sent in the pipeline after
 * the deferred ones: one round trip for all. */
static int run_piped(pg_db *db, pg_st *st)
{
    PGresult *res = NULL;
    int rc = pipe_prepare(db, st);
    if (rc == STORE_DB_OK &&
        PQsendQueryPrepared(db->conn, st->name, st->nparams, st->vals, st->lens, st->fmts, 0) != 1)
        rc = connection_lost(db);
    int crc = pipe_collect(db, rc == STORE_DB_OK ? &res : NULL);
    if (rc == STORE_DB_OK)
        rc = crc;
    if (rc == STORE_DB_OK && db->deferred_failed)
        rc = STORE_DB_ABORT;
    if (rc != STORE_DB_OK) {
        PQclear(res);
        db->errcode = rc;
        return rc;
    }
    if (stale_plan(res)) {
        PQclear(res);
        forget(db, st);
        return fail(db, STORE_DB_BUSY, "a table changed under a prepared statement; retry");
    }
    rc = after(db, PG_PLAIN, res);
    if (rc != STORE_DB_OK || PQresultStatus(res) != PGRES_TUPLES_OK) {
        PQclear(res);
        return rc;
    }
    return keep_rows(db, st, res);
}

static int next_row(pg_st *st)
{
    clear_blobs(st);
    if (st->res != NULL && ++st->row < PQntuples(st->res))
        return STORE_DB_ROW;
    st->done = true;
    return STORE_DB_DONE;
}

/* The first step runs the statement and keeps all its rows; later ones
 * walk them. After an error, the next step runs it again (as SQLite's
 * automatic reset does). */
static int pg_step(store_dbst *base)
{
    pg_st *st = pgst(base);
    pg_db *db = pgdb(base->db);
    if (st->done)
        return STORE_DB_DONE;
    if (st->res != NULL)
        return next_row(st);
    st->stepped = true;
    int rc = st->kind == PG_PLAIN ? execute(db, st) : run_simple(db, st->kind, st->sql);
    if (rc != STORE_DB_OK)
        return rc;
    st->row = -1;
    return next_row(st);
}

/* Sends st without waiting for its answer (see "deferred statements"):
 * inside a transaction only; elsewhere, or for transaction control, it
 * simply runs. */
static int pg_defer(store_dbst *base)
{
    pg_st *st = pgst(base);
    pg_db *db = pgdb(base->db);
    if (st->kind != PG_PLAIN || !db->txn || st->done || st->res != NULL)
        return pg_step(base);
    int rc = before(db, PG_PLAIN);
    if (rc != STORE_DB_OK)
        return rc;
    if (db->deferred_failed)
        return fail(db, STORE_DB_ABORT, "an earlier statement of this transaction failed");
    rc = pipe_enter(db);
    if (rc == STORE_DB_OK)
        rc = pipe_prepare(db, st);
    if (rc == STORE_DB_OK &&
        PQsendQueryPrepared(db->conn, st->name, st->nparams, st->vals, st->lens, st->fmts, 0) != 1)
        rc = connection_lost(db);
    if (rc == STORE_DB_OK)
        rc = owe(db, NULL);
    if (rc != STORE_DB_OK)
        return rc;
    st->stepped = st->done = true;
    return STORE_DB_DONE;
}

static bool pg_deferred_failed(store_db *db)
{
    return pgdb(db)->deferred_failed;
}

/* ---- columns ------------------------------------------------------------------- */

static bool has_cell(const pg_st *st, int i)
{
    return st->res != NULL && !st->done && st->row >= 0 && st->row < PQntuples(st->res) && i >= 0 &&
           i < PQnfields(st->res);
}

/* The cell's text, NULL for SQL NULL (or no such cell). */
static const char *cell(const pg_st *st, int i)
{
    if (!has_cell(st, i) || PQgetisnull(st->res, st->row, i))
        return NULL;
    return PQgetvalue(st->res, st->row, i);
}

static int pg_column_count(store_dbst *st)
{
    return pgst(st)->res != NULL ? PQnfields(pgst(st)->res) : 0;
}

static const char *pg_column_name(store_dbst *base, int i)
{
    pg_st *st = pgst(base);
    return st->res != NULL && i >= 0 && i < PQnfields(st->res) ? PQfname(st->res, i) : NULL;
}

static int pg_column_type(store_dbst *base, int i)
{
    pg_st *st = pgst(base);
    if (cell(st, i) == NULL)
        return STORE_DB_NULL;
    switch (PQftype(st->res, i)) {
    case PG_BOOLOID:
    case PG_INT2OID:
    case PG_INT4OID:
    case PG_INT8OID:
    case PG_OIDOID:
        return STORE_DB_INTEGER;
    case PG_FLOAT4OID:
    case PG_FLOAT8OID:
    case PG_NUMERICOID:
        return STORE_DB_FLOAT;
    case PG_BYTEAOID:
        return STORE_DB_BLOB;
    default:
        return STORE_DB_TEXT;
    }
}

/* A bytea cell decoded, owned by the statement until the next step. */
static const pg_blob *blob(pg_st *st, int i)
{
    pg_blob *b = &st->blobs[i];
    if (b->p != NULL)
        return b;
    size_t n = 0;
    unsigned char *raw = PQunescapeBytea((const unsigned char *)cell(st, i), &n);
    if (raw == NULL)
        return NULL;
    if ((b->p = malloc(n + 1)) != NULL) {
        memcpy(b->p, raw, n);
        b->p[n] = '\0'; /* column_text's promise */
        b->n = n;
    }
    PQfreemem(raw);
    return b->p != NULL ? b : NULL;
}

static int64_t clamp_int64(double d)
{
    if (isnan(d))
        return 0;
    if (d >= 9223372036854775807.0)
        return INT64_MAX;
    if (d <= -9223372036854775808.0)
        return INT64_MIN;
    return (int64_t)d;
}

static int64_t pg_column_int64(store_dbst *base, int i)
{
    pg_st *st = pgst(base);
    const char *v = cell(st, i);
    if (v == NULL)
        return 0;
    switch (PQftype(st->res, i)) {
    case PG_BOOLOID:
        return v[0] == 't';
    case PG_FLOAT4OID:
    case PG_FLOAT8OID: /* may read "1e+20" */
        return clamp_int64(strtod(v, NULL));
    default: /* numeric's "3.0" reads 3 */
        return strtoll(v, NULL, 10);
    }
}

static double pg_column_double(store_dbst *base, int i)
{
    pg_st *st = pgst(base);
    const char *v = cell(st, i);
    if (v == NULL)
        return 0.0;
    if (PQftype(st->res, i) == PG_BOOLOID)
        return v[0] == 't' ? 1.0 : 0.0;
    return strtod(v, NULL); /* reads NaN, Infinity and -Infinity too */
}

static const unsigned char *pg_column_text(store_dbst *base, int i)
{
    pg_st *st = pgst(base);
    const char *v = cell(st, i);
    if (v == NULL)
        return NULL;
    switch (PQftype(st->res, i)) {
    case PG_BOOLOID: /* SQLite has no booleans: 1 and 0 */
        return (const unsigned char *)(v[0] == 't' ? "1" : "0");
    case PG_BYTEAOID: {
        const pg_blob *b = blob(st, i);
        return b != NULL ? b->p : NULL;
    }
    default:
        return (const unsigned char *)v;
    }
}

static const void *pg_column_blob(store_dbst *base, int i)
{
    pg_st *st = pgst(base);
    const char *v = cell(st, i);
    if (v == NULL || PQftype(st->res, i) != PG_BYTEAOID)
        return pg_column_text(base, i);
    const pg_blob *b = blob(st, i);
    return b != NULL ? b->p : NULL;
}

static int pg_column_bytes(store_dbst *base, int i)
{
    pg_st *st = pgst(base);
    const char *v = cell(st, i);
    if (v == NULL)
        return 0;
    switch (PQftype(st->res, i)) {
    case PG_BOOLOID:
        return 1;
    case PG_BYTEAOID: {
        const pg_blob *b = blob(st, i);
        return b != NULL ? (int)b->n : 0;
    }
    default:
        return PQgetlength(st->res, st->row, i);
    }
}

/* ---- the connection ------------------------------------------------------------ */

static int64_t pg_changes(store_db *db)
{
    return pgdb(db)->changes;
}

static const char *pg_errmsg(store_db *db)
{
    return pgdb(db)->errmsg;
}

static int pg_errcode(store_db *db)
{
    return pgdb(db)->errcode;
}

/* On a lost connection, open until the caller ends it (see before). */
static bool pg_autocommit(store_db *base)
{
    pg_db *db = pgdb(base);
    if (db->pipe)
        return false; /* only a transaction defers */
    if (conn_bad(db))
        return !db->txn;
    PGTransactionStatusType t = PQtransactionStatus(db->conn);
    return t == PQTRANS_IDLE || t == PQTRANS_UNKNOWN;
}

static void pg_close(store_db *base)
{
    pg_db *db = pgdb(base);
    PQfinish(db->conn);
    free(db->owed);
    free(db->dead);
    free(db);
}

static const store_driver pg_driver = {
    .name = "postgres",
    .dialect = STORE_DIALECT_POSTGRES,
    .close = pg_close,
    .exec = pg_exec,
    .prepare = pg_prepare,
    .finalize = pg_finalize,
    .reset = pg_reset,
    .busy = pg_busy,
    .bind_null = pg_bind_null,
    .bind_int64 = pg_bind_int64,
    .bind_double = pg_bind_double,
    .bind_text = pg_bind_text,
    .bind_blob = pg_bind_blob,
    .step = pg_step,
    .defer = pg_defer,
    .deferred_failed = pg_deferred_failed,
    .column_count = pg_column_count,
    .column_name = pg_column_name,
    .column_type = pg_column_type,
    .column_int64 = pg_column_int64,
    .column_double = pg_column_double,
    .column_text = pg_column_text,
    .column_blob = pg_column_blob,
    .column_bytes = pg_column_bytes,
    .changes = pg_changes,
    .errmsg = pg_errmsg,
    .errcode = pg_errcode,
    .autocommit = pg_autocommit,
};

/* ---- opening --------------------------------------------------------------------- */

static void discard_notice(void *arg, const char *message)
{
    (void)arg;
    (void)message;
}

/* Replaces each occurrence of secret (n bytes, n > 0) in *msg with "***". */
static void mask(char **msg, const char *secret, size_t n)
{
    char *out = n > 0 ? malloc(strlen(*msg) * 3 + 1) : NULL;
    size_t o = 0;
    if (out == NULL)
        return;
    for (const char *p = *msg; *p != '\0';) {
        if (strncmp(p, secret, n) == 0) {
            memcpy(out + o, "***", 3);
            o += 3;
            p += n;
        } else {
            out[o++] = *p++;
        }
    }
    out[o] = '\0';
    free(*msg);
    *msg = out;
}

static int hex(char c)
{
    return isdigit((unsigned char)c) ? c - '0' : (tolower((unsigned char)c) - 'a' + 10) & 15;
}

/* Masks the secret s (n bytes of the URI) in *msg as written and as
 * percent-decoded. */
static void mask_both(char **msg, const char *s, size_t n)
{
    char *dec = malloc(n + 1);
    size_t m = 0;
    mask(msg, s, n);
    if (dec == NULL)
        return;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '%' && i + 2 < n && isxdigit((unsigned char)s[i + 1]) &&
            isxdigit((unsigned char)s[i + 2])) {
            dec[m++] = (char)(hex(s[i + 1]) * 16 + hex(s[i + 2]));
            i += 2;
        } else {
            dec[m++] = s[i];
        }
    }
    mask(msg, dec, m);
    free(dec);
}

/* libpq quotes the whole URI in some of its parse errors: masks the
 * password of the user part and of any password= parameter. */
static void mask_passwords(char **msg, const char *uri)
{
    const char *auth = strstr(uri, "://");
    auth = auth != NULL ? auth + 3 : uri;
    const char *end = auth + strcspn(auth, "/?");
    const char *at = NULL;
    for (const char *p = auth; p < end; p++)
        if (*p == '@')
            at = p;
    const char *colon = at != NULL ? memchr(auth, ':', (size_t)(at - auth)) : NULL;
    if (colon != NULL)
        mask_both(msg, colon + 1, (size_t)(at - colon - 1));
    for (const char *q = strchr(uri, '?'); q != NULL; q = strchr(q + 1, '&')) {
        if (strncasecmp(q + 1, "password=", 9) == 0)
            mask_both(msg, q + 10, strcspn(q + 10, "&"));
    }
}

/* Why opening failed, in one line and without the password. libpq's
 * message names the host and port it tried; the URI is not echoed. */
static void open_error(PGconn *conn, const char *uri, char *msg, size_t size)
{
    char *why = strdup(conn != NULL ? PQerrorMessage(conn) : "out of memory");
    if (why == NULL) {
        snprintf(msg, size, "cannot connect to PostgreSQL: out of memory");
        return;
    }
    mask_passwords(&why, uri);
    char line[1024];
    one_line(line, sizeof line, why);
    snprintf(msg, size, "cannot connect to PostgreSQL: %s", line);
    free(why);
}

/* The defaults come before "dbname", which libpq expands from the URI: a
 * setting of the URI's own (a longer connect_timeout) comes later and
 * wins. */
static PGconn *connect_uri(const char *uri)
{
    /* keepalives and tcp_user_timeout: a server that vanished without a
     * word (a partition, a dead node) is noticed in seconds, not hours.
     * options: a batch waits at most 10 s for a lock another process holds
     * (then `unavailable`, retryable), and a session idle inside a
     * transaction for 30 s (a frozen process) loses it, and its locks */
    const char *const keys[] = {"connect_timeout",
                                "application_name",
                                "client_encoding",
                                "keepalives_idle",
                                "keepalives_interval",
                                "keepalives_count",
                                "tcp_user_timeout",
                                "options",
                                "dbname",
                                NULL};
    static const char options[] =
        "-c lock_timeout=10000 -c idle_in_transaction_session_timeout=30000";
    const char *const vals[] = {"5", "recordd", "UTF8",  "10", "3",
                                "3", "15000",   options, uri,  NULL};
    return PQconnectdbParams(keys, vals, 1);
}

PGconn *store_pg_connect(const char *uri, char *msg, size_t size)
{
    PGconn *conn = connect_uri(uri);
    if (conn == NULL || PQstatus(conn) != CONNECTION_OK) {
        open_error(conn, uri, msg, size);
        PQfinish(conn);
        return NULL;
    }
    PQsetNoticeProcessor(conn, discard_notice, NULL);
    return conn;
}

int store_pg_open(const char *uri, const store_db_options *opt, store_db **out, char *msg,
                  size_t size)
{
    *out = NULL;
    pg_db *db = calloc(1, sizeof *db);
    if (db == NULL) {
        snprintf(msg, size, "out of memory");
        return STORE_DB_NOMEM;
    }
    db->base.drv = &pg_driver;
    db->role = opt != NULL ? opt->role : STORE_DB_TOOL;
    db->epoch = 1;
    snprintf(db->errmsg, sizeof db->errmsg, "not an error");
    db->conn = store_pg_connect(uri, msg, size);
    if (db->conn == NULL) {
        free(db);
        return STORE_DB_CANTOPEN;
    }
    *out = &db->base;
    return STORE_DB_OK;
}
