#!/usr/bin/env python3
"""A throw-away PostgreSQL 15 cluster for the tests of the PostgreSQL backend.

As a module::

    with PgCluster() as pg:                       # initdb + start, ~1 s
        pg.create_database("r1")
        subprocess.run([..., "--db", pg.uri("r1")], env={**os.environ, **pg.env()})

As a command (the Makefile's unit target wraps tests/unit/test_pg_* in it)::

    python3 tests/pg/pgcluster.py run -- CMD ARGS...

starts a cluster, runs CMD with RECORDD_TEST_PG (the URI of database
"postgres") and PGPASSFILE in its environment (and libpq's PGHOST, PGPORT,
PGUSER, PGDATABASE, so a plain `psql` works), stops the cluster and exits
with CMD's status (125: the cluster did not start).

The cluster lives in a temp dir (/tmp/pg-XXXX): the data directory, the
Unix socket, the server log and a pgpass file. It listens on 127.0.0.1 on a
free port and asks for a password (scram-sha-256) even there, so the
backend's handling of credentials (libpq reading PGPASSFILE, URIs without
the password) is what the tests exercise. Superuser role: "recordd".

PostgreSQL refuses to run as root, so when we are root (the usual case in
the build container) initdb and pg_ctl run as the "postgres" user through
runuser and the temp dir belongs to it; the pgpass file stays ours (libpq in
the clients reads it, and insists on mode 0600).

The cluster is tuned for tests, not for safety: fsync and full-page writes
are off (a crash of the machine loses it, which for a throw-away cluster
is fine), and it always goes away: stop() on exit of the with block, on
an exception while starting, and from an atexit hook.
"""

from __future__ import annotations

import argparse
import atexit
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Optional

PG_BIN = Path(os.environ.get("PG_BIN") or "/usr/lib/postgresql/15/bin")
ROLE = "recordd"
HOST = "127.0.0.1"
MAX_CONNECTIONS = 300
PORT_ATTEMPTS = 5
START_TIMEOUT = 60  # seconds pg_ctl -w waits for the server to accept connections

# Settings passed to the postmaster besides port, socket dir and address:
# durability is pointless in a cluster that is deleted afterwards.
TEST_SETTINGS = {
    "max_connections": str(MAX_CONNECTIONS),
    "fsync": "off",
    "full_page_writes": "off",
}

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


class PgClusterError(RuntimeError):
    pass


