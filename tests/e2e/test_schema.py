"""recordd.v1.Schemas: PushSchema / GetSchema (DESIGN.md §3, §4, §7)."""

import copy

import grpc
import pytest

import harness as h
from harness import ENROLLMENTS, SCHOOL, STUDENTS, expect_error, pb

INVALID = grpc.StatusCode.INVALID_ARGUMENT


def fields_of(schema, model: str) -> dict:
    for m in schema.models:
        if m.name == model:
            return {f.name: f for f in m.fields}
    raise AssertionError(f"model {model!r} not in schema: {[m.name for m in schema.models]}")


def model_names(schema) -> list:
    return sorted(m.name for m in schema.models)


def students_with(**changes):
    """A copy of STUDENTS; changes maps field name -> new field dict (None drops it)."""
    m = copy.deepcopy(STUDENTS)
    out = []
    for f in m["fields"]:
        if f["name"] in changes:
            if changes[f["name"]] is not None:
                out.append(changes[f["name"]])
        else:
            out.append(f)
    m["fields"] = out
    return m


def test_get_schema_before_first_push_is_empty_with_revision_0(server):
    s = server.get_schema()
    assert s.revision == 0
    assert list(s.models) == []


def test_push_schema_returns_schema_with_revision_1_and_change_lines(server):
    resp = server.push_schema(SCHOOL)
    assert resp.schema.revision == 1
    assert model_names(resp.schema) == ["enrollments", "students"]
    assert len(resp.changes) >= 2, list(resp.changes)
    assert any("students" in line for line in resp.changes), list(resp.changes)
    assert any("enrollments" in line for line in resp.changes), list(resp.changes)


def test_pushed_schema_keeps_every_field_attribute(server):
    schema = server.push_schema([STUDENTS]).schema
    f = fields_of(schema, "students")
    assert list(f) == ["firstName", "email", "age", "isActive", "status", "profile", "enrolledAt"]
    assert f["firstName"].type == pb.schema.STRING and f["firstName"].required and f["firstName"].max_length == 100
    assert f["email"].type == pb.schema.STRING and f["email"].unique and not f["email"].required
    assert f["age"].type == pb.schema.INTEGER
    assert f["age"].HasField("min") and f["age"].min.value == 0
    assert f["age"].HasField("max") and f["age"].max.value == 150
    assert f["isActive"].type == pb.schema.BOOLEAN and f["isActive"].default_value.bool_value is True
    assert f["status"].type == pb.schema.ENUM and list(f["status"].enum_values) == ["active", "inactive"]
    assert f["profile"].type == pb.schema.JSON
    assert f["enrolledAt"].type == pb.schema.TIMESTAMP
    (m,) = schema.models
    assert [list(u.fields) for u in m.unique_together] == [["firstName", "email"]]


def test_get_schema_returns_the_pushed_schema(server):
    pushed = server.push_schema(SCHOOL).schema
    got = server.get_schema()
    assert got == pushed


def test_repushing_an_identical_schema_is_a_no_op(server):
    first = server.push_schema(SCHOOL)
    again = server.push_schema(SCHOOL)
    assert list(again.changes) == []
    assert again.schema == first.schema
    assert server.get_schema().revision == 1


def test_dropping_a_field_without_force_is_refused_as_destructive(server):
    before = server.push_schema([STUDENTS]).schema
    expect_error(
        grpc.StatusCode.FAILED_PRECONDITION,
        server.push_schema,
        [students_with(age=None)],
        reason="destructive_change",
    )
    assert server.get_schema() == before


def test_changing_a_field_type_without_force_is_refused_as_destructive(server):
    before = server.push_schema([STUDENTS]).schema
    expect_error(
        grpc.StatusCode.FAILED_PRECONDITION,
        server.push_schema,
        [students_with(age={"name": "age", "type": "STRING"})],
        reason="destructive_change",
    )
    assert server.get_schema() == before


def test_dropping_a_model_without_force_is_refused_as_destructive(server):
    before = server.push_schema(SCHOOL).schema
    expect_error(grpc.StatusCode.FAILED_PRECONDITION, server.push_schema, [STUDENTS], reason="destructive_change")
    assert server.get_schema() == before


def test_refused_destructive_push_keeps_existing_records(server):
    server.push_schema([STUDENTS])
    server.create("students", {"firstName": "Ada", "age": 36}, id="s1")
    expect_error(grpc.StatusCode.FAILED_PRECONDITION, server.push_schema, [students_with(age=None)])
    assert server.get_data("students", "s1")["age"] == 36


def test_dropping_a_field_with_force_applies(server):
    server.push_schema([STUDENTS])
    server.create("students", {"firstName": "Ada", "age": 36}, id="s1")
    resp = server.push_schema([students_with(age=None)], force=True)
    assert resp.schema.revision == 2
    assert any("age" in line for line in resp.changes), list(resp.changes)
    assert "age" not in fields_of(server.get_schema(), "students")
    assert server.get_data("students", "s1") == {"firstName": "Ada", "isActive": True}
    expect_error(INVALID, server.create, "students", {"firstName": "Bob", "age": 3}, reason="unknown_field", field="age")


