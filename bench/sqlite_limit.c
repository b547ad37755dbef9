/* sqlite-limit: the storage ceiling recordd's update path is measured
 * against (DESIGN.md §10). Runs, directly on SQLite and on a temporary
 * database, the statements recordd's writer runs for one UpdateRecord of
 * {"n": v} — load the row, UPDATE the typed row, append a sync-log row —
 * with the same table shapes, WAL, synchronous=FULL and checkpoint interval:
 *   mode A: one commit per transaction (BEGIN IMMEDIATE … COMMIT);
 *   mode B: --batch commits per transaction, each in its own SAVEPOINT,
 *           the way the group-commit writer runs them.
 * Prints commits/s for each (text or one JSON object). */
#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

#include "store/store_int.h" /* STORE_WAL_CHECKPOINT_PAGES */

#define TABLE "\"r_bench__counters\""

typedef struct options {
    const char *dir; /* where the temporary database goes */
    double duration_s;
    int records;
    int batch;
    bool sync_normal;
    bool json;
} options;

/* The tables, as store/ddl.c and store/store.c create them for a model
 * {n INTEGER, note STRING}. */
static const char *const schema_sql[] = {
    "PRAGMA journal_mode = WAL",
    "CREATE TABLE _rd_sync_log (sync_id INTEGER PRIMARY KEY, server_tx_id TEXT NOT NULL,"
    " org TEXT NOT NULL, model TEXT NOT NULL, record_id TEXT NOT NULL, op TEXT NOT NULL,"
    " fields TEXT NOT NULL, actor TEXT NOT NULL, grp TEXT NOT NULL,"
    " committed_at INTEGER NOT NULL, data TEXT)",
    "CREATE TABLE " TABLE " (_id TEXT PRIMARY KEY NOT NULL, _group TEXT NOT NULL,"
    " _version INTEGER NOT NULL, _sync_id INTEGER NOT NULL, _created_at INTEGER NOT NULL,"
    " _updated_at INTEGER NOT NULL, _created_by TEXT NOT NULL, _updated_by TEXT NOT NULL,"
    " \"n\" INTEGER, \"_s_n\" INTEGER, \"note\" TEXT, \"_s_note\" INTEGER)",
};

/* The prepared statements of one commit. */
typedef struct stmts {
    sqlite3_stmt *begin, *commit, *savepoint, *release;
    sqlite3_stmt *load, *update, *log;
} stmts;

typedef struct state {
    sqlite3 *db;
    stmts st;
    int64_t sync_id;
    uint64_t rng;
    int records;
} state;

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int64_t wall_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static int64_t cpu_us(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (int64_t)ru.ru_utime.tv_sec * 1000000 + ru.ru_utime.tv_usec +
           (int64_t)ru.ru_stime.tv_sec * 1000000 + ru.ru_stime.tv_usec;
}

static uint64_t next_rand(state *s)
{
    s->rng ^= s->rng >> 12;
    s->rng ^= s->rng << 25;
    s->rng ^= s->rng >> 27;
    return s->rng * 2685821657736338717ULL;
}

/* Steps a statement to completion (discarding rows) and resets it.
 * Returns SQLITE_OK or the error. */
