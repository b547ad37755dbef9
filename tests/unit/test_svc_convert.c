/* Unit tests for service/svc_convert.c: Struct <-> JSON, the UTF-8 walk and
 * the nesting pre-scan that guards protobuf-c's recursive unpacker. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "recordd/v1/records.pb-c.h"
#include "service/svc_convert.h"

static Google__Protobuf__Struct *build_struct(rd_arena *a, const json_t *obj);

/* A Value of any depth (svc_json_to_struct, the decoder the server uses,
 * refuses nesting past GW_JSON_MAX_DEPTH; these tests need deeper ones). */
static Google__Protobuf__Value *build_value(rd_arena *a, const json_t *j)
{
    Google__Protobuf__Value *v = rd_arena_alloc(a, sizeof *v);
    assert_non_null(v);
    google__protobuf__value__init(v);
    if (json_is_object(j)) {
        v->kind_case = GOOGLE__PROTOBUF__VALUE__KIND_STRUCT_VALUE;
        v->struct_value = build_struct(a, j);
    } else if (json_is_array(j)) {
        Google__Protobuf__ListValue *l = rd_arena_alloc(a, sizeof *l);
        assert_non_null(l);
        google__protobuf__list_value__init(l);
        l->n_values = json_array_size(j);
        l->values = rd_arena_alloc(a, (l->n_values + 1) * sizeof *l->values);
        for (size_t i = 0; i < l->n_values; i++)
            l->values[i] = build_value(a, json_array_get(j, i));
        v->kind_case = GOOGLE__PROTOBUF__VALUE__KIND_LIST_VALUE;
        v->list_value = l;
    } else {
        v = svc_json_to_value(a, j); /* a scalar: the converter under test */
        assert_non_null(v);
    }
    return v;
}

static Google__Protobuf__Struct *build_struct(rd_arena *a, const json_t *obj)
{
    Google__Protobuf__Struct *s = rd_arena_alloc(a, sizeof *s);
    assert_non_null(s);
    google__protobuf__struct__init(s);
    s->fields = rd_arena_alloc(a, (json_object_size(obj) + 1) * sizeof *s->fields);
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)obj, k, v)
    {
        Google__Protobuf__Struct__FieldsEntry *e = rd_arena_alloc(a, sizeof *e);
        google__protobuf__struct__fields_entry__init(e);
        e->key = rd_arena_strdup(a, k);
        e->value = build_value(a, v);
        s->fields[s->n_fields++] = e;
    }
    return s;
}

/* Builds a Struct from JSON text: through the converter under test when it
 * is shallow enough for it, else by hand. */
static Google__Protobuf__Struct *struct_of(rd_arena *a, const char *text)
{
    json_t *j = json_loads(text, JSON_DECODE_ANY, NULL);
    assert_non_null(j);
    Google__Protobuf__Struct *s = svc_json_to_struct(a, j);
    if (s == NULL)
        s = build_struct(a, j);
    json_decref(j);
    assert_non_null(s);
    return s;
}

static void test_struct_round_trips_every_value_kind(void **state)
{
    (void)state;
    rd_arena *a = rd_arena_new(1 << 20);
    const char *text = "{\"s\":\"x\",\"i\":42,\"r\":1.5,\"t\":true,\"f\":false,\"n\":null,"
                       "\"o\":{\"k\":[1,\"two\",{\"three\":3}]},\"e\":[]}";
    json_t *out = NULL;
    rd_err err;
    assert_int_equal(svc_struct_to_json(struct_of(a, text), &out, &err), RD_OK);
    json_t *want = json_loads(text, 0, NULL);
    assert_true(json_equal(out, want));
    json_decref(want);
    json_decref(out);
    rd_arena_free(a);
}

static void test_integral_numbers_become_integers(void **state)
{
    (void)state;
    rd_arena *a = rd_arena_new(1 << 20);
    json_t *out = NULL;
    rd_err err;
    assert_int_equal(svc_struct_to_json(struct_of(a, "{\"a\":3.0,\"b\":2.5}"), &out, &err), RD_OK);
    assert_true(json_is_integer(json_object_get(out, "a")));
    assert_true(json_is_real(json_object_get(out, "b")));
    json_decref(out);
    rd_arena_free(a);
}

static void test_null_struct_is_empty_object(void **state)
{
    (void)state;
    json_t *out = NULL;
    rd_err err;
    assert_int_equal(svc_struct_to_json(NULL, &out, &err), RD_OK);
    assert_int_equal(json_object_size(out), 0);
    json_decref(out);
}

