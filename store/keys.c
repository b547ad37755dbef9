/* store/keys.c: API keys and token revocations (store.h, "API keys and
 * revocations"). Lookups use the caller's read connection and its statement
 * cache; writes open their own connection for one short IMMEDIATE
 * transaction, serialised with the writer by SQLite's lock. Nothing is
 * cached here; every change to these tables raises the credential
 * generation (store_auth_gen) by trigger, which the server's credential
 * cache checks. docs/internals/auth.md ("Server integration") has the
 * tables. */
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "store/store_int.h"

void store_api_key_clear(store_api_key *k)
{
    free(k->caps);
    memset(k, 0, sizeof *k);
}

void store_api_keys_free(store_api_key *keys, size_t n)
{
    for (size_t i = 0; keys != NULL && i < n; i++)
        store_api_key_clear(&keys[i]);
    free(keys);
}

/* Opens a read-write connection to s's database for one admin write. */
static rd_code admin_open(store *s, store_db **out, rd_err *err)
{
    char msg[256];
    store_db_options opt = {.role = STORE_DB_TOOL};
    if (store_db_open(s->path, &opt, out, msg, sizeof msg) != STORE_DB_OK)
        return rd_errf(err, RD_UNAVAILABLE, NULL, "cannot open the database: %s", msg);
    return RD_OK;
}

/* Runs one prepared, fully bound write statement st on db inside an
 * IMMEDIATE transaction. *changes gets the rows changed. Finalizes st. */
static rd_code admin_run(store_db *db, store_dbst *st, int *changes, rd_err *err)
{
    rd_code code = RD_OK;
    int rc = store_exec(db, "BEGIN IMMEDIATE");
    if (rc != STORE_DB_OK) {
        code = store_sql_err(db, rc, err);
        goto done;
    }
    rc = store_db_step(st);
    if (rc != STORE_DB_DONE) {
        code = store_sql_err(db, rc, err);
        store_exec(db, "ROLLBACK");
        goto done;
    }
    if (changes != NULL)
        *changes = store_db_changes(db);
    rc = store_exec(db, "COMMIT");
    if (rc != STORE_DB_OK) {
        code = store_sql_err(db, rc, err);
        store_exec(db, "ROLLBACK");
    }
done:
    store_db_finalize(st);
    return code;
}

static bool bounded(const char *s, size_t max)
{
    return s != NULL && s[0] != '\0' && strlen(s) <= max;
}

rd_code store_key_insert(store *s, const char *key_id,
                         const unsigned char hash[STORE_KEY_HASH_BYTES], const char *org,
                         const char *role, const char *caps, const char *client_id, rd_err *err)
{
    static const char sql[] = "INSERT INTO _rd_api_keys (key_id, hash, org, role, caps,"
                              " created_at, revoked_at, client_id)"
                              " VALUES (?, ?, ?, ?, ?, ?, NULL, ?)";
    store_db *db = NULL;
    store_dbst *st = NULL;
    rd_code code;
    if (!bounded(key_id, STORE_KEY_ID_MAX) || !store_id_valid(key_id))
        return rd_errf(err, RD_VALIDATION_FAILED, "key_id", "key id is malformed");
    if (!store_org_valid(org))
        return rd_errf(err, RD_VALIDATION_FAILED, "org",
                       "organisation must match ^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$ without '__'");
    if (!bounded(role, STORE_ROLE_MAX))
        return rd_errf(err, RD_VALIDATION_FAILED, "role", "role must be 1 to %d bytes",
                       STORE_ROLE_MAX);
    if (caps == NULL)
        return rd_errf(err, RD_VALIDATION_FAILED, "caps", "caps are required");
    if (client_id != NULL && !bounded(client_id, STORE_CLIENT_ID_MAX))
        return rd_errf(err, RD_VALIDATION_FAILED, "client_id", "client id must be 1 to %d bytes",
                       STORE_CLIENT_ID_MAX);
    code = admin_open(s, &db, err);
    if (code != RD_OK)
        return code;
    char other[STORE_ORG_MAX + 1] = "";
    int variant = store_org_case_variant(db, org, other, sizeof other);
    if (variant < 0) {
        code = rd_errf(err, RD_UNAVAILABLE, NULL, "cannot read the organisations: %s",
                       store_db_errmsg(db));
        goto done;
    }
    if (variant > 0) {
        code = rd_errf(err, RD_VALIDATION_FAILED, "org",
                       "organisation '%s' differs only in case from the existing organisation "
                       "'%s': organisation ids are case-insensitive",
                       org, other);
        goto done;
    }
    int rc = store_db_prepare(db, sql, &st);
    if (rc == STORE_DB_OK)
        rc = store_db_bind_text(st, 1, key_id, -1, STORE_DB_STATIC);
    if (rc == STORE_DB_OK)
        rc = store_db_bind_blob(st, 2, hash, STORE_KEY_HASH_BYTES, STORE_DB_STATIC);
    if (rc == STORE_DB_OK)
        rc = store_db_bind_text(st, 3, org, -1, STORE_DB_STATIC);
    if (rc == STORE_DB_OK)
        rc = store_db_bind_text(st, 4, role, -1, STORE_DB_STATIC);
    if (rc == STORE_DB_OK)
        rc = store_db_bind_text(st, 5, caps, -1, STORE_DB_STATIC);
    if (rc == STORE_DB_OK)
        rc = store_db_bind_int64(st, 6, rd_now_us());
    if (rc == STORE_DB_OK)
        rc = client_id != NULL ? store_db_bind_text(st, 7, client_id, -1, STORE_DB_STATIC)
                               : store_db_bind_null(st, 7);
    if (rc != STORE_DB_OK) {
        code = store_sql_err(db, rc, err);
        store_db_finalize(st);
        goto done;
    }
    code = admin_run(db, st, NULL, err);
done:
    store_db_close(db);
    return code;
}

