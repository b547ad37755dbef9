"""REFERENCE fields on the write paths (issue 18; docs/API.md "References"):
integrity on create, update, replace and bulk writes (reference_not_found,
naming the field, the same answer whatever the caller may read), and what
a delete does to the records pointing at the deleted one: RESTRICT refuses
it (referenced), CASCADE deletes them too (recursively, cycles included),
SET_NULL clears the field; every record changed gets its own sync id and
change-feed row, the receipt counts them in ops and lists them in
affected; a cascade the caller may not perform is refused as a whole;
idempotent retries replay the same receipt; concurrent deletes and
referencing writes never leave a dangling reference."""

from __future__ import annotations

import random
import threading

import grpc
import pytest

import harness as h
from harness import expect_error, pb

INVALID = grpc.StatusCode.INVALID_ARGUMENT
DENIED = grpc.StatusCode.PERMISSION_DENIED
PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION


def ref(name, target, on_delete=None, **kw):
    f = {"name": name, "type": "REFERENCE", "references": target, **kw}
    if on_delete:
        f["onDelete"] = on_delete
    return f


NAME = {"name": "name", "type": "STRING"}

MODELS = [
    {"name": "countries", "fields": [NAME]},
    {"name": "cities", "fields": [NAME, ref("country", "countries", "CASCADE")]},
    {"name": "students", "fields": [NAME, ref("city", "cities", "CASCADE"), ref("mentor", "students", "SET_NULL")]},
    {"name": "courses", "fields": [NAME]},
    {"name": "enrollments", "fields": [NAME, ref("student", "students", "CASCADE"), ref("course", "courses")]},
    {"name": "notes", "fields": [NAME, ref("about", "cities", "SET_NULL")]},
    {"name": "nodes", "fields": [NAME, ref("parent", "nodes", "CASCADE")]},
]


@pytest.fixture
def srv(server):
    server.push_schema(MODELS)
    return server


def i64(v):
    return pb.wrappers.Int64Value(value=v)


def op_create(model, data, id="", group=""):
    return pb.records.BulkOperation(
        create=pb.records.CreateRecordRequest(model=model, id=id, group=group, data=h.struct(data)))


def op_update(model, id, data):
    return pb.records.BulkOperation(update=pb.records.UpdateRecordRequest(model=model, id=id, data=h.struct(data)))


def op_delete(model, id):
    return pb.records.BulkOperation(delete=pb.records.DeleteRecordRequest(model=model, id=id))


def op_update_where(model, flt, data):
    return pb.records.BulkOperation(update_where=pb.records.UpdateWhere(model=model, filter=flt, data=h.struct(data)))


def op_delete_where(model, flt):
    return pb.records.BulkOperation(delete_where=pb.records.DeleteWhere(model=model, filter=flt))


def bulk(srv, ops, mode=None, **kw):
    if mode is not None:
        kw["transaction_mode"] = mode
    return srv.call("BulkMutate", pb.records.BulkMutateRequest(operations=ops, **kw))


def exists(srv, model, rid):
    try:
        srv.get(model, rid)
        return True
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.NOT_FOUND, e
        return False


def list_all(srv, model):
    out, token = [], ""
    while True:
        r = srv.call("ListRecords", pb.records.ListRecordsRequest(model=model, page_size=1000, page_token=token))
        out += list(r.records)
        token = r.next_page_token
        if not token:
            return out


def head(srv):
    """The organisation's newest sync id (an empty list's read_at)."""
    return srv.call("ListRecords", pb.records.ListRecordsRequest(model="courses", page_size=1)).read_at


def problem(r, status, code, field=None):
    assert r.status_code == status, f"{r.status_code} {r.text}"
    p = r.json()
    assert p["code"] == code, p
    if field is not None:
        assert p.get("field") == field, p
    return p


def world(srv, tag=None):
    """countries(1) <- cities(2) <- students(3) <- enrollments(2); ids by role."""
    t = tag or h.uid("w")
    ids = {"country": f"{t}-fr", "cities": [f"{t}-paris", f"{t}-lyon"], "students": [f"{t}-s1", f"{t}-s2", f"{t}-s3"],
           "enrollments": [f"{t}-e1", f"{t}-e2"], "course": f"{t}-c"}
    srv.create("countries", {"name": "France"}, id=ids["country"])
    for c in ids["cities"]:
        srv.create("cities", {"name": c, "country": ids["country"]}, id=c)
    for i, s in enumerate(ids["students"]):
        srv.create("students", {"name": s, "city": ids["cities"][i % 2]}, id=s)
    srv.create("courses", {"name": "maths"}, id=ids["course"])
    for i, e in enumerate(ids["enrollments"]):
        srv.create("enrollments", {"name": e, "student": ids["students"][i], "course": ids["course"]}, id=e)
    return ids


