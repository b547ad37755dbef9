/* Unit tests for service/gw_route.c: the routes of DESIGN.md §3 as the real
 * embedded descriptor set declares them, 404 / 405 + Allow, percent-decoding,
 * and templates of every shape from synthetic google.api.http rules. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "google/api/http.pb-c.h"
#include "google/protobuf/descriptor.pb-c.h"
#include "service/gw_route.h"

extern unsigned char rd_descriptor_set[];
extern unsigned int rd_descriptor_set_len;

static rd_arena *arena;
static gw_routes *real;

static int setup(void **state)
{
    (void)state;
    rd_err err;
    arena = rd_arena_new(1 << 20);
    if (gw_routes_build(rd_descriptor_set, rd_descriptor_set_len, &real, &err) != RD_OK) {
        fprintf(stderr, "building the real routes: %s\n", err.msg);
        return -1;
    }
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    gw_routes_free(real);
    rd_arena_free(arena);
    return 0;
}

static bool has_row(const char *path)
{
    for (size_t i = 0; i < svc_n_methods; i++)
        if (strcmp(svc_methods[i].path, path) == 0)
            return true;
    return false;
}

static const char *var(const gw_match *m, const char *field)
{
    for (size_t i = 0; i < m->n_vars; i++)
        if (strcmp(m->vars[i].field, field) == 0)
            return m->vars[i].value;
    return NULL;
}

/* Asserts verb path matches method (full path) with the given vars
 * ("model", "students", "id", "s1", NULL). */
static gw_match expect(const gw_routes *r, const char *verb, const char *path, const char *method,
                       ...)
{
    gw_match m;
    char allow[64];
    gw_route_result res = gw_routes_match(r, verb, path, arena, &m, allow, sizeof allow);
    if (res != GW_ROUTE_OK)
        fail_msg("%s %s: %d (allow %s), want %s", verb, path, (int)res, allow, method);
    assert_string_equal(m.method->path, method);
    /* the match names its row: the same route gw_routes_get numbers */
    const char *row_verb, *row_pattern;
    const svc_method *row_method;
    assert_true(m.index < gw_routes_count(r));
    gw_routes_get(r, m.index, &row_verb, &row_pattern, &row_method);
    assert_ptr_equal(row_method, m.method);
    assert_string_equal(row_pattern, m.pattern);
    assert_string_equal(row_verb, verb);
    va_list ap;
    va_start(ap, method);
    size_t n = 0;
    for (const char *f; (f = va_arg(ap, const char *)) != NULL; n++) {
        const char *want = va_arg(ap, const char *);
        const char *got = var(&m, f);
        if (got == NULL || strcmp(got, want) != 0)
            fail_msg("%s %s: %s = %s, want %s", verb, path, f, got ? got : "(unset)", want);
    }
    va_end(ap);
    assert_int_equal(m.n_vars, n);
    return m;
}

static void expect_status(const gw_routes *r, const char *verb, const char *path,
                          gw_route_result want, const char *want_allow)
{
    gw_match m;
    char allow[64];
    gw_route_result res = gw_routes_match(r, verb, path, arena, &m, allow, sizeof allow);
    if (res != want)
        fail_msg("%s %s: %d, want %d", verb, path, (int)res, (int)want);
    assert_null(m.method);
    if (want_allow != NULL)
        assert_string_equal(allow, want_allow);
}

/* ---- the real descriptor set ---------------------------------------------------- */

