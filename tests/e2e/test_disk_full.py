"""A full disk is an outage, not a bug: writes fail UNAVAILABLE (HTTP 503,
retryable, RetryInfo / Retry-After), readiness goes NOT_SERVING while
commits fail, nothing acknowledged is lost, and once space is freed the
server recovers by itself, without a restart. The database lives on a
small tmpfs that the test mounts (root only) and fills."""
import os
import subprocess

import grpc
import pytest

import harness as h
from harness import uid

NOT_SERVING = 2
SERVING = 1
CHUNK = 256 * 1024


@pytest.fixture
def small_disk(tmp_path):
    mnt = tmp_path / "small"
    mnt.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mnt)],
                         capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs (needs root): {res.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


@pytest.mark.sqlite_only("fills a tmpfs holding the SQLite file; a PostgreSQL database lives in the cluster's "
                         "data directory, which the test cannot fill")
def test_full_disk_is_unavailable_not_ready_and_recovers(small_disk):
    filler = small_disk / "filler"
    filler.write_bytes(b"\0" * (10 << 20))  # leaves about 6 MB for the database
    srv = h.Server(small_disk / "recordd").start()
    try:
        srv.push_schema([{"name": "blobs", "fields": [{"name": "b", "type": "STRING"}]}])
        stored, err = [], None
        for i in range(200):
            rid = f"b{i:03d}"
            try:
                srv.create("blobs", {"b": chr(97 + i % 26) * CHUNK}, id=rid)
                stored.append(rid)
            except grpc.RpcError as e:
                err = e
                break
        assert err is not None, "the disk never filled up"
        assert err.code() == grpc.StatusCode.UNAVAILABLE, err
        d = h.error_details(err)
        assert d.reason == "unavailable" and "disk is full" in d.message
        assert any(a.type_url.endswith("google.rpc.RetryInfo") for a in d.other), d
        assert srv.health("readiness") == NOT_SERVING
        assert srv.health("liveness") == SERVING
        r = srv.http("GET", "/readyz", auth=None)
        assert r.status_code == 503
        r = srv.http("POST", f"/v1/models/blobs?id={uid()}", json_body={"b": "x" * CHUNK})
        assert r.status_code == 503, r.text[:200]
        assert int(r.headers["Retry-After"]) >= 1
        # reads still work, and nothing acknowledged was lost
        for rid in stored[-3:]:
            assert len(srv.get_data("blobs", rid)["b"]) == CHUNK

        filler.unlink()  # room again
        assert srv.health("readiness") == SERVING
        assert srv.http("GET", "/readyz", auth=None).status_code == 200
        srv.create("blobs", {"b": "after"}, id="after")
        assert srv.get_data("blobs", "after") == {"b": "after"}
        assert srv.health("readiness") == SERVING
        for rid in stored:
            assert srv.get("blobs", rid).id == rid
    finally:
        problem = srv.kill()
    assert not problem, problem
