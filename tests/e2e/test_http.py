"""The HTTP/JSON gateway (DESIGN.md §2, §7, §8; docs/API.md "HTTP/JSON") with
python3-requests against the real binary: every route of DESIGN.md §3 with
the semantics the gRPC tests check, the headers (Authorization,
Idempotency-Key, If-Match/ETag, Prefer, X-Request-Id, Last-Event-ID),
problem+json errors, Server-Sent Events, /healthz /readyz /metrics."""

import json
import re
import threading
import time

import grpc
import pytest
import requests
from google.protobuf import json_format

import harness as h
from harness import pb, uid

R = pb.records
ITEMS = {
    "name": "items",
    "fields": [
        {"name": "a", "type": "STRING"},
        {"name": "b", "type": "STRING"},
        {"name": "n", "type": "INTEGER", "min": 0},
    ],
}
PROBLEM = "application/problem+json"


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    s = h.Server(tmp_path_factory.mktemp("http") / "recordd", ("--sse-keepalive", "1")).start()
    r = s.http("PUT", "/v1/schema", json_body={"schema": {"models": [h.STUDENTS, ITEMS]}})
    assert r.status_code == 200, r.text
    yield s
    problem = s.kill()
    if problem:
        pytest.fail(problem, pytrace=False)


def problem(r, status, code, field=None):
    """Asserts r is an RFC 9457 problem with status and code; returns its body."""
    assert r.status_code == status, f"{r.status_code} {r.text}"
    assert r.headers["Content-Type"] == PROBLEM, r.headers
    p = r.json()
    assert p["status"] == status and p["code"] == code, p
    assert p["type"] == f"urn:recordd:problem:{code}"
    assert p["title"] and p["instance"].startswith("/")
    if field is not None:
        assert p.get("field") == field or p.get("field", "").startswith(field + "."), p
    return p


def new_item(srv, **data):
    rid = uid()
    r = srv.http("POST", f"/v1/models/items?id={rid}", json_body={"a": "a0", "b": "b0", "n": 0, **data})
    assert r.status_code == 201, r.text
    return rid


def get(srv, model, rid, **kw):
    return srv.http("GET", f"/v1/models/{model}/{rid}", **kw)


# ---- ops endpoints ---------------------------------------------------------------


def test_healthz_and_readyz_answer_without_credentials(srv):
    assert srv.http("GET", "/healthz", auth=None).status_code == 200
    r = srv.http("GET", "/readyz", auth=None)
    assert r.status_code == 200 and r.json()["status"] == "ready"
    problem(srv.http("POST", "/healthz", auth=None), 405, "method_not_allowed")


def test_metrics_count_requests_by_transport_route_and_code(srv):
    rid = new_item(srv)
    srv.update("items", rid, {"a": "grpc"})
    get(srv, "items", rid)
    get(srv, "items", "nope")
    text = srv.http("GET", "/metrics", auth=None).text
    assert "# TYPE recordd_requests_total counter" in text
    assert 'recordd_requests_total{transport="grpc",method="/recordd.v1.Records/UpdateRecord",code="OK"}' in text
    assert 'recordd_requests_total{transport="http",method="/recordd.v1.Records/GetRecord",code="NOT_FOUND"}' in text
    assert 'recordd_http_requests_total{route="GET /v1/models/{model}/{id}",code="404"}' in text
    assert 'recordd_http_request_duration_seconds_bucket{route="POST /v1/models/{model}",le="+Inf"}' in text
    assert 'recordd_request_duration_seconds_count{transport="grpc",method="/recordd.v1.Records/UpdateRecord"}' in text
    assert "# TYPE recordd_commit_batch_size histogram" in text
    assert 'recordd_open_streams{transport="http"}' in text


def metric_value(text, name):
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} is not in /metrics")


def test_metrics_describe_the_process_the_build_and_the_database(srv):
    text = srv.http("GET", "/metrics", auth=None).text
    assert metric_value(text, "process_cpu_seconds_total") > 0
    assert metric_value(text, "process_resident_memory_bytes") > 1 << 20
    assert metric_value(text, "process_open_fds") >= 3
    assert re.search(r'^recordd_build_info\{version="[^"]+"\} 1$', text, re.M), text
    # the newest committed sync id per organisation
    assert "recordd_changes_sync_id{" in text


@pytest.mark.sqlite_only("recordd_database_bytes gives the sizes of the SQLite file and its WAL")
def test_metrics_give_the_database_file_sizes(srv):
    text = srv.http("GET", "/metrics", auth=None).text
    assert metric_value(text, 'recordd_database_bytes{file="db"}') > 0
    assert metric_value(text, 'recordd_database_bytes{file="wal"}') >= 0


def test_metrics_time_every_commit(srv):
    def scrape():
        return srv.http("GET", "/metrics", auth=None).text

    before = scrape()
    assert "# TYPE recordd_commit_duration_seconds histogram" in before
    n0 = metric_value(before, "recordd_commit_duration_seconds_count")
    s0 = metric_value(before, "recordd_commit_duration_seconds_sum")
    rid = new_item(srv)
    for i in range(3):
        srv.update("items", rid, {"a": f"v{i}"})
    after = scrape()
    n1 = metric_value(after, "recordd_commit_duration_seconds_count")
    # one observation per COMMIT (a transaction that never got to COMMIT
    # has a batch size but no duration), and the four sequential writes
    # above were four more
    assert n1 <= metric_value(after, "recordd_commit_batch_size_count")
    assert n1 >= n0 + 4
    assert metric_value(after, "recordd_commit_duration_seconds_sum") > s0
    assert metric_value(after, 'recordd_commit_duration_seconds_bucket{le="+Inf"}') == n1