# ---- integrity --------------------------------------------------------------------------------------------------


def test_reference_not_found_on_create_update_and_replace(srv):
    fr = h.uid("fr")
    srv.create("countries", {"name": "France"}, id=fr)
    d = expect_error(INVALID, srv.create, "cities", {"name": "X", "country": "nope"}, reason="reference_not_found",
                     field="country")
    assert "country: no countries record has id 'nope'" in d.message, d
    city = h.uid("c")
    assert srv.create("cities", {"name": "Paris", "country": fr}, id=city).success
    expect_error(INVALID, srv.update, "cities", city, {"country": "gone"}, reason="reference_not_found",
                 field="country")
    expect_error(INVALID, srv.replace, "cities", city, {"name": "P", "country": "gone"}, reason="reference_not_found",
                 field="country")
    assert srv.get_data("cities", city) == {"name": "Paris", "country": fr}
    assert srv.get("cities", city).version == 1
    # a null reference is no reference; an unchanged one is not looked up again
    assert srv.update("cities", city, {"country": None}).success
    assert srv.replace("cities", city, {"name": "Paris", "country": fr}).success
    assert srv.update("cities", city, {"name": "Paris!"}).success
    assert srv.get_data("cities", city) == {"name": "Paris!", "country": fr}


def test_reference_not_found_over_http(srv):
    fr = h.uid("fr")
    srv.create("countries", {"name": "France"}, id=fr)
    p = problem(srv.http("POST", "/v1/models/cities", json_body={"name": "X", "country": "nope"}), 422,
                "reference_not_found", "country")
    assert "no countries record has id 'nope'" in p["detail"], p
    city = h.uid("c")
    r = srv.http("POST", f"/v1/models/cities?id={city}", json_body={"name": "Lyon", "country": fr})
    assert r.status_code in (200, 201), r.text
    problem(srv.http("PATCH", f"/v1/models/cities/{city}", json_body={"country": "nope"}), 422, "reference_not_found",
            "country")
    problem(srv.http("PUT", f"/v1/models/cities/{city}", json_body={"name": "L", "country": "nope"}), 422,
            "reference_not_found", "country")
    assert srv.get_data("cities", city) == {"name": "Lyon", "country": fr}


def test_reference_not_found_in_bulk_by_id_and_update_where(srv):
    fr = h.uid("fr")
    city = h.uid("c")
    srv.create("countries", {"name": "France"}, id=fr)
    srv.create("cities", {"name": "Nice", "country": fr}, id=city)
    ghost = h.uid("ghost")
    d = expect_error(INVALID, bulk, srv, [op_create("countries", {"name": "Spain"}, id=ghost),
                                          op_create("cities", {"name": "X", "country": "nope"})],
                     reason="reference_not_found", field="operations[1].data.country")
    assert "no countries record has id 'nope'" in d.message
    assert not exists(srv, "countries", ghost)  # all or nothing
    expect_error(INVALID, bulk, srv, [op_update("cities", city, {"country": "nope"})], reason="reference_not_found",
                 field="operations[0].data.country")
    expect_error(INVALID, bulk, srv, [op_update_where("cities", 'name = "Nice"', {"country": "nope"})],
                 reason="reference_not_found", field="operations[0].data.country")
    assert srv.get_data("cities", city)["country"] == fr
    # best effort: the failing operation alone fails, naming its field
    r = bulk(srv, [op_update("cities", city, {"country": "nope"}), op_update("cities", city, {"name": "Nizza"})],
             pb.records.BEST_EFFORT)
    assert [x.applied for x in r.results] == [False, True]
    assert "no countries record has id 'nope'" in r.results[0].status.message
    assert srv.get_data("cities", city) == {"name": "Nizza", "country": fr}
    # and over HTTP (/v1/commits)
    p = problem(srv.http("POST", "/v1/commits", json_body={"operations": [
        {"update": {"model": "cities", "id": city, "data": {"country": "nope"}}}]}), 422, "reference_not_found")
    assert "no countries record has id 'nope'" in p["detail"], p


