"""Durability across a clean restart (DESIGN.md §4 Durability, §9 SIGTERM)."""

import grpc

import harness as h
from harness import SCHOOL, expect_error


def test_records_survive_a_clean_restart_unchanged(server):
    server.push_schema(SCHOOL)
    ids = [f"s{i}" for i in range(6)]
    last = 0
    for i, rid in enumerate(ids):
        last = server.create(
            "students",
            {"firstName": f"N{i}", "email": f"{rid}@example.com", "age": 20 + i, "profile": {"i": i, "tags": ["a"]}},
            id=rid,
            group="g" if i % 2 else "",
        ).last_sync_id
    last = server.update("students", "s1", {"age": 99, "profile": {"tags": None}}).last_sync_id
    last = server.update("students", "s1", {"status": "active"}).last_sync_id
    last = server.replace("students", "s2", {"firstName": "Replaced"}).last_sync_id
    last = server.create("enrollments", {"studentId": "s0", "course": "math", "grade": 7.5}, id="e1").last_sync_id
    last = server.delete("students", "s5").last_sync_id

    before = {rid: server.get("students", rid) for rid in ids[:5]}
    before["e1"] = server.get("enrollments", "e1")
    schema_before = server.get_schema()
    assert before["s1"].version == 3 and before["s2"].version == 2

    server.restart()

    assert server.get_schema() == schema_before
    for rid, rec in before.items():
        got = server.get(rec.model, rid)
        assert got.read_at == rec.read_at == last
        assert got == rec, f"{rid} changed across the restart:\n{h.short(rec)}\n{h.short(got)}"
    expect_error(grpc.StatusCode.NOT_FOUND, server.get, "students", "s5", reason="not_found")


def test_sync_ids_keep_increasing_after_a_restart(server):
    server.push_schema(SCHOOL)
    server.create("students", {"firstName": "A"}, id="a")
    last = server.update("students", "a", {"age": 1}).last_sync_id
    server.restart()
    rc = server.create("students", {"firstName": "B"}, id="b")
    assert rc.last_sync_id > last
    assert server.update("students", "a", {"age": 2}).last_sync_id > rc.last_sync_id
    assert server.get("students", "a").version == 3


def test_constraints_survive_a_restart(server):
    server.push_schema(SCHOOL)
    server.create("students", {"firstName": "A", "email": "a@example.com"}, id="a")
    server.restart()
    expect_error(grpc.StatusCode.ALREADY_EXISTS, server.create, "students", {"firstName": "B", "email": "a@example.com"},
                 reason="duplicate_record", field="email")
    expect_error(grpc.StatusCode.ALREADY_EXISTS, server.create, "students", {"firstName": "C"}, id="a",
                 reason="duplicate_record")
    expect_error(grpc.StatusCode.INVALID_ARGUMENT, server.create, "students", {"firstName": "D", "age": 151},
                 field="age")


def test_sigterm_on_an_idle_server_exits_zero(server):
    server.stop()  # asserts exit status 0
    assert not server.alive()


def test_server_restarts_twice_on_the_same_database(server):
    server.push_schema(SCHOOL)
    server.create("students", {"firstName": "A"}, id="a")
    server.restart()
    server.update("students", "a", {"age": 5})
    server.restart()
    r = server.get("students", "a")
    assert r.version == 2
    assert h.to_dict(r.data) == {"firstName": "A", "age": 5, "isActive": True}
