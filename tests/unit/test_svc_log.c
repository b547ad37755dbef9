/* Unit tests for service/svc_log.c's request line: the hand-formatted line
 * must be exactly what jansson writes for the same object (compact, in
 * order, reals at precision 10), for plain and awkward strings, and strings
 * jansson cannot hold (not UTF-8) are left out as before. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "common/rd.h"
#include "service/svc_log.h"

/* Runs svc_log_request(r) with stderr sent to a temporary file and returns
 * the line it wrote (malloc'd, without the newline). */
static char *capture(const svc_log_req *r)
{
    char path[] = "/tmp/rd_log_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    unlink(path);
    fflush(stderr);
    int saved = dup(STDERR_FILENO);
    assert_true(saved >= 0);
    assert_int_equal(dup2(fd, STDERR_FILENO), STDERR_FILENO);
    svc_log_request(r);
    assert_int_equal(dup2(saved, STDERR_FILENO), STDERR_FILENO);
    close(saved);
    off_t len = lseek(fd, 0, SEEK_END);
    assert_true(len > 1);
    char *buf = calloc(1, (size_t)len + 1);
    assert_non_null(buf);
    assert_int_equal(pread(fd, buf, (size_t)len, 0), len);
    close(fd);
    assert_int_equal(buf[len - 1], '\n');
    assert_null(memchr(buf, '\n', (size_t)len - 1));
    buf[len - 1] = '\0';
    return buf;
}

/* The line parses, and jansson writes the parsed object back byte for
 * byte; returns the object (caller decrefs). */
static json_t *same_as_jansson(const char *line)
{
    json_error_t e;
    json_t *o = json_loads(line, JSON_REJECT_DUPLICATES, &e);
    assert_non_null(o);
    char *again = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(10));
    assert_non_null(again);
    assert_string_equal(again, line);
    free(again);
    return o;
}

static void test_plain_request_line(void **state)
{
    (void)state;
    svc_log_req r = {.transport = "grpc",
                     .method = "/recordd.v1.Records/UpdateRecord",
                     .rd_code = RD_OK,
                     .grpc_code = -1,
                     .duration_us = 1234,
                     .principal_id = "key_abc",
                     .server_tx_id = "tx_123",
                     .request_id = "req-1"};
    char *line = capture(&r);
    json_t *o = same_as_jansson(line);
    const char *keys[] = {"time",         "level",        "msg",       "transport",
                          "method",       "code",         "grpc_code", "duration_ms",
                          "principal_id", "server_tx_id", "request_id"};
    size_t i = 0;
    const char *k;
    json_t *v;
    json_object_foreach(o, k, v)
    {
        assert_true(i < sizeof keys / sizeof keys[0]);
        assert_string_equal(k, keys[i]);
        i++;
    }
    assert_int_equal(i, sizeof keys / sizeof keys[0]);
    assert_string_equal(json_string_value(json_object_get(o, "level")), "info");
    assert_string_equal(json_string_value(json_object_get(o, "msg")), "request");
    assert_string_equal(json_string_value(json_object_get(o, "code")), "ok");
    assert_int_equal(json_integer_value(json_object_get(o, "grpc_code")), 0);
    assert_true(json_real_value(json_object_get(o, "duration_ms")) == 1.234);
    json_decref(o);
    free(line);
}

static void test_awkward_strings_and_numbers(void **state)
{
    (void)state;
    static const int64_t durations[] = {0, -5, 1000, 1, 999999999, 123456789012};
    for (size_t d = 0; d < sizeof durations / sizeof durations[0]; d++) {
        svc_log_req r = {.transport = "http",
                         .method = "PATCH /v1/models/{model}/{id}",
                         .rd_code = RD_NOT_FOUND,
                         .grpc_code = -1,
                         .http_status = 404,
                         .duration_us = durations[d],
                         .principal_id = "k\"ey\\x\t\x01\x1f\xc3\xa9/\xe2\x82\xac",
                         .request_id = "a\"b\\c/d"};
        char *line = capture(&r);
        json_t *o = same_as_jansson(line);
        assert_string_equal(json_string_value(json_object_get(o, "principal_id")), r.principal_id);
        assert_string_equal(json_string_value(json_object_get(o, "request_id")), r.request_id);
        assert_int_equal(json_integer_value(json_object_get(o, "http_status")), 404);
        assert_null(json_object_get(o, "server_tx_id"));
        json_decref(o);
        free(line);
    }
}

static void test_strings_that_are_not_utf8_are_left_out(void **state)
{
    (void)state;
    svc_log_req r = {.transport = "grpc",
                     .method = "/x/\xff",
                     .rd_code = -1,
                     .grpc_code = 12,
                     .duration_us = 7,
                     .principal_id = "\xc3"};
    char *line = capture(&r);
    json_t *o = same_as_jansson(line);
    assert_null(json_object_get(o, "method"));
    assert_null(json_object_get(o, "principal_id"));
    assert_string_equal(json_string_value(json_object_get(o, "code")), "unimplemented");
    assert_true(strncmp(json_string_value(json_object_get(o, "request_id")), "req_", 4) == 0);
    json_decref(o);
    free(line);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plain_request_line),
        cmocka_unit_test(test_awkward_strings_and_numbers),
        cmocka_unit_test(test_strings_that_are_not_utf8_are_left_out),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