static int run(sqlite3_stmt *st)
{
    int rc;
    do
        rc = sqlite3_step(st);
    while (rc == SQLITE_ROW);
    sqlite3_reset(st);
    return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

static int fail(sqlite3 *db, const char *what, int rc)
{
    fprintf(stderr, "sqlite-limit: %s: %s (%s)\n", what, sqlite3_errstr(rc),
            db != NULL ? sqlite3_errmsg(db) : "");
    return 1;
}

static int prepare(state *s)
{
    static const struct {
        size_t offset;
        const char *sql;
    } q[] = {
        {offsetof(stmts, begin), "BEGIN IMMEDIATE"},
        {offsetof(stmts, commit), "COMMIT"},
        {offsetof(stmts, savepoint), "SAVEPOINT w"},
        {offsetof(stmts, release), "RELEASE w"},
        {offsetof(stmts, load), "SELECT * FROM " TABLE " WHERE _id = ?1"},
        {offsetof(stmts, update),
         "UPDATE " TABLE " SET _version = _version + 1, _sync_id = ?1, _updated_at = ?2,"
         " _updated_by = ?3, \"n\" = ?5, \"_s_n\" = ?1 WHERE _id = ?4"},
        {offsetof(stmts, log),
         "INSERT INTO _rd_sync_log (sync_id, server_tx_id, org, model, record_id, op, fields,"
         " actor, grp, committed_at, data) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"},
    };
    for (size_t i = 0; i < sizeof q / sizeof q[0]; i++) {
        sqlite3_stmt **slot = (sqlite3_stmt **)(void *)((char *)&s->st + q[i].offset);
        int rc = sqlite3_prepare_v3(s->db, q[i].sql, -1, SQLITE_PREPARE_PERSISTENT, slot, NULL);
        if (rc != SQLITE_OK)
            return fail(s->db, q[i].sql, rc);
    }
    return 0;
}

/* Creates the tables and K records b0..b<K-1> in one transaction. */
static int create(state *s, const options *o)
{
    int rc = SQLITE_OK;
    for (size_t i = 0; rc == SQLITE_OK && i < sizeof schema_sql / sizeof schema_sql[0]; i++)
        rc = sqlite3_exec(s->db, schema_sql[i], NULL, NULL, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_exec(
            s->db, o->sync_normal ? "PRAGMA synchronous = NORMAL" : "PRAGMA synchronous = FULL",
            NULL, NULL, NULL);
    /* the writer's checkpoint interval (store/store.c), so both run the
     * same SQLite configuration */
    if (rc == SQLITE_OK)
        rc = sqlite3_wal_autocheckpoint(s->db, STORE_WAL_CHECKPOINT_PAGES);
    if (rc != SQLITE_OK)
        return fail(s->db, "schema", rc);
    sqlite3_stmt *ins = NULL;
    rc = sqlite3_prepare_v2(s->db,
                            "INSERT INTO " TABLE " VALUES (?1, 'default', 1, ?2, ?3, ?3, 'dev',"
                            " 'dev', 0, ?2, 'bench', ?2)",
                            -1, &ins, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_exec(s->db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
    for (int i = 0; rc == SQLITE_OK && i < o->records; i++) {
        char id[24];
        snprintf(id, sizeof id, "b%d", i);
        sqlite3_bind_text(ins, 1, id, -1, SQLITE_TRANSIENT);
        sqlite3_bind_int64(ins, 2, ++s->sync_id);
        sqlite3_bind_int64(ins, 3, wall_us());
        rc = run(ins);
    }
    if (rc == SQLITE_OK)
        rc = sqlite3_exec(s->db, "COMMIT", NULL, NULL, NULL);
    sqlite3_finalize(ins);
    return rc == SQLITE_OK ? 0 : fail(s->db, "fill", rc);
}

/* One commit's statements: load the row, update it, log the change (the
 * written fields and their new values, as store/writer.c logs them). */
static int one_update(state *s)
{
    char id[24], tx[40];
    snprintf(id, sizeof id, "b%llu", (unsigned long long)(next_rand(s) % (uint64_t)s->records));
    int64_t sid = ++s->sync_id, now = wall_us();
    snprintf(tx, sizeof tx, "tx_%016llx", (unsigned long long)sid);
    sqlite3_bind_text(s->st.load, 1, id, -1, SQLITE_STATIC);
    int rc = sqlite3_step(s->st.load);
    if (rc != SQLITE_ROW)
        return rc == SQLITE_DONE ? SQLITE_NOTFOUND : rc;
    /* read what the writer reads, the group and the old value */
    int64_t old = sqlite3_column_int64(s->st.load, 8);
    char grp[32];
    snprintf(grp, sizeof grp, "%s", (const char *)sqlite3_column_text(s->st.load, 1));
    sqlite3_reset(s->st.load);

    sqlite3_stmt *u = s->st.update;
    sqlite3_bind_int64(u, 1, sid);
    sqlite3_bind_int64(u, 2, now);
    sqlite3_bind_text(u, 3, "dev", -1, SQLITE_STATIC);
    sqlite3_bind_text(u, 4, id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(u, 5, old + 1);
    rc = run(u);
    if (rc != SQLITE_OK)
        return rc;
    sqlite3_stmt *l = s->st.log;
    sqlite3_bind_int64(l, 1, sid);
    sqlite3_bind_text(l, 2, tx, -1, SQLITE_STATIC);
    sqlite3_bind_text(l, 3, "dev", -1, SQLITE_STATIC);
    sqlite3_bind_text(l, 4, "bench_counters", -1, SQLITE_STATIC);
    sqlite3_bind_text(l, 5, id, -1, SQLITE_STATIC);
    sqlite3_bind_text(l, 6, "UPDATE", -1, SQLITE_STATIC);
    sqlite3_bind_text(l, 7, "[\"n\"]", -1, SQLITE_STATIC);
    sqlite3_bind_text(l, 8, "dev", -1, SQLITE_STATIC);
    sqlite3_bind_text(l, 9, grp, -1, SQLITE_STATIC);
    sqlite3_bind_int64(l, 10, now);
    /* the after-image of the written fields, as the change feed stores it */
    char data[48];
    snprintf(data, sizeof data, "{\"n\":%lld}", (long long)(old + 1));
    sqlite3_bind_text(l, 11, data, -1, SQLITE_STATIC);
    return run(l);
}

typedef struct mode_result {
    uint64_t commits;
    uint64_t transactions;
    double seconds;
    double cpu_us_per_commit;
} mode_result;

/* Runs transactions of `batch` commits for duration seconds. batch 1 is
 * mode A (no savepoint); larger batches wrap each commit in SAVEPOINT w …
 * RELEASE w like the writer. */
static int run_mode(state *s, int batch, double duration_s, mode_result *r)
{
    memset(r, 0, sizeof *r);
    int64_t t0 = now_ns(), end = t0 + (int64_t)(duration_s * 1e9), c0 = cpu_us();
    int rc = SQLITE_OK;
    while (rc == SQLITE_OK && now_ns() < end) {
        rc = run(s->st.begin);
        for (int i = 0; rc == SQLITE_OK && i < batch; i++) {
            if (batch > 1)
                rc = run(s->st.savepoint);
            if (rc == SQLITE_OK)
                rc = one_update(s);
            if (rc == SQLITE_OK && batch > 1)
                rc = run(s->st.release);
        }
        if (rc == SQLITE_OK)
            rc = run(s->st.commit);
        if (rc == SQLITE_OK) {
            r->commits += (uint64_t)batch;
            r->transactions++;
        }
    }
    r->seconds = (double)(now_ns() - t0) / 1e9;
    r->cpu_us_per_commit = r->commits > 0 ? (double)(cpu_us() - c0) / (double)r->commits : 0;
    return rc == SQLITE_OK ? 0 : fail(s->db, "commit", rc);
}

static void usage(FILE *f)
{
    fprintf(f, "usage: sqlite-limit [--duration SECONDS per mode, 4] [--records K, 10000]\n"
               "                    [--batch N, 64] [--sync full|normal] [--dir DIR] [--json]\n");
}

/* Parses a number in [lo, hi] into *out; false when it is not one. */
static bool number(const char *v, double lo, double hi, double *out)
{
    char *end;
    errno = 0;
    *out = strtod(v, &end);
    return errno == 0 && end != v && *end == '\0' && *out >= lo && *out <= hi;
}

/* Fills *o from argv. Returns 0, 1 after --help, 2 on a bad option. */
static int parse(int argc, char **argv, options *o)
{
    *o = (options){.dir = NULL, .duration_s = 4, .records = 10000, .batch = 64};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : "";
        double n = 0;
        bool ok = true, takes_value = true;
        if (strcmp(a, "--help") == 0) {
            usage(stdout);
            return 1;
        } else if (strcmp(a, "--json") == 0) {
            o->json = true;
            takes_value = false;
        } else if (strcmp(a, "--dir") == 0) {
            o->dir = v;
            ok = v[0] != '\0';
        } else if (strcmp(a, "--sync") == 0) {
            o->sync_normal = strcmp(v, "normal") == 0;
            ok = o->sync_normal || strcmp(v, "full") == 0;
        } else if (strcmp(a, "--duration") == 0) {
            ok = number(v, 0.001, 3600, &o->duration_s);
        } else if (strcmp(a, "--records") == 0) {
            ok = number(v, 1, 10000000, &n) && n == floor(n);
            o->records = (int)n;
        } else if (strcmp(a, "--batch") == 0) {
            ok = number(v, 1, 100000, &n) && n == floor(n);
            o->batch = (int)n;
        } else {
            ok = false;
        }
        if (!ok) {
            fprintf(stderr, "sqlite-limit: bad option %s %s\n", a, takes_value ? v : "");
            usage(stderr);
            return 2;
        }
        i += takes_value;
    }
    return 0;
}

int main(int argc, char **argv)
{
    options o;
    int rc = parse(argc, argv, &o);
    if (rc != 0)
        return rc == 1 ? 0 : rc;
    char dir[4096], path[4200];
    const char *base = o.dir != NULL ? o.dir : getenv("TMPDIR") != NULL ? getenv("TMPDIR") : "/tmp";
    snprintf(dir, sizeof dir, "%s/sqlite-limit.XXXXXX", base);
    if (mkdtemp(dir) == NULL) {
        fprintf(stderr, "sqlite-limit: mkdtemp %s: %s\n", dir, strerror(errno));
        return 1;
    }
    snprintf(path, sizeof path, "%s/limit.db", dir);
    state s = {.rng = 0x9E3779B97F4A7C15ULL ^ (uint64_t)now_ns(), .records = o.records};
    mode_result a = {0}, b = {0};
    rc = sqlite3_open(path, &s.db);
    if (rc != SQLITE_OK) {
        rc = fail(s.db, path, rc);
        goto done;
    }
    rc = create(&s, &o);
    if (rc == 0)
        rc = prepare(&s);
    if (rc == 0)
        rc = run_mode(&s, 1, o.duration_s, &a);
    if (rc == 0)
        rc = run_mode(&s, o.batch, o.duration_s, &b);
    if (rc != 0)
        goto done;
    double ra = (double)a.commits / a.seconds, rb = (double)b.commits / b.seconds;
    if (o.json)
        printf("{\"sync\":\"%s\",\"records\":%d,\"batch\":%d,\"a_commits_per_s\":%.1f,"
               "\"a_cpu_us_per_commit\":%.2f,\"b_commits_per_s\":%.1f,"
               "\"b_transactions_per_s\":%.1f,\"b_cpu_us_per_commit\":%.2f}\n",
               o.sync_normal ? "normal" : "full", o.records, o.batch, ra, a.cpu_us_per_commit, rb,
               (double)b.transactions / b.seconds, b.cpu_us_per_commit);
    else
        printf("sqlite-limit (synchronous=%s, WAL, %d records)\n"
               "  A: 1 commit per transaction      %8.0f commits/s  (%.1f us CPU/commit)\n"
               "  B: %d commits per transaction    %8.0f commits/s  (%.1f us CPU/commit)\n",
               o.sync_normal ? "NORMAL" : "FULL", o.records, ra, a.cpu_us_per_commit, o.batch, rb,
               b.cpu_us_per_commit);
done:
    if (s.db != NULL) {
        sqlite3_stmt *all[] = {s.st.begin, s.st.commit, s.st.savepoint, s.st.release,
                               s.st.load,  s.st.update, s.st.log};
        for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
            sqlite3_finalize(all[i]);
        sqlite3_close(s.db);
    }
    static const char *const files[] = {"limit.db", "limit.db-wal", "limit.db-shm"};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, files[i]);
        unlink(path);
    }
    rmdir(dir);
    return rc;
}