def free_port() -> int:
    """A port nothing listens on right now (the kernel's pick for port 0).
    Another process can take it before the postmaster binds it, so start()
    retries with a new one when that happens."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _as_postgres() -> list[str]:
    """The command prefix that runs PostgreSQL's own tools: as "postgres"
    when we are root (the postmaster refuses root), as ourselves otherwise."""
    return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []


class PgCluster:
    """One temporary cluster. start() (or `with`) makes it; stop() removes it
    and is safe to call more than once."""

    def __init__(self, *, max_connections: int = MAX_CONNECTIONS) -> None:
        self.settings = dict(TEST_SETTINGS, max_connections=str(max_connections))
        self.dir: Optional[Path] = None
        self.port: Optional[int] = None
        self.pgpass: Optional[Path] = None
        self._password = secrets.token_urlsafe(24)
        self._running = False

    # -- context manager ----------------------------------------------------

    def __enter__(self) -> "PgCluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- lifecycle ----------------------------------------------------------

    @property
    def data(self) -> Path:
        return self.dir / "data"

    @property
    def log(self) -> Path:
        return self.dir / "postgres.log"

    def start(self) -> "PgCluster":
        """initdb, then the postmaster on a free port. Anything left behind by
        a failure on the way is removed before the error propagates."""
        return self._bring_up(self._initdb)

    def _bring_up(self, make_data) -> "PgCluster":
        """A temp dir, make_data() filling its data directory, the postmaster
        on a free port and the pgpass file; on any failure on the way all of
        it is removed before the error propagates."""
        assert self.dir is None, "cluster already started"
        atexit.register(self.stop)
        try:
            self._make_dir()
            make_data()
            self._start_postmaster()
            self._write_pgpass()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stops the postmaster (fast: open sessions are ended) and deletes
        the temp dir. Never raises, so it can run in finally blocks and at
        exit after anything."""
        atexit.unregister(self.stop)
        if self._running or (self.dir is not None and (self.data / "postmaster.pid").exists()):
            try:
                self._pg_ctl_stop()  # also a postmaster whose start was interrupted
            except Exception as e:  # noqa: BLE001 - a postmaster whose data dir goes exits by itself
                print(f"pgcluster: stopping {self.dir}: {e}", file=sys.stderr)
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
        self._running = False
        self.dir = None

    def start_standby_of(self, primary: "PgCluster", name: str) -> "PgCluster":
        """A streaming standby of primary: pg_basebackup of its data
        directory, standby.signal, and primary_conninfo naming the standby
        application name (what synchronous_standby_names matches); then the
        postmaster on a free port."""

        def copy_primary():
            env = {"PGPASSWORD": self._password}
            self._run_pg("pg_basebackup", "-D", str(self.data), "-h", HOST, "-p", str(primary.port), "-U", ROLE,
                         "-X", "stream", "--no-sync", env=env)
            conninfo = (f"host={HOST} port={primary.port} user={ROLE} password={self._password}"
                        f" application_name={name}")
            with open(self.data / "postgresql.auto.conf", "a") as f:
                f.write(f"primary_conninfo = '{conninfo}'\n")
            (self.data / "standby.signal").touch()
            if os.geteuid() == 0:
                shutil.chown(self.data / "standby.signal", "postgres", "postgres")

        return self._bring_up(copy_primary)

    def _make_dir(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="pg-"))
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")

    def _initdb(self) -> None:
        """A fresh data directory whose superuser is ROLE with a random
        password; password authentication on every connection, UTF8, and
        the C collation (byte order, as SQLite's default BINARY)."""
        pwfile = self.dir / "pwfile"
        self._write_private(pwfile, self._password + "\n", owner_postgres=True)
        try:
            self._run_pg("initdb", "-D", str(self.data), "-U", ROLE, f"--pwfile={pwfile}",
                         "--auth-host=scram-sha-256", "--auth-local=scram-sha-256",
                         "--encoding=UTF8", "--locale=C", "--no-sync", "--no-instructions")
        finally:
            pwfile.unlink(missing_ok=True)

    def _start_postmaster(self) -> None:
        """pg_ctl start -w on a free port; another port when the chosen one
        was taken in between (the log says "could not bind")."""
        for _ in range(PORT_ATTEMPTS):
            self.port = free_port()
            res = self._pg_ctl_start()
            if res.returncode == 0:
                self._running = True
                return
            if not self._lost_port_race():
                break
            self._pg_ctl_stop()  # in case it half-started
        raise PgClusterError(f"pg_ctl start failed ({res.returncode}):\n{res.stdout}{res.stderr}\n"
                             f"--- {self.log}:\n{self._log_tail()}")

    def _pg_ctl_start(self) -> subprocess.CompletedProcess:
        opts = [f"-p {self.port}", f"-k {self.dir}", f"-c listen_addresses={HOST}"]
        opts += [f"-c {k}={v}" for k, v in self.settings.items()]
        self.log.unlink(missing_ok=True)
        return self._run_pg("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", str(START_TIMEOUT),
                            "-o", " ".join(opts), "start", check=False)

    def _lost_port_race(self) -> bool:
        text = self._log_tail(200)
        return "could not bind" in text or "Address already in use" in text

    def _pg_ctl_stop(self) -> None:
        """Fast shutdown; immediate when that does not finish in time."""
        for mode in ("fast", "immediate"):
            res = self._run_pg("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "30", "stop", check=False)
            if res.returncode == 0 or not (self.data / "postmaster.pid").exists():
                return

    def _write_pgpass(self) -> None:
        self.pgpass = self.dir / "pgpass"
        self._write_private(self.pgpass, f"{HOST}:{self.port}:*:{ROLE}:{self._password}\n")

    @staticmethod
    def _write_private(path: Path, text: str, owner_postgres: bool = False) -> None:
        """Creates path 0600 before anything is written into it."""
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        if owner_postgres and os.geteuid() == 0:
            shutil.chown(path, "postgres", "postgres")

    def _run_pg(self, tool: str, *args: str, check: bool = True,
                env: Optional[dict] = None) -> subprocess.CompletedProcess:
        """Runs a PostgreSQL tool in a process group of its own. When we are
        interrupted meanwhile (Ctrl-C, SIGTERM, a timeout) the whole group
        is killed and reaped before the exception goes on: runuser's child
        (initdb, say) would otherwise outlive it and write into the temp
        dir while stop() deletes it. cwd: the temp dir, which "postgres"
        can enter (runuser keeps ours)."""
        cmd = [*_as_postgres(), str(PG_BIN / tool), *args]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=self.dir,
                                stdin=subprocess.DEVNULL, start_new_session=True,
                                env=dict(os.environ, **env) if env else None)
        try:
            out, err = proc.communicate(timeout=START_TIMEOUT + 30)
        except BaseException:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:  # it had just ended
                pass
            proc.wait()
            raise
        if check and proc.returncode != 0:
            raise PgClusterError(f"{tool} failed ({proc.returncode}):\n{out}{err}")
        return subprocess.CompletedProcess(cmd, proc.returncode, out, err)

    def _log_tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"

    # -- what clients need ----------------------------------------------------

    def uri(self, dbname: str) -> str:
        """The libpq URI of dbname, without the password (libpq finds it in
        the pgpass file named by env())."""
        assert self._running, "cluster not running"
        return f"postgresql://{ROLE}@{HOST}:{self.port}/{dbname}"

    def env(self) -> dict[str, str]:
        """What a child process needs in its environment to log in."""
        assert self._running, "cluster not running"
        return {"PGPASSFILE": str(self.pgpass)}

    def run_env(self) -> dict[str, str]:
        """env() plus RECORDD_TEST_PG (the URI of database "postgres") and
        libpq's defaults (PGHOST, PGPORT, PGUSER, PGDATABASE), so a bare
        `psql` in the command run by `pgcluster.py run` reaches the cluster
        too."""
        return {**self.env(), "RECORDD_TEST_PG": self.uri("postgres"), "PGHOST": HOST,
                "PGPORT": str(self.port), "PGUSER": ROLE, "PGDATABASE": "postgres"}

    def psql(self, *sql: str, dbname: str = "postgres", read_only: bool = False) -> str:
        """Runs each sql with psql, in one session, each in a transaction of
        its own (so CREATE DATABASE can be among them); returns the
        unaligned, tuples-only output. Raises PgClusterError on any error."""
        env = dict(os.environ, **self.env())
        if read_only:
            env["PGOPTIONS"] = "-c default_transaction_read_only=on"
        cmd = ["psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", self.uri(dbname)]
        for statement in sql:
            cmd += ["-c", statement]
        res = subprocess.run(cmd, capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL, timeout=120)
        if res.returncode != 0:
            raise PgClusterError(f"psql on {dbname} failed ({res.returncode}): {'; '.join(sql)}\n{res.stderr}")
        return res.stdout

    def create_database(self, *names: str) -> None:
        """Creates each database (empty, from template1). One psql for them
        all: a psql start and log-in cost about as much as one CREATE
        DATABASE. FILE_COPY: faster here than PostgreSQL 15's default
        WAL_LOG, which writes the whole template into the WAL."""
        self.psql(*(f'CREATE DATABASE "{_checked(n)}" STRATEGY FILE_COPY' for n in names))

    def drop_database(self, name: str) -> None:
        """Drops name, ending any session still connected to it."""
        self.psql(f'DROP DATABASE IF EXISTS "{_checked(name)}" WITH (FORCE)')


