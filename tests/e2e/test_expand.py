"""GetRecord / ListRecords expand and read_mask (docs/API.md "Relations:
expand and fields"), over gRPC and the HTTP gateway."""

import grpc
import pytest
from google.protobuf import field_mask_pb2

import harness as h
from harness import expect_error

SCHEMA = [
    {"name": "planets", "fields": [{"name": "name", "type": "STRING"}]},
    {"name": "continents", "fields": [
        {"name": "name", "type": "STRING"},
        {"name": "planet", "type": "REFERENCE", "references": "planets"},
    ]},
    {"name": "countries", "fields": [
        {"name": "code", "type": "STRING"},
        {"name": "continent", "type": "REFERENCE", "references": "continents"},
    ]},
    {"name": "cities", "fields": [
        {"name": "name", "type": "STRING"},
        {"name": "population", "type": "INTEGER"},
        {"name": "country", "type": "REFERENCE", "references": "countries"},
    ]},
    {"name": "students", "fields": [
        {"name": "firstName", "type": "STRING"},
        {"name": "age", "type": "INTEGER"},
        {"name": "city", "type": "REFERENCE", "references": "cities"},
    ]},
    # eleven references side by side: the paths limit
    {"name": "wide", "fields": [{"name": f"r{i}", "type": "REFERENCE", "references": "countries"}
                                for i in range(11)]},
]


@pytest.fixture
def world(server):
    server.push_schema(SCHEMA)
    server.create("planets", {"name": "Earth"}, id="earth")
    server.create("continents", {"name": "Europe", "planet": "earth"}, id="eu")
    server.create("countries", {"code": "FR", "continent": "eu"}, id="fr")
    server.create("countries", {"code": "DE", "continent": "eu"}, id="de")
    server.create("cities", {"name": "Paris", "population": 2100000, "country": "fr"}, id="paris")
    server.create("cities", {"name": "Berlin", "population": 3600000, "country": "de"}, id="berlin")
    server.create("students", {"firstName": "Ada", "age": 36, "city": "paris"}, id="ada")
    server.create("students", {"firstName": "Bob", "age": 20}, id="bob")  # no city
    return server


def get(srv, id, expand=(), mask=None, model="students"):
    req = h.pb.records.GetRecordRequest(model=model, id=id, expand=list(expand))
    if mask is not None:
        req.read_mask.CopyFrom(field_mask_pb2.FieldMask(paths=list(mask)))
    return srv.call("GetRecord", req)


def list_(srv, expand=(), mask=None, model="students", **kw):
    req = h.pb.records.ListRecordsRequest(model=model, expand=list(expand), **kw)
    if mask is not None:
        req.read_mask.CopyFrom(field_mask_pb2.FieldMask(paths=list(mask)))
    return srv.call("ListRecords", req)


def http_get(srv, id, query="", model="students"):
    r = srv.http("GET", f"/v1/models/{model}/{id}" + (f"?{query}" if query else ""))
    return r


# ---- GetRecord over gRPC ------------------------------------------------------------


def test_expand_one_level_keeps_data_and_inlines_the_target(world):
    plain = get(world, "ada")
    r = get(world, "ada", ["city"])
    assert h.to_dict(r.data) == h.to_dict(plain.data) == {"firstName": "Ada", "age": 36, "city": "paris"}
    assert len(plain.expanded) == 0
    assert list(r.expanded.keys()) == ["city"]
    e = r.expanded["city"]
    assert not e.omitted
    assert e.record.model == "cities" and e.record.id == "paris"
    assert h.to_dict(e.record.data) == {"name": "Paris", "population": 2100000, "country": "fr"}
    assert e.record.version == 1 and e.record.group == "default"
    assert e.record.read_at == r.read_at  # one snapshot
    assert len(e.record.expanded) == 0  # not asked for


