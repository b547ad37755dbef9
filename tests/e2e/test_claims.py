"""Claims (DESIGN.md §3 Claims, §4 claim): AcquireClaim / ReleaseClaim over
real gRPC, waiting for a busy record, expiry, restarts, and the claim check on
record writes. Choices where DESIGN.md is silent are in docs/API.md (Claims).

Every call here acts as the server's admin key; that a claim id is useless to
another principal is shown in test_auth.py
(test_claim_is_useless_to_another_principal) and the store's unit tests."""

import threading
import time

import grpc
import pytest

import harness as h
from harness import expect_error

CLAIMS = "/recordd.v1.Claims/"


def cpb():
    h.pb.ensure()
    from recordd.v1 import claims_pb2

    return claims_pb2


def _rpc(server, method, resp_cls, channel=None):
    return (channel or server.channel).unary_unary(
        CLAIMS + method,
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=resp_cls.FromString,
    )


def acquire(server, model, id, ttl=30, wait=0, claim_id="", timeout=h.CALL_TIMEOUT, channel=None):
    c = cpb()
    req = c.AcquireClaimRequest(model=model, id=id, ttl_seconds=ttl, wait_seconds=wait, claim_id=claim_id)
    return _rpc(server, "AcquireClaim", c.Claim, channel)(req, timeout=timeout)


def release(server, claim_id, model="", id=""):
    c = cpb()
    req = c.ReleaseClaimRequest(model=model, id=id, claim_id=claim_id)
    return _rpc(server, "ReleaseClaim", c.ReleaseClaimResponse)(req, timeout=h.CALL_TIMEOUT)


def new_student(server, name="Claimed"):
    rid = h.uid("c")
    server.create("students", {"firstName": name}, id=rid)
    return rid


class Background:
    """Runs fn in a thread; .result() returns its value or re-raises."""

    def __init__(self, fn, *args, **kw):
        self.value = self.error = None
        self.ended_at = None

        def run():
            try:
                self.value = fn(*args, **kw)
            except BaseException as e:  # noqa: BLE001 - handed to the test thread
                self.error = e
            self.ended_at = time.monotonic()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def done(self):
        return not self.thread.is_alive()

    def result(self, timeout=h.CALL_TIMEOUT):
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the call did not return"
        if self.error is not None:
            raise self.error
        return self.value


# ---------------------------------------------------------------------------
# AcquireClaim
# ---------------------------------------------------------------------------


def test_acquire_returns_a_claim(school):
    rid = new_student(school)
    before = time.time()
    c = acquire(school, "students", rid, ttl=30)
    assert c.claim_id
    assert (c.model, c.id) == ("students", rid)
    assert c.holder, "the holder is the calling principal"
    expires = c.expires_at.seconds + c.expires_at.nanos / 1e9
    assert before + 29 <= expires <= time.time() + 31


def test_second_acquire_without_wait_is_claimed(school):
    rid = new_student(school)
    first = acquire(school, "students", rid)
    d = expect_error(grpc.StatusCode.ABORTED, acquire, school, "students", rid, reason="claimed")
    assert first.holder in d.message and "until" in d.message, d.message
    assert first.claim_id not in d.message, "another caller's claim id must not leak"


def test_claim_ids_are_unique_per_record(school):
    a, b = new_student(school), new_student(school)
    assert acquire(school, "students", a).claim_id != acquire(school, "students", b).claim_id


def test_renewing_keeps_the_id_and_moves_the_expiry(school):
    rid = new_student(school)
    c = acquire(school, "students", rid, ttl=5)
    r = acquire(school, "students", rid, ttl=600, claim_id=c.claim_id)
    assert r.claim_id == c.claim_id
    assert r.expires_at.seconds >= c.expires_at.seconds + 590
    expect_error(grpc.StatusCode.ABORTED, acquire, school, "students", rid, claim_id="clm_nope", reason="claimed")


@pytest.mark.parametrize("ttl", [0, -1, 3601])
def test_ttl_out_of_range_is_invalid_argument(school, ttl):
    rid = new_student(school)
    expect_error(grpc.StatusCode.INVALID_ARGUMENT, acquire, school, "students", rid, ttl=ttl, field="ttlSeconds")


@pytest.mark.parametrize("wait", [-1, 61])
def test_wait_out_of_range_is_invalid_argument(school, wait):
    rid = new_student(school)
    expect_error(grpc.StatusCode.INVALID_ARGUMENT, acquire, school, "students", rid, wait=wait, field="waitSeconds")


def test_acquire_on_missing_record_or_model_is_not_found(school):
    expect_error(grpc.StatusCode.NOT_FOUND, acquire, school, "students", h.uid("none"), reason="not_found")
    expect_error(grpc.StatusCode.NOT_FOUND, acquire, school, "ghosts", "x", reason="not_found")


def test_acquire_needs_model_and_id(school):
    expect_error(grpc.StatusCode.INVALID_ARGUMENT, acquire, school, "", "x", field="model")
    expect_error(grpc.StatusCode.INVALID_ARGUMENT, acquire, school, "students", "", field="id")


# ---------------------------------------------------------------------------
# Waiting
# ---------------------------------------------------------------------------


def test_waiting_acquire_succeeds_soon_after_release(school):
    rid = new_student(school)
    first = acquire(school, "students", rid, ttl=60)
    waiter = Background(acquire, school, "students", rid, ttl=30, wait=3)
    time.sleep(0.4)
    assert not waiter.done(), "the waiting acquire returned while the record was claimed"
    released_at = time.monotonic()
    assert release(school, first.claim_id).released
    got = waiter.result()
    assert got.claim_id and got.claim_id != first.claim_id
    assert waiter.ended_at - released_at < 2.5, "the waiter was not woken by the release"


