/* Unit tests for database targets (store/db.c): which driver a target
 * names, and that a password never leaves the process in what it prints
 * (redaction) or in its arguments as ps shows them (scrubbing). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "store/db.h"
#include "store/store.h"

static void test_target_file_names_sqlite_targets_only(void **state)
{
    (void)state;
    assert_string_equal(store_target_file("./var/recordd.db"), "./var/recordd.db");
    assert_string_equal(store_target_file("sqlite:/tmp/x.db"), "/tmp/x.db");
    assert_null(store_target_file("postgres://u@h/db"));
    assert_null(store_target_file("postgresql://u@h1:5432,h2:5433/db"));
    assert_null(store_target_file("POSTGRESQL://u@h/db"));
    assert_true(store_db_is_postgres("postgresql://h/db"));
    assert_false(store_db_is_postgres("postgres:/h"));
}

static void redacts(const char *in, const char *want)
{
    char out[256];
    store_target_redact(in, out, sizeof out);
    assert_string_equal(out, want);
}

static void test_redact_hides_every_password(void **state)
{
    (void)state;
    redacts("postgresql://rd:s3cret@db.example:5432/rec",
            "postgresql://rd:***@db.example:5432/rec");
    redacts("postgres://rd:p@ss@h/db", "postgres://rd:***@h/db"); /* the last '@' ends it */
    redacts("postgresql://rd@h1,h2/db?password=x&sslmode=require",
            "postgresql://rd@h1,h2/db?password=***&sslmode=require");
    redacts("postgresql://rd:a@h/db?sslmode=require&Password=b",
            "postgresql://rd:***@h/db?sslmode=require&Password=***");
    redacts("postgresql://h/db", "postgresql://h/db");
    redacts("./var/recordd.db", "./var/recordd.db");
    redacts("", "");
}

static void test_redact_truncates_safely(void **state)
{
    (void)state;
    char out[12];
    store_target_redact("postgresql://rd:secret@host/db", out, sizeof out);
    assert_int_equal(strlen(out), sizeof out - 1);
    assert_null(strstr(out, "secret"));
}

static void scrubs(const char *in, const char *want)
{
    char buf[256];
    strcpy(buf, in);
    store_target_scrub(buf);
    assert_string_equal(buf, want);
}

static void test_scrub_overwrites_in_place(void **state)
{
    (void)state;
    scrubs("--db=postgresql://rd:s3cret@h/db", "--db=postgresql://rd:******@h/db");
    scrubs("postgres://rd@h/db?password=abc&x=1", "postgres://rd@h/db?password=***&x=1");
    scrubs("postgres://rd@h/db?password=abc", "postgres://rd@h/db?password=***");
    scrubs("postgres://rd@h/db", "postgres://rd@h/db");
    scrubs("--workers", "--workers");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_target_file_names_sqlite_targets_only),
        cmocka_unit_test(test_redact_hides_every_password),
        cmocka_unit_test(test_redact_truncates_safely),
        cmocka_unit_test(test_scrub_overwrites_in_place),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
