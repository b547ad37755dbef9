/* Tests for claims in the store (store/claims.c) against a real SQLite file:
 * CLAIM_ACQUIRE / CLAIM_RELEASE through the writer, the claim rule the
 * writer applies to update, replace and delete (store_claim_check), expiry,
 * renewal, organisation scoping, and claims surviving a reopen. Expiry is
 * simulated by moving expires_at into the past on a second connection while
 * the writer is idle. */
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

#include "store/store_int.h"
#include "tests/unit/unit_db.h"

#define ORG "org_acme"
#define ORG2 "org_other"

static const char schema_doc[] = "{\"models\":[{\"name\":\"tasks\",\"fields\":["
                                 "{\"name\":\"title\",\"type\":\"STRING\"}]}]}";

typedef struct fixture {
    char dir[64];
    char path[128];
    store *s;
} fixture;

static fixture *fx;
static rd_err last; /* the error of the last helper call */

/* ---- helpers ------------------------------------------------------------- */

static void open_store(void)
{
    store_options o = {.path = fx->path, .sync_normal = true, .max_batch = 0};
    rd_err err;
    if (store_open(&o, &fx->s, &err) != RD_OK)
        fail_msg("store_open: %s", err.msg);
}

static rd_code push_org(const char *org)
{
    store_write w;
    memset(&w, 0, sizeof w);
    json_t *doc = json_loads(schema_doc, 0, NULL);
    assert_non_null(doc);
    w.op = STORE_OP_PUSH_SCHEMA;
    w.org = org;
    w.actor = "tester";
    w.push.schema = store_schema_from_json(doc, 0);
    json_decref(doc);
    assert_non_null(w.push.schema);
    rd_code code = store_submit_wait(fx->s, &w);
    store_schema_release(w.push.schema);
    json_decref(w.push.changes);
    return code;
}

static rd_code create_in(const char *org, const char *id)
{
    store_write w;
    memset(&w, 0, sizeof w);
    w.op = STORE_OP_CREATE;
    w.org = org;
    w.actor = "tester";
    w.rec.model = "tasks";
    w.rec.id = id;
    w.rec.data = json_pack("{s:s}", "title", id);
    rd_code code = store_submit_wait(fx->s, &w);
    last = w.err;
    json_decref(w.rec.data);
    store_record_clear(&w.rec.record);
    return code;
}

/* A claim write; *out (optional) gets lease.out. */
static rd_code claim_op(store_op op, const char *org, const char *actor, const char *model,
                        const char *id, const char *claim, int ttl, store_claim *out)
{
    store_write w;
    memset(&w, 0, sizeof w);
    w.op = op;
    w.org = org;
    w.actor = actor;
    w.rec.model = model;
    w.rec.id = id;
    w.rec.claim = claim;
    w.lease.ttl_s = ttl;
    rd_code code = store_submit_wait(fx->s, &w);
    last = w.err;
    if (out != NULL)
        *out = w.lease.out;
    return code;
}

static rd_code acquire(const char *actor, const char *id, int ttl, store_claim *out)
{
    return claim_op(STORE_OP_CLAIM_ACQUIRE, ORG, actor, "tasks", id, NULL, ttl, out);
}

static rd_code renew(const char *actor, const char *id, const char *claim, store_claim *out)
{
    return claim_op(STORE_OP_CLAIM_ACQUIRE, ORG, actor, "tasks", id, claim, 60, out);
}

static rd_code release(const char *actor, const char *claim)
{
    return claim_op(STORE_OP_CLAIM_RELEASE, ORG, actor, NULL, NULL, claim, 0, NULL);
}

/* An update, replace or delete of tasks/id by actor carrying claim. */
static rd_code write_with(store_op op, const char *actor, const char *id, const char *claim)
{
    store_write w;
    memset(&w, 0, sizeof w);
    w.op = op;
    w.org = ORG;
    w.actor = actor;
    w.rec.model = "tasks";
    w.rec.id = id;
    w.rec.claim = claim;
    if (op != STORE_OP_DELETE)
        w.rec.data = json_pack("{s:s}", "title", "changed");
    rd_code code = store_submit_wait(fx->s, &w);
    last = w.err;
    json_decref(w.rec.data);
    store_record_clear(&w.rec.record);
    return code;
}

