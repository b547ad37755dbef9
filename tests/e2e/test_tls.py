"""TLS and mutual TLS on both listeners (gRPC and HTTP), certificate
rotation without a restart, and the start-up checks of the certificate
files. Certificates are made per test with openssl (tlscerts.py)."""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import subprocess
import time
from pathlib import Path

import grpc
import pytest
import requests

import harness
from harness import ClientTLS, pb
import tlscerts

# The server looks at its certificate files at most once a second.
RELOAD_WAIT = 1.5


@pytest.fixture
def pki(tmp_path):
    """A CA with a server certificate (127.0.0.1, localhost) and a client
    certificate; a second, untrusted CA with its own client certificate."""
    d = tmp_path / "pki"
    ca = tlscerts.make_ca(d, "ca")
    other = tlscerts.make_ca(d, "other-ca")
    return {
        "dir": d,
        "ca": ca,
        "other": other,
        "server": tlscerts.make_cert(d, "server", ca),
        "client": tlscerts.make_cert(d, "client", ca, san="URI:spiffe://test/ns/app/sa/billing,DNS:billing.test"),
        "rogue": tlscerts.make_cert(d, "rogue", other, san="DNS:rogue.test"),
    }


def tls_flags(pki, *extra: str, cert=None) -> tuple[str, ...]:
    cert = cert or pki["server"]
    return ("--tls-cert", str(cert[0]), "--tls-key", str(cert[1]), *extra)


def health_over(address: str, creds: grpc.ChannelCredentials) -> int:
    with grpc.secure_channel(address, creds, options=harness.CHANNEL_OPTIONS) as ch:
        check = ch.unary_unary(
            "/grpc.health.v1.Health/Check",
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=pb.health.HealthCheckResponse.FromString,
        )
        return check(pb.health.HealthCheckRequest(), timeout=5).status


def creds(ca, client=None) -> grpc.ChannelCredentials:
    return ClientTLS(ca[0], client[0] if client else None, client[1] if client else None).credentials()


def served_certificate(address: str, ca_file: Path, alpn: str) -> bytes:
    """The DER certificate a new TLS connection to address is given."""
    host, port = address.rsplit(":", 1)
    ctx = ssl.create_default_context(cafile=str(ca_file))
    ctx.set_alpn_protocols([alpn])
    with socket.create_connection((host, int(port)), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname=host) as s:
            return s.getpeercert(binary_form=True)


def der(cert_file: Path) -> bytes:
    return ssl.PEM_cert_to_DER_cert(cert_file.read_text())


def test_both_listeners_serve_tls_to_a_client_trusting_the_ca(server_factory, pki):
    s = server_factory(*tls_flags(pki), tls=ClientTLS(pki["ca"][0]))
    assert s.startup["tls"] == "on"
    assert s.http_url.startswith("https://")
    s.push_schema([{"name": "notes", "fields": [{"name": "text", "type": "STRING"}]}])
    assert s.create("notes", {"text": "over TLS"}, id="n1").success
    r = s.http("GET", "/v1/models/notes/n1")
    assert r.status_code == 200, r.text
    assert r.json()["data"] == {"text": "over TLS"}
    # the gRPC listener speaks TLS only: a plaintext client gets nowhere
    with grpc.insecure_channel(s.address) as ch:
        check = ch.unary_unary("/grpc.health.v1.Health/Check", request_serializer=lambda m: m.SerializeToString(),
                               response_deserializer=pb.health.HealthCheckResponse.FromString)
        with pytest.raises(grpc.RpcError) as e:
            check(pb.health.HealthCheckRequest(), timeout=5)
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    # and the HTTP listener HTTPS only
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(s.http_url.replace("https://", "http://") + "/healthz", timeout=5)


