"""A grpcurl-style session with the buf CLI: no .proto files, no schema flag,
everything through server reflection (DESIGN.md §1 "people debugging it with
grpcurl", §9).

buf comes from npm (tests/node/package.json, installed into build/node by
make node-deps or here). The tests skip only when npm itself is missing; a
failed install is a failure.
"""

import json
import os
import subprocess

import pytest

import harness as h

BUF = h.NODE_DIR / "node_modules" / ".bin" / "buf"
BASE_FLAGS = ["--protocol", "grpc", "--http2-prior-knowledge", "--timeout", "60s"]


@pytest.fixture(scope="module")
def buf(tmp_path_factory):
    h.node_tools(".bin/buf")
    env = dict(os.environ)
    env["BUF_CACHE_DIR"] = str(tmp_path_factory.mktemp("bufcache"))
    env.setdefault("HOME", str(tmp_path_factory.mktemp("home")))
    env["NO_COLOR"] = "1"

    def run(*args, check=True):
        try:
            res = subprocess.run([str(BUF), *args], capture_output=True, text=True, env=env, timeout=120)
        except OSError as e:
            st = BUF.resolve().stat() if BUF.exists() else None
            pytest.fail(f"cannot run {BUF} (-> {BUF.resolve()}, mode {oct(st.st_mode) if st else 'missing'}): {e!r}")
        if check:
            assert res.returncode == 0, f"buf {' '.join(args)} exited {res.returncode}:\n{res.stdout}\n{res.stderr}"
        return res

    return run


@pytest.fixture(scope="module")
def bare(tmp_path_factory):
    """A server with an empty database: the buf session pushes the schema."""
    srv = h.Server(tmp_path_factory.mktemp("buf") / "recordd")
    srv.start()
    yield srv
    problem = srv.kill()
    if problem:
        pytest.fail(problem, pytrace=False)


def url(srv, path=""):
    return f"http://{srv.address}{path}"


def auth_flags(srv):
    """The admin key as buf curl's -H, as `make run` prints it."""
    return ["-H", f"authorization: Bearer {srv.admin_key}"]


def curl_json(buf, srv, method, body):
    res = buf("curl", *BASE_FLAGS, *auth_flags(srv), "-d", json.dumps(body), url(srv, f"/{method}"))
    return json.loads(res.stdout)


def test_buf_curl_lists_the_services_through_reflection(buf, bare):
    res = buf("curl", *BASE_FLAGS, "--list-services", url(bare))
    services = res.stdout.split()
    assert "recordd.v1.Records" in services
    assert "recordd.v1.Schemas" in services


def test_buf_curl_lists_the_record_methods(buf, bare):
    res = buf("curl", *BASE_FLAGS, "--list-methods", url(bare))
    methods = res.stdout.split()
    for m in ["CreateRecord", "GetRecord", "UpdateRecord", "ReplaceRecord", "DeleteRecord"]:
        assert f"recordd.v1.Records/{m}" in methods, methods


def test_buf_curl_health_check_is_serving(buf, bare):
    res = buf("curl", *BASE_FLAGS, "-d", "{}", url(bare, "/grpc.health.v1.Health/Check"))
    assert json.loads(res.stdout) == {"status": "SERVING"}


def test_buf_curl_session_pushes_a_schema_then_creates_and_updates(buf, bare):
    out = curl_json(buf, bare, "recordd.v1.Schemas/PushSchema", {"schema": {"models": [h.STUDENTS]}})
    assert out["schema"]["revision"] == "1"  # int64 is a JSON string
    assert [m["name"] for m in out["schema"]["models"]] == ["students"]
    assert out["changes"]

    out = curl_json(
        buf,
        bare,
        "recordd.v1.Records/CreateRecord",
        {"model": "students", "id": "s1", "data": {"firstName": "Ada", "age": 36}, "clientTxId": "buf-1",
         "returnRecord": True},
    )
    assert out["object"] == "commit_receipt"
    assert out["status"] == "CONFIRMED"
    assert out["success"] is True
    assert out["ops"] == 1
    assert out["clientTxId"] == "buf-1"
    assert out["serverTxId"]
    created_sync = int(out["lastSyncId"])
    assert out["record"]["id"] == "s1"
    assert out["record"]["version"] == "1"
    assert out["record"]["data"] == {"firstName": "Ada", "age": 36, "isActive": True}

    out = curl_json(
        buf,
        bare,
        "recordd.v1.Records/UpdateRecord",
        {"model": "students", "id": "s1", "data": {"age": 37, "status": "active"}, "expectedVersion": "1",
         "returnRecord": True},
    )
    assert out["status"] == "CONFIRMED"
    assert int(out["lastSyncId"]) > created_sync
    assert out["record"]["version"] == "2"
    assert out["record"]["data"] == {"firstName": "Ada", "age": 37, "isActive": True, "status": "active"}

    out = curl_json(buf, bare, "recordd.v1.Records/GetRecord", {"model": "students", "id": "s1"})
    assert out["data"] == {"firstName": "Ada", "age": 37, "isActive": True, "status": "active"}
    assert out["group"] == "default"
    assert out["version"] == "2"