/* Runs one statement on a second connection (the writer is idle). */
static void side_exec(const char *sql)
{
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(fx->path, &db), SQLITE_OK);
    sqlite3_busy_timeout(db, 5000);
    char *msg = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK)
        fail_msg("%s: %s", sql, msg);
    sqlite3_close(db);
}

/* Moves every claim's expiry into the past. */
static void expire_all(void)
{
    side_exec("UPDATE _rd_claims SET expires_at = 1");
}

static int setup(void **state)
{
    fx = calloc(1, sizeof *fx);
    snprintf(fx->dir, sizeof fx->dir, "/tmp/rd_claims_XXXXXX");
    if (mkdtemp(fx->dir) == NULL)
        return -1;
    snprintf(fx->path, sizeof fx->path, "%s/test.db", fx->dir);
    open_store();
    *state = fx;
    if (push_org(ORG) != RD_OK || push_org(ORG2) != RD_OK)
        return -1;
    return create_in(ORG, "t1") == RD_OK && create_in(ORG, "t2") == RD_OK ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    store_close(fx->s);
    unit_db_remove(fx->dir, fx->path);
    free(fx);
    fx = NULL;
    return 0;
}

/* ---- acquire ----------------------------------------------------------------- */

static void test_acquire_returns_claim_with_holder_and_expiry(void **state)
{
    (void)state;
    store_claim c;
    int64_t before = rd_now_us();
    assert_int_equal(acquire("alice", "t1", 30, &c), RD_OK);
    assert_true(strncmp(c.claim_id, "clm_", 4) == 0 && strlen(c.claim_id) == 30);
    assert_string_equal(c.model, "tasks");
    assert_string_equal(c.id, "t1");
    assert_string_equal(c.holder, "alice");
    assert_true(c.expires_at_us >= before + 30000000 && c.expires_at_us <= rd_now_us() + 30000000);
}

static void test_acquire_on_claimed_record_is_claimed_for_anyone(void **state)
{
    (void)state;
    store_claim c, blocking;
    assert_int_equal(acquire("alice", "t1", 30, &c), RD_OK);
    assert_int_equal(acquire("bob", "t1", 30, &blocking), RD_CLAIMED);
    assert_non_null(strstr(last.msg, "claimed by alice until "));
    assert_string_equal(blocking.holder, "alice");
    assert_int_equal(blocking.expires_at_us, c.expires_at_us);
    assert_string_equal(blocking.claim_id, ""); /* never handed to another caller */
    /* the same principal without the claim id is refused too */
    assert_int_equal(acquire("alice", "t1", 30, NULL), RD_CLAIMED);
    /* another record is free */
    assert_int_equal(acquire("bob", "t2", 30, NULL), RD_OK);
}

static void test_acquire_missing_record_or_model_is_not_found(void **state)
{
    (void)state;
    assert_int_equal(acquire("alice", "nope", 30, NULL), RD_NOT_FOUND);
    assert_string_equal(last.field, "id");
    assert_int_equal(claim_op(STORE_OP_CLAIM_ACQUIRE, ORG, "alice", "ghosts", "t1", NULL, 30, NULL),
                     RD_NOT_FOUND);
    assert_string_equal(last.field, "model");
    assert_int_equal(
        claim_op(STORE_OP_CLAIM_ACQUIRE, ORG, "alice", "bad\"name", "t1", NULL, 30, NULL),
        RD_NOT_FOUND);
    assert_int_equal(acquire("alice", "bad id", 30, NULL), RD_NOT_FOUND);
}

static void test_acquire_is_scoped_by_organisation(void **state)
{
    (void)state;
    /* ORG2 has the model but not the record */
    assert_int_equal(claim_op(STORE_OP_CLAIM_ACQUIRE, ORG2, "alice", "tasks", "t1", NULL, 30, NULL),
                     RD_NOT_FOUND);
    assert_int_equal(create_in(ORG2, "t1"), RD_OK);
    store_claim c;
    assert_int_equal(acquire("alice", "t1", 30, &c), RD_OK);
    /* the same (model, id) in another organisation is a different record */
    assert_int_equal(claim_op(STORE_OP_CLAIM_ACQUIRE, ORG2, "bob", "tasks", "t1", NULL, 30, NULL),
                     RD_OK);
    /* and ORG's claim id means nothing in ORG2 */
    assert_int_equal(
        claim_op(STORE_OP_CLAIM_RELEASE, ORG2, "alice", NULL, NULL, c.claim_id, 0, NULL),
        RD_NOT_FOUND);
}

