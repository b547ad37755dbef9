"""BulkMutate (DESIGN.md §3, §4 "Bulk"; issue 5 item 3) over real gRPC:
ALL_OR_NOTHING and BEST_EFFORT with a mix of good and bad operations (unique
violation, unknown field, missing id, version conflict, a group the token
may not write) and their exact per-index results; update_where /
delete_where with filters, the empty-filter refusal, a filter carrying SQL
injection, maxAffected; dry runs; the operation limit (default and
configured); several models in one call; idempotent replays; the change
feed; stale NOTIFY operations held; per-operation keys refused."""

import threading

import grpc
import pytest

import harness as h
from harness import expect_error, pb, uid

INVALID = grpc.StatusCode.INVALID_ARGUMENT
DENIED = grpc.StatusCode.PERMISSION_DENIED
EXISTS = grpc.StatusCode.ALREADY_EXISTS
ABORTED = grpc.StatusCode.ABORTED

PATH = "/recordd.v1.Records/BulkMutate"
TYPE_BULK = "type.googleapis.com/recordd.v1.BulkMutateResponse"


# ---- builders -------------------------------------------------------------------


def i64(v):
    return pb.wrappers.Int64Value(value=v)


def op_create(model, data, id="", group=""):
    return pb.records.BulkOperation(
        create=pb.records.CreateRecordRequest(model=model, id=id, group=group, data=h.struct(data)))


def op_update(model, id, data, expected_version=None, **kw):
    if expected_version is not None:
        kw["expected_version"] = i64(expected_version)
    return pb.records.BulkOperation(
        update=pb.records.UpdateRecordRequest(model=model, id=id, data=h.struct(data), **kw))


def op_replace(model, id, data, **kw):
    return pb.records.BulkOperation(
        replace=pb.records.ReplaceRecordRequest(model=model, id=id, data=h.struct(data), **kw))


def op_delete(model, id, expected_version=None, **kw):
    if expected_version is not None:
        kw["expected_version"] = i64(expected_version)
    return pb.records.BulkOperation(delete=pb.records.DeleteRecordRequest(model=model, id=id, **kw))


def op_update_where(model, filter, data, max_affected=None):
    w = pb.records.UpdateWhere(model=model, filter=filter, data=h.struct(data))
    if max_affected is not None:
        w.max_affected.value = max_affected
    return pb.records.BulkOperation(update_where=w)


def op_delete_where(model, filter, max_affected=None):
    w = pb.records.DeleteWhere(model=model, filter=filter)
    if max_affected is not None:
        w.max_affected.value = max_affected
    return pb.records.BulkOperation(delete_where=w)


def request(ops, mode=None, **kw):
    if mode is not None:
        kw["transaction_mode"] = mode
    return pb.records.BulkMutateRequest(operations=ops, **kw)


def bulk(srv, ops, mode=None, **kw):
    return srv.call("BulkMutate", request(ops, mode, **kw))


def bulk_raw(srv, req, metadata=None):
    """The reply bytes as the server sent them."""
    fn = srv.channel.unary_unary(PATH, request_serializer=lambda m: m.SerializeToString(),
                                 response_deserializer=lambda b: b)
    return fn(req, timeout=h.CALL_TIMEOUT, metadata=metadata)


def bulk_response(d):
    """The BulkMutateResponse inside an error's details."""
    for any_msg in d.other:
        if any_msg.type_url == TYPE_BULK:
            return pb.records.BulkMutateResponse.FromString(any_msg.value)
    raise AssertionError(f"no BulkMutateResponse in the details of {d}")


def result_reason(res):
    """ErrorInfo reason and metadata of a failed result."""
    for any_msg in res.status.details:
        if any_msg.type_url == h.TYPE_ERROR_INFO:
            info = pb.error_details.ErrorInfo.FromString(any_msg.value)
            return info.reason, dict(info.metadata)
    return None, {}


def list_call(srv, model, auth=None, **kw):
    fn = srv.raw_channel.unary_unary(
        "/recordd.v1.Records/ListRecords",
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=pb.records.ListRecordsResponse.FromString,
    )
    req = pb.records.ListRecordsRequest(model=model, page_size=1000, **kw)
    return fn(req, timeout=h.CALL_TIMEOUT, metadata=h.bearer(auth or srv.admin_key))


def head_sync_id(srv):
    """The highest committed sync id (any read reports it)."""
    return list_call(srv, "students", filter='id = "none"').read_at