def test_expand_two_and_three_levels(world):
    r = get(world, "ada", ["city.country"])  # implies "city"
    city = r.expanded["city"].record
    assert city.id == "paris"
    country = city.expanded["country"].record
    assert country.id == "fr" and h.to_dict(country.data) == {"code": "FR", "continent": "eu"}
    assert len(country.expanded) == 0
    r = get(world, "ada", ["city.country.continent", "city"])
    cont = r.expanded["city"].record.expanded["country"].record.expanded["continent"]
    assert cont.record.id == "eu" and h.to_dict(cont.record.data) == {"name": "Europe", "planet": "earth"}
    assert len(cont.record.expanded) == 0
    assert r.expanded["city"].record.expanded["country"].record.read_at == r.read_at


def test_expand_a_null_reference_has_no_entry(world):
    r = get(world, "bob", ["city.country"])
    assert h.to_dict(r.data) == {"firstName": "Bob", "age": 20}
    assert len(r.expanded) == 0
    # a cleared reference: no entry either, while its neighbour on the page has one
    world.create("students", {"firstName": "Eve", "city": "berlin"}, id="eve")
    world.update("students", "eve", {"city": None})
    by_id = {r.id: r for r in list_(world, ["city"]).records}
    assert len(by_id["eve"].expanded) == 0 and len(by_id["bob"].expanded) == 0
    assert by_id["ada"].expanded["city"].record.id == "paris"


def test_expand_a_target_that_no_longer_exists_is_omitted(world):
    world.create("cities", {"name": "Atlantis"}, id="atlantis")
    world.create("students", {"firstName": "Cy", "city": "atlantis"}, id="cy")
    org = get(world, "cy").organization_id
    world.sql_write(f"DELETE FROM \"r_{org}__cities\" WHERE _id = 'atlantis'")  # behind the server's back
    r = get(world, "cy", ["city.country"])
    assert h.to_dict(r.data)["city"] == "atlantis"
    e = r.expanded["city"]
    assert e.omitted and not e.HasField("record")


def test_expand_hides_what_the_caller_may_not_read(world):
    world.create("cities", {"name": "Hidden", "population": 7, "country": "fr"}, id="hidden", group="secret")
    world.create("students", {"firstName": "Dee", "city": "hidden"}, id="dee")
    caps = [
        {"can": ["read"], "model": "students", "group": "*"},
        {"can": ["read"], "model": "cities", "group": "default"},  # not "secret"
        {"can": ["read"], "model": "countries", "group": "*"},
    ]
    limited = world.as_(world.create_key(role="reader", caps=caps)["key"])
    r = get(limited, "dee", ["city.country"])
    e = r.expanded["city"]
    assert e.omitted and not e.HasField("record")
    assert b"Hidden" not in r.SerializeToString()
    # the same caller does see a city in its group, and the country below it
    r = get(limited, "ada", ["city.country"])
    assert r.expanded["city"].record.expanded["country"].record.id == "fr"
    # HTTP says the same
    body = http_get(limited, "dee", "expand=city.country").json()
    assert body["expanded"] == {"city": {"omitted": True}}


def test_expand_keeps_only_the_fields_a_field_scoped_cap_reads(world):
    caps = [
        {"can": ["read"], "model": "students", "group": "*"},
        {"can": ["read"], "model": "cities", "group": "*", "fields": ["name"]},
        {"can": ["read"], "model": "countries", "group": "*"},
    ]
    limited = world.as_(world.create_key(role="reader", caps=caps)["key"])
    r = get(limited, "ada", ["city.country"])
    city = r.expanded["city"].record
    assert h.to_dict(city.data) == {"name": "Paris"}
    # the country id is not readable, so it is not followed either
    assert len(city.expanded) == 0
    # no read capability at all on the target model: omitted
    caps = [{"can": ["read"], "model": "students", "group": "*"}]
    none = world.as_(world.create_key(role="reader", caps=caps)["key"])
    r = get(none, "ada", ["city"])
    assert r.expanded["city"].omitted and not r.expanded["city"].HasField("record")


# ---- read_mask ------------------------------------------------------------------------


def test_read_mask_top_level_keeps_system_fields(world):
    r = get(world, "ada", mask=["firstName"])
    assert h.to_dict(r.data) == {"firstName": "Ada"}
    assert r.id == "ada" and r.version == 1 and r.model == "students" and r.HasField("created_at")
    assert len(r.expanded) == 0
    # a system field is allowed and always there anyway
    r = get(world, "ada", mask=["id", "age"])
    assert h.to_dict(r.data) == {"age": 36}