static void test_acquire_ttl_out_of_range_is_validation_failed(void **state)
{
    (void)state;
    assert_int_equal(acquire("alice", "t1", 0, NULL), RD_VALIDATION_FAILED);
    assert_string_equal(last.field, "ttlSeconds");
    assert_int_equal(acquire("alice", "t1", STORE_CLAIM_TTL_MAX_S + 1, NULL), RD_VALIDATION_FAILED);
    assert_int_equal(acquire("alice", "t1", -5, NULL), RD_VALIDATION_FAILED);
    assert_int_equal(acquire("alice", "t1", STORE_CLAIM_TTL_MAX_S, NULL), RD_OK);
}

static void test_expired_claim_is_replaced(void **state)
{
    (void)state;
    store_claim a, b;
    assert_int_equal(acquire("alice", "t1", 30, &a), RD_OK);
    expire_all();
    assert_int_equal(acquire("bob", "t1", 30, &b), RD_OK);
    assert_string_equal(b.holder, "bob");
    assert_string_not_equal(a.claim_id, b.claim_id);
}

static void test_renew_keeps_id_and_extends_expiry(void **state)
{
    (void)state;
    store_claim a, r;
    assert_int_equal(acquire("alice", "t1", 5, &a), RD_OK);
    assert_int_equal(renew("alice", "t1", a.claim_id, &r), RD_OK);
    assert_string_equal(r.claim_id, a.claim_id);
    assert_true(r.expires_at_us > a.expires_at_us + 50000000);
}

static void test_renew_needs_the_live_claim_and_its_holder(void **state)
{
    (void)state;
    store_claim a;
    assert_int_equal(acquire("alice", "t1", 30, &a), RD_OK);
    assert_int_equal(renew("bob", "t1", a.claim_id, NULL), RD_CLAIMED);
    assert_non_null(strstr(last.msg, "another principal"));
    assert_int_equal(renew("alice", "t1", "clm_unknown", NULL), RD_CLAIMED);
    assert_non_null(strstr(last.msg, "claimed by alice"));
    assert_int_equal(renew("alice", "t2", a.claim_id, NULL), RD_CLAIMED);
    assert_string_equal(last.field, "claim");
    expire_all();
    assert_int_equal(renew("alice", "t1", a.claim_id, NULL), RD_CLAIMED);
    assert_non_null(strstr(last.msg, "expired or is unknown"));
}

/* ---- release ------------------------------------------------------------------- */

static void test_release_by_holder_frees_the_record(void **state)
{
    (void)state;
    store_claim a;
    assert_int_equal(acquire("alice", "t1", 30, &a), RD_OK);
    store_write w;
    memset(&w, 0, sizeof w);
    w.op = STORE_OP_CLAIM_RELEASE;
    w.org = ORG;
    w.actor = "alice";
    w.rec.model = "tasks";
    w.rec.id = "t1";
    w.rec.claim = a.claim_id;
    assert_int_equal(store_submit_wait(fx->s, &w), RD_OK);
    assert_string_equal(w.lease.out.claim_id, a.claim_id);
    assert_string_equal(w.lease.out.model, "tasks");
    assert_string_equal(w.lease.out.id, "t1");
    assert_int_equal(acquire("bob", "t1", 30, NULL), RD_OK);
    /* released once: a second release finds nothing */
    assert_int_equal(release("alice", a.claim_id), RD_NOT_FOUND);
    assert_string_equal(last.field, "claimId");
}

static void test_release_refusals(void **state)
{
    (void)state;
    store_claim a;
    assert_int_equal(acquire("alice", "t1", 30, &a), RD_OK);
    assert_int_equal(release("alice", "clm_unknown"), RD_NOT_FOUND);
    assert_int_equal(release("alice", ""), RD_VALIDATION_FAILED);
    assert_int_equal(release("bob", a.claim_id), RD_CLAIMED);
    /* a model or id that does not match the claim */
    assert_int_equal(
        claim_op(STORE_OP_CLAIM_RELEASE, ORG, "alice", "tasks", "t2", a.claim_id, 0, NULL),
        RD_NOT_FOUND);
    assert_int_equal(
        claim_op(STORE_OP_CLAIM_RELEASE, ORG, "alice", "other", "t1", a.claim_id, 0, NULL),
        RD_NOT_FOUND);
    /* still held after all that */
    assert_int_equal(acquire("bob", "t1", 30, NULL), RD_CLAIMED);
    expire_all();
    assert_int_equal(release("alice", a.claim_id), RD_NOT_FOUND);
}