def test_integrity_ignores_what_the_caller_may_read(srv):
    """A target in a sync group the caller cannot read counts as existing (the
    check is about existence only; a missing one is refused the same way
    whoever asks)."""
    secret = h.uid("secret")
    srv.create("countries", {"name": "Hidden"}, id=secret, group="vault")
    key = srv.create_key(role="citywriter", caps=[
        {"can": ["read", "create", "update"], "model": "cities", "group": "*"},
        {"can": ["read"], "model": "countries", "group": "public"}])
    t = srv.as_(key["key"])
    expect_error(DENIED, t.get, "countries", secret)
    city = h.uid("c")
    assert t.create("cities", {"name": "C", "country": secret}, id=city).success
    for who in (t, srv):
        d = expect_error(INVALID, who.create, "cities", {"name": "D", "country": h.uid("missing")},
                         reason="reference_not_found", field="country")
        assert "no countries record has id" in d.message
        expect_error(INVALID, who.update, "cities", city, {"country": "missing"}, reason="reference_not_found",
                     field="country")


def test_bulk_all_or_nothing_creates_parent_and_children(srv):
    t = h.uid("b")
    r = bulk(srv, [op_create("countries", {"name": "Italy"}, id=f"{t}-it"),
                   op_create("cities", {"name": "Rome", "country": f"{t}-it"}, id=f"{t}-rome"),
                   op_create("cities", {"name": "Milan", "country": f"{t}-it"}, id=f"{t}-milan"),
                   op_create("students", {"name": "Gio", "city": f"{t}-rome"}, id=f"{t}-gio")],
             pb.records.ALL_OR_NOTHING)
    assert r.receipt.success and r.receipt.ops == 4
    assert srv.get_data("students", f"{t}-gio") == {"name": "Gio", "city": f"{t}-rome"}
    assert srv.get_data("cities", f"{t}-milan")["country"] == f"{t}-it"


def test_self_reference_on_create(srv):
    n = h.uid("n")
    assert srv.create("nodes", {"name": "loop", "parent": n}, id=n).success
    expect_error(INVALID, srv.create, "nodes", {"name": "x", "parent": n + "-other"}, id=n + "-x",
                 reason="reference_not_found", field="parent")
    r = srv.delete("nodes", n)
    assert r.success and r.ops == 1 and list(r.affected) == []
    assert not exists(srv, "nodes", n)


# ---- deletes ----------------------------------------------------------------------------------------------------


def test_restrict_refuses_the_delete(srv):
    w = world(srv)
    third = h.uid("e3")
    srv.create("enrollments", {"name": "x", "student": w["students"][2], "course": w["course"]}, id=third)
    d = expect_error(PRECONDITION, srv.delete, "courses", w["course"], reason="referenced")
    assert f"record '{w['course']}' of courses is referenced by 3 records (e.g. enrollments '" in d.message, d
    assert "through course); delete or change them first" in d.message, d
    assert d.receipt is not None and not d.receipt.success and d.receipt.error.code == "referenced"
    assert exists(srv, "courses", w["course"])
    p = problem(srv.http("DELETE", f"/v1/models/courses/{w['course']}"), 409, "referenced")
    assert "referenced by 3 records" in p["detail"], p
    # in a bulk, also after a cascade: deleting the country would delete
    # students whose enrollments are deleted too, so the course is not in
    # the way; deleting the course first is
    expect_error(PRECONDITION, bulk, srv, [op_delete("courses", w["course"])], reason="referenced")
    assert all(exists(srv, "enrollments", e) for e in w["enrollments"] + [third])
    # once the referrers are gone the delete goes through
    for e in w["enrollments"] + [third]:
        srv.delete("enrollments", e)
    assert srv.delete("courses", w["course"]).success


def test_restrict_names_no_referrer_the_caller_may_not_read(srv):
    """The refusal's example is a record the caller may read; a caller who
    may read none of the referrers learns their number, never an id."""
    w = world(srv)
    key = srv.create_key(role="coursedeleter", caps=[
        {"can": ["read", "delete"], "model": "courses", "group": "*"}])
    d = expect_error(PRECONDITION, srv.as_(key["key"]).delete, "courses", w["course"], reason="referenced")
    assert "referenced by 2 records (none of them one you may read) through enrollments.course" in d.message, d
    assert not any(e in d.message for e in w["enrollments"]), d
    # with read on the referrers, one of them is named
    key = srv.create_key(role="coursereader", caps=[
        {"can": ["read", "delete"], "model": "courses", "group": "*"},
        {"can": ["read"], "model": "enrollments", "group": "*"}])
    d = expect_error(PRECONDITION, srv.as_(key["key"]).delete, "courses", w["course"], reason="referenced")
    assert any(f"(e.g. enrollments '{e}' through course)" in d.message for e in w["enrollments"]), d
    assert exists(srv, "courses", w["course"])


