"""Who may receive a stored idempotent outcome. Keys are scoped to
(organisation, principal): another principal of the organisation reusing a
key runs its own request under its own capabilities, and a replay is
authorised again, so a narrower token of the same principal cannot fetch a
stored receipt either. The stored receipt never reaches a caller that could
not have made the original call."""
import grpc
import pytest

import harness as h
from harness import pb, uid

R = pb.records
ITEMS = {"name": "items", "fields": [{"name": "a", "type": "STRING"}, {"name": "n", "type": "INTEGER"}]}
OTHER = {"name": "other", "fields": [{"name": "a", "type": "STRING"}]}
ALL = ["read", "create", "update", "delete"]


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    s = h.Server(tmp_path_factory.mktemp("idemscope") / "recordd").start()
    s.push_schema([ITEMS, OTHER])
    yield s
    problem = s.kill()
    if problem:
        pytest.fail(problem, pytrace=False)


def caps(verbs, model="items"):
    return [{"can": verbs, "model": model, "group": "*"}]


def new_item(srv):
    rid = uid()
    srv.create("items", {"a": "secret", "n": 0}, id=rid)
    return rid


@pytest.mark.parametrize("method", ["UpdateRecord", "DeleteRecord"])
def test_another_principal_without_capability_gets_no_stored_receipt(srv, method):
    rid, key = new_item(srv), uid("k")
    if method == "UpdateRecord":
        req = R.UpdateRecordRequest(model="items", id=rid, data=h.struct({"n": 1}), idempotency_key=key,
                                    return_record=True)
    else:
        req = R.DeleteRecordRequest(model="items", id=rid, idempotency_key=key)
    first = srv.call(method, req)
    assert first.success
    outsider = srv.create_key(caps=caps(ALL, model="other"))["key"]
    err = h.expect_error(grpc.StatusCode.PERMISSION_DENIED, srv.as_(outsider).call, method, req)
    assert "secret" not in str(err)
    if err.receipt is not None:
        assert not err.receipt.HasField("record") or err.receipt.record.id == ""


def test_another_principal_with_capability_runs_its_own_write(srv):
    rid, key = new_item(srv), uid("k")
    req = R.UpdateRecordRequest(model="items", id=rid, data=h.struct({"n": 1}), idempotency_key=key)
    a = srv.call("UpdateRecord", req)
    peer = srv.create_key(caps=caps(ALL))["key"]
    b = srv.as_(peer).call("UpdateRecord", req)
    assert b.server_tx_id != a.server_tx_id, "the peer got the other principal's stored receipt"
    assert srv.get("items", rid).version == 3
    # and each principal's own retry still replays its own receipt
    assert srv.call("UpdateRecord", req).server_tx_id == a.server_tx_id
    assert srv.as_(peer).call("UpdateRecord", req).server_tx_id == b.server_tx_id


def test_a_narrower_token_of_the_same_key_cannot_replay(srv):
    k = srv.create_key(caps=caps(ALL))
    rid, key = new_item(srv), uid("k")
    req = R.UpdateRecordRequest(model="items", id=rid, data=h.struct({"n": 7}), idempotency_key=key,
                                return_record=True)
    assert srv.as_(k["key"]).call("UpdateRecord", req).success
    tok = srv.mint_offline(caps(["read"]), key_id=k["key_id"])["token"]  # read, no update
    err = h.expect_error(grpc.StatusCode.PERMISSION_DENIED, srv.as_(tok).call, "UpdateRecord", req)
    assert "secret" not in str(err)
    # the key itself still replays
    again = srv.as_(k["key"]).call("UpdateRecord", req)
    assert again.record.data["n"] == 7


def test_http_replay_is_scoped_too(srv):
    rid, key = new_item(srv), uid("k")
    hdr = {"Idempotency-Key": key, "Prefer": "return=representation"}
    r = srv.http("PATCH", f"/v1/models/items/{rid}", json_body={"n": 2}, headers=hdr)
    assert r.status_code == 200, r.text
    outsider = srv.create_key(caps=caps(ALL, model="other"))["key"]
    r = srv.http("PATCH", f"/v1/models/items/{rid}", json_body={"n": 2}, headers=hdr, auth=outsider)
    assert r.status_code == 403, r.text
    assert "Idempotent-Replayed" not in r.headers and "secret" not in r.text


def test_a_bulk_replay_is_authorised_per_operation(srv):
    k = srv.create_key(caps=caps(ALL))
    rid, key = new_item(srv), uid("k")
    op = R.BulkOperation(update=R.UpdateRecordRequest(model="items", id=rid, data=h.struct({"n": 9})))
    req = R.BulkMutateRequest(operations=[op], idempotency_key=key)
    assert srv.as_(k["key"]).call("BulkMutate", req).receipt.success
    tok = srv.mint_offline(caps(["read"]), key_id=k["key_id"])["token"]  # read, no update
    err = h.expect_error(grpc.StatusCode.PERMISSION_DENIED, srv.as_(tok).call, "BulkMutate", req)
    assert "secret" not in str(err)
    assert srv.as_(k["key"]).call("BulkMutate", req).receipt.success
