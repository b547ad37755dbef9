"""PostgreSQL failures seen from outside: the database server stops and
starts again under load, recordd starts while it is down, and a password
given in the --db URI never shows.

These tests start a throw-away cluster of their own (tests/pg/pgcluster.py,
one per module) instead of the session's (harness.BACKEND), because they
stop and restart it: the session's cluster serves every other test's
servers. So they do not depend on RECORDD_TEST_BACKEND and run in both
modes of the suite (`make e2e` and `make e2e-pg`): a change that breaks
outage handling shows in either run, at ~20 s each. They are skipped only
when PostgreSQL 15's tools are not installed.

Our servers reach the module's cluster through a `passfile=` parameter of
the --db URI (libpq's own), not PGPASSFILE: on PostgreSQL the harness
points PGPASSFILE at the session cluster's pgpass file.

Not provoked on purpose: a COMMIT whose outcome stays unknown (the
connection is lost during COMMIT and does not come back in time); from
outside that cannot be arranged reliably, and a unit test covers it. It may
happen by chance in the restart test, when PostgreSQL stops with a COMMIT
in flight; the test then asks no more of such a write than of any other
failed one (UNAVAILABLE within its deadline) and does not care whether it
was stored."""

from __future__ import annotations

import collections
import json
import os
import secrets
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse
from pathlib import Path

import grpc
import pytest

import harness as h

pgcluster = h._load_by_path("rd_e2e_pgcluster", h.REPO / "tests" / "pg" / "pgcluster.py")

SERVING = 1
NOT_SERVING = 2
READY = (SERVING, 200)  # Prober.ready()
NOT_READY = (NOT_SERVING, 503)
UNAVAILABLE = grpc.StatusCode.UNAVAILABLE
TYPE_RETRY_INFO = "type.googleapis.com/google.rpc.RetryInfo"

DEADLINE_S = 2.0  # each client call's deadline
MARGIN_S = 1.0  # what a call may take beyond it (a loaded 2-CPU machine schedules threads late)
RECOVERY_S = 5.0  # writes and readiness are back this soon after PostgreSQL is
WRITERS = 8
ITEMS = {"name": "items", "fields": [{"name": "n", "type": "INTEGER"}, {"name": "who", "type": "STRING"}]}


# ---------------------------------------------------------------------------
# The module's own cluster
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def own_pg():
    """A cluster only this module uses, so it can be stopped and started."""
    missing = [t for t in ("initdb", "pg_ctl") if not (pgcluster.PG_BIN / t).exists()]
    if missing:
        pytest.skip(f"PostgreSQL tools {missing} not found in {pgcluster.PG_BIN} (apt-get install postgresql-15, "
                    "or set PG_BIN)")
    cluster = pgcluster.PgCluster(max_connections=100).start()
    try:
        yield cluster
    finally:
        cluster.stop()


def pg_stop(cluster, mode: str) -> None:
    """pg_ctl stop -m mode, waiting until the postmaster is gone."""
    res = cluster._run_pg("pg_ctl", "-D", str(cluster.data), "-m", mode, "-w", "-t", "30", "stop", check=False)
    assert res.returncode == 0, f"pg_ctl stop -m {mode} failed ({res.returncode}):\n{res.stdout}{res.stderr}"


def pg_start(cluster) -> None:
    """pg_ctl start -w on the cluster's port again (pg_ctl returns once it
    accepts connections)."""
    res = cluster._pg_ctl_start()
    assert res.returncode == 0, (f"pg_ctl start failed ({res.returncode}):\n{res.stdout}{res.stderr}\n"
                                 f"{cluster._log_tail()}")


def pg_is_running(cluster) -> bool:
    return (cluster.data / "postmaster.pid").exists()


def pg_ensure_running(cluster) -> None:
    """After a test: the cluster up again for the next one, whatever
    happened (a failure to start is printed, not raised: it must not hide
    the test's own)."""
    if not pg_is_running(cluster):
        try:
            pg_start(cluster)
        except AssertionError as e:
            print(f"restarting the module's cluster: {e}", file=sys.stderr)


_db_count = 0


def own_db(cluster) -> str:
    """A new database of cluster; its URI logs in through the cluster's
    pgpass file named in the URI (passfile=), whatever PGPASSFILE says."""
    global _db_count
    _db_count += 1
    name = f"f{_db_count}"
    cluster.create_database(name)
    return f"{cluster.uri(name)}?passfile={urllib.parse.quote(str(cluster.pgpass), safe='/')}"


