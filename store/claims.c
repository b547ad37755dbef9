/* claims.c: claims (leases on one record) in _rd_claims. The writer runs
 * CLAIM_ACQUIRE / CLAIM_RELEASE writes here, inside the write's savepoint,
 * and calls store_claim_check before every update, replace and delete. The
 * rules are in store.h (store_claim) and store_int.h (store_claim_check);
 * docs/internals/claims.md has the design. */
#include <stdio.h>
#include <string.h>

#include "store/store_int.h"

#define CLAIM_COLS "claim_id, model, record_id, holder, expires_at"

static const char sql_by_record[] = "SELECT " CLAIM_COLS " FROM _rd_claims"
                                    " WHERE org = ?1 AND model = ?2 AND record_id = ?3";
static const char sql_by_id[] = "SELECT " CLAIM_COLS " FROM _rd_claims"
                                " WHERE org = ?1 AND claim_id = ?2";

static void copy_col(char *dst, size_t cap, store_dbst *st, int i)
{
    const unsigned char *t = store_db_column_text(st, i);
    snprintf(dst, cap, "%s", t != NULL ? (const char *)t : "");
}

/* Runs a claim lookup (sql_by_record with a, b, c or sql_by_id with a, b) on
 * the write connection. *found tells whether a row (live or expired) was
 * read into *out. */
static rd_code load_claim(store *s, const char *sql, const char *a, const char *b, const char *c,
                          store_claim *out, bool *found, rd_err *err)
{
    store_dbst *st = NULL;
    rd_code code = RD_OK;
    *found = false;
    memset(out, 0, sizeof *out);
    int rc = store_stmt_get(&s->wcache, sql, &st);
    if (rc == STORE_DB_OK)
        rc = store_db_bind_text(st, 1, a, -1, STORE_DB_STATIC);
    if (rc == STORE_DB_OK)
        rc = store_db_bind_text(st, 2, b, -1, STORE_DB_STATIC);
    if (rc == STORE_DB_OK && c != NULL)
        rc = store_db_bind_text(st, 3, c, -1, STORE_DB_STATIC);
    if (rc == STORE_DB_OK)
        rc = store_db_step(st);
    if (rc == STORE_DB_ROW) {
        copy_col(out->claim_id, sizeof out->claim_id, st, 0);
        copy_col(out->model, sizeof out->model, st, 1);
        copy_col(out->id, sizeof out->id, st, 2);
        copy_col(out->holder, sizeof out->holder, st, 3);
        out->expires_at_us = store_db_column_int64(st, 4);
        *found = true;
    } else if (rc != STORE_DB_DONE) {
        code = store_sql_err(s->wdb, rc, err);
    }
    store_stmt_put(st);
    return code;
}

/* RD_CLAIMED naming the holder and expiry of the live claim cur. */
static rd_code claimed_by(const store_claim *cur, rd_err *err)
{
    char until[48];
    return rd_errf(err, RD_CLAIMED, NULL,
                   "record '%.128s' in model '%s' is claimed by %.128s until %s", cur->id,
                   cur->model, cur->holder, rd_rfc3339(cur->expires_at_us, until, sizeof until));
}

static rd_code claim_unknown(const char *claim, rd_err *err)
{
    return rd_errf(err, RD_CLAIMED, "claim", "claim '%.48s' expired or is unknown", claim);
}

static rd_code not_holder(const char *claim, rd_err *err)
{
    return rd_errf(err, RD_CLAIMED, "claim",
                   "claim '%.48s' is held by another principal; only its holder may use it", claim);
}

rd_code store_claim_check(store *s, const char *org, const char *model, const char *id,
                          const char *claim, const char *actor, int64_t now_us, rd_err *err)
{
    store_claim cur;
    bool found;
    bool has = claim != NULL && claim[0] != '\0';
    if (now_us >= s->claims_until_us) /* no claim anywhere is live: no lookup */
        return has ? claim_unknown(claim, err) : RD_OK;
    rd_code code = load_claim(s, sql_by_record, org, model, id, &cur, &found, err);
    if (code != RD_OK)
        return code;
    if (!found || cur.expires_at_us <= now_us)
        return has ? claim_unknown(claim, err) : RD_OK;
    if (!has || strcmp(cur.claim_id, claim) != 0)
        return claimed_by(&cur, err);
    if (strcmp(cur.holder, actor != NULL ? actor : "") != 0)
        return not_holder(claim, err);
    return RD_OK;
}

/* Steps a write statement (already bound) to completion and puts it back. */
static rd_code step_put(store *s, store_dbst *st, int rc, rd_err *err)
{
    if (rc == STORE_DB_OK)
        rc = store_db_step(st);
    store_stmt_put(st);
    if (rc != STORE_DB_DONE)
        return store_sql_err(s->wdb, rc, err);
    return RD_OK;
}

