/* Tests for the store on PostgreSQL, against a running server named by
 * RECORDD_TEST_PG (the URI of a database, e.g.
 * postgresql://recordd@127.0.0.1:5432/postgres; `make unit` runs this test
 * under tests/pg/pgcluster.py, which starts a throw-away cluster and sets
 * it); without it the test fails. Every test gets a database of its own,
 * made through the store's driver on the server's "postgres" database and
 * dropped afterwards. They cover what the PostgreSQL backend does that
 * SQLite does not:
 *  - a COMMIT whose answer is lost (store_fault_commit): the writer looks
 *    its batch token up in _rd_commits and confirms the batch, or fails it
 *    whole and retryable with the sync ids given back, also for a batch of
 *    several writes;
 *  - writes (and pushes) after a write that failed in the writer's
 *    deferred (pipelined) attempt;
 *  - the DDL: column types, unique indexes over _rd_key() for text and
 *    JSON (a 1 MB unique value), the 63-byte name limit and hashed index
 *    names, adding and dropping unique fields;
 *  - the filter and order_by SQL: every operator on every filterable type,
 *    NULL order, keyset pagination with a page size of 2, and bulk writes
 *    by filter;
 *  - the credential generation's triggers;
 *  - two stores on one database: the listener hears the other's commits
 *    and pushes, catches up after it was away, and sync ids continue
 *    across both writers. */
#include <pthread.h>
#include <setjmp.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "store/db.h"
#include "store/store.h"
#include "store/store_int.h" /* store_fault_commit */

#define ORG "org_pg"

static const char *g_uri; /* RECORDD_TEST_PG */
static int g_dbseq;

typedef struct fixture {
    char name[64];  /* the test's database */
    char uri[1024]; /* its URI */
    store *s;
    store_conn *c;
    store_db *q; /* a tool connection to the test's database, for queries */
} fixture;

static fixture *fx;
static rd_err last; /* the error of the last helper call */

/* ---- databases ---------------------------------------------------------------- */

/* g_uri with its path (the database name) replaced by name. */
static void uri_for(const char *name, char *out, size_t size)
{
    const char *scheme = strstr(g_uri, "://");
    const char *auth = scheme != NULL ? scheme + 3 : g_uri;
    const char *path = auth + strcspn(auth, "/?");
    const char *query = path + strcspn(path, "?");
    snprintf(out, size, "%.*s/%s%s", (int)(path - g_uri), g_uri, name, query);
}

static store_db *open_tool(const char *uri)
{
    store_db_options o = {.role = STORE_DB_TOOL};
    store_db *db = NULL;
    char msg[512] = "";
    int rc = store_db_open(uri, &o, &db, msg, sizeof msg);
    if (rc != STORE_DB_OK)
        fail_msg("store_db_open: %d %s", rc, msg);
    assert_int_equal(store_db_dialect(db), STORE_DIALECT_POSTGRES);
    return db;
}

__attribute__((format(printf, 2, 3))) static int exec_f(store_db *db, const char *fmt, ...)
{
    char sql[2048];
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

/* The first column of the first row of a query on the test's database. */
__attribute__((format(printf, 1, 2))) static int64_t q_int(const char *fmt, ...)
{
    char sql[2048];
    store_dbst *st = NULL;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(sql, sizeof sql, fmt, ap);
    va_end(ap);
    if (store_db_prepare(fx->q, sql, &st) != STORE_DB_OK)
        fail_msg("prepare \"%s\": %s", sql, store_db_errmsg(fx->q));
    int rc = store_db_step(st);
    if (rc != STORE_DB_ROW)
        fail_msg("\"%s\": %d %s", sql, rc, store_db_errmsg(fx->q));
    int64_t v = store_db_column_int64(st, 0);
    store_db_finalize(st);
    return v;
}

/* Every row of a query as "a|b|c" lines joined by "\n" (NULL as "~") into
 * out. */
__attribute__((format(printf, 3, 4))) static void q_rows(char *out, size_t size, const char *fmt,
                                                         ...)
{
    char sql[2048];
    store_dbst *st = NULL;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(sql, sizeof sql, fmt, ap);
    va_end(ap);
    if (store_db_prepare(fx->q, sql, &st) != STORE_DB_OK)
        fail_msg("prepare \"%s\": %s", sql, store_db_errmsg(fx->q));
    size_t n = 0;
    int rc;
    out[0] = '\0';
    while ((rc = store_db_step(st)) == STORE_DB_ROW) {
        for (int i = 0; i < store_db_column_count(st); i++) {
            const char *v = (const char *)store_db_column_text(st, i);
            n += (size_t)snprintf(out + n, n < size ? size - n : 0, "%s%s", i ? "|" : "",
                                  v != NULL ? v : "~");
        }
        n += (size_t)snprintf(out + n, n < size ? size - n : 0, "\n");
    }
    if (rc != STORE_DB_DONE)
        fail_msg("\"%s\": %d %s", sql, rc, store_db_errmsg(fx->q));
    if (n >= size)
        fail_msg("\"%s\": the result does not fit %zu bytes", sql, size);
    store_db_finalize(st);
}

static int setup(void **state)
{
    rd_err err;
    fx = calloc(1, sizeof *fx);
    snprintf(fx->name, sizeof fx->name, "t_%d_%d", (int)getpid(), ++g_dbseq);
    store_db *admin = open_tool(g_uri);
    int rc = exec_f(admin, "CREATE DATABASE \"%s\"", fx->name);
    if (rc != STORE_DB_OK)
        fprintf(stderr, "CREATE DATABASE %s: %s\n", fx->name, store_db_errmsg(admin));
    store_db_close(admin);
    if (rc != STORE_DB_OK)
        return -1;
    uri_for(fx->name, fx->uri, sizeof fx->uri);
    store_options o = {.path = fx->uri};
    if (store_open(&o, &fx->s, &err) != RD_OK) {
        fprintf(stderr, "store_open: %s\n", err.msg);
        return -1;
    }
    if (store_conn_open(fx->s, &fx->c, &err) != RD_OK) {
        fprintf(stderr, "store_conn_open: %s\n", err.msg);
        return -1;
    }
    fx->q = open_tool(fx->uri);
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    store_db_close(fx->q);
    store_conn_close(fx->c);
    store_close(fx->s);
    store_db *admin = open_tool(g_uri);
    int rc = exec_f(admin, "DROP DATABASE IF EXISTS \"%s\" WITH (FORCE)", fx->name);
    if (rc != STORE_DB_OK)
        fprintf(stderr, "DROP DATABASE %s: %s\n", fx->name, store_db_errmsg(admin));
    store_db_close(admin);
    free(fx);
    fx = NULL;
    return rc == STORE_DB_OK ? 0 : -1;
}

/* ---- store helpers ------------------------------------------------------------ */

static json_t *parse(const char *text)
{
    json_error_t je;
    json_t *v = json_loads(text, JSON_DECODE_ANY, &je);
    if (v == NULL)
        fail_msg("bad JSON in test: %s (%s)", text, je.text);
    return v;
}

/* Pushes the schema doc (a canonical schema document) for ORG; *changes
 * (optional) gets the change lines. */
static rd_code push_doc(const json_t *doc, bool force, json_t **changes)
{
    store_write w;
    memset(&w, 0, sizeof w);
    w.op = STORE_OP_PUSH_SCHEMA;
    w.org = ORG;
    w.actor = "tester";
    w.push.schema = store_schema_from_json(doc, 0);
    w.push.force = force;
    assert_non_null(w.push.schema);
    rd_code code = store_submit_wait(fx->s, &w);
    last = w.err;
    store_schema_release(w.push.schema);
    if (changes != NULL)
        *changes = w.push.changes;
    else
        json_decref(w.push.changes);
    return code;
}

static rd_code push(const char *text, bool force, json_t **changes)
{
    json_t *doc = parse(text);
    rd_code code = push_doc(doc, force, changes);
    json_decref(doc);
    return code;
}

#define PUSH_OK(text)                                                                              \
    do {                                                                                           \
        if (push((text), false, NULL) != RD_OK)                                                    \
            fail_msg("push: %s %s (%s)", rd_code_str(last.code), last.msg, last.field);            \
    } while (0)

static bool has_line(const json_t *changes, const char *line)
{
    for (size_t i = 0; i < json_array_size(changes); i++)
        if (strcmp(json_string_value(json_array_get(changes, i)), line) == 0)
            return true;
    return false;
}

/* Creates model/id with data (taken over); *sync (optional) gets the sync
 * id. */
static rd_code create_json(const char *model, const char *id, json_t *data, int64_t *sync)
{
    store_write w;
    memset(&w, 0, sizeof w);
    w.op = STORE_OP_CREATE;
    w.org = ORG;
    w.actor = "tester";
    w.rec.model = model;
    w.rec.id = id;
    w.rec.data = data;
    rd_code code = store_submit_wait(fx->s, &w);
    last = w.err;
    if (sync != NULL)
        *sync = w.last_sync_id;
    if (code == RD_OK)
        assert_true(w.last_sync_id > 0);
    else
        assert_int_equal(w.last_sync_id, 0);
    store_record_clear(&w.rec.record);
    json_decref(data);
    return code;
}

static rd_code create(const char *model, const char *id, const char *data, int64_t *sync)
{
    return create_json(model, id, parse(data), sync);
}

static int64_t create_ok(const char *model, const char *id, const char *data)
{
    int64_t sync = 0;
    if (create(model, id, data, &sync) != RD_OK)
        fail_msg("create %s/%s: %s %s", model, id, rd_code_str(last.code), last.msg);
    return sync;
}

static rd_code get(const char *model, const char *id, store_record *rec)
{
    int64_t at = 0;
    rd_err err;
    memset(rec, 0, sizeof *rec);
    rd_code code = store_get(fx->c, ORG, model, id, rec, &at, &err);
    last = err;
    if (code == RD_OK)
        assert_true(at >= rec->sync_id);
    return code;
}

/* ORG's newest committed sync id. */
static int64_t head(void)
{
    int64_t oldest = 0, newest = 0;
    rd_err err;
    if (store_changes_bounds(fx->c, ORG, &oldest, &newest, &err) != RD_OK)
        fail_msg("store_changes_bounds: %s", err.msg);
    return newest;
}

static void assert_msg_lacks(const char *part)
{
    if (strstr(last.msg, part) != NULL)
        fail_msg("message '%s' contains '%s'", last.msg, part);
}

/* ---- 1. a COMMIT whose answer was lost ------------------------------------------ */

static const char notes_schema[] = "{\"models\":["
                                   "{\"name\":\"notes\",\"fields\":["
                                   "{\"name\":\"title\",\"type\":\"STRING\"},"
                                   "{\"name\":\"n\",\"type\":\"INTEGER\"}]},"
                                   "{\"name\":\"gate\",\"fields\":["
                                   "{\"name\":\"title\",\"type\":\"STRING\"}]}]}";

/* The COMMIT ran; its answer was lost: the writer finds the batch's token
 * and confirms the write, with the next sync id, and goes on gap-free. */
static void test_commit_lost_after_is_confirmed(void **state)
{
    (void)state;
    PUSH_OK(notes_schema);
    int64_t s0 = create_ok("notes", "n0", "{\"title\":\"zero\"}");
    int64_t commits = q_int("SELECT count(*) FROM _rd_commits");
    store_fault_commit(fx->s, STORE_FAULT_COMMIT_LOST_AFTER);
    int64_t s1 = 0;
    if (create("notes", "n1", "{\"title\":\"one\",\"n\":1}", &s1) != RD_OK)
        fail_msg("create after a lost COMMIT answer: %s %s", rd_code_str(last.code), last.msg);
    assert_int_equal(s1, s0 + 1);
    store_record r;
    assert_int_equal(get("notes", "n1", &r), RD_OK);
    assert_string_equal(json_string_value(json_object_get(r.data, "title")), "one");
    assert_int_equal(r.sync_id, s0 + 1);
    assert_int_equal(r.version, 1);
    store_record_clear(&r);
    /* the batch's token is what told the writer */
    assert_true(q_int("SELECT count(*) FROM _rd_commits") > commits);
    assert_int_equal(head(), s0 + 1);
    assert_int_equal(create_ok("notes", "n2", "{\"title\":\"two\"}"), s0 + 2);
    assert_int_equal(q_int("SELECT count(*) FROM _rd_sync_log WHERE org = '" ORG "'"), 3);
    assert_int_equal(head(), s0 + 2);
}

/* The COMMIT did not happen and its answer was lost: the write fails
 * retryable, nothing of it stays, and its sync id goes to the next write. */
static void test_commit_lost_before_fails_and_gives_the_sync_id_back(void **state)
{
    (void)state;
    PUSH_OK(notes_schema);
    int64_t s0 = create_ok("notes", "n0", "{\"title\":\"zero\"}");
    store_fault_commit(fx->s, STORE_FAULT_COMMIT_LOST_BEFORE);
    int64_t s1 = -1;
    assert_int_equal(create("notes", "n1", "{\"title\":\"one\"}", &s1), RD_UNAVAILABLE);
    assert_int_equal(s1, 0);
    store_record r;
    assert_int_equal(get("notes", "n1", &r), RD_NOT_FOUND);
    assert_int_equal(head(), s0);
    assert_int_equal(q_int("SELECT count(*) FROM \"r_" ORG "__notes\""), 1);
    assert_int_equal(create_ok("notes", "n2", "{\"title\":\"two\"}"), s0 + 1);
    /* the retry of the failed write goes through */
    assert_int_equal(create_ok("notes", "n1", "{\"title\":\"one\"}"), s0 + 2);
    assert_int_equal(get("notes", "n1", &r), RD_OK);
    assert_int_equal(r.sync_id, s0 + 2);
    store_record_clear(&r);

    /* a schema push in a lost batch is not published either */
    store_schema *before = store_schema_get(fx->s, ORG);
    int64_t rev = before->revision;
    store_schema_release(before);
    static const char more[] = "{\"models\":["
                               "{\"name\":\"notes\",\"fields\":["
                               "{\"name\":\"title\",\"type\":\"STRING\"},"
                               "{\"name\":\"n\",\"type\":\"INTEGER\"}]},"
                               "{\"name\":\"gate\",\"fields\":["
                               "{\"name\":\"title\",\"type\":\"STRING\"}]},"
                               "{\"name\":\"extra\",\"fields\":["
                               "{\"name\":\"x\",\"type\":\"STRING\"}]}]}";
    store_fault_commit(fx->s, STORE_FAULT_COMMIT_LOST_BEFORE);
    assert_int_equal(push(more, false, NULL), RD_UNAVAILABLE);
    store_schema *after = store_schema_get(fx->s, ORG);
    assert_int_equal(after->revision, rev);
    assert_null(store_schema_model(after, "extra"));
    store_schema_release(after);
    assert_int_equal(q_int("SELECT count(*) FROM information_schema.tables"
                           " WHERE table_name = 'r_" ORG "__extra'"),
                     0);
    PUSH_OK(more);
    assert_int_equal(create_ok("extra", "e1", "{\"x\":\"y\"}"), s0 + 3);
}

/* Asynchronous writes and their completions. */
typedef struct waitset {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int done;
} waitset;

static waitset g_ws = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0};

