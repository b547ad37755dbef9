"""Claims are authorised against the group of the record actually claimed,
by the writer, as record writes are: a principal with update in one sync
group can claim and release records there and nowhere else, and a record it
of another group answers PERMISSION_DENIED. A release is checked against
the group of the record its claim is on, not just "update somewhere"."""
import grpc
import pytest

import harness as h
from harness import pb, uid

C = pb.claims
TASKS = {"name": "tasks", "fields": [{"name": "t", "type": "STRING"}]}
G1 = [{"can": ["update", "read"], "model": "tasks", "group": "g1"}]


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    s = h.Server(tmp_path_factory.mktemp("claimsauthz") / "recordd").start()
    s.push_schema([TASKS])
    s.create("tasks", {"t": "a"}, id="in-g1", group="g1")
    s.create("tasks", {"t": "b"}, id="in-g2", group="g2")
    s.g1 = s.create_key(caps=G1)["key"]
    yield s
    problem = s.kill()
    if problem:
        pytest.fail(problem, pytrace=False)


def acquire(srv, auth, rid):
    return srv.as_(auth).call("AcquireClaim", C.AcquireClaimRequest(model="tasks", id=rid, ttl_seconds=30))


def test_claim_in_own_group_and_release(srv):
    c = acquire(srv, srv.g1, "in-g1")
    r = srv.as_(srv.g1).call("ReleaseClaim", C.ReleaseClaimRequest(claim_id=c.claim_id))
    assert r.released


def test_claim_outside_own_group_is_denied(srv):
    h.expect_error(grpc.StatusCode.PERMISSION_DENIED, acquire, srv, srv.g1, "in-g2")
    # as for record writes: update on the model somewhere makes a missing id NOT_FOUND
    h.expect_error(grpc.StatusCode.NOT_FOUND, acquire, srv, srv.g1, "does-not-exist")


def test_release_of_a_claim_outside_own_group_is_denied(srv):
    # the holder is the key; a token of it limited to g1 may not release a g2 claim
    both = srv.create_key(caps=[{"can": ["update"], "model": "tasks", "group": "*"}])
    c = acquire(srv, both["key"], "in-g2")
    narrow = srv.mint_offline([{"can": ["update"], "model": "tasks", "group": "g1"}], key_id=both["key_id"])
    h.expect_error(grpc.StatusCode.PERMISSION_DENIED, srv.as_(narrow["token"]).call, "ReleaseClaim",
                   C.ReleaseClaimRequest(claim_id=c.claim_id))
    assert srv.as_(both["key"]).call("ReleaseClaim", C.ReleaseClaimRequest(claim_id=c.claim_id)).released
