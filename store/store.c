/* store.c: opening and closing the store, read connections and store_get,
 * plus the pieces every other store file shares: the SQL text builder, the
 * prepared-statement cache, the one SQLite -> rd_code mapping, naming rules
 * and the conversion between typed columns and JSON values. */
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <limits.h>
#include <sys/stat.h>
#include <time.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "store/store_int.h"

/* ---- SQL text builder ------------------------------------------------------ */

static bool sbuf_grow(store_sbuf *b, size_t extra)
{
    if (b->oom)
        return false;
    if (b->len + extra + 1 <= b->cap)
        return true;
    size_t want = b->len + extra + 1;
    if (want > STORE_SBUF_MAX) {
        b->oom = true;
        return false;
    }
    size_t cap = b->cap ? b->cap : 256;
    while (cap < want)
        cap *= 2;
    char *p = realloc(b->p, cap);
    if (p == NULL) {
        b->oom = true;
        return false;
    }
    b->p = p;
    b->cap = cap;
    return true;
}

void store_sbuf_add(store_sbuf *b, const char *s)
{
    size_t n = strlen(s);
    if (!sbuf_grow(b, n))
        return;
    memcpy(b->p + b->len, s, n + 1);
    b->len += n;
}

void store_sbuf_addn(store_sbuf *b, const char *s, size_t n)
{
    if (!sbuf_grow(b, n))
        return;
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

void store_sbuf_addf(store_sbuf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || !sbuf_grow(b, (size_t)n)) {
        b->oom = true;
        return;
    }
    va_start(ap, fmt);
    vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

void store_sbuf_ident2(store_sbuf *b, const char *prefix, const char *name)
{
    size_t n = strlen(prefix) + strlen(name);
    if (!sbuf_grow(b, 2 * n + 2))
        return;
    char *p = b->p + b->len;
    *p++ = '"';
    for (int part = 0; part < 2; part++) {
        for (const char *q = part == 0 ? prefix : name; *q; q++) {
            if (*q == '"')
                *p++ = '"';
            *p++ = *q;
        }
    }
    *p++ = '"';
    *p = '\0';
    b->len = (size_t)(p - b->p);
}

void store_sbuf_ident(store_sbuf *b, const char *name)
{
    store_sbuf_ident2(b, "", name);
}

void store_sbuf_free(store_sbuf *b)
{
    free(b->p);
    memset(b, 0, sizeof *b);
}

/* ---- names ------------------------------------------------------------------- */

static int is_alpha(int c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
}

static int is_digit(int c)
{
    return c >= '0' && c <= '9';
}

int store_ident_valid(const char *s)
{
    if (s == NULL || !is_alpha((unsigned char)s[0]))
        return 0;
    size_t i = 1;
    for (; s[i] != '\0'; i++) {
        int c = (unsigned char)s[i];
        if (i >= 63 || !(is_alpha(c) || is_digit(c) || c == '_'))
            return 0;
    }
    return 1;
}

int store_org_valid(const char *org)
{
    if (org == NULL || !(is_alpha((unsigned char)org[0]) || is_digit((unsigned char)org[0])))
        return 0;
    for (size_t i = 1; org[i] != '\0'; i++) {
        int c = (unsigned char)org[i];
        if (i >= STORE_ORG_MAX || !(is_alpha(c) || is_digit(c) || c == '_' || c == '-'))
            return 0;
        if (c == '_' && org[i - 1] == '_')
            return 0;
    }
    return 1;
}

int store_org_case_variant(store_db *db, const char *org, char *other, size_t other_size)
{
    static const char sql[] =
        "SELECT org FROM _rd_api_keys WHERE lower(org) = lower(?1) AND org <> ?1"
        " UNION ALL SELECT org FROM _rd_schema WHERE lower(org) = lower(?1) AND org <> ?1"
        " LIMIT 1";
    store_dbst *st = NULL;
    int rc = store_db_prepare(db, sql, &st);
    if (rc == STORE_DB_OK)
        rc = store_db_bind_text(st, 1, org, -1, STORE_DB_STATIC);
    if (rc == STORE_DB_OK) {
        rc = store_db_step(st);
        if (rc == STORE_DB_ROW) {
            snprintf(other, other_size, "%s", (const char *)store_db_column_text(st, 0));
            rc = STORE_DB_OK;
            store_db_finalize(st);
            return 1;
        }
        rc = rc == STORE_DB_DONE ? STORE_DB_OK : rc;
    }
    store_db_finalize(st);
    return rc == STORE_DB_OK ? 0 : -1;
}

int store_id_valid(const char *s)
{
    if (s == NULL || s[0] == '\0')
        return 0;
    size_t i = 0;
    for (; s[i] != '\0'; i++) {
        int c = (unsigned char)s[i];
        if (i >= STORE_ID_MAX)
            return 0;
        if (!(is_alpha(c) || is_digit(c) || c == '.' || c == '_' || c == '~' || c == ':' ||
              c == '-'))
            return 0;
    }
    return 1;
}

static const char *const system_fields[] = {
    "id",      "createdAt", "updatedAt", "organizationId", "createdBy", "updatedBy",
    "version", "syncId",    "group",     "model",          "readAt",
};

int store_is_system_field(const char *name)
{
    for (size_t i = 0; i < sizeof system_fields / sizeof system_fields[0]; i++)
        if (strcasecmp(name, system_fields[i]) == 0)
            return 1;
    return 0;
}

void store_sbuf_table(store_sbuf *b, const char *org, const char *model)
{
    store_sbuf_addf(b, "\"r_%s__%s\"", org, model);
}

/* ---- statement cache ------------------------------------------------------- */

static uint64_t fnv1a(const char *s)
{
    uint64_t h = 14695981039346656037ull;
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ull;
    }
    return h;
}

