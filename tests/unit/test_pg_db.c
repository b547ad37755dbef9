/* Unit tests for store/pg_db.c, the PostgreSQL driver, against a running
 * server named by RECORDD_TEST_PG (e.g.
 * postgresql://recordd@127.0.0.1:5432/postgres); without it the test fails.
 * They cover what the store expects of SQLite and the driver provides:
 * placeholders, bindings and columns of every type, changes(), SQLite's
 * constraint codes and messages, savepoints after an error, a reader's
 * snapshot, statements prepared again after a schema change, and losing
 * the connection outside and inside a transaction. Tables used by one
 * connection are temporary; shared ones carry the process id. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <libpq-fe.h>

#include "store/db.h"

static const char *g_uri;

/* ---- helpers ---------------------------------------------------------------- */

static store_db *open_role(store_db_role role)
{
    store_db_options o = {.role = role};
    store_db *db = NULL;
    char msg[512] = "";
    int rc = store_pg_open(g_uri, &o, &db, msg, sizeof msg);
    if (rc != STORE_DB_OK)
        fail_msg("store_pg_open: %d %s", rc, msg);
    assert_int_equal(store_db_dialect(db), STORE_DIALECT_POSTGRES);
    return db;
}

static store_db *open_tool(void)
{
    return open_role(STORE_DB_TOOL);
}

/* A table name of this process: shared tables outlive a failed run. */
static const char *tname(char *buf, size_t size, const char *base)
{
    snprintf(buf, size, "pgdb_%s_%d", base, (int)getpid());
    return buf;
}