# ---- routing --------------------------------------------------------------------------


def test_unknown_path_is_404_problem(srv):
    p = problem(srv.http("GET", "/v2/nothing"), 404, "not_found")
    assert p["instance"] == "/v2/nothing"


def test_wrong_method_is_405_with_allow(srv):
    r = srv.http("POST", "/v1/models/items/x")
    problem(r, 405, "method_not_allowed")
    assert set(r.headers["Allow"].replace(" ", "").split(",")) == {"GET", "HEAD", "PATCH", "PUT", "DELETE"}
    r = srv.http("GET", "/v1/commits")  # POST only: no HEAD either
    problem(r, 405, "method_not_allowed")
    assert r.headers["Allow"] == "POST"
    assert srv.http("HEAD", "/v1/models/items").status_code == 200


def test_request_id_is_echoed_or_generated(srv):
    r = srv.http("GET", "/healthz", headers={"X-Request-Id": "abc-123"})
    assert r.headers["X-Request-Id"] == "abc-123"
    r1, r2 = srv.http("GET", "/healthz"), srv.http("GET", "/healthz")
    assert r1.headers["X-Request-Id"] and r1.headers["X-Request-Id"] != r2.headers["X-Request-Id"]


# ---- records ----------------------------------------------------------------------------


def test_create_is_201_with_location_and_the_record_reads_back_with_etag(srv):
    rid = uid()
    r = srv.http("POST", f"/v1/models/students?id={rid}", json_body={"firstName": "Ada", "age": 36})
    assert r.status_code == 201, r.text
    assert r.headers["Location"] == f"/v1/models/students/{rid}"
    rc = r.json()
    assert rc["object"] == "commit_receipt" and rc["status"] == "CONFIRMED" and rc["success"] is True
    assert isinstance(rc["lastSyncId"], str) and int(rc["lastSyncId"]) > 0  # int64 as a string
    g = get(srv, "students", rid)
    assert g.status_code == 200 and g.headers["ETag"] == '"1"'
    rec = g.json()
    assert rec["data"] == {"firstName": "Ada", "age": 36, "isActive": True}
    assert rec["version"] == "1" and rec["id"] == rid and rec["model"] == "students"
    # the same record over gRPC
    assert h.to_dict(srv.get("students", rid).data) == rec["data"]


def test_create_without_id_returns_the_record_and_location_with_representation(srv):
    r = srv.http("POST", "/v1/models/students", json_body={"firstName": "Bo"},
                 headers={"Prefer": "return=representation"})
    assert r.status_code == 201, r.text
    assert r.headers["Preference-Applied"] == "return=representation"
    rec = r.json()["record"]
    assert r.headers["Location"] == f"/v1/models/students/{rec['id']}"
    assert r.headers["ETag"] == '"1"'


def test_system_field_in_data_is_422_naming_it(srv):
    r = srv.http("POST", "/v1/models/students", json_body={"firstName": "X", "version": 3})
    p = problem(r, 422, "validation_failed", field="version")
    assert p["errors"] and p["errors"][0]["field"].startswith("version") or p["field"] == "version"


def test_merge_patch_with_null_removes_a_field(srv):
    rid = new_item(srv)
    r = srv.http("PATCH", f"/v1/models/items/{rid}", body=json.dumps({"a": None, "n": 5}).encode(),
                 headers={"Content-Type": "application/merge-patch+json"})
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "CONFIRMED"
    assert get(srv, "items", rid).json()["data"] == {"b": "b0", "n": 5}


def test_put_replaces_every_field(srv):
    rid = new_item(srv)
    r = srv.http("PUT", f"/v1/models/items/{rid}", json_body={"b": "only"})
    assert r.status_code == 200, r.text
    assert get(srv, "items", rid).json()["data"] == {"b": "only"}


def test_delete_then_get_is_404(srv):
    rid = new_item(srv)
    r = srv.http("DELETE", f"/v1/models/items/{rid}")
    assert r.status_code == 200 and r.json()["success"] is True
    problem(get(srv, "items", rid), 404, "not_found")
    problem(srv.http("DELETE", f"/v1/models/items/{rid}"), 404, "not_found")


def test_list_with_filter_order_and_pages(srv):
    tag = uid("t")
    for i in range(5):
        new_item(srv, a=tag, n=i)
    q = f"filter=a%20%3D%20%22{tag}%22&orderBy=n%20desc&pageSize=2"
    r = srv.http("GET", f"/v1/models/items?{q}")
    assert r.status_code == 200, r.text
    page = r.json()
    assert [x["data"]["n"] for x in page["records"]] == [4, 3]
    seen = [4, 3]
    while page.get("nextPageToken"):
        r = srv.http("GET", f"/v1/models/items?{q}&pageToken={requests.utils.quote(page['nextPageToken'])}")
        assert r.status_code == 200, r.text
        page = r.json()
        seen += [x["data"]["n"] for x in page["records"]]
    assert seen == [4, 3, 2, 1, 0]


