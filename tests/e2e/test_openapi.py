"""GET /v1/openapi.json: the HTTP API as an OpenAPI 3.1 document, generic
without a credential and typed from the organisation's schema with one;
checked by the tools its users run (swagger-parser, Redocly CLI,
openapi-typescript, tsc, openapi-fetch: tests/node/package.json, installed
into build/node by make node-deps or here). The npm tests skip only when npm
itself is missing; a failed install is a failure."""

import json
import os
import shutil
import subprocess

import pytest

import harness as h

NODE_BIN = h.NODE_DIR / "node_modules" / ".bin"
HERE = h.REPO / "tests" / "e2e" / "openapi"

TEACHERS = {
    "name": "teachers",
    "fields": [
        {"name": "name", "type": "STRING", "required": True, "maxLength": 80},
        {"name": "badge", "type": "STRING", "immutable": True},
        {"name": "rank", "type": "ENUM", "enumValues": ["junior", "senior"], "defaultValue": "junior"},
        {"name": "score", "type": "NUMBER", "min": 0.5, "max": 9.5},
    ],
}


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    s = h.Server(tmp_path_factory.mktemp("openapi") / "recordd")
    s.start()
    yield s
    problem = s.kill()
    assert problem is None, problem


def doc_of(srv, **kw):
    r = srv.http("GET", "/v1/openapi.json", **kw)
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"].startswith("application/json")
    return r, r.json()


def resolve(doc, obj):
    """obj, or what its $ref names in doc."""
    ref = obj.get("$ref")
    if ref is None:
        return obj
    for part in ref.removeprefix("#/").split("/"):
        doc = doc[part]
    return doc


def operations(doc):
    for path, item in doc["paths"].items():
        for verb, op in item.items():
            yield path, verb, op


# ---- the document ------------------------------------------------------------------


def test_without_a_credential_the_generic_document_of_the_fixed_api(srv):
    srv.push_schema([h.STUDENTS], force=True)
    r, doc = doc_of(srv, auth=None)
    assert doc["openapi"] == "3.1.0"
    routes = {(p, v) for p, v, _ in operations(doc)}
    for route in [
        ("/v1/models/{model}", "post"),
        ("/v1/models/{model}", "get"),
        ("/v1/models/{model}/{id}", "get"),
        ("/v1/models/{model}/{id}", "patch"),
        ("/v1/models/{model}/{id}", "put"),
        ("/v1/models/{model}/{id}", "delete"),
        ("/v1/models/{model}/{id}:claim", "post"),
        ("/v1/models/{model}/{id}:release", "post"),
        ("/v1/commits", "post"),
        ("/v1/changes", "get"),
        ("/v1/schema", "get"),
        ("/v1/schema", "put"),
        ("/v1/tokens", "post"),
        ("/v1/openapi.json", "get"),
        ("/healthz", "get"),
        ("/readyz", "get"),
        ("/metrics", "get"),
        ("/problems/{code}", "get"),
    ]:
        assert route in routes
    # nothing of any organisation's schema
    assert not any("students" in p for p in doc["paths"])
    assert not any(k.startswith("students") for k in doc["components"]["schemas"])
    schemes = doc["components"]["securitySchemes"]
    assert schemes["apiKey"] == {**schemes["apiKey"], "type": "http", "scheme": "bearer"}
    assert schemes["token"]["scheme"] == "bearer"
    assert doc["security"] == [{"apiKey": []}, {"token": []}]
    assert doc["paths"]["/healthz"]["get"]["security"] == []
    assert {} in doc["paths"]["/v1/openapi.json"]["get"]["security"]


