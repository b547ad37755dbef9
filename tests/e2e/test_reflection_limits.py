"""Reflection streams apply back-pressure: a client that sends requests and
never reads the answers gets a small read-ahead, then the server stops
reading from that stream, so memory stays bounded however many such
streams are open (40 once took the server from 19 MB to 450 MB)."""
import re
import threading
import time

import grpc
import pytest

import harness as h
from harness import pb

PATH = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"


def peak_rss_mb(srv):
    with open(f"/proc/{srv.proc.pid}/status") as f:
        return int(re.search(r"VmHWM:\s+(\d+)", f.read()).group(1)) / 1024


def test_unread_reflection_streams_do_not_grow_memory(tmp_path):
    srv = h.Server(tmp_path / "recordd").start()
    streams, stop = [], threading.Event()
    try:
        before = peak_rss_mb(srv)
        req = pb.refl_v1.ServerReflectionRequest(file_containing_symbol="recordd.v1.Records")

        def requests():
            for _ in range(3000):
                if stop.is_set():
                    return
                yield req
            stop.wait(30)  # keep the stream open, never half-close

        channels = [grpc.insecure_channel(srv.address) for _ in range(4)]
        for i in range(40):
            fn = channels[i % 4].stream_stream(PATH, request_serializer=lambda m: m.SerializeToString(),
                                               response_deserializer=lambda b: b)
            streams.append(fn(requests(), timeout=60))  # the answers are never read
        time.sleep(4)
        grown = peak_rss_mb(srv) - before
        assert grown < 150 + h.rss_allowance_mb(), f"peak RSS grew by {grown:.0f} MB with 40 unread reflection streams"
        # the server still answers, and a stream that reads gets its answers
        srv.assert_healthy()
        fn = srv.raw_channel.stream_stream(PATH, request_serializer=lambda m: m.SerializeToString(),
                                           response_deserializer=pb.refl_v1.ServerReflectionResponse.FromString)
        got = list(fn(iter([req] * 50), timeout=30))
        assert len(got) == 50 and all(r.HasField("file_descriptor_response") for r in got)
    finally:
        stop.set()
        for s in streams:
            s.cancel()
        problem = srv.kill()
    assert not problem, problem
