"""recordd.v1.Records/CreateRecord (DESIGN.md §3, §4)."""

import time

import grpc
import pytest

import harness as h
from harness import expect_error, pb, uid

INVALID = grpc.StatusCode.INVALID_ARGUMENT
CONFIRMED = pb.records.CONFIRMED


def assert_confirmed(rc, *, ops=1, client_tx_id=None):
    assert rc.object == "commit_receipt"
    assert rc.success is True
    assert rc.status == CONFIRMED
    assert rc.ops == ops
    assert rc.last_sync_id > 0
    assert rc.server_tx_id != ""
    if client_tx_id is not None:
        assert rc.client_tx_id == client_tx_id
    else:
        assert rc.client_tx_id != ""
    assert list(rc.missing_ids) == []
    assert list(rc.notifications) == []
    assert not rc.HasField("error"), h.short(rc.error)


def ada(**extra):
    d = {"firstName": "Ada", "email": f"{uid('ada')}@example.com"}
    d.update(extra)
    return d


# ---- receipts -------------------------------------------------------------


def test_create_returns_a_confirmed_receipt(school):
    rc = school.create("students", ada(), id=uid(), client_tx_id="ctx-create-1")
    assert_confirmed(rc, client_tx_id="ctx-create-1")
    assert not rc.HasField("record")


def test_create_receipt_sync_id_exceeds_the_previous_commit(school):
    first = school.create("students", ada())
    second = school.create("students", ada())
    assert second.last_sync_id > first.last_sync_id


def test_create_server_tx_ids_are_unique(school):
    ids = [school.create("students", ada()).server_tx_id for _ in range(10)]
    assert all(ids)
    assert len(set(ids)) == 10


def test_create_generates_a_client_tx_id_when_none_is_given(school):
    a = school.create("students", ada())
    b = school.create("students", ada())
    assert a.client_tx_id != "" and b.client_tx_id != ""
    assert a.client_tx_id != b.client_tx_id


def test_create_echoes_the_client_tx_id(school):
    rc = school.create("students", ada(), client_tx_id="my-own-tx-42")
    assert rc.client_tx_id == "my-own-tx-42"


def test_create_with_return_record_puts_the_record_in_the_receipt(school):
    before_us = time.time_ns() // 1000
    rid = uid()
    data = ada(age=36)
    rc = school.create("students", data, id=rid, return_record=True)
    after_us = time.time_ns() // 1000
    assert_confirmed(rc)
    r = rc.record
    assert r.model == "students"
    assert r.id == rid
    assert r.group == "default"
    assert r.version == 1
    assert r.sync_id == rc.last_sync_id
    assert h.to_dict(r.data) == dict(data, isActive=True)
    assert r.HasField("created_at") and r.HasField("updated_at")
    assert h.ts_us(r.created_at) == h.ts_us(r.updated_at)
    # Same machine, same clock: the stamp lies within the call (1 s slack for
    # clock granularity, not for timing).
    assert before_us - 1_000_000 <= h.ts_us(r.created_at) <= after_us + 1_000_000


def test_returned_record_equals_what_get_record_reads(school):
    rc = school.create("students", ada(age=20), return_record=True)
    got = school.get("students", rc.record.id)
    returned = pb.records.Record()
    returned.CopyFrom(rc.record)
    returned.ClearField("read_at")
    got.ClearField("read_at")
    assert got == returned


def test_create_applies_schema_defaults(school):
    rid = uid()
    school.create("students", {"firstName": "Ada"}, id=rid)
    assert school.get_data("students", rid) == {"firstName": "Ada", "isActive": True}


def test_create_explicit_value_overrides_default(school):
    rid = uid()
    school.create("students", {"firstName": "Ada", "isActive": False}, id=rid)
    assert school.get_data("students", rid)["isActive"] is False


def test_create_generates_an_id_when_absent(school):
    rc1 = school.create("students", ada(), return_record=True)
    rc2 = school.create("students", ada(), return_record=True)
    assert rc1.record.id != "" and rc2.record.id != ""
    assert rc1.record.id != rc2.record.id
    assert school.get("students", rc1.record.id).data == rc1.record.data