def test_changing_a_field_type_with_force_applies(server):
    server.push_schema([STUDENTS])
    resp = server.push_schema([students_with(age={"name": "age", "type": "STRING"})], force=True)
    assert resp.schema.revision == 2
    assert fields_of(server.get_schema(), "students")["age"].type == pb.schema.STRING
    rc = server.create("students", {"firstName": "Ada", "age": "thirty-six"}, id="s1")
    assert rc.success
    assert server.get_data("students", "s1")["age"] == "thirty-six"


def test_adding_a_field_is_applied_without_force(server):
    server.push_schema([STUDENTS])
    server.create("students", {"firstName": "Ada"}, id="s1")
    m = copy.deepcopy(STUDENTS)
    m["fields"].append({"name": "nickname", "type": "STRING", "maxLength": 20})
    resp = server.push_schema([m])
    assert resp.schema.revision == 2
    assert any("nickname" in line for line in resp.changes), list(resp.changes)
    assert fields_of(server.get_schema(), "students")["nickname"].max_length == 20
    assert server.get_data("students", "s1") == {"firstName": "Ada", "isActive": True}
    server.update("students", "s1", {"nickname": "Countess"})
    assert server.get_data("students", "s1")["nickname"] == "Countess"


def test_adding_a_model_leaves_existing_models_alone(server):
    server.push_schema([STUDENTS])
    server.create("students", {"firstName": "Ada"}, id="s1")
    resp = server.push_schema(SCHOOL)
    assert resp.schema.revision == 2
    assert model_names(server.get_schema()) == ["enrollments", "students"]
    assert server.get_data("students", "s1") == {"firstName": "Ada", "isActive": True}


@pytest.mark.parametrize(
    "name",
    ["students; DROP TABLE x", 'a"b', "a'b", "", "with space", "tab\tname", "a`b", "x]y", "teachers\x00x"],
)
def test_sql_looking_model_name_is_rejected_and_nothing_changes(server, name):
    before = server.push_schema([STUDENTS]).schema
    bad = {"name": name, "fields": [{"name": "x", "type": "STRING"}]}
    # A NUL never reaches the schema checks: the wire gate refuses it first.
    reason = "invalid_body" if "\x00" in name else "validation_failed"
    expect_error(INVALID, server.push_schema, [STUDENTS, bad], reason=reason)
    assert server.get_schema() == before
    assert server.create("students", {"firstName": "still works"}).success


@pytest.mark.parametrize("name", ["students; DROP TABLE x", 'a"b', "a'b", "", "x) --", "a b", "nick\x00name"])
def test_sql_looking_field_name_is_rejected_and_nothing_changes(server, name):
    before = server.push_schema([STUDENTS]).schema
    bad = copy.deepcopy(STUDENTS)
    bad["fields"].append({"name": name, "type": "STRING"})
    reason = "invalid_body" if "\x00" in name else "validation_failed"
    expect_error(INVALID, server.push_schema, [bad], reason=reason)
    assert server.get_schema() == before


def test_sql_looking_names_on_first_push_create_nothing(server):
    bad = {"name": 'students"; DROP TABLE x; --', "fields": [{"name": "x", "type": "STRING"}]}
    expect_error(INVALID, server.push_schema, [bad], reason="validation_failed")
    s = server.get_schema()
    assert s.revision == 0 and list(s.models) == []


@pytest.mark.parametrize("name", h.SYSTEM_FIELDS)
def test_field_named_like_a_system_field_is_rejected(server, name):
    m = {"name": "t", "fields": [{"name": name, "type": "STRING"}]}
    expect_error(INVALID, server.push_schema, [m], reason="validation_failed")
    assert server.get_schema().revision == 0


def test_enum_field_without_values_is_rejected(server):
    m = {"name": "t", "fields": [{"name": "status", "type": "ENUM"}]}
    expect_error(INVALID, server.push_schema, [m], reason="validation_failed")
    assert server.get_schema().revision == 0


def test_field_without_a_type_is_rejected(server):
    m = {"name": "t", "fields": [{"name": "x"}]}
    expect_error(INVALID, server.push_schema, [m], reason="validation_failed")
    assert server.get_schema().revision == 0


def test_duplicate_field_names_are_rejected(server):
    m = {"name": "t", "fields": [{"name": "x", "type": "STRING"}, {"name": "x", "type": "INTEGER"}]}
    expect_error(INVALID, server.push_schema, [m], reason="validation_failed")
    assert server.get_schema().revision == 0


def test_duplicate_model_names_are_rejected(server):
    expect_error(INVALID, server.push_schema, [STUDENTS, STUDENTS], reason="validation_failed")
    assert server.get_schema().revision == 0


