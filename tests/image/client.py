"""The gRPC side of tests/image/run.sh: talks to a recordd container through
its published port with the e2e suite's generated modules.

  client.py --addr HOST:PORT --key-file FILE wait
      health Check "readiness" and "liveness" are SERVING (retries for 60 s)
  client.py ... write
      pushes the `notes` schema and creates notes/n1 (CONFIRMED)
  client.py ... read [--id ID] --expect-text TEXT
      notes/ID (default n1) has data.text == TEXT
  client.py ... health --service NAME --want SERVING|NOT_SERVING [--within SECONDS]
      health Check NAME answers --want within SECONDS [60]
  client.py --addr A ... replicas --other B --stop "podman stop -t 30 A-CONTAINER"
      two recordd replicas on one PostgreSQL database: pushes the `notes`
      schema through A and creates a note there that B reads; B's
      WatchChanges stream sees a write made through A after it opened (the
      live feed across replicas); then 4 writers create notes through A while
      --stop stops A's container (SIGTERM), until A refuses them; every write
      A confirmed is read back through B and was in B's stream, in sync-id
      order without a gap
"""

import queue
import shlex
import subprocess
import threading

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))

import grpc  # noqa: E402

import harness as h  # noqa: E402

NOTES = {"name": "notes", "fields": [{"name": "text", "type": "STRING", "required": True}]}


def unary(ch, path, resp_cls):
    return ch.unary_unary(path, request_serializer=lambda m: m.SerializeToString(),
                          response_deserializer=resp_cls.FromString)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--addr", required=True)
    ap.add_argument("--key-file", required=True)
    ap.add_argument("--expect-text")
    ap.add_argument("--id", default="n1")
    ap.add_argument("--service", default="readiness")
    ap.add_argument("--want", choices=["SERVING", "NOT_SERVING"])
    ap.add_argument("--within", type=float, default=60)
    ap.add_argument("--other")
    ap.add_argument("--stop")
    ap.add_argument("what", choices=["wait", "write", "read", "health", "replicas"])
    a = ap.parse_args()
    pb = h.pb.ensure()
    ch = grpc.insecure_channel(a.addr)
    check = unary(ch, "/grpc.health.v1.Health/Check", pb.health.HealthCheckResponse)

    if a.what == "wait":
        end = time.monotonic() + 60
        while True:
            try:
                for name in ("readiness", "liveness", ""):
                    st = check(pb.health.HealthCheckRequest(service=name), timeout=5).status
                    assert st == pb.health.HealthCheckResponse.SERVING, (name, st)
                # the key file appears once recordctl init has run
                if Path(a.key_file).exists():
                    return 0
            except (grpc.RpcError, AssertionError) as e:
                if time.monotonic() > end:
                    print(f"not ready: {e}", file=sys.stderr)
                    return 1
            time.sleep(0.3)

    if a.what == "health":
        want = pb.health.HealthCheckResponse.ServingStatus.Value(a.want)
        end, st = time.monotonic() + a.within, None
        while time.monotonic() < end:
            try:
                st = check(pb.health.HealthCheckRequest(service=a.service), timeout=5).status
            except grpc.RpcError as e:
                st = e.code()
            if st == want:
                return 0
            time.sleep(0.3)
        print(f"health {a.service!r}: {st}, want {a.want} within {a.within:.0f} s", file=sys.stderr)
        return 1

    auth = h.bearer(Path(a.key_file).read_text().strip())
    if a.what == "replicas":
        return replicas(pb, ch, grpc.insecure_channel(a.other), auth, shlex.split(a.stop))
    if a.what == "write":
        push = unary(ch, "/recordd.v1.Schemas/PushSchema", pb.schema.PushSchemaResponse)
        push(pb.schema.PushSchemaRequest(schema=h.schema_msg([NOTES])), timeout=30, metadata=auth)
        create = unary(ch, "/recordd.v1.Records/CreateRecord", pb.records.CommitReceipt)
        r = create(pb.records.CreateRecordRequest(model="notes", id="n1", data=h.struct({"text": "first"})),
                   timeout=30, metadata=auth)
        assert r.status == pb.records.CONFIRMED, r
        print(f"created notes/n1 ({r.server_tx_id})")
        return 0

    get = unary(ch, "/recordd.v1.Records/GetRecord", pb.records.Record)
    r = get(pb.records.GetRecordRequest(model="notes", id=a.id), timeout=30, metadata=auth)
    text = h.to_dict(r.data).get("text")
    if text != a.expect_text:
        print(f"notes/{a.id} text is {text!r}, want {a.expect_text!r}", file=sys.stderr)
        return 1
    print(f"read notes/{a.id} back: version {r.version}")
    return 0