int store_stmt_get(store_stmt_cache *c, const char *sql, store_dbst **out)
{
    uint64_t h = fnv1a(sql);
    store_stmt_ent *victim = NULL;
    *out = NULL;
    for (int i = 0; i < STORE_STMT_CACHE; i++) {
        store_stmt_ent *e = &c->ent[i];
        if (e->st != NULL && e->hash == h && strcmp(e->sql, sql) == 0) {
            e->used = ++c->tick;
            *out = e->st;
            return STORE_DB_OK;
        }
        if (e->st == NULL) {
            if (victim == NULL || victim->st != NULL)
                victim = e;
        } else if (!store_db_busy(e->st) &&
                   (victim == NULL || (victim->st != NULL && e->used < victim->used))) {
            victim = e;
        }
    }
    store_dbst *st = NULL;
    int rc = store_db_prepare(c->db, sql, &st);
    if (rc != STORE_DB_OK)
        return rc;
    char *copy = strdup(sql);
    if (copy == NULL || victim == NULL) {
        /* out of memory, or every slot holds a running statement: an
         * uncached statement would leak through store_stmt_put, so fail */
        free(copy);
        store_db_finalize(st);
        return STORE_DB_NOMEM;
    }
    if (victim->st != NULL)
        store_db_finalize(victim->st);
    free(victim->sql);
    victim->st = st;
    victim->sql = copy;
    victim->hash = h;
    victim->used = ++c->tick;
    *out = st;
    return STORE_DB_OK;
}

void store_stmt_put(store_dbst *st)
{
    if (st == NULL)
        return;
    store_db_reset(st);
}

void store_stmt_cache_clear(store_stmt_cache *c)
{
    for (int i = 0; i < STORE_STMT_CACHE; i++) {
        store_db_finalize(c->ent[i].st);
        free(c->ent[i].sql);
        memset(&c->ent[i], 0, sizeof c->ent[i]);
    }
}

/* ---- errors -------------------------------------------------------------------- */

/* Extracts the column names from SQLite's "UNIQUE constraint failed: t.a,
 * t.b" into out as "a,b" ("_id" becomes "id"). */
static void unique_columns(const char *msg, char *out, size_t cap)
{
    const char *p = strstr(msg, "failed: ");
    size_t n = 0;
    out[0] = '\0';
    if (p == NULL)
        return;
    p += strlen("failed: ");
    while (*p != '\0') {
        const char *end = strstr(p, ", ");
        size_t len = end ? (size_t)(end - p) : strlen(p);
        const char *col = p;
        for (size_t i = 0; i < len; i++)
            if (p[i] == '.')
                col = p + i + 1;
        size_t clen = len - (size_t)(col - p);
        if (clen == 3 && strncmp(col, "_id", 3) == 0) {
            col = "id";
            clen = 2;
        }
        if (n + clen + 2 > cap)
            break;
        if (n > 0)
            out[n++] = ',';
        memcpy(out + n, col, clen);
        n += clen;
        out[n] = '\0';
        if (end == NULL)
            break;
        p = end + 2;
    }
}

