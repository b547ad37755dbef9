"""Operating recordd (DESIGN.md §9; issue 7 items 2, 3 and the backup of
item 7): JSON log lines on stderr, --log-level, the Kubernetes probe names
of grpc.health.v1, reflection of every service, and an online backup while
writers run."""

import datetime
import json
import os
import signal
import socket
import subprocess
import sqlite3
import threading
import time

import grpc
import pytest

import harness as h
from test_buf_cli import buf  # noqa: F401  (the buf fixture)
from test_ops import build_pool, reflect

SERVING = 1
THING = {"name": "things", "fields": [{"name": "n", "type": "INTEGER"}]}


def log_lines(srv):
    """Every stderr line of the current run, parsed: each must be a JSON object."""
    out = []
    for line in srv.log_path.read_text().splitlines():
        obj = json.loads(line)  # a non-JSON line fails the test
        assert isinstance(obj, dict), line
        out.append(obj)
    return out


def requests_logged(srv, **match):
    return [o for o in log_lines(srv) if o.get("msg") == "request" and all(o.get(k) == v for k, v in match.items())]


def wait_logged(srv, timeout=5.0, **match):
    end = time.monotonic() + timeout
    while True:
        found = requests_logged(srv, **match)
        if found or time.monotonic() > end:
            return found
        time.sleep(0.02)


# ---- logs ----------------------------------------------------------------------------


def test_every_stderr_line_is_json_with_an_rfc3339_time(server):
    server.push_schema([THING])
    server.create("things", {"n": 1}, id="a")
    server.stop()
    lines = log_lines(server)
    msgs = [o["msg"] for o in lines]
    assert msgs[0] == "listening" and msgs[-2:] == ["stopping", "stopped"], msgs
    for o in lines:
        t = datetime.datetime.fromisoformat(o["time"].replace("Z", "+00:00"))
        assert t.tzinfo is not None and o["time"].endswith("Z"), o
        assert o["level"] in ("debug", "info", "warn", "error"), o
    assert lines[-1]["exit_code"] == 0


def test_a_write_logs_method_code_duration_principal_tx_id_and_request_id(server):
    server.push_schema([THING])
    key = server.create_key(caps=[{"can": ["read", "create"], "model": "*", "group": "*"}])
    receipt = server.as_(key["key"]).call(
        "CreateRecord",
        h.pb.records.CreateRecordRequest(model="things", id="w1", data=h.struct({"n": 1})),
        metadata=[("x-request-id", "req-from-client-42")],
    )
    (line,) = wait_logged(server, request_id="req-from-client-42")
    assert line["level"] == "info"
    assert line["transport"] == "grpc"
    assert line["method"] == "/recordd.v1.Records/CreateRecord"
    assert line["code"] == "ok" and line["grpc_code"] == 0
    assert isinstance(line["duration_ms"], (int, float)) and 0 <= line["duration_ms"] < 30000
    assert line["principal_id"] == key["key_id"]
    assert line["server_tx_id"] == receipt.server_tx_id


def test_a_failed_call_logs_its_error_code_and_a_generated_request_id(server):
    server.push_schema([THING])
    h.expect_error(grpc.StatusCode.NOT_FOUND, server.get, "things", "nope")
    (line,) = wait_logged(server, method="/recordd.v1.Records/GetRecord")
    assert line["code"] == "not_found" and line["grpc_code"] == 5
    assert line["request_id"].startswith("req_") and len(line["request_id"]) > 10
    assert "server_tx_id" not in line


def test_an_unauthenticated_call_is_logged_without_a_principal(server):
    h.expect_error(grpc.StatusCode.UNAUTHENTICATED, server.call, "GetSchema", h.pb.schema.GetSchemaRequest(),
                   auth=None)
    (line,) = wait_logged(server, method="/recordd.v1.Schemas/GetSchema")
    assert line["code"] == "unauthenticated" and line["grpc_code"] == 16
    assert "principal_id" not in line


