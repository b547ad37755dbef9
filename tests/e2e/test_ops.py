"""Operations surface: health, reflection v1 and v1alpha, unknown methods
(DESIGN.md §9)."""

import grpc
import pytest
from google.protobuf import descriptor_pool, json_format, message_factory

import harness as h
from harness import pb, uid

SERVING = 1  # grpc.health.v1.HealthCheckResponse.SERVING


# ---- unknown methods --------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    ["/recordd.v1.Records/NoSuchMethod", "/no.such.Service/Method", "/recordd.v1.Schemas/DropEverything"],
)
def test_unknown_method_is_unimplemented(school, path):
    with pytest.raises(grpc.RpcError) as ei:
        school.call_raw(path, b"")
    assert ei.value.code() == grpc.StatusCode.UNIMPLEMENTED
    school.assert_healthy()


# ---- health -------------------------------------------------------------------------


def test_health_check_of_the_server_is_serving(school):
    assert school.health("") == SERVING


@pytest.mark.parametrize("service", ["recordd.v1.Records", "recordd.v1.Schemas"])
def test_health_check_of_each_api_service_is_serving(school, service):
    assert school.health(service) == SERVING


def test_health_check_of_an_unknown_service_is_not_found(school):
    with pytest.raises(grpc.RpcError) as ei:
        school.health("no.such.Service")
    assert ei.value.code() == grpc.StatusCode.NOT_FOUND


def test_health_watch_starts_with_serving(school):
    watch = school.channel.unary_stream(
        "/grpc.health.v1.Health/Watch",
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=pb.health.HealthCheckResponse.FromString,
    )
    stream = watch(pb.health.HealthCheckRequest(service=""), timeout=h.CALL_TIMEOUT)
    try:
        first = next(stream)
        assert first.status == SERVING
    finally:
        stream.cancel()
    school.assert_healthy()


# ---- reflection ---------------------------------------------------------------------

REFLECTION = {
    "v1": ("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo", lambda: pb.refl_v1),
    "v1alpha": ("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", lambda: pb.refl_v1alpha),
}


def reflect(srv, version, requests):
    """Sends each request on one ServerReflectionInfo stream; returns the answers in order."""
    path, mod = REFLECTION[version]
    m = mod()
    call = srv.channel.stream_stream(
        path,
        request_serializer=lambda r: r.SerializeToString(),
        response_deserializer=m.ServerReflectionResponse.FromString,
    )
    reqs = [m.ServerReflectionRequest(**r) for r in requests]
    return list(call(iter(reqs), timeout=h.CALL_TIMEOUT))


def build_pool(file_bytes):
    """A fresh DescriptorPool from serialized FileDescriptorProtos, added in
    dependency order. Fails when an import is missing."""
    files = {}
    for b in file_bytes:
        fdp = pb.descriptor.FileDescriptorProto.FromString(b)
        files[fdp.name] = (fdp, b)
    pool = descriptor_pool.DescriptorPool()
    added = set()
    while len(added) < len(files):
        progress = False
        for name, (fdp, b) in files.items():
            if name in added:
                continue
            missing = [d for d in fdp.dependency if d not in files]
            assert not missing, f"{name} imports {missing}, which reflection did not send"
            if all(d in added for d in fdp.dependency):
                pool.AddSerializedFile(b)
                added.add(name)
                progress = True
        assert progress, f"import cycle among {sorted(set(files) - added)}"
    return pool


@pytest.mark.parametrize("version", ["v1", "v1alpha"])
def test_reflection_lists_the_api_services(school, version):
    (resp,) = reflect(school, version, [{"list_services": ""}])
    assert resp.WhichOneof("message_response") == "list_services_response"
    names = {s.name for s in resp.list_services_response.service}
    assert {"recordd.v1.Records", "recordd.v1.Schemas", "grpc.health.v1.Health"} <= names, names


@pytest.mark.parametrize("version", ["v1", "v1alpha"])
def test_reflection_file_containing_symbol_builds_a_working_descriptor_pool(school, version):
    (resp,) = reflect(school, version, [{"file_containing_symbol": "recordd.v1.Records"}])
    assert resp.WhichOneof("message_response") == "file_descriptor_response", resp
    files = list(resp.file_descriptor_response.file_descriptor_proto)
    first = pb.descriptor.FileDescriptorProto.FromString(files[0])
    assert first.name == "recordd/v1/records.proto"
    pool = build_pool(files)

    svc = pool.FindServiceByName("recordd.v1.Records")
    assert {m.name for m in svc.methods} >= {"CreateRecord", "GetRecord", "UpdateRecord", "ReplaceRecord", "DeleteRecord"}
    method = svc.FindMethodByName("CreateRecord")
    factory = message_factory.MessageFactory(pool)
    req_cls = factory.GetPrototype(method.input_type)
    resp_cls = factory.GetPrototype(method.output_type)

    # Call the server with messages built only from what reflection said.
    rid = uid(f"refl-{version}")
    req = json_format.ParseDict(
        {"model": "students", "id": rid, "data": {"firstName": "Reflected", "age": 7}, "returnRecord": True}, req_cls()
    )
    raw = school.call_raw("/recordd.v1.Records/CreateRecord", req.SerializeToString())
    out = json_format.MessageToDict(resp_cls.FromString(raw))
    assert out["object"] == "commit_receipt"
    assert out["status"] == "CONFIRMED"
    assert out["record"]["id"] == rid
    assert out["record"]["data"] == {"firstName": "Reflected", "age": 7, "isActive": True}
    assert school.get("students", rid).version == 1


