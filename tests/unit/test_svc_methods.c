/* Unit tests for the method table (service/svc_methods.c): the policy
 * columns are consistent with each method's shape, and the methods the
 * server core and the gateway single out are the ones marked. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "service/svc.h"

static const svc_method *find(const char *path)
{
    for (size_t i = 0; i < svc_n_methods; i++)
        if (strcmp(svc_methods[i].path, path) == 0)
            return &svc_methods[i];
    fail_msg("no method %s", path);
    return NULL;
}

static void test_policy_columns_fit_the_method_shapes(void **state)
{
    (void)state;
    for (size_t i = 0; i < svc_n_methods; i++) {
        const svc_method *m = &svc_methods[i];
        if (m->cq_fast_path && (m->kind != SVC_UNARY || m->public))
            fail_msg("%s: the CQ fast path is for authenticated unary calls", m->path);
        if (m->always_answered && !m->public)
            fail_msg("%s: a method answered over every limit must need no credential", m->path);
        if (m->http_location && m->http_status != 201)
            fail_msg("%s: Location goes with 201 Created", m->path);
        if ((m->http_partial_status || m->http_rolled_back_status) && m->kind != SVC_UNARY)
            fail_msg("%s: 207 and 422 bulk statuses are for unary replies", m->path);
        if (m->credential_optional && m->public)
            fail_msg("%s: public already takes no credential", m->path);
        for (const rd_code *c = m->answers; c != NULL && *c != RD_OK; c++)
            if (*c <= RD_OK || *c >= RD_CODE_COUNT)
                fail_msg("%s: answers a code outside the error table", m->path);
    }
}

/* The rows come from the descriptor set (tools/build/gen_methods.c); each
 * has its handler and a capability verb unless it needs none or several. */
static void test_every_row_has_a_handler_and_a_verb(void **state)
{
    (void)state;
    assert_int_equal(svc_n_methods, 18);
    for (size_t i = 0; i < svc_n_methods; i++) {
        const svc_method *m = &svc_methods[i];
        if (m->handler == NULL)
            fail_msg("%s: no handler", m->path);
        bool verbless = m->public || strcmp(m->path, "/recordd.v1.Records/BulkMutate") == 0 ||
                        strcmp(m->path, "/recordd.v1.Tokens/MintToken") == 0;
        if (verbless != (m->can == 0))
            fail_msg("%s: capability verb %u", m->path, m->can);
        if (strcmp(m->req->name, "grpc.health.v1.HealthCheckRequest") != 0 &&
            strncmp(m->req->name, "grpc.reflection.", 16) != 0 &&
            strncmp(m->req->name, "recordd.v1.", 11) != 0)
            fail_msg("%s: request type %s", m->path, m->req->name);
    }
}

static void test_the_marked_methods(void **state)
{
    (void)state;
    static const char *const fast[] = {
        "/recordd.v1.Records/CreateRecord", "/recordd.v1.Records/UpdateRecord",
        "/recordd.v1.Records/ReplaceRecord", "/recordd.v1.Records/DeleteRecord"};
    size_t n_fast = 0;
    for (size_t i = 0; i < svc_n_methods; i++)
        n_fast += svc_methods[i].cq_fast_path;
    assert_int_equal(n_fast, 4);
    for (size_t i = 0; i < 4; i++)
        assert_true(find(fast[i])->cq_fast_path);
    assert_true(find("/grpc.health.v1.Health/Check")->always_answered);
    assert_false(find("/grpc.health.v1.Health/Watch")->always_answered);
    assert_int_equal(find("/recordd.v1.Records/CreateRecord")->http_status, 201);
    assert_true(find("/recordd.v1.Records/GetRecord")->http_if_match_on_reply);
    assert_int_equal(find("/recordd.v1.Records/CreateRecord")->can, AUTH_CREATE);
    assert_int_equal(find("/recordd.v1.Records/GetRecord")->can, AUTH_READ);
    assert_int_equal(find("/recordd.v1.Records/ReplaceRecord")->can, AUTH_UPDATE);
    assert_int_equal(find("/recordd.v1.Records/DeleteRecord")->can, AUTH_DELETE);
    assert_int_equal(find("/recordd.v1.Schemas/PushSchema")->can, AUTH_ADMIN);
    assert_true(find("/recordd.v1.Schemas/GetOpenApi")->credential_optional);
    assert_int_equal(find("/recordd.v1.Records/BulkMutate")->http_partial_status, 207);
    assert_int_equal(find("/recordd.v1.Records/BulkMutate")->http_rolled_back_status, 422);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_policy_columns_fit_the_method_shapes),
        cmocka_unit_test(test_every_row_has_a_handler_and_a_verb),
        cmocka_unit_test(test_the_marked_methods),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
