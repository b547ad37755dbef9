"""PushSchema's lists are capped and checked in linear time: a huge enum is
refused quickly with validation_failed (not minutes of the writer's time),
duplicates anywhere are validation_failed naming where, and a repeated
uniqueTogether entry is validation_failed, never INTERNAL."""
import time

import grpc
import pytest

import harness as h

INVALID = grpc.StatusCode.INVALID_ARGUMENT


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    s = h.Server(tmp_path_factory.mktemp("schemalim") / "recordd").start()
    yield s
    problem = s.kill()
    if problem:
        pytest.fail(problem, pytrace=False)


def enum_model(values):
    return {"name": "m", "fields": [{"name": "e", "type": "ENUM", "enumValues": values}]}


def test_enum_values_are_capped(srv):
    err = h.expect_error(INVALID, srv.push_schema, [enum_model([f"v{i}" for i in range(60000)])],
                         reason="validation_failed")
    assert "at most 1000" in err.message
    assert srv.get_schema().revision == 0
    srv.push_schema([enum_model([f"v{i}" for i in range(1000)])])


def test_duplicate_enum_value_is_named(srv):
    values = [f"w{i}" for i in range(999)] + ["w500"]
    err = h.expect_error(INVALID, srv.push_schema, [enum_model(values)], reason="validation_failed")
    assert "w500" in err.message


def test_repeated_unique_together_is_validation_failed_not_internal(srv):
    model = {"name": "pairs", "fields": [{"name": "a", "type": "STRING"}, {"name": "b", "type": "STRING"}],
             "uniqueTogether": [{"fields": ["a", "b"]}, {"fields": ["a", "b"]}]}
    err = h.expect_error(INVALID, srv.push_schema, [model], True, reason="validation_failed")
    assert "uniqueTogether" in (err.field or "") + err.message
    model["uniqueTogether"] = [{"fields": ["b", "a"]}, {"fields": ["a", "b"]}]
    h.expect_error(INVALID, srv.push_schema, [model], True, reason="validation_failed")
    model["uniqueTogether"] = [{"fields": ["a", "b"]}] * 65
    h.expect_error(INVALID, srv.push_schema, [model], True, reason="validation_failed")


def test_writable_by_is_capped(srv):
    model = {"name": "roles", "fields": [{"name": "a", "type": "STRING",
                                          "writableBy": [f"r{i}" for i in range(65)]}]}
    err = h.expect_error(INVALID, srv.push_schema, [model], True, reason="validation_failed")
    assert "at most 64" in err.message