__attribute__((format(printf, 2, 3))) static int exec_f(store_db *db, const char *fmt, ...)
{
    char sql[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(sql, sizeof sql, fmt, ap);
    va_end(ap);
    return store_db_exec(db, sql);
}

#define EXEC_OK(db, ...)                                                                           \
    do {                                                                                           \
        int rc_ = exec_f((db), __VA_ARGS__);                                                       \
        if (rc_ != STORE_DB_OK)                                                                    \
            fail_msg("exec failed: %d %s", rc_, store_db_errmsg(db));                              \
    } while (0)

__attribute__((format(printf, 2, 3))) static store_dbst *prep(store_db *db, const char *fmt, ...)
{
    char sql[1024];
    store_dbst *st = NULL;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(sql, sizeof sql, fmt, ap);
    va_end(ap);
    int rc = store_db_prepare(db, sql, &st);
    if (rc != STORE_DB_OK)
        fail_msg("prepare \"%s\": %d %s", sql, rc, store_db_errmsg(db));
    return st;
}

/* The first column of the first row of a query. */
__attribute__((format(printf, 2, 3))) static int64_t query_int(store_db *db, const char *fmt, ...)
{
    char sql[1024];
    store_dbst *st = NULL;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(sql, sizeof sql, fmt, ap);
    va_end(ap);
    assert_int_equal(store_db_prepare(db, sql, &st), STORE_DB_OK);
    int rc = store_db_step(st);
    if (rc != STORE_DB_ROW)
        fail_msg("\"%s\": %d %s", sql, rc, store_db_errmsg(db));
    int64_t v = store_db_column_int64(st, 0);
    store_db_finalize(st);
    return v;
}

static void query_text(store_db *db, const char *sql, char *out, size_t size)
{
    store_dbst *st = prep(db, "%s", sql);
    assert_int_equal(store_db_step(st), STORE_DB_ROW);
    snprintf(out, size, "%s", (const char *)store_db_column_text(st, 0));
    store_db_finalize(st);
}

/* Ends victim's session from another one, and waits until it is gone. */
static void kill_backend(int64_t pid)
{
    store_db *other = open_tool();
    store_dbst *st = prep(other, "SELECT pg_terminate_backend(CAST(?1 AS int4), 5000)");
    assert_int_equal(store_db_bind_int64(st, 1, pid), STORE_DB_OK);
    assert_int_equal(store_db_step(st), STORE_DB_ROW);
    assert_int_equal(store_db_column_int64(st, 0), 1);
    store_db_finalize(st);
    store_db_close(other);
}

/* ---- placeholders -------------------------------------------------------------- */

static void test_numbered_placeholders_any_order_and_quoted_question_marks(void **state)
{
    (void)state;
    store_db *db = open_tool();
    store_dbst *st = prep(db, "SELECT CAST(?2 AS text) || '?' || CAST(?1 AS text), 'it''s ?'");
    assert_int_equal(store_db_bind_text(st, 1, "a", -1, STORE_DB_STATIC), STORE_DB_OK);
    assert_int_equal(store_db_bind_text(st, 2, "b", -1, STORE_DB_STATIC), STORE_DB_OK);
    assert_int_equal(store_db_step(st), STORE_DB_ROW);
    assert_string_equal((const char *)store_db_column_text(st, 0), "b?a");
    assert_string_equal((const char *)store_db_column_text(st, 1), "it's ?");
    store_db_finalize(st);
    store_db_close(db);
}

static void test_bare_placeholders_numbered_left_to_right(void **state)
{
    (void)state;
    store_db *db = open_tool();
    store_dbst *st = prep(db, "SELECT CAST(? AS int8) AS \"x?\", '?' AS q -- a ? here\n"
                              ", CAST(? AS int8) /* and ? there */");
    assert_int_equal(store_db_bind_int64(st, 1, 7), STORE_DB_OK);
    assert_int_equal(store_db_bind_int64(st, 2, 9), STORE_DB_OK);
    assert_int_equal(store_db_bind_int64(st, 3, 1), STORE_DB_ERROR);
    assert_int_equal(store_db_bind_int64(st, 0, 1), STORE_DB_ERROR);
    assert_int_equal(store_db_step(st), STORE_DB_ROW);
    assert_int_equal(store_db_column_count(st), 3);
    assert_string_equal(store_db_column_name(st, 0), "x?");
    assert_int_equal(store_db_column_int64(st, 0), 7);
    assert_string_equal((const char *)store_db_column_text(st, 1), "?");
    assert_int_equal(store_db_column_int64(st, 2), 9);
    store_db_finalize(st);

    /* as in SQLite, a bare "?" after "?3" is 4; ?1 and ?2 may go unused */
    st = prep(db, "SELECT CAST(?3 AS int8) + CAST(? AS int8)");
    assert_int_equal(store_db_bind_int64(st, 3, 40), STORE_DB_OK);
    assert_int_equal(store_db_bind_int64(st, 4, 2), STORE_DB_OK);
    assert_int_equal(store_db_bind_int64(st, 5, 2), STORE_DB_ERROR);
    assert_int_equal(store_db_step(st), STORE_DB_ROW);
    assert_int_equal(store_db_column_int64(st, 0), 42);
    store_db_finalize(st);
    store_db_close(db);
}

static void test_prepare_errors(void **state)
{
    (void)state;
    store_db *db = open_tool();
    store_dbst *st = (store_dbst *)&st;
    assert_int_equal(store_db_prepare(db, "SELEC 1", &st), STORE_DB_ERROR);
    assert_null(st);
    assert_non_null(strstr(store_db_errmsg(db), "syntax error"));
    assert_int_equal(store_db_errcode(db), STORE_DB_ERROR);
    assert_int_equal(store_db_prepare(db, "SELECT * FROM pgdb_no_such_table", &st), STORE_DB_ERROR);
    assert_non_null(strstr(store_db_errmsg(db), "does not exist"));
    assert_int_equal(store_db_prepare(db, "SELECT ?0", &st), STORE_DB_ERROR);
    /* the connection goes on */
    assert_int_equal(query_int(db, "SELECT 1"), 1);
    store_db_close(db);
}

/* ---- values ------------------------------------------------------------------- */

static void test_integers_bools_and_nulls(void **state)
{
    (void)state;
    store_db *db = open_tool();
    EXEC_OK(db, "CREATE TEMP TABLE ints (i8 int8, i4 int4, i2 int2, b bool, n int8)");
    store_dbst *ins = prep(db, "INSERT INTO ints VALUES (?1, ?2, ?3, ?4, ?5)");
    assert_int_equal(store_db_bind_int64(ins, 1, INT64_MAX), STORE_DB_OK);
    assert_int_equal(store_db_bind_int64(ins, 2, INT32_MIN), STORE_DB_OK);
    assert_int_equal(store_db_bind_int64(ins, 3, -7), STORE_DB_OK);
    assert_int_equal(store_db_bind_int64(ins, 4, 1), STORE_DB_OK); /* as the store binds bools */
    assert_int_equal(store_db_bind_null(ins, 5), STORE_DB_OK);
    assert_int_equal(store_db_step(ins), STORE_DB_DONE);
    store_db_reset(ins);
    /* unbound parameters and NULL pointers are NULL */
    assert_int_equal(store_db_bind_int64(ins, 1, INT64_MIN), STORE_DB_OK);
    assert_int_equal(store_db_bind_text(ins, 3, NULL, -1, STORE_DB_STATIC), STORE_DB_OK);
    assert_int_equal(store_db_bind_int64(ins, 4, 0), STORE_DB_OK);
    assert_int_equal(store_db_step(ins), STORE_DB_DONE);
    store_db_finalize(ins);

    store_dbst *st = prep(db, "SELECT i8, i4, i2, b, n FROM ints ORDER BY i8 DESC");
    assert_int_equal(store_db_step(st), STORE_DB_ROW);
    for (int i = 0; i < 4; i++)
        assert_int_equal(store_db_column_type(st, i), STORE_DB_INTEGER);
    assert_true(store_db_column_int64(st, 0) == INT64_MAX);
    assert_int_equal(store_db_column_int64(st, 1), INT32_MIN);
    assert_int_equal(store_db_column_int64(st, 2), -7);
    assert_int_equal(store_db_column_int64(st, 3), 1);
    assert_string_equal((const char *)store_db_column_text(st, 3), "1");
    assert_true(store_db_column_double(st, 3) == 1.0);
    assert_int_equal(store_db_column_type(st, 4), STORE_DB_NULL);
    assert_null(store_db_column_text(st, 4));
    assert_int_equal(store_db_column_int64(st, 4), 0);
    assert_int_equal(store_db_column_bytes(st, 4), 0);
    assert_int_equal(store_db_step(st), STORE_DB_ROW);
    assert_true(store_db_column_int64(st, 0) == INT64_MIN);
    assert_int_equal(store_db_column_type(st, 1), STORE_DB_NULL);
    assert_int_equal(store_db_column_type(st, 2), STORE_DB_NULL);
    assert_int_equal(store_db_column_int64(st, 3), 0);
    assert_string_equal((const char *)store_db_column_text(st, 3), "0");
    assert_int_equal(store_db_step(st), STORE_DB_DONE);
    store_db_finalize(st);
    store_db_close(db);
}

static void test_doubles_and_numeric(void **state)
{
    (void)state;
    const double v[] = {0.1, 1e308, -2.5e-300, 123456789.123456789, -0.0, NAN, INFINITY, -INFINITY};
    const size_t n = sizeof v / sizeof v[0];
    store_db *db = open_tool();
    EXEC_OK(db, "CREATE TEMP TABLE dbl (k int4, d float8, r float4, m numeric)");
    store_dbst *ins = prep(db, "INSERT INTO dbl VALUES (?, ?, ?, ?)");
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(store_db_bind_int64(ins, 1, (int64_t)i), STORE_DB_OK);
        assert_int_equal(store_db_bind_double(ins, 2, v[i]), STORE_DB_OK);
        assert_int_equal(store_db_bind_double(ins, 3, 0.5), STORE_DB_OK);
        assert_int_equal(store_db_bind_double(ins, 4, isinf(v[i]) ? 3.0 : v[i]), STORE_DB_OK);
        assert_int_equal(store_db_step(ins), STORE_DB_DONE);
        store_db_reset(ins);
    }
    store_db_finalize(ins);
    store_dbst *st = prep(db, "SELECT d, r, m FROM dbl ORDER BY k");
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(store_db_step(st), STORE_DB_ROW);
        for (int c = 0; c < 3; c++)
            assert_int_equal(store_db_column_type(st, c), STORE_DB_FLOAT);
        double d = store_db_column_double(st, 0);
        if (isnan(v[i]))
            assert_true(isnan(d));
        else
            assert_true(d == v[i] && signbit(d) == signbit(v[i]));
        assert_true(store_db_column_double(st, 1) == 0.5);
    }
    assert_int_equal(store_db_step(st), STORE_DB_DONE);
    store_db_finalize(st);

    /* numeric: the shortest text (0.1, not 0.1000000000000000055...);
     * its integer value truncates, as SQLite's does */
    st = prep(db, "SELECT m, CAST(3 AS numeric(4,1)), CAST(1e15 AS float8), CAST(1e20 AS float8)"
                  " FROM dbl WHERE k = 0");
    assert_int_equal(store_db_step(st), STORE_DB_ROW);
    assert_string_equal((const char *)store_db_column_text(st, 0), "0.1");
    assert_string_equal((const char *)store_db_column_text(st, 1), "3.0");
    assert_int_equal(store_db_column_int64(st, 1), 3);
    assert_string_equal((const char *)store_db_column_text(st, 2), "1e+15");
    assert_true(store_db_column_int64(st, 2) == 1000000000000000);
    assert_true(store_db_column_int64(st, 3) == INT64_MAX);
    store_db_finalize(st);
    store_db_close(db);
}