def test_unknown_query_parameter_is_422_naming_it(srv):
    problem(srv.http("GET", "/v1/models/items?colour=red"), 422, "unknown_field", field="colour")


def test_path_field_in_the_query_is_refused(srv):
    problem(srv.http("GET", "/v1/models/items/x?model=students"), 400, "invalid_body", field="model")


# ---- versions: If-Match / ETag ------------------------------------------------------------


def test_if_match_success_and_mismatch_is_412(srv):
    rid = new_item(srv)
    r = srv.http("PATCH", f"/v1/models/items/{rid}", json_body={"a": "a1"}, headers={"If-Match": '"1"'})
    assert r.status_code == 200, r.text
    r = srv.http("PATCH", f"/v1/models/items/{rid}", json_body={"a": "a2"}, headers={"If-Match": '"1"'})
    p = problem(r, 412, "version_conflict")
    assert p["receipt"]["status"] == "REJECTED" and p["receipt"]["currentVersion"] == "2"
    assert get(srv, "items", rid).json()["data"]["a"] == "a1"


@pytest.mark.parametrize("verb", ["PUT", "DELETE"])
def test_if_match_mismatch_is_412_for_replace_and_delete(srv, verb):
    rid = new_item(srv)
    body = {"a": "x"} if verb == "PUT" else None
    problem(srv.http(verb, f"/v1/models/items/{rid}", json_body=body, headers={"If-Match": '"7"'}), 412,
            "version_conflict")


def test_body_expected_version_mismatch_stays_409(srv):
    rid = new_item(srv)
    r = srv.http("PATCH", f"/v1/models/items/{rid}?expectedVersion=5", json_body={"a": "x"})
    p = problem(r, 409, "version_conflict")
    assert p["receipt"]["currentVersion"] == "1"


def test_if_match_on_get(srv):
    rid = new_item(srv)
    assert get(srv, "items", rid, headers={"If-Match": '"1"'}).status_code == 200
    problem(get(srv, "items", rid, headers={"If-Match": '"2"'}), 412, "version_conflict")


@pytest.mark.parametrize("value", ['1', '"1', '"1" "2"', '*, "1"', ",", '"1",' * 17])
def test_malformed_if_match_is_400(srv, value):
    rid = new_item(srv)
    problem(srv.http("PATCH", f"/v1/models/items/{rid}", json_body={"a": "x"}, headers={"If-Match": value}), 400,
            "invalid_body", field="If-Match")


# RFC 9110 13.1.1: "*" matches any current representation, a list matches
# when any member does (strong comparison: a weak tag never matches).
@pytest.mark.parametrize("verb", ["PATCH", "PUT", "DELETE"])
def test_if_match_star_matches_an_existing_record_and_412_when_there_is_none(srv, verb):
    body = {"a": "star"} if verb != "DELETE" else None
    rid = new_item(srv)
    srv.http("PATCH", f"/v1/models/items/{rid}", json_body={"n": 3})  # version 2
    r = srv.http(verb, f"/v1/models/items/{rid}", json_body=body, headers={"If-Match": "*"})
    assert r.status_code == 200, r.text
    r = srv.http(verb, f"/v1/models/items/{uid()}", json_body=body, headers={"If-Match": "*"})
    problem(r, 412, "not_found")


def test_if_match_star_on_get(srv):
    rid = new_item(srv)
    assert get(srv, "items", rid, headers={"If-Match": "*"}).status_code == 200
    assert get(srv, "items", uid(), headers={"If-Match": "*"}).status_code == 412


@pytest.mark.parametrize("verb", ["PATCH", "PUT", "DELETE"])
def test_if_match_list_matches_when_any_tag_does(srv, verb):
    body = {"a": "list"} if verb != "DELETE" else None
    rid = new_item(srv)
    problem(srv.http(verb, f"/v1/models/items/{rid}", json_body=body, headers={"If-Match": '"5", "7"'}),
            412, "version_conflict")
    r = srv.http(verb, f"/v1/models/items/{rid}", json_body=body, headers={"If-Match": '"5","1" , "9"'})
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("value", ['W/"1"', 'W/"1", W/"2"', '"x"', '"x", W/"1"'])
def test_weak_or_foreign_entity_tags_never_match(srv, value):
    rid = new_item(srv)
    r = srv.http("PATCH", f"/v1/models/items/{rid}", json_body={"a": "x"}, headers={"If-Match": value})
    problem(r, 412, "version_conflict")
    assert get(srv, "items", rid, headers={"If-Match": value}).status_code == 412
    assert get(srv, "items", rid).json()["data"]["a"] == "a0"
    # a weak tag next to a matching strong one: the strong one matches
    r = srv.http("PATCH", f"/v1/models/items/{rid}", json_body={"a": "y"}, headers={"If-Match": value + ', "1"'})
    assert r.status_code == 200, r.text


def test_expected_versions_over_grpc(srv):
    rid = new_item(srv)
    with pytest.raises(grpc.RpcError) as e:
        srv.update("items", rid, {"a": "g"}, expected_versions=[4, 5])
    assert e.value.code() == grpc.StatusCode.ABORTED
    srv.update("items", rid, {"a": "g"}, expected_versions=[4, 1])
    assert srv.get_data("items", rid)["a"] == "g"
    h.expect_error(grpc.StatusCode.INVALID_ARGUMENT, srv.update, "items", rid, {"a": "z"},
                   expected_version=2, expected_versions=[2])
    h.expect_error(grpc.StatusCode.INVALID_ARGUMENT, srv.delete, "items", rid, expected_versions=list(range(17)))


