"""A database failover under write load (README "Scaling out", "Failover").

A PostgreSQL primary with a synchronous streaming standby
(tests/pg/pgcluster.py PgStandbyPair); recordd points at both with one
multi-host URI and target_session_attrs=read-write. Eight clients create
records with deadlines and idempotency keys; the primary is stopped hard
(an immediate shutdown: as a crash) and the standby promoted a second
later. Pass:

- every write recordd answered CONFIRMED is on the promoted standby (read
  through recordd and straight from the database), so no CONFIRMED write
  is lost or invented;
- no call outlives its deadline (plus a little for the client's clock);
- writes succeed again within 10 s of the promotion;
- readiness (/readyz) reported not ready in between.

The figures go to stdout, and to the JSON file RECORDD_FAILOVER_FIGURES
names, if set.

PostgreSQL only: run by `make test-cluster`."""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import grpc
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))

import harness as h  # noqa: E402
from harness import pb, uid  # noqa: E402

pytestmark = pytest.mark.skipif(h.BACKEND != "postgres",
                                reason="a PostgreSQL failover (RECORDD_TEST_BACKEND=postgres)")

R = pb.records
ITEMS = {"name": "items", "fields": [{"name": "n", "type": "INTEGER"}, {"name": "who", "type": "STRING"}]}
CLIENTS = 8
DEADLINE = 5.0  # seconds each write may take
SLACK = 1.0  # the client's side of a deadline: scheduling on a loaded machine
RECOVER_S = 10.0


def _pgcluster():
    return h._load_by_path("rd_cluster_pgcluster", h.REPO / "tests" / "pg" / "pgcluster.py")


@pytest.fixture
def pair(monkeypatch):
    p = _pgcluster().PgStandbyPair().start()
    try:
        p.primary.create_database("rd")
        env = p.env()
        # recordd and recordctl log in to this pair, not the session's cluster
        monkeypatch.setattr(h, "child_env", lambda base=None: {**(os.environ if base is None else base), **env})
        yield p
    finally:
        p.stop()


class Load:
    """CLIENTS threads creating records until stopped; each call's outcome
    and duration recorded."""

    def __init__(self, srv):
        self.srv = srv
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.confirmed: dict[str, int] = {}  # record id -> sync id
        self.failed: list[tuple[float, str]] = []  # (when, code)
        self.ok_at: list[float] = []  # monotonic times of CONFIRMED answers
        self.overruns: list[float] = []
        self.calls = 0
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(CLIENTS)]

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join(DEADLINE * 3)

    def _run(self, i):
        ch = grpc.insecure_channel(self.srv.address, options=h.CHANNEL_OPTIONS)
        md = [("authorization", f"Bearer {self.srv.admin_key}")]
        create = ch.unary_unary("/recordd.v1.Records/CreateRecord", request_serializer=lambda m: m.SerializeToString(),
                                response_deserializer=R.CommitReceipt.FromString)
        try:
            while not self.stop.is_set():
                rid = f"c{i}-{uid()}"
                req = R.CreateRecordRequest(model="items", id=rid, data=h.struct({"n": i, "who": rid}),
                                            idempotency_key=uid("k"))
                t0 = time.monotonic()
                try:
                    r = create(req, timeout=DEADLINE, metadata=md)
                    code = "CONFIRMED" if r.status == R.CONFIRMED else f"status {r.status}"
                except grpc.RpcError as e:
                    r, code = None, e.code().name
                took = time.monotonic() - t0
                with self.lock:
                    self.calls += 1
                    if took > DEADLINE + SLACK:
                        self.overruns.append(took)
                    if r is not None and r.status == R.CONFIRMED:
                        self.confirmed[rid] = r.last_sync_id
                        self.ok_at.append(time.monotonic())
                    else:
                        self.failed.append((time.monotonic(), code))
                if r is None:
                    time.sleep(0.05)  # a client backs off after an error
        finally:
            ch.close()


def ready(srv) -> bool:
    try:
        with urllib.request.urlopen(srv.http_url + "/readyz", timeout=1) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


def test_failover_to_a_synchronous_standby_loses_no_confirmed_write(pair, tmp_path):
    srv = h.Server(tmp_path / "recordd")
    srv._db = pair.uri("rd")
    srv.start()
    try:
        srv.push_schema([ITEMS])
        not_ready_seen = threading.Event()
        watching = threading.Event()
        watching.set()

        def watch_readiness():
            while watching.is_set():
                if not ready(srv):
                    not_ready_seen.set()
                time.sleep(0.05)

        rt = threading.Thread(target=watch_readiness, daemon=True)
        with Load(srv) as load:
            time.sleep(3.0)
            before = len(load.confirmed)
            assert before > 0, f"nothing was confirmed before the failover: {load.failed[:5]}"
            rt.start()
            killed = time.monotonic()
            pair.stop_primary()
            time.sleep(1.0)
            pair.promote()
            promoted = time.monotonic()
            while time.monotonic() - promoted < RECOVER_S + 5:
                with load.lock:
                    if any(t > promoted for t in load.ok_at):
                        break
                time.sleep(0.05)
            time.sleep(2.0)  # writes go on on the new primary
        watching.clear()
        rt.join(5)

        recovered = [t for t in load.ok_at if t > promoted]
        recover_s = (min(recovered) - promoted) if recovered else None
        failed_between = sum(1 for t, _ in load.failed if killed <= t)
        codes = sorted({c for _, c in load.failed})
        # every CONFIRMED write is on the promoted standby
        on_standby = set(json.loads(pair.standby.psql(
            "SELECT coalesce(json_agg(_id), '[]') FROM r_default__items", dbname="rd")))
        missing = [rid for rid in load.confirmed if rid not in on_standby]
        through_recordd = [rid for rid in list(load.confirmed)[:: max(1, len(load.confirmed) // 200)]
                           if not srv.get("items", rid).id]
        figures = {
            "writes_attempted": load.calls,
            "confirmed": len(load.confirmed),
            "confirmed_before_failover": before,
            "failed_after_kill": failed_between,
            "failure_codes": codes,
            "found_after_promotion": len(load.confirmed) - len(missing),
            "rows_on_promoted_standby": len(on_standby),
            "seconds_promotion_to_first_write": None if recover_s is None else round(recover_s, 2),
            "readiness_not_ready_seen": not_ready_seen.is_set(),
            "calls_past_deadline": len(load.overruns),
        }
        print("failover figures:", json.dumps(figures))
        out = os.environ.get("RECORDD_FAILOVER_FIGURES")
        if out:
            Path(out).write_text(json.dumps(figures, indent=2) + "\n")

        assert not missing, f"{len(missing)} CONFIRMED writes are missing on the promoted standby: {missing[:5]}"
        assert not through_recordd
        assert not load.overruns, f"calls outlived their {DEADLINE} s deadline: {load.overruns[:5]}"
        assert recover_s is not None and recover_s <= RECOVER_S, f"no write succeeded within {RECOVER_S} s: {figures}"
        assert not_ready_seen.is_set(), "readiness never reported the database gone"
        assert set(codes) <= {"UNAVAILABLE", "DEADLINE_EXCEEDED"}, f"unexpected failures: {codes}"
        assert ready(srv)
    finally:
        problem = srv.kill()
    if problem:
        pytest.fail(problem, pytrace=False)
