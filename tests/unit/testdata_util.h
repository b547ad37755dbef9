/* Shared by the unit tests that read table-driven cases from
 * tests/unit/testdata/ (the PASETO vectors and the auth cases). */
#ifndef TESTDATA_UTIL_H
#define TESTDATA_UTIL_H

#include <jansson.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Test data: $AUTH_TESTDATA_DIR, else testdata/ beside this source file
 * (this header's __FILE__ is repo-relative under make), else found by walking up from the
 * test binary (build/tests/ or build/san/tests/) to the repo. */
static inline json_t *load_json(const char *rel)
{
    char path[4096];
    json_error_t e;
    const char *dir = getenv("AUTH_TESTDATA_DIR");
    if (dir != NULL) {
        snprintf(path, sizeof path, "%s/%s", dir, rel);
    } else {
        const char *src = __FILE__;
        const char *slash = strrchr(src, '/');
        int n = slash ? (int)(slash - src) + 1 : 0;
        snprintf(path, sizeof path, "%.*stestdata/%s", n, src, rel);
        char exe[2048];
        ssize_t len = readlink("/proc/self/exe", exe, sizeof exe - 1);
        for (int up = 0; access(path, R_OK) != 0 && len > 0 && up < 6; up++) {
            exe[len] = '\0';
            char *cut = strrchr(exe, '/');
            if (cut == NULL)
                break;
            *cut = '\0';
            len = cut - exe;
            snprintf(path, sizeof path, "%s/tests/unit/testdata/%s", exe, rel);
        }
    }
    json_t *j = json_load_file(path, 0, &e);
    if (j == NULL)
        fail_msg("cannot load %s: %s", path, e.text);
    return j;
}

static inline const char *str_of(json_t *o, const char *k)
{
    return json_string_value(json_object_get(o, k));
}

static inline size_t hex_to_bin(const char *hex, unsigned char *out, size_t cap)
{
    size_t n = 0;
    assert_non_null(hex);
    assert_int_equal(sodium_hex2bin(out, cap, hex, strlen(hex), NULL, &n, NULL), 0);
    return n;
}

#endif