@pytest.mark.parametrize("version", ["v1", "v1alpha"])
def test_reflection_describes_the_schemas_service_and_http_annotations(school, version):
    (resp,) = reflect(school, version, [{"file_containing_symbol": "recordd.v1.Schemas"}])
    pool = build_pool(resp.file_descriptor_response.file_descriptor_proto)
    svc = pool.FindServiceByName("recordd.v1.Schemas")
    assert [m.name for m in svc.methods] == ["PushSchema", "GetSchema", "GetOpenApi"]
    assert pool.FindMessageTypeByName("recordd.v1.PushSchemaRequest").fields_by_name["force"]
    assert pool.FindFileByName("google/api/annotations.proto")


@pytest.mark.parametrize("version", ["v1", "v1alpha"])
def test_reflection_answers_several_requests_on_one_stream(school, version):
    answers = reflect(
        school,
        version,
        [
            {"list_services": ""},
            {"file_by_filename": "recordd/v1/schema.proto"},
            {"file_containing_symbol": "recordd.v1.CommitReceipt"},
            {"file_containing_symbol": "recordd.v1.Records.CreateRecord"},
        ],
    )
    assert [a.WhichOneof("message_response") for a in answers] == [
        "list_services_response",
        "file_descriptor_response",
        "file_descriptor_response",
        "file_descriptor_response",
    ]
    for a, name in zip(answers[1:], ["recordd/v1/schema.proto", "recordd/v1/records.proto", "recordd/v1/records.proto"]):
        first = pb.descriptor.FileDescriptorProto.FromString(a.file_descriptor_response.file_descriptor_proto[0])
        assert first.name == name
    assert answers[2].original_request.file_containing_symbol == "recordd.v1.CommitReceipt"


@pytest.mark.parametrize("version", ["v1", "v1alpha"])
def test_reflection_unknown_symbol_is_an_error_response_not_a_call_failure(school, version):
    answers = reflect(school, version, [{"file_containing_symbol": "no.such.Thing"}, {"list_services": ""}])
    assert answers[0].WhichOneof("message_response") == "error_response"
    assert answers[0].error_response.error_code == grpc.StatusCode.NOT_FOUND.value[0]
    assert answers[1].WhichOneof("message_response") == "list_services_response"


def test_reflection_file_by_filename_of_an_unknown_file_is_not_found(school):
    (a,) = reflect(school, "v1", [{"file_by_filename": "no/such.proto"}])
    assert a.WhichOneof("message_response") == "error_response"
    assert a.error_response.error_code == grpc.StatusCode.NOT_FOUND.value[0]


def test_reflection_stream_survives_a_malformed_message(school):
    call = school.channel.stream_stream(
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        request_serializer=lambda x: x,
        response_deserializer=lambda x: x,
    )
    with pytest.raises(grpc.RpcError) as ei:
        list(call(iter([b"\xff\xff\xff"]), timeout=h.CALL_TIMEOUT))
    assert ei.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    school.assert_healthy()


@pytest.mark.parametrize("flag", ["--grpc-listen", "--http-listen"])
def test_a_listen_failure_names_its_cause(tmp_path, flag):
    """The server says why it cannot listen: the port is taken, or the
    address is not one of this machine's."""
    import socket
    import subprocess

    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    port = holder.getsockname()[1]
    db = h.fresh_db(tmp_path)
    subprocess.run([str(h.RECORDCTL), "init", "--dir", str(tmp_path / "var"), "--db", db],
                   capture_output=True, check=True, env=h.child_env())
    base = [str(h.BIN), "--db", db, "--pepper-file", str(tmp_path / "var" / "pepper"),
            "--signing-key", str(tmp_path / "var" / "signing.key"),
            "--trusted-keys", str(tmp_path / "var" / "trusted-keys"),
            "--grpc-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"]
    try:
        for addr, cause in ((f"127.0.0.1:{port}", "in use"), ("192.0.2.1:0", "not an address of this machine")):
            res = subprocess.run(base + [flag, addr], capture_output=True, text=True, timeout=30,
                                 env=h.child_env())
            assert res.returncode == 1, res.stderr
            assert f"cannot listen on {addr}: " in res.stderr and cause in res.stderr, res.stderr
    finally:
        holder.close()