def test_read_mask_dotted_path_implies_expansion(world):
    r = get(world, "ada", mask=["firstName", "city.name"])
    assert h.to_dict(r.data) == {"firstName": "Ada", "city": "paris"}
    city = r.expanded["city"].record
    assert city.id == "paris" and h.to_dict(city.data) == {"name": "Paris"}
    r = get(world, "ada", mask=["city.country.code"])
    assert h.to_dict(r.data) == {"city": "paris"}
    city = r.expanded["city"].record
    assert h.to_dict(city.data) == {"country": "fr"}
    assert h.to_dict(city.expanded["country"].record.data) == {"code": "FR"}


def test_read_mask_in_its_json_form_names_camel_case_fields(world):
    """JSON clients (grpcurl, buf curl, json_format) send readMask as
    "firstName,city.name"; the proto3 JSON mapping turns each path into
    snake_case ("first_name"), which the server takes back to the field."""
    from google.protobuf import json_format

    req = json_format.ParseDict({"model": "students", "id": "ada", "readMask": "firstName,city.name"},
                                h.pb.records.GetRecordRequest())
    assert list(req.read_mask.paths) == ["first_name", "city.name"]
    r = world.call("GetRecord", req)
    assert h.to_dict(r.data) == {"firstName": "Ada", "city": "paris"}
    assert h.to_dict(r.expanded["city"].record.data) == {"name": "Paris"}
    # a name that is neither a field nor one in camelCase is still refused
    expect_error(grpc.StatusCode.INVALID_ARGUMENT, get, world, "ada", mask=["first_nam"],
                 reason="validation_failed", field="readMask")


def test_read_mask_with_expand(world):
    # an expansion none of whose paths the mask selects is left out
    r = get(world, "ada", ["city"], mask=["firstName"])
    assert h.to_dict(r.data) == {"firstName": "Ada"}
    assert len(r.expanded) == 0
    # selecting the reference field selects the whole expanded record
    r = get(world, "ada", ["city.country"], mask=["city"])
    assert h.to_dict(r.data) == {"city": "paris"}
    city = r.expanded["city"].record
    assert h.to_dict(city.data) == {"name": "Paris", "population": 2100000, "country": "fr"}
    assert city.expanded["country"].record.id == "fr"


# ---- limits and errors ------------------------------------------------------------------


@pytest.mark.parametrize("expand,mask,field,words", [
    ([f"r{i}" for i in range(11)], None, "expand", "at most 10 expanded paths"),
    ([f"r{i}" for i in range(9)] + ["r9.continent"], None, "expand", "at most 10 expanded paths"),  # prefixes count
    (["city.country.continent.planet"], None, "expand", "at most 3 levels"),
    (["nope"], None, "expand", "'nope'"),
    (["age"], None, "expand", "not a REFERENCE"),
    (["city.name"], None, "expand", "not a REFERENCE"),
    (["city..country"], None, "expand", "empty"),
    ([], ["nope"], "readMask", "'nope'"),
    ([], ["city.nope"], "readMask", "'nope'"),
    ([], ["age.x"], "readMask", "not a REFERENCE"),
    ([], ["city.country.continent.planet.name"], "readMask", "at most 3 levels"),
    ([f"r{i}" for i in range(10)], ["r10.code"], "readMask", "at most 10 expanded paths"),
])
def test_expand_and_mask_limits(world, expand, mask, field, words):
    model = "wide" if any(p.startswith("r") for p in list(expand) + list(mask or ())) else "students"
    if model == "wide":
        world.create("wide", {f"r{i}": "fr" for i in range(11)}, id="w")
    rid = "w" if model == "wide" else "ada"
    for call in (lambda: get(world, rid, expand, mask, model=model), lambda: list_(world, expand, mask, model=model)):
        d = expect_error(grpc.StatusCode.INVALID_ARGUMENT, call, reason="validation_failed", field=field)
        assert words in d.message, d.message
    q = "&".join(([f"expand={','.join(expand)}"] if expand else []) + ([f"fields={','.join(mask)}"] if mask else []))
    for path in (f"/v1/models/{model}/{rid}?{q}", f"/v1/models/{model}?{q}"):
        r = world.http("GET", path)
        assert r.status_code == 422, r.text
        p = r.json()
        assert p["code"] == "validation_failed" and words in p["detail"], p


