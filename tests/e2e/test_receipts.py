"""Commit receipts across writes: sync ids, and the rejected receipt carried in
the error details (DESIGN.md §3, §4, §7)."""

import grpc

import harness as h
from harness import expect_error, pb, uid

REJECTED = pb.records.REJECTED


def test_last_sync_id_strictly_increases_across_mixed_commits(school):
    rid = uid()
    seen = []
    seen.append(school.create("students", {"firstName": "A"}, id=rid).last_sync_id)
    seen.append(school.create("enrollments", {"studentId": rid, "course": "c"}).last_sync_id)
    seen.append(school.update("students", rid, {"age": 3}).last_sync_id)
    seen.append(school.replace("students", rid, {"firstName": "B"}).last_sync_id)
    other = uid()
    seen.append(school.create("students", {"firstName": "C"}, id=other).last_sync_id)
    seen.append(school.delete("students", other).last_sync_id)
    seen.append(school.update("students", rid, {"status": "active"}).last_sync_id)
    seen.append(school.delete("students", rid).last_sync_id)
    assert all(b > a for a, b in zip(seen, seen[1:])), seen


def test_record_sync_id_is_that_of_its_last_commit(school):
    rid = uid()
    school.create("students", {"firstName": "A"}, id=rid)
    rc = school.update("students", rid, {"age": 1})
    school.create("students", {"firstName": "unrelated"})
    assert school.get("students", rid).sync_id == rc.last_sync_id


def assert_rejected_receipt(d, reason, client_tx_id=None):
    r = d.receipt
    assert r is not None, f"no recordd.v1.CommitReceipt in the details: {d}"
    assert r.object == "commit_receipt"
    assert r.success is False
    assert r.status == REJECTED
    assert r.error.code == reason
    assert r.error.message != ""
    if client_tx_id is not None:
        assert r.client_tx_id == client_tx_id
    assert not r.HasField("record")


def test_duplicate_create_carries_a_rejected_receipt(school):
    rid = uid()
    school.create("students", {"firstName": "A"}, id=rid)
    d = expect_error(
        grpc.StatusCode.ALREADY_EXISTS,
        school.create,
        "students",
        {"firstName": "B"},
        id=rid,
        client_tx_id="dup-tx",
        return_record=True,
        reason="duplicate_record",
    )
    assert_rejected_receipt(d, "duplicate_record", client_tx_id="dup-tx")
    assert d.receipt.ops == 0


def test_unique_violation_carries_a_rejected_receipt_naming_the_field(school):
    email = f"{uid()}@example.com"
    school.create("students", {"firstName": "A", "email": email})
    d = expect_error(
        grpc.StatusCode.ALREADY_EXISTS,
        school.create,
        "students",
        {"firstName": "B", "email": email},
        reason="duplicate_record",
        field="email",
    )
    assert_rejected_receipt(d, "duplicate_record")
    assert d.receipt.error.field == "email"


def test_version_conflict_carries_a_rejected_receipt(school):
    rid = uid()
    school.create("students", {"firstName": "A"}, id=rid)
    school.update("students", rid, {"age": 1})
    d = expect_error(
        grpc.StatusCode.ABORTED,
        school.update,
        "students",
        rid,
        {"age": 2},
        expected_version=1,
        client_tx_id="vc-tx",
        reason="version_conflict",
    )
    assert_rejected_receipt(d, "version_conflict", client_tx_id="vc-tx")
    assert d.receipt.ops == 0


def test_delete_version_conflict_carries_a_rejected_receipt(school):
    rid = uid()
    school.create("students", {"firstName": "A"}, id=rid)
    school.update("students", rid, {"age": 1})
    d = expect_error(grpc.StatusCode.ABORTED, school.delete, "students", rid, expected_version=1)
    assert_rejected_receipt(d, "version_conflict")


def test_validation_failure_receipt_when_present_is_rejected(school):
    d = expect_error(grpc.StatusCode.INVALID_ARGUMENT, school.create, "students", {"age": 500}, reason="validation_failed")
    if d.receipt is not None:
        assert_rejected_receipt(d, "validation_failed")
        assert d.receipt.last_sync_id == 0
        assert d.receipt.ops == 0


def test_every_error_is_in_the_recordd_domain(school):
    # expect_error checks ErrorInfo domain "recordd" and the Status/trailer agreement.
    expect_error(grpc.StatusCode.NOT_FOUND, school.get, "students", uid())
    expect_error(grpc.StatusCode.NOT_FOUND, school.get, "nope", "x")
    expect_error(grpc.StatusCode.INVALID_ARGUMENT, school.create, "students", {"x": 1})
    expect_error(grpc.StatusCode.NOT_FOUND, school.delete, "students", uid())


def test_a_rejected_write_does_not_advance_the_record(school):
    rid = uid()
    rc = school.create("students", {"firstName": "A"}, id=rid)
    expect_error(grpc.StatusCode.ABORTED, school.update, "students", rid, {"age": 2}, expected_version=7)
    r = school.get("students", rid)
    assert r.version == 1 and r.sync_id == rc.last_sync_id
    assert h.to_dict(r.data) == {"firstName": "A", "isActive": True}


