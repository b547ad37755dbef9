"""ListRecords under a live schema change: a field added by PushSchema while
clients page through a filtered, ordered list must not end any list early.

Every worker's read connection caches the list statement ("SELECT *, keys");
after the push SQLite re-prepares it with one more column. The test warms
every worker's cache, pushes a new field, and pages again from many threads,
round after round, checking each full list against the records it must hold."""
import concurrent.futures

import harness as h
import pytest

WORKERS = 4
N = 240
PAGE = 7


def model(extra_fields):
    fields = [{"name": "name", "type": "STRING"}, {"name": "k", "type": "INTEGER"}]
    fields += [{"name": f, "type": "STRING"} for f in extra_fields]
    return {"name": "rows", "fields": fields}


def list_all(srv, **kw):
    fn = srv.raw_channel.unary_unary(
        "/recordd.v1.Records/ListRecords",
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=h.pb.records.ListRecordsResponse.FromString,
    )
    out, token = [], ""
    for _ in range(N):  # more pages than records means the token loops
        req = h.pb.records.ListRecordsRequest(model="rows", page_size=PAGE, page_token=token, **kw)
        r = fn(req, timeout=h.CALL_TIMEOUT, metadata=h.bearer(srv.admin_key))
        out.extend(rec.id for rec in r.records)
        token = r.next_page_token
        if not token:
            return out
    pytest.fail("page tokens never ended")


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    s = h.Server(tmp_path_factory.mktemp("listschema") / "recordd", extra_args=("--workers", str(WORKERS)))
    s.start()
    s.push_schema([model([])])
    with concurrent.futures.ThreadPoolExecutor(8) as ex:
        list(ex.map(lambda i: s.create("rows", {"name": f"n{i:04d}", "k": i % 5}, id=f"r{i:04d}"), range(N)))
    yield s
    problem = s.kill()
    if problem:
        pytest.fail(problem, pytrace=False)


QUERIES = [
    ({"filter": "k >= 1", "order_by": "name desc"}, lambda i: i % 5 >= 1, True),
    ({"filter": "k != 3", "order_by": "k asc, name asc"}, lambda i: i % 5 != 3, None),
]


ROUNDS = 6


def test_adding_a_field_under_live_paging_loses_no_page(srv):
    extra = []
    for rnd in range(ROUNDS):
        for kw, keep, desc in QUERIES:
            want = {f"r{i:04d}" for i in range(N) if keep(i)}
            with concurrent.futures.ThreadPoolExecutor(WORKERS * 2) as ex:
                # warm: every worker caches this query's statement
                for got in ex.map(lambda _: list_all(srv, **kw), range(WORKERS * 2)):
                    assert set(got) == want
                extra.append(f"x{rnd}_{len(extra)}")
                srv.push_schema([model(extra)])
                # page again on every worker against the re-prepared statement
                for got in ex.map(lambda _: list_all(srv, **kw), range(WORKERS * 3)):
                    assert len(got) == len(set(got)), "a record was listed twice"
                    assert set(got) == want, f"round {rnd}: {len(want - set(got))} records missing"
            if desc:
                names = [srv.get_data("rows", i)["name"] for i in list_all(srv, **kw)[:3]]
                assert names == sorted(names, reverse=True)