def test_a_client_trusting_another_ca_is_refused(server_factory, pki):
    s = server_factory(*tls_flags(pki), tls=ClientTLS(pki["ca"][0]))
    with pytest.raises(grpc.RpcError) as e:
        health_over(s.address, creds(pki["other"]))
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(s.http_url + "/healthz", verify=str(pki["other"][0]), timeout=5)
    assert requests.get(s.http_url + "/healthz", verify=str(pki["ca"][0]), timeout=5).status_code == 200


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated")
def test_old_tls_versions_are_refused(server_factory, pki):
    s = server_factory(*tls_flags(pki), tls=ClientTLS(pki["ca"][0]))
    for address, alpn in ((s.address, "h2"), (s.http_url.split("//", 1)[1], "http/1.1")):
        host, port = address.rsplit(":", 1)
        ctx = ssl.create_default_context(cafile=str(pki["ca"][0]))
        ctx.set_alpn_protocols([alpn])
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        with socket.create_connection((host, int(port)), timeout=5) as raw:
            with ctx.wrap_socket(raw, server_hostname=host) as conn:
                assert conn.version() in ("TLSv1.2", "TLSv1.3")
                assert conn.compression() is None
        ctx.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
        ctx.maximum_version = ssl.TLSVersion.TLSv1_1
        ctx.set_ciphers("ALL:@SECLEVEL=0")
        with socket.create_connection((host, int(port)), timeout=5) as raw:
            with pytest.raises((ssl.SSLError, ConnectionError)) as e:
                ctx.wrap_socket(raw, server_hostname=host)
            # the server refused the hello; the client did offer TLS 1.1
            assert "NO_PROTOCOLS_AVAILABLE" not in str(e.value)


def test_mutual_tls_require(server_factory, pki):
    client = ClientTLS(pki["ca"][0], *pki["client"])
    s = server_factory(*tls_flags(pki, "--tls-client-ca", str(pki["ca"][0])), tls=client)
    assert s.startup["tls"] == "mutual"
    assert s.health() == pb.health.HealthCheckResponse.SERVING
    assert s.http("GET", "/v1/schema").status_code == 200
    # no client certificate: the handshake fails on both listeners
    with pytest.raises(grpc.RpcError) as e:
        health_over(s.address, creds(pki["ca"]))
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    with pytest.raises((requests.exceptions.SSLError, requests.exceptions.ConnectionError)):
        requests.get(s.http_url + "/healthz", verify=str(pki["ca"][0]), timeout=5)
    # a certificate from a CA the server does not trust: also refused
    with pytest.raises(grpc.RpcError):
        health_over(s.address, creds(pki["ca"], pki["rogue"]))
    with pytest.raises((requests.exceptions.SSLError, requests.exceptions.ConnectionError)):
        requests.get(s.http_url + "/healthz", verify=str(pki["ca"][0]),
                     cert=(str(pki["rogue"][0]), str(pki["rogue"][1])), timeout=5)
    # with one: served
    assert health_over(s.address, creds(pki["ca"], pki["client"])) == pb.health.HealthCheckResponse.SERVING
    r = requests.get(s.http_url + "/healthz", verify=str(pki["ca"][0]),
                     cert=(str(pki["client"][0]), str(pki["client"][1])), timeout=5)
    assert r.status_code == 200


def test_mutual_tls_request_verifies_only_what_is_sent(server_factory, pki):
    s = server_factory(*tls_flags(pki, "--tls-client-ca", str(pki["ca"][0]), "--tls-client-auth", "request"),
                       tls=ClientTLS(pki["ca"][0]))
    assert s.startup["tls"] == "request"
    serving = pb.health.HealthCheckResponse.SERVING
    assert health_over(s.address, creds(pki["ca"])) == serving
    assert health_over(s.address, creds(pki["ca"], pki["client"])) == serving
    with pytest.raises(grpc.RpcError):
        health_over(s.address, creds(pki["ca"], pki["rogue"]))
    ca = str(pki["ca"][0])
    assert requests.get(s.http_url + "/healthz", verify=ca, timeout=5).status_code == 200
    good = requests.get(s.http_url + "/healthz", verify=ca, cert=tuple(map(str, pki["client"])), timeout=5)
    assert good.status_code == 200
    bad = requests.get(s.http_url + "/healthz", verify=ca, cert=tuple(map(str, pki["rogue"])), timeout=5)
    assert bad.status_code == 401
    assert bad.json()["code"] == "unauthenticated"