def test_a_member_gets_every_model_of_its_schema_typed(srv):
    srv.push_schema([h.STUDENTS, TEACHERS], force=True)
    _, doc = doc_of(srv)
    paths = doc["paths"]
    assert set(paths["/v1/models/students"]) == {"get", "post"}
    assert set(paths["/v1/models/teachers/{id}"]) == {"get", "patch", "put", "delete"}
    assert "/v1/models/{model}" not in paths  # every model has its own paths
    create = paths["/v1/models/students"]["post"]
    assert create["requestBody"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/students.create"}
    assert "201" in create["responses"]
    assert create["responses"]["201"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/students.CommitReceipt"
    }
    params = [resolve(doc, p) for p in create["parameters"]]
    assert not any(p["name"] == "model" for p in params)
    assert {"name": "id", "in": "query", "schema": {"type": "string"}} in params

    s = doc["components"]["schemas"]
    read = s["students"]
    assert read["additionalProperties"] is False
    assert read["required"] == ["firstName"]
    f = read["properties"]
    assert f["firstName"] == {"type": "string", "maxLength": 100}
    assert f["age"]["type"] == "integer" and f["age"]["minimum"] == 0 and f["age"]["maximum"] == 150
    assert f["status"]["enum"] == ["active", "inactive"]
    assert f["isActive"] == {"type": "boolean", "default": True}
    assert f["enrolledAt"] == {"type": "string", "format": "date-time"}
    assert "type" not in f["profile"]  # JSON: any value
    assert f["email"]["x-recordd-unique"] is True
    assert read["x-recordd-unique-together"] == [["firstName", "email"]]

    t = s["teachers.create"]
    assert t["required"] == ["name"]  # rank has a default
    assert t["properties"]["rank"]["default"] == "junior"
    assert t["properties"]["rank"]["enum"] == ["junior", "senior", None]  # null: no value
    assert t["properties"]["score"]["minimum"] == 0.5 and t["properties"]["score"]["maximum"] == 9.5
    assert "readOnly" not in t["properties"]["badge"]  # set on create
    patch = s["teachers.patch"]
    assert "required" not in patch
    assert patch["properties"]["badge"]["readOnly"] is True  # immutable
    assert patch["properties"]["name"]["type"] == "string"  # required: cannot be cleared
    assert patch["properties"]["score"]["type"] == ["number", "null"]

    rec = s["teachers.Record"]["properties"]
    assert rec["data"] == {"$ref": "#/components/schemas/teachers"}
    for system in ["id", "version", "syncId", "createdAt", "updatedAt", "model"]:
        assert rec[system]["readOnly"] is True
    lst = s["students.ListRecordsResponse"]["properties"]["records"]
    assert lst["items"] == {"$ref": "#/components/schemas/students.Record"}


def test_model_names_never_collide_with_the_fixed_components(srv):
    problem = {"name": "Problem", "fields": [{"name": "title", "type": "INTEGER"}]}
    srv.push_schema([h.STUDENTS, problem], force=True)
    _, doc = doc_of(srv)
    s = doc["components"]["schemas"]
    assert s["Problem"]["properties"]["title"]["type"] == "integer"
    assert s["recordd.Problem"]["properties"]["title"]["type"] == "string"
    assert s["Problem.Record"]["properties"]["data"] == {"$ref": "#/components/schemas/Problem"}


def test_each_route_lists_the_problem_codes_it_can_answer(srv):
    srv.push_schema([h.STUDENTS, h.ENROLLMENTS], force=True)
    _, doc = doc_of(srv)

    def codes(path, verb):
        out = {}
        for status, resp in doc["paths"][path][verb]["responses"].items():
            c = resolve(doc, resp).get("content", {}).get("application/problem+json")
            if c:
                out[status] = set(c["schema"]["properties"]["code"]["enum"])
        return out

    patch = codes("/v1/models/students/{id}", "patch")
    assert {"version_conflict", "stale_context", "claimed"} <= patch["409"]
    assert patch["412"] == {"version_conflict", "not_found"}  # If-Match
    assert "unauthenticated" in patch["401"] and "rate_limited" in patch["429"]
    assert patch["404"] == {"not_found"}
    get_schema = codes("/v1/schema", "get")
    assert "409" not in get_schema and "404" not in get_schema
    push = codes("/v1/schema", "put")
    assert "destructive_change" in push["409"]
    assert "sync_id_expired" in codes("/v1/changes", "get")["410"]
    # every model's paths share one copy of each method's problem responses
    refs = [doc["paths"][f"/v1/models/{m}/{{id}}"]["patch"]["responses"]["409"] for m in ["students", "enrollments"]]
    assert refs == [{"$ref": "#/components/responses/UpdateRecord.409"}] * 2
    bulk = codes("/v1/commits", "post")
    assert {"filter_required", "too_many_operations"} <= bulk["422"]
    assert {"version_conflict", "claimed"} <= bulk["422"]  # an all-or-nothing bulk rolled back
    # every code named is one of the catalogue's
    catalogue = set(doc["components"]["schemas"]["recordd.Problem"]["properties"]["code"]["enum"])
    for path, verb, _ in operations(doc):
        if path.startswith("/v1/"):
            for got in codes(path, verb).values():
                assert got <= catalogue
    r = srv.http("GET", "/problems/version_conflict", auth=None)
    assert r.status_code == 200


def test_the_change_feed_is_described_as_server_sent_events(srv):
    _, doc = doc_of(srv, auth=None)
    op = doc["paths"]["/v1/changes"]["get"]
    assert list(op["responses"]["200"]["content"]) == ["text/event-stream"]
    assert "recordd.v1.ChangeEvent" in op["responses"]["200"]["description"]
    assert {"$ref": "#/components/parameters/Last-Event-ID"} in op["parameters"]
    assert "recordd.v1.ChangeEvent" in doc["components"]["schemas"]


def test_a_schema_push_changes_the_document_and_its_etag_at_once(srv):
    srv.push_schema([h.STUDENTS], force=True)
    r1, d1 = doc_of(srv)
    again = srv.http("GET", "/v1/openapi.json", headers={"If-None-Match": r1.headers["ETag"]})
    assert again.status_code == 304 and again.content == b""
    assert again.headers["ETag"] == r1.headers["ETag"]
    srv.push_schema([h.STUDENTS, h.ENROLLMENTS], force=True)
    r2, d2 = doc_of(srv, headers={"If-None-Match": r1.headers["ETag"]})
    assert r2.headers["ETag"] != r1.headers["ETag"]
    assert "/v1/models/enrollments" in d2["paths"] and "/v1/models/enrollments" not in d1["paths"]
    r3, _ = doc_of(srv)
    assert r3.headers["ETag"] == r2.headers["ETag"]  # same schema, same document
    g1, _ = doc_of(srv, auth=None)
    g2, _ = doc_of(srv, auth=None)
    assert g1.headers["ETag"] == g2.headers["ETag"] != r2.headers["ETag"]


def test_the_document_over_grpc_is_the_same(srv, pb):
    srv.push_schema([h.STUDENTS], force=True)
    r, doc = doc_of(srv)
    from google.protobuf import json_format

    out = srv.call("GetOpenApi", pb.schema.GetOpenApiRequest())
    assert f'"{out.etag}"' == r.headers["ETag"]
    assert json_format.MessageToDict(out.document)["paths"].keys() == doc["paths"].keys()


def test_credentials_are_checked_and_organisations_kept_apart(srv):
    srv.push_schema([h.STUDENTS], force=True)
    r = srv.http("GET", "/v1/openapi.json", auth="sk_test_" + "x" * 40)
    assert r.status_code == 401, r.text
    # a credential that may neither read nor administer sees no schema
    writer = srv.mint_offline([{"can": ["create"], "model": "students", "group": "*"}], sub="writer", ttl=600)
    r = srv.http("GET", "/v1/openapi.json", auth=writer["token"])
    assert r.status_code == 403, r.text
    assert r.json()["code"] == "permission_denied"
    # another organisation: its own schema only
    other = srv.create_key(org="other-org")
    view = srv.as_(other["key"])
    view.push_schema([{"name": "invoices", "fields": [{"name": "total", "type": "NUMBER"}]}])
    _, doc = doc_of(srv, auth=other["key"])
    assert "/v1/models/invoices" in doc["paths"]
    assert not any("students" in p for p in doc["paths"])
    _, mine = doc_of(srv)
    assert not any("invoices" in p for p in mine["paths"])


# ---- checked by real tools (npm) ---------------------------------------------------


@pytest.fixture(scope="module")
def node_tools():
    h.node_tools(".bin/redocly", ".bin/openapi-typescript", ".bin/tsc", "openapi-fetch",
                 "@apidevtools/swagger-parser", "@types/node")
    return dict(os.environ, NO_COLOR="1", REDOCLY_TELEMETRY="off", REDOCLY_SUPPRESS_UPDATE_NOTICE="true")


def run(args, env, cwd=None, timeout=300):
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout)


