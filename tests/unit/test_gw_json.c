/* Unit tests for service/gw_json.c: the proto3 JSON mapping. Round trips
 * over every field kind and well-known type (tests/unit/gwtest.proto), the
 * recordd.v1 request shapes of DESIGN.md §3, the error cases a client can
 * provoke, and the escaping of the output text. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "google/protobuf/any.pb-c.h"
#include "google/rpc/error_details.pb-c.h"
#include "google/rpc/status.pb-c.h"
#include "gwtest.pb-c.h"
#include "recordd/v1/claims.pb-c.h"
#include "recordd/v1/records.pb-c.h"
#include "recordd/v1/schema.pb-c.h"
#include "service/gw_json.h"

static rd_arena *arena;

static int setup(void **state)
{
    (void)state;
    arena = rd_arena_new(8 << 20);
    return arena ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    rd_arena_free(arena);
    return 0;
}

/* Parses and decodes text as d; asserts the outcome is want. */
static ProtobufCMessage *decode(const ProtobufCMessageDescriptor *d, const char *text, rd_code want,
                                rd_err *err)
{
    json_t *j = NULL;
    ProtobufCMessage *m = NULL;
    rd_code rc = gw_json_parse(text, strlen(text), &j, err);
    if (rc == RD_OK) {
        rc = gw_json_decode(d, j, arena, &m, err);
        json_decref(j);
    }
    if (rc != want)
        fail_msg("decoding %s: got %s (%s: %s), want %s", text, rd_code_str(rc), err->field,
                 err->msg, rd_code_str(want));
    return m;
}

static void assert_json_text(const char *got, const char *want)
{
    json_t *g = json_loads(got, 0, NULL), *w = json_loads(want, 0, NULL);
    assert_non_null(w);
    if (g == NULL || !json_equal(g, w))
        fail_msg("got  %s\nwant %s", got, want);
    json_decref(g);
    json_decref(w);
}

/* Decodes text as d, encodes it back and compares with want (NULL: text). */
static void round_trip(const ProtobufCMessageDescriptor *d, const char *text, const char *want)
{
    rd_err err;
    ProtobufCMessage *m = decode(d, text, RD_OK, &err);
    size_t len = 0;
    char *out = gw_json_encode_text(m, &len);
    assert_non_null(out);
    assert_int_equal(strlen(out), len);
    assert_json_text(out, want ? want : text);
    /* and the output decodes to the same output again */
    ProtobufCMessage *m2 = decode(d, out, RD_OK, &err);
    char *out2 = gw_json_encode_text(m2, NULL);
    assert_string_equal(out, out2);
    free(out);
    free(out2);
}

/* Asserts that decoding text as d fails with code naming field. */
static void rejects(const ProtobufCMessageDescriptor *d, const char *text, rd_code code,
                    const char *field)
{
    rd_err err;
    decode(d, text, code, &err);
    assert_string_equal(err.field, field);
    assert_true(err.msg[0] != '\0');
}

/* ---- round trips ---------------------------------------------------------------- */

static void test_every_scalar_kind_round_trips(void **state)
{
    (void)state;
    round_trip(&gwtest__all__descriptor,
               "{\"fInt32\":-2147483648,\"fSint32\":-5,\"fSfixed32\":2147483647,"
               "\"fInt64\":\"-9223372036854775808\",\"fSint64\":\"-1\","
               "\"fSfixed64\":\"9223372036854775807\",\"fUint32\":4294967295,"
               "\"fFixed32\":7,\"fUint64\":\"18446744073709551615\",\"fFixed64\":\"1\","
               "\"fFloat\":1.1,\"fDouble\":0.1,\"fBool\":true,\"fString\":\"h\\u00e9llo\","
               "\"fBytes\":\"AAEC/w==\",\"fEnum\":\"GREEN\","
               "\"fInner\":{\"name\":\"x\",\"n\":3,\"child\":{\"n\":4}}}",
               NULL);
    rd_err err;
    Gwtest__All *m = (Gwtest__All *)decode(
        &gwtest__all__descriptor,
        "{\"fBytes\":\"AAEC/w==\",\"fFloat\":1.1,\"fUint64\":\"18446744073709551615\"}", RD_OK,
        &err);
    assert_int_equal(m->f_bytes.len, 4);
    assert_memory_equal(m->f_bytes.data, "\x00\x01\x02\xff", 4);
    assert_true(m->f_float == 1.1f);
    assert_true(m->f_uint64 == UINT64_MAX);
}

static void test_defaults_are_omitted(void **state)
{
    (void)state;
    round_trip(&gwtest__all__descriptor,
               "{\"fInt32\":0,\"fString\":\"\",\"fBool\":false,\"fEnum\":\"COLOR_UNSPECIFIED\","
               "\"rInt32\":[]}",
               "{}");
}