def test_rotated_certificate_is_served_to_new_connections_old_ones_keep_working(server_factory, pki):
    # The files live where cert-manager's Secret volume puts them: the paths
    # are symlinks through ..data, swapped to a new directory on rotation.
    mount = pki["dir"] / "mount"
    v1 = mount / "..v1"
    v1.mkdir(parents=True)
    for name, src in (("tls.crt", pki["server"][0]), ("tls.key", pki["server"][1])):
        (v1 / name).write_bytes(src.read_bytes())
    os.symlink("..v1", mount / "..data")
    for name in ("tls.crt", "tls.key"):
        os.symlink(f"..data/{name}", mount / name)

    s = server_factory("--tls-cert", str(mount / "tls.crt"), "--tls-key", str(mount / "tls.key"),
                       tls=ClientTLS(pki["ca"][0]))
    http_address = s.http_url.split("//", 1)[1]
    assert served_certificate(s.address, pki["ca"][0], "h2") == der(pki["server"][0])
    old_http = requests.Session()  # one keep-alive connection
    ca = str(pki["ca"][0])  # per request: REQUESTS_CA_BUNDLE would override a session's
    assert old_http.get(s.http_url + "/healthz", verify=ca, timeout=5).status_code == 200
    assert s.health() == pb.health.HealthCheckResponse.SERVING  # s.channel: an open connection

    # the new certificate comes from a new CA: a new connection that still
    # trusts only the old CA fails, so the new one is plainly what is served
    new_ca = tlscerts.make_ca(pki["dir"], "new-ca")
    new_cert = tlscerts.make_cert(pki["dir"], "server2", new_ca)
    v2 = mount / "..v2"
    v2.mkdir()
    (v2 / "tls.crt").write_bytes(new_cert[0].read_bytes())
    (v2 / "tls.key").write_bytes(new_cert[1].read_bytes())
    os.symlink("..v2", mount / "..data_tmp")
    os.replace(mount / "..data_tmp", mount / "..data")
    time.sleep(RELOAD_WAIT)

    assert served_certificate(s.address, new_ca[0], "h2") == der(new_cert[0])
    assert served_certificate(http_address, new_ca[0], "http/1.1") == der(new_cert[0])
    assert health_over(s.address, creds(new_ca)) == pb.health.HealthCheckResponse.SERVING
    with pytest.raises(grpc.RpcError):
        health_over(s.address, creds(pki["ca"]))
    # the connections opened before the rotation go on working
    assert s.health() == pb.health.HealthCheckResponse.SERVING
    assert old_http.get(s.http_url + "/healthz", verify=ca, timeout=5).status_code == 200
    assert "TLS certificate reloaded" in s.log_path.read_text()


def test_a_broken_rotation_keeps_the_previous_certificate(server_factory, pki):
    d = pki["dir"] / "live"
    d.mkdir()
    cert, key = d / "tls.crt", d / "tls.key"
    cert.write_bytes(pki["server"][0].read_bytes())
    key.write_bytes(pki["server"][1].read_bytes())
    s = server_factory("--tls-cert", str(cert), "--tls-key", str(key), tls=ClientTLS(pki["ca"][0]))
    # a new certificate whose key has not arrived yet: not usable
    other = tlscerts.make_cert(pki["dir"], "server3", pki["ca"])
    cert.write_bytes(other[0].read_bytes())
    time.sleep(RELOAD_WAIT)
    assert health_over(s.address, creds(pki["ca"])) == pb.health.HealthCheckResponse.SERVING
    assert served_certificate(s.address, pki["ca"][0], "h2") == der(pki["server"][0])
    log = s.log_path.read_text()
    assert "still serving the previous certificate" in log and "does not belong" in log
    # the key arrives: the pair is taken
    key.write_bytes(other[1].read_bytes())
    time.sleep(RELOAD_WAIT)
    assert served_certificate(s.address, pki["ca"][0], "h2") == der(other[0])