def test_unknown_methods_and_bad_request_ids_are_logged_safely(server):
    with pytest.raises(grpc.RpcError) as ei:
        server.channel.unary_unary("/no.such.Service/Method")(b"", timeout=h.CALL_TIMEOUT,
                                                                metadata=[("x-request-id", "has space")])
    assert ei.value.code() == grpc.StatusCode.UNIMPLEMENTED
    (line,) = wait_logged(server, method="/no.such.Service/Method")
    assert line["code"] == "unimplemented" and line["grpc_code"] == 12
    assert line["request_id"].startswith("req_")  # the unusable one was replaced


def test_no_credential_ever_reaches_the_log(server):
    server.push_schema([THING])
    key = server.create_key()
    token = server.call("MintToken", h.pb.tokens.MintTokenRequest(
        caps=[h.pb.tokens.Capability(can=["read", "create"], model="*", group="*")])).token
    server.as_(key["key"]).create("things", {"n": 1}, id="k1")
    server.as_(token).get("things", "k1")
    h.expect_error(grpc.StatusCode.UNAUTHENTICATED, server.as_(key["key"] + "x").get, "things", "k1")
    h.expect_error(grpc.StatusCode.UNAUTHENTICATED, server.as_(token[:-3]).get, "things", "k1")
    assert wait_logged(server, principal_id=key["key_id"])
    server.stop()
    text = server.log_path.read_text()
    for secret in (key["key"], token, server.admin_key, token[:-3], token.split(".")[-1][:24]):
        assert secret not in text
    assert "authorization" not in text.lower()


def test_an_http_request_logs_route_status_principal_tx_id_and_request_id(server):
    server.push_schema([THING])
    key = server.create_key(caps=[{"can": ["read", "create"], "model": "*", "group": "*"}])
    r = server.as_(key["key"]).http("POST", "/v1/models/things", params={"id": "h1"}, json_body={"n": 1},
                                     headers={"X-Request-Id": "req-http-7"})
    assert r.status_code == 201, r.text
    (line,) = wait_logged(server, request_id="req-http-7")
    assert line["transport"] == "http" and line["method"] == "POST /v1/models/{model}"
    assert line["code"] == "ok" and line["http_status"] == 201 and line["grpc_code"] == 0
    assert line["principal_id"] == key["key_id"]
    assert line["server_tx_id"] == r.json()["serverTxId"]


def test_http_failures_are_logged_with_their_code_and_no_credential(server):
    server.push_schema([THING])
    key = server.create_key()
    r = server.as_(key["key"]).http("GET", "/v1/models/things/nope", headers={"X-Request-Id": "req-http-404"})
    assert r.status_code == 404
    r = server.http("GET", "/v1/nowhere", headers={"X-Request-Id": "req-http-route"})
    assert r.status_code == 404
    r = server.as_(key["key"] + "x").http("GET", "/v1/schema", headers={"X-Request-Id": "req-http-401"})
    assert r.status_code == 401
    (missing,) = wait_logged(server, request_id="req-http-404")
    assert missing["code"] == "not_found" and missing["http_status"] == 404
    assert missing["principal_id"] == key["key_id"]
    (route,) = wait_logged(server, request_id="req-http-route")
    assert route["code"] == "not_found" and route["method"] == "other" and "principal_id" not in route
    (unauth,) = wait_logged(server, request_id="req-http-401")
    assert unauth["code"] == "unauthenticated" and unauth["http_status"] == 401
    server.stop()
    assert key["key"] not in server.log_path.read_text()