def test_buf_curl_reports_a_grpc_error_with_its_code(buf, bare):
    res = buf(
        "curl", *BASE_FLAGS, *auth_flags(bare), "-d", json.dumps({"model": "students", "id": "nope-404"}),
        url(bare, "/recordd.v1.Records/GetRecord"), check=False,
    )
    # buf curl exits with the gRPC code shifted left by 3: NOT_FOUND (5) -> 40.
    assert res.returncode == 5 << 3, f"{res.returncode}\n{res.stdout}\n{res.stderr}"
    err = json.loads(res.stderr)
    assert err["code"] == "not_found"


def test_buf_curl_over_tls_and_mutual_tls(buf, server_factory, tmp_path):
    """The README's TLS forms: --cacert against https://, and --cert/--key
    when the server requires a client certificate."""
    import tlscerts

    ca = tlscerts.make_ca(tmp_path, "ca")
    server = tlscerts.make_cert(tmp_path, "server", ca)
    client = tlscerts.make_cert(tmp_path, "client", ca, san="DNS:client.test")
    s = server_factory("--tls-cert", str(server[0]), "--tls-key", str(server[1]),
                       "--tls-client-ca", str(ca[0]), tls=h.ClientTLS(ca[0], *client))
    url = f"https://{s.address}/grpc.health.v1.Health/Check"
    mtls = ["--cacert", str(ca[0]), "--cert", str(client[0]), "--key", str(client[1])]
    res = buf("curl", "--protocol", "grpc", "--timeout", "60s", *mtls, "-d", '{"service":"readiness"}', url)
    assert json.loads(res.stdout)["status"] == "SERVING"
    listed = buf("curl", "--protocol", "grpc", "--timeout", "60s", *mtls, "--list-methods",
                 f"https://{s.address}").stdout
    assert "recordd.v1.Records/UpdateRecord" in listed
    # without the client certificate the handshake is refused
    res = buf("curl", "--protocol", "grpc", "--timeout", "20s", "--cacert", str(ca[0]), "-d", "{}", url, check=False)
    assert res.returncode != 0


CLIENT = r'''
import sys
import grpc
from google.protobuf import struct_pb2, wrappers_pb2
from recordd.v1 import records_pb2, records_pb2_grpc, schema_pb2, schema_pb2_grpc

addr, key = sys.argv[1], sys.argv[2]
md = [("authorization", "Bearer " + key)]
ch = grpc.insecure_channel(addr)
schema = schema_pb2.Schema(models=[schema_pb2.Model(name="pets", fields=[
    schema_pb2.Field(name="name", type=schema_pb2.STRING)])])
schema_pb2_grpc.SchemasStub(ch).PushSchema(schema_pb2.PushSchemaRequest(schema=schema, merge=True),
                                           metadata=md)
records = records_pb2_grpc.RecordsStub(ch)
data = struct_pb2.Struct()
data.update({"name": "Rex"})
made = records.CreateRecord(records_pb2.CreateRecordRequest(model="pets", data=data), metadata=md)
data.update({"name": "Rex II"})
up = records.UpdateRecord(records_pb2.UpdateRecordRequest(
    model="pets", id=made.id, data=data, expected_version=wrappers_pb2.Int64Value(value=made.version)),
    metadata=md)
print(made.id, made.version, up.version, up.status == records_pb2.CONFIRMED)
'''


def test_buf_builds_lints_and_generates_clients_that_write(buf, bare, tmp_path):
    """The protos work with buf offline (buf.yaml, buf.gen.yaml with local
    Debian plugins): `buf build` and `buf lint` pass, and the Python stubs
    `buf generate` writes create and update a record on a real server."""
    import sys  # noqa: F401

    res = subprocess.run(["make", "-s", "-C", str(h.REPO), "buf-deps"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    buf("build", str(h.REPO))
    buf("lint", str(h.REPO))
    buf("generate", str(h.REPO), "--template", str(h.REPO / "buf.gen.yaml"), "--output", str(tmp_path))
    py = tmp_path / "build" / "clients" / "python"
    assert (py / "recordd" / "v1" / "records_pb2_grpc.py").exists()
    assert (tmp_path / "build" / "clients" / "c" / "recordd" / "v1" / "records.pb-c.h").exists()
    script = tmp_path / "client.py"
    script.write_text(CLIENT)
    env = dict(os.environ, PYTHONPATH=str(py))
    out = subprocess.run(["/usr/bin/python3", str(script), bare.address, bare.admin_key], capture_output=True,
                         text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    rid, v1, v2, confirmed = out.stdout.split()
    assert rid and (v1, v2, confirmed) == ("1", "2", "True")
    assert bare.get_data("pets", rid) == {"name": "Rex II"}