def student(srv, tag, **extra):
    rid = uid(tag)
    data = {"firstName": tag, "email": f"{rid}@example.com", "age": 20}
    data.update(extra)
    srv.create("students", data, id=rid)
    return rid, data


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    s = h.Server(tmp_path_factory.mktemp("bulk") / "recordd")
    s.start()
    s.push_schema(h.SCHOOL)
    yield s
    problem = s.kill()
    if problem:
        pytest.fail(problem, pytrace=False)


# ---- the mix of good and bad operations -----------------------------------------


def mixed(srv):
    """Six operations: two good ones, a unique violation, an unknown field,
    an update of a missing id (not a failure) and a version conflict."""
    a, a_data = student(srv, "mix")
    b, _ = student(srv, "mix")
    new_id, missing = uid("new"), uid("missing")
    ops = [
        op_create("students", {"firstName": "New", "email": f"{new_id}@example.com"}, id=new_id),  # 0 ok
        op_create("students", {"firstName": "Dup", "email": a_data["email"]}, id=uid("dup")),  # 1 duplicate
        op_create("students", {"firstName": "X", "nickname": "x"}, id=uid("unk")),  # 2 unknown field
        op_update("students", missing, {"age": 1}),  # 3 missing: not a failure
        op_update("students", b, {"age": 99}, expected_version=7),  # 4 version conflict
        op_update("students", a, {"age": 41}),  # 5 ok
    ]
    return ops, a, b, new_id, missing


def check_mixed_results(resp, new_id, missing, applied):
    assert resp.total_requested == 6
    assert resp.total_failed == 3
    assert resp.total_succeeded == 3
    assert [r.index for r in resp.results] == list(range(6))
    codes = [r.status.code for r in resp.results]
    assert codes == [0, EXISTS.value[0], INVALID.value[0], 0, ABORTED.value[0], 0]
    assert [result_reason(r)[0] for r in resp.results] == \
        [None, "duplicate_record", "unknown_field", None, "version_conflict", None]
    assert result_reason(resp.results[1])[1]["field"] == "operations[1].data.email"
    assert result_reason(resp.results[2])[1]["field"] == "operations[2].data.nickname"
    assert result_reason(resp.results[4])[1]["field"] == "operations[4].expectedVersion"
    assert result_reason(resp.results[4])[1]["current_version"] == "1"
    assert resp.results[0].id == new_id and resp.results[3].id == missing
    assert [r.applied for r in resp.results] == ([True, False, False, True, False, True] if applied else [False] * 6)
    assert [r.affected for r in resp.results] == [1, 0, 0, 0, 0, 1]
    assert "missingIds" in resp.results[3].status.message
    assert list(resp.receipt.missing_ids) == [missing]


def test_all_or_nothing_with_failures_applies_nothing(srv):
    ops, a, b, new_id, missing = mixed(srv)
    before_a, before_b = srv.get("students", a), srv.get("students", b)
    head = head_sync_id(srv)
    d = expect_error(EXISTS, bulk, srv, ops, pb.records.ALL_OR_NOTHING, client_tx_id="bulk-aon",
                     reason="duplicate_record", field="operations[1].data.email")
    md = dict(d.error_info.metadata)
    assert md["index"] == "1" and md["failed"] == "3"
    assert d.message.startswith("operations[1]: ") and "3 of 6 operations failed" in d.message
    # every failing index is a field violation "<code>: <message>"
    assert d.violation_fields == ["operations[1].data.email", "operations[2].data.nickname",
                                  "operations[4].expectedVersion"]
    descs = [v.description for v in d.bad_request.field_violations]
    assert descs[0].startswith("duplicate_record: ") and descs[1].startswith("unknown_field: ")
    assert descs[2].startswith("version_conflict: ")
    # the rejected receipt
    rc = d.receipt
    assert rc.status == pb.records.REJECTED and not rc.success
    assert rc.ops == 0 and rc.last_sync_id == 0 and rc.server_tx_id and rc.client_tx_id == "bulk-aon"
    assert rc.error.code == "duplicate_record" and rc.error.field == "operations[1].data.email"
    assert list(rc.missing_ids) == [missing]
    # the whole response: good operations OK but not applied
    resp = bulk_response(d)
    assert resp.receipt == rc
    check_mixed_results(resp, new_id, missing, applied=False)
    assert "not applied" in resp.results[0].status.message
    # nothing applied, no sync id consumed
    srv.assert_not_found("students", new_id)
    assert srv.get("students", a).version == before_a.version
    assert h.to_dict(srv.get("students", a).data) == h.to_dict(before_a.data)
    assert srv.get("students", b).version == before_b.version
    assert head_sync_id(srv) == head