def test_log_level_warn_drops_request_lines_and_bad_levels_are_refused(tmp_path):
    srv = h.Server(tmp_path / "warn")
    srv.init()
    port = free_port()
    err = tmp_path / "stderr.log"
    with open(err, "wb") as f:
        proc = subprocess.Popen(
            [str(h.BIN), "--grpc-listen", f"127.0.0.1:{port}", "--http-listen", "127.0.0.1:0", "--db",
             srv.db, "--pepper-file",
             str(srv.var / "pepper"), "--signing-key", str(srv.var / "signing.key"), "--trusted-keys",
             str(srv.var / "trusted-keys")],
            stdout=f, stderr=f, env=h.child_env({**os.environ, "RECORDD_LOG_LEVEL": "warn"}))
    try:
        ch = grpc.insecure_channel(f"127.0.0.1:{port}")
        check = ch.unary_unary("/grpc.health.v1.Health/Check", request_serializer=lambda m: m.SerializeToString(),
                               response_deserializer=h.pb.health.HealthCheckResponse.FromString)
        assert check(h.pb.health.HealthCheckRequest(), timeout=30, wait_for_ready=True).status == SERVING
        schema = ch.unary_unary("/recordd.v1.Schemas/GetSchema", request_serializer=lambda m: m.SerializeToString(),
                                response_deserializer=h.pb.schema.Schema.FromString)
        schema(h.pb.schema.GetSchemaRequest(), timeout=30, metadata=h.bearer(srv.admin_key))
        ch.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(30)
    assert rc == 0
    assert err.read_text() == ""  # listening/stopping/stopped and requests are all info

    res = subprocess.run([str(h.BIN), "--log-level", "loud"], capture_output=True, text=True, timeout=30)
    assert res.returncode == 2 and "--log-level" in res.stderr


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def list_by_reflection(srv):
    """One reflection stream: list the services."""
    call = srv.channel.stream_stream("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
                                     request_serializer=lambda m: m.SerializeToString(),
                                     response_deserializer=lambda b: b)
    req = h.pb.refl_v1.ServerReflectionRequest(list_services="*")
    assert list(call(iter([req]), timeout=10))


REFLECTION = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"


def test_debug_level_logs_health_probes_and_reflection_info_does_not(server_factory):
    quiet = server_factory()
    quiet.health("")
    list_by_reflection(quiet)
    loud = server_factory("--log-level", "debug", name="loud")
    loud.health("readiness")
    list_by_reflection(loud)
    assert wait_logged(loud, method="/grpc.health.v1.Health/Check", level="debug")
    assert wait_logged(loud, method=REFLECTION, level="debug")
    quiet.get_schema()
    assert wait_logged(quiet, method="/recordd.v1.Schemas/GetSchema", level="info")
    assert requests_logged(quiet, method="/grpc.health.v1.Health/Check") == []
    assert requests_logged(quiet, method=REFLECTION) == []


# ---- health ----------------------------------------------------------------------------


@pytest.mark.parametrize("service", ["", "liveness", "readiness", "recordd.v1.Records", "recordd.v1.Schemas",
                                     "recordd.v1.Claims", "recordd.v1.Tokens", "grpc.health.v1.Health",
                                     "grpc.reflection.v1.ServerReflection",
                                     "grpc.reflection.v1alpha.ServerReflection"])
def test_health_check_answers_probe_names_and_every_service(school, service):
    assert school.health(service) == SERVING


def test_health_check_needs_no_credential(school):
    resp = school.call("Check", h.pb.health.HealthCheckRequest(service="readiness"), auth=None)
    assert resp.status == SERVING


# ---- reflection --------------------------------------------------------------------------


ALL_SERVICES = {"recordd.v1.Records", "recordd.v1.Schemas", "recordd.v1.Claims", "recordd.v1.Tokens",
                "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection",
                "grpc.reflection.v1alpha.ServerReflection"}


@pytest.mark.parametrize("version", ["v1", "v1alpha"])
def test_reflection_describes_every_service_including_health_and_itself(school, version):
    (resp,) = reflect(school, version, [{"list_services": ""}])
    names = {s.name for s in resp.list_services_response.service}
    assert names == ALL_SERVICES
    for name in sorted(ALL_SERVICES):
        (resp,) = reflect(school, version, [{"file_containing_symbol": name}])
        assert resp.WhichOneof("message_response") == "file_descriptor_response", (name, resp)
        pool = build_pool(resp.file_descriptor_response.file_descriptor_proto)
        svc = pool.FindServiceByName(name)
        assert svc.methods, name