def start_failure(tmp_path, *args: str) -> tuple[int, str]:
    """Runs recordd with args; returns (exit status, stderr) of a start that
    is expected to fail."""
    res = subprocess.run([str(harness.BIN), "--grpc-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0",
                          "--db", str(tmp_path / "r.db"), *args], capture_output=True, text=True, timeout=30)
    return res.returncode, res.stderr


def test_expired_certificate_is_refused_at_start(tmp_path, pki):
    expired = tlscerts.make_expired_cert(pki["dir"], "expired", pki["ca"])
    rc, err = start_failure(tmp_path, "--tls-cert", str(expired[0]), "--tls-key", str(expired[1]))
    assert rc == 1
    line = json.loads(err.strip().splitlines()[-1])
    assert line["level"] == "error" and line["flag"] == "--tls-cert"
    assert str(expired[0]) in line["msg"] and "expired at" in line["msg"]
    assert not (tmp_path / "r.db").exists()  # refused before anything else


@pytest.mark.parametrize("case", ["mismatch", "missing", "not_pem", "bad_ca"])
def test_bad_certificate_files_are_named_at_start(tmp_path, pki, case):
    cert, key = pki["server"]
    extra: tuple[str, ...] = ()
    junk = pki["dir"] / "junk.pem"
    junk.write_text("not a certificate\n")
    if case == "mismatch":
        key, flag, words = pki["client"][1], "--tls-key", "does not belong to the certificate"
        named = key
    elif case == "missing":
        cert, flag, words = pki["dir"] / "absent.pem", "--tls-cert", "cannot read"
        named = cert
    elif case == "not_pem":
        cert, flag, words = junk, "--tls-cert", "holds no PEM certificate"
        named = cert
    else:
        extra, flag, words = ("--tls-client-ca", str(junk)), "--tls-client-ca", "holds no PEM CA certificate"
        named = junk
    rc, err = start_failure(tmp_path, "--tls-cert", str(cert), "--tls-key", str(key), *extra)
    assert rc == 1, err
    line = json.loads(err.strip().splitlines()[-1])
    assert line["flag"] == flag, line
    assert str(named) in line["msg"] and words in line["msg"], line


@pytest.mark.parametrize("args, words", [
    (("--tls-cert", "/x.pem"), "needs both --tls-cert and --tls-key"),
    (("--tls-client-ca", "/ca.pem"), "client certificates need TLS"),
    (("--tls-cert", "/x.pem", "--tls-key", "/x.key", "--tls-client-auth", "require"), "needs --tls-client-ca"),
    (("--tls-cert", "/x.pem", "--tls-key", "/x.key", "--tls-client-auth", "maybe"), "none, request or require"),
])
def test_inconsistent_tls_flags_are_usage_errors(tmp_path, args, words):
    rc, err = start_failure(tmp_path, *args)
    assert rc == 2 and words in err, err


def test_plaintext_on_a_non_loopback_address_warns(server_factory):
    s = server_factory("--http-listen", "0.0.0.0:0")
    warns = [json.loads(l) for l in s.log_path.read_text().splitlines() if '"warn"' in l]
    assert any("without TLS" in w["msg"] and w["listen"] == "0.0.0.0:0" for w in warns), warns
    quiet = server_factory("--http-listen", "0.0.0.0:0", "--allow-plaintext", "true")
    assert "without TLS" not in quiet.log_path.read_text()
    loopback = server_factory()
    assert "without TLS" not in loopback.log_path.read_text()


# ---- credentials bound to a client certificate ----------------------------

BILLING = "spiffe://test/ns/app/sa/billing"


