"""recordd.v1.Records/ReplaceRecord and DeleteRecord (DESIGN.md §4)."""

import grpc
import pytest

import harness as h
from harness import expect_error, pb, uid

INVALID = grpc.StatusCode.INVALID_ARGUMENT


def new_student(srv, **extra):
    rid = uid()
    data = {
        "firstName": "Ada",
        "email": f"{rid}@example.com",
        "age": 36,
        "isActive": False,
        "status": "active",
        "profile": {"a": 1},
        "enrolledAt": "2024-09-01T08:00:00Z",
    }
    data.update(extra)
    assert srv.create("students", data, id=rid, group="g1").success
    return rid, data


# ---- ReplaceRecord ------------------------------------------------------------


def test_replace_returns_a_confirmed_receipt(school):
    rid, _ = new_student(school)
    before = school.get("students", rid)
    rc = school.replace("students", rid, {"firstName": "Grace"}, client_tx_id="rep-1")
    assert rc.object == "commit_receipt"
    assert rc.success is True
    assert rc.status == pb.records.CONFIRMED
    assert rc.ops == 1
    assert rc.client_tx_id == "rep-1"
    assert rc.server_tx_id != ""
    assert rc.last_sync_id > before.sync_id
    assert not rc.HasField("error")


def test_replace_sets_omitted_fields_back_to_default_or_absent(school):
    rid, _ = new_student(school)
    school.replace("students", rid, {"firstName": "Grace"})
    assert school.get_data("students", rid) == {"firstName": "Grace", "isActive": True}


def test_replace_writes_exactly_the_given_data(school):
    rid, _ = new_student(school)
    new = {"firstName": "Grace", "age": 85, "isActive": False, "profile": {"z": [1]}}
    school.replace("students", rid, new)
    assert school.get_data("students", rid) == new


def test_replace_does_not_merge_json_fields(school):
    rid, _ = new_student(school, profile={"a": 1, "b": {"c": 2}})
    school.replace("students", rid, {"firstName": "Ada", "profile": {"b": {"d": 3}}})
    assert school.get_data("students", rid)["profile"] == {"b": {"d": 3}}


def test_replace_without_a_required_field_is_rejected(school):
    rid, data = new_student(school)
    expect_error(INVALID, school.replace, "students", rid, {"age": 3}, reason="validation_failed", field="firstName")
    r = school.get("students", rid)
    assert h.to_dict(r.data) == data and r.version == 1


def test_replace_keeps_system_fields_and_bumps_the_version(school):
    rid, _ = new_student(school)
    before = school.get("students", rid)
    h.wait_clock_past(h.ts_us(before.updated_at))
    rc = school.replace("students", rid, {"firstName": "Grace"})
    after = school.get("students", rid)
    assert after.id == rid
    assert after.model == "students"
    assert after.group == before.group == "g1"
    assert after.version == 2
    assert after.sync_id == rc.last_sync_id > before.sync_id
    assert h.ts_us(after.created_at) == h.ts_us(before.created_at)
    assert h.ts_us(after.updated_at) > h.ts_us(before.updated_at)
    assert after.created_by == before.created_by
    assert after.organization_id == before.organization_id


def test_replace_with_return_record_returns_the_new_record(school):
    rid, _ = new_student(school)
    rc = school.replace("students", rid, {"firstName": "Grace"}, return_record=True)
    assert rc.record.id == rid
    assert rc.record.version == 2
    assert h.to_dict(rc.record.data) == {"firstName": "Grace", "isActive": True}


@pytest.mark.parametrize("name", h.SYSTEM_FIELDS)
def test_replace_with_a_system_field_in_data_names_it(school, name):
    rid, data = new_student(school)
    value = 9 if name in ("version", "syncId") else "x"
    expect_error(INVALID, school.replace, "students", rid, {"firstName": "Z", name: value}, field=name)
    assert school.get("students", rid).version == 1


def test_replace_with_an_unknown_field_names_it(school):
    rid, _ = new_student(school)
    expect_error(
        INVALID, school.replace, "students", rid, {"firstName": "Z", "nick": "x"}, reason="unknown_field", field="nick"
    )
    assert school.get("students", rid).version == 1


def test_replace_with_a_stale_expected_version_is_a_version_conflict(school):
    rid, data = new_student(school)
    school.update("students", rid, {"age": 1})
    expect_error(
        grpc.StatusCode.ABORTED,
        school.replace,
        "students",
        rid,
        {"firstName": "Z"},
        expected_version=1,
        reason="version_conflict",
    )
    r = school.get("students", rid)
    assert r.version == 2 and h.to_dict(r.data) == dict(data, age=1)


def test_replace_of_a_missing_record_is_not_found(school):
    rid = uid("missing")
    expect_error(grpc.StatusCode.NOT_FOUND, school.replace, "students", rid, {"firstName": "Z"}, reason="not_found")
    school.assert_not_found("students", rid)


def test_replace_keeping_its_own_unique_email_is_not_a_duplicate(school):
    rid, data = new_student(school)
    rc = school.replace("students", rid, {"firstName": "Ada", "email": data["email"]})
    assert rc.success


# ---- DeleteRecord -------------------------------------------------------------


def test_delete_returns_a_confirmed_receipt_with_one_op(school):
    rid, _ = new_student(school)
    before = school.get("students", rid)
    rc = school.delete("students", rid, client_tx_id="del-1")
    assert rc.object == "commit_receipt"
    assert rc.success is True
    assert rc.status == pb.records.CONFIRMED
    assert rc.ops == 1
    assert rc.client_tx_id == "del-1"
    assert rc.server_tx_id != ""
    assert rc.last_sync_id > before.sync_id
    assert list(rc.missing_ids) == []
    assert not rc.HasField("error")


def test_deleted_record_is_not_found(school):
    rid, _ = new_student(school)
    school.delete("students", rid)
    school.assert_not_found("students", rid)


def test_deleting_twice_is_not_found(school):
    rid, _ = new_student(school)
    school.delete("students", rid)
    expect_error(grpc.StatusCode.NOT_FOUND, school.delete, "students", rid, reason="not_found")


def test_delete_of_a_missing_record_is_not_found(school):
    expect_error(grpc.StatusCode.NOT_FOUND, school.delete, "students", uid("missing"), reason="not_found")


def test_delete_frees_the_unique_value(school):
    rid, data = new_student(school)
    school.delete("students", rid)
    assert school.create("students", {"firstName": "New", "email": data["email"]}).success


def test_delete_frees_the_id(school):
    rid, _ = new_student(school)
    school.delete("students", rid)
    rc = school.create("students", {"firstName": "Again"}, id=rid, return_record=True)
    assert rc.record.id == rid
    assert rc.record.version == 1
    assert school.get_data("students", rid) == {"firstName": "Again", "isActive": True}


def test_delete_with_a_stale_expected_version_is_a_version_conflict(school):
    rid, _ = new_student(school)
    school.update("students", rid, {"age": 2})
    expect_error(
        grpc.StatusCode.ABORTED, school.delete, "students", rid, expected_version=1, reason="version_conflict"
    )
    assert school.get("students", rid).version == 2


def test_delete_with_the_current_expected_version_applies(school):
    rid, _ = new_student(school)
    assert school.delete("students", rid, expected_version=1).success
    school.assert_not_found("students", rid)


def test_update_after_delete_is_not_found(school):
    rid, _ = new_student(school)
    school.delete("students", rid)
    expect_error(grpc.StatusCode.NOT_FOUND, school.update, "students", rid, {"age": 1}, reason="not_found")
    school.assert_not_found("students", rid)
