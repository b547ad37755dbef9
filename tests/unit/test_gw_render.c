/* Unit tests for service/gw_render.c: the HTTP transport's rendering of
 * every kind of outcome — a receipt (201, Location, ETag, Prefer), a read
 * under If-Match, a partial and a rolled-back bulk (207, 422), failures
 * (412 for If-Match, 429 with Retry-After, 401 with WWW-Authenticate), an
 * idempotent replay, the end of a stream — and of stream messages as
 * Server-Sent Events. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "recordd/v1/records.pb-c.h"
#include "service/gw_render.h"

static const svc_method *method(const char *name)
{
    char path[96];
    snprintf(path, sizeof path, "/recordd.v1.Records/%s", name);
    for (size_t i = 0; i < svc_n_methods; i++)
        if (strcmp(svc_methods[i].path, path) == 0)
            return &svc_methods[i];
    fail_msg("no method %s", name);
    return NULL;
}

static const char *header(const gw_answer *a, const char *name)
{
    for (size_t i = 0; i < a->n_headers; i++)
        if (strcmp(a->headers[i].name, name) == 0)
            return a->headers[i].value;
    return NULL;
}

static json_t *body(const gw_answer *a)
{
    assert_non_null(a->body);
    json_t *j = json_loadb(a->body, a->len, 0, NULL);
    assert_non_null(j);
    return j;
}

static const char *str(const json_t *o, const char *key)
{
    const char *s = json_string_value(json_object_get(o, key));
    assert_non_null(s);
    return s;
}

typedef struct fixture {
    rd_arena *a;
    Recordd__V1__Record rec;
    Recordd__V1__CommitReceipt receipt;
} fixture;

static int setup(void **state)
{
    fixture *fx = calloc(1, sizeof *fx);
    fx->a = rd_arena_new(1 << 20);
    recordd__v1__record__init(&fx->rec);
    fx->rec.model = "students";
    fx->rec.id = "s 1/a"; /* encoded into Location */
    fx->rec.version = 3;
    recordd__v1__commit_receipt__init(&fx->receipt);
    fx->receipt.object = "commit_receipt";
    fx->receipt.client_tx_id = "ctx_1";
    fx->receipt.server_tx_id = "tx_9";
    fx->receipt.success = true;
    fx->receipt.status = RECORDD__V1__COMMIT_STATUS__CONFIRMED;
    fx->receipt.last_sync_id = 42;
    fx->receipt.record = &fx->rec;
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    fixture *fx = *state;
    rd_arena_free(fx->a);
    free(fx);
    return 0;
}

static void test_a_create_is_201_with_location_and_etag(void **state)
{
    fixture *fx = *state;
    gw_render_req q = {.path = "/v1/models/students"};
    svc_outcome o = {.reply = &fx->receipt.base};
    gw_answer a = {0};
    assert_int_equal(gw_render_outcome(&q, method("CreateRecord"), &o, fx->a, &a), RD_OK);
    assert_int_equal(a.status, 201);
    assert_string_equal(a.ctype, "application/json");
    assert_string_equal(header(&a, "Location"), "/v1/models/students/s%201%2Fa");
    assert_string_equal(header(&a, "ETag"), "\"3\"");
    assert_null(header(&a, "Idempotent-Replayed"));
    json_t *j = body(&a);
    assert_string_equal(str(j, "object"), "commit_receipt");
    assert_string_equal(str(j, "lastSyncId"), "42");
    json_decref(j);
    gw_answer_free(&a);

    /* no record in the receipt (withheld): Location from the request's id */
    fx->receipt.record = NULL;
    q.create_id = "given";
    assert_int_equal(gw_render_outcome(&q, method("CreateRecord"), &o, fx->a, &a), RD_OK);
    assert_string_equal(header(&a, "Location"), "/v1/models/students/given");
    assert_null(header(&a, "ETag"));
    gw_answer_free(&a);

    /* the receipt's own id and version (a generated id, no record asked for) */
    fx->receipt.id = "gen 1";
    fx->receipt.version = 1;
    assert_int_equal(gw_render_outcome(&q, method("CreateRecord"), &o, fx->a, &a), RD_OK);
    assert_string_equal(header(&a, "Location"), "/v1/models/students/gen%201");
    assert_string_equal(header(&a, "ETag"), "\"1\"");
    gw_answer_free(&a);
}

