"""What an unauthenticated or greedy HTTP client can make the gateway hold:
a request with a body is refused from its headers (401, connection closed)
before the body is read, and connections are bounded per client address."""
import re
import socket
import threading
import time
import urllib.parse

import harness as h
import pytest

PER_IP = 6
BIG = 4 * 1024 * 1024


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    s = h.Server(tmp_path_factory.mktemp("httplimits") / "recordd",
                 extra_args=("--http-max-connections-per-ip", str(PER_IP)))
    s.start()
    s.push_schema([{"name": "items", "fields": [{"name": "a", "type": "STRING"}]}])
    yield s
    problem = s.kill()
    if problem:
        pytest.fail(problem, pytrace=False)


def addr(srv):
    u = urllib.parse.urlparse(srv.http_url)
    return u.hostname, u.port


def read_response(sock, timeout=5.0):
    """Reads until the head and the Content-Length body are in (or EOF)."""
    sock.settimeout(timeout)
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            pytest.fail(f"no response within {timeout}s (got {data[:200]!r})")
        if not chunk:
            return data
        data += chunk
        head, sep, body = data.partition(b"\r\n\r\n")
        if sep:
            m = re.search(rb"(?im)^content-length:\s*(\d+)", head)
            if m and len(body) >= int(m.group(1)):
                return data


def headers_only(srv, auth_header):
    """Sends a PATCH's headers announcing a 4 MiB body, and no body."""
    s = socket.create_connection(addr(srv))
    req = (f"PATCH /v1/models/items/x HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
           f"Content-Length: {BIG}\r\n{auth_header}\r\n").encode()
    s.sendall(req)
    return s


@pytest.mark.parametrize("auth_header", ["", "Authorization: Bearer rk_test_not_a_key\r\n",
                                         "Authorization: Basic Zm9vOmJhcg==\r\n"])
def test_body_without_a_valid_credential_is_refused_before_it_is_sent(srv, auth_header):
    s = headers_only(srv, auth_header)
    try:
        resp = read_response(s)
    finally:
        s.close()
    head = resp.split(b"\r\n\r\n", 1)[0].decode("latin-1")
    assert head.startswith("HTTP/1.1 401"), head
    assert re.search(r"(?im)^www-authenticate: Bearer", head), head
    assert re.search(r"(?im)^connection: close", head), head
    assert "application/problem+json" in head


def test_a_valid_credential_still_gets_its_body_read(srv):
    r = srv.http("POST", "/v1/models/items?id=ok1", json_body={"a": "x"})
    assert r.status_code == 201, r.text
    r = srv.http("PATCH", "/v1/models/items/ok1", json_body={"a": "y"})
    assert r.status_code == 200, r.text


def peak_rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"VmHWM:\s+(\d+)", f.read()).group(1))


def test_unauthenticated_bodies_do_not_grow_memory(tmp_path):
    """100 unauthenticated clients each sending a 4 MiB body at once: the
    server's peak RSS must not grow by their size (it used to buffer each)."""
    srv = h.Server(tmp_path / "recordd").start()
    try:
        before = peak_rss_kb(srv.proc.pid)
        payload = b"{" + b" " * (BIG - 2) + b"}"
        go = threading.Barrier(100)

        def send_one():
            try:
                s = headers_only(srv, "")
            except OSError:
                return
            try:
                go.wait(30)
                s.sendall(payload)
            except (OSError, threading.BrokenBarrierError):
                pass  # the server closed the connection: what we want
            finally:
                s.close()

        ts = [threading.Thread(target=send_one) for _ in range(100)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(60)
        grown_mb = (peak_rss_kb(srv.proc.pid) - before) / 1024
        assert grown_mb < 100 + h.rss_allowance_mb(), f"server peak RSS grew by {grown_mb:.0f} MB"
        srv.assert_healthy()
    finally:
        problem = srv.kill()
    assert not problem, problem


def test_connections_per_client_address_are_bounded(srv):
    held = [socket.create_connection(addr(srv)) for _ in range(PER_IP)]
    try:
        # every held connection is served
        for s in held[:1]:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
            assert read_response(s).startswith(b"HTTP/1.1 200")
        extra = socket.create_connection(addr(srv))
        try:
            extra.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
            try:
                got = read_response(extra)
            except ConnectionResetError:
                got = b""
            assert got == b"", f"connection {PER_IP + 1} from one address was served: {got[:80]!r}"
        finally:
            extra.close()
    finally:
        for s in held:
            s.close()
    # once they are closed, a new one is served again
    for _ in range(50):
        s = socket.create_connection(addr(srv))
        try:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
            try:
                if read_response(s).startswith(b"HTTP/1.1 200"):
                    return
            except ConnectionResetError:
                pass
        finally:
            s.close()
    pytest.fail("no connection was served after the held ones closed")


def test_http_calls_count_against_max_inflight_calls(tmp_path):
    """--max-inflight-calls holds for every call the server runs, whichever
    transport carried it: with the limit taken by gRPC streams, an HTTP
    request is refused 429 rate_limited at once, and served again once the
    streams end."""
    R = h.pb.records
    s = h.Server(tmp_path / "recordd", extra_args=("--max-inflight-calls", "2")).start()
    watches = []
    try:
        s.push_schema([{"name": "items", "fields": [{"name": "a", "type": "STRING"}]}])
        assert s.http("GET", "/v1/schema").status_code == 200
        watch = s.channel.unary_stream("/recordd.v1.Records/WatchChanges",
                                       request_serializer=lambda m: m.SerializeToString(),
                                       response_deserializer=lambda b: b)
        # two streams in flight (a stream that raced the release of the
        # previous call and was itself refused is opened again)
        deadline = time.time() + 10
        while True:
            watches = [w for w in watches if not w.done()]
            watches += [watch(R.WatchChangesRequest(), timeout=30) for _ in range(2 - len(watches))]
            time.sleep(0.1)
            metrics = s.http("GET", "/metrics", auth=None).text
            if all(not w.done() for w in watches) and \
                    'recordd_open_streams{transport="grpc"} 2' in metrics:
                break
            assert time.time() < deadline, "the two streams did not open"
        deadline = time.time() + 10
        while True:
            r = s.http("GET", "/v1/schema")
            if r.status_code == 429:
                break
            assert time.time() < deadline, "an HTTP call was served with the limit taken"
            time.sleep(0.05)
        p = r.json()
        assert p["code"] == "rate_limited" and "--max-inflight-calls" in p["detail"], p
        assert s.http("GET", "/healthz", auth=None).status_code == 200  # not a call
        for w in watches:
            w.cancel()
        watches = []
        deadline = time.time() + 10
        while s.http("GET", "/v1/schema").status_code != 200:
            assert time.time() < deadline, "the slots did not come back"
            time.sleep(0.05)
    finally:
        for w in watches:
            w.cancel()
        problem = s.kill()
    assert not problem, problem
