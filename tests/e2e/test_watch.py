"""WatchChanges (DESIGN.md §3, §4 "Sync ids"; issue 5 item 4) over real gRPC
server streaming: catch-up and live follow with no gaps and no duplicates
under concurrent writes, resuming from a mid-point, model and group
filters, a group-scoped token, tenancy, tombstones, a cursor in the future,
retention (FAILED_PRECONDITION) and a clean end on shutdown."""

import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

import harness as h

PATH = "/recordd.v1.Records/WatchChanges"


def caps_pb(caps):
    return [h.pb.tokens.Capability(**c) for c in caps]


def mint(srv, caps):
    return srv.call("MintToken", h.pb.tokens.MintTokenRequest(caps=caps_pb(caps))).token


Watch = h.Watch


NOTES = {"name": "notes", "fields": [{"name": "title", "type": "STRING"}, {"name": "n", "type": "INTEGER"}]}
TAGS = {"name": "tags", "fields": [{"name": "name", "type": "STRING"}]}


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    s = h.Server(tmp_path_factory.mktemp("watch") / "recordd")
    s.start()
    s.push_schema([NOTES, TAGS])
    yield s
    problem = s.kill()
    if problem:
        pytest.fail(problem, pytrace=False)


def head(srv):
    """The newest sync id: a marker write's."""
    return srv.create("tags", {"name": "marker"}).last_sync_id


def op_name(ev):
    return h.pb.records.ChangeOp.Name(ev.op)


def test_watcher_receives_exactly_1000_concurrent_writes_in_order(srv):
    start = head(srv)
    w = Watch(srv, since=start, models=["notes"])
    time.sleep(0.2)  # the stream is open and following live

    def writer(t):
        out = []
        for i in range(125):
            r = srv.create("notes", {"title": f"t{t}-{i}", "n": i}, id=f"c-{t}-{i}-{h.uid('n')}")
            out.append((r.last_sync_id, r.record.id if r.HasField("record") else None))
        return out

    with ThreadPoolExecutor(8) as ex:
        receipts = [x for f in [ex.submit(writer, t) for t in range(8)] for x in f.result()]
    sids = sorted(s for s, _ in receipts)
    assert len(set(sids)) == 1000
    evs = w.wait_for(1000)
    got = [e.sync_id for e in w.settle()]
    w.cancel()
    assert got == sids  # exactly those, in order, no gaps, no duplicates
    assert all(a < b for a, b in zip(got, got[1:]))
    assert {op_name(e) for e in evs} == {"CREATE"}
    assert all(e.model == "notes" and e.server_tx_id and e.actor for e in evs)

    # a watcher resuming from the mid-point gets exactly the rest
    mid = sids[499]
    r = Watch(srv, since=mid, models=["notes"])
    r.wait_for(500)
    rest = [e.sync_id for e in r.settle()]
    r.cancel()
    assert rest == sids[500:]


def test_model_filter(srv):
    start = head(srv)
    srv.create("notes", {"title": "x"})
    t = srv.create("tags", {"name": "only-me"})
    srv.create("notes", {"title": "y"})
    w = Watch(srv, since=start, models=["tags"])
    w.wait_for(1)
    evs = w.settle()
    w.cancel()
    assert [(e.model, e.sync_id) for e in evs] == [("tags", t.last_sync_id)]
    assert h.to_dict(evs[0].data) == {"name": "only-me"}


def test_group_scoped_token_and_group_filter(srv):
    start = head(srv)
    a = srv.create("notes", {"title": "a"}, group="team-a")
    b = srv.create("notes", {"title": "b"}, group="team-b")
    a2 = srv.create("tags", {"name": "a2"}, group="team-a")
    tok = mint(srv, [{"can": ["read"], "model": "*", "group": "team-a"}])
    w = Watch(srv, since=start, auth=tok)
    w.wait_for(2)
    evs = w.settle()
    assert [e.sync_id for e in evs] == [a.last_sync_id, a2.last_sync_id]
    assert {e.group for e in evs} == {"team-a"}
    # live as well: a later team-b write stays invisible, team-a shows up
    srv.create("notes", {"title": "b2"}, group="team-b")
    a3 = srv.create("notes", {"title": "a3"}, group="team-a")
    w.wait_for(3)
    assert [e.sync_id for e in w.settle()][2:] == [a3.last_sync_id]
    w.cancel()

    g = Watch(srv, since=start, groups=["team-b"])
    g.wait_for(2)
    assert [e.group for e in g.settle()] == ["team-b", "team-b"]
    assert g.events[0].sync_id == b.last_sync_id
    g.cancel()