def test_waiting_acquire_succeeds_after_expiry(school):
    rid = new_student(school)
    first = acquire(school, "students", rid, ttl=1)
    start = time.monotonic()
    got = acquire(school, "students", rid, ttl=30, wait=3)
    elapsed = time.monotonic() - start
    assert got.claim_id != first.claim_id
    assert elapsed < 2.9, f"took {elapsed:.2f}s: the waiter was not woken at the expiry"


def test_waiting_acquire_times_out_claimed(school):
    rid = new_student(school)
    acquire(school, "students", rid, ttl=60)
    start = time.monotonic()
    expect_error(grpc.StatusCode.ABORTED, acquire, school, "students", rid, wait=1, reason="claimed")
    elapsed = time.monotonic() - start
    assert 0.8 <= elapsed < 5, f"waited {elapsed:.2f}s for a 1 s wait"


def test_one_release_wakes_one_winner(school):
    rid = new_student(school)
    first = acquire(school, "students", rid, ttl=60)
    waiters = [Background(acquire, school, "students", rid, ttl=60, wait=2) for _ in range(3)]
    time.sleep(0.4)
    release(school, first.claim_id)
    won, lost = [], []
    for w in waiters:
        try:
            won.append(w.result())
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.ABORTED, e
            lost.append(e)
    assert len(won) == 1 and len(lost) == 2


def test_waiter_gives_up_at_the_call_deadline(school):
    rid = new_student(school)
    first = acquire(school, "students", rid, ttl=60)
    with pytest.raises(grpc.RpcError) as ei:
        acquire(school, "students", rid, wait=30, timeout=0.5)
    # the server ends the wait at the deadline: whichever side is first wins
    assert ei.value.code() in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.ABORTED), ei.value
    # the abandoned waiter must not take the claim after its deadline
    time.sleep(0.5)
    release(school, first.claim_id)
    time.sleep(0.3)
    assert acquire(school, "students", rid).claim_id


def test_stop_with_waiting_calls_is_prompt(server_factory):
    srv = server_factory()
    srv.push_schema(h.SCHOOL)
    rid = new_student(srv)
    acquire(srv, "students", rid, ttl=60)
    # its own channel: stop() closes the server's, which would cancel the call
    channel = grpc.insecure_channel(srv.address)
    try:
        waiter = Background(acquire, srv, "students", rid, wait=60, channel=channel)
        time.sleep(0.4)
        start = time.monotonic()
        srv.stop()  # asserts exit status 0
        assert time.monotonic() - start < 8, "stopping waited for the waiting call"
        with pytest.raises(grpc.RpcError) as ei:
            waiter.result()
        assert ei.value.code() == grpc.StatusCode.UNAVAILABLE, ei.value
    finally:
        channel.close()


# ---------------------------------------------------------------------------
# ReleaseClaim
# ---------------------------------------------------------------------------


def test_release_by_the_holder(school):
    rid = new_student(school)
    c = acquire(school, "students", rid)
    r = release(school, c.claim_id, model="students", id=rid)
    assert r.released
    assert (r.claim.claim_id, r.claim.model, r.claim.id, r.claim.holder) == (c.claim_id, "students", rid, c.holder)
    assert acquire(school, "students", rid).claim_id
    expect_error(grpc.StatusCode.NOT_FOUND, release, school, c.claim_id, reason="not_found")


def test_release_of_an_unknown_claim_is_not_found(school):
    expect_error(grpc.StatusCode.NOT_FOUND, release, school, "clm_doesnotexist", reason="not_found")
    expect_error(grpc.StatusCode.INVALID_ARGUMENT, release, school, "", field="claimId")


def test_release_on_the_wrong_record_is_not_found(school):
    a, b = new_student(school), new_student(school)
    c = acquire(school, "students", a)
    expect_error(grpc.StatusCode.NOT_FOUND, release, school, c.claim_id, model="students", id=b, reason="not_found")
    expect_error(grpc.StatusCode.ABORTED, acquire, school, "students", a, reason="claimed")


def test_claims_survive_a_restart(server):
    server.push_schema(h.SCHOOL)
    rid = new_student(server)
    c = acquire(server, "students", rid, ttl=120)
    server.restart()
    expect_error(grpc.StatusCode.ABORTED, acquire, server, "students", rid, reason="claimed")
    assert release(server, c.claim_id).released
    assert acquire(server, "students", rid).claim_id


# ---------------------------------------------------------------------------
# The claim check on record writes
# ---------------------------------------------------------------------------


def test_writes_to_a_claimed_record_without_the_claim_are_claimed(school):
    rid = new_student(school)
    acquire(school, "students", rid)
    for fn, args in [
        (school.update, ("students", rid, {"age": 3})),
        (school.replace, ("students", rid, {"firstName": "R"})),
        (school.delete, ("students", rid)),
    ]:
        d = expect_error(grpc.StatusCode.ABORTED, fn, *args, reason="claimed")
        assert d.receipt is not None and d.receipt.status == h.pb.records.REJECTED
    assert h.to_dict(school.get("students", rid).data)["firstName"] == "Claimed"


def test_writes_are_free_again_after_release(school):
    rid = new_student(school)
    c = acquire(school, "students", rid)
    release(school, c.claim_id)
    assert school.update("students", rid, {"age": 4}).success


def test_write_with_the_claim_id_succeeds(school):
    rid = new_student(school)
    c = acquire(school, "students", rid)
    assert school.update("students", rid, {"age": 5}, claim=c.claim_id).success
    assert school.replace("students", rid, {"firstName": "Mine"}, claim=c.claim_id).success
    assert school.delete("students", rid, claim=c.claim_id).success