static void on_done(store_write *w)
{
    (void)w;
    pthread_mutex_lock(&g_ws.mu);
    g_ws.done++;
    pthread_cond_broadcast(&g_ws.cv);
    pthread_mutex_unlock(&g_ws.mu);
}

/* Waits until n writes submitted with on_done have completed. */
static void wait_done(int n)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 60;
    pthread_mutex_lock(&g_ws.mu);
    while (g_ws.done < n)
        if (pthread_cond_timedwait(&g_ws.cv, &g_ws.mu, &until) != 0)
            break;
    int done = g_ws.done;
    pthread_mutex_unlock(&g_ws.mu);
    if (done < n)
        fail_msg("only %d of %d writes completed", done, n);
}

static void submit(store_write *w, store_op op, const char *model, const char *id, const char *data)
{
    memset(w, 0, sizeof *w);
    w->op = op;
    w->org = ORG;
    w->actor = "tester";
    w->rec.model = model;
    w->rec.id = id;
    w->rec.data = data != NULL ? parse(data) : NULL;
    w->done = on_done;
    store_submit(fx->s, w);
}

/* Waits until at least n sessions on the test's database wait for a lock. */
static void wait_lock_waiters(int n)
{
    for (int i = 0; i < 1000; i++) {
        if (q_int("SELECT count(*) FROM pg_locks WHERE NOT granted AND database ="
                  " (SELECT oid FROM pg_database WHERE datname = current_database())") >= n)
            return;
        usleep(10 * 1000);
    }
    fail_msg("the writer never waited for the lock");
}

#define BATCH 5

/* Five writes in one batch whose COMMIT answer is lost: they share its
 * fate. The writer is held while they queue, so that it takes them
 * together, and their batch is held until the fault is armed (after the
 * COMMIT of the batch before). What holds the writer is a lock on a table
 * whose row an update must read first: the deferred (pipelined) statements
 * of a batch do not wait for the server, and the writer would reach its
 * COMMIT (where the fault is taken) while they wait for a lock. */
static void run_lost_batch(int mode)
{
    static const char *const ids[BATCH] = {"u0", "u1", "c0", "u2", "c1"};
    static const store_op ops[BATCH] = {STORE_OP_UPDATE, STORE_OP_UPDATE, STORE_OP_CREATE,
                                        STORE_OP_DELETE, STORE_OP_CREATE};
    PUSH_OK(notes_schema);
    create_ok("gate", "g0", "{\"title\":\"gate\"}");
    create_ok("notes", "u0", "{\"title\":\"u0\",\"n\":0}");
    create_ok("notes", "u1", "{\"title\":\"u1\",\"n\":1}");
    int64_t s0 = create_ok("notes", "u2", "{\"title\":\"u2\",\"n\":2}");
    store_db *lock_gate = open_tool(fx->uri), *lock_notes = open_tool(fx->uri);
    EXEC_OK(lock_gate, "BEGIN");
    EXEC_OK(lock_gate, "LOCK TABLE \"r_" ORG "__gate\" IN ACCESS EXCLUSIVE MODE");
    EXEC_OK(lock_notes, "BEGIN");
    EXEC_OK(lock_notes, "LOCK TABLE \"r_" ORG "__notes\" IN ACCESS EXCLUSIVE MODE");
    store_batch_stats st0, st1;
    store_batch_stats_get(fx->s, &st0);
    pthread_mutex_lock(&g_ws.mu);
    g_ws.done = 0;
    pthread_mutex_unlock(&g_ws.mu);

    store_write w0, w[BATCH];
    submit(&w0, STORE_OP_UPDATE, "gate", "g0", "{\"title\":\"gated\"}");
    wait_lock_waiters(1); /* the writer waits in w0's batch */
    for (int i = 0; i < BATCH; i++)
        submit(&w[i], ops[i], "notes", ids[i],
               ops[i] == STORE_OP_DELETE ? NULL : "{\"title\":\"batched\",\"n\":9}");
    EXEC_OK(lock_gate, "COMMIT"); /* w0's batch commits; the next takes all five */
    wait_done(1);
    assert_int_equal(w0.err.code, RD_OK);
    assert_int_equal(w0.last_sync_id, s0 + 1);
    wait_lock_waiters(1); /* the five wait, before their COMMIT */
    store_fault_commit(fx->s, mode);
    EXEC_OK(lock_notes, "COMMIT");
    wait_done(1 + BATCH);
    store_db_close(lock_gate);
    store_db_close(lock_notes);

    /* two batches: w0 alone, then the five together */
    store_batch_stats_get(fx->s, &st1);
    assert_int_equal(st1.batches - st0.batches, 2);
    assert_int_equal(st1.writes - st0.writes, 1 + BATCH);
    assert_int_equal(st1.counts[0] - st0.counts[0], 1); /* size 1 */
    assert_int_equal(st1.counts[3] - st0.counts[3], 1); /* size 5..8 */

    bool after = mode == STORE_FAULT_COMMIT_LOST_AFTER;
    for (int i = 0; i < BATCH; i++) {
        store_record r;
        rd_code got = get("notes", ids[i], &r);
        if (after) {
            if (w[i].err.code != RD_OK)
                fail_msg("write %d: %s %s", i, rd_code_str(w[i].err.code), w[i].err.msg);
            assert_int_equal(w[i].last_sync_id, s0 + 2 + i);
            if (ops[i] == STORE_OP_DELETE) {
                assert_int_equal(got, RD_NOT_FOUND);
            } else {
                assert_int_equal(got, RD_OK);
                assert_int_equal(r.sync_id, s0 + 2 + i);
                assert_int_equal(r.version, ops[i] == STORE_OP_UPDATE ? 2 : 1);
                assert_int_equal(json_integer_value(json_object_get(r.data, "n")), 9);
            }
        } else {
            if (w[i].err.code != RD_UNAVAILABLE)
                fail_msg("write %d: %s %s", i, rd_code_str(w[i].err.code), w[i].err.msg);
            assert_int_equal(w[i].last_sync_id, 0);
            assert_null(w[i].rec.record.data);
            if (ops[i] == STORE_OP_CREATE) {
                assert_int_equal(got, RD_NOT_FOUND);
            } else {
                assert_int_equal(got, RD_OK);
                assert_int_equal(r.version, 1);
                assert_true(r.sync_id <= s0);
            }
        }
        if (got == RD_OK)
            store_record_clear(&r);
        store_record_clear(&w[i].rec.record);
        json_decref(w[i].rec.data);
    }
    store_record_clear(&w0.rec.record);
    json_decref(w0.rec.data);
    int64_t next = after ? s0 + 2 + BATCH : s0 + 2;
    assert_int_equal(head(), next - 1);
    assert_int_equal(create_ok("notes", "after", "{\"title\":\"after\"}"), next);
    assert_int_equal(q_int("SELECT count(*) FROM \"r_" ORG "__notes\""), after ? 5 : 4);
}

static void test_commit_lost_after_confirms_the_whole_batch(void **state)
{
    (void)state;
    run_lost_batch(STORE_FAULT_COMMIT_LOST_AFTER);
}

static void test_commit_lost_before_fails_the_whole_batch(void **state)
{
    (void)state;
    run_lost_batch(STORE_FAULT_COMMIT_LOST_BEFORE);
}

/* ---- a failed write in the writer's pipeline ------------------------------------- */

static const char u_v1[] = "{\"models\":[{\"name\":\"u\",\"fields\":["
                           "{\"name\":\"u\",\"type\":\"STRING\",\"unique\":true}]}]}";
static const char u_v2[] = "{\"models\":[{\"name\":\"u\",\"fields\":["
                           "{\"name\":\"u\",\"type\":\"STRING\",\"unique\":true},"
                           "{\"name\":\"v\",\"type\":\"STRING\"}]}]}";
static const char u_v3[] = "{\"models\":[{\"name\":\"u\",\"fields\":["
                           "{\"name\":\"u\",\"type\":\"STRING\",\"unique\":true},"
                           "{\"name\":\"v\",\"type\":\"STRING\"},"
                           "{\"name\":\"w\",\"type\":\"STRING\"}]}]}";

static void reopen_pooled(int pool_size)
{
    rd_err err;
    store_conn_close(fx->c);
    store_close(fx->s);
    store_options o = {.path = fx->uri, .pool_size = pool_size};
    if (store_open(&o, &fx->s, &err) != RD_OK)
        fail_msg("store_open: %s", err.msg);
    if (store_conn_open(fx->s, &fx->c, &err) != RD_OK)
        fail_msg("store_conn_open: %s", err.msg);
}

static void reopen(void)
{
    reopen_pooled(0);
}

/* ---- the read pool ------------------------------------------------------------ */

