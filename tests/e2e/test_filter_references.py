"""Filters and order_by through REFERENCE fields (issue 18): `city.name`,
`city.country.code`, `city.country.continent.name` (at most 3 references
traversed), over gRPC and HTTP; combined with ordinary conditions; ordering
by a referenced field with keyset pagination; the errors (unknown path,
non-reference segment, too deep, type mismatch) with their positions;
injection attempts; read permission on every traversed model (groups the
caller may read, PERMISSION_DENIED without any); by-filter bulk writes.

The expected results are computed from the data below, so every assertion
checks the server against an independent model of the semantics: a
comparison through a reference matches when the reference is set to a
record the caller may read whose field compares true."""
import urllib.parse

import grpc
import pytest

import harness as h
from harness import expect_error

INVALID = grpc.StatusCode.INVALID_ARGUMENT
DENIED = grpc.StatusCode.PERMISSION_DENIED
pb = h.pb

MODELS = [
    {"name": "continents", "fields": [{"name": "name", "type": "STRING"}]},
    {"name": "countries", "fields": [
        {"name": "code", "type": "STRING"},
        {"name": "continent", "type": "REFERENCE", "references": "continents"}]},
    {"name": "cities", "fields": [
        {"name": "name", "type": "STRING"},
        {"name": "pop", "type": "INTEGER"},
        {"name": "country", "type": "REFERENCE", "references": "countries"}]},
    {"name": "students", "fields": [
        {"name": "firstName", "type": "STRING"},
        {"name": "age", "type": "INTEGER"},
        {"name": "note", "type": "STRING"},
        {"name": "city", "type": "REFERENCE", "references": "cities"},
        {"name": "mentor", "type": "REFERENCE", "references": "students"}]},
]

CONTINENTS = {"k-eu": "Europe", "k-as": "Asia"}
COUNTRIES = {"n-gb": ("GB", "k-eu"), "n-fr": ("FR", "k-eu"), "n-jp": ("JP", "k-as"), "n-xx": ("XX", None)}
# id: (name, pop, country, group)
CITIES = {
    "c-lon": ("London", 9000, "n-gb", "default"),
    "c-man": ("Manchester", 500, "n-gb", "default"),
    "c-par": ("Paris", 2000, "n-fr", "default"),
    "c-tok": ("Tokyo", 14000, "n-jp", "default"),
    "c-sec": ("Secret", 100, "n-gb", "hidden"),  # readable only to whole-model readers
    "c-nul": (None, 10, None, "default"),  # no name, no country
    "c-xx": ("Nowhere", 1, "n-xx", "default"),
}
CITY_CYCLE = ["c-lon", "c-man", "c-par", "c-tok", "c-sec", "c-nul", "c-xx", None, "c-lon", "c-par"]
N = 30


def student(i):
    d = {"firstName": f"s{i:02d}", "age": 18 + i % 7}
    city = CITY_CYCLE[i % len(CITY_CYCLE)]
    if city is not None:
        d["city"] = city
    if i > 0:
        d["mentor"] = f"s-{i // 2:02d}"
    return d


STUDENTS = {f"s-{i:02d}": student(i) for i in range(N)}


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    s = h.Server(tmp_path_factory.mktemp("reffilter") / "recordd")
    s.start()
    s.push_schema(MODELS)
    for k, name in CONTINENTS.items():
        s.create("continents", {"name": name}, id=k)
    for k, (code, cont) in COUNTRIES.items():
        s.create("countries", {"code": code, **({"continent": cont} if cont else {})}, id=k)
    for k, (name, pop, country, group) in CITIES.items():
        d = {"pop": pop}
        if name is not None:
            d["name"] = name
        if country is not None:
            d["country"] = country
        s.create("cities", d, id=k, group=group)
    for k in sorted(STUDENTS):
        s.create("students", STUDENTS[k], id=k)
    yield s
    problem = s.kill()
    if problem:
        pytest.fail(problem, pytrace=False)


# ---- the model of the semantics ----------------------------------------------------------


def city_of(sid, readable=lambda c: True):
    c = STUDENTS[sid].get("city")
    return c if c is not None and readable(c) else None


