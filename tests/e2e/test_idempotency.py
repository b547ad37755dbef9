"""Idempotency keys (DESIGN.md §4): one execution per (organisation, key),
the stored receipt replayed byte for byte, reuse with another request
refused, keys in flight, what is not stored, metadata vs field, expiry."""

import threading
import time

import grpc
import pytest

import harness as h
from harness import expect_error, pb, uid

R = pb.records
ITEMS = {
    "name": "items",
    "fields": [
        {"name": "a", "type": "STRING"},
        {"name": "b", "type": "STRING"},
        {"name": "n", "type": "INTEGER", "min": 0},
    ],
}


def start(factory_dir, *flags):
    s = h.Server(factory_dir / "recordd", flags).start()
    s.push_schema([ITEMS])
    return s


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    s = start(tmp_path_factory.mktemp("idem"))
    yield s
    problem = s.kill()
    if problem:
        pytest.fail(problem, pytrace=False)


def raw_call(channel, method, req, metadata=None):
    """Calls method and returns the reply bytes exactly as received."""
    fn = channel.unary_unary(f"/recordd.v1.Records/{method}",
                             request_serializer=lambda m: m if isinstance(m, bytes) else m.SerializeToString(),
                             response_deserializer=lambda b: b)
    return fn(req, timeout=h.CALL_TIMEOUT, metadata=metadata)


def update_req(rid, data, **kw):
    return R.UpdateRecordRequest(model="items", id=rid, data=h.struct(data), **kw)


def new_item(srv):
    rid = uid()
    srv.create("items", {"a": "a0", "n": 0}, id=rid)
    return rid


def test_retry_returns_the_stored_receipt_byte_for_byte_without_a_second_write(srv):
    rid = new_item(srv)
    req = update_req(rid, {"n": 1}, idempotency_key=uid("k"), return_record=True)
    first = raw_call(srv.channel, "UpdateRecord", req)
    again = raw_call(srv.channel, "UpdateRecord", req)
    assert again == first
    r = R.CommitReceipt.FromString(first)
    assert r.status == R.CONFIRMED and r.record.version == 2
    got = srv.get("items", rid)
    assert got.version == 2 and got.sync_id == r.last_sync_id


def test_create_without_id_is_created_once(srv):
    req = R.CreateRecordRequest(model="items", data=h.struct({"a": "x"}), return_record=True,
                                idempotency_key=uid("k"))
    first = R.CommitReceipt.FromString(raw_call(srv.channel, "CreateRecord", req))
    second = R.CommitReceipt.FromString(raw_call(srv.channel, "CreateRecord", req))
    assert second == first
    assert srv.get("items", first.record.id).version == 1


def test_twenty_concurrent_retries_execute_once(srv):
    rid = new_item(srv)
    req = update_req(rid, {"n": 5}, idempotency_key=uid("k"), client_tx_id="tx-20")
    n = 20
    barrier = threading.Barrier(n)
    results, in_progress, errors = [None] * n, [0] * n, []

    def run(i):
        ch = grpc.insecure_channel(srv.address, options=h.CHANNEL_OPTIONS)
        try:
            barrier.wait()
            for _ in range(200):
                try:
                    results[i] = raw_call(ch, "UpdateRecord", req)
                    return
                except grpc.RpcError as e:
                    d = h.error_details(e)
                    if d.code != grpc.StatusCode.ABORTED or d.reason != "idempotency_in_progress":
                        raise
                    in_progress[i] += 1
                    time.sleep(0.01)
            errors.append("still in progress after 200 tries")
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(repr(e))
        finally:
            ch.close()

    ts = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors, errors[:3]
    assert len(set(results)) == 1, "receipts differ"
    r = R.CommitReceipt.FromString(results[0])
    assert r.status == R.CONFIRMED and r.client_tx_id == "tx-20"
    got = srv.get("items", rid)
    assert got.version == 2 and got.sync_id == r.last_sync_id


def test_same_key_with_another_request_is_refused(srv):
    rid = new_item(srv)
    key = uid("k")
    srv.update("items", rid, {"n": 1}, idempotency_key=key)
    expect_error(grpc.StatusCode.ALREADY_EXISTS, srv.update, "items", rid, {"n": 2},
                 idempotency_key=key, reason="idempotency_key_reused")
    # another method with the same key is another request too
    expect_error(grpc.StatusCode.ALREADY_EXISTS, srv.delete, "items", rid, idempotency_key=key,
                 reason="idempotency_key_reused")
    assert srv.get("items", rid).version == 2


def test_client_tx_id_is_part_of_the_request(srv):
    rid = new_item(srv)
    key = uid("k")
    srv.update("items", rid, {"n": 1}, idempotency_key=key, client_tx_id="one")
    expect_error(grpc.StatusCode.ALREADY_EXISTS, srv.update, "items", rid, {"n": 1},
                 idempotency_key=key, client_tx_id="two", reason="idempotency_key_reused")