def test_another_organisation_sees_nothing(srv):
    start = head(srv)
    k = srv.create_key(org="watchother", role="admin")
    o = Watch(srv, since=0, auth=k["key"])
    srv.create("notes", {"title": "default org"})
    srv.as_(k["key"]).push_schema([TAGS])
    mine = srv.as_(k["key"]).create("tags", {"name": "other org"})
    o.wait_for(1)
    evs = o.settle()
    o.cancel()
    assert [(e.sync_id, e.model) for e in evs] == [(mine.last_sync_id, "tags")]
    # sync ids are per organisation: a new one starts its own sequence
    assert mine.last_sync_id == 1 and start > 1


def test_update_and_delete_events(srv):
    start = head(srv)
    rid = h.uid("d")
    srv.create("notes", {"title": "t", "n": 1}, id=rid)
    srv.update("notes", rid, {"n": 2})
    srv.update("notes", rid, {"title": None})
    srv.delete("notes", rid)
    w = Watch(srv, since=start, models=["notes"])
    evs = w.wait_for(4)
    w.cancel()
    assert [op_name(e) for e in evs] == ["CREATE", "UPDATE", "UPDATE", "DELETE"]
    assert {e.id for e in evs} == {rid}
    c, u1, u2, d = evs
    assert sorted(c.fields) == ["n", "title"] and h.to_dict(c.data) == {"title": "t", "n": 1}
    assert list(u1.fields) == ["n"] and h.to_dict(u1.data) == {"n": 2}
    assert list(u2.fields) == ["title"] and h.to_dict(u2.data) == {"title": None}
    assert sorted(d.fields) == ["n", "title"] and h.to_dict(d.data) == {}  # a tombstone
    assert d.committed_at.seconds > 0 and d.group == "default"


def test_slow_consumer_ends_with_resource_exhausted_and_resumes(srv):
    start = head(srv)
    big = "x" * 1000  # fills the transport window and the send queue soon

    def writer(t):
        return [srv.create("tags", {"name": f"{t}-{i}-{big}"}).last_sync_id for i in range(250)]

    with ThreadPoolExecutor(8) as ex:
        sids = sorted(x for f in [ex.submit(writer, t) for t in range(8)] for x in f.result())
    req = h.pb.records.WatchChangesRequest(since_sync_id=start, models=["tags"])
    # a small, fixed HTTP/2 window, so that unread events back up to the server
    ch = grpc.insecure_channel(srv.address, options=[("grpc.http2.bdp_probe", 0),
                                                     ("grpc.http2.lookahead_bytes", 16384)])
    fn = ch.unary_stream(PATH, request_serializer=lambda m: m.SerializeToString(),
                                  response_deserializer=h.pb.records.ChangeEvent.FromString)
    call = fn(req, timeout=60)
    time.sleep(7)  # read nothing: the server's queue stays full past its 5 s limit
    got = []
    with pytest.raises(grpc.RpcError) as ei:
        for ev in call:
            got.append(ev.sync_id)
    assert ei.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert 0 < len(got) < len(sids) and got == sids[: len(got)]
    assert f"resume from sync id {got[-1]}" in ei.value.details()
    r = Watch(srv, since=got[-1], models=["tags"])
    r.wait_for(len(sids) - len(got))
    rest = [e.sync_id for e in r.settle(0.3)]
    r.cancel()
    ch.close()
    assert got + rest == sids