static void test_64_bit_integers_are_strings_out_numbers_or_strings_in(void **state)
{
    (void)state;
    round_trip(&gwtest__all__descriptor,
               "{\"fInt64\":123,\"fUint64\":9007199254740993,\"rInt64\":[1,\"2\"]}",
               "{\"fInt64\":\"123\",\"fUint64\":\"9007199254740993\",\"rInt64\":[\"1\",\"2\"]}");
    /* an integral real is an integer; a fraction is not */
    round_trip(&gwtest__all__descriptor, "{\"fInt32\":1e3,\"fInt64\":\"-7\"}",
               "{\"fInt32\":1000,\"fInt64\":\"-7\"}");
    rejects(&gwtest__all__descriptor, "{\"fInt64\":1.5}", RD_INVALID_BODY, "fInt64");
    rejects(&gwtest__all__descriptor, "{\"fInt64\":\"12x\"}", RD_INVALID_BODY, "fInt64");
    rejects(&gwtest__all__descriptor, "{\"fInt64\":\"9223372036854775808\"}", RD_INVALID_BODY,
            "fInt64");
    rejects(&gwtest__all__descriptor, "{\"fUint64\":\"-1\"}", RD_INVALID_BODY, "fUint64");
}

static void test_32_bit_integers_are_range_checked(void **state)
{
    (void)state;
    rejects(&gwtest__all__descriptor, "{\"fInt32\":2147483648}", RD_INVALID_BODY, "fInt32");
    rejects(&gwtest__all__descriptor, "{\"fSint32\":-2147483649}", RD_INVALID_BODY, "fSint32");
    rejects(&gwtest__all__descriptor, "{\"fUint32\":-1}", RD_INVALID_BODY, "fUint32");
    rejects(&gwtest__all__descriptor, "{\"fFixed32\":4294967296}", RD_INVALID_BODY, "fFixed32");
    rejects(&gwtest__all__descriptor, "{\"rInt32\":[1,2,3e10]}", RD_INVALID_BODY, "rInt32[2]");
    round_trip(&gwtest__all__descriptor, "{\"fInt32\":\"-12\"}", "{\"fInt32\":-12}");
}

static void test_floats_use_strings_for_nan_and_infinity(void **state)
{
    (void)state;
    round_trip(&gwtest__all__descriptor,
               "{\"fFloat\":\"NaN\",\"fDouble\":\"-Infinity\",\"rDouble\":[\"Infinity\",1.5,"
               "\"2.25\",-0.5]}",
               "{\"fFloat\":\"NaN\",\"fDouble\":\"-Infinity\",\"rDouble\":[\"Infinity\",1.5,"
               "2.25,-0.5]}");
    rejects(&gwtest__all__descriptor, "{\"fDouble\":\"nan\"}", RD_INVALID_BODY, "fDouble");
    rejects(&gwtest__all__descriptor, "{\"fDouble\":\"0x10\"}", RD_INVALID_BODY, "fDouble");
    rejects(&gwtest__all__descriptor, "{\"fFloat\":1e39}", RD_INVALID_BODY, "fFloat");
    rejects(&gwtest__all__descriptor, "{\"fDouble\":true}", RD_INVALID_BODY, "fDouble");
}

static void test_numbers_print_in_shortest_form(void **state)
{
    (void)state;
    rd_err err;
    ProtobufCMessage *m = decode(&gwtest__all__descriptor,
                                 "{\"fFloat\":0.1,\"fDouble\":0.1,\"rDouble\":[0.3333333333333333,"
                                 "1e300,5e-324,100]}",
                                 RD_OK, &err);
    char *out = gw_json_encode_text(m, NULL);
    assert_string_equal(out, "{\"fFloat\":0.1,\"fDouble\":0.1,\"rDouble\":[0.3333333333333333,"
                             "1e+300,5e-324,100]}");
    free(out);
}

static void test_enums_by_name_or_number(void **state)
{
    (void)state;
    round_trip(&gwtest__all__descriptor, "{\"fEnum\":1,\"rEnum\":[\"GREEN\",1]}",
               "{\"fEnum\":\"RED\",\"rEnum\":[\"GREEN\",\"RED\"]}");
    rejects(&gwtest__all__descriptor, "{\"fEnum\":\"BLUE\"}", RD_INVALID_BODY, "fEnum");
    rejects(&gwtest__all__descriptor, "{\"fEnum\":7}", RD_INVALID_BODY, "fEnum");
    rejects(&gwtest__all__descriptor, "{\"fEnum\":\"1\"}", RD_INVALID_BODY, "fEnum");
}

static void test_bytes_accept_url_safe_and_unpadded_base64(void **state)
{
    (void)state;
    /* 0xfb 0xff: "+/8=" standard, "-_8" URL-safe unpadded */
    round_trip(&gwtest__all__descriptor, "{\"rBytes\":[\"-_8\",\"-_8=\",\"+/8\",\"+/8=\",\"\"]}",
               "{\"rBytes\":[\"+/8=\",\"+/8=\",\"+/8=\",\"+/8=\",\"\"]}");
    rejects(&gwtest__all__descriptor, "{\"fBytes\":\"!!!!\"}", RD_INVALID_BODY, "fBytes");
    rejects(&gwtest__all__descriptor, "{\"fBytes\":\"+_8=\"}", RD_INVALID_BODY, "fBytes");
    rejects(&gwtest__all__descriptor, "{\"fBytes\":\"AAA=A\"}", RD_INVALID_BODY, "fBytes");
    rejects(&gwtest__all__descriptor, "{\"fBytes\":12}", RD_INVALID_BODY, "fBytes");
}