typedef struct taker {
    store *s;
    store_conn *_Atomic got;
    int64_t waited_us;
} taker;

static void *take_one(void *arg)
{
    taker *t = arg;
    rd_err err;
    int64_t t0 = rd_now_us();
    store_conn *c = store_thread_conn(t->s, &err);
    t->waited_us = rd_now_us() - t0;
    atomic_store(&t->got, c);
    store_conn_release(t->s);
    return NULL;
}

/* With a pool of one, a second thread waits for the first to give its
 * connection back at the end of its call, then reads through the same
 * connection; a store's reads through a pooled connection work. */
static void test_read_pool_lends_one_connection_at_a_time(void **state)
{
    (void)state;
    rd_err err;
    reopen_pooled(1);
    assert_int_equal(push(notes_schema, false, NULL), RD_OK);
    create_ok("notes", "n1", "{\"title\":\"a\"}");
    store_conn *mine = store_thread_conn(fx->s, &err);
    assert_non_null(mine);
    assert_ptr_equal(store_thread_conn(fx->s, &err), mine); /* the same, within a call */
    taker t = {.s = fx->s};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, take_one, &t), 0);
    usleep(300 * 1000);
    assert_null(atomic_load(&t.got)); /* waiting: the one connection is lent */
    store_record rec;
    int64_t at = 0;
    assert_int_equal(store_get(mine, ORG, "notes", "n1", &rec, &at, &err), RD_OK);
    store_record_clear(&rec);
    store_conn_release(fx->s);
    pthread_join(th, NULL);
    assert_ptr_equal(atomic_load(&t.got), mine);
    assert_true(t.waited_us >= 250 * 1000);
}

/* store_get_many on PostgreSQL: `_id IN ($1..$64)` with NULL in the unused
 * slots, one statement per 64 ids; inside store_read_hold the reads share
 * one snapshot (a row committed after the hold is not seen). */
static void test_get_many_batches_and_holds_a_snapshot(void **state)
{
    (void)state;
    enum { N = 70 };
    char ids[N][16];
    const char *idp[N + 1];
    assert_int_equal(push(notes_schema, false, NULL), RD_OK);
    for (int i = 0; i < N; i++) {
        char data[48];
        snprintf(ids[i], sizeof ids[i], "n%d", i);
        snprintf(data, sizeof data, "{\"title\":\"t%d\",\"n\":%d}", i, i);
        create_ok("notes", ids[i], data);
        idp[i] = ids[i];
    }
    idp[N] = "ghost";
    store_schema *sch = store_schema_get(fx->s, ORG);
    const store_model *m = store_schema_model(sch, "notes");
    assert_non_null(m);
    store_record out[N + 1];
    size_t n = 0;
    rd_err err;
    uint64_t q0 = store_conn_get_many_queries(fx->c);
    assert_int_equal(store_get_many(fx->c, ORG, m, idp, N + 1, out, &n, NULL, &err), RD_OK);
    assert_int_equal(store_conn_get_many_queries(fx->c) - q0, 2);
    assert_int_equal(n, N);
    long sum = 0;
    for (size_t i = 0; i < n; i++) {
        sum += (long)json_integer_value(json_object_get(out[i].data, "n"));
        store_record_clear(&out[i]);
    }
    assert_int_equal(sum, (long)N * (N - 1) / 2);
    int64_t held = 0, at = 0;
    assert_int_equal(store_read_hold(fx->c, ORG, &held, &err), RD_OK);
    assert_int_equal(held, head());
    create_ok("notes", "late", "{\"title\":\"late\"}");
    const char *two[] = {"late", "n1"};
    assert_int_equal(store_get_many(fx->c, ORG, m, two, 2, out, &n, &at, &err), RD_OK);
    assert_int_equal(n, 1);
    assert_string_equal(out[0].id, "n1");
    assert_int_equal(at, held);
    store_record_clear(&out[0]);
    store_read_release(fx->c);
    assert_int_equal(store_get_many(fx->c, ORG, m, two, 2, out, &n, &at, &err), RD_OK);
    assert_int_equal(n, 2);
    assert_true(at > held);
    for (size_t i = 0; i < n; i++)
        store_record_clear(&out[i]);
    store_schema_release(sch);
}

/* The first write of a new writer connection fails on a unique index: the
 * writes after it must go through. */
static void test_writes_go_on_after_a_failed_write_on_a_new_connection(void **state)
{
    (void)state;
    PUSH_OK(u_v1);
    int64_t s1 = create_ok("u", "r1", "{\"u\":\"a\"}");
    reopen();
    assert_int_equal(create("u", "r2", "{\"u\":\"a\"}", NULL), RD_DUPLICATE_RECORD);
    assert_string_equal(last.field, "u");
    int64_t s3 = 0;
    rd_code code = create("u", "r3", "{\"u\":\"b\"}", &s3);
    /* regression: the duplicate fails in the deferred (pipelined) first
     * attempt and PostgreSQL skips the rest of the pipeline, including the
     * Parse of statements prepared for the first time after it; the driver
     * must prepare those again rather than run them by a name the server
     * never made ("prepared statement sN does not exist") */
    assert_string_equal(rd_code_str(code), rd_code_str(RD_OK));
    assert_int_equal(s3, s1 + 1);
}

/* The same after a push (which has every statement prepared again under a
 * new name); then a push is confirmed: it must be in the database. */
static void test_a_push_after_a_failed_write_is_committed(void **state)
{
    (void)state;
    PUSH_OK(u_v1);
    create_ok("u", "r1", "{\"u\":\"a\"}");
    PUSH_OK(u_v2);
    assert_int_equal(create("u", "r2", "{\"u\":\"a\"}", NULL), RD_DUPLICATE_RECORD);
    json_t *changes = NULL;
    assert_int_equal(push(u_v3, false, &changes), RD_OK);
    assert_true(has_line(changes, "add field u.w"));
    json_decref(changes);
    store_schema *sch = store_schema_get(fx->s, ORG);
    assert_int_equal(sch->revision, 3);
    store_schema_release(sch);
    /* regression: a DEALLOCATE queued for a statement the server never made
     * must not run inside the writer's transaction (it would abort it), and
     * the COMMIT of an aborted transaction (tag "ROLLBACK") is a failure */
    assert_int_equal(q_int("SELECT max(revision) FROM _rd_schema WHERE org = '" ORG "'"), 3);
    assert_int_equal(q_int("SELECT count(*) FROM information_schema.columns"
                           " WHERE table_name = 'r_" ORG "__u' AND column_name = 'w'"),
                     1);
}

/* ---- several processes on one database ------------------------------------------ */

static atomic_int commits_heard;
static atomic_int remote_claims, remote_credentials;

static void on_commit_count(void *arg, int64_t generation)
{
    (void)arg;
    (void)generation;
    atomic_fetch_add(&commits_heard, 1);
}

static void on_remote_count(void *arg, store_remote_kind kind, const char *org, const char *model,
                            const char *id)
{
    (void)arg;
    (void)model;
    (void)id;
    if (kind == STORE_REMOTE_CLAIM_RELEASED && org == NULL)
        atomic_fetch_add(&remote_claims, 1);
    if (kind == STORE_REMOTE_CREDENTIALS)
        atomic_fetch_add(&remote_credentials, 1);
}

static int64_t revision_of(store *s)
{
    store_schema *sch = store_schema_get(s, ORG);
    int64_t r = sch->revision;
    store_schema_release(sch);
    return r;
}

/* Waits up to 5 s for cond. */
#define EVENTUALLY(cond)                                                                           \
    do {                                                                                           \
        for (int i_ = 0; i_ < 500 && !(cond); i_++)                                                \
            usleep(10 * 1000);                                                                     \
        assert_true(cond);                                                                         \
    } while (0)

/* Two stores on one database: B's commits and pushes reach A through the
 * listener; what B did while A's listener was away reaches A by the
 * catch-up after it reconnects (every hook runs, the schema is read
 * again); and sync ids continue across the two writers. */
static void test_a_second_process_is_heard_and_caught_up_with(void **state)
{
    (void)state;
    rd_err err;
    store *a = fx->s, *b = NULL;
    store_options o = {.path = fx->uri};
    assert_int_equal(store_open(&o, &b, &err), RD_OK);
    store_on_commit(a, on_commit_count, NULL);
    store_on_remote(a, on_remote_count, NULL);
    EVENTUALLY(store_pg_listening(a) && store_pg_listening(b));

    /* live: a push and a write through B */
    fx->s = b;
    PUSH_OK(notes_schema);
    int heard = atomic_load(&commits_heard);
    int64_t s1 = create_ok("notes", "n1", "{\"title\":\"b\"}");
    fx->s = a;
    EVENTUALLY(revision_of(a) == 1);
    EVENTUALLY(atomic_load(&commits_heard) > heard);

    /* away: A's listener stops, B writes and pushes, the listener returns */
    store_pg_listen_stop(a);
    assert_false(store_pg_listening(a));
    fx->s = b;
    json_t *doc = parse(notes_schema); /* notes gains a field w */
    json_t *models = json_object_get(doc, "models");
    for (size_t i = 0; i < json_array_size(models); i++)
        if (strcmp(json_string_value(json_object_get(json_array_get(models, i), "name")),
                   "notes") == 0)
            json_array_append_new(json_object_get(json_array_get(models, i), "fields"),
                                  parse("{\"name\":\"w\",\"type\":\"STRING\"}"));
    assert_int_equal(push_doc(doc, false, NULL), RD_OK);
    json_decref(doc);
    int64_t s2 = create_ok("notes", "n2", "{\"w\":\"b\"}");
    fx->s = a;
    assert_int_equal(revision_of(a), 1);
    heard = atomic_load(&commits_heard);
    int claims = atomic_load(&remote_claims), creds = atomic_load(&remote_credentials);
    assert_int_equal(store_pg_listen_start(a, &err), RD_OK);
    EVENTUALLY(revision_of(a) == 2);
    EVENTUALLY(atomic_load(&commits_heard) > heard);
    EVENTUALLY(atomic_load(&remote_claims) > claims && atomic_load(&remote_credentials) > creds);

    /* the two writers share one sequence: A continues after B */
    assert_int_equal(s2, s1 + 1);
    assert_int_equal(create_ok("notes", "n3", "{\"w\":\"a\"}"), s2 + 1);
    store_on_remote(a, NULL, NULL);
    store_on_commit(a, NULL, NULL);
    store_close(b);
}

/* ---- 2. DDL -------------------------------------------------------------------- */

static const char things_fields[] =
    "{\"name\":\"s\",\"type\":\"STRING\"},"
    "{\"name\":\"code\",\"type\":\"STRING\",\"unique\":true},"
    "{\"name\":\"i\",\"type\":\"INTEGER\"},"
    "{\"name\":\"n\",\"type\":\"NUMBER\"},"
    "{\"name\":\"b\",\"type\":\"BOOLEAN\"},"
    "{\"name\":\"t\",\"type\":\"TIMESTAMP\"},"
    "{\"name\":\"j\",\"type\":\"JSON\"},"
    "{\"name\":\"e\",\"type\":\"ENUM\",\"enumValues\":[\"x\",\"y\"]},"
    "{\"name\":\"uj\",\"type\":\"JSON\",\"unique\":true},"
    "{\"name\":\"a\",\"type\":\"STRING\"},"
    "{\"name\":\"k\",\"type\":\"INTEGER\"}";

/* The things model with extra fields (JSON text, "" for none). */
static char *things_schema(const char *extra)
{
    char *text = malloc(4096);
    snprintf(text, 4096,
             "{\"models\":[{\"name\":\"things\",\"fields\":[%s%s%s],"
             "\"uniqueTogether\":[[\"a\",\"k\"]]}]}",
             things_fields, extra[0] ? "," : "", extra);
    return text;
}

