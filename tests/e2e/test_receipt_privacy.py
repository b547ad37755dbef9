"""A receipt carries record data only for what its caller may read: the
written record (returnRecord / Prefer: return=representation) and the
current values of a stale write's notification. No read capability on the
record's model and group: no record, no current values; read limited to
some fields: only those. data_withheld says something was left out."""
import json

import grpc
import pytest

import harness as h
from harness import pb, uid

R = pb.records
ITEMS = {"name": "items", "fields": [{"name": "a", "type": "STRING"}, {"name": "n", "type": "INTEGER"},
                                      {"name": "secret", "type": "STRING"}]}
UPDATE_ONLY = [{"can": ["update"], "model": "items", "group": "*"}]
READ_A = UPDATE_ONLY + [{"can": ["read"], "model": "items", "group": "*", "fields": ["a", "n"]}]
READ_ALL = UPDATE_ONLY + [{"can": ["read"], "model": "items", "group": "*"}]


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    s = h.Server(tmp_path_factory.mktemp("rcptpriv") / "recordd").start()
    s.push_schema([ITEMS])
    s.keys = {name: s.create_key(caps=c)["key"] for name, c in
              [("update_only", UPDATE_ONLY), ("read_a", READ_A), ("read_all", READ_ALL)]}
    yield s
    problem = s.kill()
    if problem:
        pytest.fail(problem, pytrace=False)


def new_item(srv):
    rid = uid()
    srv.create("items", {"a": "a0", "n": 0, "secret": "s3cr3t"}, id=rid)
    return rid


def test_update_without_read_returns_no_record(srv):
    rid = new_item(srv)
    r = srv.as_(srv.keys["update_only"]).update("items", rid, {"n": 1}, return_record=True)
    assert r.success and r.data_withheld
    assert not r.HasField("record")
    assert "s3cr3t" not in str(r)


def test_field_limited_reader_gets_only_its_fields(srv):
    rid = new_item(srv)
    r = srv.as_(srv.keys["read_a"]).update("items", rid, {"n": 2}, return_record=True)
    assert r.success and r.data_withheld
    assert h.to_dict(r.record.data) == {"a": "a0", "n": 2}


def test_full_reader_gets_everything(srv):
    rid = new_item(srv)
    r = srv.as_(srv.keys["read_all"]).update("items", rid, {"n": 3}, return_record=True)
    assert r.success and not r.data_withheld
    assert h.to_dict(r.record.data) == {"a": "a0", "n": 3, "secret": "s3cr3t"}


def test_http_representation_without_read_has_no_record(srv):
    rid = new_item(srv)
    r = srv.http("PATCH", f"/v1/models/items/{rid}", json_body={"n": 4},
                 headers={"Prefer": "return=representation"}, auth=srv.keys["update_only"])
    assert r.status_code == 200, r.text
    body = r.json()
    assert "record" not in body and body["dataWithheld"] is True
    assert "s3cr3t" not in r.text


@pytest.mark.parametrize("who,expect", [("update_only", {}), ("read_a", {"n": 10}),
                                        ("read_all", {"n": 10, "secret": "n3w-s3cr3t"})])
def test_notify_receipt_current_values_follow_read_rights(srv, who, expect):
    rid = new_item(srv)
    read_at = srv.get("items", rid).read_at
    srv.update("items", rid, {"n": 10, "secret": "n3w-s3cr3t"})
    r = srv.as_(srv.keys[who]).update("items", rid, {"n": 11, "secret": "mine"}, read_at=pb.wrappers.Int64Value(value=read_at),
                                      on_stale=R.NOTIFY)
    assert r.status == R.HELD
    note = r.notifications[0]
    assert sorted(note.conflicting_fields) == ["n", "secret"]
    assert h.to_dict(note.current_values) == expect
    assert r.data_withheld == (who != "read_all")
    assert ("n3w-s3cr3t" in str(r)) == (who == "read_all")
