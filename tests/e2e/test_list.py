"""ListRecords (DESIGN.md §3, §4 Filters): filter + order_by + keyset
pagination over 2,500 records while another thread writes, page tokens that
are tamper-evident and bound to (org, model, filter, order_by), page_size
limits, read_at, SQL-looking filters, group-scoped credentials and
tenancy."""
import base64
import concurrent.futures
import random
import threading

import grpc
import pytest

import harness as h
from harness import expect_error

INVALID = grpc.StatusCode.INVALID_ARGUMENT

ITEMS = {
    "name": "items",
    "fields": [
        {"name": "name", "type": "STRING"},
        {"name": "k", "type": "INTEGER"},
        {"name": "score", "type": "NUMBER"},
        {"name": "flag", "type": "BOOLEAN"},
        {"name": "note", "type": "STRING"},
        {"name": "doc", "type": "JSON"},
    ],
}
N = 2500


def list_call(srv, model="items", auth=None, **kw):
    """ListRecords as the admin key (or auth)."""
    fn = srv.raw_channel.unary_unary(
        "/recordd.v1.Records/ListRecords",
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=h.pb.records.ListRecordsResponse.FromString,
    )
    req = h.pb.records.ListRecordsRequest(model=model, **kw)
    return fn(req, timeout=h.CALL_TIMEOUT, metadata=h.bearer(auth or srv.admin_key))


def list_all(srv, page_size, auth=None, **kw):
    """Every page; returns (records, pages)."""
    out, token, pages = [], "", 0
    while True:
        r = list_call(srv, page_size=page_size, page_token=token, auth=auth, **kw)
        pages += 1
        assert r.read_at > 0
        out.extend(r.records)
        token = r.next_page_token
        if not token:
            return out, pages
        assert len(r.records) == page_size


def item(i):
    d = {"name": f"n{i:05d}", "k": i % 10, "flag": i % 2 == 0, "note": "v0"}
    if i % 7:
        d["score"] = (i % 13) * 0.5
    return d


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    s = h.Server(tmp_path_factory.mktemp("list") / "recordd")
    s.start()
    s.push_schema([ITEMS])
    with concurrent.futures.ThreadPoolExecutor(16) as ex:
        list(ex.map(lambda i: s.create("items", item(i), id=f"it-{i:05d}"), range(N)))
    yield s
    problem = s.kill()
    if problem:
        pytest.fail(problem, pytrace=False)


def test_default_order_is_id_and_pages_cover_everything(srv):
    recs, pages = list_all(srv, 1000, filter="name >= \"n00000\"")
    ids = [r.id for r in recs]
    assert ids == sorted(ids) and len(ids) == N and pages == 3
    first = recs[0]
    assert first.model == "items" and first.version >= 1 and first.sync_id > 0
    assert h.to_dict(first.data)["name"] == "n00000"


def test_pagination_under_concurrent_writes(srv):
    """Every record matching k >= 3, ordered by k desc, score, name, appears
    exactly once while another thread updates `note` (not in the filter or
    order) and creates records outside the filter."""
    want = {f"it-{i:05d}" for i in range(N) if i % 10 >= 3}
    stop = threading.Event()
    errors, writes = [], []

    def writer():
        rnd = random.Random(7)
        n = 0
        while not stop.is_set():
            try:
                i = rnd.randrange(N)
                srv.update("items", f"it-{i:05d}", {"note": f"v{n}"})
                srv.create("items", {"name": f"x{n}", "k": -1 - n % 5}, id=h.uid("out"))
                n += 1
                writes.append(n)
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(e)
                return

    t = threading.Thread(target=writer)
    t.start()
    try:
        while len(writes) < 5 and not errors:
            stop.wait(0.01)
        seen = len(writes)
        for order, size in (("k desc, score, name", 97), ("score desc, flag", 250)):
            recs, _ = list_all(srv, size, filter="k >= 3", order_by=order)
            ids = [r.id for r in recs]
            assert len(ids) == len(set(ids)), f"{order}: repeated records"
            assert set(ids) == want, f"{order}: missing {len(want - set(ids))}"
            keys = []
            for r in recs:
                d = h.to_dict(r.data)
                if order.startswith("k"):
                    keys.append((-d["k"], d.get("score", float("-inf")), d["name"]))
                else:
                    keys.append((-d.get("score", float("-inf")), d["flag"], r.id))
            assert keys == sorted(keys), f"{order}: out of order"
    finally:
        stop.set()
        t.join()
    assert not errors, errors
    assert len(writes) > seen, "the writer made no progress while pages were read"


def test_filter_operators_and_types(srv):
    def count(f):
        return len(list_all(srv, 1000, filter=f)[0])

    assert count("k = 3") == N // 10
    assert count("k != 3 AND k >= 0") == N - N // 10
    assert count("k < 2 AND k >= 0") == 2 * N // 10
    assert count("k <= 1 AND k > 0") == N // 10
    assert count("flag = true AND k >= 0") == N // 2
    assert count("score = null AND k >= 0") == len([i for i in range(N) if i % 7 == 0])
    assert count("id = \"it-00042\"") == 1
    assert count("name = \"n00042\" AND version >= 1 AND syncId > 0") == 1
    assert count("group = \"default\" AND createdAt > \"2000-01-01T00:00:00Z\" AND k >= 0") == N