def test_best_effort_applies_only_the_good_operations(srv):
    ops, a, b, new_id, missing = mixed(srv)
    head = head_sync_id(srv)
    resp = bulk(srv, ops, pb.records.BEST_EFFORT)
    check_mixed_results(resp, new_id, missing, applied=True)
    rc = resp.receipt
    assert rc.status == pb.records.CONFIRMED and not rc.success
    assert rc.ops == 2 and rc.last_sync_id == head + 2
    assert rc.error.code == "duplicate_record" and rc.error.field == "operations[1].data.email"
    assert srv.get_data("students", new_id)["firstName"] == "New"
    assert srv.get_data("students", a)["age"] == 41
    assert srv.get("students", b).version == 1
    assert srv.get("students", new_id).sync_id == head + 1
    assert srv.get("students", a).sync_id == head + 2


def test_all_or_nothing_success_is_one_confirmed_receipt(srv):
    a, _ = student(srv, "ok")
    c, _ = student(srv, "ok")
    new_id = uid("ok")
    head = head_sync_id(srv)
    resp = bulk(srv, [op_create("students", {"firstName": "N"}, id=new_id),
                      op_update("students", a, {"age": 50}, expected_version=1),
                      op_replace("students", c, {"firstName": "R"}),
                      op_delete("students", a)], client_tx_id="ok-1")
    rc = resp.receipt
    assert rc.object == "commit_receipt" and rc.success and rc.status == pb.records.CONFIRMED
    assert rc.client_tx_id == "ok-1" and rc.server_tx_id.startswith("tx_")
    assert rc.ops == 4 and rc.last_sync_id == head + 4 and not rc.HasField("error")
    assert (resp.total_requested, resp.total_succeeded, resp.total_failed) == (4, 4, 0)
    assert all(r.applied and r.status.code == 0 and r.affected == 1 for r in resp.results)
    assert not resp.dry_run
    srv.assert_not_found("students", a)
    assert srv.get_data("students", c) == {"firstName": "R", "isActive": True}
    assert srv.get("students", new_id).version == 1


def test_generated_ids_come_back_per_index(srv):
    resp = bulk(srv, [op_create("students", {"firstName": "G1"}), op_create("students", {"firstName": "G2"})])
    ids = [r.id for r in resp.results]
    assert all(ids) and ids[0] != ids[1]
    assert [srv.get_data("students", i)["firstName"] for i in ids] == ["G1", "G2"]


def test_operations_see_the_earlier_ones(srv):
    rid = uid("seq")
    resp = bulk(srv, [op_create("students", {"firstName": "S", "age": 1}, id=rid),
                      op_update("students", rid, {"age": 2}, expected_version=1),
                      op_update("students", rid, {"age": 3}, expected_version=2)])
    assert resp.receipt.success
    got = srv.get("students", rid)
    assert got.version == 3 and h.to_dict(got.data)["age"] == 3


def test_several_models_in_one_call(srv):
    sid, eid = uid("mm"), uid("mm")
    resp = bulk(srv, [op_create("students", {"firstName": "M"}, id=sid),
                      op_create("enrollments", {"studentId": sid, "course": "math"}, id=eid)])
    assert resp.receipt.ops == 2
    assert srv.get_data("enrollments", eid)["studentId"] == sid
    # and a failure in one model undoes the other (all-or-nothing)
    s2 = uid("mm")
    d = expect_error(INVALID, bulk, srv, [op_create("students", {"firstName": "M"}, id=s2),
                                          op_create("enrollments", {"studentId": s2}, id=uid("mm"))],
                     reason="validation_failed", field="operations[1].data.course")
    assert d.error_info.metadata["index"] == "1"
    srv.assert_not_found("students", s2)


def test_unknown_model_fails_its_operation(srv):
    d = expect_error(grpc.StatusCode.NOT_FOUND, bulk, srv, [op_create("nosuch", {"a": 1})],
                     reason="not_found", field="operations[0].model")
    assert bulk_response(d).results[0].status.code == grpc.StatusCode.NOT_FOUND.value[0]


def test_delete_of_a_missing_id_is_listed_not_failed(srv):
    missing = uid("gone")
    resp = bulk(srv, [op_delete("students", missing), op_replace("students", missing, {"firstName": "x"})])
    assert resp.receipt.success and resp.receipt.status == pb.records.CONFIRMED
    assert list(resp.receipt.missing_ids) == [missing, missing]
    assert resp.receipt.ops == 0 and resp.receipt.last_sync_id == 0
    assert [r.affected for r in resp.results] == [0, 0]