def test_unique_together_naming_an_unknown_field_is_rejected(server):
    m = copy.deepcopy(ENROLLMENTS)
    m["uniqueTogether"] = [{"fields": ["studentId", "nope"]}]
    expect_error(INVALID, server.push_schema, [m], reason="validation_failed")
    assert server.get_schema().revision == 0


def test_default_value_of_the_wrong_type_is_rejected(server):
    m = {"name": "t", "fields": [{"name": "flag", "type": "BOOLEAN", "defaultValue": "yes"}]}
    expect_error(INVALID, server.push_schema, [m], reason="validation_failed")
    assert server.get_schema().revision == 0


def test_models_are_independent(server):
    server.push_schema(SCHOOL)
    server.create("students", {"firstName": "Ada", "email": "ada@example.com"}, id="same")
    server.create("enrollments", {"studentId": "same", "course": "math", "email": "ada@example.com"}, id="same")
    assert server.get_data("students", "same") == {"firstName": "Ada", "email": "ada@example.com", "isActive": True}
    assert server.get_data("enrollments", "same") == {"studentId": "same", "course": "math", "email": "ada@example.com"}
    server.delete("enrollments", "same")
    server.assert_not_found("enrollments", "same")
    assert server.get("students", "same").version == 1
    expect_error(INVALID, server.create, "enrollments", {"studentId": "a", "course": "b", "firstName": "x"},
                 reason="unknown_field", field="firstName")


def test_repush_identical_after_records_keeps_them(server):
    server.push_schema(SCHOOL)
    server.create("students", {"firstName": "Ada"}, id="s1")
    server.push_schema(SCHOOL)
    assert server.get("students", "s1").version == 1


def test_schema_field_names_are_case_sensitive_and_reject_unknown_case(server):
    server.push_schema([STUDENTS])
    expect_error(INVALID, server.create, "students", {"firstname": "ada"}, reason="unknown_field", field="firstname")


# -- edits that cannot overwrite each other -------------------------------------


def push(server, models, **kw):
    req = pb.schema.PushSchemaRequest(schema=h.schema_msg(models), **kw)
    return server.call("PushSchema", req)


def test_a_push_from_a_stale_revision_is_refused_naming_the_current_one(server):
    base = server.push_schema([STUDENTS]).schema.revision
    server.push_schema(SCHOOL)  # someone else's edit: revision base + 1
    before = server.get_schema()
    d = expect_error(grpc.StatusCode.ABORTED, push, server, [STUDENTS, ENROLLMENTS],
                     expected_revision=pb.wrappers.Int64Value(value=base),
                     reason="version_conflict", field="expectedRevision")
    assert f"revision {before.revision}" in d.message, d.message
    assert server.get_schema() == before
    # the revision a fetched schema carries counts the same way
    stale = h.schema_msg([STUDENTS])
    stale.revision = base
    expect_error(grpc.StatusCode.ABORTED, server.call, "PushSchema",
                 pb.schema.PushSchemaRequest(schema=stale), reason="version_conflict")
    # from the current revision it applies
    resp = push(server, SCHOOL + [{"name": "rooms", "fields": [{"name": "no", "type": "INTEGER"}]}],
                expected_revision=pb.wrappers.Int64Value(value=before.revision))
    assert resp.schema.revision == before.revision + 1


def test_http_push_takes_the_revision_from_if_match(server):
    rev = server.push_schema([STUDENTS]).schema.revision
    from google.protobuf import json_format

    body = json_format.MessageToDict(pb.schema.PushSchemaRequest(schema=h.schema_msg([STUDENTS, ENROLLMENTS])))
    r = server.http("PUT", "/v1/schema", json_body=body, headers={"If-Match": f'"{rev + 5}"'})
    assert r.status_code == 412 and r.json()["code"] == "version_conflict", r.text
    r = server.http("PUT", "/v1/schema", json_body=body, headers={"If-Match": f'"{rev}"'})
    assert r.status_code == 200, r.text
    assert r.json()["schema"]["revision"] == str(rev + 1)


def test_merge_adds_models_and_fields_without_resending_the_rest(server):
    server.push_schema(SCHOOL)
    before = server.get_schema()
    resp = push(server, [{"name": "students", "fields": [{"name": "nickname", "type": "STRING"}]},
                         {"name": "rooms", "fields": [{"name": "no", "type": "INTEGER"}]}],
                merge=True)
    after = resp.schema
    assert after.revision == before.revision + 1
    assert model_names(after) == ["enrollments", "rooms", "students"]
    assert set(fields_of(after, "students")) == set(fields_of(before, "students")) | {"nickname"}
    assert fields_of(after, "enrollments") == fields_of(before, "enrollments")


def test_the_destructive_change_error_says_to_send_everything_first(server):
    server.push_schema(SCHOOL)
    d = expect_error(grpc.StatusCode.FAILED_PRECONDITION, server.push_schema, [STUDENTS],
                     reason="destructive_change")
    assert d.message.index("send every model (GET the schema first)") < d.message.index("force"), d.message