class OwnDbServer(h.Server):
    """A harness Server whose --db is the given URI instead of a database
    of the session's backend."""

    def __init__(self, workdir: Path, db: str, *extra_args: str) -> None:
        super().__init__(workdir, extra_args)
        self._db = db


# ---------------------------------------------------------------------------
# Calls with their wall time
# ---------------------------------------------------------------------------


class Outcome:
    """One client call: what it asked, how it ended, when (monotonic s)."""

    __slots__ = ("what", "id", "t0", "t1", "code", "message", "details", "receipt", "result")

    def __init__(self, what: str, id: str = "") -> None:
        self.what, self.id = what, id
        self.code = grpc.StatusCode.OK
        self.message = ""
        self.details = self.receipt = self.result = None

    @property
    def took(self) -> float:
        return self.t1 - self.t0

    @property
    def ok(self) -> bool:
        return self.code == grpc.StatusCode.OK

    def __repr__(self) -> str:
        return f"<{self.what} {self.id} {self.code.name} {self.took:.3f}s {self.message!r}>"


def timed(what: str, fn, *args, id: str = "", **kw) -> Outcome:
    o = Outcome(what, id)
    o.t0 = time.monotonic()
    try:
        o.result = fn(*args, **kw)
    except grpc.RpcError as e:
        o.t1 = time.monotonic()
        o.code, o.message = e.code(), e.details() or ""
        o.details = h.error_details(e)
        return o
    o.t1 = time.monotonic()
    return o


def unary(channel, method: str):
    service, _, resp_cls = h._RPCS[method]
    return channel.unary_unary(f"/{service}/{method}", request_serializer=lambda m: m.SerializeToString(),
                               response_deserializer=resp_cls().FromString)


def check_unavailable(o: Outcome) -> None:
    """A call that failed during the outage: UNAVAILABLE, within its
    deadline, with the ErrorInfo and RetryInfo recordd sends for it."""
    assert o.code == UNAVAILABLE, f"expected UNAVAILABLE, got {o}"
    assert o.took <= DEADLINE_S + MARGIN_S, f"slow failure: {o}"
    d = o.details
    assert d.status is not None and d.error_info is not None, f"no rich error details on {o}"
    assert d.reason == "unavailable", f"ErrorInfo reason {d.reason!r} on {o}"
    retry = [a for a in d.other if a.type_url == TYPE_RETRY_INFO]
    assert len(retry) == 1, f"no google.rpc.RetryInfo on {o}: {d}"
    info = h.pb.error_details.RetryInfo.FromString(retry[0].value)
    assert info.retry_delay.seconds + info.retry_delay.nanos / 1e9 > 0, f"RetryInfo without a delay on {o}"


class Writer(threading.Thread):
    """Creates records with unique ids on a channel of its own, one call at a
    time with a DEADLINE_S deadline, until stop is set. outcomes: every
    call. Any exception other than a gRPC error ends it (kept in error)."""

    def __init__(self, srv: h.Server, index: int, stop: threading.Event) -> None:
        super().__init__(daemon=True, name=f"writer-{index}")
        self.srv, self.index, self.stop_ev = srv, index, stop
        self.outcomes: list[Outcome] = []
        self.error = None

    def run(self) -> None:
        ch = grpc.insecure_channel(self.srv.address, options=h.CHANNEL_OPTIONS)  # carries the admin key
        create = unary(ch, "CreateRecord")
        try:
            n = 0
            while not self.stop_ev.is_set():
                rid = f"w{self.index}-{n:05d}"
                n += 1
                req = h.pb.records.CreateRecordRequest(model="items", id=rid,
                                                       data=h.struct({"n": n, "who": rid}))
                o = timed("CreateRecord", create, req, timeout=DEADLINE_S, id=rid)
                if o.ok:
                    o.receipt = o.result
                    o.result = None
                self.outcomes.append(o)
        except Exception as e:  # noqa: BLE001 - reported by the test
            self.error = e
        finally:
            ch.close()