static void test_non_finite_number_names_field(void **state)
{
    (void)state;
    rd_arena *a = rd_arena_new(1 << 20);
    Google__Protobuf__Struct *s = struct_of(a, "{\"age\":1}");
    s->fields[0]->value->number_value = 1.0 / 0.0;
    json_t *out = NULL;
    rd_err err;
    assert_int_equal(svc_struct_to_json(s, &out, &err), RD_VALIDATION_FAILED);
    assert_string_equal(err.field, "age");
    rd_arena_free(a);
}

/* {"profile": {"a": {"a": ... }}} nested `levels` objects deep. */
static char *nested_json(int levels)
{
    char *buf = malloc((size_t)levels * 6 + 32);
    size_t n = (size_t)sprintf(buf, "{\"profile\":");
    for (int i = 0; i < levels; i++)
        n += (size_t)sprintf(buf + n, "{\"a\":");
    n += (size_t)sprintf(buf + n, "1");
    for (int i = 0; i < levels; i++)
        buf[n++] = '}';
    strcpy(buf + n, "}");
    return buf;
}

static void test_deep_nesting_names_the_field(void **state)
{
    (void)state;
    rd_arena *a = rd_arena_new(1 << 22);
    char *text = nested_json(100);
    json_t *out = NULL;
    rd_err err;
    assert_int_equal(svc_struct_to_json(struct_of(a, text), &out, &err), RD_VALIDATION_FAILED);
    assert_string_equal(err.field, "profile");
    assert_non_null(strstr(err.msg, "deeper"));
    free(text);
    rd_arena_free(a);
}

static void test_nesting_at_the_limit_is_accepted(void **state)
{
    (void)state;
    rd_arena *a = rd_arena_new(1 << 22);
    char *text = nested_json(STORE_MAX_DEPTH - 1);
    json_t *out = NULL;
    rd_err err;
    assert_int_equal(svc_struct_to_json(struct_of(a, text), &out, &err), RD_OK);
    json_decref(out);
    free(text);
    rd_arena_free(a);
}

/* Packs a CreateRecordRequest for model "students" with data
 * {"firstName": "ABCD"}, then overwrites the first occurrence of `find` in
 * the wire bytes with `repl` (same length). */
static uint8_t *pack_patched(rd_arena *a, const char *find, const char *repl, size_t *len)
{
    Recordd__V1__CreateRecordRequest req = RECORDD__V1__CREATE_RECORD_REQUEST__INIT;
    req.model = "students";
    req.data = struct_of(a, "{\"firstName\":\"ABCD\"}");
    *len = recordd__v1__create_record_request__get_packed_size(&req);
    uint8_t *buf = rd_arena_alloc(a, *len);
    recordd__v1__create_record_request__pack(&req, buf);
    uint8_t *at = memmem(buf, *len, find, strlen(find));
    assert_non_null(at);
    memcpy(at, repl, strlen(find));
    return buf;
}

static rd_code precheck(const uint8_t *buf, size_t len, rd_err *err)
{
    return svc_pb_precheck(&recordd__v1__create_record_request__descriptor, buf, len, err);
}

static void test_precheck_accepts_clean_strings(void **state)
{
    (void)state;
    rd_arena *a = rd_arena_new(1 << 20);
    size_t len;
    uint8_t *buf = pack_patched(a, "ABCD", "ABCD", &len);
    rd_err err;
    assert_int_equal(precheck(buf, len, &err), RD_OK);
    rd_arena_free(a);
}

static void test_precheck_rejects_invalid_utf8_in_nested_value_with_path(void **state)
{
    (void)state;
    rd_arena *a = rd_arena_new(1 << 20);
    size_t len;
    uint8_t *buf = pack_patched(a, "ABCD", "AB\xff\xfe", &len);
    rd_err err;
    assert_int_equal(precheck(buf, len, &err), RD_INVALID_BODY);
    assert_string_equal(err.field, "data.fields.value.string_value");
    rd_arena_free(a);
}

static void test_precheck_rejects_nul_that_protobuf_c_would_truncate(void **state)
{
    (void)state;
    rd_arena *a = rd_arena_new(1 << 20);
    size_t len;
    uint8_t *buf = pack_patched(a, "ABCD", "AB\0D", &len);
    rd_err err;
    assert_int_equal(precheck(buf, len, &err), RD_INVALID_BODY);
    assert_non_null(strstr(err.msg, "NUL"));
    rd_arena_free(a);
}

static void test_precheck_rejects_nul_in_map_key(void **state)
{
    (void)state;
    rd_arena *a = rd_arena_new(1 << 20);
    size_t len;
    uint8_t *buf = pack_patched(a, "firstName", "first\0ame", &len);
    rd_err err;
    assert_int_equal(precheck(buf, len, &err), RD_INVALID_BODY);
    assert_string_equal(err.field, "data.fields.key");
    rd_arena_free(a);
}

