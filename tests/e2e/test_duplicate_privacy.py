"""duplicate_record must not tell a creator limited to some sync groups
which id or unique value exists in a group it cannot read: such a caller
gets a generic conflict (no field, no value, no id); a caller that may read
the whole model still gets the colliding field."""
import grpc
import pytest

import harness as h
from harness import pb, uid

USERS = {"name": "users", "fields": [{"name": "email", "type": "STRING", "unique": True},
                                      {"name": "name", "type": "STRING"}]}
G1_ONLY = [{"can": ["create", "read"], "model": "users", "group": "g1"}]
EVERYWHERE = [{"can": ["create", "read"], "model": "users", "group": "*"}]


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    s = h.Server(tmp_path_factory.mktemp("dup") / "recordd").start()
    s.push_schema([USERS])
    s.create("users", {"email": "hidden@example.com", "name": "H"}, id="hidden-id", group="g2")
    yield s
    problem = s.kill()
    if problem:
        pytest.fail(problem, pytrace=False)


def refusal(srv, caps, **create):
    key = srv.create_key(caps=caps)["key"]
    err = h.expect_error(grpc.StatusCode.ALREADY_EXISTS, srv.as_(key).create, "users", reason="duplicate_record",
                         **create)
    return err


@pytest.mark.parametrize("create", [
    {"data": {"email": "new@example.com"}, "id": "hidden-id", "group": "g1"},
    {"data": {"email": "hidden@example.com"}, "id": "", "group": "g1"},
])
def test_group_limited_creator_gets_a_generic_conflict(srv, create):
    err = refusal(srv, G1_ONLY, **create)
    assert err.field in (None, ""), err
    text = str(err)
    for leak in ("hidden", "email", "unique constraint", "id already"):
        assert leak not in text, f"{leak!r} in {text}"
    assert err.receipt is not None and err.receipt.error.field == ""


def test_whole_model_reader_gets_the_field(srv):
    err = refusal(srv, EVERYWHERE, data={"email": "hidden@example.com"}, id="", group="g1")
    assert "email" in (err.field or ""), err
    err = refusal(srv, EVERYWHERE, data={"email": "n2@example.com"}, id="hidden-id", group="g1")
    assert err.field == "id", err


def test_http_group_limited_creator_gets_a_generic_conflict(srv):
    key = srv.create_key(caps=G1_ONLY)["key"]
    r = srv.http("POST", "/v1/models/users?id=hidden-id&group=g1", json_body={"email": "z@example.com"}, auth=key)
    assert r.status_code == 409, r.text
    assert r.json()["code"] == "duplicate_record" and "field" not in r.json(), r.text