void store_dir_of(const char *path, char *dir, size_t size)
{
    snprintf(dir, size, "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash == NULL)
        snprintf(dir, size, ".");
    else if (slash == dir)
        dir[1] = '\0';
    else
        *slash = '\0';
}

void store_file_sizes(store *s, int64_t *db_bytes, int64_t *wal_bytes)
{
    struct stat st;
    char wal[PATH_MAX];
    const char *file = store_target_file(s->path);
    *db_bytes = *wal_bytes = 0;
    if (file == NULL)
        return; /* a database server's files are its own */
    *db_bytes = stat(file, &st) == 0 ? (int64_t)st.st_size : 0;
    snprintf(wal, sizeof wal, "%s-wal", file);
    *wal_bytes = stat(wal, &st) == 0 ? (int64_t)st.st_size : 0;
}

bool store_storage_full(store *s)
{
    if (s == NULL || !atomic_load(&s->full))
        return false;
    /* room again (a file deleted, a volume grown): ready, and the next
     * write will tell for sure */
    const char *file = store_target_file(s->path);
    if (file == NULL)
        return true; /* a database server: until a batch commits again */
    char dir[4096];
    store_dir_of(file, dir, sizeof dir);
    struct statvfs v;
    if (statvfs(dir, &v) == 0 && (uint64_t)v.f_bavail * v.f_frsize >= STORE_FULL_RECOVER_BYTES)
        return false;
    return true;
}

bool store_ready(store *s)
{
    if (s == NULL || store_storage_full(s))
        return false;
    if (store_target_file(s->path) != NULL)
        return true;
    rd_err err;
    store_conn *c = store_thread_conn(s, &err);
    store_dbst *st = NULL;
    bool up = c != NULL && store_stmt_get(&c->cache, "SELECT 1", &st) == STORE_DB_OK &&
              store_db_step(st) == STORE_DB_ROW;
    store_stmt_put(st);
    store_conn_release(s);
    return up;
}

static _Thread_local bool tl_full;

bool store_sql_err_took_full(void)
{
    bool full = tl_full;
    tl_full = false;
    return full;
}

rd_code store_sql_err(store_db *db, int rc, rd_err *err)
{
    int primary = rc & 0xff;
    if (primary == STORE_DB_BUSY || primary == STORE_DB_LOCKED)
        return rd_errf(err, RD_UNAVAILABLE, NULL, "the database is busy; retry later");
    if (primary == STORE_DB_CANTOPEN)
        return rd_errf(err, RD_UNAVAILABLE, NULL,
                       "the database cannot be reached: nothing was written; retry later");
    if (primary == STORE_DB_FULL) {
        tl_full = true;
        return rd_errf(err, RD_UNAVAILABLE, NULL,
                       "the disk is full: nothing was written; retry once space is freed");
    }
    if (rc == STORE_DB_CONSTRAINT_UNIQUE || rc == STORE_DB_CONSTRAINT_PRIMARYKEY) {
        char cols[128];
        unique_columns(db != NULL ? store_db_errmsg(db) : "", cols, sizeof cols);
        if (strcmp(cols, "id") == 0)
            return rd_errf(err, RD_DUPLICATE_RECORD, "id", "a record with this id already exists");
        return rd_errf(err, RD_DUPLICATE_RECORD, cols,
                       "another record already has the same %s (unique constraint on %s)",
                       strchr(cols, ',') ? "values" : "value", cols[0] ? cols : "a field");
    }
    return rd_errf(err, RD_INTERNAL, NULL, "storage error: %s", store_db_errstr(rc));
}

int store_exec(store_db *db, const char *sql)
{
    return store_db_exec(db, sql);
}

/* ---- typed columns <-> JSON ------------------------------------------------- */

int store_bind_value(store_dbst *st, int idx, const store_field *f, const json_t *v)
{
    if (v == NULL || json_is_null(v))
        return store_db_bind_null(st, idx);
    switch (f->type) {
    case STORE_T_STRING:
    case STORE_T_ENUM:
    case STORE_T_REFERENCE:
        if (!json_is_string(v))
            return STORE_DB_MISMATCH;
        return store_db_bind_text(st, idx, json_string_value(v), (int)json_string_length(v),
                                  STORE_DB_TRANSIENT);
    case STORE_T_INTEGER:
        if (json_is_integer(v))
            return store_db_bind_int64(st, idx, json_integer_value(v));
        return store_db_bind_int64(st, idx, (int64_t)json_number_value(v));
    case STORE_T_NUMBER:
        return store_db_bind_double(st, idx, json_number_value(v));
    case STORE_T_BOOLEAN:
        return store_db_bind_int64(st, idx, json_is_true(v) ? 1 : 0);
    case STORE_T_TIMESTAMP: {
        int64_t t;
        if (!json_is_string(v) || rd_parse_rfc3339(json_string_value(v), &t) != 0)
            return STORE_DB_MISMATCH;
        return store_db_bind_int64(st, idx, t);
    }
    case STORE_T_JSON: {
        char *text = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
        if (text == NULL)
            return STORE_DB_NOMEM;
        int rc = store_db_bind_text(st, idx, text, -1, STORE_DB_TRANSIENT);
        free(text);
        return rc;
    }
    }
    return STORE_DB_MISMATCH;
}

/* The JSON value of column i for field f (NULL for SQL NULL). Falls back to
 * the column's storage class when it does not fit the field's type (a read
 * racing a forced type change). *bad is set when a JSON column does not
 * parse. */
static json_t *column_json(store_dbst *st, int i, const store_field *f, bool *bad)
{
    int ct = store_db_column_type(st, i);
    if (ct == STORE_DB_NULL)
        return NULL;
    switch (f->type) {
    case STORE_T_STRING:
    case STORE_T_ENUM:
    case STORE_T_REFERENCE:
        if (ct == STORE_DB_TEXT)
            return json_stringn((const char *)store_db_column_text(st, i),
                                (size_t)store_db_column_bytes(st, i));
        break;
    case STORE_T_INTEGER:
        if (ct == STORE_DB_INTEGER)
            return json_integer(store_db_column_int64(st, i));
        break;
    case STORE_T_NUMBER:
        if (ct == STORE_DB_INTEGER || ct == STORE_DB_FLOAT)
            return json_real(store_db_column_double(st, i));
        break;
    case STORE_T_BOOLEAN:
        if (ct == STORE_DB_INTEGER)
            return json_boolean(store_db_column_int64(st, i) != 0);
        break;
    case STORE_T_TIMESTAMP:
        if (ct == STORE_DB_INTEGER) {
            char buf[48];
            return json_string(rd_rfc3339(store_db_column_int64(st, i), buf, sizeof buf));
        }
        break;
    case STORE_T_JSON:
        if (ct == STORE_DB_TEXT) {
            json_t *v = json_loadb((const char *)store_db_column_text(st, i),
                                   (size_t)store_db_column_bytes(st, i), JSON_DECODE_ANY, NULL);
            if (v == NULL)
                *bad = true;
            return v;
        }
        break;
    }
    switch (ct) {
    case STORE_DB_INTEGER:
        return json_integer(store_db_column_int64(st, i));
    case STORE_DB_FLOAT:
        return json_real(store_db_column_double(st, i));
    case STORE_DB_TEXT:
        return json_stringn((const char *)store_db_column_text(st, i),
                            (size_t)store_db_column_bytes(st, i));
    default:
        return NULL;
    }
}

/* Column i as text into dst (cap bytes, cut to fit). Every row read copies
 * four such columns: a memcpy, not a formatted print. */
static void copy_text(char *dst, size_t cap, store_dbst *st, int i)
{
    const unsigned char *t = store_db_column_text(st, i);
    size_t n = t != NULL ? (size_t)store_db_column_bytes(st, i) : 0;
    if (n >= cap)
        n = cap - 1;
    if (n > 0)
        memcpy(dst, t, n);
    dst[n] = '\0';
}

rd_code store_row_read(store_dbst *st, const store_model *m, store_record *out, rd_err *err)
{
    int n = store_db_column_count(st);
    size_t hint = 0;
    bool bad = false;
    memset(out, 0, sizeof *out);
    out->data = json_object();
    if (out->data == NULL)
        return rd_errf(err, RD_INTERNAL, NULL, "out of memory");
    for (int i = 0; i < n; i++) {
        const char *col = store_db_column_name(st, i);
        if (col == NULL)
            continue;
        if (col[0] == '_') {
            if (col[1] == 's' && col[2] == '_')
                continue; /* a field's sync id ("_s_<field>"): not part of a record */
            if (strcmp(col, "_id") == 0)
                copy_text(out->id, sizeof out->id, st, i);
            else if (strcmp(col, "_group") == 0)
                copy_text(out->group, sizeof out->group, st, i);
            else if (strcmp(col, "_created_by") == 0)
                copy_text(out->created_by, sizeof out->created_by, st, i);
            else if (strcmp(col, "_updated_by") == 0)
                copy_text(out->updated_by, sizeof out->updated_by, st, i);
            else if (strcmp(col, "_version") == 0)
                out->version = store_db_column_int64(st, i);
            else if (strcmp(col, "_sync_id") == 0)
                out->sync_id = store_db_column_int64(st, i);
            else if (strcmp(col, "_created_at") == 0)
                out->created_at_us = store_db_column_int64(st, i);
            else if (strcmp(col, "_updated_at") == 0)
                out->updated_at_us = store_db_column_int64(st, i);
            continue;
        }
        /* columns come in schema order, so the next field is the best guess */
        const store_field *f = NULL;
        if (hint < m->n_fields && strcmp(m->fields[hint].name, col) == 0)
            f = &m->fields[hint];
        for (size_t j = 0; f == NULL && j < m->n_fields; j++)
            if (strcmp(m->fields[j].name, col) == 0)
                f = &m->fields[j];
        if (f == NULL)
            continue;
        hint = (size_t)(f - m->fields) + 1;
        json_t *v = column_json(st, i, f, &bad);
        if (v != NULL && json_object_set_new(out->data, f->name, v) != 0)
            bad = true;
    }
    if (bad) {
        store_record_clear(out);
        return rd_errf(err, RD_INTERNAL, NULL, "a stored value could not be decoded");
    }
    return RD_OK;
}

void store_record_clear(store_record *rec)
{
    if (rec == NULL)
        return;
    json_decref(rec->data);
    memset(rec, 0, sizeof *rec);
}

/* ---- opening ---------------------------------------------------------------- */

/* The change log: seq orders every row across organisations (pruning
 * walks it), sync_id is the organisation's own. */
#define SYNC_LOG_TABLE                                                                             \
    "CREATE TABLE IF NOT EXISTS _rd_sync_log ("                                                    \
    " seq INTEGER PRIMARY KEY, sync_id INTEGER NOT NULL, server_tx_id TEXT NOT NULL,"              \
    " org TEXT NOT NULL, model TEXT NOT NULL, record_id TEXT NOT NULL, op TEXT NOT NULL,"          \
    " fields TEXT NOT NULL, actor TEXT NOT NULL, grp TEXT NOT NULL,"                               \
    " committed_at INTEGER NOT NULL, data TEXT)"

/* Layout 1 -> 2: sync ids become per organisation. The log is rebuilt with
 * seq = the old global sync id, and every organisation (and any new one)
 * continues from the old global maximum, so each organisation's ids keep
 * increasing across the upgrade (with one jump) and no readAt a client
 * holds ever sees a smaller id. */
static const char *const migrate_v2_sql[] = {
    "ALTER TABLE _rd_sync_log RENAME TO _rd_sync_log_v1",
    SYNC_LOG_TABLE,
    "INSERT INTO _rd_sync_log (seq, sync_id, server_tx_id, org, model, record_id, op, fields,"
    " actor, grp, committed_at, data) SELECT sync_id, sync_id, server_tx_id, org, model,"
    " record_id, op, fields, actor, grp, committed_at, data FROM _rd_sync_log_v1",
    "DROP TABLE _rd_sync_log_v1",
    "CREATE TABLE IF NOT EXISTS _rd_org_seq (org TEXT PRIMARY KEY, sync_id INTEGER NOT NULL)"
    " WITHOUT ROWID",
    "INSERT OR REPLACE INTO _rd_org_seq (org, sync_id)"
    " SELECT '*', coalesce(max(seq), 0) FROM _rd_sync_log",
    "INSERT OR REPLACE INTO _rd_org_seq (org, sync_id) SELECT DISTINCT org,"
    " (SELECT sync_id FROM _rd_org_seq WHERE org = '*') FROM _rd_sync_log",
};

static const char *const layout_sql[] = {
    "CREATE TABLE IF NOT EXISTS _rd_schema ("
    " org TEXT NOT NULL, revision INTEGER NOT NULL, doc TEXT NOT NULL,"
    " created_at INTEGER NOT NULL, PRIMARY KEY (org, revision))",
    SYNC_LOG_TABLE,
    /* the change feed reads one organisation's rows in sync-id order; sync
     * ids are per organisation */
    "CREATE UNIQUE INDEX IF NOT EXISTS _rd_sync_log_by_org ON _rd_sync_log (org, sync_id)",
    /* each organisation's newest committed sync id, written with the batch
     * that took it; org '*' holds where a new organisation starts */
    "CREATE TABLE IF NOT EXISTS _rd_org_seq (org TEXT PRIMARY KEY, sync_id INTEGER NOT NULL)"
    " WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS _rd_claims ("
    " org TEXT NOT NULL, model TEXT NOT NULL, record_id TEXT NOT NULL, claim_id TEXT NOT NULL,"
    " holder TEXT NOT NULL, expires_at INTEGER NOT NULL, PRIMARY KEY (org, model, record_id))",
    "CREATE UNIQUE INDEX IF NOT EXISTS _rd_claims_by_id ON _rd_claims (org, claim_id)",
    /* API keys and revoked token ids (store/keys.c): only hashes, never keys */
    "CREATE TABLE IF NOT EXISTS _rd_api_keys ("
    " key_id TEXT PRIMARY KEY, hash BLOB NOT NULL UNIQUE, org TEXT NOT NULL, role TEXT NOT NULL,"
    " caps TEXT NOT NULL, created_at INTEGER NOT NULL, revoked_at INTEGER, client_id TEXT)",
    "CREATE INDEX IF NOT EXISTS _rd_api_keys_by_org ON _rd_api_keys (org, created_at)",
    "CREATE TABLE IF NOT EXISTS _rd_revoked_tokens ("
    " jti TEXT PRIMARY KEY, revoked_at INTEGER NOT NULL)",
    /* the credential generation (store_auth_gen): every change to a key row
     * or to the revoked tokens bumps it in the changing transaction, by
     * trigger, so no writer (recordctl, another binary, hand-made SQL) can
     * forget to */
    "CREATE TABLE IF NOT EXISTS _rd_auth_gen ("
    " id INTEGER PRIMARY KEY CHECK (id = 1), gen INTEGER NOT NULL)",
    "INSERT OR IGNORE INTO _rd_auth_gen (id, gen) VALUES (1, 0)",
    "CREATE TRIGGER IF NOT EXISTS _rd_api_keys_gen_u AFTER UPDATE ON _rd_api_keys"
    " BEGIN UPDATE _rd_auth_gen SET gen = gen + 1 WHERE id = 1; END",
    "CREATE TRIGGER IF NOT EXISTS _rd_api_keys_gen_d AFTER DELETE ON _rd_api_keys"
    " BEGIN UPDATE _rd_auth_gen SET gen = gen + 1 WHERE id = 1; END",
    "CREATE TRIGGER IF NOT EXISTS _rd_revoked_tokens_gen_i AFTER INSERT ON _rd_revoked_tokens"
    " BEGIN UPDATE _rd_auth_gen SET gen = gen + 1 WHERE id = 1; END",
    "CREATE TRIGGER IF NOT EXISTS _rd_revoked_tokens_gen_d AFTER DELETE ON _rd_revoked_tokens"
    " BEGIN UPDATE _rd_auth_gen SET gen = gen + 1 WHERE id = 1; END",
};

/* Creates the system tables on a new database (user_version 0) and refuses
 * a layout newer than this code. Every statement of layout_sql is IF NOT
 * EXISTS and runs on every open, so a system table added later (claims)
 * appears in an existing database without a layout version bump. Runs in
 * one IMMEDIATE transaction so two processes opening a new file do not
 * race. */
static rd_code ensure_layout(store_db *db, rd_err *err)
{
    if (store_db_dialect(db) == STORE_DIALECT_POSTGRES)
        return store_pg_layout(db, err);
    store_dbst *st = NULL;
    int rc = store_exec(db, "BEGIN IMMEDIATE");
    if (rc != STORE_DB_OK)
        return store_sql_err(db, rc, err);
    rc = store_db_prepare(db, "PRAGMA user_version", &st);
    if (rc != STORE_DB_OK)
        goto fail;
    rc = store_db_step(st);
    if (rc != STORE_DB_ROW)
        goto fail;
    int version = store_db_column_int64(st, 0);
    store_db_finalize(st);
    st = NULL;
    if (version > STORE_LAYOUT_VERSION) {
        store_exec(db, "ROLLBACK");
        return rd_errf(err, RD_INTERNAL, NULL,
                       "database layout version %d is newer than this server's (%d)", version,
                       STORE_LAYOUT_VERSION);
    }
    /* _rd_sync_log.data (the change feed's values) came within layout 1:
     * older files gain the column, their rows keep NULL */
    bool has_log =
        store_db_prepare(db, "SELECT sync_id FROM _rd_sync_log LIMIT 0", &st) == STORE_DB_OK;
    store_db_finalize(st);
    st = NULL;
    if (has_log &&
        store_db_prepare(db, "SELECT data FROM _rd_sync_log LIMIT 0", &st) != STORE_DB_OK) {
        rc = store_exec(db, "ALTER TABLE _rd_sync_log ADD COLUMN data TEXT");
        if (rc != STORE_DB_OK)
            goto fail;
    }
    store_db_finalize(st);
    st = NULL;
    /* _rd_api_keys.client_id (a key bound to a client certificate) came
     * within layout 2: older files gain the column, their keys unbound */
    bool has_keys =
        store_db_prepare(db, "SELECT key_id FROM _rd_api_keys LIMIT 0", &st) == STORE_DB_OK;
    store_db_finalize(st);
    st = NULL;
    if (has_keys &&
        store_db_prepare(db, "SELECT client_id FROM _rd_api_keys LIMIT 0", &st) != STORE_DB_OK) {
        rc = store_exec(db, "ALTER TABLE _rd_api_keys ADD COLUMN client_id TEXT");
        if (rc != STORE_DB_OK)
            goto fail;
    }
    store_db_finalize(st);
    st = NULL;
    if (has_log && version < 2) {
        for (size_t i = 0; i < sizeof migrate_v2_sql / sizeof migrate_v2_sql[0]; i++) {
            rc = store_exec(db, migrate_v2_sql[i]);
            if (rc != STORE_DB_OK)
                goto fail;
        }
    }
    for (size_t i = 0; i < sizeof layout_sql / sizeof layout_sql[0]; i++) {
        rc = store_exec(db, layout_sql[i]);
        if (rc != STORE_DB_OK)
            goto fail;
    }
    if (version < STORE_LAYOUT_VERSION) {
        char sql[64];
        snprintf(sql, sizeof sql, "PRAGMA user_version = %d", STORE_LAYOUT_VERSION);
        rc = store_exec(db, sql);
        if (rc != STORE_DB_OK)
            goto fail;
    }
    rc = store_exec(db, "COMMIT");
    if (rc != STORE_DB_OK)
        goto fail;
    return RD_OK;
fail:
    store_db_finalize(st);
    store_sql_err(db, rc, err);
    store_exec(db, "ROLLBACK");
    return err ? err->code : RD_INTERNAL;
}

/* *out = the one integer sql returns. */
static rd_code query_int64(store_db *db, const char *sql, int64_t *out, rd_err *err)
{
    store_dbst *st = NULL;
    int rc = store_db_prepare(db, sql, &st);
    if (rc == STORE_DB_OK)
        rc = store_db_step(st);
    if (rc == STORE_DB_ROW)
        *out = store_db_column_int64(st, 0);
    store_db_finalize(st);
    return rc == STORE_DB_ROW ? RD_OK : store_sql_err(db, rc, err);
}

/* Loads the latest schema of every organisation, the highest sync id and
 * the latest claim expiry. */
static rd_code load_state(store *s, rd_err *err)
{
    rd_code code = store_schema_reload(s, &s->wcache, NULL, err);
    if (code != RD_OK)
        return code;
    code =
        query_int64(s->wdb, "SELECT coalesce((SELECT sync_id FROM _rd_org_seq WHERE org = '*'), 0)",
                    &s->seq_base, err);
    store_changes_measure(s);
    if (code == RD_OK)
        code = query_int64(s->wdb, "SELECT coalesce(max(expires_at), 0) FROM _rd_claims",
                           &s->claims_until_us, err);
    return code;
}

static void pool_close(store *s);

static void store_free(store *s)
{
    if (s->wdb != NULL) {
        store_stmt_cache_clear(&s->wcache);
        store_db_close(s->wdb);
    }
    store_snaps_free(s);
    for (size_t i = 0; s->org_seqs != NULL && i < s->org_seq_cap; i++)
        if (s->org_seqs[i] != NULL) {
            free(s->org_seqs[i]->org);
            free(s->org_seqs[i]);
        }
    free(s->org_seqs);
    if (s->empty != NULL)
        store_schema_release(s->empty);
    pthread_mutex_destroy(&s->qmu);
    pthread_cond_destroy(&s->qcv);
    pthread_mutex_destroy(&s->cmu);
    pthread_cond_destroy(&s->ccv);
    pthread_mutex_destroy(&s->smu);
    pool_close(s);
    pthread_mutex_destroy(&s->pmu);
    pthread_cond_destroy(&s->pcv);
    free(s->pending);
    free(s->path);
    free(s);
}

rd_code store_open(const store_options *opt, store **out, rd_err *err)
{
    store *s = NULL;
    rd_code code = RD_OK;
    int rc;
    *out = NULL;
    if (opt == NULL || opt->path == NULL || opt->path[0] == '\0')
        return rd_errf(err, RD_INTERNAL, NULL, "store_open: no database path");
    if (sodium_init() < 0)
        return rd_errf(err, RD_INTERNAL, NULL, "libsodium could not be initialised");
    s = calloc(1, sizeof *s);
    if (s == NULL)
        return rd_errf(err, RD_INTERNAL, NULL, "out of memory");
    static _Atomic uint64_t serials;
    s->serial = ++serials;
    pthread_mutex_init(&s->qmu, NULL);
    pthread_cond_init(&s->qcv, NULL);
    pthread_mutex_init(&s->cmu, NULL);
    pthread_cond_init(&s->ccv, NULL);
    pthread_mutex_init(&s->smu, NULL);
    pthread_mutex_init(&s->pmu, NULL);
    pthread_cond_init(&s->pcv, NULL);
    s->path = strdup(opt->path);
    if (store_target_file(opt->path) == NULL)
        s->pool_max = opt->pool_size > 0 ? opt->pool_size : 8;
    s->sync_normal = opt->sync_normal;
    s->max_batch = opt->max_batch > 0 ? opt->max_batch : STORE_DEFAULT_BATCH;
    s->empty = store_schema_new();
    if (s->path == NULL || s->empty == NULL) {
        code = rd_errf(err, RD_INTERNAL, NULL, "out of memory");
        goto fail;
    }
    char msg[256];
    store_db_options dbo = {.role = STORE_DB_WRITER, .sync_normal = s->sync_normal};
    rc = store_db_open(s->path, &dbo, &s->wdb, msg, sizeof msg);
    if (rc != STORE_DB_OK) {
        code = rd_errf(err, RD_UNAVAILABLE, NULL, "cannot open the database: %s", msg);
        goto fail;
    }
    s->wcache.db = s->wdb;
    code = ensure_layout(s->wdb, err);
    rd_random_id("p_", s->origin, 16);
    if (code == RD_OK)
        code = load_state(s, err);
    if (code == RD_OK && !opt->tool)
        code = store_pg_listen_start(s, err);
    if (code != RD_OK)
        goto fail;
    if (pthread_create(&s->completer, NULL, store_completer_main, s) != 0) {
        code = rd_errf(err, RD_INTERNAL, NULL, "cannot start the completer thread");
        goto fail;
    }
    s->completer_started = true;
    if (pthread_create(&s->writer, NULL, store_writer_main, s) != 0) {
        code = rd_errf(err, RD_INTERNAL, NULL, "cannot start the writer thread");
        goto fail;
    }
    s->writer_started = true;
    *out = s;
    return RD_OK;
fail:
    store_pg_listen_stop(s);
    store_completer_stop(s);
    store_free(s);
    return code;
}

void store_close(store *s)
{
    if (s == NULL)
        return;
    store_pg_listen_stop(s);
    pthread_mutex_lock(&s->qmu);
    s->closing = true;
    pthread_cond_broadcast(&s->qcv);
    pthread_mutex_unlock(&s->qmu);
    if (s->writer_started)
        pthread_join(s->writer, NULL);
    store_completer_stop(s);
    store_stmt_cache_clear(&s->wcache);
    if (store_db_dialect(s->wdb) == STORE_DIALECT_SQLITE)
        store_exec(s->wdb, "PRAGMA wal_checkpoint(TRUNCATE)");
    store_free(s);
}

/* ---- reads --------------------------------------------------------------------- */

rd_code store_conn_open(store *s, store_conn **out, rd_err *err)
{
    store_conn *c = calloc(1, sizeof *c);
    *out = NULL;
    if (c == NULL)
        return rd_errf(err, RD_INTERNAL, NULL, "out of memory");
    c->s = s;
    c->serial = s->serial;
    char msg[256];
    store_db_options dbo = {.role = STORE_DB_READER};
    if (store_db_open(s->path, &dbo, &c->db, msg, sizeof msg) != STORE_DB_OK) {
        free(c);
        return rd_errf(err, RD_UNAVAILABLE, NULL, "cannot open a read connection: %s", msg);
    }
    c->cache.db = c->db;
    *out = c;
    return RD_OK;
}

void store_conn_close(store_conn *c)
{
    if (c == NULL)
        return;
    store_stmt_cache_clear(&c->cache);
    store_db_close(c->db);
    free(c);
}

/* ---- the read connections of a database server: a pool ------------------------------
 * At most pool_max are open; a thread takes one on its first read of a
 * call (store_thread_conn) and gives it back when the call ends
 * (store_conn_release). A thread that finds none free waits up to
 * STORE_POOL_WAIT_S, then gets RD_UNAVAILABLE. */
#define STORE_POOL_WAIT_S 5

/* A pooled connection, waiting up to wait_s seconds for one. */
static store_conn *pool_take(store *s, int wait_s, rd_err *err)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += wait_s;
    pthread_mutex_lock(&s->pmu);
    while (s->idle == NULL && s->pool_open >= s->pool_max)
        if ((wait_s == 0 || pthread_cond_timedwait(&s->pcv, &s->pmu, &until) != 0) &&
            s->idle == NULL && s->pool_open >= s->pool_max) {
            pthread_mutex_unlock(&s->pmu);
            rd_errf(err, RD_UNAVAILABLE, NULL,
                    "all %d database connections are in use; retry later", s->pool_max);
            return NULL;
        }
    store_conn *c = s->idle;
    if (c != NULL)
        s->idle = c->next_idle;
    else
        s->pool_open++;
    pthread_mutex_unlock(&s->pmu);
    if (c == NULL && store_conn_open(s, &c, err) != RD_OK) {
        pthread_mutex_lock(&s->pmu);
        s->pool_open--;
        pthread_cond_signal(&s->pcv);
        pthread_mutex_unlock(&s->pmu);
        return NULL;
    }
    c->pooled = true;
    c->next_idle = NULL;
    return c;
}

