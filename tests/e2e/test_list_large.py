"""ListRecords pages end by size as well as by count, so large records can
be listed: six records of 1 MiB each come back over gRPC (4 MiB message
limit) across several pages, and over HTTP the same way, never as one
oversized reply and never with a page missing."""
import concurrent.futures

import pytest

import harness as h
from harness import pb

MIB = 1 << 20


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    s = h.Server(tmp_path_factory.mktemp("listlarge") / "recordd").start()
    s.push_schema([{"name": "blobs", "fields": [{"name": "body", "type": "STRING"},
                                                 {"name": "n", "type": "INTEGER"}]}])
    with concurrent.futures.ThreadPoolExecutor(3) as ex:
        list(ex.map(lambda i: s.create("blobs", {"body": chr(97 + i) * MIB, "n": i}, id=f"b{i}"), range(6)))
    yield s
    problem = s.kill()
    if problem:
        pytest.fail(problem, pytrace=False)


def test_grpc_lists_six_one_mib_records_across_pages(srv):
    fn = srv.raw_channel.unary_unary("/recordd.v1.Records/ListRecords",
                                      request_serializer=lambda m: m.SerializeToString(),
                                      response_deserializer=pb.records.ListRecordsResponse.FromString)
    seen, token, pages = [], "", 0
    while True:
        r = fn(pb.records.ListRecordsRequest(model="blobs", page_size=100, page_token=token, order_by="n desc"),
               metadata=h.bearer(srv.admin_key), timeout=h.CALL_TIMEOUT)
        pages += 1
        assert r.records, "an empty page with a token"
        seen += [(rec.id, len(rec.data["body"])) for rec in r.records]
        token = r.next_page_token
        if not token:
            break
    assert [i for i, _ in seen] == [f"b{i}" for i in range(5, -1, -1)]
    assert all(n == MIB for _, n in seen)
    assert pages > 1


def test_http_lists_them_across_pages_too(srv):
    seen, token = [], ""
    while True:
        r = srv.http("GET", f"/v1/models/blobs?pageSize=100&pageToken={token}")
        assert r.status_code == 200, r.text[:200]
        assert len(r.content) < 4 * MIB
        body = r.json()
        seen += [rec["id"] for rec in body["records"]]
        token = body.get("nextPageToken", "")
        if not token:
            break
    assert seen == [f"b{i}" for i in range(6)]