def country_of(cid):
    return CITIES[cid][2] if cid else None


def where(pred):
    return {sid for sid in STUDENTS if pred(sid)}


def list_call(srv, auth=None, **kw):
    view = srv.as_(auth) if auth else srv
    return view.call("ListRecords", pb.records.ListRecordsRequest(model="students", **kw))


def list_all(srv, page_size=1000, auth=None, **kw):
    out, token, pages = [], "", 0
    while True:
        r = list_call(srv, auth=auth, page_size=page_size, page_token=token, **kw)
        out.extend(r.records)
        pages += 1
        token = r.next_page_token
        if not token:
            return out, pages


def ids(srv, flt, **kw):
    return {r.id for r in list_all(srv, filter=flt, **kw)[0]}


def http_ids(srv, query):
    r = srv.http("GET", "/v1/models/students?" + urllib.parse.urlencode(query))
    assert r.status_code == 200, r.text
    return r.json()


# ---- filters -----------------------------------------------------------------------------


def test_depth_1_2_3_over_grpc(srv):
    london = where(lambda s: city_of(s) == "c-lon")
    assert london and ids(srv, 'city.name = "London"') == london
    gb = where(lambda s: country_of(city_of(s)) == "n-gb")
    assert len(gb) > len(london)
    assert ids(srv, 'city.country.code = "GB"') == gb
    europe = where(lambda s: country_of(city_of(s)) in ("n-gb", "n-fr"))
    assert len(europe) > len(gb)
    assert ids(srv, 'city.country.continent.name = "Europe"') == europe
    assert ids(srv, 'city.country.continent.name = "Asia"') == where(lambda s: city_of(s) == "c-tok")
    # a self-reference: students whose mentor's city is Paris
    assert ids(srv, 'mentor.city.name = "Paris"') == \
        where(lambda s: "mentor" in STUDENTS[s] and city_of(STUDENTS[s]["mentor"]) == "c-par")


def test_depth_1_2_3_over_http(srv):
    body = http_ids(srv, {"filter": 'city.country.code = "FR"', "pageSize": "1000"})
    assert {r["id"] for r in body["records"]} == where(lambda s: city_of(s) == "c-par")
    body = http_ids(srv, {"filter": 'city.country.continent.name = "Asia" AND age >= 18'})
    assert {r["id"] for r in body["records"]} == where(lambda s: city_of(s) == "c-tok")
    body = http_ids(srv, {"filter": 'city.name = "Manchester"'})
    assert {r["id"] for r in body["records"]} == where(lambda s: city_of(s) == "c-man")


def test_combined_with_ordinary_conditions(srv):
    want = where(lambda s: country_of(city_of(s)) == "n-gb" and STUDENTS[s]["age"] < 22
                 and CITIES[city_of(s)][1] > 1000)
    assert want
    assert ids(srv, 'city.country.code = "GB" AND age < 22 AND city.pop > 1000') == want
    assert ids(srv, 'city.pop >= 2000 AND city.pop < 10000 AND firstName != "s00"') == \
        where(lambda s: city_of(s) in ("c-lon", "c-par") and s != "s-00")
    # a reference field compared directly still works, and against a path
    assert ids(srv, 'city = "c-lon" AND city.name = "London"') == where(lambda s: city_of(s) == "c-lon")
    assert ids(srv, 'city = "c-lon" AND city.name = "Paris"') == set()


def test_not_equal_and_null_semantics(srv):
    named = {c for c, v in CITIES.items() if v[0] is not None}
    # != : has a city whose name is set and differs; no city never matches
    assert ids(srv, 'city.name != "London"') == where(lambda s: city_of(s) in named - {"c-lon"})
    # = null: has a city whose name is unset (not: has no city)
    assert ids(srv, "city.name = null") == where(lambda s: city_of(s) == "c-nul")
    assert ids(srv, "city.name != null") == where(lambda s: city_of(s) in named)
    assert ids(srv, "city = null") == where(lambda s: city_of(s) is None)
    # through two references: a country without a continent, a city without a country
    assert ids(srv, "city.country.continent = null") == where(lambda s: city_of(s) == "c-xx")
    assert ids(srv, "city.country = null") == where(lambda s: city_of(s) == "c-nul")