def replicas(pb, ch_a, ch_b, auth, stop_cmd) -> int:
    R = pb.records
    push = unary(ch_a, "/recordd.v1.Schemas/PushSchema", pb.schema.PushSchemaResponse)
    push(pb.schema.PushSchemaRequest(schema=h.schema_msg([NOTES])), timeout=30, metadata=auth)
    create_a = unary(ch_a, "/recordd.v1.Records/CreateRecord", R.CommitReceipt)
    get_b = unary(ch_b, "/recordd.v1.Records/GetRecord", R.Record)

    def create(rid, text):
        r = create_a(R.CreateRecordRequest(model="notes", id=rid, data=h.struct({"text": text})),
                     timeout=30, metadata=auth)
        assert r.status == R.CONFIRMED, r
        return r

    first = create("r1", "written through A")
    got = get_b(R.GetRecordRequest(model="notes", id="r1"), timeout=30, metadata=auth)
    assert h.to_dict(got.data)["text"] == "written through A", got
    print(f"a write through A (sync id {first.last_sync_id}) is read through B")

    # B's change feed from after r1: whatever A commits from now on
    events = queue.Queue()
    watch = ch_b.unary_stream("/recordd.v1.Records/WatchChanges",
                              request_serializer=lambda m: m.SerializeToString(),
                              response_deserializer=R.ChangeEvent.FromString)
    stream = watch(R.WatchChangesRequest(since_sync_id=first.last_sync_id, models=["notes"]), metadata=auth)

    def follow():
        try:
            for ev in stream:
                events.put(ev)
        except grpc.RpcError as e:
            events.put(e)

    threading.Thread(target=follow, daemon=True).start()
    seen = []

    def next_event(within):
        ev = events.get(timeout=within)
        if isinstance(ev, grpc.RpcError):
            raise AssertionError(f"B's WatchChanges ended: {ev.code()} {ev.details()}")
        seen.append(ev)
        return ev

    time.sleep(1)  # the stream is open and caught up (nothing after r1 yet)
    assert events.empty(), "B's stream delivered a change nobody made"
    t0 = time.monotonic()
    second = create("r2", "seen live through B")
    ev = next_event(10)
    assert (ev.id, ev.sync_id, ev.op) == ("r2", second.last_sync_id, R.CREATE), ev
    print(f"B's WatchChanges saw A's write live ({(time.monotonic() - t0) * 1000:.0f} ms after it was sent)")

    # writes through A while A is stopped: each confirmed one must survive
    confirmed, errors, lock = {}, [], threading.Lock()
    stopping = threading.Event()

    def writer(w):
        n = 0
        while True:
            rid, text = f"w{w}-{n}", f"writer {w} note {n}"
            try:
                r = create_a(R.CreateRecordRequest(model="notes", id=rid, data=h.struct({"text": text})),
                             timeout=30, metadata=auth)
            except grpc.RpcError as e:
                if not stopping.is_set():
                    errors.append(f"{rid}: {e.code()} {e.details()} before the stop")
                return
            if r.status != R.CONFIRMED:
                errors.append(f"{rid}: {R.CommitStatus.Name(r.status)}")
                return
            with lock:
                confirmed[rid] = (text, r.last_sync_id)
            n += 1

    writers = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
    for t in writers:
        t.start()
    while len(confirmed) < 40 and not errors and any(t.is_alive() for t in writers):
        time.sleep(0.05)
    before = len(confirmed)
    stopping.set()
    stopped = subprocess.run(stop_cmd, capture_output=True, text=True, timeout=120)
    for t in writers:
        t.join(timeout=60)
    assert not errors, errors[:3]
    assert stopped.returncode == 0, (stop_cmd, stopped.stderr)
    assert not any(t.is_alive() for t in writers), "a writer still runs after A stopped"
    print(f"{len(confirmed)} writes confirmed through A ({len(confirmed) - before} of them after the stop began)")

    for rid, (text, _) in sorted(confirmed.items()):
        got = get_b(R.GetRecordRequest(model="notes", id=rid), timeout=30, metadata=auth)
        assert h.to_dict(got.data)["text"] == text, (rid, got)
    want = {rid for rid in confirmed}
    end = time.monotonic() + 15
    while want - {ev.id for ev in seen} and time.monotonic() < end:
        try:
            next_event(max(0.1, end - time.monotonic()))
        except queue.Empty:
            break
    missing = want - {ev.id for ev in seen}
    assert not missing, f"B's stream lacks {len(missing)} confirmed writes, e.g. {sorted(missing)[:3]}"
    ids = [ev.sync_id for ev in seen]
    assert ids == list(range(second.last_sync_id, second.last_sync_id + len(ids))), \
        f"B's stream is not gap-free and in order: {ids[:10]}..."
    for ev in seen:
        if ev.id in confirmed:
            assert ev.sync_id == confirmed[ev.id][1], (ev.id, ev.sync_id, confirmed[ev.id])
    stream.cancel()
    print(f"all {len(confirmed)} read back through B; B's stream had them all, sync ids "
          f"{ids[0]}..{ids[-1]} without a gap")
    return 0


if __name__ == "__main__":
    sys.exit(main())