# ---- authorisation --------------------------------------------------------------


@pytest.fixture(scope="module")
def team_a(srv):
    """A token that may create, update and delete students in team-a only,
    and records in team-a and team-b."""
    caps = [{"can": ["read", "create", "update", "delete"], "model": "students", "group": "team-a"}]
    tok = srv.call("MintToken", pb.tokens.MintTokenRequest(caps=[pb.tokens.Capability(**c) for c in caps])).token
    tag = uid("grp")
    a1, a2, b1 = uid("a"), uid("a"), uid("b")
    srv.create("students", {"firstName": tag, "age": 1}, id=a1, group="team-a")
    srv.create("students", {"firstName": tag, "age": 2}, id=a2, group="team-a")
    srv.create("students", {"firstName": tag, "age": 3}, id=b1, group="team-b")
    return srv.as_(tok), tag, a1, a2, b1


def test_forbidden_group_rejects_an_all_or_nothing_bulk(srv, team_a):
    t, tag, a1, a2, b1 = team_a
    d = expect_error(DENIED, bulk, t, [op_create("students", {"firstName": "Z", "bogus": 1}, group="team-a"),  # 0 invalid
                                       op_update("students", a1, {"age": 10}),  # 1 ok
                                       op_update("students", b1, {"age": 30})],  # 2 denied
                     reason="permission_denied")
    md = dict(d.error_info.metadata)
    assert (md["can"], md["model"], md["sync_group"]) == ("update", "students", "team-b")
    assert md["index"] == "2" and md["failed"] == "2"
    rc = d.receipt.error.required_capability
    assert (rc.can, rc.model, rc.sync_group) == ("update", "students", "team-b")
    assert d.violation_fields == ["operations[0].data.bogus", "operations[2]"]
    resp = bulk_response(d)
    reason, rmd = result_reason(resp.results[2])
    assert reason == "permission_denied" and rmd["sync_group"] == "team-b"
    assert srv.get_data("students", a1)["age"] == 1
    assert srv.get_data("students", b1)["age"] == 3


def test_forbidden_group_is_one_failure_in_best_effort(srv, team_a):
    t, tag, a1, a2, b1 = team_a
    new_b = uid("nb")
    resp = bulk(t, [op_update("students", a2, {"age": 20}),
                    op_update("students", b1, {"age": 31}),
                    op_create("students", {"firstName": "Q"}, id=new_b, group="team-b")],
                pb.records.BEST_EFFORT)
    assert [r.status.code for r in resp.results] == [0, DENIED.value[0], DENIED.value[0]]
    _, md = result_reason(resp.results[2])
    assert (md["can"], md["sync_group"]) == ("create", "team-b")
    assert srv.get_data("students", a2)["age"] == 20
    assert srv.get_data("students", b1)["age"] == 3
    srv.assert_not_found("students", new_b)


def test_by_filter_writes_only_touch_permitted_groups(srv, team_a):
    t, tag, a1, a2, b1 = team_a
    resp = bulk(t, [op_update_where("students", f'firstName = "{tag}"', {"status": "inactive"})])
    assert resp.results[0].affected == 2
    assert srv.get_data("students", a1)["status"] == "inactive"
    assert "status" not in srv.get_data("students", b1)


def test_by_filter_without_the_verb_is_denied(srv, team_a):
    caps = [{"can": ["read"], "model": "students", "group": "*"}]
    tok = srv.call("MintToken", pb.tokens.MintTokenRequest(caps=[pb.tokens.Capability(**c) for c in caps])).token
    _, tag, *_ = team_a
    d = expect_error(DENIED, bulk, srv.as_(tok), [op_delete_where("students", f'firstName = "{tag}"')],
                     reason="permission_denied")
    assert (d.error_info.metadata["can"], d.error_info.metadata["sync_group"]) == ("delete", "*")


# ---- by filter --------------------------------------------------------------------


def seed(srv, n=5):
    tag = uid("flt")
    ids = []
    for i in range(n):
        rid = f"{tag}-{i}"
        srv.create("students", {"firstName": tag, "age": 10 + i}, id=rid)
        ids.append(rid)
    return tag, ids