/* Runs an admin statement with one text parameter; *changes as admin_run. */
static rd_code admin_one(store *s, const char *sql, const char *arg, int *changes, rd_err *err)
{
    store_db *db = NULL;
    store_dbst *st = NULL;
    rd_code code = admin_open(s, &db, err);
    if (code != RD_OK)
        return code;
    int rc = store_db_prepare(db, sql, &st);
    if (rc == STORE_DB_OK)
        rc = store_db_bind_text(st, 1, arg, -1, STORE_DB_STATIC);
    if (rc == STORE_DB_OK)
        rc = store_db_bind_int64(st, 2, rd_now_us());
    if (rc != STORE_DB_OK) {
        code = store_sql_err(db, rc, err);
        store_db_finalize(st);
    } else {
        code = admin_run(db, st, changes, err);
    }
    store_db_close(db);
    return code;
}

rd_code store_key_revoke(store *s, const char *key_id, rd_err *err)
{
    static const char sql[] = "UPDATE _rd_api_keys SET revoked_at = coalesce(revoked_at, ?2)"
                              " WHERE key_id = ?1";
    int changes = 0;
    if (!bounded(key_id, STORE_KEY_ID_MAX))
        return rd_errf(err, RD_NOT_FOUND, "key_id", "no such key");
    if (admin_one(s, sql, key_id, &changes, err) != RD_OK)
        return err->code;
    if (changes == 0)
        return rd_errf(err, RD_NOT_FOUND, "key_id", "no such key");
    return RD_OK;
}

rd_code store_token_revoke(store *s, const char *jti, rd_err *err)
{
    static const char sql[] = "INSERT INTO _rd_revoked_tokens (jti, revoked_at) VALUES (?1, ?2)"
                              " ON CONFLICT (jti) DO NOTHING";
    if (!bounded(jti, STORE_JTI_MAX))
        return rd_errf(err, RD_VALIDATION_FAILED, "jti", "token id must be 1 to %d bytes",
                       STORE_JTI_MAX);
    return admin_one(s, sql, jti, NULL, err);
}

/* Copies the current row (key_id, org, role, caps, created_at, revoked_at,
 * client_id) into out. */
static rd_code read_key(store_dbst *st, store_api_key *out, rd_err *err)
{
    const char *id = (const char *)store_db_column_text(st, 0);
    const char *org = (const char *)store_db_column_text(st, 1);
    const char *role = (const char *)store_db_column_text(st, 2);
    const char *caps = (const char *)store_db_column_text(st, 3);
    memset(out, 0, sizeof *out);
    if (id == NULL || org == NULL || role == NULL || caps == NULL ||
        strlen(id) >= sizeof out->key_id || strlen(org) >= sizeof out->org ||
        strlen(role) >= sizeof out->role)
        return rd_errf(err, RD_INTERNAL, NULL, "a stored API key is malformed");
    memcpy(out->key_id, id, strlen(id) + 1);
    memcpy(out->org, org, strlen(org) + 1);
    memcpy(out->role, role, strlen(role) + 1);
    out->caps = strdup(caps);
    out->created_at_us = store_db_column_int64(st, 4);
    out->revoked_at_us =
        store_db_column_type(st, 5) == STORE_DB_NULL ? 0 : store_db_column_int64(st, 5);
    const char *client_id = (const char *)store_db_column_text(st, 6);
    if (client_id != NULL)
        snprintf(out->client_id, sizeof out->client_id, "%s", client_id);
    if (out->caps == NULL)
        return rd_errf(err, RD_INTERNAL, NULL, "out of memory");
    return RD_OK;
}

