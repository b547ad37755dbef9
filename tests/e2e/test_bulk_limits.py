"""A BulkMutate call's work is bounded: --max-bulk-rows records per call
(dry runs too) or it is refused whole, --max-bulk-ms on the writer or it is
undone, and the rate limit is charged by the records it touched."""
import concurrent.futures

import grpc
import pytest

import harness as h
from harness import pb, uid

R = pb.records
ITEMS = {"name": "items", "fields": [{"name": "k", "type": "INTEGER"}, {"name": "v", "type": "STRING"}]}


def start(tmp_path, n, *flags):
    s = h.Server(tmp_path / "recordd", extra_args=flags).start()
    s.push_schema([ITEMS])
    with concurrent.futures.ThreadPoolExecutor(8) as ex:
        list(ex.map(lambda i: s.create("items", {"k": i % 2, "v": "0"}, id=f"i{i:04d}"), range(n)))
    return s


def where(filter, data, dry_run=False, **kw):
    op = R.BulkOperation(update_where=R.UpdateWhere(model="items", filter=filter, data=h.struct(data)))
    return R.BulkMutateRequest(operations=[op], dry_run=dry_run, **kw)


def by_id(ids, data):
    return R.BulkMutateRequest(operations=[
        R.BulkOperation(update=R.UpdateRecordRequest(model="items", id=i, data=h.struct(data))) for i in ids])


def values(srv):
    return {srv.get_data("items", f"i{i:04d}")["v"] for i in range(0, 60, 7)}


def test_row_budget_refuses_the_whole_call(tmp_path):
    srv = start(tmp_path, 60, "--max-bulk-rows", "50")
    try:
        for req in (where("k >= 0", {"v": "x"}), where("k >= 0", {"v": "x"}, dry_run=True),
                    by_id([f"i{i:04d}" for i in range(51)], {"v": "x"})):
            err = h.expect_error(grpc.StatusCode.INVALID_ARGUMENT, srv.call, "BulkMutate", req,
                                 reason="too_many_rows")
            assert "--max-bulk-rows" in err.message
            assert values(srv) == {"0"}, "a refused bulk changed records"
        ok = srv.call("BulkMutate", by_id([f"i{i:04d}" for i in range(50)], {"v": "y"}))
        assert ok.receipt.success and ok.receipt.ops == 50
        ok = srv.call("BulkMutate", where("k = 1", {"v": "z"}))  # 30 records
        assert ok.receipt.ops == 30
    finally:
        problem = srv.kill()
    assert not problem, problem


def test_rate_limit_is_charged_by_rows(tmp_path):
    srv = start(tmp_path, 0, "--rate-limit", "1", "--rate-burst", "20")
    try:
        k = srv.create_key(caps=[{"can": ["read", "create", "update"], "model": "*", "group": "*"}])["key"]
        creates = R.BulkMutateRequest(operations=[
            R.BulkOperation(create=R.CreateRecordRequest(model="items", id=f"r{i}", data=h.struct({"k": 1})))
            for i in range(15)])
        assert srv.as_(k).call("BulkMutate", creates).receipt.ops == 15
        # 1 + 14 of 20 tokens used: 5 left, so a 15-record update is the last call for a while
        assert srv.as_(k).call("BulkMutate", where("k = 1", {"v": "w"})).receipt.ops == 15
        err = h.expect_error(grpc.StatusCode.RESOURCE_EXHAUSTED, srv.as_(k).get_schema, reason="rate_limited")
        assert err is not None
    finally:
        problem = srv.kill()
    assert not problem, problem


def test_a_bulk_past_max_bulk_ms_is_undone(tmp_path):
    srv = start(tmp_path, 600, "--max-bulk-ms", "1")
    try:
        err = h.expect_error(grpc.StatusCode.DEADLINE_EXCEEDED, srv.call, "BulkMutate",
                             where("k >= 0", {"v": "slow"}))
        assert "--max-bulk-ms" in err.message
        assert values(srv) == {"0"}, "an undone bulk changed records"
        srv.update("items", "i0000", {"v": "single writes still work"})
    finally:
        problem = srv.kill()
    assert not problem, problem
