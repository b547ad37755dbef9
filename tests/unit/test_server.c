/* Unit tests for the call core (service/svc_call.c) with its gRPC transport
 * (service/svc_grpc.c) and the HTTP transport's rendering (service/gw_http.c), in process: a server
 * on 127.0.0.1 with a temporary store and no credentials configured, called through the gRPC C core
 * and a plain socket. What each path answers is pinned here, below the e2e suite, so the call core
 * can be restructured with a fast check. */
#include <arpa/inet.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "grpc/health/v1/health.pb-c.h"
#include "service/gw_http.h"
#include "service/svc_log.h"
#include "service/svc.h"
#include "store/store.h"
#include "tests/unit/unit_db.h"

typedef struct fixture {
    char dir[64];
    char path[128];
    store *db;
    svc_ctx ctx;
    svc_server *server;
    gw_http *gw;
    char target[64];
    int http_port;
} fixture;

static int setup(void **state)
{
    fixture *fx = calloc(1, sizeof *fx);
    rd_err err;
    svc_log_set_level(SVC_LOG_OFF); /* no request lines in the test output */
    snprintf(fx->dir, sizeof fx->dir, "/tmp/rd_server_XXXXXX");
    if (mkdtemp(fx->dir) == NULL)
        return -1;
    snprintf(fx->path, sizeof fx->path, "%s/test.db", fx->dir);
    store_options so = {.path = fx->path};
    if (store_open(&so, &fx->db, &err) != RD_OK)
        return -1;
    fx->ctx = (svc_ctx){.db = fx->db}; /* no auth: every non-public call is refused */
    svc_options opt = {.listen = "127.0.0.1:0", .workers = 2, .max_message_bytes = 1 << 20};
    int port = 0;
    if (svc_server_start(&opt, &fx->ctx, &fx->server, &port, &err) != RD_OK)
        return -1;
    snprintf(fx->target, sizeof fx->target, "127.0.0.1:%d", port);
    gw_http_options go = {.listen = "127.0.0.1:0", .threads = 1, .keepalive_s = 15};
    if (gw_http_start(&go, &fx->ctx, &fx->gw, &fx->http_port, &err) != RD_OK)
        return -1;
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    fixture *fx = *state;
    gw_http_close(fx->gw);
    svc_server_stop(fx->server, 0);
    gw_http_stop(fx->gw);
    store_close(fx->db);
    unit_db_remove(fx->dir, fx->path);
    free(fx);
    return 0;
}

/* ---- a gRPC client on the C core ------------------------------------------------------ */

typedef struct answer {
    grpc_status_code status;
    char details[256];
    uint8_t reply[256];
    size_t reply_len;
} answer;

/* One unary call of method with the request bytes; the status, its message
 * and the reply bytes go to *out. */