static void test_ddl_column_types_and_unique_indexes(void **state)
{
    (void)state;
    char *schema = things_schema("");
    PUSH_OK(schema);
    free(schema);
    char rows[8192];
    q_rows(rows, sizeof rows,
           "SELECT column_name, data_type, coalesce(collation_name, '') FROM"
           " information_schema.columns WHERE table_name = 'r_" ORG "__things'"
           " ORDER BY column_name COLLATE \"C\"");
    static const char want_cols[] = "_created_at|bigint|\n"
                                    "_created_by|text|C\n"
                                    "_group|text|C\n"
                                    "_id|text|C\n"
                                    "_s_a|bigint|\n"
                                    "_s_b|bigint|\n"
                                    "_s_code|bigint|\n"
                                    "_s_e|bigint|\n"
                                    "_s_i|bigint|\n"
                                    "_s_j|bigint|\n"
                                    "_s_k|bigint|\n"
                                    "_s_n|bigint|\n"
                                    "_s_s|bigint|\n"
                                    "_s_t|bigint|\n"
                                    "_s_uj|bigint|\n"
                                    "_sync_id|bigint|\n"
                                    "_updated_at|bigint|\n"
                                    "_updated_by|text|C\n"
                                    "_version|bigint|\n"
                                    "a|text|C\n"
                                    "b|boolean|\n"
                                    "code|text|C\n"
                                    "e|text|C\n"
                                    "i|bigint|\n"
                                    "j|jsonb|\n"
                                    "k|bigint|\n"
                                    "n|double precision|\n"
                                    "s|text|C\n"
                                    "t|bigint|\n"
                                    "uj|jsonb|\n";
    assert_string_equal(rows, want_cols);

    /* unique indexes: text and JSON through _rd_key, integers as they are */
    q_rows(rows, sizeof rows,
           "SELECT indexname, regexp_replace(indexdef, '^.* USING btree ', '') FROM pg_indexes"
           " WHERE tablename = 'r_" ORG "__things' ORDER BY indexname COLLATE \"C\"");
    static const char want_idx[] = "r_" ORG "__things:u:code|(_rd_key(code))\n"
                                   "r_" ORG "__things:u:uj|(_rd_key((uj)::text))\n"
                                   "r_" ORG "__things:ut:a,k|(_rd_key(a), k)\n"
                                   "r_" ORG "__things_pkey|(_id)\n";
    assert_string_equal(rows, want_idx);
    assert_int_equal(q_int("SELECT count(*) FROM pg_indexes WHERE tablename = 'r_" ORG
                           "__things' AND indexdef LIKE 'CREATE UNIQUE INDEX %%'"),
                     4);

    /* every type stored and read back */
    create_ok("things", "t1",
              "{\"s\":\"caf\\u00e9 \\\"q\\\" \\\\\",\"code\":\"c1\",\"i\":-9007199254740991,"
              "\"n\":-0.1,\"b\":false,\"t\":\"1969-12-31T23:59:59.999999Z\","
              "\"j\":{\"z\":[1,{\"y\":null}],\"a\":\"b\"},\"e\":\"y\",\"uj\":[1,2],"
              "\"a\":\"x\",\"k\":1}");
    store_record r;
    assert_int_equal(get("things", "t1", &r), RD_OK);
    json_t *want = parse("{\"s\":\"caf\\u00e9 \\\"q\\\" \\\\\",\"code\":\"c1\","
                         "\"i\":-9007199254740991,\"n\":-0.1,\"b\":false,"
                         "\"t\":\"1969-12-31T23:59:59.999999Z\","
                         "\"j\":{\"z\":[1,{\"y\":null}],\"a\":\"b\"},\"e\":\"y\",\"uj\":[1,2],"
                         "\"a\":\"x\",\"k\":1}");
    if (!json_equal(r.data, want)) {
        char *got = json_dumps(r.data, JSON_SORT_KEYS | JSON_COMPACT);
        fail_msg("read back %s", got);
    }
    assert_true(json_is_real(json_object_get(r.data, "n")));
    assert_true(json_is_integer(json_object_get(r.data, "i")));
    json_decref(want);
    store_record_clear(&r);
}

#define BIG (1u << 20)

/* A value of BIG bytes: "QbigQ" then a pattern, the last byte last. */
static json_t *big_string(char last_char)
{
    char *v = malloc(BIG + 1);
    for (size_t i = 0; i < BIG; i++)
        v[i] = (char)('a' + (i * 7) % 26);
    memcpy(v, "QbigQ", 5);
    v[BIG - 1] = last_char;
    v[BIG] = '\0';
    json_t *s = json_stringn(v, BIG);
    free(v);
    return s;
}

static void test_ddl_unique_megabyte_values(void **state)
{
    (void)state;
    char *schema = things_schema("");
    PUSH_OK(schema);
    free(schema);
    json_t *d1 = json_pack("{s:o,s:i}", "code", big_string('1'), "k", 1);
    int64_t s1 = 0;
    if (create_json("things", "big1", d1, &s1) != RD_OK)
        fail_msg("1 MB unique value: %s %s", rd_code_str(last.code), last.msg);
    store_record r;
    assert_int_equal(get("things", "big1", &r), RD_OK);
    json_t *want = big_string('1');
    assert_true(json_equal(json_object_get(r.data, "code"), want));
    json_decref(want);
    store_record_clear(&r);

    /* the same megabyte again: refused, naming the field, not the value */
    json_t *d2 = json_pack("{s:o}", "code", big_string('1'));
    assert_int_equal(create_json("things", "big2", d2, NULL), RD_DUPLICATE_RECORD);
    assert_string_equal(last.field, "code");
    assert_msg_lacks("QbigQ");
    assert_msg_lacks("\\x");
    assert_int_equal(get("things", "big2", &r), RD_NOT_FOUND);
    /* one byte apart: another value */
    json_t *d3 = json_pack("{s:o}", "code", big_string('2'));
    assert_int_equal(create_json("things", "big3", d3, NULL), RD_OK);

    /* composite: a megabyte string with an integer */
    json_t *d4 = json_pack("{s:o,s:i}", "a", big_string('a'), "k", 5);
    assert_int_equal(create_json("things", "c1", d4, NULL), RD_OK);
    json_t *d5 = json_pack("{s:o,s:i}", "a", big_string('a'), "k", 6);
    assert_int_equal(create_json("things", "c2", d5, NULL), RD_OK);
    json_t *d6 = json_pack("{s:o,s:i}", "a", big_string('a'), "k", 5);
    assert_int_equal(create_json("things", "c3", d6, NULL), RD_DUPLICATE_RECORD);
    assert_string_equal(last.field, "a,k");
    assert_msg_lacks("QbigQ");
    assert_int_equal(create("things", "c4", "{\"a\":\"same\",\"k\":5}", NULL), RD_OK);
    assert_int_equal(create("things", "c5", "{\"a\":\"same\",\"k\":5}", NULL), RD_DUPLICATE_RECORD);
    assert_string_equal(last.field, "a,k");
    /* a null in the composite never conflicts */
    assert_int_equal(create("things", "c6", "{\"a\":\"same\"}", NULL), RD_OK);
    assert_int_equal(create("things", "c7", "{\"a\":\"same\"}", NULL), RD_OK);

    /* JSON: the same value (jsonb's form) conflicts */
    assert_int_equal(create("things", "j1", "{\"uj\":{\"p\":1,\"q\":[true]}}", NULL), RD_OK);
    assert_int_equal(create("things", "j2", "{\"uj\":{\"p\":1,\"q\":[true]}}", NULL),
                     RD_DUPLICATE_RECORD);
    /* a JSON field's key is "_rd_key(uj::text)" in PostgreSQL's DETAIL: the
     * field is still named "uj", however short */
    assert_string_equal(last.field, "uj");
    assert_int_equal(create("things", "j3", "{\"uj\":{\"p\":1,\"q\":[false]}}", NULL), RD_OK);
    /* an update into a taken value */
    store_write w;
    memset(&w, 0, sizeof w);
    w.op = STORE_OP_UPDATE;
    w.org = ORG;
    w.actor = "tester";
    w.rec.model = "things";
    w.rec.id = "c4";
    w.rec.data = parse("{\"k\":6,\"a\":\"x\"}");
    assert_int_equal(store_submit_wait(fx->s, &w), RD_OK);
    json_decref(w.rec.data);
    store_record_clear(&w.rec.record);
    w.rec.id = "c6";
    w.rec.data = parse("{\"k\":6}");
    assert_int_equal(store_submit_wait(fx->s, &w), RD_OK);
    json_decref(w.rec.data);
    store_record_clear(&w.rec.record);
    w.rec.id = "c7";
    w.rec.data = parse("{\"k\":6}");
    assert_int_equal(store_submit_wait(fx->s, &w), RD_DUPLICATE_RECORD);
    assert_string_equal(w.err.field, "a,k");
    json_decref(w.rec.data);
    store_record_clear(&w.rec.record);
}

/* A name of n characters: prefix, then 'x's. */
static char *name_of(const char *prefix, size_t n)
{
    char *s = malloc(n + 1);
    memset(s, 'x', n);
    memcpy(s, prefix, strlen(prefix));
    s[n] = '\0';
    return s;
}

static json_t *field_json(const char *name, const char *type, bool unique)
{
    json_t *f = json_pack("{s:s,s:s}", "name", name, "type", type);
    if (unique)
        json_object_set_new(f, "unique", json_true());
    return f;
}

