"""recordd.v1.Records/UpdateRecord: RFC 7396 merge patch (DESIGN.md §4)."""

import grpc
import pytest

import harness as h
from harness import expect_error, pb, uid

INVALID = grpc.StatusCode.INVALID_ARGUMENT


def new_student(srv, **extra):
    rid = uid()
    data = {"firstName": "Ada", "email": f"{rid}@example.com", "age": 36, "status": "active"}
    data.update(extra)
    rc = srv.create("students", data, id=rid)
    assert rc.success
    return rid, dict(data, isActive=data.get("isActive", True))


def test_update_returns_a_confirmed_receipt(school):
    rid, _ = new_student(school)
    before = school.get("students", rid)
    rc = school.update("students", rid, {"age": 37}, client_tx_id="upd-1")
    assert rc.object == "commit_receipt"
    assert rc.success is True
    assert rc.status == pb.records.CONFIRMED
    assert rc.ops == 1
    assert rc.client_tx_id == "upd-1"
    assert rc.server_tx_id != ""
    assert rc.last_sync_id > before.sync_id
    assert not rc.HasField("error")
    assert not rc.HasField("record")


def test_update_changes_only_the_sent_fields(school):
    rid, data = new_student(school)
    school.update("students", rid, {"age": 37, "status": "inactive"})
    assert school.get_data("students", rid) == dict(data, age=37, status="inactive")


def test_update_leaves_omitted_fields_unchanged(school):
    rid, data = new_student(school, profile={"a": 1})
    school.update("students", rid, {"firstName": "Augusta"})
    assert school.get_data("students", rid) == dict(data, firstName="Augusta")


def test_update_null_clears_field(school):
    rid, data = new_student(school)
    school.update("students", rid, {"age": None})
    got = school.get_data("students", rid)
    assert "age" not in got
    del data["age"]
    assert got == data


def test_update_null_on_a_field_with_a_default_clears_it(school):
    rid, data = new_student(school)
    school.update("students", rid, {"isActive": None})
    assert "isActive" not in school.get_data("students", rid)


def test_update_null_on_an_unset_field_is_harmless(school):
    rid, data = new_student(school)
    school.update("students", rid, {"enrolledAt": None})
    assert school.get_data("students", rid) == data


def test_update_merges_json_objects_recursively(school):
    rid, data = new_student(school, profile={"address": {"city": "London", "zip": "W1"}, "langs": ["en"]})
    school.update("students", rid, {"profile": {"address": {"city": "Paris"}, "title": "Countess"}})
    assert school.get_data("students", rid)["profile"] == {
        "address": {"city": "Paris", "zip": "W1"},
        "langs": ["en"],
        "title": "Countess",
    }


def test_update_null_inside_json_removes_the_nested_key(school):
    rid, data = new_student(school, profile={"address": {"city": "London", "zip": "W1"}, "langs": ["en"]})
    school.update("students", rid, {"profile": {"address": {"zip": None}, "langs": None}})
    assert school.get_data("students", rid)["profile"] == {"address": {"city": "London"}}


def test_update_replaces_json_arrays_wholesale(school):
    rid, data = new_student(school, profile={"langs": ["en", "fr"]})
    school.update("students", rid, {"profile": {"langs": ["de"]}})
    assert school.get_data("students", rid)["profile"] == {"langs": ["de"]}


def test_update_json_object_over_a_scalar_replaces_it(school):
    rid, data = new_student(school, profile={"a": 5})
    school.update("students", rid, {"profile": {"a": {"b": 1}}})
    assert school.get_data("students", rid)["profile"] == {"a": {"b": 1}}


def test_update_json_field_with_a_non_object_replaces_it(school):
    rid, data = new_student(school, profile={"a": 5})
    school.update("students", rid, {"profile": [1, 2]})
    assert school.get_data("students", rid)["profile"] == [1, 2]


def test_update_sets_a_json_field_that_was_unset(school):
    rid, data = new_student(school)
    school.update("students", rid, {"profile": {"a": {"b": None, "c": 1}}})
    # RFC 7396: nulls in the patch never end up in the target.
    assert school.get_data("students", rid)["profile"] == {"a": {"c": 1}}


# RFC 7396 Appendix A, applied to the JSON field `profile`: (target, patch, result);
# a result of None means the field is cleared (absent).
RFC7396_EXAMPLES = [
    ({"a": "b"}, {"a": "c"}, {"a": "c"}),
    ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
    ({"a": "b"}, {"a": None}, {}),
    ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
    ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
    ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
    ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
    ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
    (["a", "b"], ["c", "d"], ["c", "d"]),
    ({"a": "b"}, ["c"], ["c"]),
    ({"a": "foo"}, None, None),
    ({"a": "foo"}, "bar", "bar"),
    ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
    ([1, 2], {"a": "b", "c": None}, {"a": "b"}),
    ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
]


@pytest.mark.parametrize("target,patch,result", RFC7396_EXAMPLES, ids=[f"A{i + 1}" for i in range(15)])
def test_update_json_field_follows_rfc7396_examples(school, target, patch, result):
    rid, data = new_student(school, profile=target)
    school.update("students", rid, {"profile": patch})
    got = school.get_data("students", rid)
    if result is None:
        assert "profile" not in got
    else:
        assert got["profile"] == result
    got.pop("profile", None)
    data.pop("profile")
    assert got == data