def test_etag_follows_the_version_and_feeds_if_match(srv):
    rid = new_item(srv)
    etag = get(srv, "items", rid).headers["ETag"]
    r = srv.http("PATCH", f"/v1/models/items/{rid}", json_body={"n": 1},
                 headers={"If-Match": etag, "Prefer": "return=representation"})
    assert r.status_code == 200 and r.headers["ETag"] == '"2"'
    assert get(srv, "items", rid).headers["ETag"] == '"2"'


# ---- Prefer -------------------------------------------------------------------------------


def test_prefer_return_minimal_is_204_with_the_receipt_in_headers(srv):
    rid = new_item(srv)
    r = srv.http("PATCH", f"/v1/models/items/{rid}", json_body={"n": 9}, headers={"Prefer": "return=minimal"})
    assert r.status_code == 204 and r.content == b""
    assert r.headers["Preference-Applied"] == "return=minimal"
    assert int(r.headers["X-Sync-Id"]) > 0 and r.headers["X-Server-Tx-Id"].startswith("tx_")
    assert get(srv, "items", rid).json()["data"]["n"] == 9


def test_prefer_minimal_does_not_hide_errors(srv):
    r = srv.http("PATCH", "/v1/models/items/missing", json_body={"n": 1}, headers={"Prefer": "return=minimal"})
    problem(r, 404, "not_found")


# ---- stale policies ---------------------------------------------------------------------------


def test_stale_write_is_409_with_the_notification(srv):
    rid = new_item(srv)
    seen = get(srv, "items", rid).json()
    assert srv.http("PATCH", f"/v1/models/items/{rid}", json_body={"a": "theirs"}).status_code == 200
    r = srv.http("PATCH", f"/v1/models/items/{rid}?readAt={seen['readAt']}&onStale=REJECT", json_body={"a": "mine"})
    p = problem(r, 409, "stale_context", field="a")
    (n,) = p["receipt"]["notifications"]
    assert n["conflictingFields"] == ["a"] and n["currentValues"] == {"a": "theirs"}
    assert n["readAt"] == seen["readAt"]


def test_notify_holds_the_write_and_answers_200(srv):
    rid = new_item(srv)
    seen = get(srv, "items", rid).json()
    srv.http("PATCH", f"/v1/models/items/{rid}", json_body={"a": "theirs"})
    r = srv.http("PATCH", f"/v1/models/items/{rid}?readAt={seen['readAt']}&onStale=NOTIFY", json_body={"a": "mine"})
    assert r.status_code == 200, r.text
    rc = r.json()
    assert rc["status"] == "HELD" and rc.get("success", False) is False
    assert rc["notifications"][0]["conflictingFields"] == ["a"]


def test_overwrite_applies_the_stale_write(srv):
    rid = new_item(srv)
    seen = get(srv, "items", rid).json()
    srv.http("PATCH", f"/v1/models/items/{rid}", json_body={"a": "theirs"})
    r = srv.http("PATCH", f"/v1/models/items/{rid}?readAt={seen['readAt']}&onStale=OVERWRITE",
                 json_body={"a": "mine"})
    assert r.status_code == 200 and r.json()["status"] == "CONFIRMED"
    assert get(srv, "items", rid).json()["data"]["a"] == "mine"


def test_enum_by_unknown_name_is_400(srv):
    rid = new_item(srv)
    problem(srv.http("PATCH", f"/v1/models/items/{rid}?onStale=SOMETIMES", json_body={"a": "x"}), 400,
            "invalid_body", field="onStale")


# ---- claims ---------------------------------------------------------------------------------------


def test_claims_over_http(srv):
    rid = new_item(srv)
    r = srv.http("POST", f"/v1/models/items/{rid}:claim", json_body={"ttlSeconds": 30})
    assert r.status_code == 200, r.text
    claim = r.json()
    assert claim["model"] == "items" and claim["id"] == rid and claim["claimId"]
    problem(srv.http("POST", f"/v1/models/items/{rid}:claim", json_body={"ttlSeconds": 30}), 409, "claimed")
    problem(srv.http("PATCH", f"/v1/models/items/{rid}", json_body={"a": "x"}), 409, "claimed")
    r = srv.http("PATCH", f"/v1/models/items/{rid}?claim={claim['claimId']}", json_body={"a": "x"})
    assert r.status_code == 200, r.text
    r = srv.http("POST", f"/v1/models/items/{rid}:release", json_body={"claimId": claim["claimId"]})
    assert r.status_code == 200, r.text
    assert srv.http("PATCH", f"/v1/models/items/{rid}", json_body={"a": "y"}).status_code == 200


# ---- auth and tokens ------------------------------------------------------------------------------------


def test_missing_or_bad_credentials_are_401(srv):
    r = srv.http("GET", "/v1/schema", auth=None)
    problem(r, 401, "unauthenticated")
    assert r.headers["WWW-Authenticate"].startswith("Bearer")
    problem(srv.http("GET", "/v1/schema", auth="sk_live_nope"), 401, "unauthenticated")