static void test_ddl_long_names(void **state)
{
    (void)state;
    /* "r_org_pg__" + the model: 63 bytes at most */
    size_t room = STORE_PG_NAME_MAX - strlen("r_" ORG "__");
    char *m_ok = name_of("m", room), *m_long = name_of("m", room + 1);
    char *f_long = name_of("g", STORE_PG_NAME_MAX - 2);
    json_t *doc;

    doc = json_pack("{s:[{s:s,s:[o]}]}", "models", "name", m_long, "fields",
                    field_json("x", "STRING", false));
    assert_int_equal(push_doc(doc, false, NULL), RD_VALIDATION_FAILED);
    assert_string_equal(last.field, "models[0].name");
    json_decref(doc);
    doc = json_pack("{s:[{s:s,s:[o]},{s:s,s:[o]}]}", "models", "name", "short", "fields",
                    field_json("x", "STRING", false), "name", m_long, "fields",
                    field_json("x", "STRING", false));
    assert_int_equal(push_doc(doc, false, NULL), RD_VALIDATION_FAILED);
    assert_string_equal(last.field, "models[1].name");
    json_decref(doc);
    doc = json_pack("{s:[{s:s,s:[o]}]}", "models", "name", "short", "fields",
                    field_json(f_long, "STRING", false));
    assert_int_equal(push_doc(doc, false, NULL), RD_VALIDATION_FAILED);
    assert_string_equal(last.field, "models[0].fields[0].name");
    json_decref(doc);
    doc = json_pack("{s:[{s:s,s:[o,o]}]}", "models", "name", "short", "fields",
                    field_json("x", "STRING", false), field_json(f_long, "INTEGER", false));
    assert_int_equal(push_doc(doc, false, NULL), RD_VALIDATION_FAILED);
    assert_string_equal(last.field, "models[0].fields[1].name");
    json_decref(doc);
    store_schema *sch = store_schema_get(fx->s, ORG);
    assert_int_equal(sch->revision, 0);
    store_schema_release(sch);

    /* the longest names that fit: three 60-character fields, uniques over
     * them whose names are cut and end in a hash (two of them alike in
     * their first 44 bytes and more) */
    char *fa = name_of("fa", STORE_PG_NAME_MAX - 3), *fb = name_of("fb", STORE_PG_NAME_MAX - 3),
         *fc = name_of("fc", STORE_PG_NAME_MAX - 3);
    doc = json_pack("{s:[{s:s,s:[o,o,o],s:[[s,s],[s,s,s]]}]}", "models", "name", m_ok, "fields",
                    field_json(fa, "STRING", false), field_json(fb, "INTEGER", false),
                    field_json(fc, "STRING", true), "uniqueTogether", fa, fb, fa, fb, fc);
    if (push_doc(doc, false, NULL) != RD_OK)
        fail_msg("push: %s %s", rd_code_str(last.code), last.msg);
    char table[128], rows[4096];
    snprintf(table, sizeof table, "r_%s__%s", ORG, m_ok);
    assert_int_equal(strlen(table), STORE_PG_NAME_MAX);
    assert_int_equal(
        q_int("SELECT count(*) FROM information_schema.tables WHERE table_name = '%s'", table), 1);
    assert_int_equal(q_int("SELECT count(*) FROM information_schema.columns WHERE table_name ="
                           " '%s' AND column_name = '_s_%s'",
                           table, fa),
                     1);
    q_rows(rows, sizeof rows,
           "SELECT indexname FROM pg_indexes WHERE tablename = '%s'"
           " AND indexdef NOT LIKE '%%USING btree (_id)' ORDER BY indexname COLLATE \"C\"",
           table);
    int n = 0;
    for (char *line = rows, *end; *line != '\0'; line = end + 1, n++) {
        end = strchr(line, '\n');
        *end = '\0';
        size_t len = strlen(line);
        assert_true(len <= STORE_PG_NAME_MAX);
        assert_int_equal(len, 44 + 1 + 16);
        assert_memory_equal(line, table, 44);
        assert_int_equal(line[44], '~');
        assert_int_equal(strspn(line + 45, "0123456789abcdef"), 16);
    }
    assert_int_equal(n, 3);
    assert_int_equal(
        q_int("SELECT count(DISTINCT indexname) FROM pg_indexes WHERE tablename = '%s'", table), 4);

    /* the indexes work, and errors name the fields */
    char data[512];
    snprintf(data, sizeof data, "{\"%s\":\"one\",\"%s\":1,\"%s\":\"u1\"}", fa, fb, fc);
    assert_int_equal(create(m_ok, "r1", data, NULL), RD_OK);
    snprintf(data, sizeof data, "{\"%s\":\"two\",\"%s\":1,\"%s\":\"u1\"}", fa, fb, fc);
    assert_int_equal(create(m_ok, "r2", data, NULL), RD_DUPLICATE_RECORD);
    assert_string_equal(last.field, fc);
    snprintf(data, sizeof data, "{\"%s\":\"one\",\"%s\":1,\"%s\":\"u2\"}", fa, fb, fc);
    assert_int_equal(create(m_ok, "r3", data, NULL), RD_DUPLICATE_RECORD);
    char pair[160];
    snprintf(pair, sizeof pair, "%s,%s", fa, fb);
    assert_string_equal(last.field, pair);

    /* dropping the uniques finds the cut names */
    json_t *changes = NULL;
    json_decref(doc);
    doc = json_pack("{s:[{s:s,s:[o,o,o]}]}", "models", "name", m_ok, "fields",
                    field_json(fa, "STRING", false), field_json(fb, "INTEGER", false),
                    field_json(fc, "STRING", false));
    if (push_doc(doc, false, &changes) != RD_OK)
        fail_msg("push: %s %s", rd_code_str(last.code), last.msg);
    char line[256];
    snprintf(line, sizeof line, "drop unique %s.%s", m_ok, fc);
    assert_true(has_line(changes, line));
    json_decref(changes);
    assert_int_equal(q_int("SELECT count(*) FROM pg_indexes WHERE tablename = '%s'", table), 1);
    assert_int_equal(create(m_ok, "r3", data, NULL), RD_OK);
    json_decref(doc);
    free(m_ok);
    free(m_long);
    free(f_long);
    free(fa);
    free(fb);
    free(fc);
}

static void test_ddl_add_and_drop_unique_fields(void **state)
{
    (void)state;
    char *v1 = things_schema("");
    char *v2 = things_schema("{\"name\":\"extra\",\"type\":\"STRING\",\"unique\":true}");
    PUSH_OK(v1);
    create_ok("things", "a1", "{\"s\":\"shared-v\",\"code\":\"k1\"}");
    create_ok("things", "a2", "{\"s\":\"shared-v\",\"code\":\"k2\"}");

    /* add a unique field */
    json_t *changes = NULL;
    assert_int_equal(push(v2, false, &changes), RD_OK);
    assert_true(has_line(changes, "add field things.extra"));
    assert_true(has_line(changes, "add unique things.extra"));
    json_decref(changes);
    assert_int_equal(q_int("SELECT count(*) FROM pg_indexes WHERE indexname = 'r_" ORG
                           "__things:u:extra' AND indexdef LIKE '%%(_rd_key(extra))'"),
                     1);
    assert_int_equal(create("things", "a3", "{\"extra\":\"e\"}", NULL), RD_OK);
    assert_int_equal(create("things", "a4", "{\"extra\":\"e\"}", NULL), RD_DUPLICATE_RECORD);
    assert_string_equal(last.field, "extra");
    assert_int_equal(create("things", "a4", "{\"extra\":\"f\"}", NULL), RD_OK);

    /* drop it: destructive, then forced */
    assert_int_equal(push(v1, false, NULL), RD_DESTRUCTIVE_CHANGE);
    assert_int_equal(
        q_int("SELECT count(*) FROM pg_indexes WHERE indexname = 'r_" ORG "__things:u:extra'"), 1);
    assert_int_equal(push(v1, true, &changes), RD_OK);
    assert_true(has_line(changes, "drop field things.extra (forced)"));
    json_decref(changes);
    assert_int_equal(
        q_int("SELECT count(*) FROM pg_indexes WHERE indexname = 'r_" ORG "__things:u:extra'"), 0);
    assert_int_equal(
        q_int("SELECT count(*) FROM information_schema.columns WHERE table_name = 'r_" ORG
              "__things' AND column_name IN ('extra', '_s_extra')"),
        0);
    /* and add it again: the old values are gone, so no conflict */
    assert_int_equal(push(v2, false, NULL), RD_OK);
    assert_int_equal(create("things", "a5", "{\"extra\":\"e\"}", NULL), RD_OK);

    /* make an existing field unique over duplicates: refused, nothing changes */
    char *v3 = things_schema("{\"name\":\"extra\",\"type\":\"STRING\",\"unique\":true}");
    char *at = strstr(v3, "{\"name\":\"s\",\"type\":\"STRING\"}");
    assert_non_null(at);
    char *v3u = malloc(strlen(v3) + 32);
    sprintf(v3u, "%.*s{\"name\":\"s\",\"type\":\"STRING\",\"unique\":true}%s", (int)(at - v3), v3,
            at + strlen("{\"name\":\"s\",\"type\":\"STRING\"}"));
    store_schema *sch = store_schema_get(fx->s, ORG);
    int64_t rev = sch->revision;
    store_schema_release(sch);
    assert_int_equal(push(v3u, false, NULL), RD_DUPLICATE_RECORD);
    assert_string_equal(last.field, "s");
    assert_msg_lacks("shared-v");
    sch = store_schema_get(fx->s, ORG);
    assert_int_equal(sch->revision, rev);
    store_schema_release(sch);
    assert_int_equal(
        q_int("SELECT count(*) FROM pg_indexes WHERE indexname = 'r_" ORG "__things:u:s'"), 0);
    /* once the duplicate is gone it works, and unique off drops the index */
    store_write w;
    memset(&w, 0, sizeof w);
    w.op = STORE_OP_DELETE;
    w.org = ORG;
    w.actor = "tester";
    w.rec.model = "things";
    w.rec.id = "a2";
    assert_int_equal(store_submit_wait(fx->s, &w), RD_OK);
    store_record_clear(&w.rec.record);
    assert_int_equal(push(v3u, false, &changes), RD_OK);
    assert_true(has_line(changes, "add unique things.s"));
    json_decref(changes);
    /* a write that succeeds first: a failing write right after a push
     * wedges the writer (test_writes_go_on_after_a_failed_write_on_a_new_connection) */
    assert_int_equal(create("things", "a7", "{\"s\":\"other\"}", NULL), RD_OK);
    assert_int_equal(q_int("SELECT count(*) FROM pg_indexes WHERE indexname = 'r_" ORG
                           "__things:u:s' AND indexdef LIKE '%%(_rd_key(s))'"),
                     1);
    assert_int_equal(create("things", "a6", "{\"s\":\"shared-v\"}", NULL), RD_DUPLICATE_RECORD);
    assert_string_equal(last.field, "s");
    assert_int_equal(push(v2, false, &changes), RD_OK);
    assert_true(has_line(changes, "drop unique things.s"));
    json_decref(changes);
    assert_int_equal(
        q_int("SELECT count(*) FROM pg_indexes WHERE indexname = 'r_" ORG "__things:u:s'"), 0);
    assert_int_equal(create("things", "a6", "{\"s\":\"shared-v\"}", NULL), RD_OK);
    free(v1);
    free(v2);
    free(v3);
    free(v3u);
}

/* ---- 3. filters, order and listing ---------------------------------------------------- */

static const char items_schema[] =
    "{\"models\":[{\"name\":\"items\",\"fields\":["
    "{\"name\":\"s\",\"type\":\"STRING\"},"
    "{\"name\":\"i\",\"type\":\"INTEGER\"},"
    "{\"name\":\"n\",\"type\":\"NUMBER\"},"
    "{\"name\":\"b\",\"type\":\"BOOLEAN\"},"
    "{\"name\":\"t\",\"type\":\"TIMESTAMP\"},"
    "{\"name\":\"e\",\"type\":\"ENUM\",\"enumValues\":[\"red\",\"green\",\"blue\"]},"
    "{\"name\":\"j\",\"type\":\"JSON\"}]}]}";

/* One record of the data set; NULL strings, has_* false and b < 0 are
 * unset. */
typedef struct item {
    const char *id, *group, *s;
    bool has_i;
    int64_t i;
    bool has_n;
    double n;
    int b;
    const char *t, *e, *j;
} item;

#define U8_UNICODE                                                                                 \
    "\xc3\x9cn\xc3\xaf"                                                                            \
    "c\xc3\xb6"                                                                                    \
    "d\xc3\xa9"                                           /* Ünïcödé */
#define U8_NIHONGO "\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e" /* 日本語 */

static const item items[] = {
    {"r01", "g1", "alpha", true, 3, true, -2.5, 1, "2024-01-01T00:00:00Z", "red",
     "{\"k\":[1,\"x\",null]}"},
    {"r02", "g2", NULL, true, -7, true, 0.1, 0, NULL, "green", NULL},
    {"r03", "g1", "quote\"d", false, 0, true, 3, -1, "1969-07-20T20:17:40Z", "blue", "\"t\""},
    {"r04", "g2", "back\\slash", true, 42, false, 0, 1, "2024-01-01T00:00:00.5Z", NULL, "[]"},
    {"r05", "g1", U8_UNICODE, true, 0, true, -0.001, 0, "2030-12-31T23:59:59.999999Z", "red", NULL},
    {"r06", "g2", "alpha", true, 3, true, 1e10, 1, "2024-01-01T00:00:00Z", "blue",
     "{\"b\":{\"c\":true},\"a\":1}"},
    {"r07", "g1", "", true, -9007199254740991, true, 0.1, -1, "2000-02-29T12:00:00+02:00", "green",
     "3.5"},
    {"r08", "g2", "zeta", false, 0, false, 0, 0, NULL, NULL, NULL},
    {"r09", "g1", U8_NIHONGO, true, 100, true, -2.5, 1, "1970-01-01T00:00:00Z", "red", "false"},
    {"r10", "g2", "a\"\\b", true, 2, true, 2.5, 0, "2024-06-15T08:30:00.123Z", "blue", NULL},
    {"r11", "g1", NULL, true, 3, false, 0, -1, NULL, NULL, NULL},
    {"r12", "g2", "Alpha", true, -1, true, 0, 1, "1999-12-31T23:59:59Z", "green", "{}"},
    {"r13", "g1", "alpha ", true, 9007199254740991, true, -1e-300, 0, "1969-07-20T20:17:40.000001Z",
     "blue", NULL},
};
#define N_ITEMS (sizeof items / sizeof items[0])