static void test_repeated_and_maps_round_trip(void **state)
{
    (void)state;
    round_trip(&gwtest__all__descriptor,
               "{\"rInt32\":[1,-2],\"rString\":[\"a\",\"\"],\"rBool\":[true,false],"
               "\"rInner\":[{\"name\":\"a\"},{}],\"mStr\":{\"x\":1,\"y\":0},"
               "\"mInt\":{\"-5\":{\"n\":1}},\"mBool\":{\"true\":\"t\",\"false\":\"f\"}}",
               NULL);
    rejects(&gwtest__all__descriptor, "{\"rInt32\":5}", RD_INVALID_BODY, "rInt32");
    rejects(&gwtest__all__descriptor, "{\"rString\":[\"a\",null]}", RD_INVALID_BODY, "rString[1]");
    rejects(&gwtest__all__descriptor, "{\"mInt\":{\"x\":{}}}", RD_INVALID_BODY, "mInt.x");
    rejects(&gwtest__all__descriptor, "{\"mStr\":[]}", RD_INVALID_BODY, "mStr");
}

static void test_oneof_round_trips_and_takes_one_member(void **state)
{
    (void)state;
    round_trip(&gwtest__all__descriptor, "{\"oInner\":{}}", NULL);
    round_trip(&gwtest__all__descriptor, "{\"oInt\":\"0\"}", NULL); /* set: kept though 0 */
    round_trip(&gwtest__all__descriptor, "{\"oStr\":null,\"oInt\":\"3\"}", "{\"oInt\":\"3\"}");
    rejects(&gwtest__all__descriptor, "{\"oStr\":\"a\",\"oInt\":\"3\"}", RD_INVALID_BODY, "oInt");
}

static void test_proto_names_are_accepted_json_names_are_written(void **state)
{
    (void)state;
    round_trip(&gwtest__all__descriptor,
               "{\"f_int32\":1,\"name_with_2_parts\":\"n\",\"w_int64\":5}",
               "{\"fInt32\":1,\"nameWith2Parts\":\"n\",\"wInt64\":\"5\"}");
    rejects(&gwtest__all__descriptor, "{\"fInt32\":1,\"f_int32\":2}", RD_INVALID_BODY, "f_int32");
}

static void test_null_means_not_set(void **state)
{
    (void)state;
    round_trip(&gwtest__all__descriptor,
               "{\"fInt32\":null,\"fInner\":null,\"rInt32\":null,\"ts\":null,\"wBool\":null,"
               "\"nullVal\":null,\"val\":null}",
               "{\"val\":null}");
}

static void test_well_known_types_round_trip(void **state)
{
    (void)state;
    round_trip(&gwtest__all__descriptor,
               "{\"ts\":\"2024-02-29T12:34:56.123456789Z\",\"dur\":\"-1.500s\","
               "\"mask\":\"a.fooBar,b\",\"st\":{\"a\":[1,\"x\",null,true,{\"b\":{}}],\"c\":{}},"
               "\"val\":[1.5,{\"k\":null}],\"list\":[\"x\",[]],\"empty\":{},"
               "\"rValue\":[null,1,\"s\",false],\"rTs\":[\"1970-01-01T00:00:00Z\"],"
               "\"wDouble\":1.5,\"wFloat\":\"NaN\",\"wInt64\":\"-3\",\"wUint64\":\"3\","
               "\"wInt32\":0,\"wUint32\":4,\"wBool\":false,\"wString\":\"\",\"wBytes\":\"AA==\"}",
               NULL);
}

static void test_timestamps_normalise_to_utc_with_3_6_or_9_digits(void **state)
{
    (void)state;
    round_trip(&gwtest__all__descriptor,
               "{\"rTs\":[\"2024-01-01T01:00:00+01:00\",\"2024-01-01T00:00:00.5Z\","
               "\"2024-01-01T00:00:00.000001Z\",\"0001-01-01T00:00:00Z\","
               "\"9999-12-31T23:59:59.999999999Z\"]}",
               "{\"rTs\":[\"2024-01-01T00:00:00Z\",\"2024-01-01T00:00:00.500Z\","
               "\"2024-01-01T00:00:00.000001Z\",\"0001-01-01T00:00:00Z\","
               "\"9999-12-31T23:59:59.999999999Z\"]}");
    rejects(&gwtest__all__descriptor, "{\"ts\":\"2024-13-01T00:00:00Z\"}", RD_INVALID_BODY, "ts");
    rejects(&gwtest__all__descriptor, "{\"ts\":\"2024-01-01 00:00:00\"}", RD_INVALID_BODY, "ts");
    rejects(&gwtest__all__descriptor, "{\"ts\":\"2024-01-01T00:00:00.1234567891Z\"}",
            RD_INVALID_BODY, "ts");
    rejects(&gwtest__all__descriptor, "{\"ts\":1700000000}", RD_INVALID_BODY, "ts");
}