/* RD_NOT_FOUND unless (org, model, id) names an existing record as the
 * writer sees it now. */
/* The record model/id must exist, and the caller be allowed to claim it:
 * w->authorize (when set) gets the record's sync group as the writer reads
 * it, inside the claim's transaction, as record writes do; a missing record
 * goes to the callback with group NULL first, so a caller without access
 * learns nothing about which ids exist (must_exist: then NOT_FOUND). model
 * may differ from w->model (a
 * release names its record through the claim), so w->rec.model is pointed at
 * it for the callback. */
static rd_code record_authorized(store *s, store_write *w, const char *model, const char *id,
                                 bool must_exist)
{
    store_schema *sch = store_writer_schema(s, w->org);
    store_sbuf sql = {0};
    store_dbst *st = NULL;
    rd_code code = RD_OK;
    char group[sizeof((store_record *)0)->group] = "";
    bool exists = false;
    int rc;
    if (store_schema_model(sch, model) == NULL) {
        if (must_exist) {
            code = rd_errf(&w->err, RD_NOT_FOUND, "model", "model '%.64s' is not in the schema",
                           model);
            goto done;
        }
        goto check; /* the model was dropped since the claim was taken */
    }
    store_sbuf_add(&sql, "SELECT _group FROM ");
    store_sbuf_table(&sql, w->org, model);
    store_sbuf_add(&sql, " WHERE _id = ?1");
    if (sql.oom) {
        code = rd_errf(&w->err, RD_INTERNAL, NULL, "out of memory");
        goto done;
    }
    rc = store_stmt_get(&s->wcache, sql.p, &st);
    if (rc == STORE_DB_OK)
        rc = store_db_bind_text(st, 1, id, -1, STORE_DB_STATIC);
    if (rc == STORE_DB_OK)
        rc = store_db_step(st);
    if (rc == STORE_DB_ROW) {
        exists = true;
        snprintf(group, sizeof group, "%s", (const char *)store_db_column_text(st, 0));
    } else if (rc != STORE_DB_DONE) {
        code = store_sql_err(s->wdb, rc, &w->err);
        goto done;
    }
check:
    if (w->authorize != NULL) {
        const char *named = w->rec.model;
        w->rec.model = model;
        code = w->authorize(w, exists ? group : NULL, &w->err);
        w->rec.model = named;
        if (code != RD_OK)
            goto done;
    }
    if (!exists && must_exist)
        code = rd_errf(&w->err, RD_NOT_FOUND, "id", "record '%.128s' not found in model '%s'", id,
                       model);
done:
    store_stmt_put(st);
    store_sbuf_free(&sql);
    store_schema_release(sch);
    return code;
}

/* CLAIM_ACQUIRE: a new claim, a renewal, or RD_CLAIMED with the blocking
 * claim in w->lease.out. */
