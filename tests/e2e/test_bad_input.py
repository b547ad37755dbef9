"""Bad input of any kind gets a clear error, changes nothing, and never takes
the server down (DESIGN.md §7)."""

import math

import grpc
import pytest

import harness as h
from harness import expect_error, pb, rpc_path, uid

INVALID = grpc.StatusCode.INVALID_ARGUMENT
MB = 1024 * 1024


@pytest.fixture
def sentinel(school):
    """A record that must come through every bad request untouched."""
    rid = uid("sentinel")
    school.create("students", {"firstName": "Sentinel", "profile": {"k": [1, 2]}}, id=rid)
    before = school.get("students", rid)
    yield rid
    after = school.get("students", rid)
    before.ClearField("read_at")
    after.ClearField("read_at")
    assert after == before, "a rejected request changed an unrelated record"
    school.assert_healthy()


def create_bytes(model="students", id="", data=None):
    return pb.records.CreateRecordRequest(model=model, id=id, data=h.struct(data)).SerializeToString()


def raw_create(school, body):
    return school.call_raw(rpc_path("CreateRecord"), body)


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def ld(field: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field."""
    return varint(field << 3 | 2) + varint(len(payload)) + payload


def nested_list_value(depth: int) -> bytes:
    """A google.protobuf.Value of `depth` nested list_values, built without
    recursion (headers are computed inside-out, then joined)."""
    headers = []
    size = 0
    for _ in range(depth):
        lv = 1 + len(varint(size)) + size  # ListValue{values(1): Value}
        headers.append(b"\x0a" + varint(size))
        v = 1 + len(varint(lv)) + lv  # Value{list_value(6): ListValue}
        headers.append(b"\x32" + varint(lv))
        size = v
    return b"".join(reversed(headers))


# ---- malformed protobuf ------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [b"\xff\xff\xff", b"\x0a\x10abc", b"\x0b", b"\x22\xff\xff\xff\xff\x0f", b"\x0a\x02\xc3"],
    ids=["garbage", "truncated-string", "bad-wire-type", "huge-length", "truncated-utf8"],
)
def test_malformed_protobuf_is_invalid_body(school, sentinel, body):
    with pytest.raises(grpc.RpcError) as ei:
        raw_create(school, body)
    d = h.error_details(ei.value)
    assert d.code == INVALID, d
    assert d.reason == "invalid_body", d
    assert d.error_info.domain == "recordd"


@pytest.mark.parametrize("method", ["GetRecord", "UpdateRecord", "ReplaceRecord", "DeleteRecord", "PushSchema"])
def test_malformed_protobuf_is_invalid_body_on_every_method(school, sentinel, method):
    with pytest.raises(grpc.RpcError) as ei:
        school.call_raw(rpc_path(method), b"\xff\xff\xff")
    d = h.error_details(ei.value)
    assert d.code == INVALID and d.reason == "invalid_body", d
    assert school.get_schema().revision == 1


def test_truncated_request_is_rejected_and_writes_nothing(school, sentinel):
    rid = uid()
    body = create_bytes(id=rid, data={"firstName": "Trunc"})
    with pytest.raises(grpc.RpcError) as ei:
        raw_create(school, body[:-3])
    assert ei.value.code() == INVALID
    school.assert_not_found("students", rid)


def test_empty_create_request_is_invalid(school, sentinel):
    with pytest.raises(grpc.RpcError) as ei:
        raw_create(school, b"")
    assert ei.value.code() == INVALID


def test_deeply_nested_protobuf_is_rejected(school, sentinel):
    rid = uid()
    value = nested_list_value(100_000)
    entry = ld(1, b"profile") + ld(2, value)
    body = ld(1, b"students") + ld(2, rid.encode()) + ld(4, ld(1, entry))
    assert len(body) < 4 * MB
    with pytest.raises(grpc.RpcError) as ei:
        raw_create(school, body)
    d = h.error_details(ei.value)
    assert d.code == INVALID, d
    school.assert_not_found("students", rid)


# ---- JSON nesting -------------------------------------------------------------


def nested_obj(depth):
    v = {"leaf": True}
    for _ in range(depth - 1):
        v = {"a": v}
    return v


def nested_list(depth):
    v = [1]
    for _ in range(depth - 1):
        v = [v]
    return v


@pytest.mark.parametrize("make", [nested_obj, nested_list], ids=["objects", "arrays"])
def test_json_nested_100_deep_is_rejected_naming_the_field(school, sentinel, make):
    rid = uid()
    expect_error(INVALID, school.create, "students", {"firstName": "Deep", "profile": make(100)}, id=rid,
                 field="profile")
    school.assert_not_found("students", rid)


def test_json_nested_too_deep_in_an_update_is_rejected(school, sentinel):
    expect_error(INVALID, school.update, "students", sentinel, {"profile": nested_obj(100)}, field="profile")


@pytest.mark.parametrize("make", [nested_obj, nested_list], ids=["objects", "arrays"])
def test_json_nested_16_deep_is_accepted(school, sentinel, make):
    rid = uid()
    value = make(16)
    school.create("students", {"firstName": "Deep", "profile": value}, id=rid)
    assert school.get_data("students", rid)["profile"] == value


# ---- sizes ----------------------------------------------------------------------


def test_one_megabyte_string_in_a_json_field_is_stored(school, sentinel):
    rid = uid()
    blob = "x" * MB
    school.create("students", {"firstName": "Big", "profile": {"blob": blob}}, id=rid)
    assert school.get_data("students", rid)["profile"] == {"blob": blob}


def test_one_megabyte_string_in_a_string_field_without_max_length_is_stored(school, sentinel):
    rid = uid()
    email = "y" * MB + "@example.com"
    school.create("students", {"firstName": "Big", "email": email}, id=rid)
    assert school.get_data("students", rid)["email"] == email


def test_five_megabyte_message_is_refused_by_grpc(school, sentinel):
    rid = uid()
    with pytest.raises(grpc.RpcError) as ei:
        school.create("students", {"firstName": "Huge", "profile": {"blob": "z" * (5 * MB)}}, id=rid)
    assert ei.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, ei.value
    school.assert_not_found("students", rid)


# ---- invalid UTF-8 ---------------------------------------------------------------

PLACEHOLDER = b"PLACEHOLDER"
BAD_UTF8 = b"AB\xff\xfeCD\xc3(EFG"
assert len(PLACEHOLDER) == len(BAD_UTF8)


def with_bad_utf8(body: bytes) -> bytes:
    assert body.count(PLACEHOLDER) == 1
    return body.replace(PLACEHOLDER, BAD_UTF8)


def test_invalid_utf8_in_a_string_value_is_rejected(school, sentinel):
    rid = uid()
    body = with_bad_utf8(create_bytes(id=rid, data={"firstName": PLACEHOLDER.decode()}))
    with pytest.raises(grpc.RpcError) as ei:
        raw_create(school, body)
    d = h.error_details(ei.value)
    assert d.code == INVALID, d
    school.assert_not_found("students", rid)


def test_invalid_utf8_in_a_json_value_is_rejected(school, sentinel):
    rid = uid()
    body = with_bad_utf8(create_bytes(id=rid, data={"firstName": "ok", "profile": {"k": [PLACEHOLDER.decode()]}}))
    with pytest.raises(grpc.RpcError) as ei:
        raw_create(school, body)
    assert ei.value.code() == INVALID
    school.assert_not_found("students", rid)


def test_invalid_utf8_in_a_data_key_is_rejected(school, sentinel):
    rid = uid()
    body = with_bad_utf8(create_bytes(id=rid, data={"firstName": "ok", "profile": {PLACEHOLDER.decode(): 1}}))
    with pytest.raises(grpc.RpcError) as ei:
        raw_create(school, body)
    assert ei.value.code() == INVALID
    school.assert_not_found("students", rid)


def test_invalid_utf8_in_the_id_is_rejected(school, sentinel):
    body = with_bad_utf8(create_bytes(id=PLACEHOLDER.decode(), data={"firstName": "ok"}))
    with pytest.raises(grpc.RpcError) as ei:
        raw_create(school, body)
    assert ei.value.code() == INVALID
    get = with_bad_utf8(pb.records.GetRecordRequest(model="students", id=PLACEHOLDER.decode()).SerializeToString())
    with pytest.raises(grpc.RpcError) as ei:
        school.call_raw(rpc_path("GetRecord"), get)
    assert ei.value.code() == INVALID


def test_invalid_utf8_in_an_update_is_rejected(school, sentinel):
    body = pb.records.UpdateRecordRequest(
        model="students", id=sentinel, data=h.struct({"firstName": PLACEHOLDER.decode()})
    ).SerializeToString()
    with pytest.raises(grpc.RpcError) as ei:
        school.call_raw(rpc_path("UpdateRecord"), with_bad_utf8(body))
    assert ei.value.code() == INVALID


def test_invalid_utf8_in_a_schema_name_is_rejected(school, sentinel):
    before = school.get_schema()
    req = pb.schema.PushSchemaRequest(
        schema=h.schema_msg(h.SCHOOL + [{"name": PLACEHOLDER.decode(), "fields": [{"name": "x", "type": "STRING"}]}])
    )
    with pytest.raises(grpc.RpcError) as ei:
        school.call_raw(rpc_path("PushSchema"), with_bad_utf8(req.SerializeToString()))
    assert ei.value.code() == INVALID
    assert school.get_schema() == before


# ---- numbers JSON cannot carry -----------------------------------------------------


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf], ids=["nan", "inf", "-inf"])
def test_non_finite_number_is_rejected_naming_the_field(school, sentinel, value):
    rid = uid()
    expect_error(INVALID, school.create, "enrollments", {"studentId": "s", "course": "c", "grade": value}, id=rid,
                 field="grade")
    school.assert_not_found("enrollments", rid)


def test_non_finite_number_inside_json_is_rejected(school, sentinel):
    rid = uid()
    expect_error(INVALID, school.create, "students", {"firstName": "x", "profile": {"n": math.nan}}, id=rid,
                 field="profile")
    school.assert_not_found("students", rid)


def test_value_without_a_kind_is_rejected(school, sentinel):
    rid = uid()
    # Struct{fields{"firstName": Value{}}}: a Value with none of its oneof set.
    entry = ld(1, b"firstName") + ld(2, b"")
    body = ld(1, b"students") + ld(2, rid.encode()) + ld(4, ld(1, entry))
    with pytest.raises(grpc.RpcError) as ei:
        raw_create(school, body)
    assert ei.value.code() == INVALID
    school.assert_not_found("students", rid)


# ---- identifiers ----------------------------------------------------------------------


@pytest.mark.parametrize("model", ["students; DROP TABLE students", 'students"', "students' --", "sqlite_master"])
def test_sql_looking_model_in_a_request_is_not_found(school, sentinel, model):
    expect_error(grpc.StatusCode.NOT_FOUND, school.create, model, {"firstName": "x"})
    expect_error(grpc.StatusCode.NOT_FOUND, school.get, model, "x")


@pytest.mark.parametrize("key", ["firstName; DROP TABLE students", 'firstName"', "a'b"])
def test_sql_looking_field_in_data_is_an_unknown_field(school, sentinel, key):
    expect_error(INVALID, school.create, "students", {"firstName": "x", key: 1}, reason="unknown_field", field=key)


def test_sql_in_values_is_just_data(school, sentinel):
    rid = uid()
    name = "Robert'); DROP TABLE students;--"
    school.create("students", {"firstName": name}, id=rid)
    assert school.get_data("students", rid)["firstName"] == name


# ---- the configured message limit ----------------------------------------------------


def test_max_message_bytes_flag_lowers_the_limit(server_factory):
    srv = server_factory("--max-message-bytes", "65536")
    srv.push_schema([h.STUDENTS])
    assert srv.create("students", {"firstName": "small", "profile": {"b": "x" * 30_000}}, id="small").success
    with pytest.raises(grpc.RpcError) as ei:
        srv.create("students", {"firstName": "big", "profile": {"b": "x" * 100_000}}, id="big")
    assert ei.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    srv.assert_not_found("students", "big")
    srv.assert_healthy()


# ---- U+0000 ----------------------------------------------------------------------------
# NUL is valid UTF-8 and valid in protobuf and JSON strings. The server may store
# it faithfully or refuse it (INVALID_ARGUMENT), but must never cut the string
# short: that silently writes something other than what the client sent.


@pytest.mark.parametrize(
    "data,path",
    [
        ({"firstName": "Ann\x00Lee"}, ("firstName",)),
        ({"firstName": "x", "email": "ann\x00@evil.example"}, ("email",)),
        ({"firstName": "x", "profile": {"k": "a\x00b"}}, ("profile", "k")),
    ],
    ids=["string-field", "unique-field", "json-value"],
)
def test_nul_in_a_string_is_stored_whole_or_rejected(school, sentinel, data, path):
    rid = uid()
    try:
        school.create("students", data, id=rid)
    except grpc.RpcError as e:
        assert e.code() == INVALID, h.error_details(e)
        school.assert_not_found("students", rid)
        return
    got, want = school.get_data("students", rid), data
    for p in path:
        got, want = got[p], want[p]
    assert got == want, f"stored {got!r} for {want!r}"


def test_nul_in_a_json_key_is_stored_whole_or_rejected(school, sentinel):
    rid = uid()
    profile = {"k": 1, "k\x00z": 2}
    try:
        school.create("students", {"firstName": "x", "profile": profile}, id=rid)
    except grpc.RpcError as e:
        assert e.code() == INVALID, h.error_details(e)
        school.assert_not_found("students", rid)
        return
    assert school.get_data("students", rid)["profile"] == profile


def test_nul_in_the_id_is_rejected(school, sentinel):
    rid = uid()
    expect_error(INVALID, school.create, "students", {"firstName": "x"}, id=rid + "\x00tail", field="id")
    school.assert_not_found("students", rid)


def test_nul_in_the_model_name_does_not_write_to_another_model(school, sentinel):
    rid = uid()
    with pytest.raises(grpc.RpcError) as ei:
        school.create("students\x00x", {"firstName": "x"}, id=rid)
    assert ei.value.code() in (INVALID, grpc.StatusCode.NOT_FOUND), h.error_details(ei.value)
    school.assert_not_found("students", rid)