def get_schema_over(address: str, channel_creds: grpc.ChannelCredentials, credential: str):
    with grpc.secure_channel(address, channel_creds, options=harness.CHANNEL_OPTIONS) as ch:
        fn = ch.unary_unary("/recordd.v1.Schemas/GetSchema",
                            request_serializer=lambda m: m.SerializeToString(),
                            response_deserializer=pb.schema.Schema.FromString)
        return fn(pb.schema.GetSchemaRequest(), timeout=5, metadata=harness.bearer(credential))


def https_get(s, path: str, credential: str, cert=None) -> requests.Response:
    return requests.get(s.http_url + path, headers={"Authorization": f"Bearer {credential}"},
                        verify=str(s.tls.ca_file), cert=tuple(map(str, cert)) if cert else None, timeout=5)


@pytest.fixture
def bound(server_factory, pki):
    """A server with optional client certificates, and an API key bound to
    the billing workload's SPIFFE id."""
    other = tlscerts.make_cert(pki["dir"], "reports", pki["ca"], san="URI:spiffe://test/ns/app/sa/reports")
    s = server_factory(*tls_flags(pki, "--tls-client-ca", str(pki["ca"][0]), "--tls-client-auth", "request"),
                       tls=ClientTLS(pki["ca"][0], *pki["client"]))
    key = json.loads(s.ctl("key", "create", "--org", "default", "--role", "admin", "--caps",
                           json.dumps([{"can": ["read", "admin"], "model": "*", "group": "*"}]),
                           "--bind-client", BILLING, "--json").stdout)["key"]
    return s, key, other


def test_a_bound_key_works_only_from_its_client_certificate(bound, pki):
    s, key, other = bound
    ok = pb.schema.Schema
    assert isinstance(get_schema_over(s.address, creds(pki["ca"], pki["client"]), key), ok)
    assert https_get(s, "/v1/schema", key, cert=pki["client"]).status_code == 200
    for channel_creds, cert in ((creds(pki["ca"]), None), (creds(pki["ca"], other), other)):
        with pytest.raises(grpc.RpcError) as e:
            get_schema_over(s.address, channel_creds, key)
        assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "bound to a client certificate" in e.value.details()
        assert BILLING not in e.value.details()  # the binding is not disclosed
        r = https_get(s, "/v1/schema", key, cert=cert)
        assert r.status_code == 401 and r.json()["code"] == "unauthenticated", r.text
    # an unbound key is not affected
    assert isinstance(get_schema_over(s.address, creds(pki["ca"]), s.admin_key), ok)
    listed = [json.loads(l) for l in s.ctl("key", "list", "--json").stdout.splitlines()]
    assert [k.get("client_id") for k in listed].count(BILLING) == 1


def test_tokens_inherit_the_binding_of_their_key(bound, pki):
    s, key, other = bound
    with grpc.secure_channel(s.address, creds(pki["ca"], pki["client"]), options=harness.CHANNEL_OPTIONS) as ch:
        mint = ch.unary_unary("/recordd.v1.Tokens/MintToken",
                              request_serializer=lambda m: m.SerializeToString(),
                              response_deserializer=pb.tokens.MintTokenResponse.FromString)
        token = mint(pb.tokens.MintTokenRequest(caps=[pb.tokens.Capability(can=["read"], model="*", group="*")]),
                     timeout=5, metadata=harness.bearer(key)).token
    assert isinstance(get_schema_over(s.address, creds(pki["ca"], pki["client"]), token), pb.schema.Schema)
    with pytest.raises(grpc.RpcError) as e:
        get_schema_over(s.address, creds(pki["ca"], other), token)
    assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert https_get(s, "/v1/schema", token).status_code == 401
    # an offline token bound by recordctl, to a DNS name of the certificate
    offline = s.mint_offline([{"can": ["read"], "model": "*", "group": "*"}])  # unbound
    assert https_get(s, "/v1/schema", offline["token"]).status_code == 200
    res = s.ctl("token", "mint", "--org", "default", "--sub", "ops", "--caps",
                json.dumps([{"can": ["read"], "model": "*", "group": "*"}]), "--bind-client", "billing.test", "--json")
    dns_bound = json.loads(res.stdout)["token"]
    assert https_get(s, "/v1/schema", dns_bound, cert=pki["client"]).status_code == 200
    assert https_get(s, "/v1/schema", dns_bound, cert=other).status_code == 401
    assert isinstance(get_schema_over(s.address, creds(pki["ca"], pki["client"]), dns_bound), pb.schema.Schema)
    with pytest.raises(grpc.RpcError):
        get_schema_over(s.address, creds(pki["ca"], other), dns_bound)