static void pool_give(store_conn *c)
{
    store *s = c->s;
    c->held = false; /* a hold never outlives the call */
    if (!store_db_autocommit(c->db))
        store_conn_exec(c, "ROLLBACK");
    pthread_mutex_lock(&s->pmu);
    c->next_idle = s->idle;
    s->idle = c;
    pthread_cond_signal(&s->pcv);
    pthread_mutex_unlock(&s->pmu);
}

static void pool_close(store *s)
{
    for (store_conn *c = s->idle, *next; c != NULL; c = next) {
        next = c->next_idle;
        store_conn_close(c);
    }
    s->idle = NULL;
}

/* The calling thread's read connection (store_thread_conn): a pooled one
 * goes back to its pool when the thread exits, another is closed. */
static pthread_key_t thread_conn_key;
static pthread_once_t thread_conn_once = PTHREAD_ONCE_INIT;

static void thread_conn_destroy(void *arg)
{
    store_conn *c = arg;
    if (c->pooled)
        pool_give(c);
    else
        store_conn_close(c);
}

static void thread_conn_key_init(void)
{
    pthread_key_create(&thread_conn_key, thread_conn_destroy);
}

store_conn *store_thread_conn(store *s, rd_err *err)
{
    pthread_once(&thread_conn_once, thread_conn_key_init);
    store_conn *c = pthread_getspecific(thread_conn_key);
    if (c != NULL && c->serial != s->serial) { /* left by a store closed since */
        if (!c->pooled)                        /* (a pooled one went with its store) */
            store_conn_close(c);
        pthread_setspecific(thread_conn_key, NULL);
        c = NULL;
    }
    if (c != NULL)
        return c;
    if (s->pool_max > 0)
        c = pool_take(s, STORE_POOL_WAIT_S, err);
    else if (store_conn_open(s, &c, err) != RD_OK)
        c = NULL;
    if (c != NULL)
        pthread_setspecific(thread_conn_key, c);
    return c;
}