static void test_every_design_route_matches(void **state)
{
    (void)state;
    gw_match m;
    m = expect(real, "POST", "/v1/models/students", "/recordd.v1.Records/CreateRecord", "model",
               "students", NULL);
    assert_string_equal(m.body, "data");
    assert_string_equal(m.pattern, "/v1/models/{model}");
    assert_null(m.response_body);
    m = expect(real, "GET", "/v1/models/students/s1", "/recordd.v1.Records/GetRecord", "model",
               "students", "id", "s1", NULL);
    assert_null(m.body);
    assert_string_equal(m.pattern, "/v1/models/{model}/{id}");
    expect(real, "GET", "/v1/models/students", "/recordd.v1.Records/ListRecords", "model",
           "students", NULL);
    m = expect(real, "PATCH", "/v1/models/students/s1", "/recordd.v1.Records/UpdateRecord", "model",
               "students", "id", "s1", NULL);
    assert_string_equal(m.body, "data");
    expect(real, "PUT", "/v1/models/students/s1", "/recordd.v1.Records/ReplaceRecord", "model",
           "students", "id", "s1", NULL);
    expect(real, "DELETE", "/v1/models/students/s1", "/recordd.v1.Records/DeleteRecord", "model",
           "students", "id", "s1", NULL);
    expect(real, "GET", "/v1/changes", "/recordd.v1.Records/WatchChanges", NULL);
    m = expect(real, "PUT", "/v1/schema", "/recordd.v1.Schemas/PushSchema", NULL);
    assert_string_equal(m.body, "*");
    expect(real, "GET", "/v1/schema", "/recordd.v1.Schemas/GetSchema", NULL);
    m = expect(real, "POST", "/v1/models/students/s1:claim", "/recordd.v1.Claims/AcquireClaim",
               "model", "students", "id", "s1", NULL);
    assert_string_equal(m.body, "*");
    assert_string_equal(m.pattern, "/v1/models/{model}/{id}:claim");
    expect(real, "POST", "/v1/models/students/s1:release", "/recordd.v1.Claims/ReleaseClaim",
           "model", "students", "id", "s1", NULL);
    expect(real, "POST", "/v1/tokens", "/recordd.v1.Tokens/MintToken", NULL);
    /* BulkMutate arrives on another branch: test it once its row exists */
    if (has_row("/recordd.v1.Records/BulkMutate"))
        expect(real, "POST", "/v1/commits", "/recordd.v1.Records/BulkMutate", NULL);
}

static void test_every_recordd_method_has_a_route_and_no_other_does(void **state)
{
    (void)state;
    size_t n = gw_routes_count(real);
    assert_true(n >= 12);
    for (size_t i = 0; i < n; i++) {
        const char *verb, *pattern;
        const svc_method *m;
        gw_routes_get(real, i, &verb, &pattern, &m);
        assert_non_null(m);
        assert_true(strncmp(m->path, "/recordd.v1.", 12) == 0);
        assert_true(pattern[0] == '/');
    }
    for (size_t k = 0; k < svc_n_methods; k++) {
        if (strncmp(svc_methods[k].path, "/recordd.v1.", 12) != 0)
            continue;
        bool found = false;
        for (size_t i = 0; i < n && !found; i++) {
            const char *verb, *pattern;
            const svc_method *m;
            gw_routes_get(real, i, &verb, &pattern, &m);
            found = m == &svc_methods[k];
        }
        if (!found)
            fail_msg("%s has no HTTP route", svc_methods[k].path);
    }
}

static void test_unknown_paths_are_404_wrong_verbs_405_with_allow(void **state)
{
    (void)state;
    expect_status(real, "GET", "/v1/nothing", GW_ROUTE_NOT_FOUND, "");
    expect_status(real, "GET", "/", GW_ROUTE_NOT_FOUND, "");
    expect_status(real, "GET", "", GW_ROUTE_NOT_FOUND, "");
    expect_status(real, "GET", "v1/schema", GW_ROUTE_NOT_FOUND, "");
    expect_status(real, "GET", "/v1/models/", GW_ROUTE_NOT_FOUND, "");
    expect_status(real, "GET", "/v1/models//s1", GW_ROUTE_NOT_FOUND, "");
    expect_status(real, "GET", "/v1/models/m/s1/extra", GW_ROUTE_NOT_FOUND, "");
    expect_status(real, "GET", "/v1/schema/", GW_ROUTE_NOT_FOUND, "");
    expect_status(real, "POST", "/v1/models/m/s1:explode", GW_ROUTE_NOT_FOUND, "");
    expect_status(real, "POST", "/v1/models/m/s1:", GW_ROUTE_NOT_FOUND, "");
    expect_status(real, "DELETE", "/v1/schema", GW_ROUTE_METHOD_NOT_ALLOWED, "PUT, GET");
    expect_status(real, "PATCH", "/v1/models/m", GW_ROUTE_METHOD_NOT_ALLOWED, "POST, GET");
    expect_status(real, "POST", "/v1/models/m/s1", GW_ROUTE_METHOD_NOT_ALLOWED,
                  "GET, PATCH, PUT, DELETE");
    expect_status(real, "GET", "/v1/models/m/s1:claim", GW_ROUTE_METHOD_NOT_ALLOWED, "POST");
    expect_status(real, "get", "/v1/schema", GW_ROUTE_METHOD_NOT_ALLOWED, "PUT, GET");
    /* Allow is truncated to the buffer, still terminated */
    gw_match m;
    char allow[8];
    assert_int_equal(
        gw_routes_match(real, "POST", "/v1/models/m/s1", arena, &m, allow, sizeof allow),
        GW_ROUTE_METHOD_NOT_ALLOWED);
    assert_int_equal(strlen(allow), sizeof allow - 1);
    assert_int_equal(gw_routes_match(real, "POST", "/v1/models/m/s1", arena, &m, NULL, 0),
                     GW_ROUTE_METHOD_NOT_ALLOWED);
}