static void call_unary(const char *target, const char *method, const void *req, size_t req_len,
                       answer *out)
{
    memset(out, 0, sizeof *out);
    grpc_channel_credentials *creds = grpc_insecure_credentials_create();
    grpc_channel *ch = grpc_channel_create(target, creds, NULL);
    grpc_channel_credentials_release(creds);
    grpc_completion_queue *cq = grpc_completion_queue_create_for_pluck(NULL);
    gpr_timespec deadline =
        gpr_time_add(gpr_now(GPR_CLOCK_REALTIME), gpr_time_from_seconds(10, GPR_TIMESPAN));
    grpc_call *call =
        grpc_channel_create_call(ch, NULL, GRPC_PROPAGATE_DEFAULTS, cq,
                                 grpc_slice_from_static_string(method), NULL, deadline, NULL);
    grpc_slice body = grpc_slice_from_copied_buffer(req, req_len);
    grpc_byte_buffer *send = grpc_raw_byte_buffer_create(&body, 1);
    grpc_slice_unref(body);
    grpc_byte_buffer *recv = NULL;
    grpc_metadata_array initial, trailing;
    grpc_metadata_array_init(&initial);
    grpc_metadata_array_init(&trailing);
    grpc_slice details = grpc_empty_slice();
    grpc_op ops[6];
    memset(ops, 0, sizeof ops);
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = send;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &initial;
    ops[4].op = GRPC_OP_RECV_MESSAGE;
    ops[4].data.recv_message.recv_message = &recv;
    ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[5].data.recv_status_on_client.trailing_metadata = &trailing;
    ops[5].data.recv_status_on_client.status = &out->status;
    ops[5].data.recv_status_on_client.status_details = &details;
    assert_int_equal(grpc_call_start_batch(call, ops, 6, (void *)1, NULL), GRPC_CALL_OK);
    grpc_completion_queue_pluck(cq, (void *)1, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    char *msg = grpc_slice_to_c_string(details);
    snprintf(out->details, sizeof out->details, "%s", msg);
    gpr_free(msg);
    if (recv != NULL) {
        grpc_byte_buffer_reader reader;
        grpc_byte_buffer_reader_init(&reader, recv);
        grpc_slice all = grpc_byte_buffer_reader_readall(&reader);
        grpc_byte_buffer_reader_destroy(&reader);
        out->reply_len = GRPC_SLICE_LENGTH(all) < sizeof out->reply ? GRPC_SLICE_LENGTH(all) : 0;
        memcpy(out->reply, GRPC_SLICE_START_PTR(all), out->reply_len);
        grpc_slice_unref(all);
        grpc_byte_buffer_destroy(recv);
    }
    grpc_slice_unref(details);
    grpc_metadata_array_destroy(&initial);
    grpc_metadata_array_destroy(&trailing);
    grpc_byte_buffer_destroy(send);
    grpc_call_unref(call);
    grpc_completion_queue_shutdown(cq);
    while (grpc_completion_queue_pluck(cq, NULL, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type !=
           GRPC_QUEUE_SHUTDOWN)
        ;
    grpc_completion_queue_destroy(cq);
    grpc_channel_destroy(ch);
}

static int health_status(const answer *a)
{
    Grpc__Health__V1__HealthCheckResponse *r =
        grpc__health__v1__health_check_response__unpack(NULL, a->reply_len, a->reply);
    assert_non_null(r);
    int st = r->status;
    grpc__health__v1__health_check_response__free_unpacked(r, NULL);
    return st;
}

/* ---- an HTTP client on a socket ------------------------------------------------------ */

/* Sends request (a whole HTTP/1.1 request) and reads the answer until the
 * server closes or the buffer is full; returns the status code. */
static int http(int port, const char *request, char *buf, size_t cap)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    assert_int_equal(write(fd, request, strlen(request)), (ssize_t)strlen(request));
    size_t n = 0;
    ssize_t r;
    while (n + 1 < cap && (r = read(fd, buf + n, cap - 1 - n)) > 0)
        n += (size_t)r;
    buf[n] = '\0';
    close(fd);
    int status = 0;
    assert_int_equal(sscanf(buf, "HTTP/1.1 %d", &status), 1);
    return status;
}

/* ---- the server core ------------------------------------------------------------------ */

static void test_health_is_public_and_answers_for_readiness(void **state)
{
    fixture *fx = *state;
    Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    req.service = "readiness";
    uint8_t buf[64];
    size_t len = grpc__health__v1__health_check_request__pack(&req, buf);
    answer a;
    call_unary(fx->target, "/grpc.health.v1.Health/Check", buf, len, &a);
    assert_int_equal(a.status, GRPC_STATUS_OK);
    assert_int_equal(health_status(&a),
                     GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING);
    req.service = "no.such.Service";
    len = grpc__health__v1__health_check_request__pack(&req, buf);
    call_unary(fx->target, "/grpc.health.v1.Health/Check", buf, len, &a);
    assert_int_equal(a.status, GRPC_STATUS_NOT_FOUND);
}

static void test_unknown_methods_are_unimplemented(void **state)
{
    fixture *fx = *state;
    answer a;
    call_unary(fx->target, "/recordd.v1.Records/NoSuchMethod", "", 0, &a);
    assert_int_equal(a.status, GRPC_STATUS_UNIMPLEMENTED);
}

static void test_non_public_methods_need_a_credential(void **state)
{
    fixture *fx = *state;
    answer a;
    call_unary(fx->target, "/recordd.v1.Schemas/GetSchema", "", 0, &a);
    assert_int_equal(a.status, GRPC_STATUS_UNAUTHENTICATED);
    assert_non_null(strstr(a.details, "without credentials"));
}

static void test_a_malformed_request_is_invalid_argument(void **state)
{
    fixture *fx = *state;
    answer a;
    /* field 1 (service) as a string of length 100 with 2 bytes present */
    static const uint8_t bad[] = {0x0a, 0x64, 'a', 'b'};
    call_unary(fx->target, "/grpc.health.v1.Health/Check", bad, sizeof bad, &a);
    assert_int_equal(a.status, GRPC_STATUS_INVALID_ARGUMENT);
}

/* ---- the HTTP transport's rendering ----------------------------------------------------- */

static void test_http_renders_health_problems_and_auth(void **state)
{
    fixture *fx = *state;
    char buf[8192];
    assert_int_equal(http(fx->http_port,
                          "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", buf,
                          sizeof buf),
                     200);
    /* no route: 404 problem+json with the error table's code */
    assert_int_equal(http(fx->http_port,
                          "GET /v1/nothing HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", buf,
                          sizeof buf),
                     404);
    assert_non_null(strstr(buf, "application/problem+json"));
    assert_non_null(strstr(buf, "\"code\":\"not_found\""));
    /* a routed method without a credential: 401 with WWW-Authenticate */
    assert_int_equal(http(fx->http_port,
                          "GET /v1/schema HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", buf,
                          sizeof buf),
                     401);
    assert_non_null(strstr(buf, "WWW-Authenticate: Bearer"));
    assert_non_null(strstr(buf, "\"code\":\"unauthenticated\""));
    /* a verb the route does not take: 405 with Allow */
    assert_int_equal(http(fx->http_port,
                          "DELETE /v1/schema HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", buf,
                          sizeof buf),
                     405);
    assert_non_null(strstr(buf, "Allow: "));
}

int main(void)
{
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_health_is_public_and_answers_for_readiness),
        T(test_unknown_methods_are_unimplemented),
        T(test_non_public_methods_need_a_credential),
        T(test_a_malformed_request_is_invalid_argument),
        T(test_http_renders_health_problems_and_auth),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
