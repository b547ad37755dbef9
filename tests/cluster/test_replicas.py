"""Several recordd processes on one PostgreSQL database (README "Scaling
out", docs/internals/store.md "Several processes"): three replicas A, B and
C share one database, clients are spread over all three, and every guarantee
a single process gives must hold across them.

PostgreSQL only: run by `make test-cluster` (RECORDD_TEST_BACKEND=postgres,
a throw-away cluster started by tests/e2e/harness.py)."""

from __future__ import annotations

import shutil
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))

import harness as h  # noqa: E402
from harness import expect_error, pb, to_dict, uid  # noqa: E402

pytestmark = pytest.mark.skipif(h.BACKEND != "postgres",
                                reason="several processes share a PostgreSQL database (RECORDD_TEST_BACKEND=postgres)")

R = pb.records
ITEMS = {"name": "items", "fields": [{"name": "n", "type": "INTEGER"}, {"name": "s", "type": "STRING"}]}
CLAIMS = "/recordd.v1.Claims/"


def replica(first: h.Server, workdir: Path) -> h.Server:
    """Another recordd process on first's database, with first's secrets
    (pepper, signing key, admin key: the same credentials work on all)."""
    s = h.Server(workdir)
    shutil.copytree(first.var, s.var)
    s._db = first.db
    return s.start()


@pytest.fixture(scope="module")
def trio(tmp_path_factory):
    base = tmp_path_factory.mktemp("replicas")
    a = h.Server(base / "a").start()
    servers = [a]
    try:
        servers.append(replica(a, base / "b"))
        servers.append(replica(a, base / "c"))
        a.push_schema([ITEMS])
        yield servers
    finally:
        problems = [p for p in (s.kill() for s in servers) if p]
        h.stop_backend()
    if problems:
        pytest.fail("; ".join(problems), pytrace=False)


def rpc(ch, method, req_cls_resp):
    return ch.unary_unary(method, request_serializer=lambda m: m.SerializeToString(),
                          response_deserializer=req_cls_resp.FromString)


def channel(srv):
    """A channel of one's own to srv, carrying its admin key."""
    raw = grpc.insecure_channel(srv.address, options=h.CHANNEL_OPTIONS)
    return raw, [("authorization", f"Bearer {srv.admin_key}")]


# ---- lost updates ----------------------------------------------------------------


