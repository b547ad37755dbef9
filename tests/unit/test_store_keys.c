/* Unit tests for store/keys.c: API keys stored as hashes, looked up by hash,
 * listed per organisation, revoked; token ids revoked; the revocation check
 * tokens go through (jti or minting key). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <sqlite3.h>

#include "store/store.h"
#include "tests/unit/unit_db.h"

typedef struct fixture {
    char dir[64];
    char path[128];
    store *s;
    store_conn *c;
} fixture;

static const unsigned char H1[STORE_KEY_HASH_BYTES] = {1, 2, 3};
static const unsigned char H2[STORE_KEY_HASH_BYTES] = {9, 9, 9};

static int setup(void **state)
{
    fixture *fx = calloc(1, sizeof *fx);
    rd_err err;
    snprintf(fx->dir, sizeof fx->dir, "/tmp/rd_keys_XXXXXX");
    if (mkdtemp(fx->dir) == NULL)
        return -1;
    snprintf(fx->path, sizeof fx->path, "%s/test.db", fx->dir);
    store_options o = {.path = fx->path};
    if (store_open(&o, &fx->s, &err) != RD_OK || store_conn_open(fx->s, &fx->c, &err) != RD_OK)
        return -1;
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    fixture *fx = *state;
    store_conn_close(fx->c);
    store_close(fx->s);
    unit_db_remove(fx->dir, fx->path);
    free(fx);
    return 0;
}

static void test_key_insert_then_lookup_by_hash(void **state)
{
    fixture *fx = *state;
    store_api_key k;
    rd_err err;
    assert_int_equal(store_key_insert(fx->s, "key_a", H1, "acme", "admin", "[]", NULL, &err),
                     RD_OK);
    assert_int_equal(store_key_lookup(fx->c, H1, &k, &err), RD_OK);
    assert_string_equal(k.key_id, "key_a");
    assert_string_equal(k.org, "acme");
    assert_string_equal(k.role, "admin");
    assert_string_equal(k.caps, "[]");
    assert_int_equal(k.revoked_at_us, 0);
    assert_true(k.created_at_us > 0);
    store_api_key_clear(&k);
    assert_int_equal(store_key_lookup(fx->c, H2, &k, &err), RD_NOT_FOUND);
}

static void test_key_insert_rejects_duplicates_and_bad_names(void **state)
{
    fixture *fx = *state;
    rd_err err;
    assert_int_equal(store_key_insert(fx->s, "key_a", H1, "acme", "r", "[]", NULL, &err), RD_OK);
    assert_int_equal(store_key_insert(fx->s, "key_a", H2, "acme", "r", "[]", NULL, &err),
                     RD_DUPLICATE_RECORD);
    assert_int_equal(store_key_insert(fx->s, "key_b", H1, "acme", "r", "[]", NULL, &err),
                     RD_DUPLICATE_RECORD);
    assert_int_equal(store_key_insert(fx->s, "key c", H2, "acme", "r", "[]", NULL, &err),
                     RD_VALIDATION_FAILED);
    assert_int_equal(store_key_insert(fx->s, "key_c", H2, "a__b", "r", "[]", NULL, &err),
                     RD_VALIDATION_FAILED);
    assert_int_equal(store_key_insert(fx->s, "key_c", H2, "acme", "", "[]", NULL, &err),
                     RD_VALIDATION_FAILED);
}

static void test_key_list_is_per_organisation(void **state)
{
    fixture *fx = *state;
    store_api_key *keys = NULL;
    size_t n = 0;
    rd_err err;
    assert_int_equal(store_key_insert(fx->s, "key_a", H1, "acme", "r", "[]", NULL, &err), RD_OK);
    assert_int_equal(store_key_insert(fx->s, "key_b", H2, "other", "r", "[]", NULL, &err), RD_OK);
    assert_int_equal(store_key_list(fx->c, "acme", &keys, &n, &err), RD_OK);
    assert_int_equal(n, 1);
    assert_string_equal(keys[0].key_id, "key_a");
    store_api_keys_free(keys, n);
    assert_int_equal(store_key_list(fx->c, NULL, &keys, &n, &err), RD_OK);
    assert_int_equal(n, 2);
    store_api_keys_free(keys, n);
}

static void test_key_revoke_marks_it_and_revokes_its_tokens(void **state)
{
    fixture *fx = *state;
    store_api_key k;
    rd_err err;
    assert_int_equal(store_key_insert(fx->s, "key_a", H1, "acme", "r", "[]", NULL, &err), RD_OK);
    assert_int_equal(store_is_revoked(fx->c, "tok_1", "key_a"), 0);
    assert_int_equal(store_key_revoke(fx->s, "key_a", &err), RD_OK);
    assert_int_equal(store_key_lookup(fx->c, H1, &k, &err), RD_OK);
    assert_true(k.revoked_at_us > 0);
    int64_t first = k.revoked_at_us;
    store_api_key_clear(&k);
    assert_int_equal(store_key_revoke(fx->s, "key_a", &err), RD_OK);
    assert_int_equal(store_key_lookup(fx->c, H1, &k, &err), RD_OK);
    assert_int_equal(k.revoked_at_us, first);
    store_api_key_clear(&k);
    assert_int_equal(store_is_revoked(fx->c, "tok_1", "key_a"), 1);
    assert_int_equal(store_key_revoke(fx->s, "key_zz", &err), RD_NOT_FOUND);
}

static void test_token_revoke_by_jti(void **state)
{
    fixture *fx = *state;
    rd_err err;
    assert_int_equal(store_is_revoked(fx->c, "tok_1", "sub"), 0);
    assert_int_equal(store_token_revoke(fx->s, "tok_1", &err), RD_OK);
    assert_int_equal(store_token_revoke(fx->s, "tok_1", &err), RD_OK);
    assert_int_equal(store_is_revoked(fx->c, "tok_1", "sub"), 1);
    assert_int_equal(store_is_revoked(fx->c, "tok_2", NULL), 0);
    assert_int_equal(store_token_revoke(fx->s, "", &err), RD_VALIDATION_FAILED);
}

/* Every change a cached credential could depend on raises the generation,
 * in the changing transaction; a new key or a repeat revocation of a token
 * id (no row changes) need not. */