def test_restrict_deep_in_a_cascade_refuses_all_of_it(srv):
    """A cascade reaching a record that something RESTRICTs refuses the whole
    delete: nothing is written."""
    srv.push_schema(MODELS + [{"name": "badges", "fields": [NAME, ref("holder", "students")]}])
    w = world(srv)
    badge = h.uid("badge")
    srv.create("badges", {"name": "gold", "holder": w["students"][0]}, id=badge)
    before = head(srv)
    d = expect_error(PRECONDITION, srv.delete, "countries", w["country"], reason="referenced")
    assert f"record '{w['students'][0]}' of students is referenced by 1 record (e.g. badges '{badge}' through holder)" \
        in d.message, d
    assert head(srv) == before
    assert exists(srv, "countries", w["country"])
    assert all(exists(srv, "students", s) for s in w["students"])


def test_cascade_depth_three_feed_and_receipt(srv):
    w = world(srv)
    start = head(srv)
    watch = h.Watch(srv, since=start)
    try:
        r = srv.delete("countries", w["country"])
        assert r.success
        assert r.ops == 1 + 2 + 3 + 2
        assert r.last_sync_id == start + r.ops
        got = [(a.model, a.id, a.op) for a in r.affected]
        assert got[:2] == [("cities", c, "DELETE") for c in w["cities"]]
        assert sorted(got[2:5]) == sorted(("students", s, "DELETE") for s in w["students"])
        assert sorted(got[5:]) == sorted(("enrollments", e, "DELETE") for e in w["enrollments"])
        assert [a.sync_id for a in r.affected] == list(range(start + 2, r.last_sync_id + 1))
        evs = watch.wait_for(r.ops)
    finally:
        watch.cancel()
    evs = evs[:r.ops]
    assert [e.sync_id for e in evs] == list(range(start + 1, start + r.ops + 1))
    assert {e.server_tx_id for e in evs} == {r.server_tx_id}
    assert all(e.op == pb.records.DELETE for e in evs)
    assert (evs[0].model, evs[0].id) == ("countries", w["country"])
    assert [(e.model, e.id) for e in evs[1:]] == [(a.model, a.id) for a in r.affected]
    for model, ids in (("cities", w["cities"]), ("students", w["students"]), ("enrollments", w["enrollments"])):
        assert not any(exists(srv, model, i) for i in ids)
    assert exists(srv, "courses", w["course"])


def test_set_null_clears_the_field_with_an_update(srv):
    fr, city, mentor, pupil, note = (h.uid(p) for p in ("fr", "c", "m", "p", "n"))
    srv.create("countries", {"name": "F"}, id=fr)
    srv.create("cities", {"name": "C", "country": fr}, id=city)
    srv.create("students", {"name": "M", "city": city}, id=mentor)
    srv.create("students", {"name": "P", "city": city, "mentor": mentor}, id=pupil)
    srv.create("notes", {"name": "N", "about": city}, id=note)
    start = head(srv)
    watch = h.Watch(srv, since=start)
    try:
        r = srv.delete("students", mentor)
        evs = watch.wait_for(2)
    finally:
        watch.cancel()
    assert r.success and r.ops == 2 and r.last_sync_id == start + 2
    assert [(a.model, a.id, a.op, a.sync_id) for a in r.affected] == [("students", pupil, "UPDATE", start + 2)]
    rec = srv.get("students", pupil)
    assert h.to_dict(rec.data) == {"name": "P", "city": city}
    assert rec.version == 2 and rec.sync_id == start + 2
    upd = evs[1]
    assert (upd.model, upd.id, upd.op, list(upd.fields)) == ("students", pupil, pb.records.UPDATE, ["mentor"])
    assert h.to_dict(upd.data) == {"mentor": None}
    assert upd.server_tx_id == r.server_tx_id
    # over HTTP: a city whose note points at it through SET_NULL, and the
    # pupil through CASCADE
    resp = srv.http("DELETE", f"/v1/models/cities/{city}")
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert int(body["ops"]) == 3
    aff = [(a["model"], a["id"], a["op"]) for a in body["affected"]]
    assert aff == [("students", pupil, "DELETE"), ("notes", note, "UPDATE")]
    assert srv.get_data("notes", note) == {"name": "N"}
    assert not exists(srv, "students", pupil)


