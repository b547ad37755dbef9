"""Graceful shutdown (DESIGN.md §9; issue 7 item 1): SIGTERM while 16 clients
write, a second signal, and the streams that are open when it arrives.

Every client thread has its own gRPC channel. A CONFIRMED receipt is a
promise that the write is durable: after the stop the server is started
again on the same database and every confirmed record is read back."""

import signal
import sqlite3
import threading
import time

import grpc
import pytest

import harness as h

GRACE_S = 10  # the --shutdown-grace default, passed explicitly
CALL_TIMEOUT_S = 20  # a client call that takes longer than this has hung
THING = {"name": "things", "fields": [{"name": "n", "type": "INTEGER"}, {"name": "who", "type": "STRING"}]}
SERVING = 1
NOT_SERVING = 2


class Writer(threading.Thread):
    """Creates records on its own channel until a call fails or stop is set.
    confirmed: ids with a CONFIRMED receipt; failures: (code, details);
    slowest: the longest any call took (s)."""

    def __init__(self, srv, index, stop):
        super().__init__(daemon=True)
        self.srv, self.index, self.stop_ev = srv, index, stop
        self.confirmed, self.failures, self.slowest, self.calls = [], [], 0.0, 0
        self.error = None

    def run(self):
        ch = grpc.insecure_channel(self.srv.address, options=h.CHANNEL_OPTIONS)  # carries the admin key
        create = ch.unary_unary(
            h.rpc_path("CreateRecord"),
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=h.pb.records.CommitReceipt.FromString,
        )
        try:
            n = 0
            while not self.stop_ev.is_set():
                rid = f"w{self.index}-{n}"
                n += 1
                req = h.pb.records.CreateRecordRequest(model="things", id=rid, data=h.struct({"n": n, "who": rid}))
                t0 = time.monotonic()
                try:
                    receipt = create(req, timeout=CALL_TIMEOUT_S)
                except grpc.RpcError as e:
                    self.failures.append((e.code(), e.details()))
                    break
                finally:
                    self.slowest = max(self.slowest, time.monotonic() - t0)
                    self.calls += 1
                if receipt.status == h.pb.records.CONFIRMED:
                    self.confirmed.append(rid)
        except Exception as e:  # noqa: BLE001 - reported by the test
            self.error = e
        finally:
            ch.close()


def start_writers(srv, n=16):
    stop = threading.Event()
    writers = [Writer(srv, i, stop) for i in range(n)]
    for w in writers:
        w.start()
    return writers, stop


def wait_for_progress(writers, at_least=50, timeout=30.0):
    end = time.monotonic() + timeout
    while sum(len(w.confirmed) for w in writers) < at_least:
        assert time.monotonic() < end, "the writers made no progress"
        assert not any(w.failures or w.error for w in writers), [(w.failures, w.error) for w in writers]
        time.sleep(0.02)


def read_back(srv, ids):
    """Starts srv again on its database and returns the ids that are missing."""
    srv.start()
    missing = []
    for rid in ids:
        try:
            r = srv.get("things", rid)
            assert h.to_dict(r.data)["who"] == rid
        except grpc.RpcError as e:
            missing.append((rid, e.code()))
    return missing