def test_page_size_limits(srv):
    assert len(list_call(srv, filter="k >= 0").records) == 50
    r = list_call(srv, page_size=5000, filter="k >= 0")
    assert len(r.records) == 1000 and r.next_page_token
    expect_error(INVALID, list_call, srv, page_size=-1, field="pageSize")


def test_tokens_are_tamper_evident_and_bound(srv):
    r = list_call(srv, page_size=10, filter="k = 4", order_by="name desc")
    tok = r.next_page_token
    assert tok and r.read_at > 0
    nxt = list_call(srv, page_size=10, filter="k = 4", order_by="name desc", page_token=tok)
    assert nxt.records[0].id < r.records[-1].id
    raw = bytearray(base64.urlsafe_b64decode(tok + "=" * (-len(tok) % 4)))
    raw[len(raw) // 2] ^= 1
    flipped = base64.urlsafe_b64encode(bytes(raw)).decode().rstrip("=")
    for t in (flipped, "garbage", tok[:-2], tok + "AA", "!!!!"):
        d = expect_error(INVALID, list_call, srv, page_size=10, filter="k = 4", order_by="name desc",
                         page_token=t, field="pageToken")
        assert "pageToken" in d.message
    # foreign: another filter, order, model
    for kw in ({"filter": "k = 5", "order_by": "name desc"}, {"filter": "k = 4", "order_by": "name"}):
        expect_error(INVALID, list_call, srv, page_size=10, page_token=tok, field="pageToken", **kw)
    srv.push_schema([ITEMS, {"name": "other", "fields": [{"name": "name", "type": "STRING"},
                                                         {"name": "k", "type": "INTEGER"}]}])
    expect_error(INVALID, list_call, srv, model="other", page_size=10, filter="k = 4",
                 order_by="name desc", page_token=tok, field="pageToken")


def test_parse_errors_name_the_position(srv):
    d = expect_error(INVALID, list_call, srv, filter="k = 1 and k = 2", field="filter")
    assert "position 7" in d.message
    d = expect_error(INVALID, list_call, srv, filter="nope = 1", field="filter")
    assert "nope" in d.message
    d = expect_error(INVALID, list_call, srv, filter="k = \"1\"", field="filter")
    assert "'k'" in d.message
    d = expect_error(INVALID, list_call, srv, filter="doc = \"x\"", field="filter")
    assert "JSON" in d.message
    expect_error(INVALID, list_call, srv, order_by="name sideways", field="orderBy")
    expect_error(grpc.StatusCode.NOT_FOUND, list_call, srv, model="nosuch", field="model")


def test_sql_injection_filter_matches_nothing_and_changes_nothing(srv):
    before = len(list_all(srv, 1000, filter="k >= 0")[0])
    for f in ("name = \"x' OR 1=1 --\"", "name = \"\\\"; DROP TABLE items; --\"",
              "name = \"n00001\\\" OR \\\"1\\\"=\\\"1\""):
        assert list(list_call(srv, filter=f).records) == []
    expect_error(INVALID, list_call, srv, filter="name = \"x\" OR 1=1 --", field="filter")
    assert len(list_all(srv, 1000, filter="k >= 0")[0]) == before
    assert h.to_dict(srv.get("items", "it-00001").data)["name"] == "n00001"


def test_group_scoped_credential_lists_only_its_group(srv):
    ids_a = {h.uid("ta") for _ in range(3)}
    for i in ids_a:
        srv.create("items", {"name": "ta", "k": 100}, id=i, group="team-a")
    srv.create("items", {"name": "tb", "k": 100}, id=h.uid("tb"), group="team-b")
    key = srv.create_key(caps=[{"can": ["read"], "model": "items", "group": "team-a"}])["key"]
    got = list_all(srv, 2, auth=key, filter="k = 100")[0]
    assert {r.id for r in got} == ids_a and all(r.group == "team-a" for r in got)
    cap = h.pb.tokens.Capability(can=["read"], model="items", group="team-a")
    tok = srv.call("MintToken", h.pb.tokens.MintTokenRequest(caps=[cap])).token
    assert {r.id for r in list_all(srv, 1000, auth=tok, filter="k = 100")[0]} == ids_a
    assert list(list_call(srv, auth=tok, filter="group = \"team-b\"").records) == []
    assert len(list_all(srv, 1000, filter="k = 100")[0]) == 4
    none = srv.create_key(caps=[{"can": ["read"], "model": "other", "group": "*"}])["key"]
    d = expect_error(grpc.StatusCode.PERMISSION_DENIED, list_call, srv, auth=none, reason="permission_denied")
    md = dict(d.error_info.metadata)
    assert (md.get("can"), md.get("model"), md.get("sync_group")) == ("read", "items", "*"), d


def test_another_org_sees_nothing(srv):
    k = srv.create_key(org="elsewhere", role="admin")["key"]
    expect_error(grpc.StatusCode.NOT_FOUND, list_call, srv, auth=k, field="model")
    fn = srv.raw_channel.unary_unary(
        "/recordd.v1.Schemas/PushSchema",
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=h.pb.schema.PushSchemaResponse.FromString)
    fn(h.pb.schema.PushSchemaRequest(schema=h.schema_msg([ITEMS])), timeout=h.CALL_TIMEOUT,
       metadata=h.bearer(k))
    r = list_call(srv, auth=k)
    assert list(r.records) == [] and r.next_page_token == ""
    tok = list_call(srv, page_size=1).next_page_token  # the default org's token
    assert tok
    expect_error(INVALID, list_call, srv, auth=k, page_size=1, page_token=tok, field="pageToken")