# ---- backup ------------------------------------------------------------------------------


@pytest.mark.sqlite_only("`recordctl backup` is SQLite's online backup into a file, checked with the sqlite3 "
                         "module and served again by copying the file")
def test_online_backup_while_writers_run(server_factory, tmp_path):
    srv = server_factory()
    srv.push_schema([THING])
    confirmed, stop, errors = [], threading.Event(), []

    def writer(i):
        ch = grpc.insecure_channel(srv.address, options=h.CHANNEL_OPTIONS)
        create = ch.unary_unary(h.rpc_path("CreateRecord"), request_serializer=lambda m: m.SerializeToString(),
                                response_deserializer=h.pb.records.CommitReceipt.FromString)
        n = 0
        try:
            while not stop.is_set():
                rid = f"b{i}-{n}"
                n += 1
                create(h.pb.records.CreateRecordRequest(model="things", id=rid, data=h.struct({"n": n})),
                       timeout=h.CALL_TIMEOUT)
                confirmed.append((time.monotonic(), rid))
        except Exception as e:  # noqa: BLE001
            errors.append(e)
        finally:
            ch.close()

    threads = [threading.Thread(target=writer, args=(i,), daemon=True) for i in range(4)]
    for t in threads:
        t.start()
    while len(confirmed) < 100:
        assert not errors, errors
        time.sleep(0.01)
    started = time.monotonic()
    before = [rid for t, rid in list(confirmed) if t < started]
    out = tmp_path / "backup.db"
    res = srv.ctl("backup", "--out", str(out), "--json")
    info = json.loads(res.stdout)
    assert info["pages"] > 0
    stop.set()
    for t in threads:
        t.join(30)
    assert not errors, errors
    assert len(confirmed) > len(before), "the writers did not keep writing during the backup"

    db = sqlite3.connect(f"file:{out}?mode=ro", uri=True)
    try:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        db.close()
    # the backup serves: a server on a copy finds every write confirmed before it
    copy = h.Server(tmp_path / "restored")
    copy.var = srv.var
    copy.db_path.write_bytes(out.read_bytes())
    copy.start()
    try:
        for rid in before:
            assert copy.get("things", rid).id == rid
    finally:
        problem = copy.kill()
    assert problem is None, problem

    # never overwrites
    again = srv.ctl("backup", "--out", str(out), check=False)
    assert again.returncode != 0 and "exists" in again.stderr


def test_an_overlong_request_id_is_replaced(server):
    long_id = "x" * 129
    server.call("GetSchema", h.pb.schema.GetSchemaRequest(), metadata=[("x-request-id", long_id)])
    (line,) = wait_logged(server, method="/recordd.v1.Schemas/GetSchema")
    assert line["request_id"].startswith("req_")
    assert long_id not in server.log_path.read_text()


# ---- the README, in order --------------------------------------------------------------