static void test_text_lengths_and_lifetimes(void **state)
{
    (void)state;
    store_db *db = open_tool();
    EXEC_OK(db, "CREATE TEMP TABLE txt (k int4, s text, v varchar(20), j jsonb)");
    store_dbst *ins = prep(db, "INSERT INTO txt VALUES (?1, ?2, ?3, ?4)");
    char buf[32];
    snprintf(buf, sizeof buf, "transient");
    assert_int_equal(store_db_bind_int64(ins, 1, 1), STORE_DB_OK);
    assert_int_equal(store_db_bind_text(ins, 2, "hello world", 5, STORE_DB_STATIC), STORE_DB_OK);
    assert_int_equal(store_db_bind_text(ins, 3, buf, -1, STORE_DB_TRANSIENT), STORE_DB_OK);
    assert_int_equal(store_db_bind_text(ins, 4, "{\"a\": [1, 2]}", -1, STORE_DB_STATIC),
                     STORE_DB_OK);
    memset(buf, 'X', 9); /* a transient value was copied */
    assert_int_equal(store_db_step(ins), STORE_DB_DONE);
    store_db_finalize(ins);

    store_dbst *st = prep(db, "SELECT s, v, j, 'caf\xc3\xa9' FROM txt");
    assert_int_equal(store_db_step(st), STORE_DB_ROW);
    for (int c = 0; c < 4; c++)
        assert_int_equal(store_db_column_type(st, c), STORE_DB_TEXT);
    assert_string_equal((const char *)store_db_column_text(st, 0), "hello");
    assert_int_equal(store_db_column_bytes(st, 0), 5);
    assert_string_equal((const char *)store_db_column_text(st, 1), "transient");
    assert_string_equal((const char *)store_db_column_text(st, 2), "{\"a\": [1, 2]}");
    assert_string_equal((const char *)store_db_column_text(st, 3), "caf\xc3\xa9");
    assert_int_equal(store_db_column_bytes(st, 3), 5);
    assert_memory_equal(store_db_column_blob(st, 0), "hello", 5);
    store_db_finalize(st);
    store_db_close(db);
}