store_conn *store_conn_borrow(store *s, bool *borrowed)
{
    rd_err err;
    pthread_once(&thread_conn_once, thread_conn_key_init);
    store_conn *c = pthread_getspecific(thread_conn_key);
    *borrowed = false;
    if (c != NULL && c->serial == s->serial)
        return c;
    if (s->pool_max == 0)
        return store_thread_conn(s, &err);
    c = pool_take(s, 0, &err);
    *borrowed = c != NULL;
    return c;
}

void store_conn_give_back(store_conn *c)
{
    if (c != NULL)
        pool_give(c);
}

void store_conn_release(store *s)
{
    pthread_once(&thread_conn_once, thread_conn_key_init);
    store_conn *c = pthread_getspecific(thread_conn_key);
    if (c == NULL || !c->pooled || c->serial != s->serial)
        return;
    pthread_setspecific(thread_conn_key, NULL);
    pool_give(c);
}

/* Runs a cached statement that returns no rows. Inside a hold
 * (store_read_hold) the transaction statements of the reads are skipped:
 * they join the held snapshot. */
int store_conn_exec(store_conn *c, const char *sql)
{
    store_dbst *st = NULL;
    if (c->held &&
        (strcmp(sql, "BEGIN") == 0 || strcmp(sql, "COMMIT") == 0 || strcmp(sql, "ROLLBACK") == 0))
        return STORE_DB_OK;
    int rc = store_stmt_get(&c->cache, sql, &st);
    if (rc != STORE_DB_OK)
        return rc;
    rc = store_db_step(st);
    store_stmt_put(st);
    return rc == STORE_DB_DONE ? STORE_DB_OK : rc;
}

