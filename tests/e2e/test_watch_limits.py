"""WatchChanges needs a read capability (on every model it names, or on
some model), and one principal may hold at most
--max-watch-streams-per-principal open streams."""
import time

import grpc
import pytest

import harness as h
from harness import pb, uid

R = pb.records
CAP = 2
MODELS = [{"name": "a", "fields": [{"name": "x", "type": "STRING"}]},
          {"name": "b", "fields": [{"name": "x", "type": "STRING"}]}]


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    s = h.Server(tmp_path_factory.mktemp("watchlim") / "recordd",
                 extra_args=("--max-watch-streams-per-principal", str(CAP))).start()
    s.push_schema(MODELS)
    yield s
    problem = s.kill()
    if problem:
        pytest.fail(problem, pytrace=False)


def watch(srv, auth, **kw):
    fn = srv.raw_channel.unary_stream("/recordd.v1.Records/WatchChanges",
                                      request_serializer=lambda m: m.SerializeToString(),
                                      response_deserializer=R.ChangeEvent.FromString)
    return fn(R.WatchChangesRequest(**kw), metadata=h.bearer(auth), timeout=30)


def opened(srv, stream, model="a"):
    """True when the stream delivers the next change (a create made here)."""
    srv.create(model, {"x": "1"}, id=uid())
    try:
        ev = next(stream)
        return ev is not None
    except grpc.RpcError as e:
        return e


def test_watch_without_read_is_permission_denied(srv):
    writer = srv.create_key(caps=[{"can": ["create", "update"], "model": "*", "group": "*"}])["key"]
    s = watch(srv, writer, since_sync_id=0)
    with pytest.raises(grpc.RpcError) as e:
        next(s)
    assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_watch_of_a_model_without_read_on_it_is_denied(srv):
    a_reader = srv.create_key(caps=[{"can": ["read"], "model": "a", "group": "*"}])["key"]
    s = watch(srv, a_reader, since_sync_id=0, models=["b"])
    with pytest.raises(grpc.RpcError) as e:
        next(s)
    assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
    head = srv.create("a", {"x": "h"}).last_sync_id
    ok = watch(srv, a_reader, models=["a"], since_sync_id=head)
    assert opened(srv, ok) is True
    ok.cancel()


def test_streams_per_principal_are_capped(srv):
    k = srv.create_key(caps=[{"can": ["read"], "model": "*", "group": "*"}])["key"]
    other = srv.create_key(caps=[{"can": ["read"], "model": "*", "group": "*"}])["key"]
    head = srv.create("a", {"x": "h"}).last_sync_id
    streams = [watch(srv, k, since_sync_id=head) for _ in range(CAP)]
    try:
        for s in streams:
            assert opened(srv, s) is True
        extra = watch(srv, k, since_sync_id=head)
        with pytest.raises(grpc.RpcError) as e:
            next(extra)
        assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "--max-watch-streams-per-principal" in e.value.details()
        # another principal is not affected
        o = watch(srv, other, since_sync_id=head)
        assert opened(srv, o) is True
        o.cancel()
        # closing one frees a slot
        streams.pop().cancel()
        for _ in range(50):
            again = watch(srv, k, since_sync_id=head)
            try:
                next(again)
                streams.append(again)
                break
            except grpc.RpcError as e:
                assert e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                time.sleep(0.1)
        else:
            pytest.fail("no slot came back after a stream was cancelled")
    finally:
        for s in streams:
            s.cancel()