def test_a_bound_key_is_refused_without_tls(server_factory):
    s = server_factory()
    key = json.loads(s.ctl("key", "create", "--org", "default", "--role", "admin", "--caps",
                           json.dumps([{"can": ["read"], "model": "*", "group": "*"}]),
                           "--bind-client", BILLING, "--json").stdout)["key"]
    harness.expect_error(grpc.StatusCode.UNAUTHENTICATED, s.call, "GetSchema", pb.schema.GetSchemaRequest(), auth=key)
    assert s.http("GET", "/v1/schema", auth=key).status_code == 401
    bad = s.ctl("key", "create", "--org", "default", "--role", "admin", "--caps", "[]",
                "--bind-client", "has space", check=False)
    assert bad.returncode != 0 and "--bind-client" in bad.stderr


def test_recordctl_health_reaches_plaintext_tls_and_mutual_tls_servers(server_factory, pki):
    plain = server_factory()
    res = harness.recordctl("health", "--addr", plain.address, "--service", "readiness", check=False)
    assert res.returncode == 0 and res.stdout.strip() == "SERVING", res.stderr
    s = server_factory(*tls_flags(pki, "--tls-client-ca", str(pki["ca"][0])),
                       tls=ClientTLS(pki["ca"][0], *pki["client"]))
    port = s.address.rsplit(":", 1)[1]
    base = ("health", "--addr", f"127.0.0.1:{port}", "--service", "liveness", "--cacert", str(pki["ca"][0]))
    mine = ("--cert", str(pki["client"][0]), "--key", str(pki["client"][1]))
    res = harness.recordctl(*base, *mine, check=False)
    assert res.returncode == 0 and res.stdout.strip() == "SERVING", res.stderr
    # the name verified can differ from the address dialled (a probe dials 127.0.0.1)
    res = harness.recordctl(*base, *mine, "--server-name", "localhost", check=False)
    assert res.returncode == 0, res.stderr
    for args in (base, ("health", "--addr", f"127.0.0.1:{port}", "--cacert", str(pki["other"][0]), *mine),
                 (*base, *mine, "--server-name", "elsewhere.test")):
        res = harness.recordctl(*args, "--timeout", "3", check=False)
        assert res.returncode == 1 and "recordctl: health:" in res.stderr, (args, res.stderr)
    res = harness.recordctl("health", "--cert", "x.pem", check=False)
    assert res.returncode == 2


def test_sighup_rereads_the_tls_files_at_once(server_factory, pki):
    d = pki["dir"] / "hup"
    d.mkdir()
    cert, key = d / "tls.crt", d / "tls.key"
    cert.write_bytes(pki["server"][0].read_bytes())
    key.write_bytes(pki["server"][1].read_bytes())
    s = server_factory("--tls-cert", str(cert), "--tls-key", str(key), tls=ClientTLS(pki["ca"][0]))
    other = tlscerts.make_cert(pki["dir"], "server-hup", pki["ca"])
    cert.write_bytes(other[0].read_bytes())
    key.write_bytes(other[1].read_bytes())
    # no connection arrives: only the signal makes the server look
    s.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while "TLS certificate reloaded" not in s.log_path.read_text():
        assert time.monotonic() < deadline, s.log_tail()
        time.sleep(0.05)
    assert served_certificate(s.address, pki["ca"][0], "h2") == der(other[0])
    assert s.alive()