def test_update_increments_version_and_advances_updated_at_and_sync_id(school):
    rid, _ = new_student(school)
    before = school.get("students", rid)
    h.wait_clock_past(h.ts_us(before.updated_at))
    rc = school.update("students", rid, {"age": 40})
    after = school.get("students", rid)
    assert after.version == before.version + 1 == 2
    assert h.ts_us(after.updated_at) > h.ts_us(before.updated_at)
    assert h.ts_us(after.created_at) == h.ts_us(before.created_at)
    assert after.sync_id == rc.last_sync_id > before.sync_id
    assert after.created_by == before.created_by
    assert after.group == before.group


def test_update_with_return_record_returns_the_merged_record(school):
    rid, data = new_student(school)
    rc = school.update("students", rid, {"age": 40}, return_record=True)
    assert rc.record.id == rid
    assert rc.record.version == 2
    assert rc.record.sync_id == rc.last_sync_id
    assert h.to_dict(rc.record.data) == dict(data, age=40)


def test_update_null_on_a_required_field_is_rejected(school):
    rid, data = new_student(school)
    expect_error(INVALID, school.update, "students", rid, {"firstName": None}, field="firstName")
    r = school.get("students", rid)
    assert h.to_dict(r.data) == data and r.version == 1


@pytest.mark.parametrize(
    "patch,field",
    [
        ({"age": 200}, "age"),
        ({"age": "old"}, "age"),
        ({"status": "graduated"}, "status"),
        ({"firstName": "x" * 101}, "firstName"),
        ({"enrolledAt": "not a time"}, "enrolledAt"),
    ],
    ids=["range", "type", "enum", "maxLength", "timestamp"],
)
def test_update_validates_the_sent_fields(school, patch, field):
    rid, data = new_student(school)
    expect_error(INVALID, school.update, "students", rid, patch, reason="validation_failed", field=field)
    r = school.get("students", rid)
    assert h.to_dict(r.data) == data and r.version == 1


def test_update_with_an_unknown_field_names_it(school):
    rid, data = new_student(school)
    expect_error(INVALID, school.update, "students", rid, {"nickname": "x"}, reason="unknown_field", field="nickname")
    assert school.get("students", rid).version == 1


def test_update_null_on_an_unknown_field_is_still_rejected(school):
    rid, data = new_student(school)
    expect_error(INVALID, school.update, "students", rid, {"nickname": None}, reason="unknown_field", field="nickname")
    assert school.get("students", rid).version == 1


@pytest.mark.parametrize("name", h.SYSTEM_FIELDS)
def test_update_with_a_system_field_in_data_names_it(school, name):
    rid, data = new_student(school)
    value = 9 if name in ("version", "syncId") else "x"
    expect_error(INVALID, school.update, "students", rid, {name: value}, field=name)
    r = school.get("students", rid)
    assert h.to_dict(r.data) == data and r.version == 1 and r.id == rid


def test_update_to_a_taken_unique_email_is_a_duplicate(school):
    # Different first names, so only the single-field constraint on email is hit
    # (not also the (firstName, email) one).
    rid1, d1 = new_student(school, firstName="Ada")
    rid2, d2 = new_student(school, firstName="Grace")
    expect_error(
        grpc.StatusCode.ALREADY_EXISTS,
        school.update,
        "students",
        rid2,
        {"email": d1["email"]},
        reason="duplicate_record",
        field="email",
    )
    r = school.get("students", rid2)
    assert h.to_dict(r.data) == d2 and r.version == 1


def test_update_with_the_current_expected_version_applies(school):
    rid, data = new_student(school)
    rc = school.update("students", rid, {"age": 50}, expected_version=1)
    assert rc.success
    assert school.get("students", rid).version == 2


def test_update_with_a_stale_expected_version_is_a_version_conflict(school):
    rid, data = new_student(school)
    school.update("students", rid, {"age": 50})
    before = school.get("students", rid)
    expect_error(
        grpc.StatusCode.ABORTED,
        school.update,
        "students",
        rid,
        {"age": 60},
        expected_version=1,
        reason="version_conflict",
    )
    after = school.get("students", rid)
    assert after.version == 2
    assert after.data == before.data and after.sync_id == before.sync_id


def test_update_of_a_missing_record_is_not_found(school):
    rid = uid("missing")
    expect_error(grpc.StatusCode.NOT_FOUND, school.update, "students", rid, {"age": 1}, reason="not_found")
    school.assert_not_found("students", rid)


def test_update_in_an_unknown_model_is_not_found(school):
    expect_error(grpc.StatusCode.NOT_FOUND, school.update, "teachers", "x", {"age": 1}, reason="not_found")


def test_update_without_an_id_is_invalid(school):
    expect_error(INVALID, school.update, "students", "", {"age": 1})


def test_successive_updates_each_bump_the_version(school):
    rid, _ = new_student(school)
    for i in range(2, 6):
        rc = school.update("students", rid, {"age": i}, return_record=True)
        assert rc.record.version == i
    assert school.get("students", rid).version == 5