class Prober:
    """Readiness, liveness and reads from the test's thread, each timed."""

    def __init__(self, srv: h.Server, known_id: str) -> None:
        self.srv, self.known_id = srv, known_id
        self.ch = grpc.insecure_channel(srv.address, options=h.CHANNEL_OPTIONS)
        self.check = unary(self.ch, "Check")
        self.get = unary(self.ch, "GetRecord")
        self.list = unary(self.ch, "ListRecords")

    def close(self) -> None:
        self.ch.close()

    def health(self, service: str) -> Outcome:
        return timed(f"Check({service})", self.check, h.pb.health.HealthCheckRequest(service=service),
                     timeout=DEADLINE_S)

    def http(self, path: str) -> tuple[int, float]:
        t0 = time.monotonic()
        r = self.srv.http("GET", path, auth=None, timeout=DEADLINE_S + MARGIN_S)
        return r.status_code, time.monotonic() - t0

    def ready(self) -> tuple[int, int]:
        """(gRPC Check("readiness") status, GET /readyz status code):
        READY or NOT_READY when all is well."""
        o = self.health("readiness")
        assert o.ok, f"readiness Check failed: {o}"
        code, took = self.http("/readyz")
        assert took <= DEADLINE_S + MARGIN_S, f"GET /readyz took {took:.3f}s"
        return o.result.status, code

    def live(self) -> None:
        o = self.health("liveness")
        assert o.ok and o.result.status == SERVING, f"liveness not SERVING: {o} {o.result}"
        code, took = self.http("/healthz")
        assert code == 200, f"GET /healthz: {code}"

    def reads(self) -> list[Outcome]:
        return [
            timed("GetRecord", self.get, h.pb.records.GetRecordRequest(model="items", id=self.known_id),
                  timeout=DEADLINE_S, id=self.known_id),
            timed("ListRecords", self.list, h.pb.records.ListRecordsRequest(model="items", page_size=10),
                  timeout=DEADLINE_S),
        ]


def timeline(outcomes: list[Outcome], t_ref: float, stored: set[str]) -> str:
    """The calls with their start and end relative to t_ref and whether
    their record is stored, for failure messages."""
    return "; ".join(f"{o.what} {o.id} {o.code.name} {o.t0 - t_ref:+.3f}..{o.t1 - t_ref:+.3f}s "
                     f"{'stored' if o.id in stored else 'absent'} {o.message!r}" for o in outcomes)


def secs(t) -> str:
    return "never" if t is None else f"{t:.2f}s"


def all_ids(srv: h.Server, model: str) -> set[str]:
    ids, token = set(), ""
    while True:
        r = srv.call("ListRecords", h.pb.records.ListRecordsRequest(model=model, page_size=1000, page_token=token))
        ids.update(rec.id for rec in r.records)
        token = r.next_page_token
        if not token:
            return ids