static int64_t item_sync[N_ITEMS]; /* the sync id each create took */
static store_schema *g_schema;
static const store_model *g_model;

static json_t *item_json(const item *it)
{
    json_t *d = json_object();
    if (it->s != NULL)
        json_object_set_new(d, "s", json_string(it->s));
    if (it->has_i)
        json_object_set_new(d, "i", json_integer(it->i));
    if (it->has_n)
        json_object_set_new(d, "n", json_real(it->n));
    if (it->b >= 0)
        json_object_set_new(d, "b", json_boolean(it->b));
    if (it->t != NULL)
        json_object_set_new(d, "t", json_string(it->t));
    if (it->e != NULL)
        json_object_set_new(d, "e", json_string(it->e));
    if (it->j != NULL)
        json_object_set_new(d, "j", parse(it->j));
    return d;
}

/* Pushes items_schema and creates every item (in an order of its own, not
 * by id). */
static void load_items(void)
{
    PUSH_OK(items_schema);
    for (size_t k = 0; k < N_ITEMS; k++) {
        size_t x = (k * 5) % N_ITEMS; /* 5 is prime to 13 */
        store_write w;
        memset(&w, 0, sizeof w);
        w.op = STORE_OP_CREATE;
        w.org = ORG;
        w.actor = "tester";
        w.rec.model = "items";
        w.rec.id = items[x].id;
        w.rec.group = items[x].group;
        w.rec.data = item_json(&items[x]);
        if (store_submit_wait(fx->s, &w) != RD_OK)
            fail_msg("create %s: %s", items[x].id, w.err.msg);
        item_sync[x] = w.last_sync_id;
        json_decref(w.rec.data);
        store_record_clear(&w.rec.record);
    }
    store_schema_release(g_schema);
    g_schema = store_schema_get(fx->s, ORG);
    g_model = store_schema_model(g_schema, "items");
    assert_non_null(g_model);
}

static int list_setup(void **state)
{
    if (setup(state) != 0)
        return -1;
    load_items();
    return 0;
}

static int list_teardown(void **state)
{
    store_schema_release(g_schema);
    g_schema = NULL;
    g_model = NULL;
    return teardown(state);
}

/* A field of the data set as the filter sees it. */
typedef enum fkind { K_STR, K_INT, K_REAL, K_BOOL, K_TIME } fkind;

/* Item x's value of field f in comparable form: *null when unset. */
typedef struct cval {
    bool null;
    const char *s;
    int64_t i;
    double d;
} cval;

static fkind field_kind(const char *f)
{
    if (strcmp(f, "i") == 0 || strcmp(f, "syncId") == 0 || strcmp(f, "version") == 0)
        return K_INT;
    if (strcmp(f, "n") == 0)
        return K_REAL;
    if (strcmp(f, "b") == 0)
        return K_BOOL;
    if (strcmp(f, "t") == 0)
        return K_TIME;
    return K_STR; /* s, e, id, group */
}

static cval item_val(size_t x, const char *f)
{
    const item *it = &items[x];
    cval v = {.null = false};
    if (strcmp(f, "s") == 0) {
        v.null = it->s == NULL;
        v.s = it->s;
    } else if (strcmp(f, "e") == 0) {
        v.null = it->e == NULL;
        v.s = it->e;
    } else if (strcmp(f, "id") == 0) {
        v.s = it->id;
    } else if (strcmp(f, "group") == 0) {
        v.s = it->group;
    } else if (strcmp(f, "i") == 0) {
        v.null = !it->has_i;
        v.i = it->i;
    } else if (strcmp(f, "n") == 0) {
        v.null = !it->has_n;
        v.d = it->n;
    } else if (strcmp(f, "b") == 0) {
        v.null = it->b < 0;
        v.i = it->b;
    } else if (strcmp(f, "t") == 0) {
        v.null = it->t == NULL;
        if (!v.null && rd_parse_rfc3339(it->t, &v.i) != 0)
            fail_msg("bad timestamp %s", it->t);
    } else if (strcmp(f, "syncId") == 0) {
        v.i = item_sync[x];
    } else if (strcmp(f, "version") == 0) {
        v.i = 1;
    } else {
        fail_msg("no field %s", f);
    }
    return v;
}

/* Compares two non-null values of kind k. */
static int cmp_vals(fkind k, const cval *a, const cval *b)
{
    switch (k) {
    case K_STR:
        return strcmp(a->s, b->s); /* bytewise, as COLLATE "C" */
    case K_INT:
    case K_BOOL:
    case K_TIME:
        return a->i < b->i ? -1 : a->i > b->i;
    case K_REAL:
        return a->d < b->d ? -1 : a->d > b->d;
    }
    return 0;
}

/* One comparison of a filter: field op literal. The literal: kind LIT_*
 * and its text (strings unescaped; numbers as written). */
typedef enum lit { L_NULL, L_STR, L_NUM, L_BOOL } lit;

typedef struct cond {
    const char *field, *op;
    lit kind;
    const char *text;
} cond;

/* Appends the filter text of c to out. */
static void cond_text(const cond *c, char *out, size_t size)
{
    size_t n = strlen(out);
    n += (size_t)snprintf(out + n, size - n, "%s%s %s ", n ? " AND " : "", c->field, c->op);
    switch (c->kind) {
    case L_NULL:
        snprintf(out + n, size - n, "null");
        break;
    case L_NUM:
    case L_BOOL:
        snprintf(out + n, size - n, "%s", c->text);
        break;
    case L_STR:
        out[n++] = '"';
        for (const char *p = c->text; *p && n + 3 < size; p++) {
            if (*p == '"' || *p == '\\')
                out[n++] = '\\';
            out[n++] = *p;
        }
        out[n++] = '"';
        out[n] = '\0';
        break;
    }
}

/* Whether item x satisfies c (SQL: a comparison with an unset value is
 * false). */
static bool cond_holds(const cond *c, size_t x)
{
    cval v = item_val(x, c->field);
    bool eq = strcmp(c->op, "=") == 0, ne = strcmp(c->op, "!=") == 0;
    if (c->kind == L_NULL)
        return eq ? v.null : !v.null;
    if (v.null)
        return false;
    fkind k = field_kind(c->field);
    int r;
    if (k == K_STR) {
        r = strcmp(v.s, c->text);
    } else if (k == K_TIME) {
        int64_t t;
        assert_int_equal(rd_parse_rfc3339(c->text, &t), 0);
        r = v.i < t ? -1 : v.i > t;
    } else if (k == K_BOOL) {
        int64_t b = strcmp(c->text, "true") == 0;
        r = v.i < b ? -1 : v.i > b;
    } else {
        /* numbers: an integer literal against an integer exactly, else as
         * doubles */
        bool frac = strchr(c->text, '.') != NULL;
        if (k == K_INT && !frac) {
            int64_t l = strtoll(c->text, NULL, 10);
            r = v.i < l ? -1 : v.i > l;
        } else {
            double a = k == K_INT ? (double)v.i : v.d, l = strtod(c->text, NULL);
            r = a < l ? -1 : a > l;
        }
    }
    if (eq)
        return r == 0;
    if (ne)
        return r != 0;
    if (strcmp(c->op, "<") == 0)
        return r < 0;
    if (strcmp(c->op, "<=") == 0)
        return r <= 0;
    if (strcmp(c->op, ">") == 0)
        return r > 0;
    return r >= 0;
}

/* An order: up to 4 terms, field and direction. */
typedef struct order {
    const char *text; /* as given to store_order_parse */
    const char *field[4];
    bool desc[4];
} order;

static const order *g_order; /* for sort_cmp */

static int sort_cmp(const void *pa, const void *pb)
{
    size_t a = *(const size_t *)pa, b = *(const size_t *)pb;
    bool by_id = false;
    for (int k = 0; k < 4 && g_order->field[k] != NULL; k++) {
        const char *f = g_order->field[k];
        by_id = by_id || strcmp(f, "id") == 0;
        cval va = item_val(a, f), vb = item_val(b, f);
        int r;
        if (va.null || vb.null)
            r = va.null && vb.null ? 0 : va.null ? -1 : 1; /* NULL first ascending */
        else
            r = cmp_vals(field_kind(f), &va, &vb);
        if (g_order->desc[k])
            r = -r;
        if (r != 0)
            return r;
    }
    return by_id ? 0 : strcmp(items[a].id, items[b].id);
}

/* The ids of the items matching conds[0..n) in order o, as "r01,r02". */
static void expected_ids(const cond *conds, size_t n, const order *o, char *out, size_t size)
{
    size_t pick[N_ITEMS], np = 0;
    for (size_t x = 0; x < N_ITEMS; x++) {
        bool ok = true;
        for (size_t k = 0; k < n && ok; k++)
            ok = cond_holds(&conds[k], x);
        if (ok)
            pick[np++] = x;
    }
    g_order = o;
    qsort(pick, np, sizeof pick[0], sort_cmp);
    out[0] = '\0';
    for (size_t k = 0; k < np; k++)
        snprintf(out + strlen(out), size - strlen(out), "%s%s", k ? "," : "", items[pick[k]].id);
}

/* Walks every page of (filter, order) with pages of limit records through
 * the keyset cursor; the ids in order into out. RD_OK, or the first error
 * (last). */
static rd_code walk(const char *filter, const char *order_text, const char *const *groups,
                    size_t n_groups, size_t limit, char *out, size_t cap)
{
    store_filter *f = NULL;
    store_order *o = NULL;
    store_value *after = NULL;
    size_t n_after = 0;
    rd_err err;
    rd_code code = RD_OK;
    int64_t newest = head();
    out[0] = '\0';
    if (store_filter_parse(g_schema, ORG, g_model, filter, NULL, &f, &err) != RD_OK)
        fail_msg("filter '%s': %s", filter, err.msg);
    if (store_order_parse(g_schema, ORG, g_model, order_text, NULL, &o, &err) != RD_OK)
        fail_msg("order '%s': %s", order_text, err.msg);
    for (int pages = 0;; pages++) {
        store_page page;
        code = store_list(fx->c, ORG, g_model, f, o, after, n_after, limit, 0, groups, n_groups,
                          &page, &err);
        for (size_t i = 0; after != NULL && i < n_after; i++)
            free(after[i].s);
        free(after);
        after = NULL;
        if (code != RD_OK) {
            last = err;
            break;
        }
        assert_true(pages <= (int)N_ITEMS);
        assert_int_equal(page.read_at, newest);
        for (size_t i = 0; i < page.n; i++)
            snprintf(out + strlen(out), cap - strlen(out), "%s%s", out[0] ? "," : "",
                     page.records[i].id);
        if (!page.more) {
            store_page_free(&page);
            break;
        }
        assert_int_equal(page.n, limit);
        assert_int_equal(page.n_last, store_order_terms(o));
        after = page.last; /* the cursor: page.last -> after */
        n_after = page.n_last;
        page.last = NULL;
        page.n_last = 0;
        store_page_free(&page);
    }
    store_filter_free(f);
    store_order_free(o);
    return code;
}

static const order orders[] = {
    {"id", {"id"}, {false}},
    {"id desc", {"id"}, {true}},
    {"s", {"s"}, {false}},
    {"s desc", {"s"}, {true}},
    {"i", {"i"}, {false}},
    {"i desc", {"i"}, {true}},
    {"n asc", {"n"}, {false}},
    {"n DESC", {"n"}, {true}},
    {"b", {"b"}, {false}},
    {"b desc", {"b"}, {true}},
    {"t", {"t"}, {false}},
    {"t desc", {"t"}, {true}},
    {"e", {"e"}, {false}},
    {"e desc", {"e"}, {true}},
    {"group desc", {"group"}, {true}},
    {"b desc, n", {"b", "n"}, {true, false}},
    {"e, s desc", {"e", "s"}, {false, true}},
    {"t desc, i, id desc", {"t", "i", "id"}, {true, false, true}},
    {"i, n desc, s", {"i", "n", "s"}, {false, true, false}},
    {"syncId desc", {"syncId"}, {true}},
};
#define N_ORDERS (sizeof orders / sizeof orders[0])