@pytest.fixture
def docs_on_disk(srv, tmp_path):
    srv.push_schema([h.STUDENTS, TEACHERS], force=True)
    generic = tmp_path / "generic.json"
    org = tmp_path / "org.json"
    generic.write_bytes(srv.http("GET", "/v1/openapi.json", auth=None).content)
    org.write_bytes(srv.http("GET", "/v1/openapi.json").content)
    return generic, org


def test_swagger_parser_validates_both_documents(node_tools, docs_on_disk):
    res = run(["node", HERE / "validate.cjs", *docs_on_disk], dict(node_tools, NODE_PATH=str(h.NODE_DIR / "node_modules")))
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.count("valid ") == 2


def test_redocly_lint_finds_no_errors(node_tools, docs_on_disk, tmp_path):
    for doc in docs_on_disk:
        res = run([NODE_BIN / "redocly", "lint", "--format", "json", doc], node_tools, cwd=tmp_path)
        out = res.stdout[res.stdout.find("{") :]
        report = json.loads(out)
        errors = [p for p in report["problems"] if p["severity"] == "error"]
        assert errors == [], json.dumps(errors, indent=1)[:4000]
        assert res.returncode == 0, res.stderr


def typescript_project(tmp_path, doc, env):
    proj = tmp_path / "client"
    proj.mkdir()
    for name in ["client.ts", "tsconfig.json"]:
        shutil.copy(HERE / name, proj / name)
    (proj / "package.json").write_text('{"type": "module", "private": true}\n')
    (proj / "node_modules").symlink_to(h.NODE_DIR / "node_modules")
    # --default-non-nullable false: a field with a default may be left out of a write
    res = run([NODE_BIN / "openapi-typescript", doc, "--default-non-nullable", "false", "-o", proj / "api.d.ts"], env)
    assert res.returncode == 0, res.stdout + res.stderr
    return proj