def test_system_fields_at_the_end_of_a_path(srv):
    assert ids(srv, 'city.id = "c-par"') == where(lambda s: city_of(s) == "c-par")
    assert ids(srv, 'city.group = "hidden"') == where(lambda s: city_of(s) == "c-sec")
    assert ids(srv, "city.version = 1 AND city.country.id = \"n-jp\"") == where(lambda s: city_of(s) == "c-tok")
    assert ids(srv, 'city.createdAt > "2000-01-01T00:00:00Z"') == where(lambda s: city_of(s) is not None)


@pytest.mark.parametrize("flt,pos,words", [
    ('city.nam = "x"', 6, "unknown field 'nam' of model 'cities'"),
    ('age = 1 AND city.country.cod = "GB"', 26, "unknown field 'cod' of model 'countries'"),
    ('firstName.x = "a"', 1, "not a REFERENCE"),
    ('city.name.x = "a"', 6, "not a REFERENCE"),
    ('nope.name = "a"', 1, "unknown field 'nope'"),
    ('mentor.city.country.continent.name = "Europe"', 21, "more than 3 references"),
    ('mentor.mentor.mentor.mentor.mentor.mentor.id = "x"', 22, "more than 3 references"),
    ('city.pop = "x"', 12, "field 'city.pop' is INTEGER"),
    ('city.country.code = 5', 21, "field 'city.country.code' is STRING"),
    ('city.createdAt > "yesterday"', 18, "TIMESTAMP"),
    ('city.name < null', 13, "null compares only with = or !="),
])
def test_bad_paths_are_invalid_argument_with_position(srv, flt, pos, words):
    d = expect_error(INVALID, list_call, srv, filter=flt, reason="validation_failed", field="filter")
    assert f"position {pos}" in d.message and words in d.message, d.message
    r = srv.http("GET", "/v1/models/students?" + urllib.parse.urlencode({"filter": flt}))
    assert r.status_code == 422 and r.json()["field"] == "filter", r.text
    assert f"position {pos}" in r.json()["detail"], r.text


@pytest.mark.parametrize("flt,pos", [
    ('city.name" OR 1=1 --', 10),
    ('city."x" = "a"', 6),
    ('city.name" = "London"', 10),
    ("city.name = \"London\" OR 1=1", 22),
    ('city. name = "London"', 6),
    ('city .name = "London"', 6),
    ('city.name; DROP TABLE "r_default__students"; --', 10),
    ("city." * 500 + 'name = "x"', 1),
])
def test_injection_attempts_are_parse_errors(srv, flt, pos):
    d = expect_error(INVALID, list_call, srv, filter=flt, reason="validation_failed", field="filter")
    assert "position" in d.message, d.message
    if pos > 1:
        assert f"position {pos}" in d.message, d.message
    assert len(list_all(srv)[0]) == N


def test_injection_attempts_in_literals_match_nothing(srv):
    for lit in ['London\\" OR 1=1 --', "London' OR '1'='1", 'x\\") OR (1=1', "London; DROP TABLE x"]:
        assert ids(srv, f'city.name = "{lit}"') == set(), lit
        assert ids(srv, f'city.country.code = "{lit}" AND age > 0') == set(), lit
    assert len(list_all(srv)[0]) == N


# ---- order_by ----------------------------------------------------------------------------


def city_name_key(sid, readable=lambda c: True):
    c = city_of(sid, readable)
    return CITIES[c][0] if c else None


def expected_order(key, desc=False, subset=None):
    """Nulls first ascending, last descending; id ascending breaks ties."""
    sids = sorted(subset if subset is not None else STUDENTS)
    nulls = [s for s in sids if key(s) is None]
    rest = sorted((s for s in sids if key(s) is not None), key=lambda s: key(s), reverse=desc)
    if desc:  # ties by id ascending within equal keys
        rest = sorted(rest, key=lambda s: (tuple(-ord(ch) for ch in key(s)), s))
        return rest + nulls
    rest = sorted(rest, key=lambda s: (key(s), s))
    return nulls + rest