def wait_for(what: str, cond, timeout: float, step: float = 0.05):
    """Polls cond() until it is truthy; its value, or an AssertionError
    after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout}s")
        time.sleep(step)


# ---------------------------------------------------------------------------
# 1. PostgreSQL restarts under load
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_postgres_restart_under_load(own_pg, tmp_path, mode):
    """8 writers create records (2 s deadline each) while PostgreSQL stops
    (pg_ctl stop -m MODE) for ~2 s and starts again. Every confirmed write
    survives; nothing takes longer than its deadline; writes and reads fail
    UNAVAILABLE (with RetryInfo) while it is down and work within 5 s of it
    being back; readiness follows, liveness never wavers."""
    srv = OwnDbServer(tmp_path / "recordd", own_db(own_pg)).start()
    prober = None
    stop = threading.Event()
    writers: list[Writer] = []
    try:
        srv.push_schema([ITEMS])
        srv.create("items", {"n": 0, "who": "before"}, id="before")
        prober = Prober(srv, "before")
        assert prober.ready() == READY
        prober.live()

        writers = [Writer(srv, i, stop) for i in range(WRITERS)]
        for w in writers:
            w.start()
        time.sleep(1.0)

        t_stop0 = time.monotonic()
        pg_stop(own_pg, mode)
        t_stopped = time.monotonic()

        # the outage: ~2 s of probes while the writers go on
        outage_ready, outage_reads = [], []
        while time.monotonic() < t_stopped + 2.0:
            outage_ready.append(prober.ready())
            prober.live()
            outage_reads += prober.reads()
            time.sleep(0.05)

        t_start0 = time.monotonic()
        pg_start(own_pg)
        t_started = time.monotonic()

        # back: readiness returns; the writers go on for 3 s, and until one
        # write has succeeded (at most RECOVERY_S + 1 s)
        def ready_again():
            return prober.ready() == READY

        try:
            wait_for("readiness after PostgreSQL came back", ready_again, RECOVERY_S)
            t_ready = time.monotonic()
        except AssertionError:
            t_ready = None  # reported with the rest below
        prober.live()

        def ok_since_start():
            return any(o.ok and o.t1 > t_started for w in writers for o in list(w.outcomes))

        while time.monotonic() < t_started + 3.0 or (not ok_since_start()
                                                       and time.monotonic() < t_started + RECOVERY_S + 1.0):
            time.sleep(0.05)
        stop.set()
        for w in writers:
            w.join(timeout=DEADLINE_S + 10)
            assert not w.is_alive(), f"{w.name} still running: a call ignored its deadline"
            assert w.error is None, f"{w.name}: {w.error!r}"

        outcomes = [o for w in writers for o in w.outcomes]
        ok = [o for o in outcomes if o.ok]
        failed = [o for o in outcomes if not o.ok]
        unavailable = [o for o in failed if o.code == UNAVAILABLE]
        during = [o for o in outcomes if o.t0 >= t_stopped and o.t1 <= t_start0]
        after = [o for o in ok if o.t1 > t_started]
        recovery = min(o.t1 for o in after) - t_started if after else None
        stored = all_ids(srv, "items")
        said_not_written = [o for o in unavailable if "nothing was written" in o.message]

        def at(calls):  # calls with their times relative to pg_ctl stop, for messages
            return timeline(calls[:8], t_stop0, stored)

        lat = sorted(o.took for o in during) or [0.0]
        print(f"\n[{mode}] {len(outcomes)} writes: {len(ok)} confirmed, {len(unavailable)} UNAVAILABLE "
              f"({len(said_not_written)} 'nothing was written'), {len(failed) - len(unavailable)} other failures; "
              f"pg_ctl stop took {t_stopped - t_stop0:.2f}s, start {t_started - t_start0:.2f}s; "
              f"during the outage {len(during)} writes failed in median {statistics.median(lat) * 1000:.1f} ms, "
              f"max {lat[-1] * 1000:.1f} ms; reads max {max([o.took for o in outage_reads] or [0]) * 1000:.1f} ms; "
              f"first write {secs(recovery)} and readiness {secs(t_ready and t_ready - t_started)} after pg_ctl "
              f"start; {len(outage_ready)} readiness probes in the outage; "
              f"slowest writes (times from pg_ctl stop): {at(sorted(outcomes, key=lambda o: -o.took)[:3])}")

        # Every violation is collected, so that one does not hide another.
        problems = []

        # (a) every confirmed write is there (and is a CONFIRMED receipt for
        # its id); a write refused as "nothing was written" is not
        lost = [o for o in ok if o.id not in stored]
        if lost:
            problems.append(f"(a) {len(lost)} confirmed writes are missing: {at(lost)}")
        odd = [o for o in ok if not (o.receipt.status == h.pb.records.CONFIRMED and o.receipt.success
                                     and o.receipt.id == o.id)]
        if odd:
            problems.append("(a) OK without a CONFIRMED receipt for the id: "
                            f"{[(o.id, h.short(o.receipt)) for o in odd[:5]]}")
        phantom = [o for o in said_not_written if o.id in stored]
        if phantom:
            problems.append(f"(a) {len(phantom)} writes answered 'nothing was written' are stored: {at(phantom)}")
        if not any(o.t1 < t_stop0 for o in ok):
            problems.append("no write succeeded before PostgreSQL stopped")
        blind = [o for o in during if o.ok]
        if blind:
            problems.append(f"{len(blind)} writes confirmed while PostgreSQL was down: {at(blind)}")
        if not during:
            problems.append("no write was attempted while PostgreSQL was down")

        # (b) no call took longer than its deadline (plus a margin); every
        # failure is a fast UNAVAILABLE with RetryInfo
        slow = [o for o in outcomes if o.took > DEADLINE_S + MARGIN_S]
        if slow:
            problems.append(f"(b) {len(slow)} writes took longer than {DEADLINE_S}+{MARGIN_S}s: {at(slow)}")
        other = [o for o in failed if o.code != UNAVAILABLE]
        if other:
            problems.append(f"(b) {len(other)} failed writes were not UNAVAILABLE (pg_ctl stop took "
                            f"{t_stopped - t_stop0:.3f}s): {at(other)}")
        for o in unavailable:
            try:
                check_unavailable(o)
            except AssertionError as e:
                problems.append(f"(b) {e}")
                break

        # (c) writes again within RECOVERY_S of pg_ctl start returning
        late = collections.Counter(f"{o.code.name}: {o.message}" for o in failed if o.t0 > t_started + RECOVERY_S)
        if recovery is None:
            problems.append(f"(c) no write succeeded in the {time.monotonic() - t_started:.1f}s after PostgreSQL "
                            f"came back; writes that started more than {RECOVERY_S}s after it: {dict(late)}")
        elif recovery > RECOVERY_S:
            problems.append(f"(c) the first write after PostgreSQL came back took {recovery:.2f}s")

        # (d) readiness: never ready while PostgreSQL was down (checked), ready
        # again after (waited for above); liveness SERVING throughout (checked)
        ready_during = [r for r in outage_ready if r != NOT_READY]
        if not outage_ready or ready_during:
            problems.append(f"(d) (Check(readiness), GET /readyz) other than {NOT_READY} during the outage: "
                            f"{ready_during} of {len(outage_ready)} probes")
        if t_ready is None:
            problems.append(f"(d) not ready within {RECOVERY_S}s of pg_ctl start")
        elif prober.ready() != READY:
            problems.append("(d) not ready at the end")
        prober.live()

        # (e) reads failed fast UNAVAILABLE during the outage, work after
        for o in outage_reads:
            try:
                check_unavailable(o)
            except AssertionError as e:
                problems.append(f"(e) {e}")
                break
        if not outage_reads:
            problems.append("(e) no read ran during the outage")
        bad_reads = [o for o in prober.reads() if not o.ok]
        if bad_reads:
            problems.append(f"(e) reads after PostgreSQL came back failed: {bad_reads}")
        if "before" not in stored:
            problems.append("(a) the record written before the load is missing")
        srv.assert_healthy()

        assert not problems, "\n".join(problems)
    finally:
        stop.set()
        for w in writers:
            w.join(timeout=DEADLINE_S + 10)
        if prober is not None:
            prober.close()
        problem = srv.kill()
        pg_ensure_running(own_pg)
    assert not problem, problem


# ---------------------------------------------------------------------------
# 2. Start-up with PostgreSQL down; the password stays secret
# ---------------------------------------------------------------------------


def secret_role(cluster) -> tuple[str, str, str]:
    """A login role owning a new database, with a password that needs
    percent-encoding in a URI. Returns (password, URI with it, the
    password's unique core, which any leak, encoded or not, contains)."""
    core = "Zk" + secrets.token_hex(10)
    password = f"{core}@p/w"
    global _db_count
    _db_count += 1
    role, db = f"sec{_db_count}", f"f{_db_count}"
    cluster.psql(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'",
                 f'CREATE DATABASE "{db}" OWNER {role} STRATEGY FILE_COPY')
    uri = f"postgresql://{role}:{urllib.parse.quote(password, safe='')}@{pgcluster.HOST}:{cluster.port}/{db}"
    return password, uri, core


def no_pg_env() -> dict:
    """Our environment without any other way to a password: the one in the
    URI is the only one."""
    return {k: v for k, v in os.environ.items() if k not in ("PGPASSFILE", "PGPASSWORD", "PGSERVICEFILE")}


def assert_secret(core: str, where: str, text) -> None:
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    assert core not in text, f"the password shows in {where}:\n{text[-3000:]}"


def log_lines(text: str) -> list[dict]:
    out = []
    for line in text.splitlines():
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if isinstance(obj, dict):
            out.append(obj)
    return out


def test_password_in_uri_never_shows_and_start_fails_while_postgres_is_down(own_pg, tmp_path):
    password, uri, core = secret_role(own_pg)
    wrong = uri.replace(urllib.parse.quote(password, safe=""), urllib.parse.quote(core + "#wrong", safe=""))
    env = no_pg_env()
    var = tmp_path / "var"

    def ctl(*args, db=uri):
        res = subprocess.run([str(h.RECORDCTL), *args, "--dir", str(var), "--db", db], capture_output=True,
                             text=True, timeout=60, env=env, stdin=subprocess.DEVNULL)
        assert_secret(core, f"the output of recordctl {args[0]}", res.stdout + res.stderr)
        return res

    # recordctl with the password in the URI: works, and says nothing of it
    res = ctl("init")
    assert res.returncode == 0, res.stderr
    res = ctl("key", "list")
    assert res.returncode == 0, res.stderr
    # a wrong password: a clear refusal that does not echo it either
    res = ctl("key", "list", db=wrong)
    assert res.returncode != 0 and "password authentication failed" in res.stderr, res.stderr

    server_args = ["--grpc-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", "--workers", "2",
                   "--pepper-file", str(var / "pepper"), "--signing-key", str(var / "signing.key"),
                   "--trusted-keys", str(var / "trusted-keys")]

    def run_recordd(db: str) -> subprocess.CompletedProcess:
        t0 = time.monotonic()
        res = subprocess.run([str(h.BIN), *server_args, "--db", db], capture_output=True, text=True, timeout=60,
                             env=env, stdin=subprocess.DEVNULL, cwd=tmp_path)
        res.took = time.monotonic() - t0
        return res

    srv = None
    try:
        # recordd with a wrong password: exit 1, and the attempt is not echoed
        res = run_recordd(wrong)
        assert res.returncode == 1, f"exit {res.returncode}:\n{res.stderr}"
        assert "password authentication failed" in res.stderr, res.stderr
        assert_secret(core, "recordd's output (wrong password)", res.stdout + res.stderr)

        # PostgreSQL down: recordd gives up at once, exit status 1, saying why
        pg_stop(own_pg, "fast")
        res = run_recordd(uri)
        assert res.returncode == 1, f"exit {res.returncode} after {res.took:.1f}s:\n{res.stdout}{res.stderr}"
        assert_secret(core, "recordd's output (PostgreSQL down)", res.stdout + res.stderr)
        assert res.took < 20, f"recordd took {res.took:.1f}s to give up"
        assert not any(o.get("msg") == "listening" for o in log_lines(res.stderr)), res.stderr
        errors = [o for o in log_lines(res.stderr) if o.get("level") == "error"]
        assert errors, f"no error line:\n{res.stderr}"
        e = errors[-1]
        assert e.get("msg") == "cannot open the database", e
        assert "PostgreSQL" in e.get("error", "") and str(own_pg.port) in e.get("error", ""), e
        assert e.get("db", "").startswith(f"postgresql://{uri.split('//')[1].split(':')[0]}:***@"), e
        startup_s = res.took
        res = ctl("key", "list")  # recordctl likewise
        assert res.returncode != 0, res.stdout
        assert "PostgreSQL" in res.stderr or "connect" in res.stderr, res.stderr
        pg_start(own_pg)

        # PostgreSQL up: recordd runs with the password nowhere in sight
        srv = OwnDbServer(tmp_path / "recordd", uri)
        srv.var = var
        srv.start()  # (the harness gives it PGPASSFILE on PostgreSQL: of the session's cluster, no use here)
        assert "***" in srv.startup.get("db", ""), srv.startup
        assert_secret(core, "the 'listening' line", json.dumps(srv.startup))
        pid = srv.proc.pid
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        assert b"--db" in cmdline, cmdline
        assert_secret(core, f"/proc/{pid}/cmdline", cmdline)
        ps = subprocess.run(["ps", "-ww", "-o", "args=", "-p", str(pid)], capture_output=True, text=True)
        assert str(h.BIN) in ps.stdout, ps
        assert_secret(core, "ps", ps.stdout)
        ps_all = subprocess.run(["ps", "-ww", "-e", "-o", "pid=,args="], capture_output=True, text=True)
        assert_secret(core, "ps -e", ps_all.stdout)

        srv.push_schema([ITEMS])
        srv.create("items", {"n": 1}, id="a")
        assert srv.get_data("items", "a") == {"n": 1}
        m = srv.http("GET", "/metrics")
        assert m.status_code == 200, m.text[:300]
        assert_secret(core, "/metrics", m.text)

        # errors while PostgreSQL is away: neither the client nor the log sees it
        pg_stop(own_pg, "immediate")
        o = timed("CreateRecord", srv.create, "items", {"n": 2}, id="b")
        check_unavailable(o)
        assert_secret(core, "an UNAVAILABLE error", f"{o.message} {o.details}")
        r = srv.http("POST", "/v1/models/items?id=c", json_body={"n": 3}, timeout=DEADLINE_S + MARGIN_S)
        assert r.status_code == 503, r.text[:300]
        assert_secret(core, "an HTTP 503 body", r.text)
        m = srv.http("GET", "/metrics")
        assert_secret(core, "/metrics (PostgreSQL down)", m.text)
        pg_start(own_pg)
        wait_for("writes after PostgreSQL came back",
                 lambda: timed("CreateRecord", srv.create, "items", {"n": 4}, id=h.uid()).ok, RECOVERY_S)
        problem = srv.kill()
        assert not problem, problem
        log = b"".join(p.read_bytes() for p in srv.dir.glob("stderr-*.log"))
        assert b"listening" in log
        assert_secret(core, "recordd's stderr", log)
        print(f"\nrecordd gave up after {startup_s:.2f}s with PostgreSQL down: {e['error']}")
    finally:
        if srv is not None:
            srv.kill()
        pg_ensure_running(own_pg)