def test_since_in_the_future_waits(srv):
    start = head(srv)
    w = Watch(srv, since=start + 2)
    srv.create("tags", {"name": "1"})
    srv.create("tags", {"name": "2"})
    assert w.settle(0.3) == []
    third = srv.create("tags", {"name": "3"})
    w.wait_for(1)
    assert [e.sync_id for e in w.settle(0.2)] == [third.last_sync_id]
    w.cancel()


def test_negative_since_is_invalid(srv):
    w = Watch(srv, since=-1)
    assert w.ended.wait(10)
    assert w.error is not None and w.error.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_cancel_ends_the_stream(srv):
    w = Watch(srv, since=head(srv))
    time.sleep(0.1)
    w.cancel()
    assert w.ended.is_set()
    srv.create("tags", {"name": "after cancel"})
    srv.assert_healthy()


def test_retention_failed_precondition(server):
    server.push_schema([TAGS])
    for i in range(5):
        server.create("tags", {"name": str(i)})
    server.sql_write("DELETE FROM _rd_sync_log WHERE sync_id <= 3")  # what a pruner would do
    w = Watch(server, since=1)
    assert w.ended.wait(10)
    assert w.error is not None and w.error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "oldest available sync id is 4" in w.error.details()
    ok = Watch(server, since=3)  # oldest - 1: nothing was lost
    evs = ok.wait_for(2)
    ok.cancel()
    assert [e.sync_id for e in evs] == [4, 5]


def test_stream_ends_cleanly_on_shutdown(server):
    server.push_schema([TAGS])
    server.create("tags", {"name": "x"})
    ch = grpc.insecure_channel(server.address)  # the harness adds the admin key
    w = Watch(server, since=0, channel=ch)
    w.wait_for(1)
    server.proc.send_signal(signal.SIGTERM)
    assert w.ended.wait(15), "the stream did not end on shutdown"
    assert w.error is None or w.error.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.OK)
    rc = server.proc.wait(timeout=15)
    server.proc = None
    ch.close()
    assert rc == 0


def test_a_change_over_a_megabyte_is_sent(srv):
    # the feed must carry every record the server accepted (up to the 4 MiB
    # message limit), else it could never get past that sync id
    start = head(srv)
    big = "x" * (1536 * 1024)
    rid = h.uid("big")
    srv.create("notes", {"title": big, "n": 1}, id=rid)
    srv.update("notes", rid, {"n": 2})
    w = Watch(srv, since=start, models=["notes"])
    evs = w.wait_for(2)
    w.cancel()
    assert [op_name(e) for e in evs] == ["CREATE", "UPDATE"]
    assert h.to_dict(evs[0].data) == {"title": big, "n": 1}


def test_a_stream_ends_when_its_token_expires(srv):
    """Nothing is sent on an expired token's authority: the stream ends with
    UNAUTHENTICATED (token expired, naming the sync id to resume from) before
    the next change. The token is minted so that it is accepted for about 10 s
    more (its exp passed 50 s ago; verification allows 60 s of skew)."""
    import datetime

    minted = time.monotonic()
    issued = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(seconds=110)
    tok = srv.mint_offline([{"can": ["read"], "model": "*", "group": "*"}], sub="short", ttl=60,
                           issued_at=issued.strftime("%Y-%m-%dT%H:%M:%SZ"))["token"]
    start = head(srv)
    w = Watch(srv, since=start, models=["notes"], auth=tok)
    first = srv.create("notes", {"title": "seen"})
    w.wait_for(1)
    assert w.events[0].sync_id == first.last_sync_id
    time.sleep(max(0.0, minted + 11 - time.monotonic()))
    srv.create("notes", {"title": "not for an expired token"})
    assert w.ended.wait(10), "the stream outlived its token"
    assert w.error is not None and w.error.code() == grpc.StatusCode.UNAUTHENTICATED, w.error
    assert f"resume from sync id {first.last_sync_id}" in w.error.details()
    assert [e.sync_id for e in w.events] == [first.last_sync_id]