def test_order_by_referenced_field_paginates(srv):
    want = expected_order(city_name_key)
    got, pages = list_all(srv, page_size=4, order_by="city.name")
    assert [r.id for r in got] == want and pages >= len(want) // 4
    want_desc = expected_order(city_name_key, desc=True)
    got, pages = list_all(srv, page_size=3, order_by="city.name desc")
    assert [r.id for r in got] == want_desc and pages >= 10
    # with a filter through a reference and a second key
    sub = where(lambda s: country_of(city_of(s)) in ("n-gb", "n-fr"))
    got, _ = list_all(srv, page_size=2, order_by="city.name desc, age", filter='city.country.continent.name = "Europe"')
    want = sorted(sub, key=lambda s: (tuple(-ord(ch) for ch in city_name_key(s)), STUDENTS[s]["age"], s))
    assert [r.id for r in got] == want


def test_order_by_referenced_integer_and_id_desc(srv):
    def pop(s):
        c = city_of(s)
        return CITIES[c][1] if c else None
    nulls = sorted(s for s in STUDENTS if pop(s) is None)[::-1]
    rest = sorted((s for s in STUDENTS if pop(s) is not None), key=lambda s: (pop(s), s), reverse=True)
    got, _ = list_all(srv, page_size=5, order_by="city.pop desc, id desc")
    assert [r.id for r in got] == rest + nulls


def test_order_by_over_http_pages(srv):
    want = expected_order(city_name_key, desc=True)
    seen, token = [], ""
    while True:
        q = {"orderBy": "city.name desc", "pageSize": "4"}
        if token:
            q["pageToken"] = token
        body = http_ids(srv, q)
        seen += [r["id"] for r in body["records"]]
        token = body.get("nextPageToken", "")
        if not token:
            break
    assert seen == want


@pytest.mark.parametrize("order,words", [
    ("city.country.code", "more than 1 reference"),
    ("city.nam", "unknown field 'nam' of model 'cities'"),
    ("age.x", "not a REFERENCE"),
    ("city.name, city.name desc", "given twice"),
    ('city."name"', "a field name after '.'"),
])
def test_bad_order_paths(srv, order, words):
    d = expect_error(INVALID, list_call, srv, order_by=order, reason="validation_failed", field="orderBy")
    assert words in d.message and "position" in d.message, d.message


# ---- permissions -------------------------------------------------------------------------


def caps_key(srv, caps):
    return srv.create_key(caps=caps)["key"]


ALL_READ = [{"can": ["read"], "model": m, "group": "*"} for m in ("students", "countries", "continents")]


def test_groups_of_the_target_limit_what_matches(srv):
    key = caps_key(srv, ALL_READ + [{"can": ["read"], "model": "cities", "group": "default"}])
    readable = lambda c: CITIES[c][3] == "default"  # noqa: E731
    gb_all = where(lambda s: country_of(city_of(s)) == "n-gb")
    gb_visible = where(lambda s: country_of(city_of(s, readable)) == "n-gb")
    assert gb_visible < gb_all  # the hidden city's students are the difference
    assert ids(srv, 'city.country.code = "GB"', auth=key) == gb_visible
    assert ids(srv, 'city.name = "Secret"', auth=key) == set()
    assert ids(srv, 'city.name = "Secret"') == where(lambda s: city_of(s) == "c-sec")
    assert ids(srv, 'city.group = "hidden"', auth=key) == set()
    # != does not match through a city the caller may not read either
    assert ids(srv, 'city.name != "London"', auth=key) == \
        where(lambda s: city_of(s, readable) not in (None, "c-lon", "c-nul"))
    # the sort key of a student whose city is not readable is null
    key_fn = lambda s: city_name_key(s, readable)  # noqa: E731
    got, _ = list_all(srv, page_size=4, auth=key, order_by="city.name")
    assert [r.id for r in got] == expected_order(key_fn)