/* ---- the write check ------------------------------------------------------------ */

static void test_write_to_claimed_record_needs_the_claim(void **state)
{
    (void)state;
    static const store_op ops[] = {STORE_OP_UPDATE, STORE_OP_REPLACE, STORE_OP_DELETE};
    store_claim a;
    assert_int_equal(acquire("alice", "t1", 30, &a), RD_OK);
    for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++) {
        assert_int_equal(write_with(ops[i], "alice", "t1", NULL), RD_CLAIMED);
        assert_non_null(strstr(last.msg, "claimed by alice until "));
        assert_int_equal(write_with(ops[i], "bob", "t1", "clm_other"), RD_CLAIMED);
        assert_int_equal(write_with(ops[i], "bob", "t1", a.claim_id), RD_CLAIMED);
        assert_non_null(strstr(last.msg, "another principal"));
    }
    assert_int_equal(write_with(STORE_OP_UPDATE, "alice", "t1", a.claim_id), RD_OK);
    assert_int_equal(write_with(STORE_OP_REPLACE, "alice", "t1", a.claim_id), RD_OK);
    assert_int_equal(write_with(STORE_OP_DELETE, "alice", "t1", a.claim_id), RD_OK);
}

static void test_write_to_unclaimed_record(void **state)
{
    (void)state;
    assert_int_equal(write_with(STORE_OP_UPDATE, "bob", "t2", NULL), RD_OK);
    assert_int_equal(write_with(STORE_OP_UPDATE, "bob", "t2", ""), RD_OK);
    /* a claim id that is not live on the record is refused, not ignored */
    assert_int_equal(write_with(STORE_OP_UPDATE, "bob", "t2", "clm_unknown"), RD_CLAIMED);
    assert_string_equal(last.field, "claim");
    assert_non_null(strstr(last.msg, "expired or is unknown"));
    /* a missing record is still NOT_FOUND, claimed or not */
    assert_int_equal(write_with(STORE_OP_UPDATE, "bob", "t9", NULL), RD_NOT_FOUND);
}

static void test_write_after_expiry(void **state)
{
    (void)state;
    store_claim a;
    assert_int_equal(acquire("alice", "t1", 30, &a), RD_OK);
    expire_all();
    assert_int_equal(write_with(STORE_OP_UPDATE, "bob", "t1", NULL), RD_OK);
    assert_int_equal(write_with(STORE_OP_UPDATE, "alice", "t1", a.claim_id), RD_CLAIMED);
    assert_non_null(strstr(last.msg, "expired or is unknown"));
}

static void test_claim_check_at_a_given_time(void **state)
{
    (void)state;
    store_claim a;
    rd_err err;
    assert_int_equal(acquire("alice", "t1", 30, &a), RD_OK);
    /* the writer is idle between submit_wait calls: its connection is free */
    assert_int_equal(store_claim_check(fx->s, ORG, "tasks", "t1", a.claim_id, "alice",
                                       a.expires_at_us - 1, &err),
                     RD_OK);
    assert_int_equal(
        store_claim_check(fx->s, ORG, "tasks", "t1", NULL, "bob", a.expires_at_us - 1, &err),
        RD_CLAIMED);
    /* live while now < expires_at */
    assert_int_equal(
        store_claim_check(fx->s, ORG, "tasks", "t1", NULL, "bob", a.expires_at_us, &err), RD_OK);
    assert_int_equal(
        store_claim_check(fx->s, ORG, "tasks", "t1", a.claim_id, "alice", a.expires_at_us, &err),
        RD_CLAIMED);
}

/* ---- durability ------------------------------------------------------------------ */

static void test_claims_survive_a_reopen(void **state)
{
    (void)state;
    store_claim a;
    assert_int_equal(acquire("alice", "t1", 30, &a), RD_OK);
    store_close(fx->s);
    open_store();
    assert_int_equal(acquire("bob", "t1", 30, NULL), RD_CLAIMED);
    assert_int_equal(write_with(STORE_OP_UPDATE, "alice", "t1", a.claim_id), RD_OK);
    assert_int_equal(release("alice", a.claim_id), RD_OK);
}