static void test_durations(void **state)
{
    (void)state;
    round_trip(&gwtest__all__descriptor, "{\"dur\":\"3s\"}", NULL);
    round_trip(&gwtest__all__descriptor, "{\"dur\":\"-0.000000001s\"}", NULL);
    round_trip(&gwtest__all__descriptor, "{\"dur\":\"1.000001s\"}", NULL);
    rejects(&gwtest__all__descriptor, "{\"dur\":\"1.5\"}", RD_INVALID_BODY, "dur");
    rejects(&gwtest__all__descriptor, "{\"dur\":\"1m\"}", RD_INVALID_BODY, "dur");
    rejects(&gwtest__all__descriptor, "{\"dur\":\"315576000001s\"}", RD_INVALID_BODY, "dur");
}

static void test_field_mask_paths_are_snake_case_inside(void **state)
{
    (void)state;
    rd_err err;
    Gwtest__All *m = (Gwtest__All *)decode(&gwtest__all__descriptor,
                                           "{\"mask\":\"user.displayName,id\"}", RD_OK, &err);
    assert_int_equal(m->mask->n_paths, 2);
    assert_string_equal(m->mask->paths[0], "user.display_name");
    assert_string_equal(m->mask->paths[1], "id");
    rejects(&gwtest__all__descriptor, "{\"mask\":\"a,,b\"}", RD_INVALID_BODY, "mask");
    rejects(&gwtest__all__descriptor, "{\"mask\":[\"a\"]}", RD_INVALID_BODY, "mask");
}

static void test_any_carries_error_details(void **state)
{
    (void)state;
    /* a google.rpc.Status as receipt.c builds it */
    Google__Rpc__ErrorInfo info = GOOGLE__RPC__ERROR_INFO__INIT;
    info.reason = "version_conflict";
    info.domain = "recordd";
    Recordd__V1__CommitReceipt rc = RECORDD__V1__COMMIT_RECEIPT__INIT;
    rc.object = "commit_receipt";
    rc.status = RECORDD__V1__COMMIT_STATUS__REJECTED;
    rc.current_version = 4;
    uint8_t b1[256], b2[256];
    Google__Protobuf__Any a1 = GOOGLE__PROTOBUF__ANY__INIT, a2 = GOOGLE__PROTOBUF__ANY__INIT;
    a1.type_url = "type.googleapis.com/google.rpc.ErrorInfo";
    a1.value.len = protobuf_c_message_pack(&info.base, b1);
    a1.value.data = b1;
    a2.type_url = "type.googleapis.com/recordd.v1.CommitReceipt";
    a2.value.len = protobuf_c_message_pack(&rc.base, b2);
    a2.value.data = b2;
    Google__Protobuf__Any *details[] = {&a1, &a2};
    Google__Rpc__Status st = GOOGLE__RPC__STATUS__INIT;
    st.code = 10;
    st.message = "version conflict";
    st.n_details = 2;
    st.details = details;
    char *out = gw_json_encode_text(&st.base, NULL);
    assert_non_null(out);
    assert_json_text(out, "{\"code\":10,\"message\":\"version conflict\",\"details\":["
                          "{\"@type\":\"type.googleapis.com/google.rpc.ErrorInfo\","
                          "\"reason\":\"version_conflict\",\"domain\":\"recordd\"},"
                          "{\"@type\":\"type.googleapis.com/recordd.v1.CommitReceipt\","
                          "\"object\":\"commit_receipt\",\"status\":\"REJECTED\","
                          "\"currentVersion\":\"4\"}]}");
    /* and back */
    round_trip(&google__rpc__status__descriptor, out, NULL);
    free(out);
    /* a WKT inside an Any has its JSON form under "value" */
    round_trip(&gwtest__all__descriptor,
               "{\"any\":{\"@type\":\"type.googleapis.com/google.protobuf.Duration\","
               "\"value\":\"1.5s\"}}",
               "{\"any\":{\"@type\":\"type.googleapis.com/google.protobuf.Duration\","
               "\"value\":\"1.500s\"}}");
    /* an unknown type cannot be rendered */
    a1.type_url = "type.googleapis.com/nope.Nothing";
    assert_null(gw_json_encode(&st.base));
    rejects(&gwtest__all__descriptor, "{\"any\":{\"@type\":\"type.googleapis.com/nope.X\"}}",
            RD_INVALID_BODY, "any");
    rejects(&gwtest__all__descriptor, "{\"any\":{\"reason\":\"x\"}}", RD_INVALID_BODY, "any");
}

/* ---- recordd.v1 shapes (DESIGN.md §3) --------------------------------------------- */