def test_update_where_and_delete_where(srv):
    tag, ids = seed(srv)
    head = head_sync_id(srv)
    resp = bulk(srv, [op_update_where("students", f'firstName = "{tag}" AND age >= 12', {"status": "inactive"}),
                      op_delete_where("students", f'firstName = "{tag}" AND age < 11')])
    assert [r.affected for r in resp.results] == [3, 1]
    assert [r.id for r in resp.results] == ["", ""]
    assert resp.receipt.ops == 4 and resp.receipt.last_sync_id == head + 4
    left = list_call(srv, "students", filter=f'firstName = "{tag}"').records
    assert sorted(r.id for r in left) == ids[1:]
    assert {r.id: h.to_dict(r.data).get("status") for r in left} == \
        {ids[1]: None, ids[2]: "inactive", ids[3]: "inactive", ids[4]: "inactive"}
    assert all(r.version == 2 for r in left if r.id != ids[1])


@pytest.mark.parametrize("flt", ["", "   ", "\t\n"])
def test_a_filter_without_a_condition_is_refused(srv, flt):
    tag, ids = seed(srv, 2)
    d = expect_error(INVALID, bulk, srv, [op_delete_where("students", flt)],
                     reason="filter_required", field="operations[0].filter")
    assert d.violation_fields == ["operations[0].filter"]
    d = expect_error(INVALID, bulk, srv, [op_update_where("students", flt, {"age": 1})],
                     reason="filter_required")
    resp = bulk(srv, [op_delete_where("students", flt)], pb.records.BEST_EFFORT)
    assert result_reason(resp.results[0])[0] == "filter_required"
    assert len(list_call(srv, "students", filter=f'firstName = "{tag}"').records) == 2


def test_sql_injection_in_a_filter_is_a_literal(srv):
    tag, ids = seed(srv, 3)
    total = len(list_call(srv, "students").records)
    evil = "x\\\" OR 1=1 --"  # the filter text: firstName = "x\" OR 1=1 --"
    resp = bulk(srv, [op_delete_where("students", f'firstName = "{evil}"'),
                      op_update_where("students", f"firstName = \"{tag}'; DROP TABLE students; --\"",
                                      {"status": "inactive"})])
    assert [r.affected for r in resp.results] == [0, 0]
    # grammar outside a string literal is a parse error, not SQL
    d = expect_error(INVALID, bulk, srv, [op_delete_where("students", f'firstName = "{tag}" OR 1 = 1')],
                     reason="validation_failed", field="operations[0].filter")
    assert "position" in d.message
    # a literal that looks like SQL is stored as text
    resp = bulk(srv, [op_update_where("students", f'firstName = "{tag}" AND age = 10',
                                      {"firstName": "Robert'); DROP TABLE students;--"})])
    assert resp.results[0].affected == 1
    assert srv.get_data("students", ids[0])["firstName"] == "Robert'); DROP TABLE students;--"
    assert len(list_call(srv, "students").records) == total
    assert all("status" not in h.to_dict(srv.get("students", i).data) for i in ids)


def test_max_affected(srv):
    tag, ids = seed(srv, 3)
    f = f'firstName = "{tag}"'
    d = expect_error(INVALID, bulk, srv, [op_update_where("students", f, {"age": 1}, max_affected=2)],
                     reason="validation_failed", field="operations[0].maxAffected")
    assert "maxAffected (2)" in d.message
    assert all(srv.get_data("students", i)["age"] != 1 for i in ids)
    resp = bulk(srv, [op_update_where("students", f, {"age": 1}, max_affected=2)], pb.records.BEST_EFFORT)
    assert result_reason(resp.results[0])[0] == "validation_failed" and resp.results[0].affected == 0
    expect_error(INVALID, bulk, srv, [op_delete_where("students", f, max_affected=-1)],
                 reason="validation_failed", field="operations[0].maxAffected")
    resp = bulk(srv, [op_delete_where("students", f, max_affected=3)])
    assert resp.results[0].affected == 3
    assert len(list_call(srv, "students", filter=f).records) == 0


def test_update_where_checks_its_data(srv):
    tag, ids = seed(srv, 2)
    expect_error(INVALID, bulk, srv, [op_update_where("students", f'firstName = "{tag}"', {"age": 500})],
                 reason="validation_failed", field="operations[0].data.age")
    # also when nothing matches
    expect_error(INVALID, bulk, srv, [op_update_where("students", 'firstName = "nobody-at-all"', {"nope": 1})],
                 reason="unknown_field", field="operations[0].data.nope")


def test_update_where_unique_violation_undoes_the_whole_operation(srv):
    tag, ids = seed(srv, 3)
    taken = f"{uid('taken')}@example.com"
    resp = bulk(srv, [op_update_where("students", f'firstName = "{tag}"', {"email": taken})], pb.records.BEST_EFFORT)
    reason, md = result_reason(resp.results[0])
    # the email index and the (firstName, email) one both refuse it; the
    # field names the columns SQLite reports
    assert reason == "duplicate_record" and md["field"].startswith("operations[0].data.") and "email" in md["field"]
    assert "record '" in resp.results[0].status.message
    assert resp.results[0].affected == 0 and resp.receipt.ops == 0
    assert all("email" not in srv.get_data("students", i) for i in ids)