static void test_precheck_rejects_bad_top_level_string(void **state)
{
    (void)state;
    rd_arena *a = rd_arena_new(1 << 20);
    size_t len;
    uint8_t *buf = pack_patched(a, "students", "stud\xc3nts", &len);
    rd_err err;
    assert_int_equal(precheck(buf, len, &err), RD_INVALID_BODY);
    assert_string_equal(err.field, "model");
    rd_arena_free(a);
}

/* Packs a CreateRecordRequest whose data nests `levels` JSON levels. */
static uint8_t *pack_nested(rd_arena *a, int levels, size_t *len)
{
    char *text = nested_json(levels);
    Recordd__V1__CreateRecordRequest req = RECORDD__V1__CREATE_RECORD_REQUEST__INIT;
    req.model = "m";
    req.data = struct_of(a, text);
    free(text);
    *len = recordd__v1__create_record_request__get_packed_size(&req);
    uint8_t *buf = rd_arena_alloc(a, *len);
    recordd__v1__create_record_request__pack(&req, buf);
    return buf;
}

static void test_precheck_accepts_ordinary_requests(void **state)
{
    (void)state;
    rd_arena *a = rd_arena_new(1 << 24);
    size_t len;
    uint8_t *buf = pack_nested(a, 100, &len);
    rd_err err;
    assert_int_equal(precheck(buf, len, &err), RD_OK);
    rd_arena_free(a);
}

static void test_precheck_rejects_pathological_nesting(void **state)
{
    (void)state;
    rd_arena *a = rd_arena_new(1 << 26);
    size_t len;
    uint8_t *buf = pack_nested(a, 1000, &len);
    rd_err err;
    assert_int_equal(precheck(buf, len, &err), RD_INVALID_BODY);
    rd_arena_free(a);
}

static void test_precheck_leaves_garbage_to_the_unpacker(void **state)
{
    (void)state;
    const uint8_t junk[] = {0xff, 0xff, 0xff, 0x0a, 0x7f, 0x01};
    rd_err err;
    assert_int_equal(precheck(junk, sizeof junk, &err), RD_OK);
}

static void test_record_to_pb_carries_system_fields(void **state)
{
    (void)state;
    rd_arena *a = rd_arena_new(1 << 20);
    store_record rec = {0};
    strcpy(rec.id, "s1");
    strcpy(rec.group, "default");
    strcpy(rec.created_by, "dev");
    strcpy(rec.updated_by, "dev");
    rec.version = 3;
    rec.sync_id = 17;
    rec.created_at_us = 1500000;
    rec.updated_at_us = 2000000;
    rec.data = json_pack("{s:s}", "firstName", "Ada");
    Recordd__V1__Record *r = svc_record_to_pb(a, "org1", "students", &rec, 20);
    assert_non_null(r);
    assert_string_equal(r->model, "students");
    assert_string_equal(r->organization_id, "org1");
    assert_int_equal(r->version, 3);
    assert_int_equal(r->sync_id, 17);
    assert_int_equal(r->read_at, 20);
    assert_int_equal(r->created_at->seconds, 1);
    assert_int_equal(r->created_at->nanos, 500000000);
    assert_int_equal(r->data->n_fields, 1);
    assert_string_equal(r->data->fields[0]->value->string_value, "Ada");
    json_decref(rec.data);
    rd_arena_free(a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_struct_round_trips_every_value_kind),
        cmocka_unit_test(test_integral_numbers_become_integers),
        cmocka_unit_test(test_null_struct_is_empty_object),
        cmocka_unit_test(test_non_finite_number_names_field),
        cmocka_unit_test(test_deep_nesting_names_the_field),
        cmocka_unit_test(test_nesting_at_the_limit_is_accepted),
        cmocka_unit_test(test_precheck_accepts_clean_strings),
        cmocka_unit_test(test_precheck_rejects_invalid_utf8_in_nested_value_with_path),
        cmocka_unit_test(test_precheck_rejects_nul_that_protobuf_c_would_truncate),
        cmocka_unit_test(test_precheck_rejects_nul_in_map_key),
        cmocka_unit_test(test_precheck_rejects_bad_top_level_string),
        cmocka_unit_test(test_precheck_accepts_ordinary_requests),
        cmocka_unit_test(test_precheck_rejects_pathological_nesting),
        cmocka_unit_test(test_precheck_leaves_garbage_to_the_unpacker),
        cmocka_unit_test(test_record_to_pb_carries_system_fields),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
