"""Sync ids are per organisation: unique, gap-free and increasing within
one organisation, so an organisation's readAt and lastSyncId never move
because another organisation wrote (which would leak its write volume),
and its change feed shows its own ids, consecutive."""
import pytest

import harness as h
from harness import pb

R = pb.records
NOTES = {"name": "notes", "fields": [{"name": "t", "type": "STRING"}]}


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    s = h.Server(tmp_path_factory.mktemp("orgsync") / "recordd").start()
    s.a = s.as_(s.create_key(org="alpha")["key"])
    s.b = s.as_(s.create_key(org="beta")["key"])
    s.a.push_schema([NOTES])
    s.b.push_schema([NOTES])
    yield s
    problem = s.kill()
    if problem:
        pytest.fail(problem, pytrace=False)


def list_read_at(org_srv):
    return org_srv.call("ListRecords", R.ListRecordsRequest(model="notes", page_size=1)).read_at


def test_another_organisations_writes_do_not_move_read_at(srv):
    first = srv.a.create("notes", {"t": "a0"}, id="a0").last_sync_id
    before_get = srv.a.get("notes", "a0").read_at
    before_list = list_read_at(srv.a)
    assert before_get == before_list == first
    for i in range(25):
        srv.b.create("notes", {"t": f"b{i}"})
    assert srv.a.get("notes", "a0").read_at == before_get
    assert list_read_at(srv.a) == before_list


def test_ids_are_gap_free_within_an_organisation(srv):
    start = list_read_at(srv.a)
    ids = []
    for i in range(5):
        ids.append(srv.a.create("notes", {"t": f"x{i}"}).last_sync_id)
        srv.b.create("notes", {"t": f"y{i}"})  # interleaved: takes none of alpha's ids
    assert ids == list(range(start + 1, start + 6))
    b_head = list_read_at(srv.b)
    b_ids = [srv.b.create("notes", {"t": "z"}).last_sync_id for _ in range(3)]
    assert b_ids == [b_head + 1, b_head + 2, b_head + 3]


def test_the_feed_shows_consecutive_ids_of_its_organisation(srv):
    head = list_read_at(srv.a)
    fn = srv.a.raw_channel.unary_stream("/recordd.v1.Records/WatchChanges",
                                        request_serializer=lambda m: m.SerializeToString(),
                                        response_deserializer=R.ChangeEvent.FromString)
    stream = fn(R.WatchChangesRequest(since_sync_id=0), metadata=h.bearer(srv.a._auth), timeout=10)
    got = [next(stream).sync_id for _ in range(head)]
    stream.cancel()
    assert got == list(range(1, head + 1))