static void test_variables_are_percent_decoded(void **state)
{
    (void)state;
    expect(real, "GET", "/v1/models/stu%20dents/a%2Fb", "/recordd.v1.Records/GetRecord", "model",
           "stu dents", "id", "a/b", NULL);
    expect(real, "GET", "/v1/models/m/caf%C3%A9", "/recordd.v1.Records/GetRecord", "model", "m",
           "id", "caf\xc3\xa9", NULL);
    /* a ':' in an id travels encoded; raw, it starts the custom verb */
    expect(real, "GET", "/v1/models/m/a%3Ab", "/recordd.v1.Records/GetRecord", "model", "m", "id",
           "a:b", NULL);
    expect(real, "POST", "/v1/models/m/a%3Ab:claim", "/recordd.v1.Claims/AcquireClaim", "model",
           "m", "id", "a:b", NULL);
    /* the literal segments are compared as sent */
    expect_status(real, "GET", "/v1/models/m/%00", GW_ROUTE_NOT_FOUND, "");
    expect_status(real, "GET", "/v1/models/m/a%00b", GW_ROUTE_NOT_FOUND, "");
    expect_status(real, "GET", "/v1/models/m/%FF", GW_ROUTE_NOT_FOUND, "");
    expect_status(real, "GET", "/v1/models/m/%C0%AF", GW_ROUTE_NOT_FOUND, "");
    expect_status(real, "GET", "/v1/models/m/%zz", GW_ROUTE_NOT_FOUND, "");
    expect_status(real, "GET", "/v1/models/m/%2", GW_ROUTE_NOT_FOUND, "");
    expect_status(real, "GET", "/v1/models/m/ab%", GW_ROUTE_NOT_FOUND, "");
}

/* ---- synthetic rules -------------------------------------------------------------- */

typedef struct rule_spec {
    const char *method; /* "GetRecord" (service recordd.v1.Records) */
    Google__Api__HttpRule *rule;
} rule_spec;

static Google__Api__HttpRule *rule_of(Google__Api__HttpRule__PatternCase kind, const char *tmpl,
                                      const char *body)
{
    Google__Api__HttpRule *r = rd_arena_alloc(arena, sizeof *r);
    google__api__http_rule__init(r);
    r->pattern_case = kind;
    switch (kind) {
    case GOOGLE__API__HTTP_RULE__PATTERN_GET:
        r->get = (char *)tmpl;
        break;
    case GOOGLE__API__HTTP_RULE__PATTERN_POST:
        r->post = (char *)tmpl;
        break;
    case GOOGLE__API__HTTP_RULE__PATTERN_PUT:
        r->put = (char *)tmpl;
        break;
    case GOOGLE__API__HTTP_RULE__PATTERN_PATCH:
        r->patch = (char *)tmpl;
        break;
    case GOOGLE__API__HTTP_RULE__PATTERN_DELETE:
        r->delete_ = (char *)tmpl;
        break;
    default:
        break;
    }
    if (body != NULL)
        r->body = (char *)body;
    return r;
}