static void test_push_schema_request_of_the_design_round_trips(void **state)
{
    (void)state;
    round_trip(
        &recordd__v1__push_schema_request__descriptor,
        "{\"schema\": {\"models\": [{\"name\": \"students\","
        "\"fields\": [{\"name\": \"firstName\", \"type\": \"STRING\", \"required\": true, "
        "\"maxLength\": 100},"
        "{\"name\": \"email\", \"type\": \"STRING\", \"unique\": true},"
        "{\"name\": \"age\", \"type\": \"INTEGER\", \"min\": 0, \"max\": 150},"
        "{\"name\": \"isActive\", \"type\": \"BOOLEAN\", \"defaultValue\": true},"
        "{\"name\": \"status\", \"type\": \"ENUM\", \"enumValues\": [\"active\", \"inactive\"]},"
        "{\"name\": \"profile\", \"type\": \"JSON\"},"
        "{\"name\": \"enrolledAt\", \"type\": \"TIMESTAMP\", \"immutable\": true,"
        " \"writableBy\": [\"admin\"]}],"
        "\"uniqueTogether\": [{\"fields\": [\"firstName\", \"email\"]}]}]},"
        "\"force\": true}",
        NULL);
}

static void test_update_record_request_round_trips(void **state)
{
    (void)state;
    round_trip(&recordd__v1__update_record_request__descriptor,
               "{\"model\":\"students\",\"id\":\"s1\",\"data\":{\"age\":21,\"email\":null},"
               "\"expectedVersion\":\"3\",\"readAt\":\"17\",\"onStale\":\"NOTIFY\","
               "\"claim\":\"c\",\"idempotencyKey\":\"k\",\"clientTxId\":\"t\","
               "\"returnRecord\":true}",
               NULL);
}

/* ---- errors ------------------------------------------------------------------------- */

static void test_unknown_field_names_its_json_path(void **state)
{
    (void)state;
    rejects(&gwtest__all__descriptor, "{\"nope\":1}", RD_UNKNOWN_FIELD, "nope");
    rejects(&gwtest__all__descriptor, "{\"fInner\":{\"child\":{\"nope\":1}}}", RD_UNKNOWN_FIELD,
            "fInner.child.nope");
    rejects(&gwtest__all__descriptor, "{\"rInner\":[{},{\"Name\":\"x\"}]}", RD_UNKNOWN_FIELD,
            "rInner[1].Name");
    rejects(&recordd__v1__push_schema_request__descriptor,
            "{\"schema\":{\"models\":[{\"name\":\"m\",\"fields\":[{\"name\":\"f\","
            "\"maxLen\":3}]}]}}",
            RD_UNKNOWN_FIELD, "schema.models[0].fields[0].maxLen");
    /* a member name with a NUL inside is no field, even if its prefix is */
    json_t *o = json_object();
    json_object_setn_new(o, "model\0x", 7, json_string("m"));
    ProtobufCMessage *m;
    rd_err e2;
    assert_int_equal(
        gw_json_decode(&recordd__v1__get_record_request__descriptor, o, arena, &m, &e2),
        RD_UNKNOWN_FIELD);
    json_decref(o);
    /* data is free-form */
    rd_err err;
    decode(&recordd__v1__create_record_request__descriptor,
           "{\"model\":\"m\",\"data\":{\"anything\":{\"goes\":[1]}}}", RD_OK, &err);
}

static void test_wrong_types_name_the_field(void **state)
{
    (void)state;
    rejects(&gwtest__all__descriptor, "{\"fInt32\":\"abc\"}", RD_INVALID_BODY, "fInt32");
    rejects(&gwtest__all__descriptor, "{\"fBool\":1}", RD_INVALID_BODY, "fBool");
    rejects(&gwtest__all__descriptor, "{\"fBool\":\"true\"}", RD_INVALID_BODY, "fBool");
    rejects(&gwtest__all__descriptor, "{\"fString\":5}", RD_INVALID_BODY, "fString");
    rejects(&gwtest__all__descriptor, "{\"fInner\":[]}", RD_INVALID_BODY, "fInner");
    rejects(&gwtest__all__descriptor, "{\"st\":[]}", RD_INVALID_BODY, "st");
    rejects(&gwtest__all__descriptor, "{\"list\":{}}", RD_INVALID_BODY, "list");
    rejects(&gwtest__all__descriptor, "{\"wInt32\":\"x\"}", RD_INVALID_BODY, "wInt32");
    rejects(&recordd__v1__update_record_request__descriptor, "{\"data\":\"x\"}", RD_INVALID_BODY,
            "data");
    rejects(&recordd__v1__update_record_request__descriptor, "{\"onStale\":\"SOMETIMES\"}",
            RD_INVALID_BODY, "onStale");
}

static void test_nul_in_strings_is_rejected(void **state)
{
    (void)state;
    rejects(&gwtest__all__descriptor, "{\"fString\":\"a\\u0000b\"}", RD_INVALID_BODY, "fString");
    rejects(&gwtest__all__descriptor, "{\"rString\":[\"ok\",\"\\u0000\"]}", RD_INVALID_BODY,
            "rString[1]");
    rejects(&gwtest__all__descriptor, "{\"st\":{\"a\":{\"b\":\"x\\u0000\"}}}", RD_INVALID_BODY,
            "st.a.b");
    rd_err err;
    json_t *j = NULL;
    rd_code rc = gw_json_parse("{\"st\":{\"a\\u0000b\":1}}", 22, &j, &err);
    if (rc == RD_OK) { /* jansson may let the key through: the decoder must not */
        ProtobufCMessage *m;
        assert_int_equal(gw_json_decode(&gwtest__all__descriptor, j, arena, &m, &err),
                         RD_INVALID_BODY);
        json_decref(j);
    } else {
        assert_int_equal(rc, RD_INVALID_BODY);
    }
}