# ---- dry run ---------------------------------------------------------------------


def test_dry_run_reports_and_writes_nothing(srv):
    tag, ids = seed(srv, 3)
    new_id = uid("dry")
    head = head_sync_id(srv)
    resp = bulk(srv, [op_create("students", {"firstName": "D"}, id=new_id),
                      op_update_where("students", f'firstName = "{tag}"', {"age": 77}),
                      op_delete("students", ids[0])], dry_run=True, idempotency_key=uid("dry-key"))
    assert resp.dry_run
    assert [r.affected for r in resp.results] == [1, 3, 1]
    assert all(not r.applied and r.status.message == "dry run: not applied" for r in resp.results)
    rc = resp.receipt
    assert rc.success and rc.status == pb.records.COMMIT_STATUS_UNSPECIFIED
    assert rc.ops == 5 and rc.last_sync_id == 0
    srv.assert_not_found("students", new_id)
    assert all(srv.get_data("students", i)["age"] != 77 for i in ids)
    assert head_sync_id(srv) == head
    # a failing dry run answers as the real call would
    expect_error(EXISTS, bulk, srv, [op_create("students", {"firstName": "D"}, id=ids[0])], dry_run=True,
                 reason="duplicate_record", field="operations[0].id")
    assert head_sync_id(srv) == head


# ---- limits and request shape --------------------------------------------------------


def test_too_many_operations(srv):
    ops = [op_create("students", {"firstName": "T"}) for _ in range(101)]
    d = expect_error(INVALID, bulk, srv, ops, reason="too_many_operations", field="operations")
    assert "101" in d.message and "100" in d.message
    assert not d.receipt.success
    resp = bulk(srv, ops[:100], dry_run=True)
    assert resp.total_succeeded == 100


def test_configured_operation_limit(server_factory):
    s = server_factory("--max-bulk-ops", "5")
    s.push_schema(h.SCHOOL)
    ops = [op_create("students", {"firstName": "L"}) for _ in range(6)]
    d = expect_error(INVALID, bulk, s, ops, reason="too_many_operations", field="operations")
    assert "at most 5" in d.message
    assert bulk(s, ops[:5]).receipt.ops == 5


def test_operation_limit_above_the_hard_cap_does_not_start(tmp_path):
    res = h.subprocess.run([str(h.BIN), "--max-bulk-ops", "1001", "--db", str(tmp_path / "r.db")],
                           capture_output=True, text=True, timeout=30)
    assert res.returncode == 2 and "--max-bulk-ops" in res.stderr and "1000" in res.stderr


def test_no_operations_is_invalid(srv):
    expect_error(INVALID, bulk, srv, [], reason="validation_failed", field="operations")


@pytest.mark.parametrize("field,kw", [("idempotencyKey", {"idempotency_key": "k"}),
                                      ("clientTxId", {"client_tx_id": "c"}),
                                      ("returnRecord", {"return_record": True})])
def test_per_operation_call_settings_are_refused(srv, field, kw):
    rid = uid("pk")
    bad = pb.records.BulkOperation(update=pb.records.UpdateRecordRequest(model="students", id=rid, **kw))
    expect_error(INVALID, bulk, srv, [op_create("students", {"firstName": "P"}, id=rid), bad],
                 reason="validation_failed", field=f"operations[1].{field}")
    srv.assert_not_found("students", rid)


def test_an_empty_operation_is_invalid(srv):
    expect_error(INVALID, bulk, srv, [pb.records.BulkOperation()], reason="validation_failed",
                 field="operations[0]")


# ---- guards -------------------------------------------------------------------------


def test_stale_notify_is_held_not_failed(srv):
    a, _ = student(srv, "held")
    read_at = srv.get("students", a).read_at
    srv.update("students", a, {"age": 33})
    other = uid("held")
    resp = bulk(srv, [op_update("students", a, {"age": 34}, read_at=i64(read_at), on_stale=pb.records.NOTIFY),
                      op_create("students", {"firstName": "H"}, id=other)])
    assert resp.total_failed == 0 and resp.receipt.success
    held = resp.results[0]
    assert held.status.code == 0 and held.status.message.startswith("held: ") and not held.applied
    assert held.affected == 0 and resp.results[1].applied
    (note,) = resp.receipt.notifications
    assert note.id == a and list(note.conflicting_fields) == ["age"]
    assert h.to_dict(note.current_values) == {"age": 33}
    assert srv.get_data("students", a)["age"] == 33 and srv.get("students", other).version == 1