static void test_older_database_gains_the_claims_table(void **state)
{
    (void)state;
    store_close(fx->s);
    side_exec("DROP TABLE _rd_claims");
    open_store();
    assert_int_equal(acquire("alice", "t1", 30, NULL), RD_OK);
}

/* ---- authorisation inside the writer ------------------------------------- */

static char seen_group[64];     /* what the authorize callback got; "(null)" for NULL */
static const char *allow_group; /* the callback allows this group only (NULL: none) */
static int authorize_calls;

static rd_code test_authorize(store_write *w, const char *group, rd_err *err)
{
    (void)w;
    authorize_calls++;
    snprintf(seen_group, sizeof seen_group, "%s", group ? group : "(null)");
    if (allow_group != NULL && group != NULL && strcmp(group, allow_group) == 0)
        return RD_OK;
    return rd_errf(err, RD_PERMISSION_DENIED, NULL, "denied by the test");
}

static rd_code claim_authorized(store_op op, const char *id, const char *claim, store_claim *out)
{
    store_write w;
    memset(&w, 0, sizeof w);
    w.op = op;
    w.org = ORG;
    w.actor = "alice";
    w.rec.model = op == STORE_OP_CLAIM_ACQUIRE ? "tasks" : NULL;
    w.rec.id = id;
    w.rec.claim = claim;
    w.lease.ttl_s = 60;
    w.authorize = test_authorize;
    rd_code code = store_submit_wait(fx->s, &w);
    last = w.err;
    if (out != NULL)
        *out = w.lease.out;
    return code;
}

static void test_acquire_authorizes_the_group_the_writer_reads(void **state)
{
    (void)state;
    assert_int_equal(create_in(ORG, "auth1"), RD_OK);
    authorize_calls = 0;
    allow_group = "team-x";
    assert_int_equal(claim_authorized(STORE_OP_CLAIM_ACQUIRE, "auth1", NULL, NULL),
                     RD_PERMISSION_DENIED);
    assert_int_equal(authorize_calls, 1);
    assert_string_equal(seen_group, "default");
    /* nothing was claimed: anyone may still take it */
    assert_int_equal(acquire("bob", "auth1", 30, NULL), RD_OK);
    /* a missing record asks with no group, and the denial hides that it is missing */
    assert_int_equal(claim_authorized(STORE_OP_CLAIM_ACQUIRE, "nope", NULL, NULL),
                     RD_PERMISSION_DENIED);
    assert_string_equal(seen_group, "(null)");
}

static void test_release_authorizes_the_claimed_records_group(void **state)
{
    (void)state;
    store_claim c;
    assert_int_equal(create_in(ORG, "auth1"), RD_OK);
    assert_int_equal(acquire("alice", "auth1", 30, &c), RD_OK);
    allow_group = "team-x";
    assert_int_equal(claim_authorized(STORE_OP_CLAIM_RELEASE, NULL, c.claim_id, NULL),
                     RD_PERMISSION_DENIED);
    assert_string_equal(seen_group, "default");
    allow_group = "default";
    assert_int_equal(claim_authorized(STORE_OP_CLAIM_RELEASE, NULL, c.claim_id, NULL), RD_OK);
}

int main(void)
{
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_acquire_returns_claim_with_holder_and_expiry),
        T(test_acquire_on_claimed_record_is_claimed_for_anyone),
        T(test_acquire_missing_record_or_model_is_not_found),
        T(test_acquire_is_scoped_by_organisation),
        T(test_acquire_ttl_out_of_range_is_validation_failed),
        T(test_expired_claim_is_replaced),
        T(test_renew_keeps_id_and_extends_expiry),
        T(test_renew_needs_the_live_claim_and_its_holder),
        T(test_release_by_holder_frees_the_record),
        T(test_release_refusals),
        T(test_write_to_claimed_record_needs_the_claim),
        T(test_write_to_unclaimed_record),
        T(test_write_after_expiry),
        T(test_claim_check_at_a_given_time),
        T(test_claims_survive_a_reopen),
        T(test_older_database_gains_the_claims_table),
        T(test_acquire_authorizes_the_group_the_writer_reads),
        T(test_release_authorizes_the_claimed_records_group),
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL);
}
