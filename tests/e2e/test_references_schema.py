"""Relations between models, the schema side (issue 18 item 1): REFERENCE
fields with `references` and `onDelete`, what a push checks, and which
changes to them are destructive."""

import grpc
import pytest

import harness as h
from harness import expect_error

INVALID = grpc.StatusCode.INVALID_ARGUMENT
PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION

COUNTRIES = {"name": "countries", "fields": [{"name": "code", "type": "STRING", "required": True}]}
CITIES = {"name": "cities", "fields": [
    {"name": "name", "type": "STRING"},
    {"name": "country", "type": "REFERENCE", "references": "countries", "onDelete": "CASCADE"}]}
STUDENTS = {"name": "students", "fields": [
    {"name": "firstName", "type": "STRING"},
    {"name": "city", "type": "REFERENCE", "references": "cities"}]}
SCHEMA = [COUNTRIES, CITIES, STUDENTS]


def field(schema, model, name):
    m = next(m for m in schema.models if m.name == model)
    return next(f for f in m.fields if f.name == name)


def with_field(model, name, **changes):
    """model with field `name` changed (changes of None remove a key)."""
    out = {"name": model["name"], "fields": []}
    for f in model["fields"]:
        if f["name"] == name:
            f = {**f, **changes}
            f = {k: v for k, v in f.items() if v is not None}
        out["fields"].append(f)
    return out


def without_field(model, name):
    return {"name": model["name"], "fields": [f for f in model["fields"] if f["name"] != name]}


def test_a_pushed_reference_reads_back_with_its_target_and_on_delete(server):
    server.push_schema(SCHEMA)
    got = server.get_schema()
    city = field(got, "students", "city")
    assert city.type == h.pb.schema.REFERENCE and city.references == "cities"
    assert city.on_delete == h.pb.schema.RESTRICT  # unset is RESTRICT, and says so
    assert field(got, "cities", "country").on_delete == h.pb.schema.CASCADE
    doc = server.http("GET", "/v1/schema").json()
    fields = {f["name"]: f for m in doc["models"] for f in m["fields"] if m["name"] == "students"}
    assert fields["city"] == {"name": "city", "type": "REFERENCE", "references": "cities",
                              "onDelete": "RESTRICT"}
    # the same schema again is no change
    again = server.push_schema(SCHEMA)
    assert list(again.changes) == [] and again.schema.revision == got.revision


def test_a_self_reference_is_allowed(server):
    tree = {"name": "nodes", "fields": [
        {"name": "parent", "type": "REFERENCE", "references": "nodes", "onDelete": "CASCADE"}]}
    assert "create model nodes" in server.push_schema([tree]).changes


@pytest.mark.parametrize("bad, path, words", [
    (with_field(STUDENTS, "city", references="towns"), "models[2].fields[1].references", "not in the schema"),
    (with_field(STUDENTS, "city", references=None), "models[2].fields[1].references", "names the model"),
    (with_field(STUDENTS, "firstName", references="cities"), "models[2].fields[0].references",
     "only REFERENCE"),
    (with_field(STUDENTS, "firstName", onDelete="CASCADE"), "models[2].fields[0].onDelete", "only REFERENCE"),
    (with_field(STUDENTS, "city", onDelete="SET_NULL", required=True), "models[2].fields[1].onDelete",
     "required"),
    # a reference names its target exactly
    (with_field(STUDENTS, "city", references="Cities"), "models[2].fields[1].references", "not in the schema"),
])
def test_a_bad_reference_is_refused_naming_it_and_nothing_changes(server, bad, path, words):
    d = expect_error(INVALID, server.push_schema, [COUNTRIES, CITIES, bad], reason="validation_failed",
                     field=path)
    assert words in d.message
    assert server.get_schema().revision == 0


def test_set_null_is_accepted_on_an_optional_reference(server):
    server.push_schema([COUNTRIES, CITIES, with_field(STUDENTS, "city", onDelete="SET_NULL")])
    assert field(server.get_schema(), "students", "city").on_delete == h.pb.schema.SET_NULL


def test_a_referenced_model_cannot_be_dropped_while_a_field_points_at_it(server):
    server.push_schema(SCHEMA)
    # the students' city would point at nothing: not a valid schema, forced or not
    for force in (False, True):
        d = expect_error(INVALID, server.push_schema, [COUNTRIES, STUDENTS], force=force,
                         reason="validation_failed", field="models[1].fields[1].references")
        assert "'cities' is not in the schema" in d.message
    # dropping the referring field too drops data: destructive unless forced
    expect_error(PRECONDITION, server.push_schema, [COUNTRIES, without_field(STUDENTS, "city")],
                 reason="destructive_change")
    out = server.push_schema([COUNTRIES, without_field(STUDENTS, "city")], force=True)
    assert "drop model cities (forced)" in out.changes and "drop field students.city (forced)" in out.changes