static void test_bytea_round_trip(void **state)
{
    (void)state;
    static const unsigned char bytes[] = {0x00, 0xff, 0x0a, '\\', 'x', 0x80, 0x27, 0x00};
    store_db *db = open_tool();
    EXEC_OK(db, "CREATE TEMP TABLE blobs (k int4, a bytea, b bytea)");
    store_dbst *ins = prep(db, "INSERT INTO blobs VALUES (?1, ?2, ?3)");
    unsigned char copy[sizeof bytes];
    memcpy(copy, bytes, sizeof bytes);
    assert_int_equal(store_db_bind_int64(ins, 1, 1), STORE_DB_OK);
    assert_int_equal(store_db_bind_blob(ins, 2, bytes, (int)sizeof bytes, STORE_DB_STATIC),
                     STORE_DB_OK);
    assert_int_equal(store_db_bind_blob(ins, 3, copy, 3, STORE_DB_TRANSIENT), STORE_DB_OK);
    memset(copy, 0x55, sizeof copy);
    assert_int_equal(store_db_step(ins), STORE_DB_DONE);
    store_db_reset(ins);
    assert_int_equal(store_db_bind_int64(ins, 1, 2), STORE_DB_OK);
    assert_int_equal(store_db_bind_blob(ins, 2, "", 0, STORE_DB_STATIC), STORE_DB_OK);
    assert_int_equal(store_db_bind_blob(ins, 3, NULL, 0, STORE_DB_STATIC), STORE_DB_OK);
    assert_int_equal(store_db_bind_blob(ins, 3, bytes, -1, STORE_DB_STATIC), STORE_DB_ERROR);
    assert_int_equal(store_db_step(ins), STORE_DB_DONE);
    store_db_finalize(ins);

    store_dbst *st = prep(db, "SELECT a, b FROM blobs ORDER BY k");
    assert_int_equal(store_db_step(st), STORE_DB_ROW);
    assert_int_equal(store_db_column_type(st, 0), STORE_DB_BLOB);
    assert_int_equal(store_db_column_bytes(st, 0), (int)sizeof bytes);
    assert_int_equal(store_db_column_bytes(st, 1), 3);
    /* both cells of the row stay valid together */
    const void *a = store_db_column_blob(st, 0);
    const void *b = store_db_column_blob(st, 1);
    assert_memory_equal(a, bytes, sizeof bytes);
    assert_memory_equal(b, bytes, 3);
    assert_int_equal(store_db_step(st), STORE_DB_ROW);
    assert_int_equal(store_db_column_type(st, 0), STORE_DB_BLOB);
    assert_int_equal(store_db_column_bytes(st, 0), 0);
    assert_int_equal(store_db_column_type(st, 1), STORE_DB_NULL);
    assert_null(store_db_column_blob(st, 1));
    assert_int_equal(store_db_step(st), STORE_DB_DONE);
    store_db_finalize(st);
    store_db_close(db);
}

/* ---- statements ----------------------------------------------------------------- */

static void test_step_reset_busy(void **state)
{
    (void)state;
    store_db *db = open_tool();
    store_dbst *st = prep(db, "SELECT 1 AS one UNION ALL SELECT 2");
    assert_false(store_db_busy(st));
    assert_int_equal(store_db_step(st), STORE_DB_ROW);
    assert_true(store_db_busy(st));
    assert_string_equal(store_db_column_name(st, 0), "one");
    assert_int_equal(store_db_column_int64(st, 0), 1);
    assert_int_equal(store_db_step(st), STORE_DB_ROW);
    assert_int_equal(store_db_column_int64(st, 0), 2);
    assert_int_equal(store_db_step(st), STORE_DB_DONE);
    assert_int_equal(store_db_step(st), STORE_DB_DONE);
    assert_int_equal(store_db_column_type(st, 0), STORE_DB_NULL);
    store_db_reset(st);
    assert_false(store_db_busy(st));
    assert_int_equal(store_db_step(st), STORE_DB_ROW);
    assert_int_equal(store_db_column_int64(st, 0), 1);
    store_db_finalize(st);
    store_db_close(db);
}

static void test_changes_counts_the_last_write(void **state)
{
    (void)state;
    store_db *db = open_tool();
    EXEC_OK(db, "CREATE TEMP TABLE ch (v int4)");
    EXEC_OK(db, "INSERT INTO ch VALUES (1), (2), (3)");
    assert_int_equal(store_db_changes(db), 3);
    store_dbst *up = prep(db, "UPDATE ch SET v = v + 10 WHERE v >= ?1");
    assert_int_equal(store_db_bind_int64(up, 1, 2), STORE_DB_OK);
    assert_int_equal(store_db_step(up), STORE_DB_DONE);
    assert_int_equal(store_db_changes(db), 2);
    store_db_finalize(up);
    assert_int_equal(query_int(db, "SELECT count(*) FROM ch"), 3); /* a read leaves it */
    assert_int_equal(store_db_changes(db), 2);
    store_dbst *del = prep(db, "DELETE FROM ch WHERE v > 100 RETURNING v");
    assert_int_equal(store_db_step(del), STORE_DB_DONE);
    assert_int_equal(store_db_changes(db), 0);
    store_db_finalize(del);
    EXEC_OK(db, "DELETE FROM ch");
    assert_int_equal(store_db_changes(db), 3);
    store_db_close(db);
}

/* The driver's own DEALLOCATEs: a finalized statement leaves the server
 * before the next command, even one finalized in an aborted transaction. */
static void test_finalize_deallocates(void **state)
{
    (void)state;
    store_db *db = open_tool();
    store_dbst *count = prep(db, "SELECT count(*) FROM pg_prepared_statements");
    assert_int_equal(store_db_step(count), STORE_DB_ROW);
    int64_t base = store_db_column_int64(count, 0);
    store_db_reset(count);

    store_dbst *st = prep(db, "SELECT 1");
    store_db_finalize(st);
    assert_int_equal(store_db_step(count), STORE_DB_ROW);
    assert_int_equal(store_db_column_int64(count, 0), base);
    store_db_reset(count);

    st = prep(db, "SELECT 2");
    EXEC_OK(db, "BEGIN");
    assert_int_equal(store_db_exec(db, "SELECT 1/0"), STORE_DB_ERROR);
    store_db_finalize(st);
    EXEC_OK(db, "ROLLBACK");
    assert_int_equal(store_db_step(count), STORE_DB_ROW);
    assert_int_equal(store_db_column_int64(count, 0), base);
    store_db_finalize(count);
    store_db_close(db);
}

