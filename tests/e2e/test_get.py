"""recordd.v1.Records/GetRecord (DESIGN.md §3, §4)."""

import grpc

import harness as h
from harness import expect_error, uid


def test_get_record_returns_every_system_field(school):
    rid = uid()
    rc = school.create("students", {"firstName": "Ada", "age": 36}, id=rid)
    r = school.get("students", rid)
    assert r.model == "students"
    assert r.id == rid
    assert r.group == "default"
    assert r.version == 1
    assert r.sync_id == rc.last_sync_id
    assert h.to_dict(r.data) == {"firstName": "Ada", "age": 36, "isActive": True}
    assert r.HasField("created_at") and h.ts_us(r.created_at) > 0
    assert r.HasField("updated_at") and h.ts_us(r.updated_at) == h.ts_us(r.created_at)
    assert r.created_by != ""
    assert r.updated_by == r.created_by
    assert r.organization_id != ""
    assert r.read_at >= r.sync_id


def test_get_record_read_at_covers_later_commits_to_other_records(school):
    rid = uid()
    school.create("students", {"firstName": "Ada"}, id=rid)
    later = school.create("students", {"firstName": "Bob"})
    r = school.get("students", rid)
    assert r.read_at >= later.last_sync_id
    assert r.sync_id < later.last_sync_id


def test_get_record_of_a_missing_id_is_not_found(school):
    d = expect_error(grpc.StatusCode.NOT_FOUND, school.get, "students", uid("missing"), reason="not_found")
    assert d.receipt is None


def test_get_record_of_an_unknown_model_is_not_found(school):
    expect_error(grpc.StatusCode.NOT_FOUND, school.get, "no_such_model", "x", reason="not_found")


def test_get_record_does_not_find_an_id_of_another_model(school):
    rid = uid()
    school.create("enrollments", {"studentId": "s", "course": "c"}, id=rid)
    expect_error(grpc.StatusCode.NOT_FOUND, school.get, "students", rid, reason="not_found")


def test_get_record_without_an_id_is_invalid(school):
    expect_error(grpc.StatusCode.INVALID_ARGUMENT, school.get, "students", "")


def test_get_record_with_sql_in_the_id_is_just_not_found(school):
    expect_error(grpc.StatusCode.NOT_FOUND, school.get, "students", "x' OR '1'='1", reason="not_found")


def test_ids_are_case_sensitive(school):
    rid = "CaseSensitive-" + uid()
    school.create("students", {"firstName": "Ada"}, id=rid)
    expect_error(grpc.StatusCode.NOT_FOUND, school.get, "students", rid.lower())