int store_org_head(store_conn *c, const char *org, int64_t *head)
{
    store_dbst *st = NULL;
    int rc = store_stmt_get(&c->cache, STORE_ORG_HEAD_SQL, &st);
    if (rc != STORE_DB_OK)
        return rc;
    rc = store_db_bind_text(st, 1, org, -1, STORE_DB_STATIC);
    if (rc == STORE_DB_OK)
        rc = store_db_step(st);
    if (rc == STORE_DB_ROW) {
        *head = store_db_column_int64(st, 0);
        rc = STORE_DB_OK;
    }
    store_stmt_put(st);
    return rc;
}

int store_conn_begin(store_conn *c, const char *org, int64_t *read_at)
{
    if (c->held && strcmp(org, c->held_org) == 0) {
        *read_at = c->held_at;
        return STORE_DB_OK;
    }
    int rc = store_conn_exec(c, "BEGIN");
    if (rc != STORE_DB_OK)
        return rc;
    return store_org_head(c, org, read_at);
}

rd_code store_read_hold(store_conn *c, const char *org, int64_t *read_at, rd_err *err)
{
    if (c->held)
        return rd_errf(err, RD_INTERNAL, NULL, "a read snapshot is already held");
    if (org == NULL || strlen(org) >= sizeof c->held_org)
        return rd_errf(err, RD_NOT_FOUND, NULL, "no such organisation");
    int64_t at = 0;
    int rc = store_conn_exec(c, "BEGIN");
    if (rc == STORE_DB_OK)
        rc = store_org_head(c, org, &at); /* SQLite's snapshot starts at this read */
    if (rc != STORE_DB_OK) {
        rd_code code = store_sql_err(c->db, rc, err);
        if (!store_db_autocommit(c->db))
            store_conn_exec(c, "ROLLBACK");
        return code;
    }
    snprintf(c->held_org, sizeof c->held_org, "%s", org);
    c->held_at = at;
    c->held = true;
    if (read_at != NULL)
        *read_at = at;
    return RD_OK;
}