/* ---- errors --------------------------------------------------------------------- */

static void test_unique_violations_in_sqlite_words(void **state)
{
    (void)state;
    store_db *db = open_tool();
    EXEC_OK(db, "CREATE TEMP TABLE t (id int8 PRIMARY KEY, a int8, b text, \"Mixed\" text)");
    EXEC_OK(db, "CREATE UNIQUE INDEX t_ab ON t (a, b)");
    EXEC_OK(db, "CREATE UNIQUE INDEX t_mixed ON t (\"Mixed\")");
    store_dbst *ins = prep(db, "INSERT INTO t VALUES (?1, ?2, ?3, ?4)");
    const struct {
        int64_t id, a;
        const char *b, *mixed;
        int rc;
        const char *msg;
    } cases[] = {
        {1, 10, "secretvalue", "m1", STORE_DB_DONE, NULL},
        {2, 10, "secretvalue", "m2", STORE_DB_CONSTRAINT_UNIQUE,
         "UNIQUE constraint failed: t.a, t.b"},
        {3, 11, "other", "m1", STORE_DB_CONSTRAINT_UNIQUE, "UNIQUE constraint failed: t.Mixed"},
        {1, 12, "other", "m3", STORE_DB_CONSTRAINT_PRIMARYKEY, "UNIQUE constraint failed: t.id"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        store_db_bind_int64(ins, 1, cases[i].id);
        store_db_bind_int64(ins, 2, cases[i].a);
        store_db_bind_text(ins, 3, cases[i].b, -1, STORE_DB_STATIC);
        store_db_bind_text(ins, 4, cases[i].mixed, -1, STORE_DB_STATIC);
        assert_int_equal(store_db_step(ins), cases[i].rc);
        store_db_reset(ins);
        if (cases[i].msg == NULL)
            continue;
        assert_int_equal(store_db_errcode(db), cases[i].rc);
        assert_string_equal(store_db_errmsg(db), cases[i].msg);
        assert_null(strstr(store_db_errmsg(db), "secret"));
    }
    store_db_finalize(ins);
    store_db_close(db);
}

static void test_other_constraints_and_sqlstates(void **state)
{
    (void)state;
    store_db *db = open_tool();
    EXEC_OK(db, "CREATE TEMP TABLE cons (a int4 NOT NULL CHECK (a > 0))");
    assert_int_equal(store_db_exec(db, "INSERT INTO cons VALUES (NULL)"), STORE_DB_CONSTRAINT);
    assert_int_equal(store_db_exec(db, "INSERT INTO cons VALUES (-1)"), STORE_DB_CONSTRAINT);
    const struct {
        const char *state;
        int rc;
    } cases[] = {
        {"40001", STORE_DB_BUSY},     {"40P01", STORE_DB_BUSY},     {"55P03", STORE_DB_BUSY},
        {"55006", STORE_DB_BUSY},     {"53100", STORE_DB_FULL},     {"53200", STORE_DB_NOMEM},
        {"08006", STORE_DB_CANTOPEN}, {"57P02", STORE_DB_CANTOPEN}, {"23503", STORE_DB_CONSTRAINT},
        {"22012", STORE_DB_ERROR},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int rc = exec_f(db, "DO $$BEGIN RAISE EXCEPTION 'boom %s' USING ERRCODE = '%s'; END$$",
                        cases[i].state, cases[i].state);
        assert_int_equal(rc, cases[i].rc);
        assert_int_equal(store_db_errcode(db), cases[i].rc);
    }
    assert_string_equal(store_db_errmsg(db), "boom 22012");
    /* a unique violation that names no columns: SQLite's words for an index */
    assert_int_equal(store_db_exec(db, "DO $$BEGIN RAISE unique_violation; END$$"),
                     STORE_DB_CONSTRAINT_UNIQUE);
    assert_non_null(strstr(store_db_errmsg(db), "UNIQUE constraint failed: "));
    assert_int_equal(store_db_exec(db, "SELEC 1"), STORE_DB_ERROR);
    assert_non_null(strstr(store_db_errmsg(db), "syntax error"));
    assert_true(store_db_autocommit(db));
    store_db_close(db);
}

static void test_savepoint_after_an_error(void **state)
{
    (void)state;
    store_db *db = open_tool();
    EXEC_OK(db, "CREATE TEMP TABLE sp (id int4 PRIMARY KEY)");
    store_dbst *ins = prep(db, "INSERT INTO sp VALUES (?1)");
    EXEC_OK(db, "BEGIN IMMEDIATE");
    assert_false(store_db_autocommit(db));
    store_db_bind_int64(ins, 1, 1);
    assert_int_equal(store_db_step(ins), STORE_DB_DONE);
    store_db_reset(ins);
    EXEC_OK(db, "SAVEPOINT w");
    store_db_bind_int64(ins, 1, 1);
    assert_int_equal(store_db_step(ins), STORE_DB_CONSTRAINT_PRIMARYKEY);
    store_db_reset(ins);
    /* prepared in the aborted transaction: it runs once rolled back */
    store_dbst *count = prep(db, "SELECT count(*) FROM sp");
    EXEC_OK(db, "ROLLBACK TO w");
    EXEC_OK(db, "RELEASE w");
    store_db_bind_int64(ins, 1, 2);
    assert_int_equal(store_db_step(ins), STORE_DB_DONE);
    store_db_reset(ins);
    EXEC_OK(db, "COMMIT");
    assert_true(store_db_autocommit(db));
    assert_int_equal(store_db_step(count), STORE_DB_ROW);
    assert_int_equal(store_db_column_int64(count, 0), 2);
    store_db_reset(count);

    /* an error without a savepoint: ROLLBACK ends it */
    EXEC_OK(db, "BEGIN");
    store_db_bind_int64(ins, 1, 3);
    assert_int_equal(store_db_step(ins), STORE_DB_DONE);
    store_db_reset(ins);
    assert_int_equal(store_db_exec(db, "INSERT INTO sp VALUES (1)"),
                     STORE_DB_CONSTRAINT_PRIMARYKEY);
    assert_false(store_db_autocommit(db));
    EXEC_OK(db, "ROLLBACK");
    assert_true(store_db_autocommit(db));
    assert_int_equal(store_db_step(count), STORE_DB_ROW);
    assert_int_equal(store_db_column_int64(count, 0), 2);
    store_db_finalize(count);
    store_db_finalize(ins);
    store_db_close(db);
}

/* ---- transactions ----------------------------------------------------------------- */

static void test_reader_begin_takes_one_snapshot(void **state)
{
    (void)state;
    char t[64], iso[64];
    tname(t, sizeof t, "snap");
    store_db *w = open_role(STORE_DB_WRITER);
    store_db *r = open_role(STORE_DB_READER);
    EXEC_OK(w, "CREATE TABLE %s (v int4)", t);
    EXEC_OK(w, "INSERT INTO %s VALUES (1)", t);

    EXEC_OK(r, "BEGIN");
    query_text(r, "SHOW transaction_isolation", iso, sizeof iso);
    assert_string_equal(iso, "repeatable read");
    assert_int_equal(query_int(r, "SELECT count(*) FROM %s", t), 1);
    EXEC_OK(w, "BEGIN IMMEDIATE");
    query_text(w, "SHOW transaction_isolation", iso, sizeof iso);
    assert_string_equal(iso, "read committed");
    EXEC_OK(w, "INSERT INTO %s VALUES (2)", t);
    EXEC_OK(w, "COMMIT");
    assert_int_equal(query_int(r, "SELECT count(*) FROM %s", t), 1);
    EXEC_OK(r, "COMMIT");
    assert_int_equal(query_int(r, "SELECT count(*) FROM %s", t), 2);

    /* the same through prepared statements, as the store's readers do */
    store_dbst *begin = prep(r, "BEGIN"), *commit = prep(r, "COMMIT");
    assert_int_equal(store_db_step(begin), STORE_DB_DONE);
    store_db_reset(begin);
    assert_false(store_db_autocommit(r));
    assert_int_equal(query_int(r, "SELECT count(*) FROM %s", t), 2);
    EXEC_OK(w, "INSERT INTO %s VALUES (3)", t);
    assert_int_equal(query_int(r, "SELECT count(*) FROM %s", t), 2);
    assert_int_equal(store_db_step(commit), STORE_DB_DONE);
    store_db_reset(commit);
    assert_true(store_db_autocommit(r));
    assert_int_equal(query_int(r, "SELECT count(*) FROM %s", t), 3);
    store_db_finalize(begin);
    store_db_finalize(commit);

    /* a tool's BEGIN is PostgreSQL's own */
    store_db *tool = open_tool();
    EXEC_OK(tool, "BEGIN");
    query_text(tool, "SHOW transaction_isolation", iso, sizeof iso);
    assert_string_equal(iso, "read committed");
    EXEC_OK(tool, "ROLLBACK");
    query_text(tool, "SHOW application_name", iso, sizeof iso);
    assert_string_equal(iso, "recordd");
    store_db_close(tool);

    EXEC_OK(w, "DROP TABLE %s", t);
    store_db_close(r);
    store_db_close(w);
}

/* ---- schema changes ---------------------------------------------------------------- */

static void test_schema_change_prepares_again(void **state)
{
    (void)state;
    char t[64];
    tname(t, sizeof t, "schema");
    store_db *w = open_role(STORE_DB_WRITER);
    store_db *r = open_role(STORE_DB_READER);
    EXEC_OK(w, "CREATE TABLE %s (a int4)", t);
    EXEC_OK(w, "INSERT INTO %s VALUES (1)", t);
    store_dbst *st = prep(r, "SELECT * FROM %s", t);
    assert_int_equal(store_db_step(st), STORE_DB_ROW);
    assert_int_equal(store_db_column_count(st), 1);
    store_db_reset(st);

    /* DDL through this process's driver: prepared again before it runs */
    EXEC_OK(w, "BEGIN IMMEDIATE");
    EXEC_OK(w, "ALTER TABLE %s ADD COLUMN b int4 DEFAULT 5", t);
    EXEC_OK(w, "COMMIT");
    EXEC_OK(r, "BEGIN");
    assert_int_equal(store_db_step(st), STORE_DB_ROW);
    assert_int_equal(store_db_column_count(st), 2);
    assert_int_equal(store_db_column_int64(st, 1), 5);
    store_db_reset(st);
    EXEC_OK(r, "COMMIT");

    /* DDL from elsewhere (another process): retried outside a transaction */
    PGconn *other = PQconnectdb(g_uri);
    assert_int_equal(PQstatus(other), CONNECTION_OK);
    char sql[256];
    snprintf(sql, sizeof sql, "ALTER TABLE %s ADD COLUMN c int4 DEFAULT 6", t);
    PQclear(PQexec(other, sql));
    assert_int_equal(store_db_step(st), STORE_DB_ROW);
    assert_int_equal(store_db_column_count(st), 3);
    assert_int_equal(store_db_column_int64(st, 2), 6);
    store_db_reset(st);

    /* ...and busy inside one (aborted: the caller retries it) */
    EXEC_OK(r, "BEGIN");
    snprintf(sql, sizeof sql, "ALTER TABLE %s ADD COLUMN d int4 DEFAULT 7", t);
    PQclear(PQexec(other, sql));
    assert_int_equal(store_db_step(st), STORE_DB_BUSY);
    store_db_reset(st);
    EXEC_OK(r, "ROLLBACK");
    assert_int_equal(store_db_step(st), STORE_DB_ROW);
    assert_int_equal(store_db_column_count(st), 4);
    store_db_finalize(st);
    PQfinish(other);

    EXEC_OK(w, "DROP TABLE %s", t);
    store_db_close(r);
    store_db_close(w);
}

/* ---- losing the connection ------------------------------------------------------------ */

typedef struct lost {
    char t[64];
    store_db *db;
    store_dbst *count, *ins;
    int64_t pid;
} lost;

static int lost_setup(void **state)
{
    lost *l = calloc(1, sizeof *l);
    tname(l->t, sizeof l->t, "lost");
    l->db = open_tool();
    EXEC_OK(l->db, "DROP TABLE IF EXISTS %s", l->t);
    EXEC_OK(l->db, "CREATE TABLE %s (v int4)", l->t);
    l->count = prep(l->db, "SELECT count(*) FROM %s", l->t);
    l->ins = prep(l->db, "INSERT INTO %s VALUES (?1)", l->t);
    assert_int_equal(store_db_step(l->count), STORE_DB_ROW);
    store_db_reset(l->count);
    l->pid = query_int(l->db, "SELECT pg_backend_pid()");
    *state = l;
    return 0;
}

static int lost_teardown(void **state)
{
    lost *l = *state;
    store_db_finalize(l->count);
    store_db_finalize(l->ins);
    store_db_close(l->db);
    store_db *db = open_tool();
    exec_f(db, "DROP TABLE IF EXISTS %s", l->t);
    store_db_close(db);
    free(l);
    return 0;
}

static int64_t count_rows(lost *l)
{
    int rc = store_db_step(l->count);
    if (rc != STORE_DB_ROW)
        fail_msg("count: %d %s", rc, store_db_errmsg(l->db));
    int64_t n = store_db_column_int64(l->count, 0);
    store_db_reset(l->count);
    return n;
}

/* Outside a transaction a connection the server ended while it sat idle is
 * noticed before the next command (the server's notice and the end of the
 * stream are read first): the command runs on a new session, and
 * statements prepared before work again. */
static void test_lost_outside_a_transaction_exec_first(void **state)
{
    lost *l = *state;
    kill_backend(l->pid);
    EXEC_OK(l->db, "SELECT 1");
    assert_true(store_db_autocommit(l->db));
    assert_int_equal(count_rows(l), 0);
    assert_int_not_equal(query_int(l->db, "SELECT pg_backend_pid()"), l->pid);
    store_db_bind_int64(l->ins, 1, 1);
    assert_int_equal(store_db_step(l->ins), STORE_DB_DONE);
    store_db_reset(l->ins);
    assert_int_equal(count_rows(l), 1);
}

static void test_lost_outside_a_transaction_step_first(void **state)
{
    lost *l = *state;
    kill_backend(l->pid);
    assert_int_equal(store_db_step(l->count), STORE_DB_ROW);
    assert_int_equal(store_db_column_int64(l->count, 0), 0);
    store_db_reset(l->count);
    assert_true(store_db_autocommit(l->db));
    assert_int_not_equal(query_int(l->db, "SELECT pg_backend_pid()"), l->pid);
    store_db_bind_int64(l->ins, 1, 1);
    assert_int_equal(store_db_step(l->ins), STORE_DB_DONE);
    store_db_reset(l->ins);
    assert_int_equal(count_rows(l), 1);
}

/* Inside one, every command fails until the caller rolls back. */
static void test_lost_inside_a_transaction_until_rollback(void **state)
{
    lost *l = *state;
    EXEC_OK(l->db, "BEGIN IMMEDIATE");
    store_db_bind_int64(l->ins, 1, 1);
    assert_int_equal(store_db_step(l->ins), STORE_DB_DONE);
    store_db_reset(l->ins);
    EXEC_OK(l->db, "SAVEPOINT w");
    kill_backend(l->pid);
    store_db_bind_int64(l->ins, 1, 2);
    assert_int_equal(store_db_step(l->ins), STORE_DB_CANTOPEN);
    store_db_reset(l->ins);
    assert_false(store_db_autocommit(l->db));
    assert_int_equal(store_db_exec(l->db, "ROLLBACK TO w"), STORE_DB_CANTOPEN);
    assert_int_equal(store_db_exec(l->db, "SELECT 1"), STORE_DB_CANTOPEN);
    assert_int_equal(store_db_step(l->count), STORE_DB_CANTOPEN);
    store_db_reset(l->count);
    assert_false(store_db_autocommit(l->db));
    EXEC_OK(l->db, "ROLLBACK");
    assert_true(store_db_autocommit(l->db));
    assert_int_equal(count_rows(l), 0);
    EXEC_OK(l->db, "SELECT 1");
}

/* A reader's COMMIT (whose result it ignores) ends the lost transaction
 * too; so does a ROLLBACK through a prepared statement. */
static void test_lost_inside_a_transaction_commit_ends_it(void **state)
{
    lost *l = *state;
    store_dbst *begin = prep(l->db, "BEGIN"), *commit = prep(l->db, "COMMIT");
    store_dbst *rollback = prep(l->db, "ROLLBACK");
    assert_int_equal(store_db_step(begin), STORE_DB_DONE);
    store_db_reset(begin);
    assert_int_equal(count_rows(l), 0);
    kill_backend(l->pid);
    assert_int_equal(store_db_step(l->count), STORE_DB_CANTOPEN);
    store_db_reset(l->count);
    assert_int_equal(store_db_step(commit), STORE_DB_CANTOPEN);
    store_db_reset(commit);
    assert_true(store_db_autocommit(l->db));
    assert_int_equal(count_rows(l), 0);

    l->pid = query_int(l->db, "SELECT pg_backend_pid()");
    assert_int_equal(store_db_step(begin), STORE_DB_DONE);
    store_db_reset(begin);
    kill_backend(l->pid);
    assert_int_equal(store_db_exec(l->db, "SELECT 1"), STORE_DB_CANTOPEN);
    assert_int_equal(store_db_step(rollback), STORE_DB_DONE);
    assert_true(store_db_autocommit(l->db));
    assert_int_equal(count_rows(l), 0);
    store_db_finalize(begin);
    store_db_finalize(commit);
    store_db_finalize(rollback);
}

/* ---- opening -------------------------------------------------------------------------- */

static void test_open_failure_hides_the_password(void **state)
{
    (void)state;
    const char *uris[] = {
        "postgresql://recordd:s3cr3tpw@127.0.0.1:1/postgres",
        "postgresql://recordd:s3cr3tpw@[::1/postgres",
        "postgresql://recordd:s3cr%33tpw@127.0.0.1:1:2:3/postgres",
        "postgresql://127.0.0.1:1/postgres?password=s3cr3tpw&bogus=1",
        "postgresql://127.0.0.1:1/postgres?connect_timeout=abc&password=s3cr3tpw",
    };
    for (size_t i = 0; i < sizeof uris / sizeof uris[0]; i++) {
        store_db_options o = {.role = STORE_DB_TOOL};
        store_db *db = (store_db *)&o;
        char msg[512] = "";
        assert_int_equal(store_pg_open(uris[i], &o, &db, msg, sizeof msg), STORE_DB_CANTOPEN);
        assert_null(db);
        assert_true(strlen(msg) > 0);
        if (strstr(msg, "s3cr") != NULL || strstr(msg, "tpw") != NULL)
            fail_msg("the password shows in \"%s\"", msg);
    }
}

static void test_open_with_query_parameters(void **state)
{
    (void)state;
    char uri[512];
    store_db_options o = {.role = STORE_DB_TOOL};
    store_db *db = NULL;
    char msg[512] = "", name[64];
    snprintf(uri, sizeof uri, "%s%cconnect_timeout=7&application_name=other", g_uri,
             strchr(g_uri, '?') ? '&' : '?');
    assert_int_equal(store_pg_open(uri, &o, &db, msg, sizeof msg), STORE_DB_OK);
    query_text(db, "SHOW application_name", name, sizeof name);
    assert_string_equal(name, "other");
    store_db_close(db);
}

static void test_needs_postgres(void **state)
{
    (void)state;
    fail_msg("RECORDD_TEST_PG is not set: this test needs a PostgreSQL server, e.g. "
             "RECORDD_TEST_PG=postgresql://recordd@127.0.0.1:5432/postgres");
}

int main(void)
{
    g_uri = getenv("RECORDD_TEST_PG");
    if (g_uri == NULL || g_uri[0] == '\0') {
        const struct CMUnitTest none[] = {cmocka_unit_test(test_needs_postgres)};
        return cmocka_run_group_tests(none, NULL, NULL);
    }
#define L(name) cmocka_unit_test_setup_teardown(name, lost_setup, lost_teardown)
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_numbered_placeholders_any_order_and_quoted_question_marks),
        cmocka_unit_test(test_bare_placeholders_numbered_left_to_right),
        cmocka_unit_test(test_prepare_errors),
        cmocka_unit_test(test_integers_bools_and_nulls),
        cmocka_unit_test(test_doubles_and_numeric),
        cmocka_unit_test(test_text_lengths_and_lifetimes),
        cmocka_unit_test(test_bytea_round_trip),
        cmocka_unit_test(test_step_reset_busy),
        cmocka_unit_test(test_changes_counts_the_last_write),
        cmocka_unit_test(test_finalize_deallocates),
        cmocka_unit_test(test_unique_violations_in_sqlite_words),
        cmocka_unit_test(test_other_constraints_and_sqlstates),
        cmocka_unit_test(test_savepoint_after_an_error),
        cmocka_unit_test(test_reader_begin_takes_one_snapshot),
        cmocka_unit_test(test_schema_change_prepares_again),
        L(test_lost_outside_a_transaction_exec_first),
        L(test_lost_outside_a_transaction_step_first),
        L(test_lost_inside_a_transaction_until_rollback),
        L(test_lost_inside_a_transaction_commit_ends_it),
        cmocka_unit_test(test_open_failure_hides_the_password),
        cmocka_unit_test(test_open_with_query_parameters),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