def test_cycles_and_trees_terminate(srv):
    t = h.uid("t")
    # a cycle a -> b -> a
    srv.create("nodes", {"name": "a"}, id=f"{t}-a")
    srv.create("nodes", {"name": "b", "parent": f"{t}-a"}, id=f"{t}-b")
    srv.update("nodes", f"{t}-a", {"parent": f"{t}-b"})
    r = srv.delete("nodes", f"{t}-a")
    assert r.success and r.ops == 2
    assert [(a.id, a.op) for a in r.affected] == [(f"{t}-b", "DELETE")]
    # a tree of depth 4 with a self-referencing leaf
    ids = [f"{t}-root"]
    srv.create("nodes", {"name": "root"}, id=ids[0])
    for depth in range(1, 4):
        for i in range(2):
            parent = ids[-(1 + i)] if depth > 1 else ids[0]
            rid = f"{t}-{depth}-{i}"
            srv.create("nodes", {"name": rid, "parent": parent}, id=rid)
            ids.append(rid)
    srv.create("nodes", {"name": "self", "parent": ids[-1]}, id=f"{t}-leaf")
    srv.update("nodes", f"{t}-leaf", {"parent": f"{t}-leaf"})  # now only itself
    srv.update("nodes", ids[0], {"parent": ids[-1]})  # and the root hangs under a leaf: a cycle
    # ids[4]'s children ids[5] and ids[6]; under ids[6] the root, under it
    # ids[1] and ids[2], under ids[2] ids[3] and ids[4] again: all of them
    r = srv.delete("nodes", ids[4])
    assert r.success
    gone = [ids[4]] + [a.id for a in r.affected]
    assert sorted(gone) == sorted(ids) and r.ops == len(ids) == 7
    assert all(a.op == "DELETE" for a in r.affected)
    assert [x.id for x in list_all(srv, "nodes")] == [f"{t}-leaf"]
    assert srv.get_data("nodes", f"{t}-leaf")["parent"] == f"{t}-leaf"


def test_cascade_refused_without_the_capability(srv):
    w = world(srv)
    key = srv.create_key(role="deleter", caps=[
        {"can": ["read", "delete"], "model": "countries", "group": "*"},
        {"can": ["read"], "model": "*", "group": "*"}])
    t = srv.as_(key["key"])
    before = head(srv)
    d = expect_error(DENIED, t.delete, "countries", w["country"], reason="permission_denied")
    md = dict(d.error_info.metadata)
    assert (md.get("can"), md.get("model"), md.get("sync_group")) == ("delete", "cities", "default"), d
    rc = d.receipt.error.required_capability
    assert (rc.can, rc.model, rc.sync_group) == ("delete", "cities", "default")
    assert "onDelete CASCADE" in d.message
    assert head(srv) == before and exists(srv, "countries", w["country"])
    # the same in a bulk, by id and by filter
    d = expect_error(DENIED, bulk, t, [op_delete("countries", w["country"])], reason="permission_denied")
    assert (d.receipt.error.required_capability.can, d.receipt.error.required_capability.model) == ("delete", "cities")
    d = expect_error(DENIED, bulk, t, [op_delete_where("countries", 'name = "France"')], reason="permission_denied")
    assert d.receipt.error.required_capability.model == "cities"
    assert head(srv) == before
    # SET_NULL needs update of the cleared field
    mentor, pupil = h.uid("m"), h.uid("p")
    srv.create("students", {"name": "M"}, id=mentor)
    srv.create("students", {"name": "P", "mentor": mentor}, id=pupil)
    k2 = srv.create_key(role="sd", caps=[{"can": ["read", "delete"], "model": "students", "group": "*"}])
    d = expect_error(DENIED, srv.as_(k2["key"]).delete, "students", mentor, reason="permission_denied")
    rc = d.receipt.error.required_capability
    assert (rc.can, rc.model, rc.sync_group) == ("update", "students", "default")
    assert srv.get_data("students", pupil)["mentor"] == mentor
    # with every capability the cascade needs, it goes through
    k3 = srv.create_key(role="all", caps=[{"can": ["read", "delete"], "model": "*", "group": "*"}])
    r = srv.as_(k3["key"]).delete("countries", w["country"])
    assert r.success and r.ops == 8