def test_a_generated_typescript_client_type_checks_and_writes_a_record(srv, node_tools, docs_on_disk, tmp_path):
    _, org = docs_on_disk
    proj = typescript_project(tmp_path, org, node_tools)
    res = run([NODE_BIN / "tsc", "-p", proj], node_tools)
    assert res.returncode == 0, res.stdout + res.stderr
    env = dict(node_tools, RECORDD_URL=srv.http_url, RECORDD_KEY=srv.admin_key)
    res = run(["node", proj / "out" / "client.js"], env, cwd=proj, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
    seen = json.loads(res.stdout)
    assert seen == {
        "created": 201,
        "patched": 200,
        "version": "2",
        "age": 37,
        "firstName": "Ada",
        "stale": 412,
        "staleCode": "version_conflict",
    }
    assert srv.get_data("students", "ts-1")["status"] == "active"


def test_a_field_of_the_wrong_type_is_a_type_error(node_tools, docs_on_disk, tmp_path):
    _, org = docs_on_disk
    proj = typescript_project(tmp_path, org, node_tools)
    src = (proj / "client.ts").read_text()
    assert 'age: 36 }' in src
    (proj / "client.ts").write_text(src.replace("age: 36 }", 'age: "thirty-six" }'))
    res = run([NODE_BIN / "tsc", "-p", proj, "--noEmit"], node_tools)
    assert res.returncode != 0
    assert "client.ts(" in res.stdout and "TS2322" in res.stdout, res.stdout
    assert "'string' is not assignable to type 'number" in res.stdout, res.stdout


def test_every_documented_operation_is_a_route_the_server_answers(srv):
    """The document lists no path or verb the gateway does not route (sent
    without a credential: nothing runs, but a missing route would be 404
    "no route" or 405)."""
    _, doc = doc_of(srv, auth=None)
    for path, verb, _ in operations(doc):
        url = path.replace("{model}", "students").replace("{id}", "x1").replace("{code}", "not_found")
        r = srv.http(verb.upper(), url, auth=None)
        assert r.status_code != 405, (verb, path, r.text)
        if r.status_code == 404:
            assert "no route" not in r.json().get("detail", ""), (verb, path)