static Google__Api__HttpRule *custom_rule(const char *kind, const char *tmpl)
{
    Google__Api__HttpRule *r = rule_of(GOOGLE__API__HTTP_RULE__PATTERN__NOT_SET, NULL, NULL);
    Google__Api__CustomHttpPattern *c = rd_arena_alloc(arena, sizeof *c);
    google__api__custom_http_pattern__init(c);
    c->kind = (char *)kind;
    c->path = (char *)tmpl;
    r->pattern_case = GOOGLE__API__HTTP_RULE__PATTERN_CUSTOM;
    r->custom = c;
    return r;
}

static void add_binding(Google__Api__HttpRule *r, Google__Api__HttpRule *b)
{
    Google__Api__HttpRule **nb = rd_arena_alloc(arena, (r->n_additional_bindings + 1) * sizeof *nb);
    if (r->n_additional_bindings)
        memcpy(nb, r->additional_bindings, r->n_additional_bindings * sizeof *nb);
    nb[r->n_additional_bindings++] = b;
    r->additional_bindings = nb;
}

/* Builds the routes of a FileDescriptorSet with one file (package
 * recordd.v1, service svc) whose methods carry the given rules in their
 * MethodOptions, the way protoc serializes the extension. */
static rd_code build(const char *svc, const rule_spec *specs, size_t n, gw_routes **out,
                     rd_err *err)
{
    Google__Protobuf__MethodDescriptorProto **methods = rd_arena_alloc(arena, n * sizeof *methods);
    for (size_t i = 0; i < n; i++) {
        Google__Protobuf__MethodDescriptorProto *md = rd_arena_alloc(arena, sizeof *md);
        google__protobuf__method_descriptor_proto__init(md);
        md->name = (char *)specs[i].method;
        md->input_type = ".recordd.v1.X";
        md->output_type = ".recordd.v1.X";
        if (specs[i].rule != NULL) {
            size_t len = google__api__http_rule__get_packed_size(specs[i].rule);
            uint8_t *data = rd_arena_alloc(arena, len + 10);
            size_t k = 0;
            for (size_t v = len; k == 0 || v > 0; v >>= 7)
                data[k++] = (uint8_t)((v & 0x7f) | (v >= 0x80 ? 0x80 : 0));
            google__api__http_rule__pack(specs[i].rule, data + k);
            ProtobufCMessageUnknownField *u = rd_arena_alloc(arena, sizeof *u);
            u->tag = 72295728;
            u->wire_type = PROTOBUF_C_WIRE_TYPE_LENGTH_PREFIXED;
            u->len = k + len;
            u->data = data;
            Google__Protobuf__MethodOptions *o = rd_arena_alloc(arena, sizeof *o);
            google__protobuf__method_options__init(o);
            o->base.n_unknown_fields = 1;
            o->base.unknown_fields = u;
            md->options = o;
        }
        methods[i] = md;
    }
    Google__Protobuf__ServiceDescriptorProto sd = GOOGLE__PROTOBUF__SERVICE_DESCRIPTOR_PROTO__INIT;
    sd.name = (char *)svc;
    sd.n_method = n;
    sd.method = methods;
    Google__Protobuf__ServiceDescriptorProto *sds[] = {&sd};
    Google__Protobuf__FileDescriptorProto fd = GOOGLE__PROTOBUF__FILE_DESCRIPTOR_PROTO__INIT;
    fd.name = "synthetic.proto";
    fd.package = "recordd.v1";
    fd.n_service = 1;
    fd.service = sds;
    Google__Protobuf__FileDescriptorProto *fds[] = {&fd};
    Google__Protobuf__FileDescriptorSet set = GOOGLE__PROTOBUF__FILE_DESCRIPTOR_SET__INIT;
    set.n_file = 1;
    set.file = fds;
    size_t len = google__protobuf__file_descriptor_set__get_packed_size(&set);
    uint8_t *buf = malloc(len);
    google__protobuf__file_descriptor_set__pack(&set, buf);
    rd_code rc = gw_routes_build(buf, len, out, err);
    free(buf);
    return rc;
}

