"""gRPC and HTTP/JSON are two doors to one handler (DESIGN.md §2): for a set
of requests, the gRPC response and the HTTP response decode to the same
protobuf message (json_format.Parse into the response type), and a failed
call's problem+json carries what the gRPC status details carry."""

import json

import grpc
import pytest
from google.protobuf import json_format

import harness as h
from harness import expect_error, pb, uid

R = pb.records
ITEMS = {"name": "items", "fields": [{"name": "a", "type": "STRING"}, {"name": "n", "type": "INTEGER"}]}


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    s = h.Server(tmp_path_factory.mktemp("parity") / "recordd").start()
    s.push_schema([h.STUDENTS, ITEMS])
    yield s
    problem = s.kill()
    if problem:
        pytest.fail(problem, pytrace=False)


def parse(resp, cls):
    assert resp.status_code in (200, 201), resp.text
    return json_format.Parse(resp.text, cls())


def seeded(srv):
    rid = uid()
    srv.create("items", {"a": "x\u00e9\u2028\"q\"", "n": 2**40}, id=rid)
    return rid


def test_get_record(srv):
    rid = seeded(srv)
    assert parse(srv.http("GET", f"/v1/models/items/{rid}"), R.Record) == srv.get("items", rid)


def test_list_records(srv):
    seeded(srv)
    seeded(srv)
    grpc_resp = srv.call("ListRecords", R.ListRecordsRequest(model="items", order_by="id", page_size=1))
    http_resp = parse(srv.http("GET", "/v1/models/items?orderBy=id&pageSize=1"), R.ListRecordsResponse)
    assert http_resp.records == grpc_resp.records and http_resp.read_at == grpc_resp.read_at
    # page tokens are sealed per call: both continue to the same next page
    nxt_grpc = srv.call("ListRecords", R.ListRecordsRequest(model="items", order_by="id", page_size=1,
                                                            page_token=grpc_resp.next_page_token))
    nxt_http = parse(srv.http("GET", "/v1/models/items", params={"orderBy": "id", "pageSize": "1",
                                                               "pageToken": http_resp.next_page_token}),
                     R.ListRecordsResponse)
    assert nxt_http.records == nxt_grpc.records


def test_get_schema(srv):
    got = parse(srv.http("GET", "/v1/schema"), pb.schema.Schema)
    assert got == srv.get_schema()


@pytest.mark.parametrize("op", ["create", "update", "replace", "delete"])
def test_write_receipts_are_the_same_message(srv, op):
    """The same request with the same idempotency key, once per door: the
    second is a replay, so the receipts must be identical messages."""
    rid = uid() if op == "create" else seeded(srv)
    key = uid("k")
    md = [("idempotency-key", key)]
    data = {"a": "same", "n": 7}
    if op == "create":
        rc = srv.call("CreateRecord", R.CreateRecordRequest(model="items", id=rid, data=h.struct(data),
                                                            return_record=True), metadata=md)
        r = srv.http("POST", f"/v1/models/items?id={rid}", json_body=data,
                     headers={"Idempotency-Key": key, "Prefer": "return=representation"})
    elif op == "update":
        rc = srv.call("UpdateRecord", R.UpdateRecordRequest(model="items", id=rid, data=h.struct(data)), metadata=md)
        r = srv.http("PATCH", f"/v1/models/items/{rid}", json_body=data, headers={"Idempotency-Key": key})
    elif op == "replace":
        rc = srv.call("ReplaceRecord", R.ReplaceRecordRequest(model="items", id=rid, data=h.struct(data)),
                      metadata=md)
        r = srv.http("PUT", f"/v1/models/items/{rid}", json_body=data, headers={"Idempotency-Key": key})
    else:
        rc = srv.call("DeleteRecord", R.DeleteRecordRequest(model="items", id=rid), metadata=md)
        r = srv.http("DELETE", f"/v1/models/items/{rid}", headers={"Idempotency-Key": key})
    assert r.headers.get("Idempotent-Replayed") == "true"
    assert parse(r, R.CommitReceipt) == rc


def test_same_read_through_both_doors_after_an_http_write(srv):
    rid = uid()
    r = srv.http("POST", f"/v1/models/students?id={rid}",
                 json_body={"firstName": "Zoë", "age": 20, "profile": {"nested": [1, 2.5, None, True, "s"]}})
    assert r.status_code == 201
    assert parse(srv.http("GET", f"/v1/models/students/{rid}"), R.Record) == srv.get("students", rid)


def test_error_problem_matches_the_grpc_status_details(srv):
    rid = seeded(srv)
    srv.update("items", rid, {"a": "v2"})
    d = expect_error(grpc.StatusCode.ABORTED, srv.update, "items", rid, {"a": "v3"}, expected_version=1,
                     reason="version_conflict")
    r = srv.http("PATCH", f"/v1/models/items/{rid}?expectedVersion=1", json_body={"a": "v3"})
    assert r.status_code == 409 and r.headers["Content-Type"] == "application/problem+json"
    p = r.json()
    assert p["code"] == d.reason and p["detail"] == d.message and p["field"] == d.field
    receipt = json_format.ParseDict(p["receipt"], R.CommitReceipt())
    # tx ids differ per call; everything else is the same message
    for rc in (receipt, d.receipt):
        rc.client_tx_id = rc.server_tx_id = ""
    assert receipt == d.receipt


def test_validation_problem_matches_bad_request(srv):
    d = expect_error(grpc.StatusCode.INVALID_ARGUMENT, srv.create, "students", {"age": 3}, reason="validation_failed")
    r = srv.http("POST", "/v1/models/students", json_body={"age": 3})
    p = r.json()
    assert r.status_code == 422 and p["code"] == d.reason and p["field"] == d.field
    assert [e["field"] for e in p["errors"]] == d.violation_fields


def test_json_output_is_valid_and_ascii(srv):
    rid = seeded(srv)
    r = srv.http("GET", f"/v1/models/items/{rid}")
    r.content.decode("ascii")
    assert json.loads(r.content)["data"]["a"] == "x\u00e9\u2028\"q\""
