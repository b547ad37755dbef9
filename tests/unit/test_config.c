/* Unit tests for service/config.c: defaults, environment twins, flags,
 * validation messages, the database directory and the bound address. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "service/config.h"

/* A fake environment: NULL-terminated name/value pairs. */
static const char *const *fake_env;

static const char *env_lookup(const char *name)
{
    for (const char *const *p = fake_env; p != NULL && p[0] != NULL; p += 2)
        if (strcmp(p[0], name) == 0)
            return p[1];
    return NULL;
}

static rd_code load(svc_config *cfg, const char *const *env, int argc, const char **argv,
                    rd_err *err)
{
    fake_env = env;
    rd_err_clear(err);
    return svc_config_load(cfg, argc, (char **)argv, env_lookup, err);
}

static void test_config_defaults_run_out_of_the_box(void **state)
{
    (void)state;
    svc_config cfg;
    rd_err err;
    const char *argv[] = {"recordd"};
    assert_int_equal(load(&cfg, NULL, 1, argv, &err), RD_OK);
    assert_string_equal(cfg.grpc_listen, "127.0.0.1:50051");
    assert_string_equal(cfg.db, "./var/recordd.db");
    assert_true(cfg.workers >= 2);
    assert_int_equal(cfg.max_message_bytes, 4 << 20);
    assert_false(cfg.sync_normal);
    assert_int_equal(cfg.shutdown_grace_s, 10);
    assert_false(cfg.help);
    assert_false(cfg.version);
}

static void test_config_env_overrides_default(void **state)
{
    (void)state;
    svc_config cfg;
    rd_err err;
    const char *env[] = {"RECORDD_GRPC_LISTEN",
                         "0.0.0.0:9000",
                         "RECORDD_DB",
                         "/data/r.db",
                         "RECORDD_WORKERS",
                         "7",
                         "RECORDD_MAX_MESSAGE_BYTES",
                         "65536",
                         "RECORDD_SYNC",
                         "normal",
                         "RECORDD_SHUTDOWN_GRACE",
                         "3",
                         NULL};
    const char *argv[] = {"recordd"};
    assert_int_equal(load(&cfg, env, 1, argv, &err), RD_OK);
    assert_string_equal(cfg.grpc_listen, "0.0.0.0:9000");
    assert_string_equal(cfg.db, "/data/r.db");
    assert_int_equal(cfg.workers, 7);
    assert_int_equal(cfg.max_message_bytes, 65536);
    assert_true(cfg.sync_normal);
    assert_int_equal(cfg.shutdown_grace_s, 3);
}

static void test_config_flag_wins_over_env(void **state)
{
    (void)state;
    svc_config cfg;
    rd_err err;
    const char *env[] = {"RECORDD_WORKERS", "7", "RECORDD_SYNC", "normal", NULL};
    const char *argv[] = {"recordd", "--workers", "3", "--sync=full"};
    assert_int_equal(load(&cfg, env, 4, argv, &err), RD_OK);
    assert_int_equal(cfg.workers, 3);
    assert_false(cfg.sync_normal);
}

static void test_config_empty_env_counts_as_unset(void **state)
{
    (void)state;
    svc_config cfg;
    rd_err err;
    const char *env[] = {"RECORDD_WORKERS", "", "RECORDD_DB", "", NULL};
    const char *argv[] = {"recordd"};
    assert_int_equal(load(&cfg, env, 1, argv, &err), RD_OK);
    assert_string_equal(cfg.db, "./var/recordd.db");
    assert_true(cfg.workers >= 2);
}