static void test_prefer_minimal_is_204_with_the_receipt_in_headers(void **state)
{
    fixture *fx = *state;
    gw_render_req q = {.path = "/v1/models/students/x", .want_minimal = true};
    svc_outcome o = {.reply = &fx->receipt.base, .replayed = true};
    gw_answer a = {0};
    assert_int_equal(gw_render_outcome(&q, method("UpdateRecord"), &o, fx->a, &a), RD_OK);
    assert_int_equal(a.status, 204);
    assert_null(a.body);
    assert_string_equal(header(&a, "X-Sync-Id"), "42");
    assert_string_equal(header(&a, "X-Server-Tx-Id"), "tx_9");
    assert_string_equal(header(&a, "X-Client-Tx-Id"), "ctx_1");
    assert_string_equal(header(&a, "Preference-Applied"), "return=minimal");
    assert_string_equal(header(&a, "Idempotent-Replayed"), "true");
    gw_answer_free(&a);

    /* return=representation with a response_body: the record alone */
    q = (gw_render_req){.path = "/x", .want_repr = true, .response_body = "record"};
    o.replayed = false;
    assert_int_equal(gw_render_outcome(&q, method("UpdateRecord"), &o, fx->a, &a), RD_OK);
    assert_int_equal(a.status, 200);
    assert_string_equal(header(&a, "Preference-Applied"), "return=representation");
    json_t *j = body(&a);
    assert_string_equal(str(j, "id"), "s 1/a");
    json_decref(j);
    gw_answer_free(&a);
}

static void test_a_read_checks_if_match_against_the_reply(void **state)
{
    fixture *fx = *state;
    gw_render_req q = {.path = "/v1/models/students/x", .has_if_match = true, .n_if_match = 2};
    q.if_match[0] = 1;
    q.if_match[1] = 3;
    svc_outcome o = {.reply = &fx->rec.base};
    gw_answer a = {0};
    assert_int_equal(gw_render_outcome(&q, method("GetRecord"), &o, fx->a, &a), RD_OK);
    assert_int_equal(a.status, 200);
    assert_string_equal(header(&a, "ETag"), "\"3\"");
    gw_answer_free(&a);

    q.n_if_match = 1; /* only "1": the record is at 3 */
    assert_int_equal(gw_render_outcome(&q, method("GetRecord"), &o, fx->a, &a),
                     RD_VERSION_CONFLICT);
    assert_int_equal(a.status, 412);
    assert_string_equal(a.ctype, "application/problem+json");
    json_t *j = body(&a);
    assert_string_equal(str(j, "code"), "version_conflict");
    assert_int_equal(json_integer_value(json_object_get(j, "status")), 412);
    json_decref(j);
    gw_answer_free(&a);
}

static void test_bulk_partial_is_207_and_rolled_back_is_422(void **state)
{
    fixture *fx = *state;
    Recordd__V1__BulkMutateResponse resp = RECORDD__V1__BULK_MUTATE_RESPONSE__INIT;
    resp.receipt = &fx->receipt;
    resp.total_requested = 3;
    resp.total_failed = 1;
    gw_render_req q = {.path = "/v1/bulk"};
    svc_outcome o = {.reply = &resp.base};
    gw_answer a = {0};
    assert_int_equal(gw_render_outcome(&q, method("BulkMutate"), &o, fx->a, &a), RD_OK);
    assert_int_equal(a.status, 207);
    gw_answer_free(&a);

    resp.total_failed = 0;
    assert_int_equal(gw_render_outcome(&q, method("BulkMutate"), &o, fx->a, &a), RD_OK);
    assert_int_equal(a.status, 200);
    gw_answer_free(&a);

    resp.total_failed = 2;
    const svc_kv violations[] = {{"operations[0].data.age", "validation_failed: too old"},
                                 {"operations[1]", "not_found: no record"}};
    o = (svc_outcome){.bulk = &resp.base,
                      .receipt = &fx->receipt.base,
                      .violations = violations,
                      .n_violations = 2};
    rd_errf(&o.err, RD_VALIDATION_FAILED, "operations[0].data.age", "operations[0]: too old");
    assert_int_equal(gw_render_outcome(&q, method("BulkMutate"), &o, fx->a, &a),
                     RD_VALIDATION_FAILED);
    assert_int_equal(a.status, 422);
    json_t *j = body(&a);
    assert_int_equal(json_array_size(json_object_get(j, "errors")), 2);
    assert_non_null(json_object_get(j, "receipt"));
    assert_int_equal(
        json_integer_value(json_object_get(json_object_get(j, "result"), "totalFailed")), 2);
    json_decref(j);
    gw_answer_free(&a);
}