class PgStandbyPair:
    """A primary and a streaming standby that is synchronous: the primary's
    synchronous_standby_names names it and synchronous_commit is on, so a
    COMMIT returns only once the standby has the transaction's WAL. For
    failover tests: stop_primary() kills the primary's postmaster (an
    immediate stop: no checkpoint, sessions cut), promote() makes the
    standby the primary. Both clusters are throw-away ones (PgCluster: temp
    dirs, free ports, fsync off on both, which a test that never loses the
    machine does not notice); stop() removes both, also after a failure on
    the way. uri(db) names both hosts with target_session_attrs=read-write,
    so libpq connects to whichever is the primary, and env() points libpq
    at one pgpass file with both."""

    STANDBY_NAME = "standby1"

    def __init__(self) -> None:
        self.primary = PgCluster()
        self.primary.settings.update(wal_level="replica", max_wal_senders="4", synchronous_commit="on")
        self.standby = PgCluster()
        self.standby.settings.update(hot_standby="on")
        self.dir: Optional[Path] = None
        self.pgpass: Optional[Path] = None

    def __enter__(self) -> "PgStandbyPair":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> "PgStandbyPair":
        atexit.register(self.stop)
        try:
            self.primary.start()
            self.standby._password = self.primary._password  # a copy of the primary: its roles too
            self.standby.start_standby_of(self.primary, self.STANDBY_NAME)
            self.primary.psql(f"ALTER SYSTEM SET synchronous_standby_names = '{self.STANDBY_NAME}'",
                              "SELECT pg_reload_conf()")
            self._wait(lambda: self.primary.psql(
                "SELECT count(*) FROM pg_stat_replication WHERE sync_state = 'sync'").strip() == "1",
                "the standby never became synchronous")
            self.dir = Path(tempfile.mkdtemp(prefix="pgpair-"))
            self.pgpass = self.dir / "pgpass"
            PgCluster._write_private(self.pgpass, "".join(
                f"{HOST}:{c.port}:*:{ROLE}:{self.primary._password}\n" for c in (self.primary, self.standby)))
        except BaseException:
            self.stop()
            raise
        return self

    @staticmethod
    def _wait(pred, what: str, timeout: float = 60.0) -> None:
        import time

        end = time.monotonic() + timeout
        while not pred():
            if time.monotonic() > end:
                raise PgClusterError(what)
            time.sleep(0.1)

    def stop_primary(self) -> None:
        """The primary goes away as in a crash: pg_ctl stop -m immediate."""
        self.primary._run_pg("pg_ctl", "-D", str(self.primary.data), "-m", "immediate", "-w", "-t", "30", "stop")
        self.primary._running = False

    def promote(self) -> None:
        """pg_ctl promote -w: returns once the standby accepts writes."""
        self.standby._run_pg("pg_ctl", "-D", str(self.standby.data), "-w", "-t", "60", "promote")

    def uri(self, dbname: str) -> str:
        return (f"postgresql://{ROLE}@{HOST}:{self.primary.port},{HOST}:{self.standby.port}/{dbname}"
                "?target_session_attrs=read-write")

    def env(self) -> dict[str, str]:
        return {"PGPASSFILE": str(self.pgpass)}

    def stop(self) -> None:
        atexit.unregister(self.stop)
        self.standby.stop()
        self.primary.stop()
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None