def test_ten_paths_within_three_levels_are_accepted(world):
    world.create("wide", {f"r{i}": "fr" for i in range(11)}, id="w")
    r = get(world, "w", [f"r{i}" for i in range(10)], model="wide")
    assert sorted(r.expanded.keys()) == sorted(f"r{i}" for i in range(10))
    # implied prefixes count: 3 paths
    r = get(world, "ada", ["city.country.continent"])
    assert r.expanded["city"].record.expanded["country"].record.expanded["continent"].record.id == "eu"


# ---- ListRecords ------------------------------------------------------------------------


def test_list_expand_shared_and_missing_targets(world):
    for i in range(5):
        world.create("students", {"firstName": f"P{i}", "city": "paris"}, id=f"p{i}")
    world.create("students", {"firstName": "B0", "city": "berlin"}, id="b0")
    resp = list_(world, ["city.country"], page_size=100)
    by_id = {r.id: r for r in resp.records}
    assert set(by_id) == {"ada", "bob", "b0"} | {f"p{i}" for i in range(5)}
    for rid in ["ada"] + [f"p{i}" for i in range(5)]:
        city = by_id[rid].expanded["city"].record
        assert city.id == "paris" and city.expanded["country"].record.id == "fr"
        assert city.read_at == resp.read_at
    assert by_id["b0"].expanded["city"].record.expanded["country"].record.data["code"] == "DE"
    assert len(by_id["bob"].expanded) == 0
    assert h.to_dict(by_id["b0"].data) == {"firstName": "B0", "city": "berlin"}


def test_list_page_of_100_distinct_targets_and_page_tokens(world):
    world.push_schema(SCHEMA + [
        {"name": "pupils", "fields": [{"name": "n", "type": "INTEGER"},
                                      {"name": "city", "type": "REFERENCE", "references": "cities"}]},
    ])
    # 130 distinct cities: more than two batches of 64 ids in the first page
    bulk_create(world, "cities", {f"c{i:03d}": {"name": f"City {i}", "country": "fr" if i % 2 else "de"}
                                  for i in range(130)})
    bulk_create(world, "pupils", {f"u{i:03d}": {"n": i, "city": f"c{i:03d}"} for i in range(130)})
    seen, token, pages = [], "", 0
    while True:
        resp = list_(world, ["city.country"], model="pupils", page_size=100, page_token=token,
                     mask=["n", "city.name", "city.country.code"])
        pages += 1
        for r in resp.records:
            i = int(r.data["n"])
            assert r.id == f"u{i:03d}"
            assert h.to_dict(r.data) == {"n": i, "city": f"c{i:03d}"}
            city = r.expanded["city"].record
            assert city.id == f"c{i:03d}"
            assert h.to_dict(city.data) == {"name": f"City {i}", "country": "fr" if i % 2 else "de"}
            assert city.expanded["country"].record.data["code"] == ("FR" if i % 2 else "DE")
            seen.append(i)
        token = resp.next_page_token
        if not token:
            break
    assert seen == list(range(130)) and pages == 2


def bulk_create(srv, model, items):
    ops = [h.pb.records.BulkOperation(create=h.pb.records.CreateRecordRequest(model=model, id=k, data=h.struct(v)))
           for k, v in items.items()]
    for i in range(0, len(ops), 50):  # at most 100 operations per call
        resp = srv.call("BulkMutate", h.pb.records.BulkMutateRequest(operations=ops[i:i + 50]))
        assert all(r.applied for r in resp.results)


# ---- HTTP ---------------------------------------------------------------------------------


