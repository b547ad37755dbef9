"""Organisation ids that differ only in case would share SQLite tables
(table names are case-insensitive). A second organisation that differs from
an existing one only in case is refused with a clear error when its key is
created, and its schema push (say with a token minted offline) is refused
with validation_failed, never INTERNAL; the first organisation is untouched."""
import json

import grpc
import pytest

import harness as h

ALL = [{"can": ["read", "create", "update", "delete", "admin"], "model": "*", "group": "*"}]
ITEMS = [{"name": "items", "fields": [{"name": "a", "type": "STRING"}]}]


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    s = h.Server(tmp_path_factory.mktemp("orgcase") / "recordd")
    s.start()
    yield s
    problem = s.kill()
    if problem:
        pytest.fail(problem, pytrace=False)


def test_key_for_a_case_variant_of_an_existing_org_is_refused(srv):
    acme = srv.create_key(org="acme")
    srv.as_(acme["key"]).push_schema(ITEMS)
    res = srv.ctl("key", "create", "--org", "ACME", "--role", "admin", "--caps", json.dumps(ALL),
                  check=False)
    assert res.returncode != 0
    assert "case" in res.stderr and "acme" in res.stderr, res.stderr
    # the same id in the same case is of course fine
    srv.create_key(org="acme")


def test_schema_push_from_a_case_variant_is_validation_failed(srv):
    srv.create_key(org="globex")
    srv.as_(srv.create_key(org="globex")["key"]).push_schema(ITEMS)
    tok = srv.mint_offline(ALL, org="GloBex", sub="svc")["token"]
    err = h.expect_error(grpc.StatusCode.INVALID_ARGUMENT, srv.as_(tok).push_schema, ITEMS,
                         reason="validation_failed")
    assert "case" in err.message
    # globex keeps its schema and its data
    g = srv.as_(srv.create_key(org="globex")["key"])
    g.create("items", {"a": "x"}, id="one")
    assert g.get_data("items", "one") == {"a": "x"}