/* Bad values name the flag or variable they came from. */
static void test_config_rejects_bad_values(void **state)
{
    (void)state;
    static const struct {
        const char *env_name, *env_value, *flag, *flag_value, *field;
    } cases[] = {
        {NULL, NULL, "--workers", "abc", "--workers"},
        {NULL, NULL, "--workers", "0", "--workers"},
        {NULL, NULL, "--workers", "12x", "--workers"},
        {NULL, NULL, "--max-message-bytes", "10", "--max-message-bytes"},
        {NULL, NULL, "--sync", "sometimes", "--sync"},
        {NULL, NULL, "--shutdown-grace", "-1", "--shutdown-grace"},
        {NULL, NULL, "--grpc-listen", "localhost", "--grpc-listen"},
        {NULL, NULL, "--grpc-listen", "localhost:70000", "--grpc-listen"},
        {NULL, NULL, "--grpc-listen", ":50051", "--grpc-listen"},
        {NULL, NULL, "--db", "", "--db"},
        {"RECORDD_WORKERS", "many", NULL, NULL, "RECORDD_WORKERS"},
        {"RECORDD_SYNC", "off", NULL, NULL, "RECORDD_SYNC"},
        {"RECORDD_GRPC_LISTEN", "nope", NULL, NULL, "RECORDD_GRPC_LISTEN"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        svc_config cfg;
        rd_err err;
        const char *env[] = {cases[i].env_name, cases[i].env_value, NULL};
        const char *argv[] = {"recordd", cases[i].flag, cases[i].flag_value};
        int argc = cases[i].flag ? 3 : 1;
        assert_int_equal(load(&cfg, cases[i].env_name ? env : NULL, argc, argv, &err),
                         RD_VALIDATION_FAILED);
        assert_string_equal(err.field, cases[i].field);
        assert_non_null(strstr(err.msg, cases[i].field));
    }
}

static void test_config_log_level_from_env_and_flag(void **state)
{
    (void)state;
    svc_config cfg;
    rd_err err;
    const char *argv0[] = {"recordd"};
    assert_int_equal(load(&cfg, NULL, 1, argv0, &err), RD_OK);
    assert_string_equal(cfg.log_level, "info");
    const char *env[] = {"RECORDD_LOG_LEVEL", "WARN", NULL};
    assert_int_equal(load(&cfg, env, 1, argv0, &err), RD_OK);
    assert_string_equal(cfg.log_level, "WARN");
    const char *argv[] = {"recordd", "--log-level=off"};
    assert_int_equal(load(&cfg, env, 2, argv, &err), RD_OK);
    assert_string_equal(cfg.log_level, "off");
    const char *bad[] = {"recordd", "--log-level", "verbose"};
    assert_int_equal(load(&cfg, NULL, 3, bad, &err), RD_VALIDATION_FAILED);
    assert_string_equal(err.field, "--log-level");
    assert_non_null(strstr(err.msg, "debug, info, warn, error or off"));
    const char *bad_env[] = {"RECORDD_LOG_LEVEL", "trace", NULL};
    assert_int_equal(load(&cfg, bad_env, 1, argv0, &err), RD_VALIDATION_FAILED);
    assert_string_equal(err.field, "RECORDD_LOG_LEVEL");
}

static void test_config_rejects_unknown_flag_and_missing_value(void **state)
{
    (void)state;
    svc_config cfg;
    rd_err err;
    const char *unknown[] = {"recordd", "--port", "1"};
    assert_int_equal(load(&cfg, NULL, 3, unknown, &err), RD_VALIDATION_FAILED);
    assert_non_null(strstr(err.msg, "--port"));
    const char *missing[] = {"recordd", "--db"};
    assert_int_equal(load(&cfg, NULL, 2, missing, &err), RD_VALIDATION_FAILED);
    assert_non_null(strstr(err.msg, "missing value"));
    const char *positional[] = {"recordd", "serve"};
    assert_int_equal(load(&cfg, NULL, 2, positional, &err), RD_VALIDATION_FAILED);
}

static void test_config_help_and_version(void **state)
{
    (void)state;
    svc_config cfg;
    rd_err err;
    const char *argv[] = {"recordd", "--help", "--version"};
    assert_int_equal(load(&cfg, NULL, 3, argv, &err), RD_OK);
    assert_true(cfg.help);
    assert_true(cfg.version);
}

static void test_config_bound_address_replaces_port(void **state)
{
    (void)state;
    char buf[64];
    svc_config_bound_address("127.0.0.1:0", 41234, buf, sizeof buf);
    assert_string_equal(buf, "127.0.0.1:41234");
    svc_config_bound_address("[::]:0", 5, buf, sizeof buf);
    assert_string_equal(buf, "[::]:5");
}

static void test_config_make_db_dir_creates_parents(void **state)
{
    (void)state;
    char tmpl[] = "/tmp/recordd-test-XXXXXX";
    assert_non_null(mkdtemp(tmpl));
    char path[256], dir[256];
    snprintf(path, sizeof path, "%s/a/b/recordd.db", tmpl);
    rd_err err;
    assert_int_equal(svc_config_make_db_dir(path, &err), RD_OK);
    struct stat st;
    snprintf(dir, sizeof dir, "%s/a/b", tmpl);
    assert_int_equal(stat(dir, &st), 0);
    assert_true(S_ISDIR(st.st_mode));
    assert_int_equal(svc_config_make_db_dir(path, &err), RD_OK); /* already there */

    /* a file where a directory should be */
    char file[256];
    snprintf(file, sizeof file, "%s/f", tmpl);
    FILE *f = fopen(file, "w");
    assert_non_null(f);
    fclose(f);
    snprintf(path, sizeof path, "%s/f/recordd.db", tmpl);
    assert_int_equal(svc_config_make_db_dir(path, &err), RD_UNAVAILABLE);
    assert_non_null(strstr(err.msg, "not a directory"));

    unlink(file);
    rmdir(dir);
    snprintf(dir, sizeof dir, "%s/a", tmpl);
    rmdir(dir);
    rmdir(tmpl);
}

static void test_config_http_connection_limits_default_and_flags(void **state)
{
    (void)state;
    svc_config cfg;
    rd_err err;
    const char *argv0[] = {"recordd"};
    assert_int_equal(load(&cfg, NULL, 1, argv0, &err), RD_OK);
    assert_int_equal(cfg.http_max_connections, 1024);
    assert_int_equal(cfg.max_concurrent_streams, 100);
    assert_int_equal(cfg.max_inflight_calls, 4096);
    assert_int_equal(cfg.http_max_connections_per_ip, 128);
    const char *env[] = {"RECORDD_HTTP_MAX_CONNECTIONS_PER_IP", "8", NULL};
    const char *argv1[] = {"recordd", "--http-max-connections=64"};
    assert_int_equal(load(&cfg, env, 2, argv1, &err), RD_OK);
    assert_int_equal(cfg.http_max_connections, 64);
    assert_int_equal(cfg.http_max_connections_per_ip, 8);
    const char *argv2[] = {"recordd", "--http-max-connections-per-ip", "0"};
    assert_int_equal(load(&cfg, NULL, 3, argv2, &err), RD_VALIDATION_FAILED);
    assert_string_equal(err.field, "--http-max-connections-per-ip");
}

static void test_config_max_bulk_ops_default_env_flag_and_cap(void **state)
{
    (void)state;
    svc_config cfg;
    rd_err err;
    const char *argv0[] = {"recordd"};
    assert_int_equal(load(&cfg, NULL, 1, argv0, &err), RD_OK);
    assert_int_equal(cfg.max_bulk_ops, 100);
    const char *env[] = {"RECORDD_MAX_BULK_OPS", "250", NULL};
    assert_int_equal(load(&cfg, env, 1, argv0, &err), RD_OK);
    assert_int_equal(cfg.max_bulk_ops, 250);
    const char *argv1[] = {"recordd", "--max-bulk-ops=1000"};
    assert_int_equal(load(&cfg, env, 2, argv1, &err), RD_OK);
    assert_int_equal(cfg.max_bulk_ops, 1000);
    /* the hard cap: a larger value is a start-up error naming the flag */
    const char *argv2[] = {"recordd", "--max-bulk-ops", "1001"};
    assert_int_equal(load(&cfg, NULL, 3, argv2, &err), RD_VALIDATION_FAILED);
    assert_string_equal(err.field, "--max-bulk-ops");
    assert_non_null(strstr(err.msg, "1000"));
    const char *bad_env[] = {"RECORDD_MAX_BULK_OPS", "0", NULL};
    assert_int_equal(load(&cfg, bad_env, 1, argv0, &err), RD_VALIDATION_FAILED);
    assert_string_equal(err.field, "RECORDD_MAX_BULK_OPS");
}

static void test_config_tls_flags_and_their_consistency(void **state)
{
    (void)state;
    svc_config cfg;
    rd_err err;
    const char *ok[] = {"recordd", "--tls-cert",      "c.pem", "--tls-key",
                        "k.pem",   "--tls-client-ca", "ca.pem"};
    assert_int_equal(load(&cfg, NULL, 7, ok, &err), RD_OK);
    assert_string_equal(cfg.tls_cert, "c.pem");
    assert_string_equal(cfg.tls_client_ca, "ca.pem");
    assert_string_equal(cfg.tls_client_auth, "");
    const char *env[] = {"RECORDD_TLS_CERT",
                         "c.pem",
                         "RECORDD_TLS_KEY",
                         "k.pem",
                         "RECORDD_TLS_CLIENT_AUTH",
                         "none",
                         NULL};
    const char *bare[] = {"recordd"};
    assert_int_equal(load(&cfg, env, 1, bare, &err), RD_OK);
    assert_string_equal(cfg.tls_key, "k.pem");

    const char *no_key[] = {"recordd", "--tls-cert", "c.pem"};
    assert_int_equal(load(&cfg, NULL, 3, no_key, &err), RD_VALIDATION_FAILED);
    assert_string_equal(err.field, "--tls-key");
    const char *ca_only[] = {"recordd", "--tls-client-ca", "ca.pem"};
    assert_int_equal(load(&cfg, NULL, 3, ca_only, &err), RD_VALIDATION_FAILED);
    assert_string_equal(err.field, "--tls-client-ca");
    const char *require_no_ca[] = {"recordd", "--tls-cert",        "c",      "--tls-key",
                                   "k",       "--tls-client-auth", "require"};
    assert_int_equal(load(&cfg, NULL, 7, require_no_ca, &err), RD_VALIDATION_FAILED);
    assert_string_equal(err.field, "--tls-client-auth");
    const char *bad_mode[] = {"recordd", "--tls-client-auth", "maybe"};
    assert_int_equal(load(&cfg, NULL, 3, bad_mode, &err), RD_VALIDATION_FAILED);
    assert_non_null(strstr(err.msg, "none, request or require"));
    const char *help[] = {"recordd", "--tls-cert", "c.pem", "--help"};
    assert_int_equal(load(&cfg, NULL, 4, help, &err), RD_OK);

    const char *plain[] = {"recordd", "--allow-plaintext", "true"};
    assert_int_equal(load(&cfg, NULL, 3, plain, &err), RD_OK);
    assert_true(cfg.allow_plaintext);
    const char *bad_bool[] = {"recordd", "--allow-plaintext", "yes please"};
    assert_int_equal(load(&cfg, NULL, 3, bad_bool, &err), RD_VALIDATION_FAILED);
}

static void test_config_loopback_addresses(void **state)
{
    (void)state;
    assert_true(svc_config_is_loopback("127.0.0.1:50051"));
    assert_true(svc_config_is_loopback("127.1.2.3:0"));
    assert_true(svc_config_is_loopback("[::1]:8080"));
    assert_true(svc_config_is_loopback("localhost:8080"));
    assert_false(svc_config_is_loopback("0.0.0.0:50051"));
    assert_false(svc_config_is_loopback("[::]:50051"));
    assert_false(svc_config_is_loopback("10.0.0.5:8080"));
    assert_false(svc_config_is_loopback("127example.com:80"));
}

static void test_config_cors_origins(void **state)
{
    (void)state;
    svc_config cfg;
    rd_err err;
    const char *bare[] = {"recordd"};
    assert_int_equal(load(&cfg, NULL, 1, bare, &err), RD_OK);
    assert_string_equal(cfg.cors_origins, ""); /* off by default */
    const char *env[] = {"RECORDD_CORS_ORIGINS", "https://app.example.com, http://localhost:5173",
                         NULL};
    assert_int_equal(load(&cfg, env, 1, bare, &err), RD_OK);
    assert_string_equal(cfg.cors_origins, "https://app.example.com, http://localhost:5173");
    const char *off[] = {"recordd", "--cors-origins", ""};
    assert_int_equal(load(&cfg, env, 3, off, &err), RD_OK);
    assert_string_equal(cfg.cors_origins, "");

    static const char *const good[] = {"http://a", "https://a.example.com", "http://127.0.0.1:8000",
                                       "http://[::1]:5173", "https://x-y.z:65535"};
    static const char *const bad[] = {"*",
                                      "null",
                                      "a.example.com",
                                      "HTTPS://a.example.com",
                                      "https://A.example.com",
                                      "https://a.example.com/",
                                      "https://a.example.com/app",
                                      "https://u@a.example.com",
                                      "https://a.example.com:443",
                                      "http://a.example.com:80",
                                      "http://a:0",
                                      "http://a:65536",
                                      "http://a:",
                                      "http://-a",
                                      "http://a.",
                                      "http://[]",
                                      "ftp://a"};
    char why[160];
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
        assert_true(svc_config_origin_ok(good[i], strlen(good[i]), why, sizeof why));
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_false(svc_config_origin_ok(bad[i], strlen(bad[i]), why, sizeof why));

    const char *wild[] = {"recordd", "--cors-origins", "http://a,*"};
    assert_int_equal(load(&cfg, NULL, 3, wild, &err), RD_VALIDATION_FAILED);
    assert_string_equal(err.field, "--cors-origins");
    assert_non_null(strstr(err.msg, "'*'"));
    const char *empty_entry[] = {"recordd", "--cors-origins", "http://a,,http://b"};
    assert_int_equal(load(&cfg, NULL, 3, empty_entry, &err), RD_VALIDATION_FAILED);
    const char *path[] = {"recordd", "--cors-origins=http://a/x"};
    assert_int_equal(load(&cfg, NULL, 2, path, &err), RD_VALIDATION_FAILED);
    assert_non_null(strstr(err.msg, "'http://a/x'"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config_defaults_run_out_of_the_box),
        cmocka_unit_test(test_config_env_overrides_default),
        cmocka_unit_test(test_config_flag_wins_over_env),
        cmocka_unit_test(test_config_empty_env_counts_as_unset),
        cmocka_unit_test(test_config_rejects_bad_values),
        cmocka_unit_test(test_config_rejects_unknown_flag_and_missing_value),
        cmocka_unit_test(test_config_log_level_from_env_and_flag),
        cmocka_unit_test(test_config_help_and_version),
        cmocka_unit_test(test_config_bound_address_replaces_port),
        cmocka_unit_test(test_config_make_db_dir_creates_parents),
        cmocka_unit_test(test_config_max_bulk_ops_default_env_flag_and_cap),
        cmocka_unit_test(test_config_http_connection_limits_default_and_flags),
        cmocka_unit_test(test_config_tls_flags_and_their_consistency),
        cmocka_unit_test(test_config_loopback_addresses),
        cmocka_unit_test(test_config_cors_origins),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