def test_minted_token_works_and_its_limits_are_403_with_required_capability(srv):
    rid = new_item(srv)
    r = srv.http("POST", "/v1/tokens",
                 json_body={"caps": [{"can": ["read"], "model": "items", "group": "*"}], "ttlSeconds": 60})
    assert r.status_code == 200, r.text
    token = r.json()["token"]
    assert token.startswith("v4.public.")
    assert get(srv, "items", rid, auth=token).status_code == 200
    p = problem(srv.http("PATCH", f"/v1/models/items/{rid}", json_body={"a": "x"}, auth=token), 403,
                "permission_denied")
    assert p["requiredCapability"] == {"can": "update", "model": "items", "syncGroup": "default"}
    assert p["receipt"]["error"]["requiredCapability"]["can"] == "update"


def test_rate_limit_is_429_with_retry_after(server_factory):
    s = server_factory("--rate-limit", "1", "--rate-burst", "1", name="rl")
    codes = [s.http("GET", "/v1/schema") for _ in range(3)]
    limited = [r for r in codes if r.status_code == 429]
    assert limited, [r.status_code for r in codes]
    problem(limited[0], 429, "rate_limited")
    assert int(limited[0].headers["Retry-After"]) >= 1


# ---- bad input ------------------------------------------------------------------------------------------


def test_malformed_json_is_400(srv):
    r = srv.http("PUT", "/v1/schema", body=b'{"schema": ', headers={"Content-Type": "application/json"})
    p = problem(r, 400, "invalid_body")
    assert "line" in p["detail"]


def test_unknown_body_field_is_422_naming_it(srv):
    p = problem(srv.http("POST", "/v1/tokens", json_body={"caps": [], "bogus": 1}), 422, "unknown_field",
                field="bogus")
    assert p["errors"][0]["field"] == "bogus"


def test_wrong_content_type_is_415(srv):
    rid = new_item(srv)
    r = srv.http("PATCH", f"/v1/models/items/{rid}", body=b'{"a":"x"}', headers={"Content-Type": "text/plain"})
    problem(r, 415, "unsupported_media_type")
    r = srv.http("POST", "/v1/models/items", body=b'{"a":"x"}',
                 headers={"Content-Type": "application/merge-patch+json"})
    problem(r, 415, "unsupported_media_type")


def test_body_over_the_limit_is_413(srv):
    big = b'{"a":"' + b"x" * (4 << 20) + b'"}'
    problem(srv.http("POST", "/v1/models/items", body=big, headers={"Content-Type": "application/json"}), 413,
            "body_too_large")
    srv.assert_healthy()


def test_invalid_utf8_and_deep_nesting_are_400(srv):
    problem(srv.http("POST", "/v1/models/items", body=b'{"a":"\xff"}', headers={"Content-Type": "application/json"}),
            400, "invalid_body")
    deep = b'{"a":' + b"[" * 200 + b"]" * 200 + b"}"
    problem(srv.http("POST", "/v1/models/items", body=deep, headers={"Content-Type": "application/json"}), 400,
            "invalid_body")
    srv.assert_healthy()


# ---- idempotency -------------------------------------------------------------------------------------------


def test_idempotency_key_header_replays_the_same_receipt(srv):
    rid = new_item(srv)
    key = uid("k")
    hdr = {"Idempotency-Key": key}
    r1 = srv.http("PATCH", f"/v1/models/items/{rid}", json_body={"n": 3}, headers=hdr)
    r2 = srv.http("PATCH", f"/v1/models/items/{rid}", json_body={"n": 3}, headers=hdr)
    assert r1.status_code == r2.status_code == 200
    assert r1.content == r2.content
    assert "Idempotent-Replayed" not in r1.headers and r2.headers["Idempotent-Replayed"] == "true"
    assert get(srv, "items", rid).json()["version"] == "2"  # written once
    r3 = srv.http("PATCH", f"/v1/models/items/{rid}", json_body={"n": 4}, headers=hdr)
    problem(r3, 409, "idempotency_key_reused")


def test_grpc_and_http_with_the_same_key_and_request_get_the_same_receipt(srv):
    rid = new_item(srv)
    key = uid("k")
    rc = srv.call("UpdateRecord", R.UpdateRecordRequest(model="items", id=rid, data=h.struct({"b": "both"})),
                  metadata=[("idempotency-key", key)])
    r = srv.http("PATCH", f"/v1/models/items/{rid}", json_body={"b": "both"}, headers={"Idempotency-Key": key})
    assert r.status_code == 200 and r.headers["Idempotent-Replayed"] == "true"
    assert json_format.Parse(r.text, R.CommitReceipt()) == rc
    # and the other way round
    key2 = uid("k")
    r = srv.http("PATCH", f"/v1/models/items/{rid}", json_body={"a": "http"}, headers={"Idempotency-Key": key2})
    rc2 = srv.call("UpdateRecord", R.UpdateRecordRequest(model="items", id=rid, data=h.struct({"a": "http"})),
                   metadata=[("idempotency-key", key2)])
    assert json_format.Parse(r.text, R.CommitReceipt()) == rc2