/* Lists with filter conds[0..n) in order o and compares with C. false
 * when the store failed (last says why). */
static bool check_list(const cond *conds, size_t n, const order *o)
{
    char filter[1024] = "", got[1024], want[1024];
    for (size_t k = 0; k < n; k++)
        cond_text(&conds[k], filter, sizeof filter);
    expected_ids(conds, n, o, want, sizeof want);
    rd_code code = walk(filter, o->text, NULL, 0, 2, got, sizeof got);
    if (code != RD_OK) {
        fprintf(stderr, "filter '%s' order '%s': %s %s\n", filter, o->text, rd_code_str(code),
                last.msg);
        return false;
    }
    if (strcmp(got, want) != 0)
        fail_msg("filter '%s' order '%s':\n got  %s\n want %s", filter, o->text, got, want);
    return true;
}

static void test_list_orders_every_type_with_nulls(void **state)
{
    (void)state;
    static const cond some = {"s", "!=", L_NULL, NULL};
    for (size_t k = 0; k < N_ORDERS; k++) {
        assert_true(check_list(NULL, 0, &orders[k]));
        assert_true(check_list(&some, 1, &orders[k]));
    }
    /* spot checks of what the C model computes: NULLs first ascending,
     * last descending; strings bytewise */
    char got[512];
    assert_int_equal(walk(NULL, "s", NULL, 0, 2, got, sizeof got), RD_OK);
    assert_string_equal(got, "r02,r11,r07,r12,r10,r01,r06,r13,r04,r03,r08,r05,r09");
    assert_int_equal(walk(NULL, "b desc", NULL, 0, 2, got, sizeof got), RD_OK);
    assert_string_equal(got, "r01,r04,r06,r09,r12,r02,r05,r08,r10,r13,r03,r07,r11");
    assert_int_equal(walk(NULL, "n", NULL, 0, 3, got, sizeof got), RD_OK);
    assert_string_equal(got, "r04,r08,r11,r01,r09,r05,r13,r12,r02,r07,r10,r03,r06");
    static const char *const g1[] = {"g1"};
    assert_int_equal(walk("i != null", "t desc", g1, 1, 2, got, sizeof got), RD_OK);
    assert_string_equal(got, "r05,r01,r07,r09,r13,r11");
}

/* Literals per field for the operator sweep. */
typedef struct lits {
    const char *field;
    lit kind;
    const char *text[10];
} lits;

static const lits sweep[] = {
    {"s", L_STR, {"alpha", "a\"\\b", "quote\"d", "back\\slash", U8_UNICODE, "m", "", "alpha "}},
    {"i", L_NUM, {"3", "-7", "0", "-9007199254740991", "100", "+42", "-1"}},
    {"n", L_NUM, {"-2.5", "0.1", "0", "3", "-0.001", "10000000000", "2.5", "-0.0"}},
    {"b", L_BOOL, {"true", "false"}},
    {"t",
     L_STR,
     {"2024-01-01T00:00:00Z", "1969-07-20T20:17:40Z", "2024-01-01T01:00:00+01:00",
      "2000-02-29T10:00:00Z", "1970-01-01T00:00:00.000001Z", "2024-01-01T00:00:00.499999Z"}},
    {"e", L_STR, {"red", "green", "blue", "orange"}},
    {"id", L_STR, {"r05", "r1", "r13"}},
    {"group", L_STR, {"g1", "g2"}},
};

static const char *const all_ops[] = {"=", "!=", "<", "<=", ">", ">="};

static void test_list_filters_every_operator(void **state)
{
    (void)state;
    size_t runs = 0, failed = 0;
    for (size_t f = 0; f < sizeof sweep / sizeof sweep[0]; f++) {
        const lits *l = &sweep[f];
        for (size_t t = 0; t < 10 && l->text[t] != NULL; t++)
            for (size_t o = 0; o < 6; o++) {
                if (l->kind == L_BOOL && o >= 2)
                    break; /* booleans: = and != only */
                cond c = {l->field, all_ops[o], l->kind, l->text[t]};
                if (!check_list(&c, 1, &orders[runs++ % N_ORDERS]))
                    failed++;
            }
        for (size_t o = 0; o < 2; o++) {
            if (strcmp(l->field, "id") == 0 || strcmp(l->field, "group") == 0)
                continue; /* never null */
            cond c = {l->field, all_ops[o], L_NULL, NULL};
            if (!check_list(&c, 1, &orders[runs++ % N_ORDERS]))
                failed++;
        }
    }
    /* system fields and conjunctions */
    char sync[32];
    snprintf(sync, sizeof sync, "%lld", (long long)item_sync[6]);
    const cond more[][3] = {
        {{"syncId", ">", L_NUM, sync}},
        {{"syncId", "<=", L_NUM, sync}, {"b", "!=", L_BOOL, "true"}},
        {{"version", "=", L_NUM, "1"}},
        {{"version", ">", L_NUM, "1"}},
        {{"i", ">=", L_NUM, "0"}, {"n", "<", L_NUM, "1"}},
        {{"s", "!=", L_NULL, NULL}, {"b", "=", L_BOOL, "false"}},
        {{"e", "=", L_STR, "red"}, {"t", ">=", L_STR, "2000-01-01T00:00:00Z"}},
        {{"s", ">=", L_STR, "a"}, {"s", "<", L_STR, "b"}, {"group", "=", L_STR, "g1"}},
        {{"t", "=", L_NULL, NULL}, {"i", "!=", L_NULL, NULL}, {"n", "!=", L_NULL, NULL}},
    };
    for (size_t k = 0; k < sizeof more / sizeof more[0]; k++) {
        size_t n = 0;
        while (n < 3 && more[k][n].field != NULL)
            n++;
        for (size_t o = 0; o < N_ORDERS; o += 3)
            if (!check_list(more[k], n, &orders[o]))
                failed++;
    }
    assert_int_equal(failed, 0);
    assert_true(runs > 200);
}

/* An INTEGER field compared with a fractional literal: the grammar takes
 * any number, and SQLite compares 2 < 2.5 numerically. */
static void test_list_integer_field_with_fractional_literal(void **state)
{
    (void)state;
    static const cond cs[] = {
        {"i", "<", L_NUM, "2.5"},
        {"i", ">=", L_NUM, "-0.5"},
        {"i", "=", L_NUM, "3.0"},
        {"i", "!=", L_NUM, "99.9"},
        {"i", "<", L_NUM, "99999999999999999999"}, /* beyond int64: a REAL literal too */
    };
    size_t failed = 0;
    for (size_t k = 0; k < sizeof cs / sizeof cs[0]; k++)
        if (!check_list(&cs[k], 1, &orders[4]))
            failed++;
    /* a fractional literal against an INTEGER field compares as a double
     * (CAST(? AS DOUBLE PRECISION) in the filter's SQL): PostgreSQL would
     * otherwise read "2.5" (or "1e+20") as a bigint and fail */
    assert_int_equal(failed, 0);
}

static void test_list_values_round_trip(void **state)
{
    (void)state;
    for (size_t x = 0; x < N_ITEMS; x++) {
        store_record r;
        assert_int_equal(get("items", items[x].id, &r), RD_OK);
        assert_string_equal(r.group, items[x].group);
        assert_int_equal(r.sync_id, item_sync[x]);
        json_t *want = item_json(&items[x]);
        /* TIMESTAMP comes back in UTC */
        json_t *t = json_object_get(r.data, "t");
        if (items[x].t != NULL) {
            int64_t a, b;
            assert_non_null(t);
            assert_int_equal(rd_parse_rfc3339(json_string_value(t), &a), 0);
            assert_int_equal(rd_parse_rfc3339(items[x].t, &b), 0);
            assert_true(a == b);
            json_object_del(want, "t");
            json_object_del(r.data, "t");
        } else {
            assert_null(t);
        }
        if (!json_equal(r.data, want)) {
            char *g = json_dumps(r.data, JSON_SORT_KEYS | JSON_COMPACT);
            char *w = json_dumps(want, JSON_SORT_KEYS | JSON_COMPACT);
            fail_msg("%s: got %s want %s", items[x].id, g, w);
        }
        json_decref(want);
        store_record_clear(&r);
    }
}

/* ---- bulk by filter ---------------------------------------------------------------------- */

static store_bulk_op where(store_op op, const char *filter, const char *data)
{
    store_bulk_op o;
    memset(&o, 0, sizeof o);
    o.w.op = op;
    o.w.rec.model = "items";
    o.w.rec.data = data != NULL ? parse(data) : NULL;
    o.filter = filter;
    return o;
}

static rd_code run_bulk(store_write *w, store_bulk *b, store_bulk_op *ops, size_t n)
{
    memset(w, 0, sizeof *w);
    memset(b, 0, sizeof *b);
    b->ops = ops;
    b->n_ops = n;
    b->mode = STORE_BULK_ALL_OR_NOTHING;
    w->op = STORE_OP_BULK;
    w->org = ORG;
    w->actor = "bulker";
    w->bulk = b;
    rd_code code = store_submit_wait(fx->s, w);
    last = w->err;
    return code;
}

static void bulk_done(store_bulk_op *ops, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        json_decref(ops[i].w.rec.data);
        store_record_clear(&ops[i].w.rec.record);
        json_decref(ops[i].w.rec.conflicts);
    }
}

/* Items matching conds, counted. */
static int64_t count_matching(const cond *conds, size_t n, bool *match)
{
    int64_t c = 0;
    for (size_t x = 0; x < N_ITEMS; x++) {
        bool ok = true;
        for (size_t k = 0; k < n && ok; k++)
            ok = cond_holds(&conds[k], x);
        match[x] = ok;
        c += ok;
    }
    return c;
}

