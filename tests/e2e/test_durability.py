"""Crash durability (DESIGN.md §4): a CONFIRMED receipt means the commit is
on disk. Writers run against the server with synchronous=FULL (the default;
on PostgreSQL a commit is durable when it returns), the process is killed
with SIGKILL in the middle of the load, a new process opens the same
database, and every write that was confirmed must be there with its sync
id. Sync ids are never handed out twice and have no gaps."""

import threading
import time

import grpc

import harness as h
from harness import pb, struct

LEDGER = {
    "name": "ledger",
    "fields": [
        {"name": "writer", "type": "INTEGER"},
        {"name": "step", "type": "INTEGER"},
    ],
}
WRITERS = 16
CALL_TIMEOUT = 10  # a client must never hang: every call has a deadline


def _writer(srv, k, confirmed, lock, errors):
    """Creates a record, then updates it, over and over, until the server
    goes away. Records every CONFIRMED receipt as id -> (sync id, version)."""
    step = 0
    while True:
        rid = f"w{k}-{step}"
        try:
            req = pb.records.CreateRecordRequest(
                model="ledger", id=rid, data=struct({"writer": k, "step": step}))
            r = srv.call("CreateRecord", req, timeout=CALL_TIMEOUT)
            assert r.status == pb.records.CONFIRMED
            with lock:
                confirmed[rid] = (r.last_sync_id, 1)
            req = pb.records.UpdateRecordRequest(
                model="ledger", id=rid, data=struct({"step": step + 1}))
            r = srv.call("UpdateRecord", req, timeout=CALL_TIMEOUT)
            assert r.status == pb.records.CONFIRMED
            with lock:
                confirmed[rid] = (r.last_sync_id, 2)
        except grpc.RpcError as e:
            if e.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED):
                errors.append(f"{rid}: {e.code()} {e.details()}")
            return
        except ValueError:  # the channel was closed under us
            return
        step += 1


def _sync_log(srv):
    return dict(srv.sql("SELECT sync_id, record_id FROM _rd_sync_log"))


def test_confirmed_writes_survive_sigkill(tmp_path):
    srv = h.Server(tmp_path / "recordd").start()
    try:
        srv.push_schema([LEDGER])
        confirmed, lock, errors = {}, threading.Lock(), []
        threads = [threading.Thread(target=_writer, args=(srv, k, confirmed, lock, errors))
                   for k in range(WRITERS)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 30
        while len(confirmed) < 1000 and time.monotonic() < deadline:
            time.sleep(0.05)

        srv.proc.kill()  # SIGKILL: no shutdown path runs
        srv.proc.wait()
        srv.proc = None
        for t in threads:
            t.join(timeout=CALL_TIMEOUT + 5)
            assert not t.is_alive(), "a client hung after the server died"
        srv._close_channel()
        assert not errors, errors
        assert len(confirmed) >= 1000, "the load never got going"

        srv.start()
        for rid, (sync_id, version) in confirmed.items():
            rec = srv.get("ledger", rid)
            # A write in flight at the kill may have committed without its
            # receipt reaching the client, so the record can be newer.
            assert rec.version >= version, (rid, rec.version, version)
            assert rec.sync_id >= sync_id, (rid, rec.sync_id, sync_id)

        log = _sync_log(srv)
        for rid, (sync_id, _) in confirmed.items():
            assert log.get(sync_id) == rid, f"confirmed sync id {sync_id} of {rid} not logged"
        ids = sorted(log)
        assert ids == list(range(ids[0], ids[-1] + 1)), "the sync log has gaps"

        after = srv.create("ledger", {"writer": -1, "step": 0}, id="after-restart")
        assert after.last_sync_id == ids[-1] + 1
    finally:
        problem = srv.kill()
        assert problem is None, problem