def test_sigterm_while_16_clients_write_keeps_every_confirmed_write(server_factory):
    srv = server_factory("--shutdown-grace", str(GRACE_S))
    srv.push_schema([THING])
    writers, stop = start_writers(srv)
    wait_for_progress(writers)

    t0 = time.monotonic()
    srv.proc.send_signal(signal.SIGTERM)
    try:
        rc = srv.proc.wait(timeout=GRACE_S + 20)
    except Exception:
        srv.kill()
        raise
    took = time.monotonic() - t0
    srv.proc = None
    srv._close_channel()

    # No client hangs: every thread ends soon after the server is gone.
    stop.set()
    for w in writers:
        w.join(timeout=CALL_TIMEOUT_S + 5)
    hung = [w.index for w in writers if w.is_alive()]
    assert not hung, f"writer threads still blocked after the server exited: {hung}"
    assert not [w.error for w in writers if w.error], [w.error for w in writers if w.error]
    slowest = max(w.slowest for w in writers)
    assert slowest < CALL_TIMEOUT_S, f"a call took {slowest:.1f}s"

    assert rc == 0, f"recordd exited {rc} after SIGTERM:\n{srv.log_tail()}"
    assert took < GRACE_S + 2, f"the stop took {took:.1f}s, grace {GRACE_S}s"

    # The calls that did not get an answer were refused, not failed oddly.
    codes = {code for w in writers for code, _ in w.failures}
    assert codes <= {grpc.StatusCode.UNAVAILABLE}, [f for w in writers for f in w.failures if f[0] != grpc.StatusCode.UNAVAILABLE]
    log = srv.log_path.read_text()
    assert '"msg":"stopping"' in log and '"msg":"stopped"' in log, srv.log_tail()

    confirmed = [rid for w in writers for rid in w.confirmed]
    assert len(confirmed) >= 50
    if h.BACKEND == "sqlite":
        # The database was checkpointed and closed: no WAL content is left.
        wal = srv.db_path.with_name(srv.db_path.name + "-wal")
        assert not wal.exists() or wal.stat().st_size == 0, f"WAL left with {wal.stat().st_size} bytes"

    missing = read_back(srv, confirmed)
    assert not missing, f"{len(missing)} of {len(confirmed)} confirmed writes are missing: {missing[:5]}"


def test_second_signal_forces_exit_without_corrupting_the_database(server_factory):
    srv = server_factory("--shutdown-grace", "30")
    srv.push_schema([THING])
    writers, stop = start_writers(srv)
    wait_for_progress(writers)

    t0 = time.monotonic()
    srv.proc.send_signal(signal.SIGTERM)
    time.sleep(0.005)
    srv.proc.send_signal(signal.SIGINT)
    try:
        rc = srv.proc.wait(timeout=10)
    except Exception:
        srv.kill()
        raise
    took = time.monotonic() - t0
    srv.proc = None
    srv._close_channel()
    stop.set()
    for w in writers:
        w.join(timeout=CALL_TIMEOUT_S + 5)
    assert not [w.index for w in writers if w.is_alive()], "writer threads hung"

    # The second signal exits at once (128 + SIGINT) unless the first stop
    # had already finished (then 0): either way, well before the grace.
    assert rc in (0, 128 + signal.SIGINT), f"exit {rc}:\n{srv.log_tail()}"
    assert took < 5, f"the forced exit took {took:.1f}s"
    if rc != 0:
        assert "second signal" in srv.log_path.read_text()

    if h.BACKEND == "sqlite":  # PostgreSQL keeps its own files whole whatever a client does
        db = sqlite3.connect(f"file:{srv.db_path}?mode=ro", uri=True)
        try:
            assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        finally:
            db.close()
    confirmed = [rid for w in writers for rid in w.confirmed]
    missing = read_back(srv, confirmed)
    assert not missing, f"{len(missing)} of {len(confirmed)} confirmed writes are missing: {missing[:5]}"


def watch_health(srv, service):
    ch = grpc.insecure_channel(srv.address)
    fn = ch.unary_stream(
        "/grpc.health.v1.Health/Watch",
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=h.pb.health.HealthCheckResponse.FromString,
    )
    return ch, fn(h.pb.health.HealthCheckRequest(service=service), timeout=60)


def drain(stream, out, done):
    try:
        for msg in stream:
            out.append(msg)
    except grpc.RpcError as e:
        out.append(e)
    finally:
        done.set()