static void test_bulk_by_filter(void **state)
{
    (void)state;
    static const cond upd[] = {{"b", "=", L_BOOL, "true"}, {"n", "<", L_NUM, "0"}};
    static const cond del[] = {{"s", "=", L_NULL, NULL}};
    static const cond quo[] = {{"s", "=", L_STR, "quote\"d"}};
    static const cond grp[] = {{"t", ">", L_STR, "1970-01-01T00:00:00Z"}};
    bool m_upd[N_ITEMS], m_del[N_ITEMS], m_quo[N_ITEMS], m_grp[N_ITEMS];
    int64_t n_upd = count_matching(upd, 2, m_upd), n_del = count_matching(del, 1, m_del);
    int64_t n_quo = count_matching(quo, 1, m_quo);
    count_matching(grp, 1, m_grp);
    int64_t n_grp = 0;
    for (size_t x = 0; x < N_ITEMS; x++)
        n_grp += m_grp[x] && strcmp(items[x].group, "g2") == 0 && !m_del[x];
    assert_true(n_upd > 0 && n_del > 0 && n_quo == 1 && n_grp > 0);

    static const char *const g2[] = {"g2"};
    int64_t before = head();
    store_bulk_op ops[] = {
        where(STORE_OP_UPDATE_WHERE, "b = true AND n < 0", "{\"e\":\"green\",\"j\":{\"u\":1}}"),
        where(STORE_OP_DELETE_WHERE, "s = null", NULL),
        where(STORE_OP_UPDATE_WHERE, "s = \"quote\\\"d\"", "{\"i\":77}"),
        where(STORE_OP_UPDATE_WHERE, "t > \"1970-01-01T00:00:00Z\"", "{\"s\":\"later\"}"),
    };
    ops[3].groups = g2;
    ops[3].n_groups = 1;
    store_write w;
    store_bulk b;
    if (run_bulk(&w, &b, ops, 4) != RD_OK)
        fail_msg("bulk: %s %s (operation %zu)", rd_code_str(last.code), last.msg, b.err_index);
    assert_int_equal(ops[0].affected, n_upd);
    assert_int_equal(ops[1].affected, n_del);
    assert_int_equal(ops[2].affected, n_quo);
    assert_int_equal(ops[3].affected, n_grp);
    int64_t total = n_upd + n_del + n_quo + n_grp;
    assert_int_equal(w.ops, total);
    assert_int_equal(w.last_sync_id, before + total);
    assert_int_equal(head(), before + total);
    bulk_done(ops, 4);

    for (size_t x = 0; x < N_ITEMS; x++) {
        store_record r;
        rd_code code = get("items", items[x].id, &r);
        if (m_del[x]) {
            assert_int_equal(code, RD_NOT_FOUND);
            continue;
        }
        assert_int_equal(code, RD_OK);
        const char *e = json_string_value(json_object_get(r.data, "e"));
        const char *s = json_string_value(json_object_get(r.data, "s"));
        json_t *i = json_object_get(r.data, "i");
        int64_t version = 1 + m_upd[x] + m_quo[x] + (m_grp[x] && strcmp(items[x].group, "g2") == 0);
        assert_int_equal(r.version, version);
        if (m_upd[x]) {
            assert_string_equal(e, "green");
            assert_int_equal(json_integer_value(json_object_get(json_object_get(r.data, "j"), "u")),
                             1);
        } else if (items[x].e != NULL) {
            assert_string_equal(e, items[x].e);
        } else {
            assert_null(e);
        }
        if (m_quo[x])
            assert_int_equal(json_integer_value(i), 77);
        if (m_grp[x] && strcmp(items[x].group, "g2") == 0)
            assert_string_equal(s, "later");
        else if (!m_quo[x] && items[x].s != NULL)
            assert_string_equal(s, items[x].s);
        store_record_clear(&r);
    }

    /* a filter matching nothing writes nothing; one over the limit nothing
     * at all */
    before = head();
    store_bulk_op none[] = {where(STORE_OP_DELETE_WHERE, "e = \"orange\"", NULL)};
    assert_int_equal(run_bulk(&w, &b, none, 1), RD_OK);
    assert_int_equal(none[0].affected, 0);
    assert_int_equal(w.last_sync_id, 0);
    bulk_done(none, 1);
    store_bulk_op capped[] = {where(STORE_OP_DELETE_WHERE, "id >= \"r\"", NULL)};
    capped[0].has_max_affected = true;
    capped[0].max_affected = 2;
    assert_int_equal(run_bulk(&w, &b, capped, 1), RD_VALIDATION_FAILED);
    assert_string_equal(last.field, "maxAffected");
    bulk_done(capped, 1);
    assert_int_equal(head(), before);
    assert_int_equal(q_int("SELECT count(*) FROM \"r_" ORG "__items\""), N_ITEMS - n_del);
}

/* ---- 4. the credential generation --------------------------------------------------------- */

static const unsigned char H1[STORE_KEY_HASH_BYTES] = {1, 2, 3};
static const unsigned char H2[STORE_KEY_HASH_BYTES] = {9, 9, 9};

static int64_t auth_gen(void)
{
    int64_t g = -1;
    rd_err err;
    if (store_auth_gen(fx->c, &g, &err) != RD_OK)
        fail_msg("store_auth_gen: %s", err.msg);
    return g;
}

/* ---- references: a cascade that fails half-way ------------------------------------ */

static const char refs_schema[] =
    "{\"models\":["
    "{\"name\":\"parents\",\"fields\":[{\"name\":\"title\",\"type\":\"STRING\"}]},"
    "{\"name\":\"kids\",\"fields\":[{\"name\":\"parent\",\"type\":\"REFERENCE\","
    "\"references\":\"parents\",\"onDelete\":\"CASCADE\"}]},"
    "{\"name\":\"tags\",\"fields\":[{\"name\":\"parent\",\"type\":\"REFERENCE\","
    "\"references\":\"parents\",\"onDelete\":\"SET_NULL\"}]}]}";

/* The Nth statement of the writer fails while a delete cascades to two
 * kids and clears a tag, for every N the delete takes. On PostgreSQL the
 * delete runs first without a savepoint (writer.c, run_bare): a failure
 * after it wrote part of the cascade must make the batch run again the
 * careful way, never keep half of it. The delete happens whole (4 rows, 4
 * sync ids) or not at all, and the sync ids stay gap-free. */
static void test_cascade_faults_undo_the_whole_delete(void **state)
{
    (void)state;
    PUSH_OK(refs_schema);
    int done = 0, fired = 0;
    for (int nth = 1; nth <= 40; nth++) {
        char p[16], k1[16], k2[16], t[16], pdata[48];
        snprintf(p, sizeof p, "p%d", nth);
        snprintf(k1, sizeof k1, "k%da", nth);
        snprintf(k2, sizeof k2, "k%db", nth);
        snprintf(t, sizeof t, "t%d", nth);
        snprintf(pdata, sizeof pdata, "{\"parent\":\"%s\"}", p);
        create_ok("parents", p, "{\"title\":\"x\"}");
        create_ok("kids", k1, pdata);
        create_ok("kids", k2, pdata);
        int64_t before = create_ok("tags", t, pdata);
        assert_int_equal(head(), before);

        store_write w;
        memset(&w, 0, sizeof w);
        w.op = STORE_OP_DELETE;
        w.org = ORG;
        w.actor = "tester";
        w.rec.model = "parents";
        w.rec.id = p;
        store_fault_arm(fx->s, nth, STORE_DB_BUSY, false);
        rd_code code = store_submit_wait(fx->s, &w);
        store_fault_disarm(fx->s);
        last = w.err;
        store_record rec = {0};
        if (code == RD_OK) {
            done++;
            assert_int_equal(w.ops, 4);
            assert_int_equal(w.last_sync_id, before + 4);
            assert_int_equal(head(), before + 4);
            assert_int_equal(w.n_affected, 3);
            assert_int_equal(w.affected[0].sync_id, before + 2);
            assert_int_equal(w.affected[2].op, STORE_OP_UPDATE);
            assert_int_equal(get("kids", k1, &rec), RD_NOT_FOUND);
            assert_int_equal(get("kids", k2, &rec), RD_NOT_FOUND);
            assert_int_equal(get("tags", t, &rec), RD_OK);
            assert_null(json_object_get(rec.data, "parent"));
            assert_int_equal(rec.version, 2);
            assert_int_equal(rec.sync_id, before + 4);
        } else {
            fired++;
            if (code != RD_UNAVAILABLE && code != RD_INTERNAL)
                fail_msg("delete, statement %d failing: %s (%s)", nth, rd_code_str(code), last.msg);
            assert_int_equal(w.ops, 0);
            assert_null(w.affected);
            assert_int_equal(head(), before);
            assert_int_equal(get("parents", p, &rec), RD_OK);
            store_record_clear(&rec);
            assert_int_equal(get("kids", k1, &rec), RD_OK);
            store_record_clear(&rec);
            assert_int_equal(get("kids", k2, &rec), RD_OK);
            store_record_clear(&rec);
            assert_int_equal(get("tags", t, &rec), RD_OK);
            assert_string_equal(json_string_value(json_object_get(rec.data, "parent")), p);
        }
        store_record_clear(&rec);
        store_record_clear(&w.rec.record);
        free(w.affected);
        assert_int_equal(q_int("SELECT count(*) FROM _rd_sync_log WHERE org = '%s'", ORG),
                         q_int("SELECT max(sync_id) FROM _rd_sync_log WHERE org = '%s'", ORG));
    }
    assert_true(done > 0);
    assert_true(fired + done == 40);
}

/* Every change a cached credential could depend on raises the generation
 * in the changing transaction (PostgreSQL: one PL/pgSQL trigger function);
 * a new key (nothing cached can depend on it) and a repeated token
 * revocation (no row changes) need not. */
static void test_auth_gen_triggers(void **state)
{
    (void)state;
    rd_err err;
    int64_t g0 = auth_gen();
    assert_true(g0 >= 0);
    assert_int_equal(store_key_insert(fx->s, "key_a", H1, ORG, "r", "[]", NULL, &err), RD_OK);
    assert_int_equal(store_key_insert(fx->s, "key_b", H2, ORG, "r", "[]", NULL, &err), RD_OK);
    int64_t g1 = auth_gen();
    assert_true(g1 >= g0);
    assert_int_equal(store_key_revoke(fx->s, "key_a", &err), RD_OK);
    int64_t g2 = auth_gen();
    assert_true(g2 > g1);
    assert_int_equal(store_token_revoke(fx->s, "tok_1", &err), RD_OK);
    int64_t g3 = auth_gen();
    assert_true(g3 > g2);
    assert_int_equal(store_token_revoke(fx->s, "tok_1", &err), RD_OK);
    assert_int_equal(auth_gen(), g3);
    assert_int_equal(store_key_revoke(fx->s, "key_zz", &err), RD_NOT_FOUND);
    assert_int_equal(auth_gen(), g3);
    assert_int_equal(store_is_revoked(fx->c, "tok_1", NULL), 1);
    assert_int_equal(store_is_revoked(fx->c, "tok_2", "key_a"), 1);
    assert_int_equal(store_is_revoked(fx->c, "tok_2", "key_b"), 0);

    /* whoever makes the change: SQL by hand raises it too */
    EXEC_OK(fx->q, "DELETE FROM _rd_api_keys WHERE key_id = 'key_b'");
    int64_t g4 = auth_gen();
    assert_true(g4 > g3);
    EXEC_OK(fx->q, "DELETE FROM _rd_revoked_tokens");
    int64_t g5 = auth_gen();
    assert_true(g5 > g4);
    assert_int_equal(store_is_revoked(fx->c, "tok_1", NULL), 0);
    /* in the changing transaction: rolled back, not raised */
    EXEC_OK(fx->q, "BEGIN");
    EXEC_OK(fx->q, "UPDATE _rd_api_keys SET role = 'x'");
    EXEC_OK(fx->q, "ROLLBACK");
    assert_int_equal(auth_gen(), g5);
}

static void test_needs_postgres(void **state)
{
    (void)state;
    fail_msg("RECORDD_TEST_PG is not set: this test needs a PostgreSQL server, e.g. "
             "RECORDD_TEST_PG=postgresql://recordd@127.0.0.1:5432/postgres (make unit runs it "
             "under tests/pg/pgcluster.py, which starts one)");
}

int main(void)
{
    g_uri = getenv("RECORDD_TEST_PG");
    if (g_uri == NULL || g_uri[0] == '\0') {
        const struct CMUnitTest none[] = {cmocka_unit_test(test_needs_postgres)};
        return cmocka_run_group_tests(none, NULL, NULL);
    }
    if (!store_db_is_postgres(g_uri)) {
        fprintf(stderr, "RECORDD_TEST_PG is not a postgres:// or postgresql:// URI\n");
        return 1;
    }
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
#define L(name) cmocka_unit_test_setup_teardown(name, list_setup, list_teardown)
    const struct CMUnitTest tests[] = {
        T(test_commit_lost_after_is_confirmed),
        T(test_commit_lost_before_fails_and_gives_the_sync_id_back),
        T(test_commit_lost_after_confirms_the_whole_batch),
        T(test_commit_lost_before_fails_the_whole_batch),
        T(test_writes_go_on_after_a_failed_write_on_a_new_connection),
        T(test_get_many_batches_and_holds_a_snapshot),
        T(test_a_push_after_a_failed_write_is_committed),
        T(test_ddl_column_types_and_unique_indexes),
        T(test_ddl_unique_megabyte_values),
        T(test_ddl_long_names),
        T(test_ddl_add_and_drop_unique_fields),
        L(test_list_orders_every_type_with_nulls),
        L(test_list_filters_every_operator),
        L(test_list_integer_field_with_fractional_literal),
        L(test_list_values_round_trip),
        L(test_bulk_by_filter),
        T(test_auth_gen_triggers),
        T(test_cascade_faults_undo_the_whole_delete),
        T(test_read_pool_lends_one_connection_at_a_time),
        T(test_a_second_process_is_heard_and_caught_up_with),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