static void test_parse_rejects_malformed_json_with_its_position(void **state)
{
    (void)state;
    rd_err err;
    json_t *j = NULL;
    const char *text = "{\"a\": 1,\n \"b\": tru}";
    assert_int_equal(gw_json_parse(text, strlen(text), &j, &err), RD_INVALID_BODY);
    assert_null(j);
    assert_non_null(strstr(err.msg, "line 2"));
    assert_non_null(strstr(err.msg, "column"));
    /* not NUL-terminated: only len bytes count */
    assert_int_equal(gw_json_parse("{}garbage", 2, &j, &err), RD_OK);
    json_decref(j);
    assert_int_equal(gw_json_parse("", 0, &j, &err), RD_INVALID_BODY);
    assert_int_equal(gw_json_parse("[1]", 3, &j, &err), RD_INVALID_BODY);
    assert_int_equal(gw_json_parse("\"s\"", 3, &j, &err), RD_INVALID_BODY);
    assert_int_equal(gw_json_parse("{\"a\":1,\"a\":2}", 13, &j, &err), RD_INVALID_BODY);
    assert_non_null(strstr(err.msg, "duplicate"));
}

static void test_parse_rejects_invalid_utf8(void **state)
{
    (void)state;
    rd_err err;
    json_t *j = NULL;
    const char *bad[] = {"{\"a\":\"\xff\"}", "{\"a\":\"\xc0\xaf\"}", "{\"a\":\"\xed\xa0\x80\"}",
                         "{\"a\":\"\\ud800\"}", "{\"\xe2\x82\":1}"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(gw_json_parse(bad[i], strlen(bad[i]), &j, &err), RD_INVALID_BODY);
        assert_null(j);
    }
    const char *emoji = "{\"a\":\"\xf0\x9f\x98\x80\\ud83d\\ude00\"}";
    assert_int_equal(gw_json_parse(emoji, strlen(emoji), &j, &err), RD_OK);
    json_decref(j);
}

static char *nested(int levels)
{
    /* {"a":{"a":...{"a":1}...}} with levels objects */
    size_t n = (size_t)levels * 6 + 8;
    char *s = malloc(n), *p = s;
    for (int i = 0; i < levels; i++)
        p += sprintf(p, i + 1 < levels ? "{\"a\":" : "{\"a\":1");
    for (int i = 0; i < levels; i++)
        *p++ = '}';
    *p = '\0';
    return s;
}

static void test_nesting_is_limited(void **state)
{
    (void)state;
    rd_err err;
    json_t *j = NULL;
    char *ok = nested(GW_JSON_MAX_DEPTH), *deep = nested(GW_JSON_MAX_DEPTH + 1),
         *deeper = nested(5000);
    assert_int_equal(gw_json_parse(ok, strlen(ok), &j, &err), RD_OK);
    json_decref(j);
    assert_int_equal(gw_json_parse(deep, strlen(deep), &j, &err), RD_INVALID_BODY);
    assert_non_null(strstr(err.msg, "deeper"));
    assert_int_equal(gw_json_parse(deeper, strlen(deeper), &j, &err), RD_INVALID_BODY);
    assert_non_null(strstr(err.msg, "deeper"));
    /* arrays count too */
    char arr[200];
    memset(arr, '[', 100);
    arr[0] = '{', arr[1] = '"', arr[2] = 'a', arr[3] = '"', arr[4] = ':';
    strcpy(arr + 100, "]");
    assert_int_equal(gw_json_parse(arr, strlen(arr), &j, &err), RD_INVALID_BODY);
    /* the decoder applies the limit to trees built elsewhere too */
    json_t *t = json_integer(1);
    for (int i = 0; i < GW_JSON_MAX_DEPTH + 2; i++) {
        json_t *o = json_object();
        json_object_set_new(o, "a", t);
        t = o;
    }
    json_t *top = json_pack("{s:o}", "st", t);
    ProtobufCMessage *m;
    assert_int_equal(gw_json_decode(&gwtest__all__descriptor, top, arena, &m, &err),
                     RD_INVALID_BODY);
    json_decref(top);
    free(ok);
    free(deep);
    free(deeper);
}

static void test_body_over_the_limit_is_rejected(void **state)
{
    (void)state;
    size_t n = GW_JSON_MAX_BODY + 1;
    char *big = malloc(n);
    memset(big, ' ', n);
    big[0] = '{';
    big[n - 1] = '}';
    rd_err err;
    json_t *j = NULL;
    assert_int_equal(gw_json_parse(big, n, &j, &err), RD_INVALID_BODY);
    assert_null(j);
    assert_non_null(strstr(err.msg, "larger"));
    assert_int_equal(gw_json_parse(big, n - 1, &j, &err), RD_INVALID_BODY); /* unterminated */
    big[n - 2] = '}';
    assert_int_equal(gw_json_parse(big, n - 1, &j, &err), RD_OK);
    json_decref(j);
    free(big);
}

