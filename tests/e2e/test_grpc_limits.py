"""What an unauthenticated gRPC client can make the server allocate or
compute before it is refused: compressed requests are inflated with a bound
(--max-message-bytes), a connection's concurrent HTTP/2 streams are capped
(--max-concurrent-streams), and streams reset before their request message
came are answered on the spot instead of being run (HTTP/2 rapid reset)."""
import re
import socket
import struct
import time

import grpc
import pytest

import harness as h
from harness import pb, uid

R = pb.records
STREAMS = 7


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    s = h.Server(tmp_path_factory.mktemp("grpclimits") / "recordd",
                 extra_args=("--max-concurrent-streams", str(STREAMS))).start()
    s.push_schema([{"name": "items", "fields": [{"name": "a", "type": "STRING"}]}])
    yield s
    problem = s.kill()
    if problem:
        pytest.fail(problem, pytrace=False)


def peak_rss_mb(srv):
    with open(f"/proc/{srv.proc.pid}/status") as f:
        return int(re.search(r"VmHWM:\s+(\d+)", f.read()).group(1)) / 1024


def gzip_channel(srv):
    return grpc.insecure_channel(srv.address, compression=grpc.Compression.Gzip,
                                 options=[("grpc.max_send_message_length", -1)])


def test_gzip_requests_work(srv):
    with gzip_channel(srv) as ch:
        create = ch.unary_unary("/recordd.v1.Records/CreateRecord",
                                request_serializer=lambda m: m.SerializeToString(),
                                response_deserializer=R.CommitReceipt.FromString)
        rid = uid()
        r = create(R.CreateRecordRequest(model="items", id=rid, data=h.struct({"a": "x" * 100000})),
                   metadata=h.bearer(srv.admin_key), timeout=h.CALL_TIMEOUT)
        assert r.success
    assert srv.get_data("items", rid)["a"] == "x" * 100000


def test_a_compression_bomb_is_refused_without_inflating_it(srv):
    before = peak_rss_mb(srv)
    bomb = R.CreateRecordRequest(model="items", id=uid(), data=h.struct({"a": "a" * (200 << 20)}))
    with gzip_channel(srv) as ch:
        create = ch.unary_unary("/recordd.v1.Records/CreateRecord",
                                request_serializer=lambda m: m.SerializeToString(),
                                response_deserializer=R.CommitReceipt.FromString)
        with pytest.raises(grpc.RpcError) as e:
            create(bomb, metadata=h.bearer(srv.admin_key), timeout=60)
    assert e.value.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED), e.value
    assert "larger than" in e.value.details()
    grown = peak_rss_mb(srv) - before
    assert grown < 60 + h.rss_allowance_mb(), f"peak RSS grew by {grown:.0f} MB inflating a 200 MB message"
    srv.assert_healthy()