static void test_templates_with_patterns_wildcards_and_verbs(void **state)
{
    (void)state;
    Google__Api__HttpRule *get =
        rule_of(GOOGLE__API__HTTP_RULE__PATTERN_GET, "/x/{model=projects/*}/records/{id}", NULL);
    add_binding(get, rule_of(GOOGLE__API__HTTP_RULE__PATTERN_GET, "/y/{id=**}", NULL));
    add_binding(get, custom_rule("OPTIONS", "/z/*/{model}:do"));
    add_binding(get, rule_of(GOOGLE__API__HTTP_RULE__PATTERN_GET, "/w/**", NULL));
    Google__Api__HttpRule *upd =
        rule_of(GOOGLE__API__HTTP_RULE__PATTERN_PATCH, "/x/{model=projects/*}/records/{id}", "*");
    upd->response_body = "record";
    rule_spec specs[] = {{"GetRecord", get}, {"UpdateRecord", upd}};
    gw_routes *r;
    rd_err err;
    assert_int_equal(build("Records", specs, 2, &r, &err), RD_OK);
    assert_int_equal(gw_routes_count(r), 5);

    expect(r, "GET", "/x/projects/p1/records/r1", "/recordd.v1.Records/GetRecord", "model",
           "projects/p1", "id", "r1", NULL);
    gw_match m =
        expect(r, "PATCH", "/x/projects/p%2F1/records/r1", "/recordd.v1.Records/UpdateRecord",
               "model", "projects/p%2F1", "id", "r1", NULL);
    assert_string_equal(m.body, "*");
    assert_string_equal(m.response_body, "record");
    expect_status(r, "GET", "/x/other/p1/records/r1", GW_ROUTE_NOT_FOUND, "");
    expect_status(r, "DELETE", "/x/projects/p1/records/r1", GW_ROUTE_METHOD_NOT_ALLOWED,
                  "GET, PATCH");
    /* "**": any number of segments, '/' kept, %2F left encoded */
    expect(r, "GET", "/y/a/b%2Fc/d%20e", "/recordd.v1.Records/GetRecord", "id", "a/b%2Fc/d e",
           NULL);
    expect(r, "GET", "/y/one", "/recordd.v1.Records/GetRecord", "id", "one", NULL);
    expect(r, "GET", "/w/a/b/c", "/recordd.v1.Records/GetRecord", NULL);
    /* custom kind and custom verb */
    expect(r, "OPTIONS", "/z/anything/m1:do", "/recordd.v1.Records/GetRecord", "model", "m1", NULL);
    expect_status(r, "GET", "/z/anything/m1:do", GW_ROUTE_METHOD_NOT_ALLOWED, "OPTIONS");
    expect_status(r, "OPTIONS", "/z/anything/m1", GW_ROUTE_NOT_FOUND, "");
    expect_status(r, "OPTIONS", "/z/anything/m1:undo", GW_ROUTE_NOT_FOUND, "");
    gw_routes_free(r);
}

static void test_more_literal_template_wins_in_any_order(void **state)
{
    (void)state;
    for (int order = 0; order < 2; order++) {
        Google__Api__HttpRule *general =
            rule_of(GOOGLE__API__HTTP_RULE__PATTERN_GET, "/v9/{model}/{id}", NULL);
        Google__Api__HttpRule *literal =
            rule_of(GOOGLE__API__HTTP_RULE__PATTERN_GET, "/v9/special/{model}", NULL);
        Google__Api__HttpRule *rest = rule_of(GOOGLE__API__HTTP_RULE__PATTERN_GET, "/v9/**", NULL);
        rule_spec specs[3] = {
            {"GetRecord", general}, {"ListRecords", literal}, {"DeleteRecord", rest}};
        if (order == 1) {
            rule_spec t = specs[0];
            specs[0] = specs[2];
            specs[2] = t;
        }
        gw_routes *r;
        rd_err err;
        assert_int_equal(build("Records", specs, 3, &r, &err), RD_OK);
        expect(r, "GET", "/v9/special/m", "/recordd.v1.Records/ListRecords", "model", "m", NULL);
        expect(r, "GET", "/v9/other/m", "/recordd.v1.Records/GetRecord", "model", "other", "id",
               "m", NULL);
        expect(r, "GET", "/v9/a/b/c", "/recordd.v1.Records/DeleteRecord", NULL);
        gw_routes_free(r);
    }
}