# ---- concurrent writes (group commit must keep them separate, DESIGN.md §4) ----


def test_concurrent_creates_each_get_their_own_receipt_and_sync_id(school):
    n = 40
    ids = [uid("conc") for _ in range(n)]
    futures = [
        school.channel.unary_unary(
            h.rpc_path("CreateRecord"),
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=pb.records.CommitReceipt.FromString,
        ).future(
            pb.records.CreateRecordRequest(model="students", id=rid, data=h.struct({"firstName": rid})),
            timeout=h.CALL_TIMEOUT,
        )
        for rid in ids
    ]
    receipts = [f.result() for f in futures]
    assert all(r.success and r.status == pb.records.CONFIRMED and r.ops == 1 for r in receipts)
    assert len({r.last_sync_id for r in receipts}) == n
    assert len({r.server_tx_id for r in receipts}) == n
    for rid, r in zip(ids, receipts):
        rec = school.get("students", rid)
        assert rec.sync_id == r.last_sync_id
        assert h.to_dict(rec.data)["firstName"] == rid


def test_a_failing_write_among_concurrent_writes_does_not_drag_the_others_down(school):
    taken = uid("taken")
    school.create("students", {"firstName": "first"}, id=taken)
    create = school.channel.unary_unary(
        h.rpc_path("CreateRecord"),
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=pb.records.CommitReceipt.FromString,
    )
    ids = [taken if i % 4 == 0 else uid("mix") for i in range(24)]
    futures = [
        create.future(pb.records.CreateRecordRequest(model="students", id=rid, data=h.struct({"firstName": "x"})),
                      timeout=h.CALL_TIMEOUT)
        for rid in ids
    ]
    for rid, f in zip(ids, futures):
        if rid == taken:
            assert f.exception() is not None and f.exception().code() == grpc.StatusCode.ALREADY_EXISTS
        else:
            assert f.result().success
            assert school.get("students", rid).version == 1
    assert h.to_dict(school.get("students", taken).data)["firstName"] == "first"


def test_concurrent_updates_with_the_same_expected_version_let_exactly_one_win(school):
    rid = uid()
    school.create("students", {"firstName": "race"}, id=rid)
    update = school.channel.unary_unary(
        h.rpc_path("UpdateRecord"),
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=pb.records.CommitReceipt.FromString,
    )
    futures = [
        update.future(
            pb.records.UpdateRecordRequest(model="students", id=rid, data=h.struct({"age": i}),
                                           expected_version=pb.wrappers.Int64Value(value=1)),
            timeout=h.CALL_TIMEOUT,
        )
        for i in range(20)
    ]
    wins, conflicts = [], 0
    for i, f in enumerate(futures):
        if f.exception() is None:
            wins.append(i)
        else:
            d = h.error_details(f.exception())
            assert d.code == grpc.StatusCode.ABORTED and d.reason == "version_conflict", d
            conflicts += 1
    assert len(wins) == 1 and conflicts == 19
    r = school.get("students", rid)
    assert r.version == 2
    assert h.to_dict(r.data)["age"] == wins[0]


def test_receipts_carry_the_id_and_new_version_for_chained_writes(school):
    """A confirmed create, update or replace reports the record's id and new
    version, so the next conditional write needs no read; a delete reports
    neither."""
    made = school.create("students", {"firstName": "A"})  # a generated id
    assert made.id and made.version == 1
    assert school.get("students", made.id).version == 1
    up = school.update("students", made.id, {"age": 3}, expected_version=made.version)
    assert (up.id, up.version) == (made.id, 2)
    rep = school.replace("students", made.id, {"firstName": "B"}, expected_version=up.version)
    assert rep.version == 3 == school.get("students", made.id).version
    gone = school.delete("students", made.id, expected_version=rep.version)
    assert gone.success and gone.id == "" and gone.version == 0


def test_http_writes_answer_etag_and_location_from_the_receipt(school):
    """Over HTTP the new version comes back as ETag, so If-Match chains
    writes; a create without id answers the generated id in Location."""
    r = school.http("POST", "/v1/models/students", json_body={"firstName": "A"})
    assert r.status_code == 201, r.text
    rid = r.json()["id"]
    assert r.headers["Location"] == f"/v1/models/students/{rid}"
    assert r.headers["ETag"] == '"1"'
    r = school.http("PATCH", f"/v1/models/students/{rid}", json_body={"age": 4},
                    headers={"If-Match": r.headers["ETag"]})
    assert r.status_code == 200 and r.headers["ETag"] == '"2"', r.text
    r = school.http("PATCH", f"/v1/models/students/{rid}", json_body={"age": 5},
                    headers={"If-Match": '"1"'})
    assert r.status_code == 412, r.text
    r = school.http("DELETE", f"/v1/models/students/{rid}", headers={"If-Match": '"2"'})
    assert r.status_code == 200 and "ETag" not in r.headers, r.text