static void test_auth_gen_rises_on_every_revocation(void **state)
{
    fixture *fx = *state;
    rd_err err;
    int64_t g0 = -1, g1 = -1, g2 = -1, g3 = -1;
    assert_int_equal(store_auth_gen(fx->c, &g0, &err), RD_OK);
    assert_true(g0 >= 0);
    assert_int_equal(store_key_insert(fx->s, "key_a", H1, "acme", "r", "[]", NULL, &err), RD_OK);
    assert_int_equal(store_auth_gen(fx->c, &g1, &err), RD_OK);
    assert_int_equal(store_key_revoke(fx->s, "key_a", &err), RD_OK);
    assert_int_equal(store_auth_gen(fx->c, &g2, &err), RD_OK);
    assert_true(g2 > g1);
    assert_int_equal(store_token_revoke(fx->s, "tok_1", &err), RD_OK);
    assert_int_equal(store_auth_gen(fx->c, &g3, &err), RD_OK);
    assert_true(g3 > g2);
    assert_int_equal(store_key_revoke(fx->s, "key_zz", &err), RD_NOT_FOUND);
    assert_int_equal(store_auth_gen(fx->c, &g2, &err), RD_OK);
    assert_int_equal(g2, g3);
}

static void test_key_bound_to_a_client_identity(void **state)
{
    fixture *fx = *state;
    rd_err err;
    store_api_key k;
    assert_int_equal(
        store_key_insert(fx->s, "key_b", H1, "acme", "r", "[]", "spiffe://prod/sa/api", &err),
        RD_OK);
    assert_int_equal(store_key_lookup(fx->c, H1, &k, &err), RD_OK);
    assert_string_equal(k.client_id, "spiffe://prod/sa/api");
    store_api_key_clear(&k);
    assert_int_equal(store_key_insert(fx->s, "key_u", H2, "acme", "r", "[]", NULL, &err), RD_OK);
    assert_int_equal(store_key_lookup(fx->c, H2, &k, &err), RD_OK);
    assert_string_equal(k.client_id, "");
    store_api_key_clear(&k);
    char long_id[STORE_CLIENT_ID_MAX + 2];
    memset(long_id, 'a', sizeof long_id - 1);
    long_id[sizeof long_id - 1] = '\0';
    static const unsigned char H3[STORE_KEY_HASH_BYTES] = {7};
    assert_int_equal(store_key_insert(fx->s, "key_l", H3, "acme", "r", "[]", long_id, &err),
                     RD_VALIDATION_FAILED);
    assert_string_equal(err.field, "client_id");
}

/* A database made before keys could be bound gains the column on open;
 * its keys stay valid and unbound. */
static void test_key_table_without_client_id_is_migrated(void **state)
{
    (void)state;
    char dir[] = "/tmp/rd_keys_mig_XXXXXX", path[64];
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/old.db", dir);
    sqlite3 *db;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    assert_int_equal(
        sqlite3_exec(db,
                     "CREATE TABLE _rd_api_keys (key_id TEXT PRIMARY KEY, hash BLOB NOT NULL "
                     "UNIQUE, org TEXT NOT NULL, role TEXT NOT NULL, caps TEXT NOT NULL, "
                     "created_at INTEGER NOT NULL, revoked_at INTEGER);"
                     "INSERT INTO _rd_api_keys VALUES ('key_old', x'0102030000000000000000000000"
                     "000000000000000000000000000000000000', 'acme', 'r', '[]', 1, NULL);",
                     NULL, NULL, NULL),
        SQLITE_OK);
    sqlite3_close(db);
    store_options o = {.path = path};
    store *s;
    store_conn *c;
    rd_err err;
    assert_int_equal(store_open(&o, &s, &err), RD_OK);
    assert_int_equal(store_conn_open(s, &c, &err), RD_OK);
    store_api_key k;
    assert_int_equal(store_key_lookup(c, H1, &k, &err), RD_OK);
    assert_string_equal(k.key_id, "key_old");
    assert_string_equal(k.client_id, "");
    store_api_key_clear(&k);
    assert_int_equal(store_key_insert(s, "key_new", H2, "acme", "r", "[]", "api.prod", &err),
                     RD_OK);
    store_conn_close(c);
    store_close(s);
    unit_db_remove(dir, path);
}

int main(void)
{
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_key_insert_then_lookup_by_hash),
        T(test_key_insert_rejects_duplicates_and_bad_names),
        T(test_key_list_is_per_organisation),
        T(test_key_revoke_marks_it_and_revokes_its_tokens),
        T(test_token_revoke_by_jti),
        T(test_auth_gen_rises_on_every_revocation),
        T(test_key_bound_to_a_client_identity),
        cmocka_unit_test(test_key_table_without_client_id_is_migrated),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