def test_streams_end_cleanly_on_sigterm(server_factory):
    """WatchChanges ends with UNAVAILABLE at once; health Watch of "" and
    "readiness" sends NOT_SERVING first, "liveness" stays SERVING to the end."""
    srv = server_factory()
    srv.push_schema([THING])
    srv.create("things", {"n": 1}, id="t1")

    ch = grpc.insecure_channel(srv.address)
    watch_fn = ch.unary_stream(
        "/recordd.v1.Records/WatchChanges",
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=h.pb.records.ChangeEvent.FromString,
    )
    changes, changes_done = [], threading.Event()
    stream = watch_fn(h.pb.records.WatchChangesRequest(since_sync_id=0), timeout=60)
    threading.Thread(target=drain, args=(stream, changes, changes_done), daemon=True).start()

    health = {}
    for name in ("", "readiness", "liveness", "recordd.v1.Records"):
        hch, hs = watch_health(srv, name)
        out, done = [], threading.Event()
        threading.Thread(target=drain, args=(hs, out, done), daemon=True).start()
        health[name] = (hch, out, done)

    end = time.monotonic() + 10
    while (not changes or any(not out for _, out, _ in health.values())) and time.monotonic() < end:
        time.sleep(0.01)
    assert changes and changes[0].id == "t1", changes
    for name, (_, out, _) in health.items():
        assert out and out[0].status == SERVING, (name, out)

    t0 = time.monotonic()
    srv.proc.send_signal(signal.SIGTERM)
    assert changes_done.wait(5), "WatchChanges did not end on SIGTERM"
    assert isinstance(changes[-1], grpc.RpcError), changes[-1]
    assert changes[-1].code() == grpc.StatusCode.UNAVAILABLE, changes[-1]
    for name, (_, out, done) in health.items():
        assert done.wait(5), f"health Watch({name!r}) did not end"
        statuses = [m.status for m in out if not isinstance(m, grpc.RpcError)]
        assert isinstance(out[-1], grpc.RpcError) and out[-1].code() == grpc.StatusCode.UNAVAILABLE, (name, out)
        if name == "liveness":
            assert statuses == [SERVING], (name, statuses)
        else:
            assert statuses == [SERVING, NOT_SERVING], (name, statuses)
    rc = srv.proc.wait(timeout=15)
    assert time.monotonic() - t0 < 10
    srv.proc = None
    ch.close()
    for hch, _, _ in health.values():
        hch.close()
    assert rc == 0, srv.log_tail()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_idle_server_stops_with_exit_0_on(server, sig):
    server._close_channel()
    server.proc.send_signal(sig)
    assert server.proc.wait(timeout=15) == 0, server.log_tail()
    server.proc = None


def test_a_health_check_during_the_drain_answers_not_serving(server_factory):
    """While a call is still in flight after SIGTERM, a new health Check is
    answered NOT_SERVING (for "" and "readiness"; "liveness" stays SERVING)
    rather than refused, so a probe sees the drain; other new calls get
    UNAVAILABLE."""
    from test_claims import acquire

    srv = server_factory()
    srv.push_schema([THING])
    srv.create("things", {"n": 1}, id="c1")
    acquire(srv, "things", "c1", ttl=30)

    def wait_for_claim():
        try:
            acquire(srv, "things", "c1", ttl=30, wait=6, timeout=CALL_TIMEOUT_S)
        except grpc.RpcError:
            pass  # claimed, or UNAVAILABLE once the grace is over: either is fine here

    waiter = threading.Thread(target=wait_for_claim, daemon=True)

    ch = grpc.insecure_channel(srv.address)
    check = ch.unary_unary(
        "/grpc.health.v1.Health/Check",
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=h.pb.health.HealthCheckResponse.FromString,
    )
    assert check(h.pb.health.HealthCheckRequest(service="readiness"), timeout=5).status == SERVING
    waiter.start()
    time.sleep(1.0)  # the waiting AcquireClaim is in flight (it waits up to 6 s)
    srv.proc.send_signal(signal.SIGTERM)
    seen = {}
    end = time.monotonic() + 3
    while time.monotonic() < end and len(seen) < 3:
        for name in ("", "readiness", "liveness"):
            try:
                status = check(h.pb.health.HealthCheckRequest(service=name), timeout=2).status
            except grpc.RpcError:
                continue
            if name == "liveness" or status == NOT_SERVING:
                seen[name] = status
        time.sleep(0.02)
    with pytest.raises(grpc.RpcError) as ei:
        srv.get("things", "c1")
    assert ei.value.code() == grpc.StatusCode.UNAVAILABLE
    assert seen == {"": NOT_SERVING, "readiness": NOT_SERVING, "liveness": SERVING}, seen
    waiter.join(CALL_TIMEOUT_S)
    assert srv.proc.wait(timeout=15) == 0, srv.log_tail()
    srv.proc = None
    ch.close()