# ---- raw HTTP/2 ---------------------------------------------------------------------------

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def frame(ftype, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + struct.pack(">I", stream) + payload


def literal(name, value):
    """HPACK literal header field without indexing, no Huffman (< 127 bytes)."""
    n, v = name.encode(), value.encode()
    return b"\x00" + bytes([len(n)]) + n + bytes([len(v)]) + v


def read_frame(sock):
    head = b""
    while len(head) < 9:
        chunk = sock.recv(9 - len(head))
        if not chunk:
            return None
        head += chunk
    length = int.from_bytes(head[:3], "big")
    payload = b""
    while len(payload) < length:
        chunk = sock.recv(length - len(payload))
        if not chunk:
            return None
        payload += chunk
    return head[3], head[4], payload


def h2_connect(srv):
    host, port = srv.address.rsplit(":", 1)
    s = socket.create_connection((host, int(port)))
    s.settimeout(10)
    s.sendall(PREFACE + frame(4, 0, 0))
    return s


def test_server_announces_its_concurrent_stream_limit(srv):
    s = h2_connect(srv)
    try:
        while True:
            f = read_frame(s)
            assert f is not None, "connection closed before the server's SETTINGS"
            ftype, flags, payload = f
            if ftype == 4 and not flags & 1:
                settings = {int.from_bytes(payload[i:i + 2], "big"): int.from_bytes(payload[i + 2:i + 6], "big")
                            for i in range(0, len(payload), 6)}
                assert settings.get(3) == STREAMS, settings  # SETTINGS_MAX_CONCURRENT_STREAMS
                return
    finally:
        s.close()


def refused_no_message(srv):
    text = srv.http("GET", "/metrics", auth=None).text
    m = re.search(r'recordd_calls_refused_total\{reason="no_message"\} (\d+)', text)
    return int(m.group(1)) if m else None


def get_record_calls(srv):
    text = srv.http("GET", "/metrics", auth=None).text
    return sum(int(v) for v in re.findall(
        r'recordd_requests_total\{transport="grpc",method="/recordd.v1.Records/GetRecord",code="[A-Z_]+"\} (\d+)',
        text))


def test_streams_reset_before_their_message_run_no_handler(srv):
    n = 3000
    calls_before = get_record_calls(srv)
    block = literal(":method", "POST") + literal(":scheme", "http") + literal(
        ":path", "/recordd.v1.Records/GetRecord") + literal(":authority", "x") + literal(
        "content-type", "application/grpc") + literal("te", "trailers")
    s = h2_connect(srv)
    try:
        burst = b"".join(frame(1, 0x4, sid, block) + frame(3, 0, sid, struct.pack(">I", 8))
                         for sid in range(1, 2 * n, 2))
        s.sendall(burst)
        time.sleep(0.5)
    finally:
        s.close()
    srv.assert_healthy()
    refused = refused_no_message(srv)
    ran = get_record_calls(srv) - calls_before - (refused or 0)
    assert ran <= n // 100, f"{ran} of {n} reset streams ran as calls"
    assert refused is not None, "no recordd_calls_refused_total metric"


def test_calls_beyond_max_inflight_are_refused_at_once(tmp_path):
    s = h.Server(tmp_path / "recordd", extra_args=("--max-inflight-calls", "3")).start()
    watches = []
    try:
        s.push_schema([{"name": "items", "fields": [{"name": "a", "type": "STRING"}]}])
        watch = s.channel.unary_stream("/recordd.v1.Records/WatchChanges",
                                       request_serializer=lambda m: m.SerializeToString(),
                                       response_deserializer=lambda b: b)
        watches = [watch(R.WatchChangesRequest(), timeout=30) for _ in range(3)]
        deadline = time.time() + 10
        while True:
            try:
                s.get_schema()
            except grpc.RpcError as e:
                assert e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, e
                assert "--max-inflight-calls" in e.details()
                break
            assert time.time() < deadline, "a 4th call was served with 3 streams in flight"
            time.sleep(0.05)
        assert s.health() == 1  # SERVING: probes are answered whatever the load
        for w in watches:
            w.cancel()
        watches = []
        deadline = time.time() + 10
        while True:  # the slots come back
            try:
                s.get_schema()
                break
            except grpc.RpcError:
                assert time.time() < deadline
                time.sleep(0.05)
    finally:
        for w in watches:
            w.cancel()
        problem = s.kill()
    assert not problem, problem


def cq_fast_path(srv):
    text = srv.http("GET", "/metrics", auth=None).text
    m = re.search(r"recordd_cq_fast_path_total (\d+)", text)
    return int(m.group(1)) if m else None


def test_only_small_plain_writes_run_on_the_completion_queue_thread(srv):
    """The CQ thread polls every connection: a large or compressed request
    is unpacked and checked on a worker, so it cannot stall other calls."""
    rid = uid()
    srv.create("items", {"a": "x"}, id=rid)
    srv.update("items", rid, {"a": "warm"})  # the key is now in the credential cache
    before = cq_fast_path(srv)
    assert before is not None, "no recordd_cq_fast_path_total metric"
    # the fast path needs the key cached under a generation read < 1 ms ago:
    # concurrent writes get there
    import concurrent.futures
    with concurrent.futures.ThreadPoolExecutor(8) as ex:
        list(ex.map(lambda _: srv.update("items", rid, {"a": "small"}), range(400)))
    small = cq_fast_path(srv)
    assert small > before, "small writes never took the fast path"
    with concurrent.futures.ThreadPoolExecutor(8) as ex:
        list(ex.map(lambda _: srv.update("items", rid, {"a": "y" * 100_000}), range(100)))
    assert cq_fast_path(srv) == small, "a 100 kB write ran on the completion-queue thread"
    with gzip_channel(srv) as ch:
        update = ch.unary_unary("/recordd.v1.Records/UpdateRecord",
                                request_serializer=lambda m: m.SerializeToString(),
                                response_deserializer=R.CommitReceipt.FromString)
        for _ in range(5):
            # 8 kB that compresses well: sent compressed (gRPC sends a message
            # uncompressed when compressing would not shrink it)
            update(R.UpdateRecordRequest(model="items", id=rid, data=h.struct({"a": "z" * 8000})),
                   metadata=h.bearer(srv.admin_key), timeout=h.CALL_TIMEOUT)
    assert cq_fast_path(srv) == small, "a compressed write ran on the completion-queue thread"