def test_stale_reject_and_claims_fail_their_operation(srv):
    a, _ = student(srv, "stale")
    c, _ = student(srv, "claimed")
    read_at = srv.get("students", a).read_at
    srv.update("students", a, {"age": 44})
    srv.call("AcquireClaim", pb.claims.AcquireClaimRequest(model="students", id=c, ttl_seconds=60))
    resp = bulk(srv, [op_update("students", a, {"age": 45}, read_at=i64(read_at)),
                      op_update("students", c, {"age": 46}, claim="claim_wrong")], pb.records.BEST_EFFORT)
    assert [result_reason(r)[0] for r in resp.results] == ["stale_context", "claimed"]
    assert result_reason(resp.results[0])[1]["field"] == "operations[0].data.age"
    assert result_reason(resp.results[1])[1]["field"] == "operations[1]"
    assert srv.get_data("students", a)["age"] == 44 and srv.get_data("students", c)["age"] == 20


# ---- idempotency -----------------------------------------------------------------------


def test_idempotent_replay_is_byte_identical(srv):
    rid = uid("idem")
    key = uid("key")
    req = request([op_create("students", {"firstName": "I"}, id=rid),
                   op_update("students", uid("absent"), {"age": 2})], pb.records.BEST_EFFORT, idempotency_key=key)
    first = bulk_raw(srv, req)
    head = head_sync_id(srv)
    again = bulk_raw(srv, req)
    assert again == first
    assert head_sync_id(srv) == head
    # the same key in metadata is the same request
    req2 = request(list(req.operations), pb.records.BEST_EFFORT)
    assert bulk_raw(srv, req2, metadata=[("idempotency-key", key)]) == first
    # another request with the key
    other = request([op_create("students", {"firstName": "J"}, id=uid("idem"))], idempotency_key=key)
    expect_error(EXISTS, bulk_raw, srv, other, reason="idempotency_key_reused")
    assert pb.records.BulkMutateResponse.FromString(first).receipt.ops == 1


def test_idempotent_all_or_nothing_conflict_replays_its_error(srv):
    a, _ = student(srv, "idemc")
    key = uid("key")
    req = request([op_update("students", a, {"age": 1}, expected_version=9)], idempotency_key=key)
    with pytest.raises(grpc.RpcError) as e1:
        bulk_raw(srv, req)
    srv.update("students", a, {"age": 2})  # the version moves on; the replay does not
    with pytest.raises(grpc.RpcError) as e2:
        bulk_raw(srv, req)
    t1, t2 = dict(e1.value.trailing_metadata()), dict(e2.value.trailing_metadata())
    assert e1.value.code() == e2.value.code() == ABORTED
    assert t1["grpc-status-details-bin"] == t2["grpc-status-details-bin"]
    assert h.error_details(e2.value).receipt.current_version == 1


def test_validation_failures_are_not_stored(srv):
    key = uid("key")
    rid = uid("iv")
    expect_error(INVALID, bulk, srv, [op_create("students", {"firstName": "V", "age": 999}, id=rid)],
                 idempotency_key=key, reason="validation_failed")
    # the same key may be used again: nothing was stored
    expect_error(INVALID, bulk, srv, [op_create("students", {"firstName": "V", "age": 999}, id=rid)],
                 idempotency_key=key, reason="validation_failed")


# ---- change feed -------------------------------------------------------------------------


def test_bulk_rows_appear_in_the_change_feed_with_one_server_tx_id(srv):
    tag, ids = seed(srv, 2)
    head = head_sync_id(srv)
    new_id = uid("feed")
    resp = bulk(srv, [op_create("students", {"firstName": "F"}, id=new_id),
                      op_update_where("students", f'firstName = "{tag}"', {"age": 5}),
                      op_delete("students", ids[0])])
    assert resp.receipt.ops == 4
    fn = srv.channel.unary_stream("/recordd.v1.Records/WatchChanges",
                                  request_serializer=lambda m: m.SerializeToString(),
                                  response_deserializer=pb.records.ChangeEvent.FromString)
    stream = fn(pb.records.WatchChangesRequest(since_sync_id=head), timeout=10)
    events = []
    for ev in stream:
        events.append(ev)
        if len(events) == 4:
            stream.cancel()
            break
    assert [e.sync_id for e in events] == [head + 1, head + 2, head + 3, head + 4]
    assert {e.server_tx_id for e in events} == {resp.receipt.server_tx_id}
    assert [(e.id, e.op) for e in events] == [(new_id, pb.records.CREATE), (ids[0], pb.records.UPDATE),
                                              (ids[1], pb.records.UPDATE), (ids[0], pb.records.DELETE)]
    assert resp.receipt.last_sync_id == head + 4