void store_read_release(store_conn *c)
{
    if (c == NULL || !c->held)
        return;
    c->held = false;
    if (!store_db_autocommit(c->db))
        store_conn_exec(c, "ROLLBACK"); /* it only read */
}

rd_code store_get(store_conn *c, const char *org, const char *model, const char *id,
                  store_record *out, int64_t *read_at, rd_err *err)
{
    store_schema *sch = NULL;
    store_dbst *st = NULL;
    store_sbuf sql = {0};
    rd_code code = RD_OK;
    int rc;
    memset(out, 0, sizeof *out);
    if (org == NULL || model == NULL || id == NULL || !store_org_valid(org) ||
        !store_ident_valid(model)) {
        return rd_errf(err, RD_NOT_FOUND, "model", "model '%.64s' is not in the schema",
                       model ? model : "");
    }
    sch = store_schema_get_model(c->s, org, model);
    const store_model *m = store_schema_model(sch, model);
    if (m == NULL) {
        code = rd_errf(err, RD_NOT_FOUND, "model", "model '%.64s' is not in the schema", model);
        goto done;
    }
    if (!store_id_valid(id)) {
        code =
            rd_errf(err, RD_NOT_FOUND, "id", "record '%.128s' not found in model '%s'", id, model);
        goto done;
    }
    store_sbuf_add(&sql, "SELECT * FROM ");
    store_sbuf_table(&sql, org, model);
    store_sbuf_add(&sql, " WHERE _id = ?1");
    if (sql.oom) {
        code = rd_errf(err, RD_INTERNAL, NULL, "out of memory");
        goto done;
    }
    int64_t at = 0;
    rc = store_conn_begin(c, org, &at);
    if (rc != STORE_DB_OK)
        goto sqlfail;
    rc = store_stmt_get(&c->cache, sql.p, &st);
    if (rc == STORE_DB_ERROR && strncmp(store_db_errmsg(c->db), "no such table", 13) == 0) {
        /* the model was dropped after this snapshot of the schema was taken */
        code = rd_errf(err, RD_NOT_FOUND, "model", "model '%.64s' is not in the schema", model);
        goto done;
    }
    if (rc != STORE_DB_OK)
        goto sqlfail;
    rc = store_db_bind_text(st, 1, id, -1, STORE_DB_STATIC);
    if (rc != STORE_DB_OK)
        goto sqlfail;
    rc = store_db_step(st);
    if (rc == STORE_DB_DONE) {
        code =
            rd_errf(err, RD_NOT_FOUND, "id", "record '%.128s' not found in model '%s'", id, model);
        goto done;
    }
    if (rc != STORE_DB_ROW)
        goto sqlfail;
    code = store_row_read(st, m, out, err);
    if (code != RD_OK)
        goto done;
    store_stmt_put(st);
    st = NULL;
    rc = store_conn_exec(c, "COMMIT");
    if (rc != STORE_DB_OK) {
        store_record_clear(out);
        goto sqlfail;
    }
    if (read_at != NULL)
        *read_at = at;
    goto done;
sqlfail:
    code = store_sql_err(c->db, rc, err);
done:
    store_stmt_put(st);
    if (!store_db_autocommit(c->db))
        store_conn_exec(c, "ROLLBACK");
    store_sbuf_free(&sql);
    if (sch != NULL)
        store_schema_release(sch);
    return code;
}