static void test_failures_take_the_table_and_the_precondition_column(void **state)
{
    fixture *fx = *state;
    gw_answer a = {0};
    svc_outcome o = {.receipt = &fx->receipt.base, .replayed = true};
    rd_errf(&o.err, RD_VERSION_CONFLICT, NULL, "version is 4, expected 3");
    gw_render_req q = {.path = "/v1/models/students/x"};
    gw_render_outcome(&q, method("UpdateRecord"), &o, fx->a, &a);
    assert_int_equal(a.status, 409);
    assert_string_equal(header(&a, "Idempotent-Replayed"), "true");
    gw_answer_free(&a);
    q.has_if_match = true; /* the expected version came in If-Match */
    gw_render_outcome(&q, method("UpdateRecord"), &o, fx->a, &a);
    assert_int_equal(a.status, 412);
    gw_answer_free(&a);

    /* a missing record fails If-Match: * but not If-Match: "3" */
    o = (svc_outcome){0};
    rd_errf(&o.err, RD_NOT_FOUND, NULL, "no record");
    gw_render_outcome(&q, method("UpdateRecord"), &o, fx->a, &a);
    assert_int_equal(a.status, 404);
    gw_answer_free(&a);
    q.if_match_any = true;
    gw_render_outcome(&q, method("UpdateRecord"), &o, fx->a, &a);
    assert_int_equal(a.status, 412);
    gw_answer_free(&a);

    o = (svc_outcome){.retry_after_ms = 2500};
    rd_errf(&o.err, RD_RATE_LIMITED, NULL, "slow down");
    gw_render_outcome(&q, method("GetRecord"), &o, fx->a, &a);
    assert_int_equal(a.status, 429);
    assert_string_equal(header(&a, "Retry-After"), "3");
    gw_answer_free(&a);

    o = (svc_outcome){.status_only = true};
    rd_errf(&o.err, RD_UNAUTHENTICATED, NULL, "no credential");
    gw_render_outcome(&q, method("GetRecord"), &o, fx->a, &a);
    assert_int_equal(a.status, 401);
    assert_string_equal(header(&a, "WWW-Authenticate"), "Bearer realm=\"recordd\"");
    assert_null(header(&a, "Retry-After"));
    gw_answer_free(&a);
}

static void test_streams_render_events_and_their_end(void **state)
{
    fixture *fx = *state;
    gw_render_req q = {.path = "/v1/changes"};
    gw_answer a = {0};
    svc_outcome o = {.status_only = true};
    assert_int_equal(gw_render_outcome(&q, method("WatchChanges"), &o, fx->a, &a), RD_OK);
    assert_int_equal(a.status, 0); /* an OK end renders nothing: the stream closes */
    rd_errf(&o.err, RD_TOKEN_EXPIRED, NULL, "the token expired");
    gw_render_outcome(&q, method("WatchChanges"), &o, fx->a, &a);
    assert_int_equal(a.status, 401); /* before the stream started: a plain problem */
    char *ev = gw_render_error_event(a.body);
    assert_non_null(strstr(ev, "event: error\ndata: {"));
    assert_non_null(strstr(ev, "\"code\":\"token_expired\""));
    free(ev);
    gw_answer_free(&a);

    Recordd__V1__ChangeEvent ce = RECORDD__V1__CHANGE_EVENT__INIT;
    ce.sync_id = 7;
    ce.model = "students";
    ce.id = "s1";
    char *text = gw_render_event(&ce.base);
    assert_non_null(text);
    assert_int_equal(strncmp(text, "id: 7\ndata: {", 13), 0);
    assert_non_null(strstr(text, "\"syncId\":\"7\""));
    assert_string_equal(text + strlen(text) - 2, "\n\n");
    free(text);
}

int main(void)
{
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_a_create_is_201_with_location_and_etag),
        T(test_prefer_minimal_is_204_with_the_receipt_in_headers),
        T(test_a_read_checks_if_match_against_the_reply),
        T(test_bulk_partial_is_207_and_rolled_back_is_422),
        T(test_failures_take_the_table_and_the_precondition_column),
        T(test_streams_render_events_and_their_end),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
