"""The change log is not kept forever: rows beyond --changes-max-rows and
older than --changes-retention are pruned by the writer, /metrics shows the
log's size and its oldest and newest sync ids, and a feed consumer that
fell behind the oldest row gets FAILED_PRECONDITION sync_id_expired naming
the oldest sync id (HTTP 410), never a silent gap."""
import re
import time

import grpc
import pytest

import harness as h
from harness import pb

R = pb.records


def metric(srv, name):
    m = re.search(rf"^{name} (\d+)$", srv.http("GET", "/metrics", auth=None).text, re.M)
    assert m, f"{name} missing from /metrics"
    return int(m.group(1))


def org_sync_id(srv, end, org="default"):
    return metric(srv, f'recordd_changes_sync_id{{organization="{org}",end="{end}"}}')


def watch(srv, since):
    fn = srv.channel.unary_stream("/recordd.v1.Records/WatchChanges",
                                  request_serializer=lambda m: m.SerializeToString(),
                                  response_deserializer=R.ChangeEvent.FromString)
    return fn(R.WatchChangesRequest(since_sync_id=since), timeout=10)


def test_row_cap_prunes_and_a_lagging_feed_is_told(tmp_path):
    srv = h.Server(tmp_path / "recordd", extra_args=("--changes-max-rows", "50")).start()
    try:
        srv.push_schema([{"name": "items", "fields": [{"name": "n", "type": "INTEGER"}]}])
        last = 0
        for i in range(200):
            last = srv.create("items", {"n": i}, id=f"i{i}").last_sync_id
        assert org_sync_id(srv, "newest") == last
        rows = metric(srv, "recordd_changes_log_rows")
        oldest = org_sync_id(srv, "oldest")
        assert rows <= 52, f"{rows} rows kept with --changes-max-rows 50"
        assert oldest == last - rows + 1
        with pytest.raises(grpc.RpcError) as e:
            next(watch(srv, 0))
        assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert f"oldest available sync id is {oldest}" in e.value.details()
        r = srv.http("GET", "/v1/changes?sinceSyncId=0", auth=srv.admin_key, stream=True)
        assert r.status_code == 410
        # a consumer within the window reads on, without gaps
        s = watch(srv, last - 10)
        assert [next(s).sync_id for _ in range(10)] == list(range(last - 9, last + 1))
        s.cancel()
    finally:
        problem = srv.kill()
    assert not problem, problem


def test_age_retention_keeps_only_recent_changes(tmp_path):
    srv = h.Server(tmp_path / "recordd", extra_args=("--changes-retention", "1")).start()
    try:
        srv.push_schema([{"name": "items", "fields": [{"name": "n", "type": "INTEGER"}]}])
        for i in range(30):
            srv.create("items", {"n": i}, id=f"i{i}")
        assert metric(srv, "recordd_changes_log_rows") == 30
        time.sleep(2.2)
        last = srv.create("items", {"n": 99}, id="late").last_sync_id
        assert metric(srv, "recordd_changes_log_rows") == 1
        assert org_sync_id(srv, "oldest") == last
    finally:
        problem = srv.kill()
    assert not problem, problem