rd_code store_key_lookup(store_conn *c, const unsigned char hash[STORE_KEY_HASH_BYTES],
                         store_api_key *out, rd_err *err)
{
    static const char sql[] = "SELECT key_id, org, role, caps, created_at, revoked_at,"
                              " client_id, hash FROM _rd_api_keys WHERE hash = ?";
    store_dbst *st = NULL;
    rd_code code = RD_OK;
    memset(out, 0, sizeof *out);
    int rc = store_stmt_get(&c->cache, sql, &st);
    if (rc == STORE_DB_OK)
        rc = store_db_bind_blob(st, 1, hash, STORE_KEY_HASH_BYTES, STORE_DB_STATIC);
    if (rc == STORE_DB_OK)
        rc = store_db_step(st);
    if (rc == STORE_DB_DONE) {
        code = rd_errf(err, RD_NOT_FOUND, NULL, "no such key");
        goto done;
    }
    if (rc != STORE_DB_ROW) {
        code = store_sql_err(c->db, rc, err);
        goto done;
    }
    const void *stored = store_db_column_blob(st, 7);
    if (stored == NULL || store_db_column_bytes(st, 7) != STORE_KEY_HASH_BYTES ||
        sodium_memcmp(stored, hash, STORE_KEY_HASH_BYTES) != 0) {
        code = rd_errf(err, RD_NOT_FOUND, NULL, "no such key");
        goto done;
    }
    code = read_key(st, out, err);
    if (code != RD_OK)
        store_api_key_clear(out);
done:
    if (st != NULL)
        store_stmt_put(st);
    return code;
}

rd_code store_key_list(store_conn *c, const char *org, store_api_key **out, size_t *n, rd_err *err)
{
    static const char sql[] = "SELECT key_id, org, role, caps, created_at, revoked_at, client_id"
                              " FROM _rd_api_keys WHERE CAST(?1 AS TEXT) IS NULL OR org = ?1"
                              " ORDER BY created_at, key_id";
    store_dbst *st = NULL;
    store_api_key *keys = NULL;
    size_t count = 0, cap = 0;
    rd_code code = RD_OK;
    *out = NULL;
    *n = 0;
    int rc = store_stmt_get(&c->cache, sql, &st);
    if (rc == STORE_DB_OK)
        rc = org ? store_db_bind_text(st, 1, org, -1, STORE_DB_STATIC) : store_db_bind_null(st, 1);
    while (rc == STORE_DB_OK && (rc = store_db_step(st)) == STORE_DB_ROW) {
        rc = STORE_DB_OK;
        if (count == cap) {
            size_t ncap = cap ? cap * 2 : 8;
            store_api_key *grown = realloc(keys, ncap * sizeof *keys);
            if (grown == NULL) {
                code = rd_errf(err, RD_INTERNAL, NULL, "out of memory");
                goto done;
            }
            keys = grown;
            cap = ncap;
        }
        if (read_key(st, &keys[count], err) != RD_OK) {
            store_api_key_clear(&keys[count]);
            code = err->code;
            goto done;
        }
        count++;
    }
    if (rc != STORE_DB_DONE)
        code = store_sql_err(c->db, rc, err);
done:
    if (st != NULL)
        store_stmt_put(st);
    if (code != RD_OK) {
        store_api_keys_free(keys, count);
        return code;
    }
    *out = keys;
    *n = count;
    return RD_OK;
}

int store_is_revoked(store_conn *c, const char *jti, const char *sub)
{
    static const char sql[] = "SELECT 1 FROM _rd_revoked_tokens WHERE jti = ?1"
                              " UNION ALL SELECT 1 FROM _rd_api_keys"
                              " WHERE key_id = ?2 AND revoked_at IS NOT NULL LIMIT 1";
    store_dbst *st = NULL;
    int revoked = -1;
    int rc = store_stmt_get(&c->cache, sql, &st);
    if (rc == STORE_DB_OK)
        rc = jti ? store_db_bind_text(st, 1, jti, -1, STORE_DB_STATIC) : store_db_bind_null(st, 1);
    if (rc == STORE_DB_OK)
        rc = sub ? store_db_bind_text(st, 2, sub, -1, STORE_DB_STATIC) : store_db_bind_null(st, 2);
    if (rc == STORE_DB_OK)
        rc = store_db_step(st);
    if (rc == STORE_DB_ROW)
        revoked = 1;
    else if (rc == STORE_DB_DONE)
        revoked = 0;
    if (st != NULL)
        store_stmt_put(st);
    return revoked;
}

rd_code store_auth_gen(store_conn *c, int64_t *gen, rd_err *err)
{
    static const char sql[] = "SELECT gen FROM _rd_auth_gen WHERE id = 1";
    store_dbst *st = NULL;
    rd_code code = RD_OK;
    int rc = store_stmt_get(&c->cache, sql, &st);
    if (rc == STORE_DB_OK)
        rc = store_db_step(st);
    if (rc == STORE_DB_ROW)
        *gen = store_db_column_int64(st, 0);
    else if (rc == STORE_DB_DONE)
        code = rd_errf(err, RD_INTERNAL, NULL, "the credential generation row is missing");
    else
        code = store_sql_err(c->db, rc, err);
    if (st != NULL)
        store_stmt_put(st);
    return code;
}