def test_http_get_with_expand_and_fields(world):
    r = http_get(world, "ada", "expand=city,city.country")
    assert r.status_code == 200, r.text
    b = r.json()
    assert b["data"] == {"firstName": "Ada", "age": 36, "city": "paris"}
    assert b["expanded"]["city"]["record"]["id"] == "paris"
    assert b["expanded"]["city"]["record"]["expanded"]["country"]["record"]["data"] == {"code": "FR",
                                                                                        "continent": "eu"}
    # repeated works like comma-separated
    b2 = http_get(world, "ada", "expand=city&expand=city.country").json()
    assert b2["expanded"] == b["expanded"]
    # fields: verbatim record field names (no camelCase conversion), dotted into expansions
    b = http_get(world, "ada", "fields=firstName,city.name").json()
    assert b["data"] == {"firstName": "Ada", "city": "paris"}
    assert b["expanded"]["city"]["record"]["data"] == {"name": "Paris"}
    assert "expanded" not in b["expanded"]["city"]["record"] or not b["expanded"]["city"]["record"]["expanded"]
    assert b["id"] == "ada" and b["version"] in (1, "1")
    # readMask / read_mask take the names verbatim too (not the FieldMask JSON camelCase form)
    for q in ("readMask=firstName,city.name", "read_mask=firstName&read_mask=city.name"):
        b2 = http_get(world, "ada", q).json()
        assert b2["data"] == {"firstName": "Ada", "city": "paris"}, q
        assert b2["expanded"]["city"]["record"]["data"] == {"name": "Paris"}, q
    # without either: the record as before
    b = http_get(world, "ada").json()
    assert b["data"] == {"firstName": "Ada", "age": 36, "city": "paris"} and not b.get("expanded")


def test_http_list_with_expand_fields_and_page_token(world):
    for i in range(3):
        world.create("students", {"firstName": f"P{i}", "city": "berlin" if i % 2 else "paris"}, id=f"p{i}")
    got, token = [], ""
    while True:
        q = "expand=city.country&fields=firstName,city.country.code&pageSize=2" + (f"&pageToken={token}" if token else "")
        r = world.http("GET", f"/v1/models/students?{q}")
        assert r.status_code == 200, r.text
        b = r.json()
        for rec in b["records"]:
            got.append(rec["id"])
            if rec["id"] == "bob":
                assert rec["data"] == {"firstName": "Bob"} and not rec.get("expanded")
                continue
            city = rec["expanded"]["city"]["record"]
            assert rec["data"]["city"] == city["id"]
            assert city["data"] == {"country": "fr" if city["id"] == "paris" else "de"}
            assert city["expanded"]["country"]["record"]["data"] == {"code": "FR" if city["id"] == "paris" else "DE"}
        token = b.get("nextPageToken", "")
        if not token:
            break
    assert sorted(got) == ["ada", "bob", "p0", "p1", "p2"]


# ---- OpenAPI ------------------------------------------------------------------------------


def _resolve(doc, obj):
    ref = obj.get("$ref")
    if ref is None:
        return obj
    for part in ref.removeprefix("#/").split("/"):
        doc = doc[part]
    return doc


def test_openapi_documents_expand_fields_and_expanded(world):
    for auth in (None, h.DEFAULT):  # generic and typed from the schema
        r = world.http("GET", "/v1/openapi.json", auth=auth)
        assert r.status_code == 200, r.text
        doc = r.json()
        typed = auth is not None
        for path in (["/v1/models/students/{id}", "/v1/models/students"] if typed else
                     ["/v1/models/{model}/{id}", "/v1/models/{model}"]):
            params = [_resolve(doc, p) for p in doc["paths"][path]["get"]["parameters"]]
            params = {p.get("name"): p for p in params}
            assert params["expand"]["in"] == "query" and params["expand"]["schema"]["type"] == "array"
            assert "comma-separated" in params["expand"]["description"]
            assert params["fields"]["in"] == "query" and params["fields"]["schema"] == {"type": "string"}
            assert "readMask" not in params
        schemas = doc["components"]["schemas"]
        assert "expanded" in schemas["recordd.v1.Record"]["properties"]
        assert set(schemas["recordd.v1.ExpandedRecord"]["properties"]) == {"record", "omitted"}
        if typed:
            exp = schemas["students.Record"]["properties"]["expanded"]
            assert exp["properties"] == {"city": {"$ref": "#/components/schemas/cities.ExpandedRecord"}}
            assert schemas["cities.ExpandedRecord"]["properties"]["record"] == {
                "$ref": "#/components/schemas/cities.Record"}