def test_key_in_metadata_and_in_the_field_is_the_same_key(srv):
    rid = new_item(srv)
    key = uid("k")
    first = raw_call(srv.channel, "UpdateRecord", update_req(rid, {"n": 3}),
                     metadata=[("idempotency-key", key)])
    again = raw_call(srv.channel, "UpdateRecord", update_req(rid, {"n": 3}, idempotency_key=key))
    both = raw_call(srv.channel, "UpdateRecord", update_req(rid, {"n": 3}, idempotency_key=key),
                    metadata=[("idempotency-key", key)])
    assert first == again == both
    assert srv.get("items", rid).version == 2


def test_different_keys_in_metadata_and_field_are_invalid(srv):
    rid = new_item(srv)
    expect_error(grpc.StatusCode.INVALID_ARGUMENT, srv.call, "UpdateRecord",
                 update_req(rid, {"n": 1}, idempotency_key="k-one"),
                 metadata=[("idempotency-key", "k-two")], reason="validation_failed",
                 field="idempotencyKey")
    assert srv.get("items", rid).version == 1


def test_overlong_key_is_invalid(srv):
    rid = new_item(srv)
    expect_error(grpc.StatusCode.INVALID_ARGUMENT, srv.update, "items", rid, {"n": 1},
                 idempotency_key="k" * 256, reason="validation_failed", field="idempotencyKey")


def test_struct_key_order_does_not_change_the_request(srv):
    rid = new_item(srv)
    key = uid("k")

    def request_bytes(order):
        # a Struct's map entries in the given order: concatenated messages merge
        data = b"".join(h.struct({k: v}).SerializeToString() for k, v in order)
        head = R.UpdateRecordRequest(model="items", id=rid, idempotency_key=key).SerializeToString()
        return head + b"\x1a" + bytes([len(data)]) + data  # field 3 (data), length-delimited

    first = raw_call(srv.channel, "UpdateRecord", request_bytes([("a", "x"), ("n", 4)]))
    again = raw_call(srv.channel, "UpdateRecord", request_bytes([("n", 4), ("a", "x")]))
    assert first == again
    assert srv.get("items", rid).version == 2


def test_validation_failure_is_not_stored(srv):
    rid = new_item(srv)
    key = uid("k")
    expect_error(grpc.StatusCode.INVALID_ARGUMENT, srv.update, "items", rid, {"n": -1},
                 idempotency_key=key, reason="validation_failed", field="n")
    rc = srv.update("items", rid, {"n": 1}, idempotency_key=key)
    assert rc.status == R.CONFIRMED


def test_not_found_is_not_stored(srv):
    key = uid("k")
    rid = uid()
    expect_error(grpc.StatusCode.NOT_FOUND, srv.update, "items", rid, {"n": 1}, idempotency_key=key)
    srv.create("items", {"n": 0}, id=rid)
    assert srv.update("items", rid, {"n": 1}, idempotency_key=key).status == R.CONFIRMED


def test_stored_rejection_replays_the_same_status_and_details(srv):
    rid = new_item(srv)
    req = update_req(rid, {"n": 9}, expected_version=pb.wrappers.Int64Value(value=1),
                     idempotency_key=uid("k"))
    srv.update("items", rid, {"a": "moved"})  # version 2
    outcomes = []
    for _ in range(2):
        with pytest.raises(grpc.RpcError) as ei:
            raw_call(srv.channel, "UpdateRecord", req)
        tm = dict(ei.value.trailing_metadata() or ())
        outcomes.append((ei.value.code(), ei.value.details(), tm["grpc-status-details-bin"]))
    assert outcomes[0] == outcomes[1]
    d = expect_error(grpc.StatusCode.ABORTED, raw_call, srv.channel, "UpdateRecord", req,
                     reason="version_conflict")
    assert d.receipt.current_version == 2
    assert srv.get("items", rid).version == 2


def test_held_outcome_is_stored_and_replayed(srv):
    rid = new_item(srv)
    seen = srv.get("items", rid).read_at
    srv.update("items", rid, {"a": "theirs"})
    req = update_req(rid, {"a": "mine"}, read_at=pb.wrappers.Int64Value(value=seen),
                     on_stale=R.NOTIFY, idempotency_key=uid("k"))
    first = raw_call(srv.channel, "UpdateRecord", req)
    assert R.CommitReceipt.FromString(first).status == R.HELD
    assert raw_call(srv.channel, "UpdateRecord", req) == first


def test_keys_are_scoped_to_the_stored_outcome_across_restarts(tmp_path):
    s = start(tmp_path)
    try:
        rid = new_item(s)
        req = update_req(rid, {"n": 2}, idempotency_key="k-restart")
        first = raw_call(s.channel, "UpdateRecord", req)
        s.restart()
        assert raw_call(s.channel, "UpdateRecord", req) == first
        assert s.get("items", rid).version == 2
    finally:
        problem = s.kill()
    assert problem is None, problem


def test_keys_expire_after_the_ttl(tmp_path):
    s = start(tmp_path, "--idempotency-ttl", "1")
    try:
        rid = new_item(s)
        s.update("items", rid, {"n": 1}, idempotency_key="k-ttl")
        time.sleep(2.1)
        rc = s.update("items", rid, {"n": 2}, idempotency_key="k-ttl")
        assert rc.status == R.CONFIRMED
        assert s.get("items", rid).version == 3
    finally:
        problem = s.kill()
    assert problem is None, problem