static rd_code acquire(store *s, store_write *w, const char *actor, int64_t now)
{
    static const char sql_upsert[] =
        "INSERT INTO _rd_claims (org, model, record_id, claim_id, holder, expires_at)"
        " VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (org, model, record_id) DO UPDATE SET"
        " claim_id = excluded.claim_id, holder = excluded.holder,"
        " expires_at = excluded.expires_at";
    bool renew = w->rec.claim != NULL && w->rec.claim[0] != '\0';
    store_claim cur;
    bool found;
    store_dbst *st = NULL;
    if (!store_org_valid(w->org) || w->rec.model == NULL || !store_ident_valid(w->rec.model))
        return rd_errf(&w->err, RD_NOT_FOUND, "model", "model '%.64s' is not in the schema",
                       w->rec.model ? w->rec.model : "");
    if (w->rec.id == NULL || w->rec.id[0] == '\0')
        return rd_errf(&w->err, RD_VALIDATION_FAILED, "id", "id is required");
    if (w->lease.ttl_s < 1 || w->lease.ttl_s > STORE_CLAIM_TTL_MAX_S)
        return rd_errf(&w->err, RD_VALIDATION_FAILED, "ttlSeconds",
                       "ttlSeconds must be between 1 and %d", STORE_CLAIM_TTL_MAX_S);
    if (!store_id_valid(w->rec.id))
        return rd_errf(&w->err, RD_NOT_FOUND, "id", "record '%.128s' not found in model '%s'",
                       w->rec.id, w->rec.model);
    rd_code code = record_authorized(s, w, w->rec.model, w->rec.id, true);
    if (code == RD_OK)
        code = load_claim(s, sql_by_record, w->org, w->rec.model, w->rec.id, &cur, &found, &w->err);
    if (code != RD_OK)
        return code;
    bool live = found && cur.expires_at_us > now;
    if (live) {
        w->lease.out = cur;
        w->lease.out.claim_id[0] = '\0'; /* never hand out another caller's id */
    }
    if (renew) {
        if (!live)
            return claim_unknown(w->rec.claim, &w->err);
        if (strcmp(cur.claim_id, w->rec.claim) != 0)
            return claimed_by(&cur, &w->err);
        if (strcmp(cur.holder, actor) != 0)
            return not_holder(w->rec.claim, &w->err);
    } else if (live) {
        return claimed_by(&cur, &w->err);
    }

    store_claim *out = &w->lease.out;
    memset(out, 0, sizeof *out);
    if (renew)
        snprintf(out->claim_id, sizeof out->claim_id, "%s", cur.claim_id);
    else
        rd_random_id("clm_", out->claim_id, 26);
    snprintf(out->model, sizeof out->model, "%s", w->rec.model);
    snprintf(out->id, sizeof out->id, "%s", w->rec.id);
    snprintf(out->holder, sizeof out->holder, "%s", actor);
    out->expires_at_us = now + (int64_t)w->lease.ttl_s * 1000000;
    if (out->expires_at_us > s->claims_until_us)
        s->claims_until_us = out->expires_at_us;
    int rc = store_stmt_get(&s->wcache, sql_upsert, &st);
    if (rc == STORE_DB_OK) {
        store_db_bind_text(st, 1, w->org, -1, STORE_DB_STATIC);
        store_db_bind_text(st, 2, w->rec.model, -1, STORE_DB_STATIC);
        store_db_bind_text(st, 3, w->rec.id, -1, STORE_DB_STATIC);
        store_db_bind_text(st, 4, out->claim_id, -1, STORE_DB_STATIC);
        store_db_bind_text(st, 5, actor, -1, STORE_DB_STATIC);
        rc = store_db_bind_int64(st, 6, out->expires_at_us);
    }
    return step_put(s, st, rc, &w->err);
}

/* CLAIM_RELEASE: deletes the caller's live claim. */
static rd_code release(store *s, store_write *w, const char *actor, int64_t now)
{
    static const char sql_delete[] = "DELETE FROM _rd_claims WHERE org = ?1 AND claim_id = ?2";
    store_claim cur;
    bool found;
    store_dbst *st = NULL;
    if (w->rec.claim == NULL || w->rec.claim[0] == '\0')
        return rd_errf(&w->err, RD_VALIDATION_FAILED, "claimId", "claimId is required");
    rd_code code = load_claim(s, sql_by_id, w->org, w->rec.claim, NULL, &cur, &found, &w->err);
    if (code != RD_OK)
        return code;
    if (!found || cur.expires_at_us <= now ||
        (w->rec.model != NULL && w->rec.model[0] != '\0' && strcmp(w->rec.model, cur.model) != 0) ||
        (w->rec.id != NULL && w->rec.id[0] != '\0' && strcmp(w->rec.id, cur.id) != 0))
        return rd_errf(&w->err, RD_NOT_FOUND, "claimId", "claim '%.48s' expired or is unknown",
                       w->rec.claim);
    /* a claim outlives a deleted record until it expires: release it */
    code = record_authorized(s, w, cur.model, cur.id, false);
    if (code != RD_OK)
        return code;
    if (strcmp(cur.holder, actor) != 0)
        return not_holder(w->rec.claim, &w->err);
    w->lease.out = cur;
    int rc = store_stmt_get(&s->wcache, sql_delete, &st);
    if (rc == STORE_DB_OK) {
        store_db_bind_text(st, 1, w->org, -1, STORE_DB_STATIC);
        rc = store_db_bind_text(st, 2, w->rec.claim, -1, STORE_DB_STATIC);
    }
    return step_put(s, st, rc, &w->err);
}

rd_code store_claim_apply(store *s, store_write *w)
{
    const char *actor = w->actor != NULL ? w->actor : "";
    int64_t now = rd_now_us();
    memset(&w->lease.out, 0, sizeof w->lease.out);
    if (w->org == NULL)
        return rd_errf(&w->err, RD_INTERNAL, NULL, "a claim write needs an organisation");
    if (w->op == STORE_OP_CLAIM_ACQUIRE)
        return acquire(s, w, actor, now);
    if (w->op == STORE_OP_CLAIM_RELEASE)
        return release(s, w, actor, now);
    return rd_errf(&w->err, RD_INTERNAL, NULL, "not a claim operation: %d", (int)w->op);
}