def test_stored_rejection_replays_with_the_same_problem(srv):
    rid = new_item(srv)
    key = uid("k")
    hdr = {"Idempotency-Key": key, "If-Match": '"9"'}
    r1 = srv.http("PATCH", f"/v1/models/items/{rid}", json_body={"n": 1}, headers=hdr)
    r2 = srv.http("PATCH", f"/v1/models/items/{rid}", json_body={"n": 1}, headers=hdr)
    p1, p2 = problem(r1, 412, "version_conflict"), problem(r2, 412, "version_conflict")
    assert p1["receipt"] == p2["receipt"] and r2.headers["Idempotent-Replayed"] == "true"


# ---- Server-Sent Events -------------------------------------------------------------------------------------


class SSE:
    """Reads events from a streaming GET /v1/changes in a thread."""

    def __init__(self, srv, path="/v1/changes", headers=None):
        self.resp = srv.http("GET", path, headers=headers, stream=True, timeout=30)
        self.events, self.comments = [], 0
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        ev = {}
        try:
            for line in self.resp.iter_lines(decode_unicode=True):
                if line == "":
                    if ev:
                        with self.lock:
                            self.events.append(ev)
                    ev = {}
                elif line.startswith(":"):
                    with self.lock:
                        self.comments += 1
                else:
                    k, _, v = line.partition(":")
                    ev[k] = v[1:] if v.startswith(" ") else v
        except (requests.exceptions.ConnectionError, requests.exceptions.ChunkedEncodingError, AttributeError):
            pass

    def wait(self, n, timeout=10):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.events) >= n:
                    return list(self.events)
            time.sleep(0.02)
        raise AssertionError(f"got {len(self.events)} events, wanted {n}: {self.events}")

    def close(self):
        self.resp.close()


def test_change_feed_as_sse_with_resume_by_last_event_id(srv):
    model_filter = "models=items"
    rid = new_item(srv)
    head = int(get(srv, "items", rid).json()["syncId"])
    feed = SSE(srv, f"/v1/changes?{model_filter}&sinceSyncId={head - 1}")
    try:
        assert feed.resp.status_code == 200
        assert feed.resp.headers["Content-Type"] == "text/event-stream"
        (first,) = feed.wait(1)
        assert first["id"] == str(head)
        ev = json.loads(first["data"])
        assert ev["op"] == "CREATE" and ev["id"] == rid and ev["syncId"] == str(head)
        # live
        srv.update("items", rid, {"a": "live"})
        second = feed.wait(2)[1]
        assert json.loads(second["data"])["op"] == "UPDATE" and int(second["id"]) > head
    finally:
        feed.close()
    # resume after the first event: only the update comes again
    again = SSE(srv, f"/v1/changes?{model_filter}", headers={"Last-Event-ID": str(head)})
    try:
        (ev,) = again.wait(1)
        assert ev["id"] == second["id"]
    finally:
        again.close()


def test_sse_sends_keep_alive_comments(srv):
    feed = SSE(srv, "/v1/changes?models=nothing-here")
    try:
        deadline = time.monotonic() + 10
        while feed.comments < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert feed.comments >= 2  # the opening comment and at least one keep-alive
    finally:
        feed.close()


def open_http_streams(srv):
    for line in srv.http("GET", "/metrics", auth=None).text.splitlines():
        if line.startswith('recordd_open_streams{transport="http"}'):
            return int(line.split()[-1])
    raise AssertionError("no open-streams gauge")


def test_client_disconnect_ends_the_stream(srv):
    before = open_http_streams(srv)
    feed = SSE(srv, "/v1/changes?models=nothing-here")
    deadline = time.monotonic() + 5
    while open_http_streams(srv) <= before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert open_http_streams(srv) == before + 1
    feed.close()
    deadline = time.monotonic() + 10  # noticed at the next keep-alive (1 s here)
    while open_http_streams(srv) > before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert open_http_streams(srv) == before


def test_sse_errors_before_the_stream_are_problems(srv):
    problem(srv.http("GET", "/v1/changes?sinceSyncId=-1"), 422, "validation_failed", field="sinceSyncId")
    problem(srv.http("GET", "/v1/changes", auth=None), 401, "unauthenticated")
    problem(srv.http("GET", "/v1/changes", headers={"Last-Event-ID": "abc"}), 400, "invalid_body")


def test_shutdown_ends_the_stream_with_an_error_event(server_factory):
    s = server_factory(name="sse-stop")
    feed = SSE(s, "/v1/changes")
    time.sleep(0.3)
    s.stop()
    feed.thread.join(10)
    assert not feed.thread.is_alive()
    errors = [e for e in feed.events if e.get("event") == "error"]
    assert errors, feed.events
    p = json.loads(errors[0]["data"])
    assert p["code"] == "unavailable" and p["status"] == 503


def test_readyz_is_503_once_stopping_begins(server_factory):
    s = server_factory(name="ready")
    url = s.http_url
    assert requests.get(url + "/readyz", timeout=5).status_code == 200
    # the harness's open gRPC channel keeps the server lingering in its stop
    # for up to a second, while the HTTP listener still answers
    s.proc.send_signal(2)  # SIGINT: as SIGTERM
    codes = []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and 503 not in codes:
        try:
            codes.append(requests.get(url + "/readyz", timeout=2).status_code)
        except requests.exceptions.ConnectionError:
            break
        time.sleep(0.005)
    assert s.proc.wait(30) == 0
    s.proc = None
    assert 503 in codes, codes


# ---- BulkMutate: 200 / 207 / 422 -------------------------------------------------------------------------------