/* ---- output escaping ------------------------------------------------------------------ */

static void test_output_escapes_everything_needed(void **state)
{
    (void)state;
    Gwtest__All m = GWTEST__ALL__INIT;
    m.f_string = "q\"b\\s/\x01\x1f\n\t\x7f \xe2\x80\xa8\xe2\x80\xa9 \xc3\xa9 \xf0\x9f\x98\x80";
    char *out = gw_json_encode_text(&m.base, NULL);
    assert_string_equal(out, "{\"fString\":\"q\\\"b\\\\s/\\u0001\\u001f\\n\\t\\u007f "
                             "\\u2028\\u2029 \\u00e9 \\ud83d\\ude00\"}");
    free(out);
    /* invalid UTF-8 from a message never reaches the client raw */
    m.f_string = "a\xff\xc3(b\xed\xa0\x80";
    out = gw_json_encode_text(&m.base, NULL);
    assert_string_equal(out, "{\"fString\":\"a\\ufffd\\ufffd(b\\ufffd\\ufffd\\ufffd\"}");
    free(out);
    /* keys of Struct data are escaped the same way */
    json_t *j = json_pack("{s:s}", "k\"\xe2\x80\xa8", "v");
    out = gw_json_dump(j, NULL);
    assert_string_equal(out, "{\"k\\\"\\u2028\":\"v\"}");
    free(out);
    json_decref(j);
}

/* ---- path variables, query parameters, body fields ---------------------------------- */

static void test_set_converts_strings_to_field_types(void **state)
{
    (void)state;
    rd_err err;
    Recordd__V1__UpdateRecordRequest *u =
        (void *)decode(&recordd__v1__update_record_request__descriptor, "{}", RD_OK, &err);
    assert_int_equal(gw_json_set(&u->base, "model", "students", arena, &err), RD_OK);
    assert_int_equal(gw_json_set(&u->base, "expected_version", "5", arena, &err), RD_OK);
    assert_int_equal(gw_json_set(&u->base, "readAt", "-7", arena, &err), RD_OK);
    assert_int_equal(gw_json_set(&u->base, "on_stale", "NOTIFY", arena, &err), RD_OK);
    assert_int_equal(gw_json_set(&u->base, "returnRecord", "true", arena, &err), RD_OK);
    assert_string_equal(u->model, "students");
    assert_int_equal(u->expected_version->value, 5);
    assert_int_equal(u->read_at->value, -7);
    assert_int_equal(u->on_stale, RECORDD__V1__ON_STALE__NOTIFY);
    assert_true(u->return_record);
    assert_int_equal(gw_json_set(&u->base, "onStale", "2", arena, &err), RD_OK);
    assert_int_equal(u->on_stale, RECORDD__V1__ON_STALE__OVERWRITE);
    assert_int_equal(gw_json_set(&u->base, "expected_version.value", "9", arena, &err), RD_OK);
    assert_int_equal(u->expected_version->value, 9);

    assert_int_equal(gw_json_set(&u->base, "bogus", "1", arena, &err), RD_UNKNOWN_FIELD);
    assert_string_equal(err.field, "bogus");
    assert_int_equal(gw_json_set(&u->base, "model.x", "1", arena, &err), RD_UNKNOWN_FIELD);
    assert_int_equal(gw_json_set(&u->base, "expectedVersion", "five", arena, &err),
                     RD_INVALID_BODY);
    assert_string_equal(err.field, "expectedVersion");
    assert_int_equal(gw_json_set(&u->base, "returnRecord", "yes", arena, &err), RD_INVALID_BODY);
    assert_int_equal(gw_json_set(&u->base, "onStale", "9", arena, &err), RD_INVALID_BODY);
    assert_int_equal(gw_json_set(&u->base, "data", "{}", arena, &err), RD_INVALID_BODY);
    assert_int_equal(gw_json_set(&u->base, "model", "\xff", arena, &err), RD_INVALID_BODY);

    Recordd__V1__WatchChangesRequest *w = (void *)decode(
        &recordd__v1__watch_changes_request__descriptor, "{\"models\":[\"a\"]}", RD_OK, &err);
    assert_int_equal(gw_json_set(&w->base, "models", "b", arena, &err), RD_OK);
    assert_int_equal(gw_json_set(&w->base, "sinceSyncId", "42", arena, &err), RD_OK);
    assert_int_equal(w->n_models, 2);
    assert_string_equal(w->models[0], "a");
    assert_string_equal(w->models[1], "b");
    assert_int_equal(w->since_sync_id, 42);

    Gwtest__All *all = (void *)decode(&gwtest__all__descriptor, "{}", RD_OK, &err);
    assert_int_equal(gw_json_set(&all->base, "ts", "2024-01-01T00:00:00Z", arena, &err), RD_OK);
    assert_int_equal(all->ts->seconds, 1704067200);
    assert_int_equal(gw_json_set(&all->base, "f_inner.child.name", "deep", arena, &err), RD_OK);
    assert_string_equal(all->f_inner->child->name, "deep");
    assert_int_equal(gw_json_set(&all->base, "fBytes", "AAE", arena, &err), RD_OK);
    assert_int_equal(all->f_bytes.len, 2);
    assert_int_equal(gw_json_set(&all->base, "rEnum", "GREEN", arena, &err), RD_OK);
    assert_int_equal(gw_json_set(&all->base, "val", "text", arena, &err), RD_OK);
    assert_int_equal(all->val->kind_case, GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE);
    assert_int_equal(gw_json_set(&all->base, "fInner", "x", arena, &err), RD_INVALID_BODY);
}