def test_bulk_deletes_cascade_and_count(srv):
    a, b = world(srv), world(srv)
    start = head(srv)
    r = bulk(srv, [op_delete("countries", a["country"]), op_delete_where("countries", f'id = "{b["country"]}"')])
    assert r.receipt.success
    assert [x.affected for x in r.results] == [8, 8]
    assert r.receipt.ops == 16 and r.receipt.last_sync_id == start + 16
    assert len(r.receipt.affected) == 14
    assert [x.sync_id for x in r.receipt.affected[:7]] == list(range(start + 2, start + 9))
    assert [x.sync_id for x in r.receipt.affected[7:]] == list(range(start + 10, start + 17))
    for w in (a, b):
        assert not any(exists(srv, "students", s) for s in w["students"])
    # a dry run counts and writes nothing
    c = world(srv)
    before = head(srv)
    r = bulk(srv, [op_delete("countries", c["country"])], dry_run=True)
    assert r.results[0].affected == 8 and list(r.receipt.affected) == []
    assert head(srv) == before and exists(srv, "students", c["students"][0])


def test_affected_list_is_cut_at_100(srv):
    fr = h.uid("fr")
    srv.create("countries", {"name": "F"}, id=fr)
    ops = [op_create("cities", {"name": f"c{i}", "country": fr}, id=f"{fr}-{i:03d}") for i in range(120)]
    bulk(srv, ops[:60])
    bulk(srv, ops[60:])
    r = srv.delete("countries", fr)
    assert r.ops == 121 and len(r.affected) == 100
    assert [a.id for a in r.affected] == [f"{fr}-{i:03d}" for i in range(100)]
    assert r.affected[-1].sync_id == r.last_sync_id - 20
    assert list_all(srv, "cities") == []


def test_idempotent_cascade_replays_the_same_receipt(srv):
    w = world(srv)
    key = h.uid("k")
    req = pb.records.DeleteRecordRequest(model="countries", id=w["country"], idempotency_key=key)
    fn = srv.channel.unary_unary("/recordd.v1.Records/DeleteRecord", request_serializer=lambda m: m.SerializeToString(),
                                 response_deserializer=lambda b: b)
    first = fn(req, timeout=h.CALL_TIMEOUT)
    again = fn(req, timeout=h.CALL_TIMEOUT)
    assert first == again
    r = pb.records.CommitReceipt.FromString(first)
    assert r.ops == 8 and len(r.affected) == 7
    # the replay wrote nothing more
    assert head(srv) == r.last_sync_id


# ---- concurrency ------------------------------------------------------------------------------------------------


def test_concurrent_deletes_and_references_leave_nothing_dangling(srv):
    """8 threads race deletes of targets (CASCADE and SET_NULL referrers)
    against creates and updates referencing them; afterwards every
    reference names an existing record."""
    srv.push_schema(MODELS + [
        {"name": "pc_parents", "fields": [NAME]},
        {"name": "pc_kids", "fields": [NAME, ref("parent", "pc_parents", "CASCADE")]},
        {"name": "pc_tags", "fields": [NAME, ref("parent", "pc_parents", "SET_NULL")]},
        {"name": "pc_pins", "fields": [NAME, ref("parent", "pc_parents")]},  # RESTRICT
    ])
    t = h.uid("pc")
    parents = [f"{t}-p{i}" for i in range(6)]
    for p in parents:
        srv.create("pc_parents", {"name": p}, id=p)
    expected = {"reference_not_found", "not_found", "duplicate_record", "referenced"}
    outcomes = {"ok": 0}
    errors = []
    lock = threading.Lock()

    def worker(n):
        rnd = random.Random(n)
        for i in range(40):
            p = rnd.choice(parents)
            kind = rnd.random()
            try:
                if kind < 0.2:
                    srv.delete("pc_parents", p)
                elif kind < 0.35:
                    srv.create("pc_parents", {"name": p}, id=p)
                elif kind < 0.6:
                    srv.create("pc_kids", {"name": "k", "parent": p}, id=f"{t}-k{n}-{i}")
                elif kind < 0.75:
                    srv.create("pc_tags", {"name": "t", "parent": p}, id=f"{t}-t{n}-{i}")
                elif kind < 0.8:
                    srv.create("pc_pins", {"name": "x", "parent": p}, id=f"{t}-x{n}-{i}")
                elif kind < 0.9:
                    srv.update("pc_kids", f"{t}-k{n}-{rnd.randrange(max(i, 1))}", {"parent": p})
                else:
                    bulk(srv, [op_update_where("pc_tags", f'name = "t"', {"parent": p})])
                with lock:
                    outcomes["ok"] += 1
            except grpc.RpcError as e:
                reason = h.error_details(e).reason
                with lock:
                    outcomes[reason] = outcomes.get(reason, 0) + 1
                    if reason not in expected:
                        errors.append(str(h.error_details(e)))

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []
    assert outcomes["ok"] > 0 and outcomes.get("reference_not_found", 0) > 0, outcomes
    live = {r.id for r in list_all(srv, "pc_parents")}
    checked = 0
    for model in ("pc_kids", "pc_tags", "pc_pins"):
        for r in list_all(srv, model):
            p = h.to_dict(r.data).get("parent")
            assert p is None or p in live, (model, r.id, p, sorted(live))
            checked += p is not None
    assert checked > 0
    # the tables agree (no row behind the API's back)
    rows = srv.sql("SELECT count(*) FROM _rd_sync_log WHERE op = 'DELETE'")
    assert rows[0][0] > 0
    srv.assert_healthy()