def test_concurrent_bulks_and_single_writes(srv):
    """Bulks share the group commit with single writes; a failing bulk does
    not disturb the others."""
    tag, ids = seed(srv, 4)
    errors = []

    def good(n):
        try:
            for i in range(5):
                bulk(srv, [op_update("students", ids[n], {"age": i}), op_create("students", {"firstName": tag})])
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    def bad():
        for _ in range(5):
            with pytest.raises(grpc.RpcError):
                bulk(srv, [op_create("students", {"firstName": tag}), op_update("students", ids[0], {"age": -1})])

    def single():
        for i in range(5):
            srv.update("students", ids[3], {"age": 100 + i})

    threads = [threading.Thread(target=good, args=(n,)) for n in range(3)]
    threads += [threading.Thread(target=single)]
    for t in threads:
        t.start()
    bad()
    for t in threads:
        t.join()
    assert not errors
    assert len(list_call(srv, "students", filter=f'firstName = "{tag}"').records) == 4 + 15
    assert srv.get_data("students", ids[3])["age"] == 104


# ---- the README's examples, through buf curl (reflection, no .proto files) -------------

from test_buf_cli import BASE_FLAGS, buf  # noqa: E402,F401  (the buf fixture)


def readme_calls(section_start, section_end=None):
    """(method, JSON body) of every `grpcurl ... -d '<json>' host method` in
    the README between two headings, in order."""
    import re

    text = (h.REPO / "README.md").read_text()
    start = text.index(section_start)
    end = text.index(section_end, start) if section_end else len(text)
    calls = []
    for m in re.finditer(r"-d '([^']*)'[\s\\]*127\.0\.0\.1:50051 (\S+)", text[start:end], re.S):
        calls.append((m.group(2), m.group(1)))
    return calls


def test_readme_bulk_examples_work_as_written(buf, server_factory):
    import json

    s = server_factory()
    auth = ["-H", f"authorization: Bearer {s.admin_key}"]

    def curl(method, body, check=True):
        return buf("curl", *BASE_FLAGS, *auth, "-d", body, f"http://{s.address}/{method}", check=check)

    # the walkthrough before it: push the schema, then s1's create … delete
    for method, body in readme_calls("## Five-minute walkthrough", "## Semantics in brief"):
        curl(method, body)
    calls = readme_calls("## Bulk writes", "## Change feed")
    assert [m for m, _ in calls] == ["recordd.v1.Records/BulkMutate"] * 3
    out = json.loads(curl(*calls[0]).stdout)
    assert out["receipt"]["success"] is True and out["receipt"]["ops"] == 5
    assert out["receipt"]["missingIds"] == ["s9"] and out["totalSucceeded"] == 5
    assert [r.get("affected", 0) for r in out["results"]] == [1, 1, 1, 0, 2]
    res = curl(*calls[1], check=False)
    assert res.returncode == EXISTS.value[0] << 3, res.stderr  # buf curl exits with code << 3
    err = json.loads(res.stderr)
    assert err["code"] == "already_exists" and "2 of 3 operations failed" in err["message"]
    out = json.loads(curl(*calls[2]).stdout)
    assert out["dryRun"] is True and out["receipt"]["ops"] == 2 and out["results"][0]["affected"] == 2


def test_best_effort_where_everything_fails_is_ok_and_rejected(srv):
    a, a_data = student(srv, "allbad")
    resp = bulk(srv, [op_create("students", {"firstName": "Z", "email": a_data["email"]}),
                      op_update("students", a, {"age": 1}, expected_version=5)], pb.records.BEST_EFFORT)
    assert (resp.total_succeeded, resp.total_failed) == (0, 2)
    rc = resp.receipt
    assert rc.status == pb.records.REJECTED and not rc.success and rc.ops == 0 and rc.last_sync_id == 0
    assert rc.error.code == "duplicate_record" and "2 of 2 operations failed" in rc.error.message
    assert not any(r.applied for r in resp.results)


def test_server_managed_field_in_data_is_named_as_data(srv):
    a, _ = student(srv, "sys")
    d = expect_error(INVALID, bulk, srv, [op_update("students", a, {"version": 3})],
                     reason="validation_failed", field="operations[0].data.version")
    assert "server-managed" in d.message