static void test_set_value_binds_a_body_field(void **state)
{
    (void)state;
    rd_err err;
    Recordd__V1__CreateRecordRequest *c =
        (void *)decode(&recordd__v1__create_record_request__descriptor, "{}", RD_OK, &err);
    assert_int_equal(gw_json_set(&c->base, "model", "students", arena, &err), RD_OK);
    json_t *body = json_pack("{s:s,s:i}", "name", "Ada", "age", 36);
    assert_int_equal(gw_json_set_value(&c->base, "data", body, arena, &err), RD_OK);
    json_decref(body);
    char *out = gw_json_encode_text(&c->base, NULL);
    assert_json_text(out, "{\"model\":\"students\",\"data\":{\"name\":\"Ada\",\"age\":36}}");
    free(out);
    body = json_pack("[i]", 1);
    assert_int_equal(gw_json_set_value(&c->base, "data", body, arena, &err), RD_INVALID_BODY);
    assert_string_equal(err.field, "data");
    json_decref(body);
    body = json_object();
    assert_int_equal(gw_json_set_value(&c->base, "nope", body, arena, &err), RD_UNKNOWN_FIELD);
    json_decref(body);
}

static void test_merge_overwrites_only_the_members_given(void **state)
{
    (void)state;
    rd_err err;
    Recordd__V1__AcquireClaimRequest *c =
        (void *)decode(&recordd__v1__acquire_claim_request__descriptor, "{}", RD_OK, &err);
    assert_int_equal(gw_json_set(&c->base, "model", "m", arena, &err), RD_OK);
    assert_int_equal(gw_json_set(&c->base, "id", "r1", arena, &err), RD_OK);
    json_t *body = json_pack("{s:i,s:s}", "ttlSeconds", 30, "id", "r2");
    assert_int_equal(gw_json_merge(&c->base, body, arena, &err), RD_OK);
    json_decref(body);
    assert_string_equal(c->model, "m");
    assert_string_equal(c->id, "r2");
    assert_int_equal(c->ttl_seconds, 30);
    body = json_pack("{s:i}", "ttl", 30);
    assert_int_equal(gw_json_merge(&c->base, body, arena, &err), RD_UNKNOWN_FIELD);
    assert_string_equal(err.field, "ttl");
    json_decref(body);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_scalar_kind_round_trips),
        cmocka_unit_test(test_defaults_are_omitted),
        cmocka_unit_test(test_64_bit_integers_are_strings_out_numbers_or_strings_in),
        cmocka_unit_test(test_32_bit_integers_are_range_checked),
        cmocka_unit_test(test_floats_use_strings_for_nan_and_infinity),
        cmocka_unit_test(test_numbers_print_in_shortest_form),
        cmocka_unit_test(test_enums_by_name_or_number),
        cmocka_unit_test(test_bytes_accept_url_safe_and_unpadded_base64),
        cmocka_unit_test(test_repeated_and_maps_round_trip),
        cmocka_unit_test(test_oneof_round_trips_and_takes_one_member),
        cmocka_unit_test(test_proto_names_are_accepted_json_names_are_written),
        cmocka_unit_test(test_null_means_not_set),
        cmocka_unit_test(test_well_known_types_round_trip),
        cmocka_unit_test(test_timestamps_normalise_to_utc_with_3_6_or_9_digits),
        cmocka_unit_test(test_durations),
        cmocka_unit_test(test_field_mask_paths_are_snake_case_inside),
        cmocka_unit_test(test_any_carries_error_details),
        cmocka_unit_test(test_push_schema_request_of_the_design_round_trips),
        cmocka_unit_test(test_update_record_request_round_trips),
        cmocka_unit_test(test_unknown_field_names_its_json_path),
        cmocka_unit_test(test_wrong_types_name_the_field),
        cmocka_unit_test(test_nul_in_strings_is_rejected),
        cmocka_unit_test(test_parse_rejects_malformed_json_with_its_position),
        cmocka_unit_test(test_parse_rejects_invalid_utf8),
        cmocka_unit_test(test_nesting_is_limited),
        cmocka_unit_test(test_body_over_the_limit_is_rejected),
        cmocka_unit_test(test_output_escapes_everything_needed),
        cmocka_unit_test(test_set_converts_strings_to_field_types),
        cmocka_unit_test(test_set_value_binds_a_body_field),
        cmocka_unit_test(test_merge_overwrites_only_the_members_given),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
