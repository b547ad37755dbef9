/* list.c: store_list, the read behind ListRecords. One read transaction
 * per page on the caller's read connection: the highest committed sync id,
 * then the rows matching the compiled filter and the allowed groups,
 * strictly after the caller's keyset cursor, in the requested order with
 * id as the final tiebreak. Every value is bound; the SQL text holds only
 * quoted schema identifiers and placeholders. */
#include <stdlib.h>
#include <string.h>

#include "store/store_int.h"

void store_page_free(store_page *p)
{
    if (p == NULL)
        return;
    for (size_t i = 0; i < p->n; i++)
        store_record_clear(&p->records[i]);
    free(p->records);
    for (size_t i = 0; p->last != NULL && i < p->n_last; i++)
        free(p->last[i].s);
    free(p->last);
    memset(p, 0, sizeof *p);
}

/* Appends sort key k as the outer query names it: its column, or (keys
 * selected in a subquery, store_order_has_path) its alias "_k<k>". */
static void key_ref(store_sbuf *b, const store_order *o, size_t k, bool wrapped)
{
    bool desc;
    if (wrapped)
        store_sbuf_addf(b, "\"_k%zu\"", k);
    else
        store_sbuf_ident(b, store_order_col(o, k, &desc));
}

/* Appends the keyset condition "row sorts after the cursor" for the sort
 * keys of o and the cursor after[0..n) to b. NULL sorts first in ascending
 * and last in descending order (as SQLite does; the ORDER BY says so for
 * PostgreSQL), so "after" on key k is:
 *   asc,  cursor NULL: k IS NOT NULL     asc,  cursor v: k > v
 *   desc, cursor NULL: (nothing)         desc, cursor v: (k < v OR k IS NULL)
 * and the whole condition is the lexicographic expansion
 *   after(k1) OR (k1 IS NOT DISTINCT FROM v1 AND after(k2)) OR ... */
static void keyset_sql(store_sbuf *b, const store_order *o, const store_value *after, size_t n,
                       bool wrapped)
{
    store_sbuf_add(b, " AND (");
    for (size_t k = 0; k < n; k++) {
        bool desc;
        if (k > 0)
            store_sbuf_add(b, " OR ");
        store_sbuf_add(b, "(");
        for (size_t j = 0; j < k; j++) {
            key_ref(b, o, j, wrapped);
            store_sbuf_add(b, " IS NOT DISTINCT FROM ? AND ");
        }
        store_order_col(o, k, &desc);
        bool null = after[k].type == STORE_V_NULL;
        if (!desc && null) {
            key_ref(b, o, k, wrapped);
            store_sbuf_add(b, " IS NOT NULL");
        } else if (!desc) {
            key_ref(b, o, k, wrapped);
            store_sbuf_add(b, " > ?");
        } else if (null) {
            store_sbuf_add(b, "FALSE");
        } else {
            store_sbuf_add(b, "(");
            key_ref(b, o, k, wrapped);
            store_sbuf_add(b, " < ? OR ");
            key_ref(b, o, k, wrapped);
            store_sbuf_add(b, " IS NULL)");
        }
        store_sbuf_add(b, ")");
    }
    store_sbuf_add(b, ")");
}

/* Binds the keyset condition's values in keyset_sql's placeholder order. */
static int keyset_bind(store_dbst *st, int *idx, const store_order *o, const store_value *after,
                       size_t n)
{
    for (size_t k = 0; k < n; k++) {
        bool desc;
        int rc;
        for (size_t j = 0; j < k; j++) {
            rc = store_value_bind(st, (*idx)++, &after[j]);
            if (rc != STORE_DB_OK)
                return rc;
        }
        store_order_col(o, k, &desc);
        if (after[k].type == STORE_V_NULL)
            continue;
        rc = store_value_bind(st, (*idx)++, &after[k]);
        if (rc != STORE_DB_OK)
            return rc;
    }
    return STORE_DB_OK;
}