/* ---- several records by id ---------------------------------------------------- */

/* "?1, ?2, …, ?64": the placeholder list of store_get_many, made once;
 * get_many_len[k] is the length of its first k placeholders. */
static char get_many_params[STORE_GET_MANY_CHUNK * 6];
static size_t get_many_len[STORE_GET_MANY_CHUNK + 1];
static pthread_once_t get_many_once = PTHREAD_ONCE_INIT;

static void get_many_params_init(void)
{
    size_t used = 0;
    for (int i = 1; i <= STORE_GET_MANY_CHUNK; i++) {
        used += (size_t)snprintf(get_many_params + used, sizeof get_many_params - used, "%s?%d",
                                 i > 1 ? ", " : "", i);
        get_many_len[i] = used;
    }
}

/* The statement text for k ids: "SELECT * FROM <table> WHERE _id IN (?1..?k)". */
static void get_many_sql(store_sbuf *sql, const char *org, const store_model *m, int k)
{
    sql->len = 0;
    store_sbuf_add(sql, "SELECT * FROM ");
    store_sbuf_table(sql, org, m->name);
    store_sbuf_add(sql, " WHERE _id IN (");
    store_sbuf_addn(sql, get_many_params, get_many_len[k]);
    store_sbuf_add(sql, ")");
}

rd_code store_get_many(store_conn *c, const char *org, const store_model *m, const char *const *ids,
                       size_t n, store_record *out, size_t *n_out, int64_t *read_at, rd_err *err)
{
    store_dbst *st = NULL;
    store_sbuf sql = {0};
    rd_code code = RD_OK;
    int rc = STORE_DB_OK;
    *n_out = 0;
    if (org == NULL || m == NULL || !store_org_valid(org) || !store_ident_valid(m->name))
        return rd_errf(err, RD_NOT_FOUND, "model", "model '%.64s' is not in the schema",
                       m && m->name ? m->name : "");
    pthread_once(&get_many_once, get_many_params_init);
    int64_t at = 0;
    rc = store_conn_begin(c, org, &at);
    if (rc != STORE_DB_OK)
        goto sqlfail;
    for (size_t from = 0; from < n; from += STORE_GET_MANY_CHUNK) {
        /* three statement texts per model (1, 8 or 64 ids), each cached: a
         * single lookup (a GetRecord's expansion) binds one id, not 64 */
        size_t left = n - from;
        int k = left <= 1 ? 1 : left <= 8 ? 8 : STORE_GET_MANY_CHUNK;
        get_many_sql(&sql, org, m, k);
        if (sql.oom) {
            code = rd_errf(err, RD_INTERNAL, NULL, "out of memory");
            goto done;
        }
        rc = store_stmt_get(&c->cache, sql.p, &st);
        if (rc == STORE_DB_ERROR && strncmp(store_db_errmsg(c->db), "no such table", 13) == 0) {
            code =
                rd_errf(err, RD_NOT_FOUND, "model", "model '%.64s' is not in the schema", m->name);
            goto done;
        }
        if (rc != STORE_DB_OK)
            goto sqlfail;
        for (int i = 0; rc == STORE_DB_OK && i < k; i++) {
            const char *id = from + (size_t)i < n ? ids[from + (size_t)i] : NULL;
            /* an id that cannot exist matches nothing, like a NULL slot */
            rc = id != NULL && store_id_valid(id)
                     ? store_db_bind_text(st, i + 1, id, -1, STORE_DB_STATIC)
                     : store_db_bind_null(st, i + 1);
        }
        if (rc != STORE_DB_OK)
            goto sqlfail;
        c->get_many_queries++;
        while ((rc = store_db_step(st)) == STORE_DB_ROW) {
            if (*n_out == n) /* ids repeated: never more rows than slots */
                break;
            code = store_row_read(st, m, &out[*n_out], err);
            if (code != RD_OK)
                goto done;
            (*n_out)++;
        }
        if (rc != STORE_DB_DONE && rc != STORE_DB_ROW)
            goto sqlfail;
        store_stmt_put(st);
        st = NULL;
    }
    rc = store_conn_exec(c, "COMMIT");
    if (rc != STORE_DB_OK)
        goto sqlfail;
    if (read_at != NULL)
        *read_at = at;
    goto done;
sqlfail:
    code = store_sql_err(c->db, rc, err);
done:
    store_stmt_put(st);
    if (!store_db_autocommit(c->db))
        store_conn_exec(c, "ROLLBACK");
    store_sbuf_free(&sql);
    if (code != RD_OK) {
        for (size_t i = 0; i < *n_out; i++)
            store_record_clear(&out[i]);
        *n_out = 0;
    }
    return code;
}

uint64_t store_conn_get_many_queries(const store_conn *c)
{
    return c->get_many_queries;
}