def test_no_lost_updates_across_replicas(trio):
    """32 clients x 50 read-modify-write increments with read_at + REJECT,
    each client reading through one replica and writing through the next:
    every stale write is rejected and retried, so the count is exact."""
    clients, rounds = 32, 50
    rid = uid("cnt")
    trio[0].create("items", {"n": 0}, id=rid)
    errors, retries = [], [0] * clients

    def run(i):
        rd_ch, md = channel(trio[i % 3])
        wr_ch, _ = channel(trio[(i + 1) % 3])
        get = rpc(rd_ch, "/recordd.v1.Records/GetRecord", R.Record)
        upd = rpc(wr_ch, "/recordd.v1.Records/UpdateRecord", R.CommitReceipt)
        try:
            done = 0
            while done < rounds:
                rec = get(R.GetRecordRequest(model="items", id=rid), timeout=h.CALL_TIMEOUT, metadata=md)
                n = int(rec.data.fields["n"].number_value)
                try:
                    upd(R.UpdateRecordRequest(model="items", id=rid, data=h.struct({"n": n + 1}),
                                              read_at=pb.wrappers.Int64Value(value=rec.read_at), on_stale=R.REJECT),
                        timeout=h.CALL_TIMEOUT, metadata=md)
                    done += 1
                except grpc.RpcError as e:
                    if h.error_details(e).reason != "stale_context":
                        raise
                    retries[i] += 1
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(repr(e))
        finally:
            rd_ch.close()
            wr_ch.close()

    ts = [threading.Thread(target=run, args=(i,)) for i in range(clients)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors, errors[:3]
    for srv in trio:
        got = srv.get("items", rid)
        assert to_dict(got.data)["n"] == clients * rounds
        assert got.version == 1 + clients * rounds
    assert sum(retries) > 0, "no write was ever stale: the test did not contend"


# ---- the change feed -------------------------------------------------------------


def head(srv):
    return srv.create("items", {"s": "marker"}).last_sync_id


def test_watch_on_c_sees_every_commit_of_a_and_b_once_in_order(trio):
    a, b, c = trio
    since = head(a)
    w = h.Watch(c, since, models=["items"])
    per_writer, written = 150, {}
    lock = threading.Lock()

    def write(srv, tag):
        for i in range(per_writer):
            rid = f"{tag}-{uid()}"
            r = srv.create("items", {"s": tag, "n": i}, id=rid)
            with lock:
                written[r.last_sync_id] = rid

    with ThreadPoolExecutor(4) as pool:
        futs = [pool.submit(write, srv, tag) for srv, tag in ((a, "a1"), (a, "a2"), (b, "b1"), (b, "b2"))]
        for f in futs:
            f.result()
    last = max(written)
    w.wait_until(lambda evs: evs and evs[-1].sync_id >= last)
    w.cancel()
    ids = [ev.sync_id for ev in w.events]
    # exactly once, in order, without gaps: every sync id after since, once
    assert ids == list(range(since + 1, ids[-1] + 1)), "gaps, repeats or disorder in the feed"
    got = {ev.sync_id: ev.id for ev in w.events}
    for sid, rid in written.items():
        assert got.get(sid) == rid, f"sync id {sid} ({rid}) missing or wrong in the feed"


def test_a_reader_resumes_on_another_replica_without_loss_or_repeats(trio):
    a, b, c = trio
    since = head(a)
    w1 = h.Watch(c, since, models=["items"])
    stop = threading.Event()
    written = []

    def write():
        while not stop.is_set():
            written.append(b.create("items", {"s": "resume"}).last_sync_id)

    t = threading.Thread(target=write)
    t.start()
    try:
        w1.wait_until(lambda evs: len(evs) >= 30)
        w1.cancel()
        seen = [ev.sync_id for ev in w1.events]
        w2 = h.Watch(a, seen[-1], models=["items"])  # reconnects elsewhere with its last sync id
        time.sleep(0.5)
    finally:
        stop.set()
        t.join()
    last = written[-1]
    w2.wait_until(lambda evs: evs and evs[-1].sync_id >= last)
    w2.cancel()
    ids = seen + [ev.sync_id for ev in w2.events]
    assert ids == list(range(since + 1, ids[-1] + 1))
    assert set(written) <= set(ids)


# ---- claims ------------------------------------------------------------------------


def claims_pb():
    h.pb.ensure()
    from recordd.v1 import claims_pb2

    return claims_pb2


def test_a_claim_through_a_blocks_b_and_its_release_wakes_a_waiter_on_c(trio):
    a, b, c = trio
    cp = claims_pb()
    rid = uid("clm")
    a.create("items", {"n": 1}, id=rid)

    def call(srv, method, req, resp, timeout=h.CALL_TIMEOUT):
        ch, md = channel(srv)
        try:
            return rpc(ch, CLAIMS + method, resp)(req, timeout=timeout, metadata=md)
        finally:
            ch.close()

    claim = call(a, "AcquireClaim", cp.AcquireClaimRequest(model="items", id=rid, ttl_seconds=60), cp.Claim)
    # B refuses a write without the claim, at once
    expect_error(grpc.StatusCode.ABORTED, b.update, "items", rid, {"n": 2}, reason="claimed")
    # a waiter on C parks; A's release wakes it long before the claim's 60 s
    result = {}

    def wait_on_c():
        t0 = time.monotonic()
        try:
            result["claim"] = call(c, "AcquireClaim",
                                   cp.AcquireClaimRequest(model="items", id=rid, ttl_seconds=30, wait_seconds=30),
                                   cp.Claim, timeout=45)
        except grpc.RpcError as e:
            result["error"] = e
        result["at"] = time.monotonic()
        result["t0"] = t0

    t = threading.Thread(target=wait_on_c)
    t.start()
    time.sleep(1.0)
    assert "at" not in result, f"the waiter on C returned while A held the claim: {result}"
    released = time.monotonic()
    call(a, "ReleaseClaim", cp.ReleaseClaimRequest(claim_id=claim.claim_id), cp.ReleaseClaimResponse)
    t.join(40)
    assert "claim" in result, f"the waiter on C did not get the claim: {result.get('error')}"
    woke = result["at"] - released
    assert woke < 5.0, f"the waiter on C woke {woke:.2f} s after the release (not by the release)"
    assert result["claim"].claim_id != claim.claim_id
    # and the new claim, taken through C, binds A
    expect_error(grpc.StatusCode.ABORTED, a.update, "items", rid, {"n": 3}, reason="claimed")
    call(c, "ReleaseClaim", cp.ReleaseClaimRequest(claim_id=result["claim"].claim_id), cp.ReleaseClaimResponse)
    a.update("items", rid, {"n": 4})


# ---- idempotency ------------------------------------------------------------------------


def test_one_idempotency_key_sent_to_all_three_at_once_writes_once(trio):
    for _ in range(5):
        rid, key = uid("idem"), uid("key")
        barrier = threading.Barrier(3)
        out = [None] * 3

        def send(i):
            ch, md = channel(trio[i])
            create = rpc(ch, "/recordd.v1.Records/CreateRecord", R.CommitReceipt)
            req = R.CreateRecordRequest(model="items", id=rid, data=h.struct({"n": 7}), idempotency_key=key)
            barrier.wait()
            try:
                for _attempt in range(50):
                    try:
                        out[i] = create(req, timeout=h.CALL_TIMEOUT, metadata=md)
                        return
                    except grpc.RpcError as e:
                        # the same key still in flight on this replica: retry later
                        if h.error_details(e).reason != "idempotency_in_progress":
                            out[i] = e
                            return
                        time.sleep(0.05)
            finally:
                ch.close()

        ts = [threading.Thread(target=send, args=(i,)) for i in range(3)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        assert all(isinstance(r, R.CommitReceipt) for r in out), out
        assert len({r.SerializeToString(deterministic=True) for r in out}) == 1, "receipts differ"
        assert out[0].status == R.CONFIRMED
        rows = trio[0].sql(f"SELECT count(*) FROM _rd_sync_log WHERE record_id = '{rid}'")
        assert rows[0][0] == 1, "the write happened more than once"


# ---- schema and credentials ------------------------------------------------------------


def test_a_schema_push_through_a_is_enforced_by_b_and_c_at_once(trio):
    a, b, c = trio
    model = "m" + uid("x").replace("-", "")[-8:]
    for srv in (b, c):  # the replicas know nothing of the model yet
        expect_error(grpc.StatusCode.NOT_FOUND, srv.create, model, {"code": "x"}, reason="not_found")
    schema = to_dict_schema(a)
    schema.append({"name": model, "fields": [{"name": "code", "type": "STRING", "required": True,
                                               "maxLength": 4}]})
    a.push_schema(schema)
    # the very next call through B and C uses the new schema
    b.create(model, {"code": "abcd"}, id="one")
    expect_error(grpc.StatusCode.INVALID_ARGUMENT, c.create, model, {"code": "too long"})
    expect_error(grpc.StatusCode.INVALID_ARGUMENT, c.create, model, {})
    c.create(model, {"code": "ok"}, id="two")
    assert a.get_data(model, "one") == {"code": "abcd"} and b.get_data(model, "two") == {"code": "ok"}
    # a field dropped through A (a destructive push) is refused by B at once
    schema[-1]["fields"] = [{"name": "code", "type": "STRING", "maxLength": 4}, {"name": "n", "type": "INTEGER"}]
    a.push_schema(schema)
    b.create(model, {"n": 5}, id="three")
    schema[-1]["fields"] = [{"name": "code", "type": "STRING", "maxLength": 4}]
    a.push_schema(schema, force=True)
    expect_error(grpc.StatusCode.INVALID_ARGUMENT, c.create, model, {"n": 6})


def to_dict_schema(srv) -> list[dict]:
    """The current schema's models in push_schema's form (JSON names)."""
    from google.protobuf import json_format

    got = json_format.MessageToDict(srv.get_schema(), preserving_proto_field_name=False)
    return got.get("models", [])


def test_a_revoked_key_is_refused_by_every_replica_within_a_second(trio):
    a = trio[0]
    k = a.create_key()
    for srv in trio:
        srv.as_(k["key"]).get_schema()  # cached as valid on every replica
    a.ctl("key", "revoke", k["key_id"])
    revoked = time.monotonic()
    for srv in trio:
        while True:
            try:
                srv.as_(k["key"]).get_schema()
            except grpc.RpcError as e:
                assert e.code() == grpc.StatusCode.UNAUTHENTICATED
                break
            assert time.monotonic() - revoked < 1.0, f"{srv.address} still accepts the revoked key"
            time.sleep(0.01)


# ---- a replica killed --------------------------------------------------------------------


def test_sigkill_of_one_replica_loses_nothing_and_the_others_keep_serving(trio, tmp_path):
    a, b, c = trio
    victim = replica(a, tmp_path / "d")
    confirmed, errors = {}, {"victim": 0, "others": []}
    lock, stop = threading.Lock(), threading.Event()

    def load(srv, name):
        ch, md = channel(srv)
        create = rpc(ch, "/recordd.v1.Records/CreateRecord", R.CommitReceipt)
        try:
            while not stop.is_set():
                rid = f"{name}-{uid()}"
                try:
                    r = create(R.CreateRecordRequest(model="items", id=rid, data=h.struct({"s": name})),
                               timeout=10, metadata=md)
                except grpc.RpcError as e:
                    if srv is victim:
                        with lock:
                            errors["victim"] += 1
                        time.sleep(0.05)
                        continue
                    with lock:
                        errors["others"].append(f"{name}: {e.code()} {e.details()}")
                    continue
                if r.status == R.CONFIRMED:
                    with lock:
                        confirmed[rid] = r.last_sync_id
        finally:
            ch.close()

    ts = [threading.Thread(target=load, args=(srv, n)) for srv, n in
          ((victim, "d1"), (victim, "d2"), (a, "a"), (b, "b"), (c, "c"))]
    for t in ts:
        t.start()
    time.sleep(2.0)
    victim.proc.kill()
    victim.proc.wait(10)
    time.sleep(2.0)
    stop.set()
    for t in ts:
        t.join(30)
    victim.proc = None
    victim.kill()
    assert not errors["others"], errors["others"][:5]
    assert any(k.startswith("d") for k in confirmed), "the killed replica confirmed nothing before it died"
    missing = [rid for rid in confirmed if not exists(c, rid)]
    assert not missing, f"{len(missing)} CONFIRMED writes are missing: {missing[:5]}"
    for srv in trio:
        srv.assert_healthy()


def exists(srv, rid) -> bool:
    try:
        srv.get("items", rid)
        return True
    except grpc.RpcError as e:
        if e.code() == grpc.StatusCode.NOT_FOUND:
            return False
        raise


# ---- how soon the others hear --------------------------------------------------------------


def _median_ms(samples):
    samples = sorted(samples)
    return samples[len(samples) // 2] * 1000


def _until(pred, timeout=5.0):
    """Seconds until pred() holds (polled every 2 ms); timeout fails."""
    t0 = time.monotonic()
    while not pred():
        assert time.monotonic() - t0 < timeout, "never happened"
        time.sleep(0.002)
    return time.monotonic() - t0


def test_signals_reach_the_other_replicas_within_100_ms(trio):
    """Commits, schema pushes, claim releases and revocations made through A
    are acted on by C within 100 ms (the median of several tries: this
    machine is shared, one slow sample says nothing)."""
    a, b, c = trio
    cp = claims_pb()
    figures = {}

    # a commit through A reaches a WatchChanges stream on C
    since = head(a)
    w = h.Watch(c, since, models=["items"])
    lat = []
    for _ in range(10):
        r = a.create("items", {"s": "latency"})
        lat.append(_until(lambda: any(ev.sync_id == r.last_sync_id for ev in w.events)))
    w.cancel()
    figures["commit"] = _median_ms(lat)

    # a schema push through A is what C's GetSchema answers
    lat = []
    for i in range(5):
        schema = to_dict_schema(a)
        items = next(m for m in schema if m["name"] == "items")
        items["fields"].append({"name": f"lat{uid('f').replace('-', '')[-6:]}{i}", "type": "STRING"})
        rev = a.push_schema(schema).schema.revision
        lat.append(_until(lambda: c.get_schema().revision >= rev))
    figures["schema"] = _median_ms(lat)

    # a release through A wakes an acquire waiting on C
    lat = []
    for _ in range(5):
        rid = uid("lat")
        a.create("items", {"n": 0}, id=rid)
        ch_a, md = channel(a)
        ch_c, _ = channel(c)
        claim = rpc(ch_a, CLAIMS + "AcquireClaim", cp.Claim)(
            cp.AcquireClaimRequest(model="items", id=rid, ttl_seconds=60), timeout=10, metadata=md)
        got = {}

        def wait(ch=ch_c, rid=rid, got=got):
            got["claim"] = rpc(ch, CLAIMS + "AcquireClaim", cp.Claim)(
                cp.AcquireClaimRequest(model="items", id=rid, ttl_seconds=5, wait_seconds=30), timeout=40,
                metadata=md)
            got["at"] = time.monotonic()

        t = threading.Thread(target=wait)
        t.start()
        time.sleep(0.3)  # parked on C
        t0 = time.monotonic()
        rpc(ch_a, CLAIMS + "ReleaseClaim", cp.ReleaseClaimResponse)(
            cp.ReleaseClaimRequest(claim_id=claim.claim_id), timeout=10, metadata=md)
        t.join(40)
        assert "at" in got, "the waiter on C never got the claim"
        lat.append(got["at"] - t0)
        ch_a.close()
        ch_c.close()
    figures["claim release"] = _median_ms(lat)

    # a key revoked (recordctl, straight into the database) is refused by C
    lat = []
    for _ in range(5):
        k = a.create_key()
        c.as_(k["key"]).get_schema()
        a.ctl("key", "revoke", k["key_id"])

        def refused(k=k):
            try:
                c.as_(k["key"]).get_schema()
                return False
            except grpc.RpcError as e:
                assert e.code() == grpc.StatusCode.UNAUTHENTICATED
                return True

        lat.append(_until(refused))
    figures["revocation"] = _median_ms(lat)

    print("median ms from the act through A to C acting on it:", {k: round(v, 1) for k, v in figures.items()})
    slow = {k: v for k, v in figures.items() if v > 100}
    assert not slow, f"slower than 100 ms (median): {slow}"


def test_a_replica_that_lost_its_listener_catches_up(trio):
    """Every replica's listening connection is cut; a write through A made
    while they reconnect is announced to nobody, yet C's feed delivers it
    without any further write (the catch-up read after reconnecting), and a
    schema pushed meanwhile is what C serves."""
    a, b, c = trio
    since = head(a)
    w = h.Watch(c, since, models=["items"])
    w.wait_until(lambda evs: True, timeout=1)
    a.sql_write("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE query = 'LISTEN " + "recordd'")
    r = a.create("items", {"s": "while away"})
    schema = to_dict_schema(a)
    items = next(m for m in schema if m["name"] == "items")
    items["fields"].append({"name": "away" + uid("f").replace("-", "")[-6:], "type": "STRING"})
    rev = a.push_schema(schema).schema.revision
    w.wait_until(lambda evs: any(ev.sync_id == r.last_sync_id for ev in evs), timeout=10)
    w.cancel()
    _until(lambda: c.get_schema().revision >= rev, timeout=10)
    for srv in trio:
        _until(lambda srv=srv: "recordd_peer_listener_up 1" in metrics(srv), timeout=10)


def metrics(srv) -> str:
    import urllib.request

    return urllib.request.urlopen(srv.http_url + "/metrics", timeout=10).read().decode()


def test_metrics_show_the_listener_and_the_lock(trio):
    import urllib.request

    for srv in trio:
        srv.create("items", {"s": "metrics"})
        body = urllib.request.urlopen(srv.http_url + "/metrics", timeout=10).read().decode()
        assert "recordd_peer_listener_up 1" in body
        count = [ln for ln in body.splitlines() if ln.startswith("recordd_org_lock_hold_seconds_count")]
        assert count and int(count[0].split()[1]) > 0, count
