"""Optimistic concurrency (DESIGN.md §4): expected_version and the current
version in the rejected receipt; read_at with on_stale REJECT / OVERWRITE /
NOTIFY and per-field staleness; concurrent writers; a lost-update check
under contention."""

import threading

import grpc
import pytest

import harness as h
from harness import expect_error, pb, to_dict, uid

R = pb.records
ITEMS = {
    "name": "items",
    "fields": [
        {"name": "a", "type": "STRING"},
        {"name": "b", "type": "STRING"},
        {"name": "n", "type": "INTEGER"},
    ],
}


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    s = h.Server(tmp_path_factory.mktemp("concurrency") / "recordd", ("--sync", "normal")).start()
    s.push_schema([ITEMS])
    yield s
    problem = s.kill()
    if problem:
        pytest.fail(problem, pytrace=False)


def i64(v):
    return pb.wrappers.Int64Value(value=v)


def new_item(srv, **data):
    rid = uid()
    srv.create("items", {"a": "a0", "b": "b0", "n": 0, **data}, id=rid)
    return rid


# ---- expected_version --------------------------------------------------------


@pytest.mark.parametrize("op", ["update", "replace", "delete"])
def test_version_conflict_receipt_carries_the_current_version(srv, op):
    rid = new_item(srv)
    srv.update("items", rid, {"a": "a1"})  # version 2
    args = () if op == "delete" else ({"a": "x"},)
    d = expect_error(grpc.StatusCode.ABORTED, getattr(srv, op), "items", rid, *args,
                     expected_version=1, reason="version_conflict")
    assert d.receipt.status == R.REJECTED
    assert d.receipt.current_version == 2
    assert srv.get("items", rid).version == 2


# ---- read_at + on_stale -------------------------------------------------------


@pytest.mark.parametrize("policy", [R.ON_STALE_UNSPECIFIED, R.REJECT])
def test_stale_field_is_rejected_with_the_conflict(srv, policy):
    rid = new_item(srv)
    seen = srv.get("items", rid)
    rc = srv.update("items", rid, {"a": "theirs"})
    d = expect_error(grpc.StatusCode.ABORTED, srv.update, "items", rid, {"a": "mine"},
                     read_at=i64(seen.read_at), on_stale=policy, reason="stale_context", field="a")
    r = d.receipt
    assert r.status == R.REJECTED and not r.success
    assert r.error.code == "stale_context"
    assert r.current_version == 2
    (n,) = r.notifications
    assert (n.model, n.id, n.read_at) == ("items", rid, seen.read_at)
    assert n.observed_sync_id == rc.last_sync_id
    assert list(n.conflicting_fields) == ["a"]
    assert to_dict(n.current_values) == {"a": "theirs"}
    assert n.written_by != "" and n.group == "default"
    assert srv.get_data("items", rid)["a"] == "theirs"


def test_overwrite_applies_a_stale_write(srv):
    rid = new_item(srv)
    seen = srv.get("items", rid)
    srv.update("items", rid, {"a": "theirs"})
    rc = srv.update("items", rid, {"a": "mine"}, read_at=i64(seen.read_at), on_stale=R.OVERWRITE)
    assert rc.success and rc.status == R.CONFIRMED
    assert srv.get_data("items", rid)["a"] == "mine"


def test_notify_holds_a_stale_write_and_returns_ok(srv):
    rid = new_item(srv)
    seen = srv.get("items", rid)
    rc_theirs = srv.update("items", rid, {"a": "theirs", "n": 7})
    rc = srv.update("items", rid, {"a": "mine", "n": 1, "b": "b1"}, read_at=i64(seen.read_at),
                    on_stale=R.NOTIFY)
    assert rc.status == R.HELD and rc.success is False
    assert rc.last_sync_id == 0 and rc.ops == 0
    assert rc.error.code == "stale_context"
    assert rc.current_version == 2
    (n,) = rc.notifications
    assert list(n.conflicting_fields) == ["a", "n"]
    assert to_dict(n.current_values) == {"a": "theirs", "n": 7}
    assert n.observed_sync_id == rc_theirs.last_sync_id
    assert n.read_at == seen.read_at
    got = srv.get("items", rid)
    assert got.version == 2 and to_dict(got.data)["b"] == "b0"


def test_notify_reports_a_cleared_field_as_null(srv):
    rid = new_item(srv)
    seen = srv.get("items", rid)
    srv.update("items", rid, {"a": None})
    rc = srv.update("items", rid, {"a": "mine"}, read_at=i64(seen.read_at), on_stale=R.NOTIFY)
    assert rc.status == R.HELD
    assert to_dict(rc.notifications[0].current_values) == {"a": None}


@pytest.mark.parametrize("policy", [R.ON_STALE_UNSPECIFIED, R.REJECT, R.OVERWRITE, R.NOTIFY])
def test_write_to_fields_nobody_changed_succeeds_under_every_policy(srv, policy):
    rid = new_item(srv)
    seen = srv.get("items", rid)
    srv.update("items", rid, {"a": "theirs"})
    rc = srv.update("items", rid, {"b": "mine"}, read_at=i64(seen.read_at), on_stale=policy)
    assert rc.status == R.CONFIRMED
    assert srv.get_data("items", rid) == {"a": "theirs", "b": "mine", "n": 0}


def test_fresh_read_at_is_not_stale(srv):
    rid = new_item(srv)
    srv.update("items", rid, {"a": "a1"})
    seen = srv.get("items", rid)
    rc = srv.update("items", rid, {"a": "a2"}, read_at=i64(seen.read_at))
    assert rc.status == R.CONFIRMED