# ---- the index a delete finds referrers by ----------------------------------------------------------------------


def ref_indexes(srv):
    if h.BACKEND == "sqlite":
        rows = srv.sql("SELECT name FROM sqlite_master WHERE type = 'index' AND name LIKE '%:r:%'")
    else:
        rows = srv.sql("SELECT indexname AS name FROM pg_indexes WHERE indexname LIKE '%:r:%'")
    return sorted(r[0].split(":r:")[0].split("__")[-1] + "." + r[0].split(":r:")[1] for r in rows)


def test_reference_fields_are_indexed_through_schema_changes(srv):
    assert ref_indexes(srv) == ["cities.country", "enrollments.course", "enrollments.student", "nodes.parent",
                                "notes.about", "students.city", "students.mentor"]
    fr = h.uid("fr")
    srv.create("countries", {"name": "F"}, id=fr)
    srv.create("cities", {"name": "C", "country": fr}, id=h.uid("c"))
    # a field added, one retargeted (forced: values cleared), one dropped (forced)
    models = [dict(m) for m in MODELS]
    models[1] = {"name": "cities", "fields": [NAME, ref("country", "courses", "CASCADE"), ref("twin", "cities")]}
    models[5] = {"name": "notes", "fields": [NAME]}
    srv.push_schema(models, force=True)
    assert ref_indexes(srv) == ["cities.country", "cities.twin", "enrollments.course", "enrollments.student",
                                "nodes.parent", "students.city", "students.mentor"]
    # a reference retyped to a string loses its index; the model's deletes still work
    models[1] = {"name": "cities", "fields": [NAME, {"name": "country", "type": "STRING"}, ref("twin", "cities")]}
    srv.push_schema(models, force=True)
    assert "cities.country" not in ref_indexes(srv)
    assert srv.delete("countries", fr).success


def test_delete_where_selecting_records_its_cascade_deletes(srv):
    """A by-filter delete whose selection includes records that an earlier
    record of the same selection cascades to: each is deleted once."""
    t = h.uid("dw")
    srv.create("nodes", {"name": t}, id=f"{t}-a")
    srv.create("nodes", {"name": t, "parent": f"{t}-a"}, id=f"{t}-b")
    srv.create("nodes", {"name": t, "parent": f"{t}-b"}, id=f"{t}-c")
    srv.create("nodes", {"name": "other", "parent": f"{t}-c"}, id=f"{t}-d")
    start = head(srv)
    r = bulk(srv, [op_delete_where("nodes", f'name = "{t}"')])
    assert r.receipt.success and r.results[0].affected == 4
    assert r.receipt.ops == 4 and r.receipt.last_sync_id == start + 4
    assert [(a.id, a.sync_id) for a in r.receipt.affected] == [(f"{t}-b", start + 2), (f"{t}-c", start + 3),
                                                               (f"{t}-d", start + 4)]
    assert not any(exists(srv, "nodes", f"{t}-{x}") for x in "abcd")