def bulk_ops(good_id, existing_id):
    """A good create and a create of an id that exists (duplicate_record)."""
    return [{"create": {"model": "items", "id": good_id, "data": {"a": "bulk"}}},
            {"create": {"model": "items", "id": existing_id, "data": {"a": "x"}}}]


def test_bulk_all_succeeded_is_200(srv):
    ids = [uid(), uid()]
    r = srv.http("POST", "/v1/commits", json_body={"operations": [
        {"create": {"model": "items", "id": i, "data": {"n": k}}} for k, i in enumerate(ids)]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["totalSucceeded"] == 2 and body.get("totalFailed", 0) == 0
    assert body["receipt"]["status"] == "CONFIRMED"
    assert get(srv, "items", ids[1]).json()["data"] == {"n": 1}


def test_bulk_best_effort_with_failures_is_207(srv):
    good = uid()
    r = srv.http("POST", "/v1/commits", json_body={"operations": bulk_ops(good, new_item(srv)),
                                                   "transactionMode": "BEST_EFFORT"})
    assert r.status_code == 207, r.text
    body = r.json()
    assert body["totalFailed"] == 1 and body["totalSucceeded"] == 1
    assert [x.get("index", 0) for x in body["results"]] == [0, 1]
    assert get(srv, "items", good).status_code == 200


def test_bulk_all_or_nothing_rolled_back_is_422_with_the_result(srv):
    good = uid()
    r = srv.http("POST", "/v1/commits", json_body={"operations": bulk_ops(good, new_item(srv)),
                                                   "transactionMode": "ALL_OR_NOTHING"})
    p = problem(r, 422, "duplicate_record")
    assert p["result"]["totalFailed"] == 1 and p["receipt"]["status"] == "REJECTED"
    problem(get(srv, "items", good), 404, "not_found")  # rolled back


def test_sse_deadline_from_grpc_timeout_ends_the_stream(srv):
    feed = SSE(srv, "/v1/changes?models=nothing-here", headers={"Grpc-Timeout": "500m"})
    feed.thread.join(10)
    assert not feed.thread.is_alive()
    (err,) = [e for e in feed.events if e.get("event") == "error"]
    p = json.loads(err["data"])
    assert p["code"] == "deadline_exceeded" and p["status"] == 504


def test_malformed_grpc_timeout_is_400(srv):
    problem(srv.http("GET", "/v1/schema", headers={"Grpc-Timeout": "soon"}), 400, "invalid_body",
            field="Grpc-Timeout")


def test_ids_with_reserved_characters_travel_percent_encoded(srv):
    rid = "a:b.c~" + uid()
    r = srv.http("POST", "/v1/models/items", params={"id": rid}, json_body={"a": "odd"})
    assert r.status_code == 201, r.text
    enc = requests.utils.quote(rid, safe="")
    assert r.headers["Location"] == f"/v1/models/items/{enc}"
    g = srv.http("GET", r.headers["Location"])
    assert g.status_code == 200 and g.json()["id"] == rid
    # a raw ':' in the last segment starts a custom verb, which this route has not
    problem(srv.http("GET", f"/v1/models/items/{rid}"), 404, "not_found")


def test_keep_alive_connection_serves_several_requests(srv):
    with requests.Session() as s:
        hdr = {"Authorization": f"Bearer {srv.admin_key}"}
        for _ in range(3):
            r = s.get(srv.http_url + "/v1/schema", headers=hdr, timeout=10)
            assert r.status_code == 200 and r.headers.get("Connection", "").lower() != "close"


def test_bulk_replay_carries_idempotent_replayed(srv):
    body = {"operations": [{"create": {"model": "items", "id": uid(), "data": {"a": "once"}}}]}
    hdrs = {"Idempotency-Key": "bulk-" + uid()}
    r1 = srv.http("POST", "/v1/commits", json_body=body, headers=hdrs)
    r2 = srv.http("POST", "/v1/commits", json_body=body, headers=hdrs)
    assert r1.status_code == 200 and r2.status_code == 200, (r1.text, r2.text)
    assert "Idempotent-Replayed" not in r1.headers and r2.headers["Idempotent-Replayed"] == "true"
    assert r1.json() == r2.json()


def test_replies_over_a_megabyte_are_rendered(srv):
    # a reply is decoded before it is rendered; its size is bounded by the
    # server's message limit (4 MiB), not by the gateway's per-request strings
    big = "x" * (1536 * 1024)
    rid = new_item(srv, a=big)
    r = get(srv, "items", rid)
    assert r.status_code == 200, r.text[:300]
    assert r.json()["data"]["a"] == big
    r = srv.http("GET", "/v1/models/items", params={"filter": f'id = "{rid}"'})
    assert r.status_code == 200, r.text[:300]
    assert [x["data"]["a"] for x in r.json()["records"]] == [big]


@pytest.mark.parametrize("query", ["pageSize=1&pageSize=3", "pageSize=1&page_size=3",
                                   "filter=n%20%3D%201&filter=n%20%3D%202"])
def test_a_scalar_query_parameter_given_twice_is_400(srv, query):
    # which one should win is ambiguous (as for duplicate JSON members)
    problem(srv.http("GET", f"/v1/models/items?{query}"), 400, "invalid_body", field=query.split("&")[1].split("=")[0])


def test_a_repeated_query_parameter_may_be_given_twice(srv):
    feed = SSE(srv, "/v1/changes?models=items&models=students")
    assert feed.resp.status_code == 200, feed.resp.text
    feed.close()


def test_feed_clients_that_leave_mid_stream_do_not_crash_the_server(server_factory):
    # a client gone while its events are being sent: the feed finishes the
    # stream (the send fails) and is told the call ended; the two must not
    # touch the finished call
    import socket

    s = server_factory(name="sse-leave")
    s.push_schema([ITEMS])
    for i in range(40):
        s.create("items", {"a": f"x{i}"})
    port = int(s.http_url.rsplit(":", 1)[1])
    req = f"GET /v1/changes HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {s.admin_key}\r\n\r\n".encode()

    def leave(i):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
                c.sendall(req)
                if i % 2:
                    c.recv(64)
        except OSError:
            pass  # the server is gone: the assertion below says so

    for _ in range(3):
        threads = [threading.Thread(target=leave, args=(i,)) for i in range(40)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    time.sleep(1)
    assert s.alive(), s.log_tail()
    assert s.http("GET", "/healthz", auth=None).status_code == 200


@pytest.mark.parametrize("verb", ["DELETE", "GET"])
def test_a_body_on_a_route_without_one_is_400_and_changes_nothing(srv, verb):
    # DELETE takes its guards as query parameters or If-Match: a body would
    # be ignored, and the delete would run unguarded
    rid = new_item(srv)
    r = srv.http(verb, f"/v1/models/items/{rid}", json_body={"expectedVersion": "7"})
    problem(r, 400, "invalid_body")
    assert get(srv, "items", rid).json()["version"] == "1"


@pytest.mark.parametrize("n", [800_000, 1_000_000])
def test_a_body_that_decodes_beyond_the_message_limit_is_413_and_writes_nothing(srv, n):
    # under 4 MiB of JSON, but [0, 0, ...] takes ~11 bytes a value as protobuf:
    # no gRPC client could send it, nor read it back (GetRecord, the change
    # feed), so HTTP refuses it too instead of storing it (or running out of
    # memory decoding it: 500)
    rid = uid()
    body = json.dumps({"a": "big", "b": [0] * n}, separators=(",", ":")).encode()
    assert len(body) < 4 * 1024 * 1024
    r = srv.http("POST", f"/v1/models/items?id={rid}", body=body, headers={"Content-Type": "application/json"})
    problem(r, 413, "body_too_large")
    problem(get(srv, "items", rid), 404, "not_found")


def test_a_cursor_older_than_the_log_is_410_sync_id_expired(server_factory):
    # gRPC: FAILED_PRECONDITION; the code comes from the one table, so HTTP
    # renders it as itself (it was taken for destructive_change, 409)
    s = server_factory(name="sse-retention")
    s.push_schema([ITEMS])
    for i in range(5):
        s.create("items", {"a": str(i)})
    s.sql_write("DELETE FROM _rd_sync_log WHERE sync_id <= 3")  # what a pruner would do
    p = problem(s.http("GET", "/v1/changes?sinceSyncId=1"), 410, "sync_id_expired", field="sinceSyncId")
    assert "oldest available sync id is 4" in p["detail"]


@pytest.mark.parametrize("method,path,body", [
    ("POST", "/v1/models/items:claim", {"ttlSeconds": 5}),
    ("POST", "/v1/commits", {"operations": [{"delete": {"model": "items", "id": "nope"}}]}),
    ("POST", "/v1/models/items", {"a": "x"}),
])
def test_if_match_on_a_route_without_versions_is_400_and_runs_nothing(srv, method, path, body):
    # the condition cannot be evaluated there; ignoring it would run the
    # method unconditionally
    rid = new_item(srv)
    path = path.replace("items:claim", f"items/{rid}:claim")
    head = srv.create("items", {"a": "marker"}).last_sync_id
    r = srv.http(method, path, json_body=body, headers={"If-Match": '"1"'})
    problem(r, 400, "invalid_body", field="If-Match")
    assert srv.create("items", {"a": "marker"}).last_sync_id == head + 1  # nothing was written
    r = srv.http("POST", f"/v1/models/items/{rid}:claim", json_body={"ttlSeconds": 5})
    assert r.status_code == 200, r.text  # and nothing was claimed


def http_count(srv, route, code):
    prefix = f'recordd_http_requests_total{{route="{route}",code="{code}"}} '
    for line in srv.http("GET", "/metrics", auth=None).text.splitlines():
        if line.startswith(prefix):
            return int(float(line.split()[-1]))
    return 0


def test_a_client_that_leaves_before_the_answer_is_not_counted_as_a_500(server_factory):
    # the server did nothing wrong: a request abandoned mid-body is counted
    # (and logged) as 499, so 5xx rates keep meaning server errors
    import socket

    s = server_factory(name="leave-early")
    before = http_count(s, "other", 500), http_count(s, "other", 499)
    port = int(s.http_url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        c.sendall(f"POST /v1/commits HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {s.admin_key}\r\n"
                  "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"operations\"".encode())
        time.sleep(0.3)
    deadline = time.monotonic() + 10
    while http_count(s, "other", 499) == before[1] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert (http_count(s, "other", 500), http_count(s, "other", 499)) == (before[0], before[1] + 1)