def _checked(name: str) -> str:
    """name, when it is a plain identifier (it is put into SQL quoted, and
    must not need escaping)."""
    if not _NAME.match(name):
        raise ValueError(f"not a plain database name: {name!r}")
    return name


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------


def run(cmd: list[str]) -> int:
    """Runs cmd against a fresh cluster; returns its exit status (128+N when
    a signal N ended it). The cluster is stopped after cmd has ended,
    however that happens: Ctrl-C reaches cmd from the terminal and we wait
    for it; SIGTERM and SIGHUP are passed on to it, or, before it runs, end
    the start-up (through the with block, so nothing is left behind)."""
    child: Optional[subprocess.Popen] = None

    def on_signal(signum, _frame):
        if child is None:
            raise SystemExit(128 + signum)
        child.send_signal(signum)

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
    with PgCluster() as pg:
        child = subprocess.Popen(cmd, env=dict(os.environ, **pg.run_env()))
        while True:
            try:
                rc = child.wait()
                break
            except KeyboardInterrupt:
                continue  # the child got the SIGINT too; wait for it to end
    return 128 - rc if rc < 0 else rc


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run a command against a throw-away cluster",
                       usage="%(prog)s -- CMD [ARGS...]")
    r.add_argument("cmd", nargs=argparse.REMAINDER)
    args = p.parse_args(argv)
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        p.error("run: no command given (run -- CMD ARGS...)")
    try:
        return run(cmd)
    except KeyboardInterrupt:  # while the cluster started: it is gone again
        return 130
    except PgClusterError as e:
        print(f"pgcluster: {e}", file=sys.stderr)
        return 125
    except FileNotFoundError as e:
        print(f"pgcluster: {e}", file=sys.stderr)
        return 127


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