static void expect_build_fails(const char *method, Google__Api__HttpRule *rule, const char *svc)
{
    rule_spec spec = {method, rule};
    gw_routes *r = (gw_routes *)1;
    rd_err err;
    rd_code rc = build(svc, &spec, 1, &r, &err);
    if (rc != RD_INTERNAL)
        fail_msg("%s: built (%s)", rule->get ? rule->get : "rule", rd_code_str(rc));
    assert_null(r);
    assert_non_null(strstr(err.msg, method));
}

static void test_bad_rules_fail_the_build_naming_the_method(void **state)
{
    (void)state;
    const char *bad[] = {"v1/no-leading-slash",
                         "/a/{unclosed",
                         "/a/{model}}",
                         "/a/**/b",
                         "/a/{model=**}/b",
                         "/a/{model=a/{id}}",
                         "/a/{nosuchfield}",
                         "/a/{model.sub}",
                         "/a//b",
                         "/a/{}",
                         "/a/b:",
                         "/a/{model}:v/x",
                         "",
                         "/a/{model=}"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        expect_build_fails("GetRecord", rule_of(GOOGLE__API__HTTP_RULE__PATTERN_GET, bad[i], NULL),
                           "Records");
    /* a body that is not a message field */
    expect_build_fails("UpdateRecord",
                       rule_of(GOOGLE__API__HTTP_RULE__PATTERN_PATCH, "/a/{model}", "model"),
                       "Records");
    expect_build_fails("UpdateRecord",
                       rule_of(GOOGLE__API__HTTP_RULE__PATTERN_PATCH, "/a/{model}", "nope"),
                       "Records");
    /* a rule without a pattern */
    expect_build_fails("GetRecord", rule_of(GOOGLE__API__HTTP_RULE__PATTERN__NOT_SET, NULL, NULL),
                       "Records");
    /* nested additional bindings */
    Google__Api__HttpRule *outer = rule_of(GOOGLE__API__HTTP_RULE__PATTERN_GET, "/a/{model}", NULL);
    Google__Api__HttpRule *inner = rule_of(GOOGLE__API__HTTP_RULE__PATTERN_GET, "/b/{model}", NULL);
    add_binding(inner, rule_of(GOOGLE__API__HTTP_RULE__PATTERN_GET, "/c/{model}", NULL));
    add_binding(outer, inner);
    expect_build_fails("GetRecord", outer, "Records");
    /* an annotated method the server does not implement */
    expect_build_fails("NoSuchMethod", rule_of(GOOGLE__API__HTTP_RULE__PATTERN_GET, "/a", NULL),
                       "Records");
}

static void test_methods_without_rules_get_no_route(void **state)
{
    (void)state;
    rule_spec specs[] = {{"GetRecord", NULL},
                         {"NotImplementedEither", NULL},
                         {"ListRecords", rule_of(GOOGLE__API__HTTP_RULE__PATTERN_GET, "/l", NULL)}};
    gw_routes *r;
    rd_err err;
    assert_int_equal(build("Records", specs, 3, &r, &err), RD_OK);
    assert_int_equal(gw_routes_count(r), 1);
    const char *verb, *pattern;
    const svc_method *m;
    gw_routes_get(r, 0, &verb, &pattern, &m);
    assert_string_equal(verb, "GET");
    assert_string_equal(pattern, "/l");
    assert_string_equal(m->path, "/recordd.v1.Records/ListRecords");
    gw_routes_free(r);
}

static void test_malformed_descriptor_set_fails(void **state)
{
    (void)state;
    gw_routes *r = (gw_routes *)1;
    rd_err err;
    assert_int_equal(gw_routes_build("\x0a\xff\xff", 3, &r, &err), RD_INTERNAL);
    assert_null(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_design_route_matches),
        cmocka_unit_test(test_every_recordd_method_has_a_route_and_no_other_does),
        cmocka_unit_test(test_unknown_paths_are_404_wrong_verbs_405_with_allow),
        cmocka_unit_test(test_variables_are_percent_decoded),
        cmocka_unit_test(test_templates_with_patterns_wildcards_and_verbs),
        cmocka_unit_test(test_more_literal_template_wins_in_any_order),
        cmocka_unit_test(test_bad_rules_fail_the_build_naming_the_method),
        cmocka_unit_test(test_methods_without_rules_get_no_route),
        cmocka_unit_test(test_malformed_descriptor_set_fails),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