def test_readme_grpc_examples_work_in_the_order_written(buf, server_factory):
    """Every `grpcurl … -d '<json>' 127.0.0.1:50051 method` of the README, from
    the walkthrough to the end, through buf curl against one server, in
    order: each answers as the README says (the streaming Watch calls are
    left out; the worked example's UpdateRecords carry its minted token)."""
    from test_bulk import readme_calls
    from test_buf_cli import BASE_FLAGS

    s = server_factory()
    admin = f"authorization: Bearer {s.admin_key}"
    token = None
    # the calls the README shows failing, with their code
    expected_failures = {
        ("recordd.v1.Records/BulkMutate", '"id":"s4"'): "already_exists",
        ("recordd.v1.Records/UpdateRecord", '"firstName":"Eve"'): "permission_denied",
        ("recordd.v1.Records/UpdateRecord", '"city":"paris"'): "invalid_argument",
    }
    calls = readme_calls("## Five-minute walkthrough", "## HTTP/JSON") + readme_calls("## Keys, tokens")
    calls = [(m, b) for m, b in calls if not m.endswith("/Watch") and not m.endswith("/WatchChanges")]
    assert len(calls) >= 15, calls
    for method, body in calls:
        auth = admin
        if token is not None and method == "recordd.v1.Records/UpdateRecord" and '"id":"s3"' in body and \
                ("Eve" in body or '"age":42' in body):
            auth = f"authorization: Bearer {token}"  # the worked example
        res = buf("curl", *BASE_FLAGS, "-H", auth, "-d", body, f"http://{s.address}/{method}", check=False)
        want = next((code for (m, frag), code in expected_failures.items() if m == method and frag in body), None)
        if want is None:
            assert res.returncode == 0, (method, body, res.stderr)
        else:
            assert res.returncode != 0 and json.loads(res.stderr)["code"] == want, (method, body, res.stderr)
        if method == "recordd.v1.Tokens/MintToken":
            token = json.loads(res.stdout)["token"]
    assert token is not None, "the worked example's MintToken was not found"


def test_make_install_puts_recordd_and_recordctl_in_prefix_bin(tmp_path):
    """`make install PREFIX=…` installs both binaries, which then run."""
    import os
    import subprocess

    build = os.environ.get("RECORDD_BUILD", str(h.REPO / "build"))
    res = subprocess.run(["make", "-s", "-C", str(h.REPO), "install", f"PREFIX={tmp_path}", f"BUILD={build}",
                          "-o", f"{build}/recordd", "-o", f"{build}/recordctl"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    for name in ("recordd", "recordctl"):
        exe = tmp_path / "bin" / name
        assert exe.is_file() and os.access(exe, os.X_OK), name
    out = subprocess.run([str(tmp_path / "bin" / "recordd"), "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip()
    out = subprocess.run([str(tmp_path / "bin" / "recordctl"), "errors", "not_found"], capture_output=True,
                         text=True)
    assert out.returncode == 0 and out.stdout.startswith("## not_found")


def test_recordctl_schema_get_and_push_a_file(server, tmp_path):
    """`recordctl schema get|push FILE`: the schema as a file (GitOps); the
    revision the file carries guards against a concurrent edit."""
    import json
    import subprocess

    key = tmp_path / "admin.key"
    key.write_text(server.admin_key + "\n")

    def ctl(*args):
        return subprocess.run([str(h.RECORDCTL), "schema", *args, "--addr", server.address,
                               "--key-file", str(key)], capture_output=True, text=True, timeout=30)

    got = ctl("get")
    assert got.returncode == 0, got.stderr
    assert json.loads(got.stdout).get("revision", "0") == "0"
    doc = tmp_path / "schema.json"
    doc.write_text(json.dumps({"models": [h.STUDENTS]}))
    pushed = ctl("push", str(doc))
    assert pushed.returncode == 0, pushed.stderr
    assert "create model students" in pushed.stderr
    now = json.loads(ctl("get").stdout)
    assert now["revision"] == "1" and now["models"][0]["name"] == "students"
    doc.write_text(json.dumps(now))  # carries revision 1
    server.push_schema([h.STUDENTS, h.ENROLLMENTS])  # someone else: revision 2
    stale = ctl("push", str(doc))
    assert stale.returncode == 1 and "revision 2" in stale.stderr, stale.stderr
    doc.write_text(json.dumps({"models": [{"name": "rooms", "fields": [{"name": "no", "type": "INTEGER"}]}]}))
    merged = ctl("push", str(doc), "--merge")
    assert merged.returncode == 0, merged.stderr
    assert sorted(m["name"] for m in json.loads(merged.stdout)["models"]) == ["enrollments", "rooms", "students"]