def test_create_honours_the_client_id(school):
    rid = uid("client-chosen")
    rc = school.create("students", ada(), id=rid, return_record=True)
    assert rc.record.id == rid
    assert school.get("students", rid).id == rid


def test_create_stores_every_field_type(school):
    rid = uid()
    data = {
        "firstName": "Grace",
        "email": f"{rid}@example.com",
        "age": 85,
        "isActive": False,
        "status": "inactive",
        "profile": {"langs": ["COBOL", "FLOW-MATIC"], "rank": {"navy": "rear admiral"}, "n": 1.5},
        "enrolledAt": "2024-09-01T08:00:00Z",
    }
    school.create("students", data, id=rid)
    assert school.get_data("students", rid) == data


def test_create_in_a_group_is_read_back_in_that_group(school):
    rid = uid()
    school.create("students", ada(), id=rid, group="class-a")
    assert school.get("students", rid).group == "class-a"


# ---- rejections -------------------------------------------------------------


def test_create_with_an_existing_id_is_a_duplicate(school):
    rid = uid()
    school.create("students", ada(), id=rid)
    before = school.get("students", rid)
    expect_error(grpc.StatusCode.ALREADY_EXISTS, school.create, "students", ada(), id=rid, reason="duplicate_record")
    after = school.get("students", rid)
    assert after.data == before.data and after.version == 1 and after.sync_id == before.sync_id


def test_create_with_a_taken_unique_email_is_a_duplicate_naming_email(school):
    email = f"{uid()}@example.com"
    school.create("students", {"firstName": "Ada", "email": email})
    rid = uid()
    expect_error(
        grpc.StatusCode.ALREADY_EXISTS,
        school.create,
        "students",
        {"firstName": "Other", "email": email},
        id=rid,
        reason="duplicate_record",
        field="email",
    )
    school.assert_not_found("students", rid)


def test_create_violating_a_composite_unique_constraint_is_a_duplicate(school):
    student = uid("stu")
    school.create("enrollments", {"studentId": student, "course": "math"})
    rid = uid()
    expect_error(
        grpc.StatusCode.ALREADY_EXISTS,
        school.create,
        "enrollments",
        {"studentId": student, "course": "math"},
        id=rid,
        reason="duplicate_record",
    )
    school.assert_not_found("enrollments", rid)


def test_composite_unique_allows_the_same_value_in_one_column(school):
    student = uid("stu")
    school.create("enrollments", {"studentId": student, "course": "math"})
    assert school.create("enrollments", {"studentId": student, "course": "art"}).success
    assert school.create("enrollments", {"studentId": uid("stu"), "course": "math"}).success


def test_unique_email_allows_many_records_without_email(school):
    assert school.create("students", {"firstName": "NoMail"}).success
    assert school.create("students", {"firstName": "NoMail"}).success


def test_unique_constraint_is_per_model(school):
    email = f"{uid()}@example.com"
    school.create("students", {"firstName": "Ada", "email": email})
    assert school.create("enrollments", {"studentId": uid(), "course": "x", "email": email}).success
    assert school.create("enrollments", {"studentId": uid(), "course": "x", "email": email}).success


def test_create_without_a_required_field_names_it(school):
    rid = uid()
    expect_error(INVALID, school.create, "students", {"age": 3}, id=rid, reason="validation_failed", field="firstName")
    school.assert_not_found("students", rid)


def test_create_with_null_in_a_required_field_names_it(school):
    rid = uid()
    expect_error(INVALID, school.create, "students", {"firstName": None}, id=rid, field="firstName")
    school.assert_not_found("students", rid)


def test_create_with_an_unknown_field_names_it(school):
    rid = uid()
    expect_error(
        INVALID, school.create, "students", ada(nickname="x"), id=rid, reason="unknown_field", field="nickname"
    )
    school.assert_not_found("students", rid)


@pytest.mark.parametrize("name", h.SYSTEM_FIELDS)
def test_create_with_a_system_field_in_data_names_it(school, name):
    rid = uid()
    value = 7 if name in ("version", "syncId") else "x"
    d = expect_error(INVALID, school.create, "students", ada(**{name: value}), id=rid, field=name)
    assert d.reason in ("validation_failed", "unknown_field"), d
    school.assert_not_found("students", rid)