def test_replace_writes_every_field_so_any_change_is_stale(srv):
    rid = new_item(srv)
    seen = srv.get("items", rid)
    srv.update("items", rid, {"b": "theirs"})
    d = expect_error(grpc.StatusCode.ABORTED, srv.replace, "items", rid, {"a": "x"},
                     read_at=i64(seen.read_at), reason="stale_context")
    assert list(d.receipt.notifications[0].conflicting_fields) == ["b"]


def test_delete_after_a_change_is_stale_and_with_fresh_read_at_applies(srv):
    rid = new_item(srv)
    seen = srv.get("items", rid)
    srv.update("items", rid, {"n": 5})
    expect_error(grpc.StatusCode.ABORTED, srv.delete, "items", rid, read_at=i64(seen.read_at),
                 reason="stale_context", field="n")
    rc = srv.delete("items", rid, read_at=i64(srv.get("items", rid).read_at))
    assert rc.status == R.CONFIRMED
    srv.assert_not_found("items", rid)


def test_record_created_after_read_at_is_stale(srv):
    before = srv.get("items", new_item(srv)).read_at
    rid = new_item(srv)
    expect_error(grpc.StatusCode.ABORTED, srv.update, "items", rid, {"a": "x"},
                 read_at=i64(before), reason="stale_context", field="a")


def test_negative_read_at_is_invalid(srv):
    rid = new_item(srv)
    expect_error(grpc.StatusCode.INVALID_ARGUMENT, srv.update, "items", rid, {"a": "x"},
                 read_at=i64(-1), reason="validation_failed", field="readAt")


# ---- concurrent writers ---------------------------------------------------------


def _race(srv, rid, patches, read_at, policy):
    """Sends the patches at the same moment (own channels, one barrier) and
    returns their outcomes: a receipt or an ErrorDetails."""
    barrier = threading.Barrier(len(patches))
    out = [None] * len(patches)

    def run(i):
        ch = grpc.insecure_channel(srv.address, options=h.CHANNEL_OPTIONS)
        fn = ch.unary_unary("/recordd.v1.Records/UpdateRecord",
                            request_serializer=lambda m: m.SerializeToString(),
                            response_deserializer=R.CommitReceipt.FromString)
        req = R.UpdateRecordRequest(model="items", id=rid, data=h.struct(patches[i]),
                                    read_at=i64(read_at), on_stale=policy)
        barrier.wait()
        try:
            out[i] = fn(req, timeout=h.CALL_TIMEOUT)
        except grpc.RpcError as e:
            out[i] = h.error_details(e)
        finally:
            ch.close()

    ts = [threading.Thread(target=run, args=(i,)) for i in range(len(patches))]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return out


def test_concurrent_writers_to_different_fields_both_succeed(srv):
    for _ in range(5):
        rid = new_item(srv)
        seen = srv.get("items", rid).read_at
        out = _race(srv, rid, [{"a": "one"}, {"b": "two"}], seen, R.REJECT)
        assert all(isinstance(o, R.CommitReceipt) and o.status == R.CONFIRMED for o in out), out
        assert srv.get_data("items", rid) == {"a": "one", "b": "two", "n": 0}


@pytest.mark.parametrize("policy", [R.REJECT, R.NOTIFY])
def test_concurrent_writers_to_the_same_field_one_wins(srv, policy):
    for _ in range(5):
        rid = new_item(srv)
        seen = srv.get("items", rid).read_at
        out = _race(srv, rid, [{"a": "one"}, {"a": "two"}], seen, policy)
        won = [o for o in out if isinstance(o, R.CommitReceipt) and o.status == R.CONFIRMED]
        lost = [o for o in out if o not in won]
        assert len(won) == 1 and len(lost) == 1, out
        if policy == R.REJECT:
            assert lost[0].code == grpc.StatusCode.ABORTED and lost[0].reason == "stale_context"
        else:
            assert lost[0].status == R.HELD
        assert srv.get("items", rid).version == 2


def test_no_lost_updates_with_read_at_and_reject(srv):
    """32 clients x 50 read-modify-write increments of one counter: every
    stale write is rejected and retried, so none is lost."""
    clients, rounds = 32, 50
    rid = new_item(srv)
    errors = []
    retries = [0] * clients

    def run(i):
        ch = grpc.insecure_channel(srv.address, options=h.CHANNEL_OPTIONS)
        get = ch.unary_unary("/recordd.v1.Records/GetRecord",
                             request_serializer=lambda m: m.SerializeToString(),
                             response_deserializer=R.Record.FromString)
        upd = ch.unary_unary("/recordd.v1.Records/UpdateRecord",
                             request_serializer=lambda m: m.SerializeToString(),
                             response_deserializer=R.CommitReceipt.FromString)
        try:
            done = 0
            while done < rounds:
                rec = get(R.GetRecordRequest(model="items", id=rid), timeout=h.CALL_TIMEOUT)
                n = int(rec.data.fields["n"].number_value)
                try:
                    upd(R.UpdateRecordRequest(model="items", id=rid, data=h.struct({"n": n + 1}),
                                              read_at=i64(rec.read_at), on_stale=R.REJECT),
                        timeout=h.CALL_TIMEOUT)
                    done += 1
                except grpc.RpcError as e:
                    d = h.error_details(e)
                    if d.reason != "stale_context":
                        raise
                    retries[i] += 1
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(repr(e))
        finally:
            ch.close()

    ts = [threading.Thread(target=run, args=(i,)) for i in range(clients)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors, errors[:3]
    got = srv.get("items", rid)
    assert to_dict(got.data)["n"] == clients * rounds
    assert got.version == 1 + clients * rounds