def test_groups_of_a_deeper_model_limit_what_matches(srv):
    key = caps_key(srv, [{"can": ["read"], "model": m, "group": "*"} for m in ("students", "cities", "continents")]
                   + [{"can": ["read"], "model": "countries", "group": "elsewhere"}])
    assert ids(srv, 'city.country.code = "GB"', auth=key) == set()
    assert ids(srv, 'city.name = "London"', auth=key) == where(lambda s: city_of(s) == "c-lon")


def test_no_read_on_a_traversed_model_is_denied(srv):
    key = caps_key(srv, [{"can": ["read"], "model": "students", "group": "*"},
                         {"can": ["update"], "model": "cities", "group": "*"}])
    assert ids(srv, "age > 0", auth=key) == set(STUDENTS)
    for kw, model in [({"filter": 'city.name = "London"'}, "cities"),
                      ({"order_by": "city.name"}, "cities"),
                      ({"filter": 'city = "c-lon" AND mentor.city.name = "x"'}, "cities")]:
        d = expect_error(DENIED, list_call, srv, auth=key, reason="permission_denied", **kw)
        md = dict(d.error_info.metadata)
        assert (md.get("can"), md.get("model"), md.get("sync_group")) == ("read", model, "*"), d
    key2 = caps_key(srv, [{"can": ["read"], "model": m, "group": "*"} for m in ("students", "cities")])
    assert ids(srv, 'city.name = "London"', auth=key2) == where(lambda s: city_of(s) == "c-lon")
    d = expect_error(DENIED, list_call, srv, auth=key2, filter='city.country.code = "GB"',
                     reason="permission_denied")
    assert dict(d.error_info.metadata).get("model") == "countries", d
    r = srv.http("GET", "/v1/models/students?" + urllib.parse.urlencode({"filter": 'city.country.code = "GB"'}),
                 auth=key2)
    assert r.status_code == 403, r.text


# ---- bulk by filter ----------------------------------------------------------------------


def op_update_where(filter, data):
    return pb.records.BulkOperation(
        update_where=pb.records.UpdateWhere(model="students", filter=filter, data=h.struct(data)))


def bulk(srv, ops, auth=None):
    view = srv.as_(auth) if auth else srv
    return view.call("BulkMutate", pb.records.BulkMutateRequest(operations=ops))


def test_bulk_update_where_through_references(srv):
    tag = h.uid("fr")
    fr = where(lambda s: city_of(s) == "c-par")
    resp = bulk(srv, [op_update_where('city.country.code = "FR"', {"note": tag})])
    assert resp.results[0].affected == len(fr)
    assert ids(srv, f'note = "{tag}"') == fr
    # a caller that may update students and read only the default group of
    # cities does not reach students through the hidden city
    key = caps_key(srv, [{"can": ["read", "update"], "model": "students", "group": "*"},
                         {"can": ["read"], "model": "countries", "group": "*"},
                         {"can": ["read"], "model": "cities", "group": "default"}])
    tag2 = h.uid("gb")
    resp = bulk(srv, [op_update_where('city.country.code = "GB"', {"note": tag2})], auth=key)
    gb_visible = where(lambda s: city_of(s) in ("c-lon", "c-man"))
    assert resp.results[0].affected == len(gb_visible)
    assert ids(srv, f'note = "{tag2}"') == gb_visible
    # without read on cities: PERMISSION_DENIED naming it, nothing written
    key2 = caps_key(srv, [{"can": ["read", "update"], "model": "students", "group": "*"}])
    tag3 = h.uid("no")
    d = expect_error(DENIED, bulk, srv, [op_update_where('city.name = "London"', {"note": tag3})], auth=key2,
                     reason="permission_denied")
    md = dict(d.error_info.metadata)
    assert (md.get("can"), md.get("model"), md.get("sync_group")) == ("read", "cities", "*"), d
    assert ids(srv, f'note = "{tag3}"') == set()
    # a bad path is a validation error naming the operation's filter
    d = expect_error(INVALID, bulk, srv, [op_update_where('city.nope = "x"', {"note": "x"})],
                     reason="validation_failed", field="operations[0].filter")
    assert "position 6" in d.message, d.message