@pytest.mark.parametrize(
    "field,value",
    [
        ("firstName", 5),
        ("firstName", True),
        ("firstName", {"a": 1}),
        ("email", ["a@example.com"]),
        ("age", "twenty"),
        ("age", 1.5),
        ("age", True),
        ("isActive", "yes"),
        ("isActive", 1),
        ("status", 1),
        ("enrolledAt", 1700000000),
    ],
    ids=lambda v: repr(v)[:20],
)
def test_create_with_a_wrong_type_names_the_field(school, field, value):
    rid = uid()
    data = ada(**{field: value})
    expect_error(INVALID, school.create, "students", data, id=rid, reason="validation_failed", field=field)
    school.assert_not_found("students", rid)


def test_create_with_an_enum_value_not_in_the_list_names_it(school):
    rid = uid()
    expect_error(
        INVALID, school.create, "students", ada(status="graduated"), id=rid, reason="validation_failed", field="status"
    )
    school.assert_not_found("students", rid)


def test_enum_values_are_case_sensitive(school):
    rid = uid()
    expect_error(INVALID, school.create, "students", ada(status="Active"), id=rid, field="status")
    school.assert_not_found("students", rid)


def test_create_exceeding_max_length_names_the_field(school):
    rid = uid()
    data = {"firstName": "x" * 101}
    expect_error(INVALID, school.create, "students", data, id=rid, reason="validation_failed", field="firstName")
    school.assert_not_found("students", rid)


def test_max_length_is_inclusive(school):
    rid = uid()
    school.create("students", {"firstName": "x" * 100}, id=rid)
    assert school.get_data("students", rid)["firstName"] == "x" * 100


def test_max_length_counts_characters_not_bytes(school):
    rid = uid()
    name = "\u00e9" * 60 + "\U0001f600" * 40  # 100 characters, 280 bytes
    school.create("students", {"firstName": name}, id=rid)
    assert school.get_data("students", rid)["firstName"] == name


@pytest.mark.parametrize("age", [200, -1, 151, 1e12])
def test_create_with_age_out_of_range_names_the_field(school, age):
    rid = uid()
    expect_error(INVALID, school.create, "students", ada(age=age), id=rid, reason="validation_failed", field="age")
    school.assert_not_found("students", rid)


@pytest.mark.parametrize("age", [0, 150])
def test_range_bounds_are_inclusive(school, age):
    rid = uid()
    school.create("students", ada(age=age), id=rid)
    assert school.get_data("students", rid)["age"] == age


@pytest.mark.parametrize(
    "value",
    ["yesterday", "2024-13-01T00:00:00Z", "2024-02-30T00:00:00Z", "2024-01-01T00:00:00", "2024-01-01", ""],
)
def test_create_with_a_bad_timestamp_names_the_field(school, value):
    rid = uid()
    expect_error(
        INVALID, school.create, "students", ada(enrolledAt=value), id=rid, reason="validation_failed", field="enrolledAt"
    )
    school.assert_not_found("students", rid)


def test_create_accepts_a_timestamp_with_an_offset(school):
    rid = uid()
    school.create("students", ada(enrolledAt="2024-09-01T10:00:00+02:00"), id=rid)
    assert school.get_data("students", rid)["enrolledAt"] in ("2024-09-01T10:00:00+02:00", "2024-09-01T08:00:00Z")


def test_create_in_an_unknown_model_is_not_found(school):
    rid = uid()
    expect_error(grpc.StatusCode.NOT_FOUND, school.create, "teachers", {"firstName": "x"}, id=rid, reason="not_found")
    expect_error(grpc.StatusCode.NOT_FOUND, school.get, "teachers", rid)


def test_create_without_a_model_is_invalid(school):
    expect_error(INVALID, school.create, "", {"firstName": "x"})


def test_rejected_creates_leave_an_existing_record_untouched(school):
    rid = uid()
    base = school.create("students", ada(), id=rid)
    expect_error(INVALID, school.create, "students", {"age": -1})
    expect_error(grpc.StatusCode.ALREADY_EXISTS, school.create, "students", ada(), id=rid)
    rec = school.get("students", rid)
    assert rec.sync_id == base.last_sync_id