def test_changing_a_references_target_is_destructive_and_forced_clears_the_values(server):
    towns = {"name": "towns", "fields": [{"name": "name", "type": "STRING"}]}
    server.push_schema(SCHEMA + [towns])
    server.create("countries", {"code": "GB"}, id="gb")
    server.create("cities", {"name": "London", "country": "gb"}, id="lon")
    server.create("towns", {"name": "Bath"}, id="lon")  # the same id in the new target
    server.create("students", {"firstName": "Ada", "city": "lon"}, id="ada")
    moved = with_field(STUDENTS, "city", references="towns")
    d = expect_error(PRECONDITION, server.push_schema, [COUNTRIES, CITIES, moved, towns],
                     reason="destructive_change", field="students.city")
    assert "from cities to towns" in d.message
    assert server.get_data("students", "ada") == {"firstName": "Ada", "city": "lon"}
    out = server.push_schema([COUNTRIES, CITIES, moved, towns], force=True)
    assert any("students.city to reference towns instead of cities" in c for c in out.changes), out.changes
    # an id of a city means nothing among towns: the value is gone
    assert server.get_data("students", "ada") == {"firstName": "Ada"}
    assert field(server.get_schema(), "students", "city").references == "towns"


def test_changing_on_delete_is_metadata_only(server):
    server.push_schema(SCHEMA)
    server.create("countries", {"code": "GB"}, id="gb")
    server.create("cities", {"name": "London", "country": "gb"}, id="lon")
    server.create("students", {"firstName": "Ada", "city": "lon"}, id="ada")
    out = server.push_schema([COUNTRIES, CITIES, with_field(STUDENTS, "city", onDelete="SET_NULL")])
    assert list(out.changes) == ["update field students.city"]
    assert server.get_data("students", "ada")["city"] == "lon"


def test_adding_a_reference_to_a_model_with_records(server):
    server.push_schema([COUNTRIES, CITIES, without_field(STUDENTS, "city")])
    server.create("countries", {"code": "GB"}, id="gb")
    server.create("cities", {"name": "London", "country": "gb"}, id="lon")
    server.create("students", {"firstName": "Ada"}, id="ada")
    # required without a default: the existing records would have none
    expect_error(INVALID, server.push_schema, [COUNTRIES, CITIES, with_field(STUDENTS, "city", required=True)],
                 reason="validation_failed", field="city")
    # a default naming no city would leave every existing record dangling
    d = expect_error(INVALID, server.push_schema,
                     [COUNTRIES, CITIES, with_field(STUDENTS, "city", required=True, defaultValue="nowhere")],
                     reason="reference_not_found", field="city")
    assert "nowhere" in d.message
    assert server.get_data("students", "ada") == {"firstName": "Ada"}
    # an optional one: existing records have none
    server.push_schema(SCHEMA)
    assert server.get_data("students", "ada") == {"firstName": "Ada"}
    # a required one whose default exists: every record gets it
    server.push_schema([COUNTRIES, CITIES, without_field(STUDENTS, "city")], force=True)
    server.push_schema([COUNTRIES, CITIES, with_field(STUDENTS, "city", required=True, defaultValue="lon")])
    assert server.get_data("students", "ada") == {"firstName": "Ada", "city": "lon"}


def test_a_merge_push_adds_a_reference(server):
    server.push_schema([COUNTRIES, {"name": "cities", "fields": [{"name": "name", "type": "STRING"}]}])
    out = server.call("PushSchema", h.pb.schema.PushSchemaRequest(
        merge=True, schema=h.schema_msg([{"name": "cities", "fields": [
            {"name": "country", "type": "REFERENCE", "references": "countries"}]}])))
    assert "add field cities.country" in out.changes
    assert field(server.get_schema(), "cities", "country").references == "countries"


def test_a_reference_value_must_be_an_id_string(server):
    server.push_schema(SCHEMA)
    for bad in (42, "", "has space", "x" * 129, {"id": "lon"}):
        expect_error(INVALID, server.create, "students", {"firstName": "A", "city": bad},
                     reason="validation_failed", field="city")


def test_the_openapi_document_shows_a_reference_as_a_string_naming_its_model(server):
    server.push_schema(SCHEMA)
    doc = server.http("GET", "/v1/openapi.json").json()
    text = str(doc)
    assert "'x-recordd-references': 'cities'" in text