/* Copies column i of the current row into *v (text malloc'd). */
static bool read_key(store_dbst *st, int i, store_value *v)
{
    memset(v, 0, sizeof *v);
    switch (store_db_column_type(st, i)) {
    case STORE_DB_INTEGER:
        v->type = STORE_V_INT;
        v->i = store_db_column_int64(st, i);
        return true;
    case STORE_DB_FLOAT:
        v->type = STORE_V_REAL;
        v->d = store_db_column_double(st, i);
        return true;
    case STORE_DB_TEXT:
    case STORE_DB_BLOB: {
        const unsigned char *t = store_db_column_text(st, i);
        size_t n = (size_t)store_db_column_bytes(st, i);
        v->type = STORE_V_TEXT;
        v->s = malloc(n + 1);
        if (v->s == NULL)
            return false;
        if (n > 0)
            memcpy(v->s, t, n);
        v->s[n] = '\0';
        v->n = n;
        return true;
    }
    default:
        return true;
    }
}

rd_code store_list(store_conn *c, const char *org, const store_model *m, const store_filter *f,
                   const store_order *o, const store_value *after, size_t n_after, size_t limit,
                   size_t max_bytes, const char *const *groups, size_t n_groups, store_page *out,
                   rd_err *err)
{
    store_dbst *st = NULL;
    store_sbuf sql = {0};
    rd_code code = RD_OK;
    size_t nk = store_order_terms(o);
    int rc, idx = 1;
    memset(out, 0, sizeof *out);
    if (m == NULL || org == NULL || !store_org_valid(org))
        return rd_errf(err, RD_NOT_FOUND, "model", "model is not in the schema");
    if (limit < 1 || limit > STORE_LIST_MAX_LIMIT)
        return rd_errf(err, RD_VALIDATION_FAILED, "pageSize", "pageSize must be 1..%d",
                       STORE_LIST_MAX_LIMIT);
    if (after != NULL && n_after != nk)
        return rd_errf(err, RD_VALIDATION_FAILED, "pageToken", "pageToken does not match orderBy");

    /* SELECT *, <keys> FROM t WHERE (filter) [AND groups] [AND keyset]
     * ORDER BY <keys> LIMIT ?
     * or, when a key goes through a reference (a correlated subquery,
     * selected once and compared by its alias):
     * SELECT * FROM (SELECT *, <keys> FROM t WHERE (filter) [AND groups])
     *   AS "_q" WHERE TRUE [AND keyset] ORDER BY "_k0", ... LIMIT ? */
    bool wrapped = store_order_has_path(o);
    store_sbuf_add(&sql, wrapped ? "SELECT * FROM (SELECT *" : "SELECT *");
    for (size_t k = 0; k < nk; k++) {
        store_sbuf_add(&sql, ", ");
        store_order_key_sql(&sql, o, k);
        store_sbuf_addf(&sql, " AS \"_k%zu\"", k);
    }
    store_sbuf_add(&sql, " FROM ");
    store_sbuf_table(&sql, org, m->name);
    store_sbuf_add(&sql, " WHERE (");
    store_sbuf_add(&sql, store_filter_sql(f));
    store_sbuf_add(&sql, ")");
    if (groups != NULL) {
        store_sbuf_add(&sql, " AND _group IN (");
        for (size_t g = 0; g < n_groups; g++)
            store_sbuf_add(&sql, g == 0 ? "?" : ", ?");
        store_sbuf_add(&sql, n_groups == 0 ? "NULL)" : ")");
    }
    if (wrapped)
        store_sbuf_add(&sql, ") AS \"_q\" WHERE TRUE");
    if (after != NULL)
        keyset_sql(&sql, o, after, nk, wrapped);
    store_sbuf_add(&sql, " ORDER BY ");
    for (size_t k = 0; k < nk; k++) {
        bool desc;
        store_order_col(o, k, &desc);
        if (k > 0)
            store_sbuf_add(&sql, ", ");
        key_ref(&sql, o, k, wrapped);
        /* SQLite's NULL order, spelled out for PostgreSQL (keyset_sql) */
        store_sbuf_add(&sql, desc ? " DESC NULLS LAST" : " ASC NULLS FIRST");
    }
    store_sbuf_add(&sql, " LIMIT ?");
    if (sql.oom) {
        code = rd_errf(err, RD_INTERNAL, NULL, "out of memory");
        goto done;
    }
    out->records = calloc(limit, sizeof *out->records);
    if (out->records == NULL) {
        code = rd_errf(err, RD_INTERNAL, NULL, "out of memory");
        goto done;
    }

    rc = store_conn_begin(c, org, &out->read_at);
    if (rc != STORE_DB_OK)
        goto sqlfail;
    rc = store_stmt_get(&c->cache, sql.p, &st);
    if (rc == STORE_DB_ERROR && strncmp(store_db_errmsg(c->db), "no such table", 13) == 0) {
        /* the model was dropped after the caller's schema snapshot */
        code = rd_errf(err, RD_NOT_FOUND, "model", "model '%.64s' is not in the schema", m->name);
        goto done;
    }
    if (rc != STORE_DB_OK)
        goto sqlfail;
    rc = STORE_DB_OK;
    for (size_t k = 0; rc == STORE_DB_OK && k < nk; k++)
        rc = store_order_key_bind(o, k, st, &idx);
    if (rc == STORE_DB_OK)
        rc = store_filter_bind(f, st, &idx);
    for (size_t g = 0; rc == STORE_DB_OK && groups != NULL && g < n_groups; g++)
        rc = store_db_bind_text(st, idx++, groups[g], -1, STORE_DB_STATIC);
    if (rc == STORE_DB_OK && after != NULL)
        rc = keyset_bind(st, &idx, o, after, nk);
    if (rc == STORE_DB_OK)
        rc = store_db_bind_int64(st, idx, (int64_t)limit + 1);
    if (rc != STORE_DB_OK)
        goto sqlfail;
    out->last = calloc(nk ? nk : 1, sizeof *out->last);
    if (out->last == NULL) {
        code = rd_errf(err, RD_INTERNAL, NULL, "out of memory");
        goto done;
    }
    out->n_last = nk;
    size_t bytes = 0;
    for (;;) {
        rc = store_db_step(st);
        if (rc == STORE_DB_DONE)
            break;
        if (rc != STORE_DB_ROW)
            goto sqlfail;
        if (out->n == limit) {
            out->more = true;
            break;
        }
        /* Count the columns only now: a cached "SELECT *" re-prepared by
         * store_db_step after a schema push has more than before the step. */
        int ncol = store_db_column_count(st);
        size_t row_bytes = 0;
        for (int i = 0; i < ncol; i++)
            row_bytes += (size_t)store_db_column_bytes(st, i) + 8;
        if (max_bytes > 0 && out->n > 0 && bytes + row_bytes > max_bytes) {
            out->more = true; /* the page is full by size: this row starts the next */
            break;
        }
        bytes += row_bytes;
        code = store_row_read(st, m, &out->records[out->n], err);
        if (code != RD_OK)
            goto done;
        out->n++;
        /* the sort keys of the last row taken: the next page starts after it */
        for (size_t k = 0; k < nk; k++) {
            free(out->last[k].s);
            if (!read_key(st, ncol - (int)nk + (int)k, &out->last[k])) {
                code = rd_errf(err, RD_INTERNAL, NULL, "out of memory");
                goto done;
            }
        }
    }
    store_stmt_put(st);
    st = NULL;
    rc = store_conn_exec(c, "COMMIT");
    if (rc != STORE_DB_OK)
        goto sqlfail;
    if (!out->more) {
        for (size_t k = 0; out->last != NULL && k < out->n_last; k++)
            free(out->last[k].s);
        free(out->last);
        out->last = NULL;
        out->n_last = 0;
    }
    goto done;
sqlfail:
    code = store_sql_err(c->db, rc, err);
done:
    store_stmt_put(st);
    if (!store_db_autocommit(c->db))
        store_conn_exec(c, "ROLLBACK");
    store_sbuf_free(&sql);
    if (code != RD_OK)
        store_page_free(out);
    return code;
}
